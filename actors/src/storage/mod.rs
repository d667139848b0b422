//! The pod's SQLite file: opening it, applying writes, reading back what actors restore, the
//! periodic expiry, the API's reads, guarded writes and settings, the registry of guild-scoped
//! tables ([`tables`]), and moving rows between pods.

pub(crate) mod apply;
pub(crate) mod checkpoint;
pub(crate) mod database;
pub(crate) mod expiry;
pub mod query;
pub(crate) mod relay_documents;
pub(crate) mod rescale;
pub mod reshard;
pub(crate) mod restore;
pub(crate) mod settings;
pub mod tables;
