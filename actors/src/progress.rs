//! Which events are done: the source of `/status` and of a drain that loses nothing.
//!
//! Each accepted event gets a [`Ticket`] in arrival order. Events finish out of order (guilds
//! run in parallel), so the tracker keeps the window of unfinished tickets; `last_seq_committed`
//! is the gateway seq of the newest ticket before which everything has finished. The window
//! size is bounded by a semaphore, which is also the source's backpressure.

use crate::relay_feed::RelayFeed;
use prometheus::Histogram;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{Notify, Semaphore};

/// An accepted event's place in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

impl Ticket {
    /// Its place in arrival order, as the relay's feed knows it.
    pub(crate) fn number(self) -> u64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub last_seq_received: Option<u64>,
    pub last_seq_committed: Option<u64>,
    pub events_accepted: u64,
    pub events_done: u64,
    pub in_flight: u64,
}

struct Slot {
    seq: Option<u64>,
    accepted: Instant,
    done: bool,
}

#[derive(Default)]
struct Window {
    first: u64,
    // Tickets first.. in order.
    slots: VecDeque<Slot>,
    snapshot: Snapshot,
}

/// Tracks every accepted event until it is done.
pub(crate) struct Progress {
    /// The unfinished tickets in arrival order, and the counts `/status` shows.
    window: Mutex<Window>,
    /// Accepted-to-done time of each event.
    latency: Option<Histogram>,
    /// One permit per event that may be in flight: `admit` takes one, `complete` returns it.
    admission: Arc<Semaphore>,
    /// Woken when the last unfinished event is done (drains wait on it).
    idle: Notify,
    /// Events accepted without a permit ([`Progress::admit_now`]): their completion pays
    /// this back instead of returning a permit.
    debt: AtomicUsize,
    /// With a relay: told of every event done, to release what waited for it.
    relay: Option<Arc<RelayFeed>>,
}

impl Progress {
    pub(crate) fn new(
        max_in_flight: usize,
        latency: Option<Histogram>,
        relay: Option<Arc<RelayFeed>>,
    ) -> Self {
        Progress {
            relay,
            window: Mutex::new(Window::default()),
            latency,
            admission: Arc::new(Semaphore::new(max_in_flight.max(1))),
            idle: Notify::new(),
            debt: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // A panic while holding this lock leaves consistent data (every update is one step).
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for room in the window, then accepts an event.
    pub(crate) async fn admit(&self, seq: Option<u64>) -> Ticket {
        // The semaphore is never closed; if it were, accepting beats losing the event.
        if let Ok(permit) = self.admission.acquire().await {
            permit.forget();
        }
        self.begin(seq)
    }

    /// Accepts an event without waiting, past the bound if need be: for a rescale's capture
    /// log, re-applied at once when a guild goes live (already accepted once, and bounded by
    /// the log).
    pub(crate) fn admit_now(&self, seq: Option<u64>) -> Ticket {
        match self.admission.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                self.debt.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.begin(seq)
    }

    /// The ticket the next accepted event will get: [`Progress::wait_before`] it waits for
    /// everything accepted until now.
    pub(crate) fn mark(&self) -> u64 {
        let w = self.lock();
        w.first + w.slots.len() as u64
    }

    /// Resolves when every event accepted before `mark` is done.
    pub(crate) async fn wait_before(&self, mark: u64) {
        while self.lock().first < mark {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    fn begin(&self, seq: Option<u64>) -> Ticket {
        let mut w = self.lock();
        let ticket = Ticket(w.first + w.slots.len() as u64);
        w.slots.push_back(Slot {
            seq,
            accepted: Instant::now(),
            done: false,
        });
        w.snapshot.events_accepted += 1;
        w.snapshot.in_flight += 1;
        if seq.is_some() {
            w.snapshot.last_seq_received = seq;
        }
        ticket
    }

    /// Marks an event finished: committed, deliberately skipped, or shed.
    pub(crate) fn complete(&self, ticket: Ticket) {
        let (idle, accepted) = {
            let mut w = self.lock();
            let Some(index) = ticket.0.checked_sub(w.first) else {
                return;
            };
            let accepted = match w.slots.get_mut(index as usize) {
                Some(slot) if !slot.done => {
                    slot.done = true;
                    slot.accepted
                }
                _ => return,
            };
            w.snapshot.events_done += 1;
            w.snapshot.in_flight -= 1;
            while w.slots.front().is_some_and(|s| s.done) {
                if let Some(Slot { seq: Some(seq), .. }) = w.slots.pop_front() {
                    w.snapshot.last_seq_committed = Some(seq);
                }
                w.first += 1;
            }
            (w.snapshot.in_flight == 0, accepted)
        };
        if let Some(relay) = &self.relay {
            relay.done(ticket.0);
        }
        if let Some(latency) = &self.latency {
            latency.observe(accepted.elapsed().as_secs_f64());
        }
        let repaid = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok();
        if !repaid {
            self.admission.add_permits(1);
        }
        if idle {
            self.idle.notify_waiters();
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.lock().snapshot
    }

    /// Resolves when every accepted event has finished.
    pub(crate) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.snapshot().in_flight == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_seq_waits_for_the_oldest_unfinished_event() {
        let p = Progress::new(10, None, None);
        let a = p.begin(Some(1));
        let b = p.begin(Some(2));
        let c = p.begin(None);
        let d = p.begin(Some(4));
        p.complete(b);
        assert_eq!(p.snapshot().last_seq_committed, None);
        p.complete(a);
        assert_eq!(p.snapshot().last_seq_committed, Some(2));
        p.complete(d);
        p.complete(d); // twice is harmless
        assert_eq!(p.snapshot().last_seq_committed, Some(2));
        p.complete(c);
        let s = p.snapshot();
        assert_eq!(
            (
                s.last_seq_committed,
                s.last_seq_received,
                s.in_flight,
                s.events_done
            ),
            (Some(4), Some(4), 0, 4)
        );
    }
}
