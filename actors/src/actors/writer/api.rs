//! What the HTTP side asks the writer besides events: whether the database takes writes
//! (`/readyz`), and the data API's one write, a guild's settings patch. Both go through the
//! one writer so that they see, and never race, its transaction.

use super::{classify, Failure, SqliteWriter};
use crate::storage::database::check_writable;
use actix::prelude::*;
use std::time::Duration;

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
        result.map_err(|e| match classify(&e) {
            Failure::Command => SettingsError::Failed(e),
            Failure::Transient | Failure::Storage => SettingsError::Unavailable(e),
        })
    }
}
