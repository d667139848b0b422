//! The pod's SQLite file: schema, writes, the API's reads and settings, and moving rows
//! between pods.

pub(crate) mod handoff;
pub mod query;
pub mod reshard;
pub(crate) mod settings;
pub(crate) mod store;
