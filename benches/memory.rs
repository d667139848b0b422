//! Memory per guild actor (not criterion: a measurement, printed). For 10k and 100k guilds:
//! resident memory with every guild's actor alive, and after they all passivate.
//! Run: `cargo bench --bench memory`.

mod common;

use common::*;
use gateway_actors::event::decode_frame;
use gateway_actors::metrics::Metrics;
use gateway_actors::{Pipeline, PipelineConfig};
use std::sync::Arc;
use std::time::Duration;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// RSS after asking the allocator (mimalloc, as in the binary) to return freed memory, so the
/// figure shows what is still in use rather than what the allocator keeps for later.
fn trimmed_rss() -> u64 {
    // SAFETY: mi_collect only frees unused pages of the calling thread's and abandoned heaps.
    unsafe { libmimalloc_sys::mi_collect(true) };
    rss_bytes()
}

fn measure(guilds: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    in_system(async {
        let mut config = PipelineConfig::new(one_pod(), dir.path().join("memory.sqlite3"));
        config.guild_idle = Duration::from_secs(3);
        let metrics = Arc::new(Metrics::new(0, 1).expect("metrics"));
        let pipeline = Pipeline::start(config, metrics.clone()).expect("pipeline");
        // Events that start a guild's actor and write nothing (an embed-only MESSAGE_UPDATE).
        let events: Vec<_> = (0..guilds)
            .map(|g| {
                let line = format!(r#"{{"op":0,"t":"MESSAGE_UPDATE","s":{g},"d":{{"id":"1","channel_id":"2","guild_id":"{}","embeds":[]}}}}"#, 1_000_000 + g);
                decode_frame(&line).expect("decodes")
            })
            .collect();
        let before = trimmed_rss();
        for event in events {
            pipeline.submit(event).await;
        }
        pipeline.drain().await;
        let alive = metrics.guild_actors.get();
        let active = trimmed_rss();
        for _ in 0..600 {
            if metrics.guild_actors.get() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let passivated = trimmed_rss();
        let per = |rss: u64| rss.saturating_sub(before) as f64 / guilds as f64;
        println!(
            "{guilds:>7} guilds: {alive} actors alive: {:>8.0} B per active guild actor; after passivation ({} alive): {:>6.0} B per passivated guild",
            per(active),
            metrics.guild_actors.get(),
            per(passivated)
        );
    });
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    for guilds in [10_000, 100_000] {
        measure(guilds);
    }
}
