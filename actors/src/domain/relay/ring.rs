//! The relay's released events, kept for clients that resume: each at its position (one after
//! the other, from 1), until the ring holds more than its byte budget or the oldest is older
//! than the resume window. A client that reconnects within both gets exactly what followed the
//! last event it saw; beyond them it must identify again (Discord's op 9).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One released dispatch, shared by every client (never copied per client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    pub position: u64,
    /// The dispatch's `t`.
    pub kind: Arc<str>,
    /// Its `d`, as JSON text.
    pub data: Arc<str>,
    /// When the pod accepted it (ms since the epoch), for the relay's lag.
    pub received_ms: i64,
}

impl Released {
    /// The bytes the ring counts for it.
    fn bytes(&self) -> usize {
        self.kind.len() + self.data.len() + 64
    }
}

pub struct Ring {
    items: VecDeque<(Instant, Released)>,
    bytes: usize,
    max_bytes: usize,
    window: Duration,
    /// The position the next released event gets.
    next: u64,
}

impl Ring {
    pub fn new(max_bytes: usize, window: Duration) -> Ring {
        Ring {
            items: VecDeque::new(),
            bytes: 0,
            max_bytes,
            window,
            next: 1,
        }
    }

    /// The position of the last event released (0 before the first).
    pub fn position(&self) -> u64 {
        self.next - 1
    }

    /// Keeps `data`, released now, at the next position, dropping what no longer fits.
    pub fn push(
        &mut self,
        kind: Arc<str>,
        data: Arc<str>,
        received_ms: i64,
        now: Instant,
    ) -> Released {
        let released = Released {
            position: self.next,
            kind,
            data,
            received_ms,
        };
        self.next += 1;
        self.bytes += released.bytes();
        self.items.push_back((now, released.clone()));
        self.trim(now);
        released
    }

    /// Drops what is past the byte budget or the window.
    pub fn trim(&mut self, now: Instant) {
        while let Some((at, oldest)) = self.items.front() {
            let expired = now.saturating_duration_since(*at) > self.window;
            if self.bytes <= self.max_bytes && !expired {
                break;
            }
            self.bytes -= oldest.bytes();
            self.items.pop_front();
        }
    }

    /// Every event after `position`, if the ring still holds all of them; None if some were
    /// dropped (the client must identify again).
    pub fn after(&self, position: u64) -> Option<Vec<Released>> {
        if position > self.position() {
            return None;
        }
        let oldest = self.items.front().map_or(self.next, |(_, r)| r.position);
        if position + 1 < oldest {
            return None;
        }
        // Positions are consecutive: the first wanted is found by subtraction, not a search.
        let first = (position + 1 - oldest) as usize;
        Some(self.items.range(first..).map(|(_, r)| r.clone()).collect())
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(ring: &mut Ring, text: &str, at: Instant) -> u64 {
        ring.push("MESSAGE_CREATE".into(), text.into(), 0, at)
            .position
    }

    #[test]
    fn a_resume_gets_exactly_what_followed() {
        let now = Instant::now();
        let mut ring = Ring::new(1 << 20, Duration::from_secs(60));
        assert_eq!(ring.after(0), Some(vec![]));
        for text in ["a", "b", "c"] {
            push(&mut ring, text, now);
        }
        let after: Vec<String> = ring
            .after(1)
            .unwrap()
            .iter()
            .map(|r| r.data.to_string())
            .collect();
        assert_eq!(after, ["b", "c"]);
        assert_eq!(ring.after(3), Some(vec![]));
        // A position the relay never reached is not resumable.
        assert_eq!(ring.after(4), None);
    }

    #[test]
    fn past_the_budget_or_the_window_a_client_cannot_resume() {
        let start = Instant::now();
        let mut ring = Ring::new(3 * (14 + 1 + 64), Duration::from_secs(60));
        for text in ["a", "b", "c", "d"] {
            push(&mut ring, text, start);
        }
        // Four events do not fit: the first went.
        assert_eq!(ring.after(0), None);
        assert_eq!(ring.after(1).unwrap().len(), 3);
        assert!(ring.bytes() <= 3 * (14 + 1 + 64));
        ring.trim(start + Duration::from_secs(61));
        assert_eq!(ring.after(1), None);
        assert_eq!(ring.after(4), Some(vec![]));
    }
}
