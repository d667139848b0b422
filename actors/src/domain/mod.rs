//! What events mean, and what they write: no I/O, no actors.

pub mod anchor;
pub mod event;
pub(crate) mod handlers;
pub(crate) mod moderation;
pub mod op;
pub mod ownership;
pub(crate) mod scope;
pub mod shard;
pub mod stats;
pub mod time;
