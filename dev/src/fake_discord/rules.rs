//! Discord's rules for a growing bot, as the fake judges every Identify: partition required
//! (4011), the session start limit (4004 and a token reset), the identify rate limit (op 9).
//! See "Discord's rules for a growing bot" in the module docs.

use super::{close, Control, Fake, FakeOptions, Session, GUILDS_PER_RECOMMENDED_SHARD};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// Judged Identifies kept for `/fake/identifies` (the counters count them all).
const IDENTIFY_LOG: usize = 10_000;

/// One Identify judged by the rules (`attempts` of `GET /fake/identifies`).
#[derive(Serialize, Clone, Debug)]
pub struct IdentifyAttempt {
    /// The session it started (null unless accepted).
    pub session: Option<String>,
    /// The `shard` it sent (null: none).
    pub shard: Option<[u32; 2]>,
    /// `shard_id % max_concurrency`.
    pub bucket: u32,
    /// ms since the fake started.
    pub at_ms: u64,
    pub accepted: bool,
    /// `ready`, `invalid_session` (rate limit: op 9), `sharding_required` (4011),
    /// `session_start_limit` (4004: the limit was exceeded, the token reset now) or
    /// `token_reset` (4004: the token is reset until the limit's reset).
    pub outcome: &'static str,
}

/// `/gateway/bot`'s `session_start_limit`, as of now.
pub struct SessionStartLimit {
    pub total: u32,
    pub remaining: u32,
    pub reset_after_ms: u64,
    pub max_concurrency: u32,
}

/// Why an Identify was refused by the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Close 4011.
    ShardingRequired,
    /// Close 4004: this Identify exceeded the session start limit (the token is reset now).
    SessionStartLimit,
    /// Close 4004: the token is reset until the limit's reset.
    TokenReset,
    /// Op 9: the bucket's last accepted Identify is within the window.
    RateLimited,
}

/// The rules' state, shared by every connection.
pub(super) struct Limits {
    /// Start of the session start limit's current period.
    pub(super) period_start: Instant,
    pub(super) remaining: u32,
    pub(super) token_reset: bool,
    pub(super) last_accepted: HashMap<u32, Instant>,
    pub(super) accepted: u64,
    pub(super) violations: u64,
    pub(super) attempts: VecDeque<IdentifyAttempt>,
}

impl Limits {
    /// The first period starts with the fake, with the starts the options leave.
    pub(super) fn new(started: Instant, options: &FakeOptions) -> Limits {
        Limits {
            period_start: started,
            remaining: options
                .session_starts_remaining
                .unwrap_or(options.session_start_limit)
                .min(options.session_start_limit),
            token_reset: false,
            last_accepted: HashMap::new(),
            accepted: 0,
            violations: 0,
            attempts: VecDeque::new(),
        }
    }

    /// A new period (all starts back, the token valid again) once the current one is over.
    fn refresh(&mut self, now: Instant, options: &FakeOptions) {
        let period = options.session_start_reset.max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed >= period {
            let into_current = elapsed.as_nanos() % period.as_nanos();
            self.period_start = now - Duration::from_nanos(into_current as u64);
            self.remaining = options.session_start_limit;
            self.token_reset = false;
        }
    }

    pub(super) fn reset_after(&self, now: Instant, options: &FakeOptions) -> Duration {
        (self.period_start + options.session_start_reset).saturating_duration_since(now)
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Fake {
    pub(super) fn limits(&self) -> MutexGuard<'_, Limits> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        limits.refresh(Instant::now(), &self.options);
        limits
    }

    pub fn session_start_limit(&self) -> SessionStartLimit {
        let limits = self.limits();
        SessionStartLimit {
            total: self.options.session_start_limit,
            remaining: limits.remaining,
            reset_after_ms: millis(limits.reset_after(Instant::now(), &self.options)),
            max_concurrency: self.max_concurrency(),
        }
    }

    /// `/gateway/bot`'s `shards`.
    pub fn recommended_shards(&self) -> u32 {
        self.options.recommended_shards.unwrap_or_else(|| {
            let guilds = self.recording.guilds.len() as u64;
            guilds
                .div_ceil(GUILDS_PER_RECOMMENDED_SHARD)
                .clamp(1, u64::from(u32::MAX)) as u32
        })
    }

    pub fn max_concurrency(&self) -> u32 {
        self.options.max_concurrency.max(1)
    }

    /// Whether the session start limit was exceeded and the token is refused until its reset.
    pub fn token_reset(&self) -> bool {
        self.limits().token_reset
    }

    pub(super) fn token_ok(&self, presented: &str) -> bool {
        let presented = presented.trim();
        presented == self.options.token
            || presented.strip_prefix("Bot ") == Some(self.options.token.as_str())
    }

    /// Judges an Identify (valid token, intents and shard) that would start `session`, by
    /// the rules in the module docs, and records it. Accepted: the session is added and its
    /// index returned.
    pub fn admit(&self, session: Session) -> Result<usize, Refusal> {
        let mut limits = self.limits();
        let now = Instant::now();
        let at_ms = millis(now.saturating_duration_since(self.started));
        let bucket = session.shard[0] % self.max_concurrency();
        let verdict = self.judge(&limits, &session, bucket, now);
        limits.record(IdentifyAttempt {
            session: verdict.is_ok().then(|| session.id.clone()),
            shard: session.shard_sent,
            bucket,
            at_ms,
            accepted: verdict.is_ok(),
            outcome: outcome(verdict),
        });
        match verdict {
            Ok(()) => Ok(self.accept(&mut limits, session, bucket, now, at_ms)),
            Err(refusal) => {
                self.refuse(&mut limits, refusal);
                Err(refusal)
            }
        }
    }

    /// The rules, in the order Discord applies them.
    fn judge(
        &self,
        limits: &Limits,
        session: &Session,
        bucket: u32,
        now: Instant,
    ) -> Result<(), Refusal> {
        let within_window =
            |last: &Instant| now.saturating_duration_since(*last) < self.options.identify_window;
        if self.recording.guilds_on(session.shard) > self.options.max_guilds_per_shard {
            Err(Refusal::ShardingRequired)
        } else if limits.token_reset {
            Err(Refusal::TokenReset)
        } else if limits.remaining == 0 {
            Err(Refusal::SessionStartLimit)
        } else if limits.last_accepted.get(&bucket).is_some_and(within_window) {
            Err(Refusal::RateLimited)
        } else {
            Ok(())
        }
    }

    /// A session start: it takes a start and the bucket's slot, and joins the sessions.
    fn accept(
        &self,
        limits: &mut Limits,
        mut session: Session,
        bucket: u32,
        now: Instant,
        at_ms: u64,
    ) -> usize {
        limits.remaining -= 1;
        limits.accepted += 1;
        limits.last_accepted.insert(bucket, now);
        session.identified_at_ms.push(at_ms);
        // Live: what happened before this session opened is not for it.
        if let Some(clock) = self.clock() {
            let from = clock.position(Instant::now());
            session.frames.retain(|&i| i as u64 >= from);
        }
        let mut sessions = self.sessions();
        sessions.push(session);
        sessions.len() - 1
    }

    fn refuse(&self, limits: &mut Limits, refusal: Refusal) {
        match refusal {
            Refusal::RateLimited => limits.violations += 1,
            Refusal::SessionStartLimit => {
                // Discord terminates every session and resets the token.
                limits.token_reset = true;
                for s in self.sessions().iter_mut() {
                    s.open = false;
                    if s.connected {
                        s.pending = Some(Control::Close(close::AUTHENTICATION_FAILED));
                        s.control.notify_one();
                    }
                }
            }
            Refusal::ShardingRequired | Refusal::TokenReset => {}
        }
    }
}

impl Limits {
    /// Keeps the last [`IDENTIFY_LOG`] judged Identifies.
    fn record(&mut self, attempt: IdentifyAttempt) {
        if self.attempts.len() == IDENTIFY_LOG {
            self.attempts.pop_front();
        }
        self.attempts.push_back(attempt);
    }
}

/// An attempt's `outcome` in `/fake/identifies`.
fn outcome(verdict: Result<(), Refusal>) -> &'static str {
    match verdict {
        Ok(()) => "ready",
        Err(Refusal::RateLimited) => "invalid_session",
        Err(Refusal::ShardingRequired) => "sharding_required",
        Err(Refusal::SessionStartLimit) => "session_start_limit",
        Err(Refusal::TokenReset) => "token_reset",
    }
}
