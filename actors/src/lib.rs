//! guild-gateway's actor pipeline, from a decoded gateway dispatch to a committed SQLite row.
//!
//! The tree reads in the order an event travels:
//! - [`pipeline`] assembles the stages and is the handle every source uses (`submit`, `drain`);
//! - `actors`: the stages, `filter` (ownership, the gate) -> `inbox` (a guild's bounded
//!   mailbox and its overflow) -> `guild` (one actor per guild) -> `writer` (the one SQLite
//!   writer, group commit, retries);
//! - `domain`: what events mean, with no I/O: [`event`] (the model and its one decoder),
//!   [`op`] (the writes handlers ask for, and the rows they name), [`shard`] (who owns a
//!   guild), [`ownership`] and [`anchor`] (a live rescale's rules), `handlers` (what each
//!   event writes), `moderation` (events paired with audit log entries), [`stats`] (message
//!   statistics), `scope` (a guild writes only its own rows), [`time`];
//! - `storage`: `database` (opening the file: schema, migrations, lock, read pool), `apply`
//!   (the SQL of every op), `restore` (what an actor reads back), `expiry`, `event_log` and
//!   `handoff` (a live rescale's logs and moves), [`query`] (the data API's guarded reads),
//!   `settings` (a guild's settings document) and [`reshard`];
//! - beside them: `progress` (which events are done), `health` (whether commits succeed),
//!   [`metrics`].
//!
//! Layers run one way, `domain` <- `storage` <- `actors` <- `pipeline`, and every import
//! names its real path (`tests/layering.rs` checks both). Nothing here opens a network
//! connection.

#![warn(unreachable_pub)]

mod actors;
mod domain;
pub mod errors;
mod health;
mod log_limit;
pub mod metrics;
mod pipeline;
mod progress;
mod storage;

pub use domain::{event, op, partition, rescale, stats, time};
pub use storage::{query, reshard};

pub use actors::writer::api::{NotWritable, SettingsError};
pub use health::StorageFault;
pub use pipeline::{FreezeReport, Pipeline, PipelineConfig, RescaleError, SlowGuildHook};
pub use storage::database::{count_rows, StoreError, BUSY_TIMEOUT};
pub use storage::expiry::CacheExpiry;

// One guild's path without the actors: the handlers' state, the moderation matcher and the
// SQL of one op. The plain-loop baseline the benches measure the pipeline against
// (benches/common) drives them, and tests open the schema with `open_writer`.
pub use domain::handlers::GuildState;
pub use domain::moderation::ModerationLog;
pub use storage::apply::apply;
pub use storage::database::open_writer;
