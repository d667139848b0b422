//! When an event may reach the relay's clients: after its own writes and those of every
//! earlier event of the same guild are committed, in the guild's arrival order.
//!
//! Events of one guild do not finish in arrival order: one that writes nothing is done at once,
//! a ban waits up to the audit window for its entry. Releasing each as it finishes would
//! reorder the guild's stream; releasing on the pod's global committed front would let one
//! waiting ban hold every other guild back. So each guild has its own queue, released from its
//! front as far as its events are done. Its size is bounded by the events in flight
//! (`MAX_IN_FLIGHT`), since an event enters when it is accepted and leaves when it is done.

use std::collections::{HashMap, VecDeque};

/// Whose stream an event is in: a guild's, or the guild-less one (DMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Guild(u64),
    Guildless,
}

struct Held<F> {
    ticket: u64,
    frame: F,
    done: bool,
}

/// The queues of events accepted and not yet released, per stream.
pub struct ReleaseGate<F> {
    queues: HashMap<Stream, VecDeque<Held<F>>>,
    /// The stream of every held ticket.
    stream_of: HashMap<u64, Stream>,
}

impl<F> Default for ReleaseGate<F> {
    fn default() -> Self {
        ReleaseGate {
            queues: HashMap::new(),
            stream_of: HashMap::new(),
        }
    }
}

impl<F> ReleaseGate<F> {
    /// Holds `frame`, the event accepted with `ticket`, behind the earlier events of `stream`.
    /// Tickets of one stream are pushed in arrival order.
    pub fn hold(&mut self, stream: Stream, ticket: u64, frame: F) {
        self.stream_of.insert(ticket, stream);
        self.queues.entry(stream).or_default().push_back(Held {
            ticket,
            frame,
            done: false,
        });
    }

    /// The event of `ticket` is done: the frames this releases, in their stream's order
    /// (none if an earlier event of the stream is not done yet, or the ticket is not held).
    pub fn done(&mut self, ticket: u64) -> Vec<F> {
        let Some(stream) = self.stream_of.remove(&ticket) else {
            return Vec::new();
        };
        let Some(queue) = self.queues.get_mut(&stream) else {
            return Vec::new();
        };
        if let Some(held) = queue.iter_mut().find(|h| h.ticket == ticket) {
            held.done = true;
        }
        let mut released = Vec::new();
        while queue.front().is_some_and(|h| h.done) {
            if let Some(held) = queue.pop_front() {
                released.push(held.frame);
            }
        }
        if queue.is_empty() {
            self.queues.remove(&stream);
        }
        released
    }

    /// Events held, not yet released.
    pub fn held(&self) -> usize {
        self.stream_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guilds_events_leave_in_arrival_order_once_done() {
        let mut gate = ReleaseGate::default();
        let a = Stream::Guild(1);
        gate.hold(a, 1, "ban");
        gate.hold(a, 2, "message");
        gate.hold(a, 3, "typing");
        // The message and the typing finish first: held behind the ban.
        assert!(gate.done(3).is_empty());
        assert!(gate.done(2).is_empty());
        assert_eq!(gate.done(1), ["ban", "message", "typing"]);
        assert_eq!(gate.held(), 0);
    }

    #[test]
    fn one_waiting_guild_holds_back_no_other() {
        let mut gate = ReleaseGate::default();
        gate.hold(Stream::Guild(1), 1, "ban waiting for its entry");
        gate.hold(Stream::Guild(2), 2, "message");
        gate.hold(Stream::Guildless, 3, "dm");
        assert_eq!(gate.done(2), ["message"]);
        assert_eq!(gate.done(3), ["dm"]);
        assert_eq!(gate.held(), 1);
        assert_eq!(gate.done(1), ["ban waiting for its entry"]);
    }

    #[test]
    fn unknown_and_repeated_tickets_release_nothing() {
        let mut gate = ReleaseGate::default();
        gate.hold(Stream::Guild(1), 1, "a");
        assert!(gate.done(7).is_empty());
        assert_eq!(gate.done(1), ["a"]);
        assert!(gate.done(1).is_empty());
    }
}
