//! The Discord sessions of one pod: one [`Connection`] per shard it runs (every shard with
//! `md5`, the shards `s % N == POD_ORDINAL` with `discord`), their events merged into one
//! bounded queue. Each guild is on exactly one shard, so merging keeps each guild's order.
//! If any session ends for good (a fatal close, a rejected token), the pod ends.

use super::connection::{
    Connection, ConnectionConfig, ConnectionError, SessionState, ShardEvent, Shared, EVENT_QUEUE,
};
use super::identify::IdentifyGate;
use super::GatewayMetrics;
use gateway_actors::shard::Sharding;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What `/readyz`, `/status` and `/metrics` read.
pub struct Sessions {
    pub sessions: Vec<Arc<SessionState>>,
    pub gate: Arc<IdentifyGate>,
    /// `gateway_connected`: 1 while every session's socket is up.
    connected: prometheus::IntGauge,
}

impl Sessions {
    /// Sets the gauges that are read rather than counted, before a scrape.
    pub fn refresh_gauges(&self) {
        let up = self
            .sessions
            .iter()
            .all(|s| s.connected.load(Ordering::SeqCst));
        self.connected.set(i64::from(up));
    }

    /// Every session is READY or RESUMED.
    pub fn ready(&self) -> bool {
        self.sessions.iter().all(|s| s.ready.load(Ordering::SeqCst))
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
            .sessions
            .iter()
            .filter(|s| !s.ready.load(Ordering::SeqCst))
            .map(|s| s.shard[0])
            .collect();
        Some(format!(
            "Discord sessions not READY or RESUMED: shards {waiting:?}"
        ))
    }
}

pub struct ShardSet {
    pub sessions: Arc<Sessions>,
    connections: Vec<Connection>,
    /// Each session's end, as it happens.
    ended: mpsc::UnboundedReceiver<Result<(), ConnectionError>>,
    still_running: usize,
}

impl ShardSet {
    /// Starts a session for each of this pod's shards; returns the set and the merged stream.
    pub fn start(
        token: &str,
        api_url: Option<&str>,
        sharding: &Sharding,
        gate: Arc<IdentifyGate>,
        metrics: Arc<GatewayMetrics>,
    ) -> (ShardSet, mpsc::Receiver<ShardEvent>) {
        let (events, stream) = mpsc::channel(EVENT_QUEUE);
        let shared = Shared {
            events,
            metrics: metrics.clone(),
            gate: gate.clone(),
        };
        let mut connections: Vec<Connection> = sharding
            .pod_shards()
            .into_iter()
            .map(|shard| {
                Connection::start(
                    ConnectionConfig {
                        token: token.to_owned(),
                        api_url: api_url.map(str::to_owned),
                        shard: [shard, sharding.shards],
                    },
                    shared.clone(),
                )
            })
            .collect();
        metrics.shards.set(connections.len() as i64);
        let (ended_tx, ended) = mpsc::unbounded_channel();
        for connection in &mut connections {
            let (tx, finished) = (ended_tx.clone(), connection.take_finished());
            tokio::spawn(async move {
                let result = match finished.await {
                    Ok(result) => result,
                    Err(_) => Err(ConnectionError::Thread("a connection thread ended".into())),
                };
                let _ = tx.send(result);
            });
        }
        let sessions = Arc::new(Sessions {
            sessions: connections.iter().map(|c| c.state.clone()).collect(),
            gate,
            connected: metrics.connected.clone(),
        });
        (
            ShardSet {
                sessions,
                still_running: connections.len(),
                connections,
                ended,
            },
            stream,
        )
    }

    /// Resolves when a session ends for good: with its error, or Ok after `shutdown`.
    pub async fn finished(&mut self) -> Result<(), ConnectionError> {
        match self.ended.recv().await {
            Some(result) => {
                self.still_running -= 1;
                result
            }
            None => Ok(()),
        }
    }

    /// Closes every session.
    pub async fn shutdown(&mut self) {
        futures_util::future::join_all(self.connections.iter_mut().map(|c| c.shutdown())).await;
    }

    /// Waits up to `limit` for every session still running to end (after `shutdown`); the
    /// errors they end with, if any.
    pub async fn closed(&mut self, limit: Duration) -> Result<Vec<ConnectionError>, ()> {
        let mut errors = Vec::new();
        let all = async {
            while self.still_running > 0 {
                match self.ended.recv().await {
                    Some(result) => {
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
