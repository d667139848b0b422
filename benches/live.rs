//! `live`: the path a live pod runs (fake-discord -> serenity -> conversion -> pipeline ->
//! commit) against `replay` of the same stream, in one run, with the real binaries (release:
//! `cargo bench` builds the pod; the fake Discord is `guild-gateway-dev`, which it does not
//! build, hence `cargo build --release --workspace` first). Reports, per path, the median over
//! the runs of events/s (first event accepted to last committed) and the pod's CPU seconds per
//! 100k events, and their ratios. `LIVE_BENCH_RUNS` (default 3) and `LIVE_BENCH_MESSAGES` (default 100000) tune it.
//! Not a criterion bench: each sample is a whole process lifetime. Both paths run with
//! `AUDIT_WINDOW_SECS=0`: the stream has bans whose audit entry never comes, and a live pod
//! (which is not drained at the end) would otherwise commit the last of them 5 s late.

mod process;

use guild_gateway_dev::testing::*;
use process::{committed_all_sent, env_or, filtered_out, measure, median, Sample};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const TOKEN: &str = "live-bench-token";

fn replay_run(stream: &Path, lines: u64, dir: &Path) -> Sample {
    let port = free_port();
    let mut pod = Proc(
        gateway()
            .args(["replay", "--linger"])
            .arg(stream)
            .env("DATABASE_URL", dir.join("replay.sqlite3"))
            .env("AUDIT_WINDOW_SECS", "0")
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
            .env("AUDIT_WINDOW_SECS", "0")
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DISCORD_TOKEN", TOKEN)
            .env("DISCORD_API_URL", format!("http://127.0.0.1:{fake_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting serve"),
    );
    let sample = measure(&pod, port, |s| committed_all_sent(fake_port, s));
    sigterm(&pod.0);
    wait_exit(&mut pod.0, Duration::from_secs(30));
    sample
}

fn main() {
    if filtered_out("live") {
        return;
    }
    let runs = env_or("LIVE_BENCH_RUNS", 3).max(1);
    let messages = env_or("LIVE_BENCH_MESSAGES", 100_000);
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
    let rate = |s: &[Sample]| median(s.iter().map(Sample::rate).collect());
    let cpu = |s: &[Sample]| median(s.iter().map(Sample::cpu_per_100k).collect());
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
