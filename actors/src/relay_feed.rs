//! What the pod's relay may send its clients, and when.
//!
//! The shard filter holds every event this pod applies as a guild's owner (and pod 0's DMs)
//! under its ticket; the event is released once it and every earlier event of its guild are
//! done (committed, or storing nothing), so a client that reads the pod's data on an event
//! finds that event's rows, and each guild's events leave in Discord's order. One guild
//! waiting holds back no other. The relay's server takes the released events in that order
//! ([`RelayFeed::take`]).

use crate::domain::relay::release::{ReleaseGate, Stream};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// One dispatch for the relay's clients.
#[derive(Debug, Clone)]
pub struct Relayed {
    /// None: a DM or another guild-less event.
    pub guild_id: Option<u64>,
    /// The dispatch name (`t`).
    pub kind: Arc<str>,
    /// The payload (`d`) as JSON text, shared with the pipeline.
    pub data: Arc<str>,
    /// When the pod accepted it (ms since the epoch): the relay's lag is measured from here.
    pub received_ms: i64,
}

/// The events held until done, and those released and not yet taken by the relay.
#[derive(Default)]
pub struct RelayFeed {
    gate: Mutex<ReleaseGate<Relayed>>,
    released: Mutex<VecDeque<Relayed>>,
    /// Woken when something is released.
    ready: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is one step: a panic leaves consistent data.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl RelayFeed {
    /// Holds `relayed` (the event of `ticket`) until it is done.
    pub(crate) fn hold(&self, ticket: u64, relayed: Relayed) {
        let stream = relayed.guild_id.map_or(Stream::Guildless, Stream::Guild);
        lock(&self.gate).hold(stream, ticket, relayed);
    }

    /// The event of `ticket` is done (or may leave early): releases it and what waited for it.
    /// Tickets never held release nothing.
    pub(crate) fn done(&self, ticket: u64) {
        let released = lock(&self.gate).done(ticket);
        if released.is_empty() {
            return;
        }
        lock(&self.released).extend(released);
        self.ready.notify_one();
    }

    /// Releases `relayed` behind everything released so far, not waiting for any event: what
    /// the pod itself says of a guild (it leaves or joins this pod at a rescale).
    pub fn announce(&self, relayed: Relayed) {
        lock(&self.released).push_back(relayed);
        self.ready.notify_one();
    }

    /// Everything released since the last call, in release order.
    pub fn take(&self) -> Vec<Relayed> {
        lock(&self.released).drain(..).collect()
    }

    /// Resolves once something was released since the last [`RelayFeed::take`] (at once if
    /// something is waiting).
    pub async fn released(&self) {
        self.ready.notified().await;
    }

    /// Events held, waiting for their own or an earlier event of their guild.
    pub fn held(&self) -> usize {
        lock(&self.gate).held()
    }
}
