//! What the HTTP side asks the writer besides events: whether the database takes writes
//! (`/readyz`), and the data API's writes: a guild's settings patch, and the bot's guarded
//! statements. All go through the one writer so that they see, and never race, its
//! transaction.

use super::{classify, Failure, SqliteWriter};
use crate::storage::database::check_writable;
use crate::storage::query::execute::{self, ExecuteFailure, Executed, Scopes};
use crate::storage::query::{QueryError, QueryLimits};
use actix::prelude::*;
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keep the relay's documents of guilds this pod gives away (guild id, GUILD_CREATE `d`), in
/// a transaction of their own, for the rescale's export.
#[derive(Message)]
#[rtype(result = "Result<(), rusqlite::Error>")]
pub(crate) struct SaveRelayDocuments(pub Vec<(u64, String)>);

impl Handler<SaveRelayDocuments> for SqliteWriter {
    type Result = Result<(), rusqlite::Error>;
    fn handle(&mut self, cmd: SaveRelayDocuments, _: &mut Self::Context) -> Self::Result {
        let tx = self.conn.transaction()?;
        crate::storage::relay_documents::save(&tx, &cmd.0)?;
        tx.commit()
    }
}

/// Is the database writable?
#[derive(Message)]
#[rtype(result = "Result<(), NotWritable>")]
pub(crate) struct CheckWritable;

/// Apply a JSON merge patch to a guild's settings, in its own transaction, and answer with the
/// committed document: the data API's one write, through the one writer.
#[derive(Message)]
#[rtype(result = "Result<String, SettingsError>")]
pub(crate) struct PatchSettings {
    pub guild_id: String,
    /// A JSON object.
    pub patch: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The writer is waiting out a storage fault (full, read-only, locked): try again later.
    #[error("the database does not take writes now: {0}")]
    Unwritable(String),
    /// The storage failed this patch (full, read-only, locked): try again later.
    #[error("the database does not take writes now")]
    Unavailable(#[source] rusqlite::Error),
    /// SQLite refused this patch (the stored document is not JSON, say).
    #[error("the settings could not be patched")]
    Failed(#[source] rusqlite::Error),
    #[error("the writer is gone")]
    WriterGone,
}

/// Why the pod cannot write now: what `/readyz` reports.
#[derive(Debug, thiserror::Error)]
pub enum NotWritable {
    #[error("commits failing for {secs:.0} s: {error}")]
    Failing { secs: u64, error: String },
    #[error("the write lock is not available")]
    Locked(#[source] rusqlite::Error),
    #[error("the writer is gone")]
    WriterGone,
    #[error("the writer did not answer within {0:?}")]
    WriterBusy(Duration),
}

impl Handler<CheckWritable> for SqliteWriter {
    type Result = Result<(), NotWritable>;
    fn handle(&mut self, _: CheckWritable, _: &mut Self::Context) -> Self::Result {
        if let Some(fault) = self.health.fault() {
            return Err(NotWritable::Failing {
                secs: fault.since.elapsed().as_secs(),
                error: fault.error,
            });
        }
        check_writable(&self.conn).map_err(NotWritable::Locked)
    }
}

impl Handler<PatchSettings> for SqliteWriter {
    type Result = Result<String, SettingsError>;
    fn handle(&mut self, cmd: PatchSettings, _: &mut Self::Context) -> Self::Result {
        // Events pending in the batch touch settings only with INSERT OR IGNORE, which
        // commutes with a patch: no need to commit them first.
        if let Some(fault) = self.health.fault() {
            return Err(SettingsError::Unwritable(fault.error));
        }
        let result = self.conn.transaction().and_then(|tx| {
            let settings = crate::storage::settings::patch(&tx, &cmd.guild_id, &cmd.patch)?;
            tx.commit()?;
            Ok(settings)
        });
        self.checkpoint_if_due();
        result.map_err(|e| match classify(&e) {
            Failure::Command => SettingsError::Failed(e),
            Failure::Transient | Failure::Storage => SettingsError::Unavailable(e),
        })
    }
}

/// Run one of the bot's writes (`POST /v1/guilds/{id}/execute`) in a transaction of its own,
/// after everything queued before it is committed.
#[derive(Message)]
#[rtype(result = "Result<Executed, ExecuteError>")]
pub(crate) struct Execute {
    pub guild_id: String,
    pub sql: String,
    pub params: Vec<Json>,
    pub limits: QueryLimits,
    /// Past it the statement is interrupted, or not started.
    pub deadline: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The statement's own fault (refused, out of scope, a constraint, too slow, too large).
    #[error(transparent)]
    Statement(#[from] QueryError),
    /// The writer is waiting out a storage fault (full, read-only, locked): try again later.
    #[error("the database does not take writes now: {0}")]
    Unwritable(String),
    /// The storage failed this write: try again later.
    #[error("the database does not take writes now")]
    Unavailable(#[source] rusqlite::Error),
    /// The guild is frozen for a rescale, or no longer (or not yet) this pod's.
    #[error("guild {guild_id} is moving to another pod (rescale to epoch {epoch}); retry in a few seconds")]
    Moving { guild_id: String, epoch: u64 },
    #[error("the writer is gone")]
    WriterGone,
}

impl Handler<Execute> for SqliteWriter {
    type Result = Result<Executed, ExecuteError>;
    fn handle(&mut self, cmd: Execute, ctx: &mut Self::Context) -> Self::Result {
        if Instant::now() >= cmd.deadline {
            return Err(QueryError::Timeout(cmd.limits.timeout).into());
        }
        // In order with the events before it: what they wrote is committed first.
        self.flush(ctx);
        if !self.pending.is_empty() {
            let why = self.health.fault().map_or_else(String::new, |f| f.error);
            return Err(ExecuteError::Unwritable(why));
        }
        let ownership = self.ownership;
        let frozen = ownership.next.is_some_and(|t| t.frozen);
        match cmd.guild_id.parse::<u64>() {
            Ok(id) if ownership.owns_now(id) && !(frozen && ownership.outgoing(id)) => {}
            _ => {
                return Err(ExecuteError::Moving {
                    guild_id: cmd.guild_id,
                    epoch: ownership.next.map_or(ownership.epoch, |t| t.epoch),
                })
            }
        }
        let scopes = match &self.scopes {
            Some(scopes) => scopes.clone(),
            None => {
                let scopes = Arc::new(Scopes::read(&self.conn).map_err(ExecuteError::Unavailable)?);
                self.scopes = Some(scopes.clone());
                scopes
            }
        };
        let started = Instant::now();
        let result = execute::execute(
            &mut self.conn,
            &scopes,
            &cmd.guild_id,
            &cmd.sql,
            &cmd.params,
            cmd.limits,
            cmd.deadline,
        );
        self.checkpoint_if_due();
        let outcome = match &result {
            Ok(_) => "committed",
            Err(ExecuteFailure::Statement(QueryError::OutOfScope { .. })) => "out_of_scope",
            Err(ExecuteFailure::Statement(_)) => "refused",
            Err(ExecuteFailure::Storage(_)) => "storage",
        };
        self.metrics
            .api_writes
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|e| match e {
            ExecuteFailure::Statement(e) => ExecuteError::Statement(e),
            ExecuteFailure::Storage(e) => match classify(&e) {
                Failure::Command => ExecuteError::Statement(QueryError::Database(e)),
                Failure::Transient | Failure::Storage => ExecuteError::Unavailable(e),
            },
        })
    }
}
