#![recursion_limit = "256"] // serde_json::json! of a whole GUILD_CREATE in `synthetic`

//! The tools around guild-gateway pods, kept out of the pod's binary and the pipeline library:
//! none of this runs in production.
//!
//! [`fake_discord`] is a local Discord-compatible server (REST and gateway), [`simulate`] a
//! whole deployment on one machine (a fake Discord and N `guild-gateway serve` processes),
//! [`synthetic`] a generator of realistic gateway streams, [`probe`] a tiny HTTP client for our
//! own pods, and [`testing`] the helpers the end-to-end tests and benches share.

pub mod fake_discord;
pub mod logging;
pub mod probe;
pub mod simulate;
pub mod synthetic;
pub mod testing;

use std::path::PathBuf;

/// The pod binary's file name on this platform.
pub fn pod_binary_name() -> String {
    format!("guild-gateway{}", std::env::consts::EXE_SUFFIX)
}

/// The tools' binary's file name on this platform.
pub fn dev_binary_name() -> String {
    format!("guild-gateway-dev{}", std::env::consts::EXE_SUFFIX)
}

/// `name` in the directory of the running executable: cargo builds every binary of the
/// workspace into one directory per profile, so the pod sits beside this tool.
pub fn beside_current_exe(name: &str) -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}
