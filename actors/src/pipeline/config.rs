//! A pod pipeline's tuning and placement, and the defaults a pod starts from.

use crate::actors::guild::SlowGuildHook;
use crate::domain::partition::Partition;
use crate::storage::expiry::CacheExpiry;
use std::path::PathBuf;
use std::time::Duration;

/// Tuning and placement of one pod's pipeline.
#[derive(Clone)]
pub struct PipelineConfig {
    pub sharding: Partition,
    pub database: PathBuf,
    /// Events in a guild actor's mailbox before the rest wait in its overflow queue.
    pub guild_mailbox: usize,
    /// A guild with events queued that hands none on for this long is declared stuck, and
    /// its queued and new events are dropped (counted) until it progresses again.
    pub guild_stuck: Duration,
    /// Write commands queued for the writer before guild actors wait.
    pub writer_mailbox: usize,
    /// Most write commands in one transaction.
    pub max_batch: usize,
    /// Events accepted and not yet done before `submit` waits (source backpressure).
    pub max_in_flight: usize,
    /// A guild actor idle this long (and with nothing pending) is stopped.
    pub guild_idle: Duration,
    /// How long a moderation event waits for its audit log entry, and an entry for its event.
    pub audit_window: Duration,
    /// Threads for guild actors (0: the System's own thread).
    pub guild_workers: usize,
    pub cache_expiry: CacheExpiry,
    pub cache_expiry_interval: Duration,
    pub read_pool_size: u32,
    /// WAL pages before the checkpointer thread checkpoints; 0 leaves checkpoints to Litestream.
    pub wal_autocheckpoint: u32,
    /// Bench/test seam; `None` in production.
    pub slow_hook: Option<SlowGuildHook>,
    /// Whether the pod runs a relay: its owned events are then kept for it ([`crate::RelayFeed`]).
    pub relay: bool,
}

impl PipelineConfig {
    /// The defaults, for a pod with the given sharding and database.
    pub fn new(sharding: Partition, database: PathBuf) -> Self {
        PipelineConfig {
            sharding,
            database,
            guild_mailbox: 1024,
            guild_stuck: Duration::from_secs(120),
            writer_mailbox: 8192,
            max_batch: 2000,
            max_in_flight: 65536,
            guild_idle: Duration::from_secs(300),
            audit_window: Duration::from_secs(5),
            guild_workers: 1,
            cache_expiry: CacheExpiry {
                content_ttl: Duration::from_secs(60 * 60),
                retention: Duration::from_secs(24 * 60 * 60),
            },
            cache_expiry_interval: Duration::from_secs(60),
            read_pool_size: 4,
            wal_autocheckpoint: 1000,
            slow_hook: None,
            relay: false,
        }
    }
}
