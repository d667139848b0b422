//! The moderation log: moderation events paired with their audit log entries.
//!
//! Discord sends a ban, kick or timeout and the audit log entry that says who did it and why
//! as two separate dispatches, in either order. Each guild keeps a short window: an event waits
//! up to `window` for its entry (and an entry for its event), then the row is written, with
//! executor and reason when the pair was found. The waiting never blocks anything: other events
//! of the guild, and other guilds, go on. A waiting event or entry counts as not yet done.
//!
//! Pure logic with explicit clocks; the guild actor owns the timers.

use crate::event::{audit_action, AuditEntry, Event, Id, TimeoutChange};
use crate::store::Op;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    fn matches(self, entry: &AuditEntry) -> bool {
        match self {
            Action::Ban => entry.action == audit_action::MEMBER_BAN_ADD,
            Action::Unban => entry.action == audit_action::MEMBER_BAN_REMOVE,
            Action::Kick => entry.action == audit_action::MEMBER_KICK,
            Action::Timeout => {
                entry.action == audit_action::MEMBER_UPDATE
                    && entry.timeout_change == Some(TimeoutChange::Set)
            }
            Action::TimeoutRemoved => {
                entry.action == audit_action::MEMBER_UPDATE
                    && entry.timeout_change == Some(TimeoutChange::Cleared)
            }
        }
    }

    fn is_relevant(entry: &AuditEntry) -> bool {
        [
            Action::Ban,
            Action::Unban,
            Action::Kick,
            Action::Timeout,
            Action::TimeoutRemoved,
        ]
        .iter()
        .any(|a| a.matches(entry))
    }
}

struct Pending<T> {
    token: T,
    since: Instant,
    action: Action,
    user_id: Id,
    duration: Option<String>,
    /// The idempotence key when no entry is found.
    unmatched_key: Option<String>,
    /// State to persist with the row (the member's new timeout).
    state: Option<Op>,
}

struct Held<T> {
    token: T,
    since: Instant,
    entry: AuditEntry,
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
    pending: Vec<Pending<T>>,
    held: VecDeque<Held<T>>,
    /// Each member's last communication_disabled_until (Unix ms), as far as we know.
    timeouts: HashMap<Id, Option<i64>>,
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
            pending: Vec::new(),
            held: VecDeque::new(),
            timeouts,
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
        let (action, user_id, duration, unmatched_key, state) = match event {
            Event::AuditEntry(entry) => {
                return Ok(self.on_entry(token, entry.clone(), now, bot_user_id))
            }
            Event::Ban { user_id, added } => {
                let action = if *added { Action::Ban } else { Action::Unban };
                let key = seq.map(|s| format!("{}:{user_id}:s{s}", action.name()));
                (action, *user_id, None, key, None)
            }
            Event::MemberRemove { user_id } => (Action::Kick, *user_id, None, None, None),
            Event::MemberUpdate {
                user_id,
                timeout_until_ms,
            } => {
                let previous = self.timeouts.get(user_id).copied().flatten();
                if previous == *timeout_until_ms {
                    return Ok(vec![Resolution {
                        tokens: vec![token],
                        ops: Vec::new(),
                    }]);
                }
                self.timeouts.insert(*user_id, *timeout_until_ms);
                let state = Some(Op::SetMemberTimeout {
                    guild_id: self.guild_id,
                    user_id: *user_id,
                    until_ms: *timeout_until_ms,
                });
                match (*timeout_until_ms, previous) {
                    (Some(until), _) if until > now_ms => (
                        Action::Timeout,
                        *user_id,
                        Some(human_duration(until - now_ms)),
                        Some(format!("timeout:{user_id}:{until}")),
                        state,
                    ),
                    (None, Some(previous)) if previous > now_ms => (
                        Action::TimeoutRemoved,
                        *user_id,
                        None,
                        Some(format!("timeout_removed:{user_id}:{previous}")),
                        state,
                    ),
                    // A change that is not a timeout (one that expired, or set in the past).
                    _ => {
                        return Ok(vec![Resolution {
                            tokens: vec![token],
                            ops: state.into_iter().collect(),
                        }])
                    }
                }
            }
            _ => return Err(token),
        };
        let pending = Pending {
            token,
            since: now,
            action,
            user_id,
            duration,
            unmatched_key,
            state,
        };
        let found = self
            .held
            .iter()
            .position(|h| h.entry.target_id == Some(user_id) && action.matches(&h.entry));
        Ok(match found.and_then(|i| self.held.remove(i)) {
            Some(held) => vec![self.resolve(pending, Some(held), bot_user_id)],
            None => {
                self.pending.push(pending);
                Vec::new()
            }
        })
    }

    fn on_entry(
        &mut self,
        token: T,
        entry: AuditEntry,
        now: Instant,
        bot_user_id: Option<Id>,
    ) -> Vec<Resolution<T>> {
        if !Action::is_relevant(&entry) {
            return vec![Resolution {
                tokens: vec![token],
                ops: Vec::new(),
            }];
        }
        let found = self
            .pending
            .iter()
            .position(|p| entry.target_id == Some(p.user_id) && p.action.matches(&entry));
        let held = Held {
            token,
            since: now,
            entry,
        };
        match found {
            Some(i) => {
                let pending = self.pending.remove(i);
                vec![self.resolve(pending, Some(held), bot_user_id)]
            }
            None => {
                self.held.push_back(held);
                Vec::new()
            }
        }
    }

    /// Resolves everything older than the window.
    pub fn expire(&mut self, now: Instant) -> Vec<Resolution<T>> {
        let window = self.window;
        let expired = |since: Instant| now.saturating_duration_since(since) >= window;
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if expired(self.pending[i].since) {
                let pending = self.pending.remove(i);
                out.push(self.resolve(pending, None, None));
            } else {
                i += 1;
            }
        }
        while self.held.front().is_some_and(|h| expired(h.since)) {
            if let Some(held) = self.held.pop_front() {
                out.push(Resolution {
                    tokens: vec![held.token],
                    ops: Vec::new(),
                });
            }
        }
        out
    }

    /// Resolves everything now: no more events will come (end of a replay, shutdown).
    pub fn flush(&mut self) -> Vec<Resolution<T>> {
        let mut out: Vec<_> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|p| self.resolve(p, None, None))
            .collect();
        out.extend(self.held.drain(..).map(|h| Resolution {
            tokens: vec![h.token],
            ops: Vec::new(),
        }));
        out
    }

    /// When the oldest waiting item expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = self
            .pending
            .iter()
            .map(|p| p.since)
            .chain(self.held.iter().map(|h| h.since))
            .min()?;
        Some(oldest + self.window)
    }

    fn resolve(
        &self,
        pending: Pending<T>,
        held: Option<Held<T>>,
        bot_user_id: Option<Id>,
    ) -> Resolution<T> {
        let mut tokens = vec![pending.token];
        let mut ops: Vec<Op> = pending.state.into_iter().collect();
        let row = match &held {
            // The bot's own actions are not logged.
            Some(h) if h.entry.executor_id.is_some() && h.entry.executor_id == bot_user_id => None,
            Some(h) => Some((
                h.entry.executor_id,
                h.entry.reason.clone().unwrap_or_default(),
                Some(format!("audit:{}", h.entry.id)),
            )),
            // A member who left without a kick entry was not kicked.
            None if pending.action == Action::Kick => None,
            None => Some((None, String::new(), pending.unmatched_key)),
        };
        if let Some((executor_id, reason, source_key)) = row {
            ops.push(Op::InsertModAction {
                guild_id: self.guild_id,
                user_id: pending.user_id,
                action: pending.action.name(),
                executor_id,
                reason,
                duration: pending.duration,
                source_key,
            });
        }
        if let Some(h) = held {
            tokens.push(h.token);
        }
        Resolution { tokens, ops }
    }
}

/// A duration as the TypeScript bot writes it (the `ms` package's long format):
/// "10 minutes", "1 hour", "3 days".
pub fn human_duration(ms: i64) -> String {
    const S: f64 = 1000.0;
    const M: f64 = S * 60.0;
    const H: f64 = M * 60.0;
    const D: f64 = H * 24.0;
    let value = ms as f64;
    let abs = value.abs();
    let plural = |unit: f64, name: &str| {
        let n = (value / unit).round();
        format!("{n} {name}{}", if abs >= unit * 1.5 { "s" } else { "" })
    };
    if abs >= D {
        plural(D, "day")
    } else if abs >= H {
        plural(H, "hour")
    } else if abs >= M {
        plural(M, "minute")
    } else if abs >= S {
        plural(S, "second")
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUILD: Id = Id(1);
    const USER: Id = Id(2);
    const MOD: Id = Id(3);
    const BOT: Id = Id(4);

    fn entry(id: u64, action: u16, executor: Id, timeout_change: Option<TimeoutChange>) -> Event {
        Event::AuditEntry(AuditEntry {
            id: Id(id),
            action,
            target_id: Some(USER),
            executor_id: Some(executor),
            reason: Some("raid".into()),
            timeout_change,
        })
    }

    fn log() -> ModerationLog<u32> {
        ModerationLog::new(GUILD, Duration::from_secs(5), HashMap::new())
    }

    fn mod_rows(resolutions: &[Resolution<u32>]) -> Vec<(&'static str, Option<Id>, String)> {
        resolutions
            .iter()
            .flat_map(|r| &r.ops)
            .filter_map(|op| match op {
                Op::InsertModAction {
                    action,
                    executor_id,
                    reason,
                    ..
                } => Some((*action, *executor_id, reason.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn pairs_in_either_order() {
        let t0 = Instant::now();
        let mut log = log();
        let ban = Event::Ban {
            user_id: USER,
            added: true,
        };
        assert!(log
            .handle(1, &ban, Some(1), t0, 0, Some(BOT))
            .unwrap()
            .is_empty());
        let r = log
            .handle(2, &entry(10, 22, MOD, None), Some(2), t0, 0, Some(BOT))
            .unwrap();
        assert_eq!(mod_rows(&r), vec![("ban", Some(MOD), "raid".to_string())]);
        assert_eq!(r[0].tokens, vec![1, 2]);

        let r = log
            .handle(3, &entry(11, 23, MOD, None), Some(3), t0, 0, Some(BOT))
            .unwrap();
        assert!(r.is_empty());
        let r = log
            .handle(
                4,
                &Event::Ban {
                    user_id: USER,
                    added: false,
                },
                Some(4),
                t0,
                0,
                Some(BOT),
            )
            .unwrap();
        assert_eq!(mod_rows(&r), vec![("unban", Some(MOD), "raid".to_string())]);
        assert!(!log.is_waiting());
    }

    #[test]
    fn unmatched_events_are_written_when_the_window_closes_and_leaves_are_not_kicks() {
        let t0 = Instant::now();
        let mut log = log();
        log.handle(
            1,
            &Event::Ban {
                user_id: USER,
                added: true,
            },
            Some(7),
            t0,
            0,
            None,
        )
        .unwrap();
        log.handle(
            2,
            &Event::MemberRemove { user_id: USER },
            Some(8),
            t0,
            0,
            None,
        )
        .unwrap();
        assert!(log.expire(t0 + Duration::from_secs(4)).is_empty());
        let r = log.expire(t0 + Duration::from_secs(5));
        assert_eq!(mod_rows(&r), vec![("ban", None, String::new())]);
        let tokens: Vec<u32> = r.iter().flat_map(|r| r.tokens.clone()).collect();
        assert_eq!(tokens, vec![1, 2]);
    }

    #[test]
    fn timeouts_only_on_change_and_the_bot_is_not_logged() {
        let t0 = Instant::now();
        let mut log = log();
        let set = Event::MemberUpdate {
            user_id: USER,
            timeout_until_ms: Some(600_000),
        };
        assert!(log
            .handle(1, &set, None, t0, 0, Some(BOT))
            .unwrap()
            .is_empty());
        // The same value again writes nothing.
        let r = log.handle(2, &set, None, t0, 0, Some(BOT)).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r[0].ops.is_empty());
        // The entry, by the bot itself: resolved, not logged, the state still saved.
        let r = log
            .handle(
                3,
                &entry(12, 24, BOT, Some(TimeoutChange::Set)),
                None,
                t0,
                0,
                Some(BOT),
            )
            .unwrap();
        assert!(mod_rows(&r).is_empty());
        assert!(matches!(
            r[0].ops[..],
            [Op::SetMemberTimeout {
                until_ms: Some(600_000),
                ..
            }]
        ));
        // Cleared while in the future: timeout_removed with its duration unset.
        let clear = Event::MemberUpdate {
            user_id: USER,
            timeout_until_ms: None,
        };
        log.handle(4, &clear, None, t0, 1000, Some(BOT)).unwrap();
        let r = log.flush();
        assert_eq!(mod_rows(&r), vec![("timeout_removed", None, String::new())]);
    }

    #[test]
    fn durations_read_like_the_ms_package() {
        assert_eq!(human_duration(600_000), "10 minutes");
        assert_eq!(human_duration(60_000), "1 minute");
        assert_eq!(human_duration(89_000), "1 minute");
        assert_eq!(human_duration(90_000), "2 minutes");
        assert_eq!(human_duration(3 * 86_400_000), "3 days");
        assert_eq!(human_duration(500), "500 ms");
    }
}
