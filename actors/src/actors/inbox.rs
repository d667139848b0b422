//! `GuildInbox`: what stands between the shard filter and one guild actor.
//!
//! A guild's events go to its actor's mailbox while fewer than the mailbox capacity are there;
//! beyond that they wait in the inbox's overflow queue, in arrival order, and the actor pulls
//! the next one each time it hands an event on. So the filter never waits on a guild, a busy
//! guild loses nothing, and per-guild order holds: the filter sends straight to the mailbox only
//! while the overflow is empty, and both sides decide under one lock.
//!
//! Memory stays bounded because every queued event holds one of the pipeline's `MAX_IN_FLIGHT`
//! admission permits: a backlog makes the source wait, it does not grow without bound.
//!
//! Dropping is the last resort, for a guild that made no progress at all for the stuck
//! timeout while it had events queued (and storage was healthy, since a failing disk stalls
//! every guild alike): its overflow is dropped and new events are refused until it hands an
//! event on again. The events already in its mailbox stay there and are applied if it recovers.

use crate::domain::event::{Dispatch, Id};
use crate::progress::Ticket;
use actix::Message;
use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One event for a guild actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct GuildEvent {
    pub ticket: Ticket,
    pub dispatch: Dispatch,
    /// The epoch of the Discord sessions that delivered it (see [`crate::domain::rescale::ownership::Route`]).
    pub source_epoch: u64,
    /// When the pod received it (Unix ms): what a timeout's end is compared with, also when a
    /// captured event is re-applied later.
    pub received_ms: i64,
}

/// A guild actor reports that it is idle and may be stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Passivate {
    pub guild_id: Id,
    pub inbox: Arc<GuildInbox>,
}

/// Shared by the filter and one guild actor.
pub(crate) struct GuildInbox {
    state: Mutex<InboxState>,
    /// Write commands sent to the writer and not yet committed; a guild passivates only at 0.
    pub unwritten: Arc<AtomicUsize>,
}

struct InboxState {
    /// Events sent to the actor's mailbox and not yet handed on: at most the capacity.
    in_mailbox: usize,
    /// Events beyond the mailbox, oldest first.
    overflow: VecDeque<GuildEvent>,
    /// When the actor last handed an event on (or the inbox was created).
    last_progress: Instant,
    /// Declared stuck: new events are refused until the actor hands one on.
    stuck: bool,
}

/// What became of an event offered to a guild.
pub(crate) enum Offered {
    /// Sent to the actor's mailbox.
    Mailbox,
    /// Queued in the overflow, behind the mailbox.
    Overflow,
    /// The guild is stuck: the event is handed back, to be dropped and counted.
    Refused(GuildEvent),
}

/// After the actor handed an event on.
pub(crate) struct HandedOn {
    /// The guild had been declared stuck and is making progress again.
    pub recovered: bool,
    /// An event moved from the overflow into the mailbox.
    pub pulled: bool,
}

impl Default for GuildInbox {
    fn default() -> Self {
        GuildInbox {
            state: Mutex::new(InboxState {
                in_mailbox: 0,
                overflow: VecDeque::new(),
                last_progress: Instant::now(),
                stuck: false,
            }),
            unwritten: Arc::default(),
        }
    }
}

impl GuildInbox {
    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // Every update under this lock is a single step, so a poisoned state is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The filter's side: `deliver` puts the event into the actor's mailbox, and is called
    /// under the lock so that the actor's pulls cannot overtake it.
    pub(crate) fn offer(
        &self,
        event: GuildEvent,
        capacity: usize,
        deliver: impl FnOnce(GuildEvent),
    ) -> Offered {
        let mut s = self.lock();
        if s.stuck {
            Offered::Refused(event)
        } else if s.overflow.is_empty() && s.in_mailbox < capacity {
            s.in_mailbox += 1;
            deliver(event);
            Offered::Mailbox
        } else {
            s.overflow.push_back(event);
            Offered::Overflow
        }
    }

    /// The actor's side, each time it hands an event on: the oldest overflow event, if any,
    /// goes to the end of the mailbox through `deliver`.
    pub(crate) fn handed_on(&self, deliver: impl FnOnce(GuildEvent)) -> HandedOn {
        let mut s = self.lock();
        s.in_mailbox = s.in_mailbox.saturating_sub(1);
        s.last_progress = Instant::now();
        let recovered = std::mem::take(&mut s.stuck);
        let pulled = match s.overflow.pop_front() {
            Some(next) => {
                s.in_mailbox += 1;
                deliver(next);
                true
            }
            None => false,
        };
        HandedOn { recovered, pulled }
    }

    /// Nothing queued in the mailbox or the overflow.
    pub(crate) fn is_empty(&self) -> bool {
        let s = self.lock();
        s.in_mailbox == 0 && s.overflow.is_empty()
    }

    /// Declares the guild stuck if it has events queued and handed none on for `after`,
    /// counting from `healthy_since` at the latest (a storage fault stalls every guild and is
    /// not the guild's doing). Returns the dropped overflow, oldest first.
    pub(crate) fn drop_if_stuck(
        &self,
        now: Instant,
        after: Duration,
        healthy_since: Instant,
    ) -> Option<Vec<GuildEvent>> {
        let mut s = self.lock();
        let queued = s.in_mailbox > 0 || !s.overflow.is_empty();
        let stalled_since = s.last_progress.max(healthy_since);
        if s.stuck || !queued || now.saturating_duration_since(stalled_since) < after {
            return None;
        }
        s.stuck = true;
        Some(s.overflow.drain(..).collect())
    }
}
