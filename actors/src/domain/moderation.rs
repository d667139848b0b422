//! The moderation log: moderation events paired with their audit log entries.
//!
//! Discord sends a ban, kick or timeout and the audit log entry that says who did it and why
//! as two separate dispatches, in either order. Each guild keeps a short window: an event waits
//! up to `window` for its entry (and an entry for its event), then the row is written, with
//! executor and reason when the pair was found. The waiting never blocks anything: other events
//! of the guild, and other guilds, go on. A waiting event or entry counts as not yet done.
//!
//! Pure logic with explicit clocks; the guild actor owns the timers.

use crate::domain::event::{audit_action, AuditEntry, Event, Id, TimeoutChange};
use crate::domain::op::Op;
use crate::domain::time::human_duration;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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

/// Items waiting for their counterpart: in arrival order, which is deadline order since the
/// window is the same for all, plus an index from match key to the items waiting under it.
/// Every operation is O(1) amortised, however many wait (a mass ban can queue 100k events).
struct Waiting<V> {
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
    fn new() -> Self {
        Waiting {
            slots: VecDeque::new(),
            first: 0,
            index: HashMap::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn push(&mut self, since: Instant, key: Option<MatchKey>, value: V) {
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
    fn take(&mut self, key: &MatchKey) -> Option<V> {
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
    fn each_mut(&mut self, key: &MatchKey, mut f: impl FnMut(&mut V)) {
        let Some(seqs) = self.index.get(key) else {
            return;
        };
        for &seq in seqs {
            if let Some(Some(slot)) = self.slots.get_mut((seq - self.first) as usize) {
                f(&mut slot.value);
            }
        }
    }

    fn oldest_since(&self) -> Option<Instant> {
        self.slots.front()?.as_ref().map(|s| s.since)
    }

    /// The oldest item, if it has waited since `deadline` or before.
    fn pop_if_since_by(&mut self, deadline: Instant) -> Option<V> {
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

    fn drain(&mut self) -> impl Iterator<Item = V> + '_ {
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
        let guild_id = self.guild_id;
        let mut timeout_before = None;
        let (action, user_id, duration, unmatched_key, state) = match event {
            Event::AuditEntry(entry) => {
                return Ok(self.on_entry(token, entry.clone(), now, bot_user_id))
            }
            Event::Ban { user_id, added } => {
                let action = if *added { Action::Ban } else { Action::Unban };
                // With the guild: one session's seq is unique, but a later session's is not,
                // and another guild's row must never make this one's a duplicate.
                let key = seq.map(|s| format!("{}:{guild_id}:{user_id}:s{s}", action.name()));
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
                timeout_before = Some(previous);
                // This change supersedes the member's earlier ones still waiting for their
                // entries: their rows are still written, but the persisted timeout must end as
                // the last event left it, whatever order the waiting items resolve in.
                for action in [Action::Timeout, Action::TimeoutRemoved] {
                    self.pending
                        .each_mut(&(*user_id, action), |p| p.state = None);
                }
                let state = Some(Op::SetMemberTimeout {
                    guild_id,
                    user_id: *user_id,
                    until_ms: *timeout_until_ms,
                });
                // With the guild: a bot that times a member out in several guilds at once
                // gives the same member the same end time in each.
                match (*timeout_until_ms, previous) {
                    (Some(until), _) if until > now_ms => (
                        Action::Timeout,
                        *user_id,
                        Some(human_duration(until - now_ms)),
                        Some(format!("timeout:{guild_id}:{user_id}:{until}")),
                        state,
                    ),
                    (None, Some(previous)) if previous > now_ms => (
                        Action::TimeoutRemoved,
                        *user_id,
                        None,
                        Some(format!("timeout_removed:{guild_id}:{user_id}:{previous}")),
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
            action,
            user_id,
            duration,
            unmatched_key,
            state,
            timeout_before,
        };
        Ok(match self.held.take(&(user_id, action)) {
            Some(held) => vec![self.resolve(pending, Some(held))],
            None => {
                self.pending.push(now, Some((user_id, action)), pending);
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

    fn resolve(&self, pending: Pending<T>, held: Option<Held<T>>) -> Resolution<T> {
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
    fn unmatched_entry(&self, held: Held<T>) -> Resolution<T> {
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

    /// A timeout waiting for its entry, then its removal paired at once: the persisted state
    /// ends as the last event left it (removed), not as the earlier event resolves later.
    #[test]
    fn the_last_timeout_change_wins_whatever_order_they_resolve_in() {
        let t0 = Instant::now();
        let mut log = log();
        let state = |r: &[Resolution<u32>]| -> Vec<Option<i64>> {
            r.iter()
                .flat_map(|r| &r.ops)
                .filter_map(|op| match op {
                    Op::SetMemberTimeout { until_ms, .. } => Some(*until_ms),
                    _ => None,
                })
                .collect()
        };
        let set = Event::MemberUpdate {
            user_id: USER,
            timeout_until_ms: Some(600_000),
        };
        assert!(log.handle(1, &set, None, t0, 0, None).unwrap().is_empty());
        let clear = Event::MemberUpdate {
            user_id: USER,
            timeout_until_ms: None,
        };
        let early = entry(13, 24, MOD, Some(TimeoutChange::Cleared));
        assert!(log.handle(2, &early, None, t0, 0, None).unwrap().is_empty());
        let r = log.handle(3, &clear, None, t0, 1000, None).unwrap();
        assert_eq!(state(&r), vec![None]);
        // The first one's window closes later: logged, but it leaves the state alone.
        let r = log.flush();
        assert_eq!(mod_rows(&r), vec![("timeout", None, String::new())]);
        assert_eq!(state(&r), Vec::<Option<i64>>::new());
    }

    /// A guild handed over to itself (new sessions, same pod) sees its waiting timeout again:
    /// it must still be logged, with its state, as if it had never been seen.
    #[test]
    fn a_timeout_handed_over_and_seen_again_is_still_logged() {
        let t0 = Instant::now();
        let mut log = log();
        let set = |until: Option<i64>| Event::MemberUpdate {
            user_id: USER,
            timeout_until_ms: until,
        };
        // Two changes: the member goes back to before the first.
        for (token, until) in [(1, 600_000), (2, 900_000)] {
            let r = log.handle(token, &set(Some(until)), None, t0, 0, None);
            assert!(r.unwrap().is_empty());
        }
        let (handed, resolved) = log.hand_over();
        assert_eq!((handed, resolved.len()), (vec![1, 2], 0));
        // Until it is taken back, a later change is judged against the handed ones.
        let r = log.handle(3, &set(Some(900_000)), None, t0, 0, None);
        assert!(!r.unwrap().is_empty(), "no change after the handed ones");
        log.take_back();
        let r = log.handle(3, &set(Some(900_000)), None, t0, 0, None);
        assert!(
            r.unwrap().is_empty(),
            "still a change: it waits for its entry"
        );
        let r = log.flush();
        assert_eq!(mod_rows(&r), vec![("timeout", None, String::new())]);
        let state: Vec<_> = r
            .iter()
            .flat_map(|r| &r.ops)
            .filter(|op| {
                matches!(
                    op,
                    Op::SetMemberTimeout {
                        until_ms: Some(900_000),
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(state.len(), 1);
    }

    /// A timeout waiting for its entry, superseded by a clear that was resolved at once: the
    /// stored state is the clear's. Handed over, the timeout would set it again on the new
    /// owner, so it is logged at the hand-over instead, leaving the state alone.
    #[test]
    fn a_timeout_superseded_by_a_resolved_change_is_logged_not_handed_over() {
        let t0 = Instant::now();
        let mut log = log();
        let set = |until: Option<i64>| Event::MemberUpdate {
            user_id: USER,
            timeout_until_ms: until,
        };
        assert!(log
            .handle(1, &set(Some(600_000)), None, t0, 0, None)
            .unwrap()
            .is_empty());
        let clear_entry = entry(13, 24, MOD, Some(TimeoutChange::Cleared));
        assert!(log
            .handle(2, &clear_entry, None, t0, 0, None)
            .unwrap()
            .is_empty());
        let cleared = log.handle(3, &set(None), None, t0, 1000, None).unwrap();
        assert_eq!(
            mod_rows(&cleared),
            vec![("timeout_removed", Some(MOD), "raid".to_string())]
        );
        let (handed, resolved) = log.hand_over();
        assert!(handed.is_empty(), "{handed:?}");
        assert_eq!(mod_rows(&resolved), vec![("timeout", None, String::new())]);
        let states = resolved
            .iter()
            .flat_map(|r| &r.ops)
            .filter(|op| matches!(op, Op::SetMemberTimeout { .. }))
            .count();
        assert_eq!(states, 0, "the clear's state stands");
    }

    #[test]
    fn many_waiting_events_match_out_of_order_and_expire_oldest_first() {
        let t0 = Instant::now();
        let mut log = log();
        let ms = Duration::from_millis;
        let ban = |user: u64| Event::Ban {
            user_id: Id(user),
            added: true,
        };
        let entry_for = |user: u64| {
            Event::AuditEntry(AuditEntry {
                id: Id(10_000 + user),
                action: audit_action::MEMBER_BAN_ADD,
                target_id: Some(Id(user)),
                executor_id: Some(MOD),
                reason: Some("raid".into()),
                timeout_change: None,
            })
        };
        // Bans of users 100..1100 arriving 1 ms apart; every third one's entry comes, newest
        // first, and pairs at once.
        for i in 0..1000u32 {
            let r = log
                .handle(
                    i,
                    &ban(100 + u64::from(i)),
                    Some(1),
                    t0 + ms(u64::from(i)),
                    0,
                    None,
                )
                .unwrap();
            assert!(r.is_empty());
        }
        for i in (0..1000u32).rev().filter(|i| i % 3 == 0) {
            let r = log
                .handle(
                    10_000 + i,
                    &entry_for(100 + u64::from(i)),
                    None,
                    t0,
                    0,
                    None,
                )
                .unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].tokens, vec![i, 10_000 + i]);
            assert_eq!(mod_rows(&r), vec![("ban", Some(MOD), "raid".to_string())]);
        }
        // An entry for a user already paired is held, not matched again.
        assert!(log
            .handle(20_000, &entry_for(100), None, t0 + ms(600), 0, None)
            .unwrap()
            .is_empty());
        // The oldest waiting ban is user 101 (1 ms).
        assert_eq!(
            log.next_deadline(),
            Some(t0 + ms(1) + Duration::from_secs(5))
        );
        // 500 ms past the window: the unpaired bans of the first 501 ms, in arrival order.
        let r = log.expire(t0 + Duration::from_secs(5) + ms(500));
        let tokens: Vec<u32> = r.iter().flat_map(|r| r.tokens.clone()).collect();
        let expected: Vec<u32> = (0..=500).filter(|i| i % 3 != 0).collect();
        assert_eq!(tokens, expected);
        assert!(mod_rows(&r).iter().all(|row| row.1.is_none()));
        assert_eq!(
            log.next_deadline(),
            Some(t0 + ms(502) + Duration::from_secs(5))
        );
        // The rest: the remaining bans, then the held entry, which asks to complete a row.
        let r = log.flush();
        let tokens: Vec<u32> = r.iter().flat_map(|r| r.tokens.clone()).collect();
        let mut expected: Vec<u32> = (501..1000).filter(|i| i % 3 != 0).collect();
        expected.push(20_000);
        assert_eq!(tokens, expected);
        assert!(matches!(
            r.last().map(|r| &r.ops[..]),
            Some([Op::CompleteModAction { by_bot: false, .. }])
        ));
        assert!(!log.is_waiting());
        assert_eq!(log.next_deadline(), None);
    }
}
