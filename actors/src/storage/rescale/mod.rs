//! A live rescale's SQL: [`event_log`] (the events captured for guilds that arrive, and the
//! waiting ones handed over with them) and [`handoff`] (export, import and removal of the
//! guilds that move). The rules are `domain::rescale`.

pub(crate) mod event_log;
pub(crate) mod handoff;

use crate::storage::reshard::ReshardError;
use std::path::PathBuf;

/// Why a rescale step failed in this pod's database.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The storage fault the writer is waiting out (full disk, read-only file, lock).
    #[error("the database does not take writes now: {0}")]
    Unwritable(String),
    #[error("importing {}", file.display())]
    Import {
        file: PathBuf,
        #[source]
        source: Box<ReshardError>,
    },
    #[error("exporting the guilds that go to pod {to}")]
    Export {
        to: u32,
        #[source]
        source: Box<ReshardError>,
    },
    #[error("{what}")]
    Sql {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no read connection")]
    Pool(#[source] r2d2::Error),
}

impl HandoffError {
    /// A failed statement of the step `what`.
    pub(crate) fn sql(what: &'static str) -> impl FnOnce(rusqlite::Error) -> HandoffError {
        move |source| HandoffError::Sql { what, source }
    }
}
