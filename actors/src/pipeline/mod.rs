//! The assembled pipeline: source -> [`ShardFilter`] -> [`GuildActor`]s -> [`SqliteWriter`].
//!
//! [`Pipeline::start`] opens the database, starts the writer on its own thread and the guild
//! workers, and returns the handle every source (replay, the live gateway, benches) uses:
//! `submit` each dispatch, then `drain` to wait until everything accepted is committed.
//! It must be called inside a running actix `System`.

mod config;
mod ownership;
mod rescale;

pub use crate::actors::filter::rescale::RescaleError;
pub use crate::actors::guild::SlowGuildHook;
pub use config::PipelineConfig;
pub use rescale::FreezeReport;

use crate::actors::filter::ShardFilter;
use crate::actors::guild::{FlushWaiting, GuildDeps};
use crate::actors::inbox::GuildEvent;
use crate::actors::writer::api::{
    CheckWritable, Execute, ExecuteError, NotWritable, PatchSettings, SaveRelayDocuments,
    SettingsError,
};
use crate::actors::writer::{SqliteWriter, WriterConfig, WriterLink};
use crate::domain::event::Dispatch;
use crate::domain::rescale::ownership::{Layout, Ownership, Transition};
use crate::health::{StorageFault, StorageHealth};
use crate::metrics::Metrics;
use crate::progress::{Progress, Snapshot};
use crate::relay_feed::RelayFeed;
use crate::storage::checkpoint::Checkpoints;
use crate::storage::database::{self, StoreError};
use crate::storage::query::execute::Executed;
use actix::prelude::*;
use ownership::{committed_ownership, publish, stale_config};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// The ownership persisted in the database (the filter may be a step ahead while a
    /// rescale step commits): what the API routes by and the gateway's sessions follow.
    ownership: tokio::sync::watch::Sender<Ownership>,
    /// The layout NUM_GATEWAY_PODS and the others describe (what a fresh database starts with),
    /// and the committed one when the pod started: see [`ownership::stale_config`].
    configured: Layout,
    started_under: Layout,
    /// The database says live while this process is not yet (a restart in that step).
    persisted_live: bool,
    /// The progress mark of this process's freeze: an export waits until every event
    /// accepted before it is done.
    freeze_mark: std::sync::Mutex<Option<u64>>,
    /// One rescale step at a time.
    handoff: tokio::sync::Mutex<()>,
    /// What the pod's relay may send, when it runs one.
    relay: Option<Arc<RelayFeed>>,
    /// This process is the database's only writer while the pipeline lives.
    _lock: database::WriterLock,
}

impl Pipeline {
    pub fn start(config: PipelineConfig, metrics: Arc<Metrics>) -> Result<Pipeline, StoreError> {
        let lock = database::lock_writer(&config.database)?;
        let conn = database::open_writer(&config.database)?;
        // No checkpoint inside a commit: Litestream checkpoints (a threshold of 0), or the
        // checkpointer thread does (storage::checkpoint).
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|source| StoreError::Prepare {
                path: config.database.clone(),
                source,
            })?;
        let checkpoints = Checkpoints::start(&conn, &config.database, config.wal_autocheckpoint)
            .map_err(|source| StoreError::Checkpointer {
                path: config.database.clone(),
                source,
            })?;
        let ownership = committed_ownership(&conn, &config)?;
        let configured = Layout::of(&config.sharding);
        let reads = database::read_pool(&config.database, config.read_pool_size)?;
        let relay = config.relay.then(|| Arc::new(RelayFeed::default()));
        let progress = Arc::new(Progress::new(
            config.max_in_flight,
            Some(metrics.event_latency_seconds.clone()),
            relay.clone(),
        ));

        let health = Arc::new(StorageHealth::default());
        let (writer_thread, writer) = start_writer(
            conn,
            checkpoints,
            &config,
            &health,
            &metrics,
            &progress,
            ownership,
        );

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
            relay: relay.clone(),
        };
        let (ownership, persisted_live) = not_live_yet(ownership);
        let filter = ShardFilter::new(
            ownership,
            config.guild_mailbox.max(1),
            config.guild_stuck,
            workers.iter().map(|a| a.handle()).collect(),
            deps,
        )
        .start();
        let started_under = ownership.layout;
        publish(&metrics, &ownership, configured, started_under);
        if let Some(stale) = stale_config(&ownership, configured, started_under) {
            tracing::warn!("{stale}");
        }

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
            ownership: tokio::sync::watch::channel(ownership).0,
            configured,
            started_under,
            persisted_live,
            freeze_mark: std::sync::Mutex::new(None),
            handoff: tokio::sync::Mutex::new(()),
            relay,
            _lock: lock,
        })
    }

    /// Accepts one dispatch, waiting while `max_in_flight` events are unfinished or the
    /// storage cannot take writes.
    pub async fn submit(&self, dispatch: Dispatch) {
        self.submit_from(dispatch, self.ownership().sessions_epoch)
            .await;
    }

    /// [`Pipeline::submit`] for an event of the Discord sessions of epoch `source_epoch`.
    pub async fn submit_from(&self, dispatch: Dispatch, source_epoch: u64) {
        let received_ms = crate::domain::time::now_ms();
        self.health.wait_until_writable().await;
        let ticket = self.progress.admit(dispatch.seq).await;
        self.filter.do_send(GuildEvent {
            ticket,
            dispatch,
            source_epoch,
            received_ms,
        });
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

    /// Keeps the relay's documents of guilds this pod gives away (guild id, GUILD_CREATE `d`)
    /// for the rescale's export, which carries them to the guilds' new owner.
    pub async fn save_relay_documents(
        &self,
        documents: Vec<(u64, String)>,
    ) -> Result<(), RescaleError> {
        self.writer
            .send(SaveRelayDocuments(documents))
            .await
            .map_err(|_| RescaleError::Gone("writer"))?
            .map_err(|e| {
                RescaleError::Handoff(crate::storage::rescale::HandoffError::sql(
                    "saving the relay's documents",
                )(e))
            })
    }

    /// The events released for the pod's relay, when it runs one.
    pub fn relay_feed(&self) -> Option<&Arc<RelayFeed>> {
        self.relay.as_ref()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Refreshes gauges that are read rather than counted, before a scrape.
    pub fn refresh_gauges(&self) {
        self.metrics
            .database_size_bytes
            .set(database::database_size(&self.database) as i64);
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

    /// Runs one guarded write of the data API for `guild_id` in the writer, after what the
    /// writer has already received, and resolves after its commit. `deadline` bounds the
    /// statement; a write still queued at its deadline is not run.
    pub async fn execute(
        &self,
        guild_id: &str,
        sql: String,
        params: Vec<serde_json::Value>,
        limits: crate::storage::query::QueryLimits,
        deadline: std::time::Instant,
    ) -> Result<Executed, ExecuteError> {
        self.writer
            .send(Execute {
                guild_id: guild_id.to_owned(),
                sql,
                params,
                limits,
                deadline,
            })
            .await
            .map_err(|_| ExecuteError::WriterGone)?
    }

    /// The committed ownership and the transition under way, as persisted.
    pub fn ownership(&self) -> Ownership {
        *self.ownership.borrow()
    }

    /// Told of every change of [`Pipeline::ownership`].
    pub fn watch_ownership(&self) -> tokio::sync::watch::Receiver<Ownership> {
        self.ownership.subscribe()
    }
    /// How the pod's settings differ from the committed ownership it follows, if they do.
    pub fn config_stale(&self) -> Option<String> {
        stale_config(&self.ownership(), self.configured, self.started_under)
    }

    fn set_ownership(&self, ownership: Ownership) {
        publish(
            &self.metrics,
            &ownership,
            self.configured,
            self.started_under,
        );
        self.ownership.send_replace(ownership);
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

/// Starts the one SQLite writer on a thread of its own (its commits block), with `conn`.
fn start_writer(
    conn: rusqlite::Connection,
    checkpoints: Option<Checkpoints>,
    config: &PipelineConfig,
    health: &Arc<StorageHealth>,
    metrics: &Arc<Metrics>,
    progress: &Arc<Progress>,
    ownership: Ownership,
) -> (Arbiter, Addr<SqliteWriter>) {
    let writer_thread = Arbiter::new();
    let writer_config = WriterConfig {
        max_batch: config.max_batch.max(1),
        cache_expiry: config.cache_expiry,
        expiry_interval: config.cache_expiry_interval,
    };
    let (w_health, w_metrics, w_progress) = (health.clone(), metrics.clone(), progress.clone());
    let writer = SqliteWriter::start_in_arbiter(&writer_thread.handle(), move |_| {
        SqliteWriter::new(
            conn,
            checkpoints,
            writer_config,
            w_health,
            w_metrics,
            w_progress,
            ownership,
        )
    });
    (writer_thread, writer)
}

/// The ownership the filter starts with, and whether the database said live.
///
/// Restarted after going live and before the commit: the incoming guilds are captured again,
/// not applied, until the command's next import re-applies the whole log (an overlapping
/// suffix) and goes live; the commit waits for it.
fn not_live_yet(ownership: Ownership) -> (Ownership, bool) {
    let persisted_live = ownership.next.is_some_and(|t| t.live);
    let ownership = Ownership {
        next: ownership.next.map(|t| Transition { live: false, ..t }),
        ..ownership
    };
    (ownership, persisted_live)
}
