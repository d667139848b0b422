//! `live`: the path a live pod runs (fake-discord -> serenity -> conversion -> pipeline ->
//! commit) against `replay` of the same stream, in one run, with the real binaries (release:
//! `cargo bench` builds the pod; the fake Discord is `guild-gateway-dev`, which it does not
//! build, hence `cargo build --release --workspace` first). Reports, per path, the median over
//! the runs of events/s (first event accepted to last committed) and the pod's CPU seconds per
//! 100k events, and their ratios. `LIVE_BENCH_RUNS` (default 3) and `LIVE_BENCH_MESSAGES` (default 100000) tune it.
//! Not a criterion bench: each sample is a whole process lifetime.

use guild_gateway_dev::simulate::cpu_seconds;
use guild_gateway_dev::testing::*;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const TOKEN: &str = "live-bench-token";

struct Sample {
    events: u64,
    seconds: f64,
    cpu_seconds: f64,
}

fn status(port: u16) -> Option<serde_json::Value> {
    let (code, body) = http_get(port, "/status").ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Polls the pod until `done` says it has committed everything; times from its first event.
fn measure(pod: &Proc, port: u16, done: impl Fn(&serde_json::Value) -> bool) -> Sample {
    wait_for(Duration::from_secs(60), || {
        status(port).filter(|s| s["events_accepted"].as_u64() > Some(0))
    })
    .expect("the pod takes events");
    let started = Instant::now();
    let last = wait_for(Duration::from_secs(600), || {
        status(port).filter(|s| done(s))
    })
    .expect("the pod commits everything");
    let seconds = started.elapsed().as_secs_f64();
    let events = last["events_done"].as_u64().unwrap_or(0);
    Sample {
        events,
        seconds,
        cpu_seconds: cpu_seconds(pod.0.id()),
    }
}

fn replay_run(stream: &Path, lines: u64, dir: &Path) -> Sample {
    let port = free_port();
    let mut pod = Proc(
        gateway()
            .args(["replay", "--linger"])
            .arg(stream)
            .env("DATABASE_URL", dir.join("replay.sqlite3"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting replay"),
    );
    let sample = measure(&pod, port, |s| {
        s["events_done"].as_u64() == Some(lines) && s["in_flight"] == 0
    });
    sigterm(&pod.0);
    wait_exit(&mut pod.0, Duration::from_secs(30));
    sample
}

fn live_run(stream: &Path, dir: &Path) -> Sample {
    let (_fake, fake_port) = start_fake_discord_on(TOKEN, stream, &[]);
    let port = free_port();
    let mut pod = Proc(
        gateway()
            .arg("serve")
            .env("DATABASE_URL", dir.join("live.sqlite3"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DISCORD_TOKEN", TOKEN)
            .env("DISCORD_API_URL", format!("http://127.0.0.1:{fake_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting serve"),
    );
    let sample = measure(&pod, port, |s| {
        let Some((_, body)) = http_get(fake_port, "/fake/sessions").ok() else {
            return false;
        };
        let sessions: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        sessions.as_array().is_some_and(|all| {
            all.iter().any(|session| {
                session["session_id"] == s["session_id"]
                    && session["done"] == true
                    && session["last_seq_sent"] == s["last_seq_committed"]
                    && s["in_flight"] == 0
            })
        })
    });
    sigterm(&pod.0);
    wait_exit(&mut pod.0, Duration::from_secs(30));
    sample
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"live".contains(&a))
    {
        return;
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let runs = env("LIVE_BENCH_RUNS", 3).max(1);
    let messages = env("LIVE_BENCH_MESSAGES", 100_000);
    let dir = tempfile::tempdir().expect("a scratch directory");
    let stream = dir.path().join("stream.ndjson");
    let lines =
        guild_gateway_dev::synthetic::write_file(&stream, 300, messages).expect("the stream");
    println!("live: {lines} events (300 guilds, {messages} messages), {runs} runs per path");

    let (mut replay, mut live) = (Vec::new(), Vec::new());
    for run in 0..runs {
        for sample_dir in ["r", "l"] {
            let _ = std::fs::remove_dir_all(dir.path().join(sample_dir));
            std::fs::create_dir_all(dir.path().join(sample_dir)).expect("a run directory");
        }
        let r = replay_run(&stream, lines, &dir.path().join("r"));
        let l = live_run(&stream, &dir.path().join("l"));
        for (name, s) in [("replay", &r), ("live", &l)] {
            println!(
                "  run {run} {name:>6}: {} events in {:.2} s = {:.0} events/s, {:.2} CPU s",
                s.events,
                s.seconds,
                s.events as f64 / s.seconds,
                s.cpu_seconds
            );
        }
        replay.push(r);
        live.push(l);
    }
    let rate = |s: &[Sample]| median(s.iter().map(|s| s.events as f64 / s.seconds).collect());
    let cpu = |s: &[Sample]| {
        median(
            s.iter()
                .map(|s| s.cpu_seconds * 100_000.0 / s.events as f64)
                .collect(),
        )
    };
    println!(
        "live/replay   events/s: {:.0} / {:.0} = {:.2}",
        rate(&live),
        rate(&replay),
        rate(&live) / rate(&replay)
    );
    println!(
        "live/replay   CPU s per 100k events: {:.2} / {:.2} = {:.2}",
        cpu(&live),
        cpu(&replay),
        cpu(&live) / cpu(&replay)
    );
}
