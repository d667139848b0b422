//! guild-gateway's actor pipeline, from a decoded gateway dispatch to a committed SQLite row.
//!
//! The tree reads in the order an event travels:
//! - [`pipeline`](Pipeline) assembles the stages and is the handle every source uses (`submit`,
//!   `drain`); its `rescale` part runs a live rescale's steps on this pod;
//! - `actors`: the stages, `filter` (ownership, the gate; its rescale hand-over and take-over)
//!   -> `inbox` (a guild's bounded mailbox and its overflow) -> `guild` (one actor per guild)
//!   -> `writer` (the one SQLite writer, group commit, retries);
//! - `domain`: what events mean, with no I/O: [`event`] (the model and its one decoder),
//!   [`op`] (the writes handlers ask for, and the rows they name), [`partition`] (who owns a
//!   guild), [`rescale`] (a live rescale's rules: ownership and anchors), `handlers` (what
//!   each event writes), `moderation` (events paired with audit log entries), [`stats`]
//!   (message statistics), `scope` (a guild writes only its own rows), [`time`];
//! - `storage`: `database` (opening the file: schema, migrations, lock, read pool), `apply`
//!   (the SQL of every op), `restore` (what an actor reads back), `expiry`, `rescale` (a live
//!   rescale's logs and moves), [`query`] (the data API's guarded reads), `settings` (a
//!   guild's settings document) and [`reshard`] (the offline split);
//! - beside them: `progress` (which events are done), `health` (whether commits succeed),
//!   `relay_feed` (which events the pod's relay may send, once done), [`metrics`], [`errors`].
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
mod relay_feed;
mod side_thread;
mod storage;

pub use domain::{event, op, partition, relay, rescale, stats, time};
pub use storage::{query, reshard, tables};

pub use actors::writer::api::{ExecuteError, NotWritable, SettingsError};
pub use health::StorageFault;
pub use pipeline::{FreezeReport, Pipeline, PipelineConfig, RescaleError, SlowGuildHook};
pub use relay_feed::{RelayFeed, Relayed};
pub use storage::database::{count_rows, StoreError, BUSY_TIMEOUT};
pub use storage::expiry::CacheExpiry;

// One guild's path without the actors: the handlers' state, the moderation matcher and the
// SQL of one op. The plain-loop baseline the benches measure the pipeline against
// (benches/common) drives them, and tests open the schema with `open_writer`.
pub use domain::handlers::GuildState;
pub use domain::moderation::ModerationLog;
pub use storage::apply::apply;
pub use storage::database::open_writer;
