//! Event-to-commit latency at a fixed offered load (not criterion: a measurement, printed).
//! Feeds the pipeline bench's stream at `BENCH_RATE` events/s (default 60000, about half the
//! measured maximum of `pipeline/actors`) and reports p50/p99 from the pipeline's own
//! `event_latency_seconds` histogram (bucket upper bounds, so "at most").
//! Run: `cargo bench --bench latency`.

mod common;

use common::*;
use gateway_actors::event::decode_frame;
use gateway_actors::metrics::Metrics;
use gateway_actors::{Pipeline, PipelineConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn quantile(metrics: &Metrics, q: f64) -> f64 {
    let families = metrics.registry.gather();
    let family = families
        .iter()
        .find(|f| f.name() == "guild_gateway_event_latency_seconds")
        .expect("the latency histogram is registered");
    let hist = family.get_metric()[0].get_histogram();
    let total = hist.get_sample_count() as f64;
    hist.get_bucket()
        .iter()
        .find(|b| b.cumulative_count() as f64 >= q * total)
        .map_or(f64::INFINITY, |b| b.upper_bound())
}

fn main() {
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(60_000);
    let lines = Arc::new(stream(1000, 50_000));
    let dir = tempfile::tempdir().expect("temp dir");
    in_system(async {
        let config = PipelineConfig::new(one_pod(), dir.path().join("latency.sqlite3"));
        let metrics = Arc::new(Metrics::new(0, 1).expect("metrics"));
        let pipeline = Arc::new(Pipeline::start(config, metrics.clone()).expect("pipeline"));
        let decoded: Vec<_> = lines
            .iter()
            .map(|l| decode_frame(l).expect("decodes"))
            .collect();
        let started = Instant::now();
        let feeder = {
            let pipeline = pipeline.clone();
            tokio::spawn(async move {
                for (i, dispatch) in decoded.into_iter().enumerate() {
                    // Offer event i at i / rate seconds.
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        if wait > Duration::from_micros(500) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    pipeline.submit(dispatch).await;
                }
            })
        };
        feeder.await.expect("feeder");
        pipeline.drain().await;
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "offered {rate} events/s: {} events in {elapsed:.2} s ({:.0}/s achieved); event-to-commit latency p50 <= {:.2} ms, p99 <= {:.2} ms",
            lines.len(),
            lines.len() as f64 / elapsed,
            quantile(&metrics, 0.5) * 1000.0,
            quantile(&metrics, 0.99) * 1000.0,
        );
    });
}
