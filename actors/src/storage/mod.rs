//! The pod's SQLite file: schema, writes, and moving rows between pods.

pub mod reshard;
pub(crate) mod store;
