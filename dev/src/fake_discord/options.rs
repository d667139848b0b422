//! The fake's settings: Discord's limits for a large bot by default, each one a command-line
//! flag so that tests can tighten them.

use std::time::Duration;

/// Discord's identify rate limit: one Identify per bucket (`shard_id % max_concurrency`) per
/// this window, across all of a bot's connections.
pub const IDENTIFY_RATE_LIMIT_WINDOW: Duration = Duration::from_secs(5);

/// Discord closes an Identify whose shard would hold more guilds than this with 4011
/// (sharding required).
pub const MAX_GUILDS_PER_SHARD: u64 = 2500;

/// Discord recommends about one shard per this many guilds (`/gateway/bot`'s `shards`).
pub const GUILDS_PER_RECOMMENDED_SHARD: u64 = 1000;

/// `max_concurrency` of a large bot: enough buckets that one process per shard, a few shards
/// at once, never collide.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;

/// Discord's daily session start limit of an ordinary bot, and its period.
pub const DEFAULT_SESSION_START_LIMIT: u32 = 1000;
pub const SESSION_START_RESET: Duration = Duration::from_secs(24 * 60 * 60);

/// Settings of a fake Discord.
#[derive(Clone)]
pub struct FakeOptions {
    pub token: String,
    pub bot_user_id: u64,
    pub heartbeat_interval: Duration,
    /// Drop each session's first connection (no close frame) right after sending this seq.
    pub drop_at_seq: Option<u64>,
    /// Dispatches per second per session (None: as fast as the client reads). Not used in
    /// live mode, where the clock sets the pace.
    pub rate: Option<u32>,
    /// Live mode: one clock over the recording at this many frames per second, each frame
    /// sent once to the sessions open when it happens (see "Live timeline" in the module
    /// docs). None: every session gets the whole recording.
    pub live_rate: Option<u32>,
    /// Intents this bot may use; an Identify asking for more is closed with 4014.
    pub allowed_intents: u64,
    /// Guilds one shard may hold; an Identify for a shard holding more is closed with 4011.
    pub max_guilds_per_shard: u64,
    /// Identify buckets: `shard_id % max_concurrency` (at least 1).
    pub max_concurrency: u32,
    /// One accepted Identify per bucket per this window ([`IDENTIFY_RATE_LIMIT_WINDOW`];
    /// shorter only in tests).
    pub identify_window: Duration,
    /// Session starts allowed per `session_start_reset`.
    pub session_start_limit: u32,
    /// The session start limit's period, counted from the fake's start.
    pub session_start_reset: Duration,
    /// Starts left in the first period (a bot that already spent some today); None: all.
    pub session_starts_remaining: Option<u32>,
    /// `/gateway/bot`'s `shards`; None: one per 1,000 guilds of the recording, at least 1.
    pub recommended_shards: Option<u32>,
}

impl Default for FakeOptions {
    /// Discord's rules for a large bot, and the command line's defaults.
    fn default() -> Self {
        FakeOptions {
            token: "fake-token".into(),
            bot_user_id: 1_000_000_000_000_000_001,
            heartbeat_interval: Duration::from_secs(5),
            drop_at_seq: None,
            rate: None,
            live_rate: None,
            allowed_intents: u64::MAX,
            max_guilds_per_shard: MAX_GUILDS_PER_SHARD,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            identify_window: IDENTIFY_RATE_LIMIT_WINDOW,
            session_start_limit: DEFAULT_SESSION_START_LIMIT,
            session_start_reset: SESSION_START_RESET,
            session_starts_remaining: None,
            recommended_shards: None,
        }
    }
}
