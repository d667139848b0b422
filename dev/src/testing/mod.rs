//! Helpers the end-to-end tests and benches share: the fixtures, the binaries, a minimal HTTP
//! client, and reading a pod's database into comparable rows. Everything talks to 127.0.0.1
//! only. They panic with a message on any problem: a failed helper is a failed test.
//!
//! One module per concern; everything is re-exported here, so `use
//! guild_gateway_dev::testing::*;` is all a test needs.

mod deployment;
mod fake;
mod fixtures;
mod http;
mod metrics;
mod ports;
mod processes;
mod rows;
mod tmpfs;
mod wait;

pub use deployment::*;
pub use fake::*;
pub use fixtures::*;
pub use http::*;
pub use metrics::*;
pub use ports::*;
pub use processes::*;
pub use rows::*;
pub use tmpfs::*;
pub use wait::*;
