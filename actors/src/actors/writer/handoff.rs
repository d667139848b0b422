//! A live rescale's steps that change the database: each runs after everything queued before
//! it is committed, in a transaction of its own, and fails rather than wait while storage does.

use super::SqliteWriter;
use crate::domain::rescale::anchor::AnchorOutcome;
use crate::domain::rescale::ownership::Ownership;
use crate::storage::rescale::handoff;
use actix::prelude::*;
use std::path::PathBuf;

/// A step of a live rescale that changes the database, after everything queued before it
/// is committed (the capture log included).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
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
    type Result = Result<(), String>;
    fn handle(&mut self, step: Handoff, ctx: &mut Self::Context) -> Self::Result {
        self.flush(ctx);
        if !self.pending.is_empty() {
            let why = self.health.fault().map_or_else(String::new, |f| f.error);
            return Err(format!("the database does not take writes now: {why}"));
        }
        let conn = &mut self.conn;
        let result = match step {
            Handoff::Save(ownership) => conn
                .transaction()
                .and_then(|tx| {
                    handoff::save(&tx, &ownership)?;
                    tx.commit()
                })
                .map_err(|e| e.to_string()),
            Handoff::Import(files, ownership) => files
                .iter()
                .try_for_each(|file| {
                    handoff::import(conn, file).map_err(|e| {
                        format!("importing {}: {}", file.display(), crate::errors::chain(&e))
                    })
                })
                .and_then(|()| {
                    conn.transaction()
                        .and_then(|tx| {
                            handoff::save(&tx, &ownership)?;
                            tx.commit()
                        })
                        .map_err(|e| e.to_string())
                }),
            Handoff::Anchors(outcomes) => conn
                .transaction()
                .and_then(|tx| {
                    handoff::save_anchors(&tx, &outcomes)?;
                    tx.commit()
                })
                .map_err(|e| e.to_string()),
            Handoff::Commit(ownership, gone) => conn
                .transaction()
                .and_then(|tx| {
                    handoff::remove_guilds(&tx, gone)?;
                    handoff::save(&tx, &ownership)?;
                    tx.commit()
                })
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "a rescale step failed to commit");
        }
        result
    }
}
