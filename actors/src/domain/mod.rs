//! What events mean, and what they write: no I/O, no actors.

pub(crate) mod decimal;
pub mod event;
pub(crate) mod handlers;
pub(crate) mod moderation;
pub mod op;
pub mod partition;
pub mod relay;
pub mod rescale;
pub(crate) mod scope;
pub mod stats;
pub mod time;
