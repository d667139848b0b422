//! What the pod's relay may send its clients, and when.
//!
//! The shard filter holds every event this pod applies as a guild's owner (and pod 0's DMs)
//! under its ticket; the event is released once it and every earlier event of its guild are
//! done (committed, or storing nothing), so a client that reads the pod's data on an event
//! finds that event's rows, and each guild's events leave in Discord's order. One guild
//! waiting holds back no other. The relay's server takes the released events in that order
//! ([`RelayFeed::take`]).
//!
//! At a rescale, the guilds this pod takes join its relay at the commit, not when it goes
//! live: until the commit this pod's data API still sends their reads to the old owner (421),
//! so a client meeting them earlier could not read their rows. Their GUILD_CREATE and the
//! events released meanwhile wait in [`Joining`] and leave together at [`RelayFeed::open`].

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

/// The guilds a rescale hands to this pod, between its going live and the commit.
struct Joining {
    guilds: Box<dyn Fn(u64) -> bool + Send>,
    /// Their GUILD_CREATEs: the first thing clients meet of each.
    documents: Vec<Relayed>,
    /// Their events released since, in release order.
    waiting: Vec<Relayed>,
}

/// The events held until done, and those released and not yet taken by the relay.
#[derive(Default)]
pub struct RelayFeed {
    gate: Mutex<ReleaseGate<Relayed>>,
    /// Locked before `released` wherever both are.
    joining: Mutex<Option<Joining>>,
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
        let mut released = lock(&self.gate).done(ticket);
        if released.is_empty() {
            return;
        }
        let mut joining = lock(&self.joining);
        if let Some(joining) = joining.as_mut() {
            let (later, now) = released
                .into_iter()
                .partition(|r| r.guild_id.is_some_and(|g| (joining.guilds)(g)));
            joining.waiting.extend::<Vec<_>>(later);
            released = now;
        }
        lock(&self.released).extend(released);
        drop(joining);
        self.ready.notify_one();
    }

    /// The guilds for which `guilds` holds join at the next [`RelayFeed::open`], introduced by
    /// `documents` (GUILD_CREATEs); their events released until then wait.
    pub(crate) fn join(
        &self,
        guilds: impl Fn(u64) -> bool + Send + 'static,
        documents: Vec<Relayed>,
    ) {
        *lock(&self.joining) = Some(Joining {
            guilds: Box::new(guilds),
            documents,
            waiting: Vec::new(),
        });
    }

    /// The joining guilds join (the rescale committed): their GUILD_CREATEs, then their events
    /// released meanwhile.
    pub(crate) fn open(&self) {
        let mut joining = lock(&self.joining);
        let Some(joined) = joining.take() else { return };
        lock(&self.released).extend(joined.documents.into_iter().chain(joined.waiting));
        drop(joining);
        self.ready.notify_one();
    }

    /// Releases `relayed` behind everything released so far, not waiting for any event: what
    /// the pod itself says of a guild (it leaves this pod at a rescale).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(guild: u64, kind: &str) -> Relayed {
        Relayed {
            guild_id: Some(guild),
            kind: kind.into(),
            data: "{}".into(),
            received_ms: 0,
        }
    }

    fn kinds(released: Vec<Relayed>) -> Vec<String> {
        released
            .iter()
            .map(|r| format!("{}:{}", r.guild_id.unwrap_or(0), r.kind))
            .collect()
    }

    #[test]
    fn a_joining_guild_reaches_clients_at_the_commit_introduced_by_its_document() {
        let feed = RelayFeed::default();
        feed.join(|g| g == 1, vec![event(1, "GUILD_CREATE")]);
        feed.hold(1, event(1, "MESSAGE_CREATE"));
        feed.hold(2, event(2, "MESSAGE_CREATE"));
        feed.done(1);
        feed.done(2);
        // A guild this pod owned before goes on; the joining one waits for the commit.
        assert_eq!(kinds(feed.take()), ["2:MESSAGE_CREATE"]);
        feed.open();
        feed.hold(3, event(1, "MESSAGE_UPDATE"));
        feed.done(3);
        assert_eq!(
            kinds(feed.take()),
            ["1:GUILD_CREATE", "1:MESSAGE_CREATE", "1:MESSAGE_UPDATE"]
        );
        // Opening twice releases nothing more.
        feed.open();
        assert!(feed.take().is_empty());
    }
}
