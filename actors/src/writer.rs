//! `SqliteWriter`: the one actor that writes the pod's database.
//!
//! It runs on its own thread (SQLite calls block) and group-commits: commands accumulate while
//! its mailbox has more, and one transaction commits them all, either when the mailbox runs
//! dry or when a batch reaches its maximum. An event counts as done only after its commit.
//! The mailbox is bounded by [`WriterLink`]'s semaphore, because actix's own bound is not
//! enforced for `do_send` (see ../shared/NOTES.md).

use crate::metrics::Metrics;
use crate::progress::{Progress, Ticket};
use crate::scope::{CrossGuildWrite, Outcome, RefusedWrites};
use crate::store::{self, CacheExpiry, Op};
use actix::prelude::*;
use rusqlite::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One event's writes, committed together.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WriteCmd {
    pub ticket: Ticket,
    /// A second event finished by the same writes (an audit entry paired with its event).
    pub also: Option<Ticket>,
    pub ops: Vec<Op>,
    /// The guild's count of uncommitted commands; a guild passivates only at zero.
    pub unwritten: Arc<AtomicUsize>,
    pub permit: OwnedSemaphorePermit,
}

/// Commit what is pending now.
#[derive(Message)]
#[rtype(result = "()")]
struct Flush;

/// Run the message-cache expiry job.
#[derive(Message)]
#[rtype(result = "()")]
struct ExpireCache;

/// Is the database writable? Answers with the error text if not.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct CheckWritable;

pub struct WriterConfig {
    pub max_batch: usize,
    pub cache_expiry: CacheExpiry,
    pub expiry_interval: Duration,
}

pub struct SqliteWriter {
    conn: Connection,
    config: WriterConfig,
    pending: Vec<WriteCmd>,
    flush_scheduled: bool,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
    refused: RefusedWrites,
}

impl SqliteWriter {
    pub fn new(
        conn: Connection,
        config: WriterConfig,
        metrics: Arc<Metrics>,
        progress: Arc<Progress>,
    ) -> Self {
        SqliteWriter {
            conn,
            config,
            pending: Vec::new(),
            flush_scheduled: false,
            refused: RefusedWrites::new(metrics.cross_guild_writes_refused.clone()),
            metrics,
            progress,
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let started = Instant::now();
        let batch = std::mem::take(&mut self.pending);
        let now = store::iso8601(SystemTime::now());
        let mut refused = Vec::new();
        if let Err(e) = commit(&mut self.conn, batch.iter(), &now, &mut refused) {
            // One bad command must not cost the others: retry each alone and count failures.
            tracing::warn!(error = %e, commands = batch.len(), "batch failed, retrying its commands one by one");
            refused.clear();
            for cmd in &batch {
                let kept = refused.len();
                if let Err(e) = commit(&mut self.conn, std::iter::once(cmd), &now, &mut refused) {
                    refused.truncate(kept);
                    self.metrics.handler_errors.inc();
                    tracing::error!(error = %e, "write failed; the event's changes were rolled back");
                }
            }
        }
        self.refused.report(&refused, Instant::now());
        self.metrics
            .writer_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.writer_batch_size.observe(batch.len() as f64);
        self.metrics.writer_queue_depth.sub(batch.len() as i64);
        for cmd in batch {
            cmd.unwritten.fetch_sub(1, Ordering::AcqRel);
            for ticket in std::iter::once(cmd.ticket).chain(cmd.also) {
                self.metrics.processed.inc();
                self.progress.complete(ticket);
            }
            // Dropping the command releases its writer-mailbox permit.
        }
    }
}

/// Writes refused as another guild's are collected in `refused` (they changed nothing).
fn commit<'a>(
    conn: &mut Connection,
    cmds: impl Iterator<Item = &'a WriteCmd>,
    now: &str,
    refused: &mut Vec<CrossGuildWrite>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for cmd in cmds {
        for op in &cmd.ops {
            if let Outcome::Refused(r) = store::apply(&tx, op, now)? {
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

    fn stopped(&mut self, _: &mut Self::Context) {
        self.flush();
    }
}

impl Handler<WriteCmd> for SqliteWriter {
    type Result = ();
    fn handle(&mut self, cmd: WriteCmd, ctx: &mut Self::Context) {
        self.pending.push(cmd);
        if self.pending.len() >= self.config.max_batch {
            self.flush();
        } else if !self.flush_scheduled {
            // Runs once the mailbox has been drained: everything queued meanwhile joins the batch.
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }
}

impl Handler<Flush> for SqliteWriter {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Self::Context) {
        self.flush_scheduled = false;
        self.flush();
    }
}

impl Handler<ExpireCache> for SqliteWriter {
    type Result = ();
    fn handle(&mut self, _: ExpireCache, _: &mut Self::Context) {
        match store::expire_cache(&self.conn, self.config.cache_expiry, SystemTime::now()) {
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

impl Handler<CheckWritable> for SqliteWriter {
    type Result = Result<(), String>;
    fn handle(&mut self, _: CheckWritable, _: &mut Self::Context) -> Self::Result {
        store::check_writable(&self.conn).map_err(|e| e.to_string())
    }
}

/// The guild actors' way to the writer, with a real bound on queued commands.
#[derive(Clone)]
pub struct WriterLink {
    pub addr: Addr<SqliteWriter>,
    pub permits: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
}

impl WriterLink {
    pub fn new(addr: Addr<SqliteWriter>, capacity: usize, metrics: Arc<Metrics>) -> Self {
        WriterLink {
            addr,
            permits: Arc::new(Semaphore::new(capacity.max(1))),
            metrics,
        }
    }

    /// Sends with a permit already held.
    pub fn send(
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
            ticket,
            also,
            ops,
            unwritten,
            permit,
        });
    }
}
