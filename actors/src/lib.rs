pub mod shard;
pub mod stats;
