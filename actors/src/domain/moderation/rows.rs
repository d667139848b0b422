//! What a resolved event writes, paired with its audit entry or not, and what an entry
//! whose event never came asks the store to complete.

use super::{Action, Held, ModerationLog, Pending, Resolution, CLOCK_SKEW_MS};
use crate::domain::op::Op;

impl<T> ModerationLog<T> {
    /// The row of `pending`, with its entry's executor and reason when `held` pairs it.
    pub(super) fn resolve(&self, pending: Pending<T>, held: Option<Held<T>>) -> Resolution<T> {
        let mut tokens = vec![pending.token];
        let mut ops: Vec<Op> = pending.state.into_iter().collect();
        let row = match &held {
            // The bot's own actions are not logged.
            Some(h) if h.by_bot => None,
            Some(h) => Some((
                h.entry.executor_id,
                h.entry.reason.clone().unwrap_or_default(),
                Some(format!("audit:{}", h.entry.id)),
                pending.unmatched_key,
            )),
            // A member who left without a kick entry was not kicked, unless an entry that
            // comes late says so: it finds this record (see `Op::CompleteModAction`).
            None if pending.action == Action::Kick => {
                ops.push(Op::RecordUnpairedRemoval {
                    guild_id: self.guild_id,
                    user_id: pending.user_id,
                });
                None
            }
            None => Some((None, String::new(), pending.unmatched_key, None)),
        };
        if let Some((executor_id, reason, source_key, unpaired_key)) = row {
            ops.push(Op::InsertModAction {
                guild_id: self.guild_id,
                user_id: pending.user_id,
                action: pending.action.name(),
                executor_id,
                reason,
                duration: pending.duration,
                source_key,
                unpaired_key,
            });
        }
        if let Some(h) = held {
            tokens.push(h.token);
        }
        Resolution { tokens, ops }
    }

    /// An entry whose window closed without its event: the event may have come before the
    /// window (its row written without executor, perhaps by an earlier process), so the store
    /// completes that row if there is one.
    pub(super) fn unmatched_entry(&self, held: Held<T>) -> Resolution<T> {
        let ops = match (held.entry.target_id, Action::of(&held.entry)) {
            (Some(user_id), Some(action)) => vec![Op::CompleteModAction {
                guild_id: self.guild_id,
                user_id,
                action: action.name(),
                source_key: format!("audit:{}", held.entry.id),
                not_before_ms: held.entry.id.timestamp_ms() - CLOCK_SKEW_MS,
                executor_id: held.entry.executor_id,
                reason: held.entry.reason.unwrap_or_default(),
                by_bot: held.by_bot,
            }],
            _ => Vec::new(),
        };
        Resolution {
            tokens: vec![held.token],
            ops,
        }
    }
}
