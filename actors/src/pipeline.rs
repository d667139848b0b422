//! The assembled pipeline: source -> [`ShardFilter`] -> [`GuildActor`]s -> [`SqliteWriter`].
//!
//! [`Pipeline::start`] opens the database, starts the writer on its own thread and the guild
//! workers, and returns the handle every source (replay, the live gateway, benches) uses:
//! `submit` each dispatch, then `drain` to wait until everything accepted is committed.
//! It must be called inside a running actix `System`.

use crate::event::Dispatch;
use crate::filter::ShardFilter;
pub use crate::guild::SlowGuildHook;
use crate::guild::{FlushWaiting, GuildDeps};
use crate::health::{StorageFault, StorageHealth};
use crate::inbox::GuildEvent;
use crate::metrics::Metrics;
use crate::progress::{Progress, Snapshot};
use crate::shard::Sharding;
use crate::store::{self, CacheExpiry, StoreError};
use crate::writer::{
    CheckWritable, NotWritable, PatchSettings, SettingsError, SqliteWriter, WriterConfig,
    WriterLink,
};
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Tuning and placement of one pod's pipeline.
#[derive(Clone)]
pub struct PipelineConfig {
    pub sharding: Sharding,
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
    /// WAL pages before SQLite checkpoints by itself; 0 leaves checkpoints to Litestream.
    pub wal_autocheckpoint: u32,
    /// Bench/test seam; `None` in production.
    pub slow_hook: Option<SlowGuildHook>,
}

impl PipelineConfig {
    /// The defaults, for a pod with the given sharding and database.
    pub fn new(sharding: Sharding, database: PathBuf) -> Self {
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
        }
    }
}

/// One pod's running pipeline: the handle every source submits to.
pub struct Pipeline {
    /// The entry of every event; it owns the guild actors.
    filter: Addr<ShardFilter>,
    /// Asked directly only for readiness (`CheckWritable`).
    writer: Addr<SqliteWriter>,
    /// Which accepted events are done; also the source's admission bound (`max_in_flight`).
    progress: Arc<Progress>,
    /// Whether commits succeed; `submit` waits while a persistent fault lasts.
    health: Arc<StorageHealth>,
    metrics: Arc<Metrics>,
    database: PathBuf,
    /// The writer's thread and the guild workers, stopped by `shutdown`.
    arbiters: Vec<Arbiter>,
    /// This process is the database's only writer while the pipeline lives.
    _lock: store::WriterLock,
}

impl Pipeline {
    pub fn start(config: PipelineConfig, metrics: Arc<Metrics>) -> Result<Pipeline, StoreError> {
        let lock = store::lock_writer(&config.database)?;
        let conn = store::open_writer(&config.database)?;
        conn.pragma_update(None, "wal_autocheckpoint", config.wal_autocheckpoint)
            .map_err(|source| StoreError::Prepare {
                path: config.database.clone(),
                source,
            })?;
        let reads = store::read_pool(&config.database, config.read_pool_size)?;
        let progress = Arc::new(Progress::new(
            config.max_in_flight,
            Some(metrics.event_latency_seconds.clone()),
        ));

        let health = Arc::new(StorageHealth::default());
        let writer_thread = Arbiter::new();
        let writer_config = WriterConfig {
            max_batch: config.max_batch.max(1),
            cache_expiry: config.cache_expiry,
            expiry_interval: config.cache_expiry_interval,
        };
        let (w_health, w_metrics, w_progress) = (health.clone(), metrics.clone(), progress.clone());
        let writer = SqliteWriter::start_in_arbiter(&writer_thread.handle(), move |_| {
            SqliteWriter::new(conn, writer_config, w_health, w_metrics, w_progress)
        });

        let workers: Vec<Arbiter> = (0..config.guild_workers).map(|_| Arbiter::new()).collect();
        let deps = GuildDeps {
            writer: WriterLink::new(writer.clone(), config.writer_mailbox, metrics.clone()),
            reads,
            metrics: metrics.clone(),
            progress: progress.clone(),
            health: health.clone(),
            idle_after: config.guild_idle,
            audit_window: config.audit_window,
            bot_user_id: Default::default(),
            slow_hook: config.slow_hook.clone(),
        };
        let filter = ShardFilter::new(
            config.sharding,
            config.guild_mailbox.max(1),
            config.guild_stuck,
            workers.iter().map(|a| a.handle()).collect(),
            deps,
        )
        .start();

        let mut arbiters = workers;
        arbiters.push(writer_thread);
        Ok(Pipeline {
            filter,
            writer,
            progress,
            health,
            metrics,
            database: config.database,
            arbiters,
            _lock: lock,
        })
    }

    /// Accepts one dispatch, waiting while `max_in_flight` events are unfinished or the
    /// storage cannot take writes.
    pub async fn submit(&self, dispatch: Dispatch) {
        self.health.wait_until_writable().await;
        let ticket = self.progress.admit(dispatch.seq).await;
        self.filter.do_send(GuildEvent { ticket, dispatch });
    }

    /// Resolves when every accepted event is committed (or deliberately skipped or shed). No
    /// more events are expected: moderation events still waiting for their audit log entry
    /// are written without it.
    pub async fn drain(&self) {
        if let Err(e) = self.filter.send(FlushWaiting).await {
            tracing::error!(error = %e, "the shard filter is gone; draining what is in flight");
        }
        self.progress.wait_idle().await;
    }

    pub fn status(&self) -> Snapshot {
        self.progress.snapshot()
    }

    /// Resolves with the error once commits have failed for `limit` (a full disk, or a lock
    /// that another process never releases): for callers that must give up waiting for a drain.
    pub async fn storage_failing_for(&self, limit: Duration) -> String {
        loop {
            if let Some(fault) = self.health.fault() {
                if fault.since.elapsed() >= limit {
                    return fault.error;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Why commits are failing, while they are.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        self.health.fault()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Refreshes gauges that are read rather than counted, before a scrape.
    pub fn refresh_gauges(&self) {
        self.metrics
            .database_size_bytes
            .set(store::database_size(&self.database) as i64);
        let status = self.progress.snapshot();
        let seq = |s: Option<u64>| s.map_or(0, |s| s as i64);
        self.metrics
            .last_seq_received
            .set(seq(status.last_seq_received));
        self.metrics
            .last_seq_committed
            .set(seq(status.last_seq_committed));
        self.metrics.events_in_flight.set(status.in_flight as i64);
    }

    /// Whether the database takes writes now (bounded by `timeout`).
    pub async fn check_writable(&self, timeout: Duration) -> Result<(), NotWritable> {
        match tokio::time::timeout(timeout, self.writer.send(CheckWritable)).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(NotWritable::WriterGone),
            Err(_) => Err(NotWritable::WriterBusy(timeout)),
        }
    }

    /// Applies a JSON merge patch (an object) to a guild's settings through the writer, and
    /// resolves with the committed document.
    pub async fn patch_settings(
        &self,
        guild_id: &str,
        patch: String,
    ) -> Result<String, SettingsError> {
        self.writer
            .send(PatchSettings {
                guild_id: guild_id.to_owned(),
                patch,
            })
            .await
            .map_err(|_| SettingsError::WriterGone)?
    }

    /// Stops the worker threads after a drain; the writer commits anything left as it stops.
    pub fn shutdown(self) {
        for arbiter in self.arbiters {
            arbiter.stop();
            if let Err(e) = arbiter.join() {
                tracing::error!("a pipeline thread panicked: {e:?}");
            }
        }
    }
}
