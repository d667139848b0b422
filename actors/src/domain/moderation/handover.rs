//! A guild leaving this pod mid-window: what waits is handed to the new owner unresolved,
//! and the timeouts it changed are restored if the guild comes back.

use super::{ModerationLog, Pending, Resolution};
use std::collections::HashMap;

impl<T> ModerationLog<T> {
    /// Takes everything waiting out, unresolved, in arrival order (events, then entries): the
    /// guild moves to another pod, which pairs them with what comes next.
    ///
    /// Except a member's timeout changes when the last of them was superseded by a change
    /// already resolved: the stored timeout is already the latest, and a new owner that saw
    /// them again, without what superseded them, would overwrite it. They are resolved now,
    /// without their entries (an entry that comes later completes the row).
    pub fn hand_over(&mut self) -> (Vec<T>, Vec<Resolution<T>>) {
        let pending: Vec<Pending<T>> = self.pending.drain().collect();
        let mut last_superseded = HashMap::new();
        for p in pending.iter().filter(|p| p.timeout_before.is_some()) {
            last_superseded.insert(p.user_id, p.state.is_none());
        }
        let (mut tokens, mut resolved) = (Vec::new(), Vec::new());
        for p in pending {
            if let Some(before) = p.timeout_before {
                if last_superseded.get(&p.user_id) == Some(&true) {
                    resolved.push(self.resolve(p, None));
                    continue;
                }
                self.before_handed.entry(p.user_id).or_insert(before);
            }
            tokens.push(p.token);
        }
        tokens.extend(self.held.drain().map(|h| h.token));
        (tokens, resolved)
    }

    /// The guild is live here again (it was handed to this pod through new sessions) and
    /// what was handed over will be seen again: each member's timeout goes back to what it
    /// was before the first change handed over, so those changes are still changes.
    pub fn take_back(&mut self) {
        self.timeouts.extend(self.before_handed.drain());
    }
}
