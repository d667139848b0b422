//! guild-gateway's actor pipeline, from a decoded gateway dispatch to a committed SQLite row.
//!
//! The tree reads in the order an event travels:
//! - [`pipeline`] assembles the stages and is the handle every source uses (`submit`, `drain`);
//! - `actors`: the stages, `filter` (ownership, the gate) -> `inbox` (a guild's bounded
//!   mailbox and its overflow) -> `guild` (one actor per guild) -> `writer` (the one SQLite
//!   writer, group commit, retries);
//! - `domain`: what events mean, with no I/O: [`event`] (the model and its one decoder),
//!   [`shard`] (who owns a guild), `handlers` (what each event writes), `moderation` (events
//!   paired with audit log entries), [`stats`] (message statistics), `scope` (a guild writes
//!   only its own rows), [`time`];
//! - `storage`: `store` (the schema and the SQL of every write), [`query`] (the data API's
//!   guarded reads), `settings` (a guild's settings document) and [`reshard`];
//! - beside them: `progress` (which events are done), `health` (whether commits succeed),
//!   [`metrics`].
//!
//! Nothing here opens a network connection.

mod actors;
mod domain;
mod health;
mod log_limit;
pub mod metrics;
mod pipeline;
mod progress;
mod storage;

// Short paths inside the crate; the groups above are the tree's shape.
use actors::{filter, guild, inbox, writer};
pub use domain::{anchor, event, ownership, shard, stats, time};
pub(crate) use domain::{handlers, moderation, scope};
pub(crate) use storage::{handoff, store};
pub use storage::{query, reshard};

pub use health::StorageFault;
pub use pipeline::{FreezeReport, Pipeline, PipelineConfig, RescaleError, SlowGuildHook};
pub use storage::store::{count_rows, CacheExpiry, StoreError, BUSY_TIMEOUT};
pub use writer::{NotWritable, SettingsError};

/// The pieces the crate's own benches and tests drive directly (the single-threaded baseline,
/// the SQL of one op). Not an API: nothing outside this repository should use it.
#[doc(hidden)]
pub mod internals {
    pub use crate::handlers::GuildState;
    pub use crate::moderation::ModerationLog;
    pub use crate::store::{apply, open_writer, Op};
}

/// An error and its causes, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
