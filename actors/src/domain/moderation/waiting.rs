//! The queue where events wait for their audit entries and entries for their events.

use super::MatchKey;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// Items waiting for their counterpart: in arrival order, which is deadline order since the
/// window is the same for all, plus an index from match key to the items waiting under it.
/// Every operation is O(1) amortised, however many wait (a mass ban can queue 100k events).
pub(super) struct Waiting<V> {
    /// `None` once taken out of the middle by a match. Never starts with `None`.
    slots: VecDeque<Option<Slot<V>>>,
    /// The sequence number of `slots[0]`.
    first: u64,
    /// The sequence numbers of the items waiting under each key, oldest first.
    index: HashMap<MatchKey, VecDeque<u64>>,
}

struct Slot<V> {
    since: Instant,
    key: Option<MatchKey>,
    value: V,
}

impl<V> Waiting<V> {
    pub(super) fn new() -> Self {
        Waiting {
            slots: VecDeque::new(),
            first: 0,
            index: HashMap::new(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub(super) fn push(&mut self, since: Instant, key: Option<MatchKey>, value: V) {
        // Deadline order must hold even if a caller's clock steps back.
        let since = match self.slots.back() {
            Some(Some(last)) => since.max(last.since),
            _ => since,
        };
        let seq = self.first + self.slots.len() as u64;
        if let Some(key) = key {
            self.index.entry(key).or_default().push_back(seq);
        }
        self.slots.push_back(Some(Slot { since, key, value }));
    }

    /// The oldest item waiting under `key`.
    pub(super) fn take(&mut self, key: &MatchKey) -> Option<V> {
        let seqs = self.index.get_mut(key)?;
        let seq = seqs.pop_front();
        if seqs.is_empty() {
            self.index.remove(key);
        }
        let slot = self.slots.get_mut((seq? - self.first) as usize)?.take()?;
        self.skip_taken();
        Some(slot.value)
    }

    /// Changes every item waiting under `key`.
    pub(super) fn each_mut(&mut self, key: &MatchKey, mut f: impl FnMut(&mut V)) {
        let Some(seqs) = self.index.get(key) else {
            return;
        };
        for &seq in seqs {
            if let Some(Some(slot)) = self.slots.get_mut((seq - self.first) as usize) {
                f(&mut slot.value);
            }
        }
    }

    pub(super) fn oldest_since(&self) -> Option<Instant> {
        self.slots.front()?.as_ref().map(|s| s.since)
    }

    /// The oldest item, if it has waited since `deadline` or before.
    pub(super) fn pop_if_since_by(&mut self, deadline: Instant) -> Option<V> {
        if self.oldest_since()? > deadline {
            return None;
        }
        let slot = self.slots.pop_front()??;
        self.first += 1;
        if let Some(key) = slot.key {
            // The oldest item overall is the oldest under its key.
            if let Some(seqs) = self.index.get_mut(&key) {
                seqs.pop_front();
                if seqs.is_empty() {
                    self.index.remove(&key);
                }
            }
        }
        self.skip_taken();
        Some(slot.value)
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = V> + '_ {
        self.index.clear();
        self.first += self.slots.len() as u64;
        self.slots.drain(..).flatten().map(|s| s.value)
    }

    fn skip_taken(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.first += 1;
        }
    }
}
