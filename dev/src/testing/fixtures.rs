//! The shared fixtures (../shared/fixtures from the repository's root): the sample stream,
//! its expected rows, and reading the sample's dispatches.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The repository's root (this crate is one of its workspace members).
pub(super) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("../shared/fixtures").join(name)
}

pub fn sample_stream() -> PathBuf {
    fixture("events.sample.ndjson")
}

pub fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("events.sample.expected.json"))
        .expect("expected rows fixture");
    serde_json::from_str(&text).expect("expected rows are JSON")
}

/// The sample's dispatches, parsed.
pub fn sample_lines() -> Vec<Value> {
    std::fs::read_to_string(sample_stream())
        .expect("sample stream")
        .lines()
        .map(|l| serde_json::from_str(l).expect("sample line is JSON"))
        .collect()
}

/// The guild a sample dispatch belongs to (GUILD_CREATE: its id), or None for DMs.
pub fn dispatch_guild(line: &Value) -> Option<u64> {
    let d = &line["d"];
    let id = if line["t"] == "GUILD_CREATE" {
        &d["id"]
    } else {
        &d["guild_id"]
    };
    id.as_str().and_then(|s| s.parse().ok())
}
