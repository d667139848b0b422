//! When a session may identify. Discord limits session starts; a bot that breaks the limits
//! loses every session and its token (../shared/NOTES.md). Before each of its sessions
//! identifies, a pod applies three rules, without talking to the other pods:
//!
//! 1. **Crash-loop backoff.** The pod's last start is kept beside its database. A start less
//!    than [`STABLE_AFTER`] after the previous one doubles the wait (from
//!    `IDENTIFY_BACKOFF_SECS`, at most [`MAX_BACKOFF`]), so a crash-looping pod spends at most
//!    one identify per session per backoff period, however often Kubernetes restarts it.
//! 2. **The daily budget.** `GET /gateway/bot` gives `session_start_limit`. At or under
//!    `SESSION_START_RESERVE` remaining, the session does not identify: the pod stays up and
//!    unready, says why once, exports the figure, and asks again after `reset_after`.
//! 3. **Identify buckets, across pods, by the clock.** A session of shard s is in bucket
//!    `s % max_concurrency`, and Discord takes one identify per bucket per 5 s. Every session
//!    of the bot (every pod's, computed from N, S and the strategy alone) has a fixed place j
//!    among the M sessions of its bucket, and may identify only when the wall clock, modulo
//!    M slots (IDENTIFY_SLOT_MS, 6.5 s), is at the start of slot j. Two sessions of a bucket are therefore
//!    always a slot apart, whenever their pods start (all at once after a rollout, one after
//!    a crash), as long as the nodes' clocks agree within the slot's margin over 5 s.

use gateway_actors::partition::{Partition, Strategy};
use prometheus::IntGauge;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One identify slot: Discord's 5 s per bucket, plus a margin for clock skew between nodes
/// and the time from our decision to the Identify frame (HTTP, TLS, Hello). It is
/// IDENTIFY_SLOT_MS's default; a test holds the two together.
#[cfg(test)]
pub const SLOT: Duration = Duration::from_millis(6_500);

/// How late after its slot's start a session may still identify (the slot's margin).
const SLOT_LATENESS: Duration = Duration::from_millis(500);

/// A start this long after the previous one is not part of a crash loop.
pub const STABLE_AFTER: Duration = Duration::from_secs(10 * 60);

pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// What Discord says about session starts (`GET /gateway/bot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartLimit {
    pub remaining: u64,
    pub reset_after: Duration,
    pub max_concurrency: u32,
    /// Discord's recommended shard count.
    pub recommended_shards: u32,
}

/// The bot's session-start limits, as this pod can ask for them.
pub trait StartLimits {
    fn start_limit(
        &self,
    ) -> impl std::future::Future<Output = Result<StartLimit, serenity::Error>> + Send;
}

impl StartLimits for serenity::http::Http {
    async fn start_limit(&self) -> Result<StartLimit, serenity::Error> {
        let gateway = self.get_bot_gateway().await?;
        let limit = gateway.session_start_limit;
        Ok(StartLimit {
            remaining: limit.remaining,
            reset_after: Duration::from_millis(limit.reset_after),
            max_concurrency: limit.max_concurrency.clamp(1, u64::from(u32::MAX)) as u32,
            recommended_shards: gateway.shards,
        })
    }
}

/// Where session `shard` of pod `sharding.ordinal` identifies within its bucket: its offset in
/// the bucket's cycle and the cycle's length.
pub fn slot_of(
    sharding: &Partition,
    shard: u32,
    max_concurrency: u32,
    slot: Duration,
) -> (Duration, Duration) {
    let c = max_concurrency.max(1);
    let bucket = shard % c;
    // Every session of the bot in this bucket, in one order all pods agree on.
    let sessions: Vec<(u32, u32)> = (0..sharding.shards)
        .filter(|s| s % c == bucket)
        .flat_map(|s| -> Vec<(u32, u32)> {
            match sharding.strategy {
                Strategy::Md5 => (0..sharding.pods).map(|k| (s, k)).collect(),
                Strategy::Discord => vec![(s, sharding.pod_of_shard(s))],
            }
        })
        .collect();
    let place = sessions
        .iter()
        .position(|&(s, k)| s == shard && k == sharding.ordinal)
        .unwrap_or(0) as u32;
    let count = sessions.len().max(1) as u32;
    (slot * place, slot * count)
}

/// How long to wait from `now` until the next start of the slot at `offset` in a cycle of
/// `cycle`, on the wall clock (shared by every node).
pub fn until_slot(now: SystemTime, offset: Duration, cycle: Duration) -> Duration {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let cycle_ms = cycle.as_millis().max(1);
    let phase = now_ms % cycle_ms;
    let offset_ms = offset.as_millis() % cycle_ms;
    let wait = (offset_ms + cycle_ms - phase) % cycle_ms;
    Duration::from_millis(wait as u64)
}

/// The pod's starts, kept beside its database so that restarts see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    /// When the pod last let its sessions identify (ms since the epoch).
    pub last_start_ms: u64,
    /// Starts in a row, each within STABLE_AFTER of the previous one.
    pub streak: u32,
}

/// The wait before this start's identifies, and the record to keep: the first start after a
/// stable period goes at once; each quick restart doubles the wait.
pub fn crash_backoff(
    previous: Option<StartRecord>,
    now_ms: u64,
    base: Duration,
) -> (Duration, StartRecord) {
    let Some(previous) = previous else {
        return (
            Duration::ZERO,
            StartRecord {
                last_start_ms: now_ms,
                streak: 0,
            },
        );
    };
    let since = Duration::from_millis(now_ms.saturating_sub(previous.last_start_ms));
    if since >= STABLE_AFTER {
        return (
            Duration::ZERO,
            StartRecord {
                last_start_ms: now_ms,
                streak: 0,
            },
        );
    }
    let streak = previous.streak.saturating_add(1);
    let backoff = base
        .saturating_mul(1u32 << (streak - 1).min(16))
        .min(MAX_BACKOFF);
    let wait = backoff.saturating_sub(since);
    (
        wait,
        StartRecord {
            last_start_ms: now_ms + wait.as_millis() as u64,
            streak,
        },
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Why sessions are not identifying now, for /readyz and /status.
#[derive(Debug, Clone, Default)]
pub struct Waiting {
    pub reason: Option<String>,
}

/// The gate every session of this pod passes before it identifies.
pub struct IdentifyGate {
    /// One identify slot: 6.5 s against Discord (IDENTIFY_SLOT_MS).
    slot: Duration,
    reserve: u64,
    backoff_base: Duration,
    record_path: PathBuf,
    /// The crash-loop wait happens once per pod start, before the first identify.
    backoff_done: tokio::sync::OnceCell<()>,
    pub remaining: IntGauge,
    pub waiting: Mutex<Waiting>,
    budget_logged: AtomicBool,
}

impl IdentifyGate {
    pub fn new(
        slot: Duration,
        reserve: u64,
        backoff_base: Duration,
        record_path: PathBuf,
        remaining: IntGauge,
    ) -> IdentifyGate {
        IdentifyGate {
            slot,
            reserve,
            backoff_base,
            record_path,
            backoff_done: tokio::sync::OnceCell::new(),
            remaining,
            waiting: Mutex::new(Waiting::default()),
            budget_logged: AtomicBool::new(false),
        }
    }

    fn set_waiting(&self, reason: Option<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            w.reason = reason;
        }
    }

    pub fn waiting_reason(&self) -> Option<String> {
        self.waiting.lock().ok().and_then(|w| w.reason.clone())
    }

    /// Resolves when session `shard` of this pod (`sharding`: the layout the session serves)
    /// may identify now, with the limits Discord gave.
    pub async fn wait_turn(
        &self,
        sharding: &Partition,
        shard: u32,
        discord: &impl StartLimits,
    ) -> Result<StartLimit, serenity::Error> {
        self.backoff_done
            .get_or_init(|| self.crash_loop_backoff())
            .await;
        loop {
            let limit = discord.start_limit().await?;
            self.remaining
                .set(limit.remaining.min(i64::MAX as u64) as i64);
            if limit.remaining <= self.reserve {
                let retry = limit.reset_after.max(Duration::from_secs(1));
                let reason = format!(
                    "the bot's session starts are at {} remaining, at or under SESSION_START_RESERVE={}: not identifying until Discord resets the budget in {:.0} s",
                    limit.remaining, self.reserve, retry.as_secs_f64()
                );
                if !self.budget_logged.swap(true, Ordering::SeqCst) {
                    tracing::error!(
                        shard,
                        remaining = limit.remaining,
                        reserve = self.reserve,
                        retry_in_secs = retry.as_secs(),
                        "{reason}"
                    );
                }
                self.set_waiting(Some(reason));
                tokio::time::sleep(retry).await;
                continue;
            }
            if self.budget_logged.swap(false, Ordering::SeqCst) {
                tracing::info!(
                    remaining = limit.remaining,
                    "the session-start budget allows identifying again"
                );
            }
            let (offset, cycle) = slot_of(sharding, shard, limit.max_concurrency, self.slot);
            let wait = until_slot(SystemTime::now(), offset, cycle);
            if !wait.is_zero() {
                self.set_waiting(Some(format!(
                    "shard {shard} waits {:.1} s for its identify slot",
                    wait.as_secs_f64()
                )));
                tokio::time::sleep(wait).await;
                // Overslept past the slot's start (a busy machine): the next cycle, with a
                // fresh look at the budget.
                let next = until_slot(SystemTime::now(), offset, cycle);
                if !next.is_zero() && cycle.saturating_sub(next) > SLOT_LATENESS {
                    continue;
                }
            }
            self.set_waiting(None);
            self.write_record(StartRecord {
                last_start_ms: now_ms(),
                streak: self.read_record().map_or(0, |r| r.streak),
            });
            return Ok(limit);
        }
    }

    async fn crash_loop_backoff(&self) {
        let (wait, record) = crash_backoff(self.read_record(), now_ms(), self.backoff_base);
        // Kept before waiting, so a pod killed while it waits still counts this start.
        self.write_record(record);
        if !wait.is_zero() {
            let reason = format!(
                "restarted {} times in a row within {} min: waiting {:.0} s before identifying (crash-loop backoff)",
                record.streak,
                STABLE_AFTER.as_secs() / 60,
                wait.as_secs_f64()
            );
            tracing::warn!(
                streak = record.streak,
                wait_secs = wait.as_secs(),
                "{reason}"
            );
            self.set_waiting(Some(reason));
            tokio::time::sleep(wait).await;
            self.set_waiting(None);
        }
    }

    fn read_record(&self) -> Option<StartRecord> {
        let text = std::fs::read_to_string(&self.record_path).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write_record(&self, record: StartRecord) {
        let write = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = self.record_path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &self.record_path)
            });
        if let Err(e) = write {
            // Without the record a crash loop is not slowed down: say so, loudly.
            tracing::error!(path = %self.record_path.display(), error = %e,
                "cannot keep the identify record; crash-loop backoff will not work");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharding(strategy: Strategy, ordinal: u32, pods: u32, shards: u32) -> Partition {
        Partition {
            strategy,
            ordinal,
            pods,
            shards,
        }
    }

    /// Every session of a bot, its bucket, and its slot offset.
    fn all_slots(
        strategy: Strategy,
        pods: u32,
        shards: u32,
        c: u32,
    ) -> Vec<(u32, Duration, Duration)> {
        let mut out = Vec::new();
        for k in 0..pods {
            let s = sharding(strategy, k, pods, shards);
            for shard in s.pod_shards() {
                let (offset, cycle) = slot_of(&s, shard, c, SLOT);
                out.push((shard % c, offset, cycle));
            }
        }
        out
    }

    #[test]
    fn sessions_of_a_bucket_never_share_a_slot() {
        for (strategy, pods, shards, c) in [
            (Strategy::Md5, 3, 1, 1),
            (Strategy::Md5, 3, 4, 1),
            (Strategy::Md5, 3, 4, 2),
            (Strategy::Discord, 3, 8, 1),
            (Strategy::Discord, 3, 8, 16),
            (Strategy::Discord, 5, 5, 2),
        ] {
            let slots = all_slots(strategy, pods, shards, c);
            for (i, a) in slots.iter().enumerate() {
                for b in &slots[i + 1..] {
                    if a.0 == b.0 {
                        assert_eq!(a.2, b.2, "one cycle per bucket");
                        assert_ne!(
                            a.1, b.1,
                            "{strategy} N={pods} S={shards} C={c}: two sessions in one slot"
                        );
                    }
                }
            }
        }
        // md5, S=4, N=3, C=1: twelve sessions, twelve slots.
        let slots = all_slots(Strategy::Md5, 3, 4, 1);
        assert_eq!(slots.len(), 12);
        assert_eq!(slots[0].2, SLOT * 12);
    }

    #[test]
    fn slots_come_round_on_the_wall_clock() {
        let cycle = SLOT * 3;
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let start = cycle.as_millis() as u64 * 1000; // a cycle boundary
        assert_eq!(until_slot(at(start), SLOT, cycle), SLOT);
        assert_eq!(
            until_slot(at(start + 1), Duration::ZERO, cycle),
            cycle - Duration::from_millis(1)
        );
        assert_eq!(
            until_slot(at(start + SLOT.as_millis() as u64), SLOT, cycle),
            Duration::ZERO
        );
    }

    #[test]
    fn quick_restarts_double_the_wait_and_a_stable_run_resets_it() {
        let base = Duration::from_secs(10);
        let (wait, first) = crash_backoff(None, 1_000_000, base);
        assert_eq!((wait, first.streak), (Duration::ZERO, 0));
        let (wait, second) = crash_backoff(Some(first), 1_002_000, base);
        assert_eq!((wait, second.streak), (Duration::from_secs(8), 1));
        let (wait, third) = crash_backoff(Some(second), second.last_start_ms + 1_000, base);
        assert_eq!((wait, third.streak), (Duration::from_secs(19), 2));
        let (wait, fourth) = crash_backoff(Some(third), third.last_start_ms, base);
        assert_eq!((wait, fourth.streak), (Duration::from_secs(40), 3));
        let later = fourth.last_start_ms + STABLE_AFTER.as_millis() as u64;
        assert_eq!(crash_backoff(Some(fourth), later, base).0, Duration::ZERO);
        let (wait, _) = crash_backoff(
            Some(StartRecord {
                last_start_ms: 0,
                streak: 30,
            }),
            1,
            base,
        );
        assert_eq!(wait, MAX_BACKOFF - Duration::from_millis(1));
    }
}
