//! guild-gateway's actor pipeline, from a decoded gateway dispatch to a committed SQLite row.
//!
//! Read top-down: [`event`] decodes dispatches, [`shard`] decides ownership, [`pipeline`]
//! assembles [`filter`] -> [`guild`] -> [`writer`]; [`handlers`] say what each event writes,
//! [`stats`] computes message statistics, [`moderation`] pairs moderation events with audit
//! log entries, [`store`] owns the SQL and [`scope`] keeps each guild's writes to its own rows;
//! [`progress`] tracks what is committed and [`metrics`] what happened. Nothing here opens a
//! network connection.

pub mod event;
pub mod filter;
pub mod guild;
pub mod handlers;
pub mod health;
pub mod inbox;
mod log_limit;
pub mod metrics;
pub mod moderation;
pub mod pipeline;
pub mod progress;
pub mod reshard;
pub mod scope;
pub mod shard;
pub mod stats;
pub mod store;
pub mod writer;

pub use pipeline::{Pipeline, PipelineConfig};
