//! `pipeline`: one pod's whole path on a recorded stream (about 1,000 guilds, the fixture's
//! real message texts, mostly MESSAGE_CREATE plus reactions, edits, deletes): bytes -> decode
//! -> filter -> guild actors -> writer -> committed to an SQLite file on disk (WAL).
//!
//! - `pipeline/actors`: our pipeline, the pod owning every guild;
//! - `pipeline/actors_one_of_three`: the pod owning a third of the guilds (md5);
//! - `pipeline/plain_loop`: the same work in a single-threaded loop, no actors (the baseline).
//!
//! `BENCH_MESSAGES` (default 50000) sets the stream's size; `BENCH_GUILD_WORKERS` the guild
//! worker threads (default: the pipeline's default).

mod common;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway_actors::partition::{Partition, Strategy};
use std::sync::Arc;
use std::time::Duration;

fn pipeline(c: &mut Criterion) {
    let messages = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(50_000);
    let lines = Arc::new(stream(1000, messages));
    let workers: Option<usize> = std::env::var("BENCH_GUILD_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok());
    let tune = move |config: &mut gateway_actors::PipelineConfig| {
        if let Some(w) = workers {
            config.guild_workers = w;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("actors", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| run_actors(&lines, dir.path(), one_pod(), tune))
                .sum()
        })
    });
    let third = Partition::new(Strategy::Md5, 0, 3);
    group.bench_function("actors_one_of_three", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| run_actors(&lines, dir.path(), third, tune))
                .sum()
        })
    });
    group.bench_function("plain_loop", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| run_plain_loop(&lines, dir.path(), one_pod()))
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
