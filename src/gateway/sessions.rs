//! The Discord sessions of one pod: one [`Connection`] per shard it runs (every shard with
//! `md5`, the shards `s % N == POD_ORDINAL` with `discord`, none on a standby pod), their
//! events merged into one bounded queue. Each guild is on exactly one shard of a layout, so
//! merging keeps each guild's order.
//!
//! During a live rescale that changes this pod's sessions, a second set runs beside the first:
//! the sessions of the new layout, opened at the rescale's prepare and kept after its commit,
//! when the old set closes. Each session's events carry its epoch, for the shard filter.
//! If any session ends for good on its own (a fatal close, a rejected token), the pod ends.

use super::connection::{
    Connection, ConnectionConfig, ConnectionError, SessionState, ShardEvent, Shared, EVENT_QUEUE,
};
use super::identify::IdentifyGate;
use super::GatewayMetrics;
use gateway_actors::rescale::ownership::Layout;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What `/readyz`, `/status` and `/metrics` read.
pub struct Sessions {
    /// Each epoch's sessions, oldest first.
    sets: Mutex<Vec<(u64, Vec<Arc<SessionState>>)>>,
    pub gate: Arc<IdentifyGate>,
    /// `gateway_connected`: 1 while every session's socket is up.
    connected: prometheus::IntGauge,
}

impl Sessions {
    fn sets(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Vec<Arc<SessionState>>)>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every session, oldest epoch first.
    pub fn list(&self) -> Vec<Arc<SessionState>> {
        self.sets()
            .iter()
            .flat_map(|(_, set)| set.iter().cloned())
            .collect()
    }

    /// Sets the gauges that are read rather than counted, before a scrape.
    pub fn refresh_gauges(&self) {
        let up = self
            .list()
            .iter()
            .all(|s| s.connected.load(Ordering::SeqCst));
        self.connected.set(i64::from(up));
    }

    /// Every session of the committed layout (the oldest set) is READY or RESUMED.
    pub fn ready(&self) -> bool {
        self.sets()
            .first()
            .is_none_or(|(_, set)| set.iter().all(|s| s.ready.load(Ordering::SeqCst)))
    }

    /// The sessions of `epoch` run and are READY.
    pub fn ready_for_epoch(&self, epoch: u64) -> bool {
        self.sets()
            .iter()
            .find(|(e, _)| *e == epoch)
            .is_some_and(|(_, set)| set.iter().all(|s| s.ready.load(Ordering::SeqCst)))
    }

    /// Why the pod is not ready on the Discord side, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        if self.ready() {
            return None;
        }
        if let Some(reason) = self.gate.waiting_reason() {
            return Some(reason);
        }
        let waiting: Vec<u32> = self
            .sets()
            .first()
            .map(|(_, set)| {
                set.iter()
                    .filter(|s| !s.ready.load(Ordering::SeqCst))
                    .map(|s| s.shard[0])
                    .collect()
            })
            .unwrap_or_default();
        Some(format!(
            "Discord sessions not READY or RESUMED: shards {waiting:?}"
        ))
    }
}

/// Where sessions connect, and what they share.
pub struct Discord {
    pub token: String,
    pub api_url: Option<String>,
    pub ordinal: u32,
    /// The relay's view of the sessions, when the pod runs a relay.
    pub relay: Option<Arc<crate::relay::upstream::Upstream>>,
}

pub struct SessionSet {
    pub sessions: Arc<Sessions>,
    discord: Discord,
    shared: Shared,
    /// Each epoch's connections.
    connections: Vec<(u64, Vec<Connection>)>,
    /// Each session's end, as it happens, with whether it was asked to close.
    ended: mpsc::UnboundedReceiver<(bool, Result<(), ConnectionError>)>,
    ended_tx: mpsc::UnboundedSender<(bool, Result<(), ConnectionError>)>,
    still_running: usize,
}

impl SessionSet {
    /// Starts the sessions of `layout` (epoch `epoch`) for this pod; returns the set and the
    /// merged stream.
    pub fn start(
        discord: Discord,
        epoch: u64,
        layout: Layout,
        gate: Arc<IdentifyGate>,
        metrics: Arc<GatewayMetrics>,
    ) -> (SessionSet, mpsc::Receiver<ShardEvent>) {
        let (events, stream) = mpsc::channel(EVENT_QUEUE);
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let relay = discord.relay.clone();
        let sessions = Arc::new(Sessions {
            sets: Mutex::new(Vec::new()),
            gate: gate.clone(),
            connected: metrics.connected.clone(),
        });
        let mut set = SessionSet {
            sessions,
            discord,
            shared: Shared {
                events,
                metrics,
                gate,
                relay,
            },
            connections: Vec::new(),
            ended,
            ended_tx,
            still_running: 0,
        };
        set.open(epoch, layout);
        (set, stream)
    }

    /// Opens the sessions of `layout` for epoch `epoch`, beside those running (nothing if that
    /// epoch's are open already).
    pub fn open(&mut self, epoch: u64, layout: Layout) {
        if self.connections.iter().any(|(e, _)| *e == epoch) {
            return;
        }
        let sharding = layout.sharding(self.discord.ordinal);
        let mut connections: Vec<Connection> = layout
            .sessions(self.discord.ordinal)
            .into_iter()
            .map(|shard| {
                Connection::start(
                    ConnectionConfig {
                        token: self.discord.token.clone(),
                        api_url: self.discord.api_url.clone(),
                        shard,
                        epoch,
                        sharding,
                    },
                    self.shared.clone(),
                )
            })
            .collect();
        for connection in &mut connections {
            let (tx, finished) = (self.ended_tx.clone(), connection.take_finished());
            let asked = connection.stop_requested();
            tokio::spawn(async move {
                let result = match finished.await {
                    Ok(result) => result,
                    Err(_) => Err(ConnectionError::Thread("a connection thread ended".into())),
                };
                let _ = tx.send((asked.load(Ordering::SeqCst), result));
            });
        }
        self.still_running += connections.len();
        self.sessions
            .sets()
            .push((epoch, connections.iter().map(|c| c.state.clone()).collect()));
        self.connections.push((epoch, connections));
        self.count();
        tracing::info!(epoch, layout = %layout, "Discord sessions opened");
    }

    /// After a commit (or an abort): keeps the sessions of `epoch` (the ownership's sessions
    /// epoch: a rescale that did not change this pod's sessions keeps the set it had), opening
    /// `layout`'s if there are none, and closes the others.
    pub async fn settle(&mut self, epoch: u64, layout: Layout) {
        self.open(epoch, layout);
        self.close_all_but(epoch).await;
    }

    /// Closes the sessions of every epoch but `keep`.
    async fn close_all_but(&mut self, keep: u64) {
        let (closing, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.connections)
            .into_iter()
            .partition(|(e, _)| *e != keep);
        self.connections = kept;
        self.sessions.sets().retain(|(e, _)| *e == keep);
        for (epoch, mut connections) in closing {
            futures_util::future::join_all(connections.iter_mut().map(|c| c.shutdown())).await;
            tracing::info!(epoch, "Discord sessions of an earlier layout closed");
        }
        self.count();
    }

    fn count(&self) {
        let n: usize = self.connections.iter().map(|(_, c)| c.len()).sum();
        self.shared.metrics.shards.set(n as i64);
    }

    /// Resolves when a session ends for good on its own: with its error, or Ok after
    /// `shutdown`. Sessions closed by [`SessionSet::close_all_but`] do not count.
    pub async fn finished(&mut self) -> Result<(), ConnectionError> {
        loop {
            match self.ended.recv().await {
                Some((asked, result)) => {
                    self.still_running -= 1;
                    // A set closed after a rescale, while the pod goes on.
                    if asked && !self.connections.is_empty() {
                        if let Err(e) = result {
                            tracing::warn!(error = %gateway_actors::errors::chain(&e), "a closed session ended with an error");
                        }
                        continue;
                    }
                    return result;
                }
                None => return Ok(()),
            }
        }
    }

    /// Closes every session.
    pub async fn shutdown(&mut self) {
        futures_util::future::join_all(
            self.connections
                .iter_mut()
                .flat_map(|(_, c)| c.iter_mut())
                .map(|c| c.shutdown()),
        )
        .await;
        self.connections.clear();
    }

    /// Waits up to `limit` for every session still running to end (after `shutdown`); the
    /// errors they end with, if any.
    pub async fn closed(&mut self, limit: Duration) -> Result<Vec<ConnectionError>, ()> {
        let mut errors = Vec::new();
        let all = async {
            while self.still_running > 0 {
                match self.ended.recv().await {
                    Some((_, result)) => {
                        self.still_running -= 1;
                        errors.extend(result.err());
                    }
                    None => break,
                }
            }
        };
        tokio::time::timeout(limit, all).await.map_err(|_| ())?;
        Ok(errors)
    }
}
