//! A live rescale's steps that change the database: each runs after everything queued before
//! it is committed, in a transaction of its own, and fails rather than wait while storage does.

use super::SqliteWriter;
use crate::domain::rescale::anchor::AnchorOutcome;
use crate::domain::rescale::ownership::Ownership;
use crate::storage::rescale::{handoff, HandoffError};
use actix::prelude::*;
use std::path::PathBuf;

/// A step of a live rescale that changes the database, after everything queued before it
/// is committed (the capture log included).
#[derive(Message)]
#[rtype(result = "Result<(), HandoffError>")]
pub(crate) enum Handoff {
    /// Persist the ownership.
    Save(Ownership),
    /// Import exported files (each idempotent), then persist the ownership.
    Import(Vec<PathBuf>, Ownership),
    /// Delete the rows of the guilds given away and the capture log, and persist the
    /// committed ownership, in one transaction.
    Commit(Ownership, Box<dyn Fn(u64) -> bool + Send>),
    /// Record what became of a freeze's anchors.
    Anchors(Vec<AnchorOutcome>),
}

impl Handler<Handoff> for SqliteWriter {
    type Result = Result<(), HandoffError>;
    fn handle(&mut self, step: Handoff, ctx: &mut Self::Context) -> Self::Result {
        self.flush(ctx);
        if !self.pending.is_empty() {
            let why = self.health.fault().map_or_else(String::new, |f| f.error);
            return Err(HandoffError::Unwritable(why));
        }
        let conn = &mut self.conn;
        let persisted = match &step {
            Handoff::Save(o) | Handoff::Import(_, o) | Handoff::Commit(o, _) => Some(*o),
            Handoff::Anchors(_) => None,
        };
        let result = match step {
            Handoff::Save(ownership) => conn
                .transaction()
                .and_then(|tx| {
                    handoff::save(&tx, &ownership)?;
                    tx.commit()
                })
                .map_err(HandoffError::sql("saving the ownership")),
            Handoff::Import(files, ownership) => files
                .iter()
                .try_for_each(|file| {
                    handoff::import(conn, file).map_err(|source| HandoffError::Import {
                        file: file.clone(),
                        source: Box::new(source),
                    })
                })
                .and_then(|()| {
                    conn.transaction()
                        .and_then(|tx| {
                            handoff::save(&tx, &ownership)?;
                            tx.commit()
                        })
                        .map_err(HandoffError::sql("saving the ownership"))
                }),
            Handoff::Anchors(outcomes) => conn
                .transaction()
                .and_then(|tx| {
                    handoff::save_anchors(&tx, &outcomes)?;
                    tx.commit()
                })
                .map_err(HandoffError::sql("recording the anchors")),
            Handoff::Commit(ownership, gone) => conn
                .transaction()
                .and_then(|tx| {
                    handoff::remove_guilds(&tx, gone)?;
                    handoff::save(&tx, &ownership)?;
                    tx.commit()
                })
                .map_err(HandoffError::sql("removing the guilds given away")),
        };
        self.checkpoint_if_due();
        match (&result, persisted) {
            (Err(e), _) => {
                tracing::error!(error = %crate::errors::chain(e), "a rescale step failed to commit")
            }
            (Ok(()), Some(ownership)) => self.ownership = ownership,
            (Ok(()), None) => {}
        }
        result
    }
}
