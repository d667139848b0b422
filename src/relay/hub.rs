//! The relay's shared state, kept by one task: each served guild's document, the ring of
//! released events every client reads from, and the sessions a client may resume.
//!
//! The pump takes the pipeline's released events in order, applies each to its guild's
//! document and appends it to the ring, under one lock. An IDENTIFY reads the documents and
//! the ring's position under that same lock, so a new client's GUILD_CREATEs and the events
//! after them meet exactly: nothing is in both, nothing in neither.

use super::metrics::RelayMetrics;
use super::upstream::Upstream;
use gateway_actors::relay::guild_doc::GuildDoc;
use gateway_actors::relay::ring::{Released, Ring};
use gateway_actors::{RelayFeed, Relayed};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the relay was configured with.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The bot's token: an IDENTIFY or RESUME must present it.
    pub token: String,
    /// The URL clients reach this pod's relay at (READY's `resume_gateway_url`).
    pub public_url: String,
    pub resume_window: Duration,
    pub buffer_bytes: usize,
    pub heartbeat_interval: Duration,
    pub max_clients: usize,
}

/// A session whose connection ended, kept for a RESUME within the window.
#[derive(Debug, Clone, Copy)]
pub struct Parked {
    /// A dispatch at ring position `p` was this session's seq `p + offset`.
    pub offset: i64,
    /// The first seq after READY and the GUILD_CREATEs: a RESUME from before it cannot be served.
    pub stream_from: u64,
    pub at: Instant,
}

/// A new client's start: READY's guilds, their GUILD_CREATEs, and the position they are as of.
pub struct Snapshot {
    pub guild_ids: Vec<String>,
    pub guild_creates: Vec<String>,
    pub position: u64,
}

struct State {
    docs: HashMap<u64, GuildDoc>,
    ring: Ring,
    parked: HashMap<String, Parked>,
}

pub struct Hub {
    state: Mutex<State>,
    /// The ring's newest position: clients wait on it.
    position: watch::Sender<u64>,
    pub settings: RelaySettings,
    pub metrics: RelayMetrics,
    pub upstream: Arc<Upstream>,
    /// Clients connected now.
    clients: std::sync::atomic::AtomicUsize,
    /// What the pipeline released.
    feed: Arc<RelayFeed>,
    /// Whether the pod owns a guild now (its committed layout).
    owns: Box<dyn Fn(u64) -> bool + Send + Sync>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update under the lock is one step: a panic elsewhere leaves consistent data.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The dispatches that change what a GUILD_CREATE would say (the others are not parsed).
fn changes_documents(kind: &str) -> bool {
    kind.starts_with("GUILD_")
        && !matches!(
            kind,
            "GUILD_BAN_ADD" | "GUILD_BAN_REMOVE" | "GUILD_AUDIT_LOG_ENTRY_CREATE"
        )
        || kind.starts_with("CHANNEL_")
        || kind.starts_with("THREAD_")
        || kind.starts_with("STAGE_INSTANCE_")
}

impl Hub {
    pub fn new(
        settings: RelaySettings,
        metrics: RelayMetrics,
        upstream: Arc<Upstream>,
        feed: Arc<RelayFeed>,
        owns: Box<dyn Fn(u64) -> bool + Send + Sync>,
    ) -> Hub {
        Hub {
            state: Mutex::new(State {
                docs: HashMap::new(),
                ring: Ring::new(settings.buffer_bytes, settings.resume_window),
                parked: HashMap::new(),
            }),
            position: watch::channel(0).0,
            settings,
            metrics,
            upstream,
            clients: Default::default(),
            feed,
            owns,
        }
    }

    /// Takes the feed's released events as they come; trims the ring meanwhile.
    pub async fn pump(self: Arc<Self>) {
        let mut trim = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = self.feed.released() => self.catch_up(),
                _ = trim.tick() => self.expire(),
            }
        }
    }

    /// Takes what the feed released and not yet taken: applies each event to its guild's
    /// document and appends it to the ring. Taking and appending under one lock keeps the
    /// release order whoever calls it.
    pub fn catch_up(&self) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let batch = self.feed.take();
        if batch.is_empty() {
            return;
        }
        self.metrics.released.inc_by(batch.len() as u64);
        for relayed in batch {
            if let Some(guild_id) = relayed.guild_id {
                if changes_documents(&relayed.kind) {
                    apply(&mut state.docs, guild_id, &relayed);
                }
                if &*relayed.kind == "GUILD_DELETE"
                    && !relayed.data.contains(r#""unavailable":true"#)
                {
                    self.upstream.forget(guild_id);
                }
            }
            state
                .ring
                .push(relayed.kind, relayed.data, relayed.received_ms, now);
        }
        self.published(state);
    }

    /// Updates the gauges and wakes the clients after the ring grew.
    fn published(&self, state: MutexGuard<'_, State>) {
        self.metrics.buffer_bytes.set(state.ring.bytes() as i64);
        self.metrics.guilds.set(state.docs.len() as i64);
        let position = state.ring.position();
        drop(state);
        self.position.send_replace(position);
    }

    /// The documents (GUILD_CREATE `d`) of the guilds `take` selects, as of everything
    /// released so far: what a rescale's export carries to their new owner.
    pub fn documents(&self, take: impl Fn(u64) -> bool) -> Vec<(u64, String)> {
        self.catch_up();
        let state = lock(&self.state);
        state
            .docs
            .iter()
            .filter(|(id, _)| take(**id))
            .map(|(id, doc)| (*id, doc.to_guild_create().to_string()))
            .collect()
    }

    /// The guilds not `kept` leave the clients (a rescale gave them away): a GUILD_DELETE
    /// with `unavailable`, which discord.js keeps as an outage and the bot ignores, after
    /// everything released before.
    pub fn leave(&self, kept: impl Fn(u64) -> bool) {
        self.catch_up();
        let now = Instant::now();
        let mut state = lock(&self.state);
        let mut leaving: Vec<u64> = state.docs.keys().copied().filter(|g| !kept(*g)).collect();
        if leaving.is_empty() {
            return;
        }
        leaving.sort_unstable();
        let now_ms = gateway_actors::time::now_ms();
        for guild_id in leaving {
            state.docs.remove(&guild_id);
            let data = format!(r#"{{"id":"{guild_id}","unavailable":true}}"#);
            state
                .ring
                .push("GUILD_DELETE".into(), data.into(), now_ms, now);
        }
        self.published(state);
    }

    /// Drops what fell out of the resume window.
    fn expire(&self) {
        let now = Instant::now();
        let window = self.settings.resume_window;
        let mut state = lock(&self.state);
        state.ring.trim(now);
        state
            .parked
            .retain(|_, p| now.duration_since(p.at) <= window);
        self.metrics.buffer_bytes.set(state.ring.bytes() as i64);
    }

    /// Every served guild and the position they are as of.
    pub fn snapshot(&self) -> Snapshot {
        let state = lock(&self.state);
        let mut docs: Vec<(&u64, &GuildDoc)> = state.docs.iter().collect();
        docs.sort_by_key(|(id, _)| **id);
        // As Discord's READY, every guild of the pod: those whose GUILD_CREATE its sessions
        // have not received yet come later as events, and discord.js waits for them.
        let mut guild_ids: Vec<u64> = self
            .upstream
            .ready_guilds()
            .into_iter()
            .filter(|g| (self.owns)(*g) && !state.docs.contains_key(g))
            .chain(docs.iter().map(|(id, _)| **id))
            .collect();
        guild_ids.sort_unstable();
        guild_ids.dedup();
        Snapshot {
            guild_ids: guild_ids.iter().map(u64::to_string).collect(),
            guild_creates: docs
                .iter()
                .map(|(_, doc)| doc.to_guild_create().to_string())
                .collect(),
            position: state.ring.position(),
        }
    }

    /// The events after `position`; None once some of them left the ring.
    pub fn after(&self, position: u64) -> Option<Vec<Released>> {
        lock(&self.state).ring.after(position)
    }

    pub fn watch_position(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// Keeps a session whose connection ended, for a RESUME within the window.
    pub fn park(&self, session_id: String, parked: Parked) {
        lock(&self.state).parked.insert(session_id, parked);
    }

    /// Takes a parked session back (once).
    pub fn unpark(&self, session_id: &str) -> Option<Parked> {
        let mut state = lock(&self.state);
        let parked = state.parked.remove(session_id)?;
        (parked.at.elapsed() <= self.settings.resume_window).then_some(parked)
    }

    /// Takes a place for a new connection, if there is one.
    pub fn connect(&self) -> Option<ClientSlot<'_>> {
        use std::sync::atomic::Ordering;
        let taken = self
            .clients
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.settings.max_clients).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| {
            self.metrics.clients.inc();
            ClientSlot(self)
        })
    }
}

/// A connected client's place; given back when dropped.
pub struct ClientSlot<'a>(&'a Hub);

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.0
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.0.metrics.clients.dec();
    }
}

/// One released event's effect on its guild's document: a GUILD_CREATE (re)starts it, a
/// GUILD_DELETE ends it, the others change it.
fn apply(docs: &mut HashMap<u64, GuildDoc>, guild_id: u64, relayed: &Relayed) {
    let Ok(d) = serde_json::from_str::<Value>(&relayed.data) else {
        return;
    };
    match &*relayed.kind {
        "GUILD_CREATE" => {
            if let Some(doc) = GuildDoc::from_guild_create(&d) {
                docs.insert(guild_id, doc);
            }
        }
        "GUILD_DELETE" => {
            docs.remove(&guild_id);
        }
        kind => {
            if let Some(doc) = docs.get_mut(&guild_id) {
                doc.apply(kind, &d);
            }
        }
    }
}
