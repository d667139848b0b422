//! The moderation log: moderation events paired with their audit log entries.
//!
//! Discord sends a ban, kick or timeout and the audit log entry that says who did it and why
//! as two separate dispatches, in either order. Each guild keeps a short window: an event waits
//! up to `window` for its entry (and an entry for its event), then the row is written, with
//! executor and reason when the pair was found. The waiting never blocks anything: other events
//! of the guild, and other guilds, go on. A waiting event or entry counts as not yet done.
//!
//! Pure logic with explicit clocks; the guild actor owns the timers.

mod handover;
mod rows;
mod waiting;

#[cfg(test)]
mod tests;

use crate::domain::event::{audit_action, AuditEntry, Event, Id, TimeoutChange};
use crate::domain::op::Op;
use crate::domain::time::human_duration;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use waiting::Waiting;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    Ban,
    Unban,
    Kick,
    Timeout,
    TimeoutRemoved,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Ban => "ban",
            Action::Unban => "unban",
            Action::Kick => "kick",
            Action::Timeout => "timeout",
            Action::TimeoutRemoved => "timeout_removed",
        }
    }

    /// The action an audit entry records, if it is one of ours. (Each entry is at most one.)
    fn of(entry: &AuditEntry) -> Option<Action> {
        match (entry.action, entry.timeout_change) {
            (audit_action::MEMBER_BAN_ADD, _) => Some(Action::Ban),
            (audit_action::MEMBER_BAN_REMOVE, _) => Some(Action::Unban),
            (audit_action::MEMBER_KICK, _) => Some(Action::Kick),
            (audit_action::MEMBER_UPDATE, Some(TimeoutChange::Set)) => Some(Action::Timeout),
            (audit_action::MEMBER_UPDATE, Some(TimeoutChange::Cleared)) => {
                Some(Action::TimeoutRemoved)
            }
            _ => None,
        }
    }
}

/// What an event and an entry are paired by: the member and the action.
type MatchKey = (Id, Action);

/// How far our clock may be behind Discord's: a late entry completes only rows written after
/// its own creation time less this.
const CLOCK_SKEW_MS: i64 = 60_000;

struct Pending<T> {
    token: T,
    action: Action,
    user_id: Id,
    duration: Option<String>,
    /// The idempotence key when no entry is found.
    unmatched_key: Option<String>,
    /// State to persist with the row (the member's new timeout).
    state: Option<Op>,
    /// A timeout change's member timeout before it: what a hand-over rolls back to, since
    /// the new owner (this very log, when a guild hands itself over) sees the change again.
    timeout_before: Option<Option<i64>>,
}

struct Held<T> {
    token: T,
    entry: AuditEntry,
    /// Was it the bot's own action (known when the entry arrived)?
    by_bot: bool,
}

/// Finished work: these tokens are done once these ops are committed.
#[derive(Debug)]
pub struct Resolution<T> {
    pub tokens: Vec<T>,
    pub ops: Vec<Op>,
}

pub struct ModerationLog<T> {
    guild_id: Id,
    window: Duration,
    pending: Waiting<Pending<T>>,
    held: Waiting<Held<T>>,
    /// Each member's last communication_disabled_until (Unix ms), as far as we know.
    timeouts: HashMap<Id, Option<i64>>,
    /// For each member with a timeout change handed over: the timeout before the first one.
    /// Restored only if the guild is taken back ([`ModerationLog::take_back`]): until then
    /// later changes of the member are judged against the handed ones, which precede them.
    before_handed: HashMap<Id, Option<i64>>,
}

impl<T> ModerationLog<T> {
    pub fn new(guild_id: Id, window: Duration, timeouts: HashMap<Id, i64>) -> Self {
        let timeouts = timeouts
            .into_iter()
            .map(|(user, until)| (user, Some(until)))
            .collect();
        ModerationLog {
            guild_id,
            window,
            pending: Waiting::new(),
            held: Waiting::new(),
            timeouts,
            before_handed: HashMap::new(),
        }
    }

    /// Is anything waiting? (A guild with waiting work is not idle.)
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty() || !self.held.is_empty()
    }

    /// Handles a moderation event or audit entry. Returns `Err(token)` for any other event.
    /// `now_ms` is the wall clock (for "is this timeout in the future"), `seq` the gateway seq.
    pub fn handle(
        &mut self,
        token: T,
        event: &Event,
        seq: Option<u64>,
        now: Instant,
        now_ms: i64,
        bot_user_id: Option<Id>,
    ) -> Result<Vec<Resolution<T>>, T> {
        let pending = match event {
            Event::AuditEntry(entry) => {
                return Ok(self.on_entry(token, entry.clone(), now, bot_user_id))
            }
            Event::Ban { user_id, added } => self.ban(token, *user_id, *added, seq),
            Event::MemberRemove { user_id } => Pending {
                token,
                action: Action::Kick,
                user_id: *user_id,
                duration: None,
                unmatched_key: None,
                state: None,
                timeout_before: None,
            },
            Event::MemberUpdate {
                user_id,
                timeout_until_ms,
            } => match self.timeout_change(token, *user_id, *timeout_until_ms, now_ms) {
                Ok(pending) => pending,
                Err(done) => return Ok(vec![done]),
            },
            _ => return Err(token),
        };
        let key = (pending.user_id, pending.action);
        Ok(match self.held.take(&key) {
            Some(held) => vec![self.resolve(pending, Some(held))],
            None => {
                self.pending.push(now, Some(key), pending);
                Vec::new()
            }
        })
    }

    fn ban(&self, token: T, user_id: Id, added: bool, seq: Option<u64>) -> Pending<T> {
        let guild_id = self.guild_id;
        let action = if added { Action::Ban } else { Action::Unban };
        // With the guild: one session's seq is unique, but a later session's is not,
        // and another guild's row must never make this one's a duplicate.
        let key = seq.map(|s| format!("{}:{guild_id}:{user_id}:s{s}", action.name()));
        Pending {
            token,
            action,
            user_id,
            duration: None,
            unmatched_key: key,
            state: None,
            timeout_before: None,
        }
    }

    /// A member update that changes the member's timeout: a timeout or its removal waits for
    /// its entry. `Err`: done at once (no change, or a change that is not a timeout).
    fn timeout_change(
        &mut self,
        token: T,
        user_id: Id,
        timeout_until_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Pending<T>, Resolution<T>> {
        let guild_id = self.guild_id;
        let previous = self.timeouts.get(&user_id).copied().flatten();
        if previous == timeout_until_ms {
            return Err(Resolution {
                tokens: vec![token],
                ops: Vec::new(),
            });
        }
        self.timeouts.insert(user_id, timeout_until_ms);
        // This change supersedes the member's earlier ones still waiting for their
        // entries: their rows are still written, but the persisted timeout must end as
        // the last event left it, whatever order the waiting items resolve in.
        for action in [Action::Timeout, Action::TimeoutRemoved] {
            self.pending
                .each_mut(&(user_id, action), |p| p.state = None);
        }
        let state = Some(Op::SetMemberTimeout {
            guild_id,
            user_id,
            until_ms: timeout_until_ms,
        });
        // With the guild: a bot that times a member out in several guilds at once
        // gives the same member the same end time in each.
        let (action, duration, key) = match (timeout_until_ms, previous) {
            (Some(until), _) if until > now_ms => (
                Action::Timeout,
                Some(human_duration(until - now_ms)),
                format!("timeout:{guild_id}:{user_id}:{until}"),
            ),
            (None, Some(previous)) if previous > now_ms => (
                Action::TimeoutRemoved,
                None,
                format!("timeout_removed:{guild_id}:{user_id}:{previous}"),
            ),
            // A change that is not a timeout (one that expired, or set in the past).
            _ => {
                return Err(Resolution {
                    tokens: vec![token],
                    ops: state.into_iter().collect(),
                })
            }
        };
        Ok(Pending {
            token,
            action,
            user_id,
            duration,
            unmatched_key: Some(key),
            state,
            timeout_before: Some(previous),
        })
    }
    fn on_entry(
        &mut self,
        token: T,
        entry: AuditEntry,
        now: Instant,
        bot_user_id: Option<Id>,
    ) -> Vec<Resolution<T>> {
        let Some(action) = Action::of(&entry) else {
            return vec![Resolution {
                tokens: vec![token],
                ops: Vec::new(),
            }];
        };
        let key = entry.target_id.map(|target| (target, action));
        let held = Held {
            token,
            by_bot: entry.executor_id.is_some() && entry.executor_id == bot_user_id,
            entry,
        };
        match key.and_then(|k| self.pending.take(&k)) {
            Some(pending) => vec![self.resolve(pending, Some(held))],
            None => {
                self.held.push(now, key, held);
                Vec::new()
            }
        }
    }

    /// Resolves everything older than the window.
    pub fn expire(&mut self, now: Instant) -> Vec<Resolution<T>> {
        let Some(cutoff) = now.checked_sub(self.window) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(pending) = self.pending.pop_if_since_by(cutoff) {
            out.push(self.resolve(pending, None));
        }
        while let Some(held) = self.held.pop_if_since_by(cutoff) {
            out.push(self.unmatched_entry(held));
        }
        out
    }

    /// Resolves everything now: no more events will come (end of a replay, shutdown).
    pub fn flush(&mut self) -> Vec<Resolution<T>> {
        let pending: Vec<_> = self.pending.drain().collect();
        let mut out: Vec<_> = pending.into_iter().map(|p| self.resolve(p, None)).collect();
        let held: Vec<_> = self.held.drain().collect();
        out.extend(held.into_iter().map(|h| self.unmatched_entry(h)));
        out
    }

    /// When the oldest waiting item expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = match (self.pending.oldest_since(), self.held.oldest_since()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(oldest + self.window)
    }
}
