//! `SqliteWriter`: the one actor that writes the pod's database.
//!
//! It runs on its own thread (SQLite calls block) and group-commits: commands accumulate while
//! its mailbox has more, and one transaction commits them all, either when the mailbox runs
//! dry or when a batch reaches its maximum. An event counts as done only after its commit.
//! A commit that fails for a storage reason (a lock held too long, a full disk, a read-only
//! file) keeps its commands pending and is retried with backoff, visibly in [`StorageHealth`];
//! only a command that fails on its own (bad data, a bug) is rolled back and dropped, counted
//! in `handler_errors_total`.
//! The mailbox is bounded by [`WriterLink`]'s semaphore, because actix's own bound is not
//! enforced for `do_send` (see ../shared/NOTES.md).

pub(crate) mod api;
pub(crate) mod handoff;

use crate::domain::op::Op;
use crate::domain::rescale::ownership::Ownership;
use crate::domain::scope::{CrossGuildWrite, Outcome, RefusedWrites};
use crate::health::StorageHealth;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::progress::{Progress, Ticket};
use crate::side_thread::SideThread;
use crate::storage::apply::apply;
use crate::storage::checkpoint::Checkpoints;
use crate::storage::expiry::{expire_cache, CacheExpiry};
use crate::storage::query::execute::Scopes;
use actix::prelude::*;
use rusqlite::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One event's writes, committed together.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WriteCmd {
    /// None for a capture written beside an event that its guild actor also applies.
    pub ticket: Option<Ticket>,
    /// A second event finished by the same writes (an audit entry paired with its event).
    pub also: Option<Ticket>,
    pub ops: Vec<Op>,
    /// The guild's count of uncommitted commands; a guild passivates only at zero.
    pub unwritten: Arc<AtomicUsize>,
    /// Held until the command is done: dropping it frees a place in the writer's mailbox.
    /// Captures sent by the filter have none: each belongs to an accepted event, so
    /// `MAX_IN_FLIGHT` bounds them.
    _permit: Option<OwnedSemaphorePermit>,
}

impl WriteCmd {
    /// A capture-log append, from the shard filter.
    pub(crate) fn capture(ticket: Option<Ticket>, op: Op) -> WriteCmd {
        WriteCmd {
            ticket,
            also: None,
            ops: vec![op],
            unwritten: Arc::new(AtomicUsize::new(1)),
            _permit: None,
        }
    }
}

/// Commit what is pending now.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// Run the message-cache expiry job.
#[derive(Message)]
#[rtype(result = "()")]
struct ExpireCache;

pub(crate) struct WriterConfig {
    /// Commands committed in one transaction at most (a full batch commits at once).
    pub max_batch: usize,
    /// The message cache's retention, applied by the periodic expiry.
    pub cache_expiry: CacheExpiry,
    /// How often the expiry runs.
    pub expiry_interval: Duration,
}

/// What a failed commit means for the commands in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// Another connection holds the lock (past busy_timeout): retry soon; it will pass.
    Transient,
    /// The storage cannot take writes (full, read-only, I/O error): retry until it can, and
    /// stop taking events meanwhile.
    Storage,
    /// This command cannot be applied (a bug, or data SQLite refuses): roll it back alone.
    Command,
}

pub(super) fn classify(e: &rusqlite::Error) -> Failure {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked) => Failure::Transient,
        Some(
            C::DiskFull
            | C::ReadOnly
            | C::SystemIoFailure
            | C::CannotOpen
            | C::PermissionDenied
            | C::DatabaseCorrupt
            | C::NotADatabase
            | C::OutOfMemory
            | C::FileLockingProtocolFailed
            | C::NoLargeFileSupport,
        ) => Failure::Storage,
        _ => Failure::Command,
    }
}

/// The first retry of a failed commit waits this long, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct SqliteWriter {
    /// The pod's only writing connection.
    conn: Connection,
    /// Wakes the checkpointer thread as the WAL grows, and keeps the WAL bounded.
    checkpoints: Option<Checkpoints>,
    config: WriterConfig,
    /// Commands received and not yet committed, in arrival order. Bounded by the
    /// [`WriterLink`] semaphore, so it also holds what waits out a storage fault.
    pending: Vec<WriteCmd>,
    /// A `Flush` is queued behind the mailbox: whatever arrives before it joins the batch
    /// (group commit).
    flush_scheduled: bool,
    /// While a storage fault lasts: the wait before the next retry. No other commit is tried
    /// meanwhile, so commands keep their order.
    backoff: Option<Duration>,
    /// Published for readiness, the stuck-guild check and `/status`.
    health: Arc<StorageHealth>,
    /// Rate limit for "the storage fails" lines: one fault repeats at every retry.
    storage_log: LogLimit,
    /// Rate limit for "this command was rolled back" lines: a bad command is logged apart
    /// from a failing disk, so one never hides the other.
    command_log: LogLimit,
    metrics: Arc<Metrics>,
    /// Completes the tickets of committed (or rolled back) commands, off the writer's thread.
    completions: Completions,
    /// Writes refused as another guild's rows, counted and logged once committed.
    refused: RefusedWrites,
    /// The ownership as this writer last persisted it: the data API's writes are checked
    /// against it here, in order with the rescale steps (a write never lands in a guild
    /// frozen or given away before it).
    ownership: Ownership,
    /// Where the guarded writes find each table's guild; read from the schema at the first.
    scopes: Option<Arc<Scopes>>,
}

impl SqliteWriter {
    pub(crate) fn new(
        conn: Connection,
        checkpoints: Option<Checkpoints>,
        config: WriterConfig,
        health: Arc<StorageHealth>,
        metrics: Arc<Metrics>,
        progress: Arc<Progress>,
        ownership: Ownership,
    ) -> Self {
        SqliteWriter {
            ownership,
            scopes: None,
            conn,
            checkpoints,
            config,
            pending: Vec::new(),
            flush_scheduled: false,
            backoff: None,
            health,
            storage_log: LogLimit::new(Duration::from_secs(10)),
            command_log: LogLimit::new(Duration::from_secs(10)),
            refused: RefusedWrites::new(metrics.cross_guild_writes_refused.clone()),
            completions: Completions::start(metrics.clone(), progress),
            metrics,
        }
    }

    /// Commits everything pending. A batch that fails for a storage reason stays pending and
    /// is retried with backoff; a batch with a bad command is split so the others commit.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.pending.is_empty() || self.backoff.is_some() {
            return;
        }
        let started = Instant::now();
        let now = crate::domain::time::iso8601(SystemTime::now());
        let batch_size = self.pending.len();
        let mut refused = Vec::new();
        let committed = match commit(&mut self.conn, self.pending.iter(), &now, &mut refused) {
            Ok(()) => batch_size,
            Err(e) => match classify(&e) {
                Failure::Command => {
                    refused.clear();
                    self.commit_one_by_one(&now, &mut refused, ctx)
                }
                failure => {
                    // Rolled back: nothing was refused either.
                    refused.clear();
                    self.storage_failed(&e, failure, ctx);
                    0
                }
            },
        };
        self.refused.report(&refused);
        if committed > 0 {
            self.checkpoint_if_due();
            self.metrics
                .writer_commit_seconds
                .observe(started.elapsed().as_secs_f64());
            self.metrics.writer_batch_size.observe(committed as f64);
        }
        if self.backoff.is_none() {
            if let Some(lasted) = self.health.succeeded() {
                self.metrics.storage_failing.set(0);
                self.storage_log.reset();
                tracing::info!(
                    lasted_secs = lasted.as_secs_f64(),
                    "the database takes writes again"
                );
            }
        }
        if committed > 0 {
            let done: Vec<WriteCmd> = self.pending.drain(..committed).collect();
            self.completions.finish(done);
        }
    }

    /// After a batch failed on one of its commands: commits each alone, in order. A command
    /// that fails on its own is rolled back, counted and dropped; a storage failure stops the
    /// loop and keeps the rest pending. Returns how many leading commands are done.
    fn commit_one_by_one(
        &mut self,
        now: &str,
        refused: &mut Vec<CrossGuildWrite>,
        ctx: &mut Context<Self>,
    ) -> usize {
        for (index, cmd) in self.pending.iter().enumerate() {
            let kept = refused.len();
            if let Err(e) = commit(&mut self.conn, std::iter::once(cmd), now, refused) {
                refused.truncate(kept);
                match classify(&e) {
                    Failure::Command => {
                        self.metrics.handler_errors.inc();
                        if let Some(suppressed) = self.command_log.allow() {
                            tracing::error!(error = %e, suppressed,
                                "an event's writes failed and were rolled back");
                        }
                    }
                    failure => {
                        self.storage_failed(&e, failure, ctx);
                        return index;
                    }
                }
            }
        }
        self.pending.len()
    }

    /// After a commit: wakes the checkpointer, or starts the WAL again, when due.
    pub(super) fn checkpoint_if_due(&mut self) {
        if let Some(checkpoints) = &mut self.checkpoints {
            checkpoints.committed(&self.conn);
        }
    }

    fn storage_failed(&mut self, e: &rusqlite::Error, failure: Failure, ctx: &mut Context<Self>) {
        let persistent = failure == Failure::Storage;
        let cause = if persistent { "storage" } else { "transient" };
        self.health.failed(e.to_string(), persistent);
        self.metrics.storage_failing.set(1);
        self.metrics.write_retries.with_label_values(&[cause]).inc();
        let backoff = self
            .backoff
            .map_or(FIRST_BACKOFF, |b| (b * 2).min(MAX_BACKOFF));
        self.backoff = Some(backoff);
        if let Some(suppressed) = self.storage_log.allow() {
            tracing::error!(error = %e, cause, pending = self.pending.len(), suppressed,
                retry_in_ms = backoff.as_millis() as u64,
                "commit failed; nothing is marked done, retrying");
        }
        ctx.run_later(backoff, |act, ctx| {
            act.backoff = None;
            act.flush(ctx);
        });
    }
}

/// Where committed commands are finished: a thread beside the writer completes their tickets
/// (waking whoever waits on them) and frees them, work that is not SQLite's and was 6% of the
/// writer thread's profile. In commit order, so tickets complete in the order they committed.
struct Completions {
    /// `None` if the thread could not be started: the writer then finishes inline.
    thread: Option<SideThread<Sender<Vec<WriteCmd>>>>,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
}

impl Completions {
    fn start(metrics: Arc<Metrics>, progress: Arc<Progress>) -> Completions {
        let (batches, committed) = std::sync::mpsc::channel::<Vec<WriteCmd>>();
        let (m, p) = (metrics.clone(), progress.clone());
        // Ends when the writer is dropped, after the batches it sent.
        let started = SideThread::spawn("writer-done", batches, move || {
            for batch in committed {
                batch.into_iter().for_each(|cmd| finish(&m, &p, cmd));
            }
        });
        let thread = match started {
            Ok(thread) => Some(thread),
            Err(e) => {
                tracing::warn!(error = %e, "no completion thread; the writer finishes its commands itself");
                None
            }
        };
        Completions {
            thread,
            metrics,
            progress,
        }
    }

    fn finish(&self, done: Vec<WriteCmd>) {
        let inline = match &self.thread {
            Some(thread) => match thread.sender().send(done) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(done)) => done,
            },
            None => done,
        };
        for cmd in inline {
            finish(&self.metrics, &self.progress, cmd);
        }
    }
}

/// A committed (or rolled back) command's events are done.
fn finish(metrics: &Metrics, progress: &Progress, cmd: WriteCmd) {
    metrics.writer_queue_depth.dec();
    cmd.unwritten.fetch_sub(1, Ordering::AcqRel);
    for ticket in cmd.ticket.into_iter().chain(cmd.also) {
        metrics.processed.inc();
        progress.complete(ticket);
    }
    // Dropping the command releases its writer-mailbox permit.
}

/// Applies and commits `cmds` in one transaction; the writes refused as another guild's rows
/// are added to `refused` (meaningful only if the commit succeeds).
fn commit<'a>(
    conn: &mut Connection,
    cmds: impl Iterator<Item = &'a WriteCmd>,
    now: &str,
    refused: &mut Vec<CrossGuildWrite>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for cmd in cmds {
        for op in &cmd.ops {
            if let Outcome::Refused(r) = apply(&tx, op, now)? {
                refused.push(r);
            }
        }
    }
    tx.commit()
}

impl Actor for SqliteWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.config.expiry_interval, |_, ctx| {
            ctx.notify(ExpireCache)
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        // A last attempt; what still fails stays uncommitted and is reported as such.
        self.backoff = None;
        self.flush(ctx);
    }
}

impl Handler<WriteCmd> for SqliteWriter {
    type Result = ();
    fn handle(&mut self, cmd: WriteCmd, ctx: &mut Self::Context) {
        self.pending.push(cmd);
        if self.pending.len() >= self.config.max_batch {
            self.flush(ctx);
        } else if !self.flush_scheduled {
            // Runs once the mailbox has been drained: everything queued meanwhile joins the batch.
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }
}

impl Handler<Flush> for SqliteWriter {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.flush_scheduled = false;
        self.flush(ctx);
    }
}

impl Handler<ExpireCache> for SqliteWriter {
    type Result = ();
    fn handle(&mut self, _: ExpireCache, _: &mut Self::Context) {
        if self.backoff.is_some() {
            return; // the database is failing; expiry can wait for the next round
        }
        match expire_cache(&self.conn, self.config.cache_expiry, SystemTime::now()) {
            Ok(expired) => {
                self.metrics
                    .cache_expired
                    .with_label_values(&["content_cleared"])
                    .inc_by(expired.contents_cleared as u64);
                self.metrics
                    .cache_expired
                    .with_label_values(&["row_deleted"])
                    .inc_by(expired.rows_deleted as u64);
                tracing::debug!(?expired, "message cache expiry");
            }
            Err(e) => tracing::error!(error = %e, "message cache expiry failed"),
        }
    }
}

/// The guild actors' way to the writer, with a real bound on queued commands.
#[derive(Clone)]
pub(crate) struct WriterLink {
    pub addr: Addr<SqliteWriter>,
    pub permits: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
}

impl WriterLink {
    pub(crate) fn new(addr: Addr<SqliteWriter>, capacity: usize, metrics: Arc<Metrics>) -> Self {
        WriterLink {
            addr,
            permits: Arc::new(Semaphore::new(capacity.max(1))),
            metrics,
        }
    }

    /// Sends with a permit already held.
    pub(crate) fn send(
        &self,
        ticket: Ticket,
        also: Option<Ticket>,
        ops: Vec<Op>,
        unwritten: Arc<AtomicUsize>,
        permit: OwnedSemaphorePermit,
    ) {
        unwritten.fetch_add(1, Ordering::AcqRel);
        self.metrics.writer_queue_depth.inc();
        self.addr.do_send(WriteCmd {
            ticket: Some(ticket),
            also,
            ops,
            unwritten,
            _permit: Some(permit),
        });
    }
}
