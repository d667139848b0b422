//! A live rescale's rules: [`ownership`] (the epochs, the protocol's steps and its
//! invariant) and [`anchor`] (the exact point where a guild's events change owner). The SQL
//! side is `storage::rescale`, the actors' side `pipeline::rescale`, the command and the
//! pods' endpoints the binary's `rescale` module.

pub mod anchor;
pub mod ownership;
