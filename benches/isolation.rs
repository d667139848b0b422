//! `isolation`: 1,000 busy guilds, one of them slow (each of its events takes 50 ms, injected
//! through the pipeline's `slow_hook` seam). Measures the other guilds' throughput with the
//! slow guild (`isolation/one_slow_guild`) and without (`isolation/no_slow_guild`), in the same
//! run; their ratio is the isolation figure. A live pod's settings.

mod common;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway_actors::event::{decode_frame, Id};
use gateway_actors::metrics::Metrics;
use gateway_actors::{Pipeline, PipelineConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time until every event of the other guilds is done (the slow guild may still be working).
fn others_done(lines: &Arc<Vec<String>>, dir: &Path, slow: Option<(Id, u64)>) -> Duration {
    let db = dir.join("isolation.sqlite3");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let slow_calls = Arc::new(AtomicU64::new(0));
    in_system(async {
        let mut config = PipelineConfig::new(one_pod(), db);
        if let Some((slow_guild, _)) = slow {
            let calls = slow_calls.clone();
            config.slow_hook = Some(Arc::new(move |guild: Id| {
                (guild == slow_guild).then(|| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Duration::from_millis(50)
                })
            }));
        }
        let metrics = Arc::new(Metrics::new(0, 1).expect("metrics"));
        let pipeline = Arc::new(Pipeline::start(config, metrics.clone()).expect("pipeline"));
        let started = Instant::now();
        feed(&pipeline, lines).await;
        let total = lines.len() as u64;
        match slow {
            None => pipeline.drain().await,
            Some((_, slow_events)) => loop {
                // The slow guild's events done so far: all it has started but the last two
                // (one may be sleeping, one committing).
                let slow_done = slow_calls.load(Ordering::Relaxed).saturating_sub(2);
                if pipeline.status().events_done >= total - slow_events + slow_done.min(slow_events)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            },
        }
        let elapsed = started.elapsed();
        assert_eq!(metrics.shed.get(), 0, "nothing may be shed in this bench");
        elapsed
    })
}

fn isolation(c: &mut Criterion) {
    let lines = Arc::new(stream(1000, 50_000));
    // The slow guild: a busy one, but not so busy that its share exceeds its mailbox.
    let mut per_guild: HashMap<Id, u64> = HashMap::new();
    for line in lines.iter() {
        if let Some(g) = decode_frame(line).ok().and_then(|d| d.guild_id) {
            *per_guild.entry(g).or_default() += 1;
        }
    }
    let mut ranked: Vec<(Id, u64)> = per_guild.into_iter().collect();
    ranked.sort_by_key(|&(id, n)| (std::cmp::Reverse(n), id));
    let slow = ranked[10];
    eprintln!(
        "isolation: {} events, slow guild {} with {} of them ({} guilds)",
        lines.len(),
        slow.0,
        slow.1,
        ranked.len()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("isolation");
    group.throughput(Throughput::Elements(lines.len() as u64 - slow.1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("no_slow_guild", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| others_done(&lines, dir.path(), None))
                .sum()
        })
    });
    group.bench_function("one_slow_guild", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| others_done(&lines, dir.path(), Some(slow)))
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, isolation);
criterion_main!(benches);
