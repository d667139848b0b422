//! The assembled pipeline: source -> [`ShardFilter`] -> [`GuildActor`]s -> [`SqliteWriter`].
//!
//! [`Pipeline::start`] opens the database, starts the writer on its own thread and the guild
//! workers, and returns the handle every source (replay, the live gateway, benches) uses:
//! `submit` each dispatch, then `drain` to wait until everything accepted is committed.
//! It must be called inside a running actix `System`.

use crate::actors::filter::{Commit, Freeze, GoLive, SetOwnership, SettleFreeze, ShardFilter};
pub use crate::actors::guild::SlowGuildHook;
use crate::actors::guild::{FlushWaiting, GuildDeps};
use crate::actors::inbox::GuildEvent;
use crate::actors::writer::{
    CheckWritable, Handoff, NotWritable, PatchSettings, SettingsError, SqliteWriter, WriterConfig,
    WriterLink,
};
use crate::domain::event::Dispatch;
use crate::domain::partition::Partition;
use crate::domain::rescale::anchor::Anchor;
use crate::domain::rescale::ownership::{Layout, Ownership, Transition};
use crate::health::{StorageFault, StorageHealth};
use crate::metrics::Metrics;
use crate::progress::{Progress, Snapshot};
use crate::storage::database::{self, StoreError};
use crate::storage::expiry::CacheExpiry;
use crate::storage::rescale::handoff;
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// WAL pages before SQLite checkpoints by itself; 0 leaves checkpoints to Litestream.
    pub wal_autocheckpoint: u32,
    /// Bench/test seam; `None` in production.
    pub slow_hook: Option<SlowGuildHook>,
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
    /// The ownership persisted in the database (the filter may be a step ahead while a
    /// rescale step commits): what the API routes by and the gateway's sessions follow.
    ownership: tokio::sync::watch::Sender<Ownership>,
    /// The layout NUM_GATEWAY_PODS and the others describe (what a fresh database starts with),
    /// and the committed one when the pod started: see [`stale_config`].
    configured: Layout,
    started_under: Layout,
    /// The database says live while this process is not yet (a restart in that step).
    persisted_live: bool,
    /// The progress mark of this process's freeze: an export waits until every event
    /// accepted before it is done.
    freeze_mark: std::sync::Mutex<Option<u64>>,
    /// One rescale step at a time.
    handoff: tokio::sync::Mutex<()>,
    /// This process is the database's only writer while the pipeline lives.
    _lock: database::WriterLock,
}

/// Why a rescale step was refused or failed.
/// How a freeze went: how long the pod applied leaving guilds while it waited for their
/// anchors, and how many anchors passed (exact handoff) or not (frozen without, reported).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct FreezeReport {
    pub drain_ms: u64,
    pub anchors_passed: usize,
    pub anchors_missed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RescaleError {
    /// Not in this state: another epoch, or a step out of order.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

impl Pipeline {
    pub fn start(config: PipelineConfig, metrics: Arc<Metrics>) -> Result<Pipeline, StoreError> {
        let lock = database::lock_writer(&config.database)?;
        let conn = database::open_writer(&config.database)?;
        conn.pragma_update(None, "wal_autocheckpoint", config.wal_autocheckpoint)
            .map_err(|source| StoreError::Prepare {
                path: config.database.clone(),
                source,
            })?;
        let ownership = committed_ownership(&conn, &config)?;
        let configured = Layout::of(&config.sharding);
        let reads = database::read_pool(&config.database, config.read_pool_size)?;
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
        // Restarted after going live and before the commit: the incoming guilds are captured
        // again, not applied, until the command's next import re-applies the whole log (an
        // overlapping suffix) and goes live; the commit waits for it.
        let persisted_live = ownership.next.is_some_and(|t| t.live);
        let ownership = Ownership {
            next: ownership.next.map(|t| Transition { live: false, ..t }),
            ..ownership
        };
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

    /// The committed ownership and the transition under way, as persisted.
    pub fn ownership(&self) -> Ownership {
        *self.ownership.borrow()
    }

    /// Told of every change of [`Pipeline::ownership`].
    pub fn watch_ownership(&self) -> tokio::sync::watch::Receiver<Ownership> {
        self.ownership.subscribe()
    }

    /// This new owner's anchors for the rescale to `epoch`: each group's first anchor event in
    /// its capture log (see [`crate::domain::rescale::anchor`]). The old owners freeze at them.
    pub async fn anchors(&self, epoch: u64) -> Result<Vec<Anchor>, RescaleError> {
        let (now, next) = self.transition(epoch)?;
        let database = self.database.clone();
        let captured = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &database,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            crate::storage::rescale::event_log::captured(&conn)
        })
        .await
        .map_err(|e| RescaleError::Failed(e.to_string()))?
        .map_err(|e| RescaleError::Failed(format!("reading the capture log: {e}")))?;
        Ok(crate::domain::rescale::anchor::anchors_of(
            captured.iter().map(|c| {
                let event = crate::domain::event::decode_dispatch(&c.kind, c.seq, &c.payload);
                let identity = event
                    .ok()
                    .and_then(|d| crate::domain::rescale::anchor::identity(&d.event));
                (c.guild_id, identity)
            }),
            &now.layout,
            &next.layout,
        ))
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

    async fn save(&self, ownership: Ownership) -> Result<(), RescaleError> {
        self.writer
            .send(Handoff::Save(ownership))
            .await
            .map_err(|_| RescaleError::Failed("the writer is gone".into()))?
            .map_err(RescaleError::Failed)
    }

    /// The transition of `epoch`, or why there is none.
    fn transition(&self, epoch: u64) -> Result<(Ownership, Transition), RescaleError> {
        let now = self.ownership();
        match now.next {
            Some(next) if next.epoch == epoch => Ok((now, next)),
            Some(next) => Err(RescaleError::Conflict(format!(
                "pod {} is in the rescale to epoch {} ({}), not {epoch}",
                now.ordinal, next.epoch, next.layout
            ))),
            None => Err(RescaleError::Conflict(format!(
                "pod {} has no rescale under way (committed epoch {}: {})",
                now.ordinal, now.epoch, now.layout
            ))),
        }
    }

    /// Step 1: start capturing the guilds that come here under `layout` (epoch `epoch`), from
    /// the cluster's `from` layout (epoch `epoch - 1`). A standby pod that owns nothing takes
    /// `from` as its own (it may have started on a fresh volume after the last rescale).
    pub async fn prepare(
        &self,
        epoch: u64,
        layout: Layout,
        from: Layout,
        operation: u64,
    ) -> Result<Ownership, RescaleError> {
        let _one = self.handoff.lock().await;
        let mut now = self.ownership();
        let standby = |o: &Ownership, l: &Layout| o.ordinal >= l.pods;
        match now.next {
            Some(next)
                if next.epoch == epoch && next.layout == layout && next.operation == operation =>
            {
                return Ok(now)
            }
            Some(next) => {
                return Err(RescaleError::Conflict(format!(
                    "pod {} holds operation {:016x}, a rescale to epoch {} ({}); one operation at a time: finish it (`guild-gateway rescale`) or abort it (`--abort`)",
                    now.ordinal, next.operation, next.epoch, next.layout
                )))
            }
            None if now.epoch == epoch && now.layout == layout => return Ok(now),
            None if now.epoch + 1 == epoch && now.layout == from => {}
            None if standby(&now, &now.layout) && standby(&now, &from) => {
                now.epoch = epoch - 1;
                now.layout = from;
            }
            _ => {
                return Err(RescaleError::Conflict(format!(
                    "pod {} cannot prepare epoch {epoch} ({layout}): committed epoch {} ({}), under way: {}",
                    now.ordinal,
                    now.epoch,
                    now.layout,
                    now.next.map_or("none".into(), |t| format!("epoch {} ({})", t.epoch, t.layout))
                )))
            }
        }
        let prepared = Ownership {
            next: Some(Transition {
                epoch,
                layout,
                frozen: false,
                live: false,
                operation,
            }),
            ..now
        };
        self.save(prepared).await?;
        self.filter
            .send(SetOwnership(prepared))
            .await
            .map_err(|_| RescaleError::Failed("the shard filter is gone".into()))?;
        self.set_ownership(prepared);
        tracing::info!(epoch, %layout, "rescale prepared: capturing incoming guilds");
        Ok(prepared)
    }

    /// Step 2: stop applying the guilds that leave, and commit what was accepted for them.
    /// The freeze is persisted first, so that no crash can bring back a pod that applies them
    /// again, nor allow an abort after the filter dropped one of their events.
    ///
    /// `anchors` (the new owners' [`crate::domain::rescale::anchor`]s): each group's leaving guilds are applied
    /// until its anchor passes in this pod's stream, for at most `drain`; a group whose anchor
    /// has not passed by then is frozen without it (reported: its new owner re-applies its
    /// whole log, as with a margin alone).
    pub async fn freeze(
        &self,
        epoch: u64,
        anchors: Vec<Anchor>,
        drain: Duration,
        limit: Duration,
    ) -> Result<(Ownership, FreezeReport), RescaleError> {
        let _one = self.handoff.lock().await;
        let (now, next) = self.transition(epoch)?;
        let frozen = Ownership {
            next: Some(Transition {
                frozen: true,
                ..next
            }),
            ..now
        };
        let mut report = FreezeReport::default();
        if !next.frozen {
            self.save(frozen).await?;
            self.set_ownership(frozen);
            let gone = |_| RescaleError::Failed("the shard filter is gone".into());
            self.filter.send(Freeze { anchors }).await.map_err(gone)?;
            let draining = std::time::Instant::now();
            let (mark, outcomes) = loop {
                let give_up = draining.elapsed() >= drain;
                if let Some(settled) = self
                    .filter
                    .send(SettleFreeze { give_up })
                    .await
                    .map_err(gone)?
                {
                    break settled;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            report = FreezeReport {
                drain_ms: draining.elapsed().as_millis() as u64,
                anchors_passed: outcomes.iter().filter(|o| o.passed).count(),
                anchors_missed: outcomes.iter().filter(|o| !o.passed).count(),
            };
            self.writer
                .send(Handoff::Anchors(outcomes))
                .await
                .map_err(|_| RescaleError::Failed("the writer is gone".into()))?
                .map_err(RescaleError::Failed)?;
            if report.anchors_missed > 0 {
                tracing::warn!(epoch, missed = report.anchors_missed, drain_ms = report.drain_ms,
                    "rescale: some anchors did not pass within the drain limit; their groups are frozen as of now and re-applied whole by their new owners");
            }
            *self.freeze_mark.lock().unwrap_or_else(|p| p.into_inner()) = Some(mark);
            let database = self.database.clone();
            let leaving = tokio::task::spawn_blocking(move || {
                handoff::count_guilds(&database, move |g| now.outgoing(g) && !now.incoming(g))
            })
            .await;
            if let Ok(Ok(leaving)) = leaving {
                self.metrics.rescale_guilds_remaining.set(leaving);
            }
            tracing::info!(
                epoch,
                passed = report.anchors_passed,
                drain_ms = report.drain_ms,
                "rescale: outgoing guilds frozen"
            );
        }
        self.frozen_committed(limit).await?;
        Ok((frozen, report))
    }

    /// Waits until every event accepted before this process's freeze is done (at once after
    /// a restart: the filter started frozen).
    async fn frozen_committed(&self, limit: Duration) -> Result<(), RescaleError> {
        let mark = *self.freeze_mark.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mark) = mark {
            tokio::time::timeout(limit, self.progress.wait_before(mark))
                .await
                .map_err(|_| {
                    RescaleError::Failed(format!(
                        "the events accepted before the freeze were not committed within {limit:?}"
                    ))
                })?;
        }
        Ok(())
    }

    /// Step 3 (on the old owner): a database of the frozen guilds that go to pod `to`.
    pub async fn export(&self, epoch: u64, to: u32, out: PathBuf) -> Result<(), RescaleError> {
        let (now, next) = self.transition(epoch)?;
        if !next.frozen {
            return Err(RescaleError::Conflict(format!(
                "pod {} is not frozen for epoch {epoch}",
                now.ordinal
            )));
        }
        let database = self.database.clone();
        let moves =
            move |g: u64| now.outgoing(g) && next.layout.owner(g) == to && to != now.ordinal;
        tokio::task::spawn_blocking(move || handoff::export(&database, &out, to, moves))
            .await
            .map_err(|e| RescaleError::Failed(e.to_string()))?
            .map_err(|e| RescaleError::Failed(crate::errors::chain(&e)))
    }

    /// Step 3 (on the new owner): import the exported `files`, re-apply the capture log (from
    /// each passed anchor on: what precedes it the old owner applied), and apply the incoming
    /// guilds' events from now on. `frozen_at`: when the freeze began, for the pause metric.
    /// Answers the guilds imported, the events re-applied and those skipped.
    pub async fn import(
        &self,
        epoch: u64,
        files: Vec<PathBuf>,
        frozen_at: Option<std::time::SystemTime>,
    ) -> Result<(Ownership, u64, usize, usize), RescaleError> {
        let _one = self.handoff.lock().await;
        let (now, next) = self.transition(epoch)?;
        if next.live {
            return Ok((now, 0, 0, 0));
        }
        let live = Ownership {
            next: Some(Transition { live: true, ..next }),
            ..now
        };
        let mut guilds = 0;
        for file in &files {
            guilds += handoff::guild_count(file).unwrap_or(0);
        }
        self.writer
            .send(Handoff::Import(files, live))
            .await
            .map_err(|_| RescaleError::Failed("the writer is gone".into()))?
            .map_err(RescaleError::Failed)?;
        let (replayed, skipped) = self
            .filter
            .send(GoLive(live))
            .await
            .map_err(|_| RescaleError::Failed("the shard filter is gone".into()))?
            .map_err(RescaleError::Failed)?;
        self.set_ownership(live);
        self.metrics.rescale_guilds_moved.inc_by(guilds);
        if let Some(pause) = frozen_at.and_then(|t| t.elapsed().ok()) {
            for _ in 0..guilds {
                self.metrics
                    .rescale_pause_seconds
                    .observe(pause.as_secs_f64());
            }
        }
        tracing::info!(
            epoch,
            guilds,
            replayed,
            skipped,
            "rescale: incoming guilds imported and live"
        );
        Ok((live, guilds, replayed, skipped))
    }

    /// Step 4: the new layout is this pod's; the rows it gave away are deleted.
    pub async fn commit(&self, epoch: u64) -> Result<Ownership, RescaleError> {
        let _one = self.handoff.lock().await;
        let now = self.ownership();
        if now.next.is_none() && now.epoch == epoch {
            return Ok(now);
        }
        let (now, next) = self.transition(epoch)?;
        let gives = now.ordinal < now.layout.pods;
        let takes = now.ordinal < next.layout.pods;
        if (gives && !next.frozen) || (takes && !next.live) {
            return Err(RescaleError::Conflict(format!(
                "pod {} cannot commit epoch {epoch}: frozen {}, live {}",
                now.ordinal, next.frozen, next.live
            )));
        }
        let Some(committed) = now.committed() else {
            return Err(RescaleError::Conflict("no rescale under way".into()));
        };
        self.commit_as(committed, true).await?;
        tracing::info!(epoch, layout = %next.layout, "rescale committed");
        Ok(committed)
    }

    /// Gives up a rescale before this pod froze anything: the capture log is dropped.
    /// Cancels the transition to `epoch` (of `operation`, when given) before any freeze.
    pub async fn abort(
        &self,
        epoch: u64,
        operation: Option<u64>,
    ) -> Result<Ownership, RescaleError> {
        let _one = self.handoff.lock().await;
        let (now, next) = self.transition(epoch)?;
        if let Some(op) = operation.filter(|&op| op != next.operation) {
            return Err(RescaleError::Conflict(format!(
                "pod {} holds operation {:016x}, not {op:016x}",
                now.ordinal, next.operation
            )));
        }
        if next.frozen || next.live || self.persisted_live {
            return Err(RescaleError::Conflict(format!(
                "pod {} is frozen or live for epoch {epoch}: after a freeze a rescale only rolls forward",
                now.ordinal
            )));
        }
        let back = Ownership { next: None, ..now };
        self.commit_as(back, false).await?;
        tracing::info!(epoch, "rescale aborted");
        Ok(back)
    }

    /// Ends the transition with `ownership`; `give_away`: delete the rows of the guilds that
    /// left (a commit), or keep every row (an abort).
    async fn commit_as(&self, ownership: Ownership, give_away: bool) -> Result<(), RescaleError> {
        self.filter
            .send(Commit {
                ownership,
                give_away,
            })
            .await
            .map_err(|_| RescaleError::Failed("the shard filter is gone".into()))?
            .map_err(RescaleError::Failed)?;
        self.set_ownership(ownership);
        self.metrics.rescale_guilds_remaining.set(0);
        Ok(())
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

/// The ownership persisted in the database, or (first start) the configured one, persisted
/// now. With md5 the Discord shard count moves no guild, so a configured count (or
/// `DISCORD_SHARDS=auto`'s recommendation) replaces the committed one while no rescale runs.
fn committed_ownership(
    conn: &rusqlite::Connection,
    config: &PipelineConfig,
) -> Result<Ownership, StoreError> {
    let configured = Layout::of(&config.sharding);
    let ownership = match handoff::load(conn, config.sharding.ordinal)? {
        Some(mut ownership) => {
            let md5 = crate::domain::partition::Strategy::Md5;
            if ownership.next.is_none()
                && ownership.layout.strategy == md5
                && configured.strategy == md5
                && ownership.layout.pods == configured.pods
                && ownership.layout.shards != configured.shards
            {
                ownership.layout.shards = configured.shards;
                handoff::save(conn, &ownership)?;
            }
            ownership
        }
        None => {
            let ownership = Ownership::initial(&config.sharding);
            handoff::save(conn, &ownership)?;
            ownership
        }
    };
    Ok(ownership)
}

/// How the settings (`configured`) differ from the committed ownership, if the pod started
/// with them against another ownership: a pod restarted with a stale NUM_GATEWAY_PODS. A pod
/// whose settings were right when it started and that ran through a rescale is not flagged
/// (its settings cannot change without a restart; the ConfigMap's are what matter next).
fn stale_config(
    ownership: &Ownership,
    configured: Layout,
    started_under: Layout,
) -> Option<String> {
    (ownership.layout != configured && started_under != configured).then(|| {
        format!(
            "the settings say {configured}, the committed ownership (epoch {}) says {}: the pod follows the committed ownership; set NUM_GATEWAY_PODS, SHARD_STRATEGY and DISCORD_SHARDS to match",
            ownership.epoch, ownership.layout
        )
    })
}

/// The ownership gauges.
fn publish(metrics: &Metrics, ownership: &Ownership, configured: Layout, started_under: Layout) {
    metrics.config_stale.set(i64::from(
        stale_config(ownership, configured, started_under).is_some(),
    ));
    metrics.epoch.set(ownership.epoch as i64);
    metrics.pods.set(i64::from(ownership.layout.pods));
    let phase = match ownership.next {
        None => 0,
        Some(t) if t.live => 3,
        Some(t) if t.frozen => 2,
        Some(_) => 1,
    };
    metrics.rescale_phase.set(phase);
}
