//! Discord at scale, against fake-discord playing Discord's rules: many shards per pod, the
//! shard split of the discord strategy, 4011, identify buckets across pods, the daily budget,
//! crash loops and close codes.

use guild_gateway_dev::testing::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `simulate --json` with `args`; returns its summary and the stream it generated. One at a
/// time: two deployments at once on a small machine only measure the machine.
fn simulate(dir: &Path, args: &str) -> (Value, PathBuf) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = dev()
        .args(["simulate", "--json", "--data-dir"])
        .arg(dir)
        .args(args.split_whitespace())
        .output()
        .expect("running simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "simulate {args:?} failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("summary").cloned())
        .expect("a summary line");
    let stream = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .expect("the generated stream");
    (summary, stream)
}

/// The pods' rows are exactly those of `stream` replayed into one pod, each guild in its
/// owner's database only.
fn assert_exact_rows(dir: &Path, stream: &Path, pods: u32, strategy: &str, shards: u32) {
    let truth = dir.join("one-pod.sqlite3");
    replay(&truth, 0, 1, "md5", stream);
    let dbs: Vec<PathBuf> = (0..pods)
        .map(|k| dir.join(format!("gateway-{k}.sqlite3")))
        .collect();
    assert_rows_with_shards(&dbs, strategy, Some(shards), &expected_rows_of(&truth));
}

/// Dispatches in a stream file (every line is one).
fn dispatches(stream: &Path) -> u64 {
    std::fs::read_to_string(stream)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64
}

#[test]
fn discord_strategy_splits_eight_shards_over_three_pods_with_exact_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (summary, stream) = simulate(
        dir.path(),
        "--pods 3 --strategy discord --shards 8 --guilds 12000 --messages 20000",
    );
    let pods = summary["pods"].as_array().unwrap();
    let shards: Vec<Value> = pods.iter().map(|p| p["shards"].clone()).collect();
    assert_eq!(
        shards,
        [
            serde_json::json!([0, 3, 6]),
            serde_json::json!([1, 4, 7]),
            serde_json::json!([2, 5])
        ]
    );
    for pod in pods {
        // Only its own shards' events: nothing foreign arrives.
        assert_eq!(pod["foreign"], 0, "{pod}");
        assert!(pod["owned"].as_u64() > Some(0), "{pod}");
        assert_eq!(
            pod["sessions"].as_u64(),
            Some(pod["shards"].as_array().unwrap().len() as u64)
        );
    }
    assert_exact_rows(dir.path(), &stream, 3, "discord", 8);
}

#[test]
fn md5_pods_run_every_shard_and_receive_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    // 8,000 guilds over 4 shards: about 2,000 a shard, under Discord's 2,500.
    let (summary, stream) = simulate(
        dir.path(),
        "--pods 3 --strategy md5 --shards 4 --guilds 8000 --messages 20000",
    );
    let events = dispatches(&stream);
    for pod in summary["pods"].as_array().unwrap() {
        assert_eq!(pod["shards"], serde_json::json!([0, 1, 2, 3]), "{pod}");
        assert_eq!(pod["sessions"], 4);
        // Every event of the bot once, plus a READY per identify: the four shards' streams
        // partition the bot's, with no duplicate between them.
        let identifies = pod["identifies"].as_u64().unwrap();
        assert_eq!(identifies, 4, "a re-identify would replay a session: {pod}");
        assert_eq!(pod["received"].as_u64(), Some(events + identifies), "{pod}");
    }
    assert_exact_rows(dir.path(), &stream, 3, "md5", 4);
}

/// A fake Discord on the given stream, with extra rules.
fn fake(events: &Path, extra: &[&str]) -> (Proc, u16) {
    start_fake_discord_on("t", events, extra)
}

fn serve(dir: &Path, fake_port: u16, ordinal: u32, pods: u32, env: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = gateway();
    cmd.arg("serve")
        .env("DISCORD_TOKEN", "t")
        .env("DISCORD_API_URL", format!("http://127.0.0.1:{fake_port}"))
        .env("POD_ORDINAL", ordinal.to_string())
        .env("NUM_GATEWAY_PODS", pods.to_string())
        .env(
            "DATABASE_URL",
            dir.join(format!("gateway-{ordinal}.sqlite3")),
        )
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("gateway-{ordinal}.log"))).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Proc(cmd.spawn().expect("starting a pod")), port)
}

fn identifies(fake_port: u16) -> Value {
    get_json(fake_port, "/fake/identifies").expect("the fake's identifies")
}

fn accepted_at(fake_port: u16) -> Vec<u64> {
    identifies(fake_port)["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["accepted"] == true)
        .map(|a| a["at_ms"].as_u64().unwrap())
        .collect()
}

#[test]
fn an_unsharded_session_over_2500_guilds_ends_the_pod_naming_discord_shards() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("big.ndjson");
    guild_gateway_dev::synthetic::write_file(&stream, 2600, 100).unwrap();
    let (_fake, fake_port) = fake(&stream, &[]);
    let (mut pod, _) = serve(dir.path(), fake_port, 0, 1, &[]);
    let status = wait_exit(&mut pod.0, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path().join("gateway-0.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("4011") && last.contains("DISCORD_SHARDS"),
        "{last}"
    );
    assert!(last.contains("Discord recommends 3"), "{last}");
    // One identify, not a loop.
    assert_eq!(
        identifies(fake_port)["attempts"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn three_pods_started_together_respect_identify_buckets_and_all_get_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = fake(&sample_stream(), &["--max-concurrency", "1"]);
    let pods: Vec<(Proc, u16)> = (0..3)
        .map(|k| serve(dir.path(), fake_port, k, 3, &[]))
        .collect();
    for (k, (_, port)) in pods.iter().enumerate() {
        let ready = wait_for(Duration::from_secs(60), || {
            (http_get(*port, "/readyz").ok()?.0 == 200).then_some(())
        });
        assert!(ready.is_some(), "pod {k} not ready within 60 s");
    }
    let seen = identifies(fake_port);
    assert_eq!(seen["identify_violations"], 0, "{seen}");
    let mut at = accepted_at(fake_port);
    at.sort();
    assert_eq!(at.len(), 3, "{seen}");
    for pair in at.windows(2) {
        assert!(
            pair[1] - pair[0] >= 5_000,
            "two identifies in one bucket within 5 s: {at:?}"
        );
    }
}

#[test]
fn a_low_budget_keeps_the_pod_unready_until_discord_resets_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = fake(
        &sample_stream(),
        &[
            "--session-start-limit",
            "100",
            "--session-starts-remaining",
            "3",
            "--session-start-reset-ms",
            "8000",
        ],
    );
    let (_pod, port) = serve(
        dir.path(),
        fake_port,
        0,
        1,
        &[("SESSION_START_RESERVE", "10")],
    );
    let waiting = wait_for(Duration::from_secs(30), || {
        let page = http_get(port, "/metrics").ok()?.1;
        (metric(&page, "guild_gateway_session_starts_remaining") == 3.0).then_some(page)
    })
    .expect("the pod exports the budget");
    let (code, why) = http_get(port, "/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(why.contains("SESSION_START_RESERVE"), "{why}");
    assert_eq!(
        identifies(fake_port)["identifies"],
        0,
        "it must not identify"
    );
    assert_promtool_accepts(&waiting);
    // After the reset (8 s after the fake started) the budget is 100: it identifies.
    let ready = wait_for(Duration::from_secs(40), || {
        (http_get(port, "/readyz").ok()?.0 == 200).then_some(())
    });
    assert!(ready.is_some(), "not ready after the reset");
    assert_eq!(identifies(fake_port)["identifies"], 1);
    let log = std::fs::read_to_string(dir.path().join("gateway-0.log")).unwrap();
    assert_eq!(
        log.matches("SESSION_START_RESERVE").count(),
        1,
        "said once: {log}"
    );
}

#[test]
fn a_crash_looping_pod_identifies_at_most_once_per_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = fake(&sample_stream(), &[]);
    let backoff = 4u64;
    let env = [("IDENTIFY_BACKOFF_SECS", "4")];
    let started = Instant::now();
    for round in 0..4 {
        let (mut pod, port) = serve(dir.path(), fake_port, 0, 1, &env);
        let want = round + 1;
        let identified = wait_for(Duration::from_secs(60), || {
            (identifies(fake_port)["identifies"].as_u64() == Some(want)).then_some(())
        });
        assert!(
            identified.is_some(),
            "round {round}: no identify within 60 s"
        );
        let _ = port;
        // Killed as soon as it has identified: a crash loop.
        Command::new("kill")
            .args(["-KILL", &pod.0.id().to_string()])
            .status()
            .unwrap();
        let _ = pod.0.wait();
    }
    let at = accepted_at(fake_port);
    assert_eq!(at.len(), 4, "{at:?}");
    // Quick restarts wait base, 2 x base, 4 x base since the previous start.
    for (i, pair) in at.windows(2).enumerate() {
        let floor = backoff * 1000 * (1 << i) - 500;
        assert!(
            pair[1] - pair[0] >= floor,
            "restart {}: identifies {} ms apart, backoff {floor} ms: {at:?}",
            i + 1,
            pair[1] - pair[0]
        );
    }
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn fatal_close_codes_end_the_pod_and_the_others_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = fake(&sample_stream(), &[]);
    let (mut pod, port) = serve(dir.path(), fake_port, 0, 1, &[]);
    let session = |port: u16| -> Option<String> {
        let s = get_json(port, "/status")?;
        (s["gateway_ready"] == true)
            .then(|| s["session_id"].as_str().map(str::to_owned))
            .flatten()
    };
    // The fake closes a session that has a connection attached (409 while it reconnects).
    let close = |code: u16| {
        let closed = wait_for(Duration::from_secs(60), || {
            let id = session(port)?;
            let path = format!("/fake/sessions/{id}/close/{code}");
            (http_request(fake_port, "POST", &path, &[], "").ok()?.0 == 200).then_some(())
        });
        assert!(closed.is_some(), "could not close the session with {code}");
    };
    // 4008 and 4009: counted, and the pod is back (resumed or re-identified after a pause).
    for code in [4008, 4009] {
        close(code);
        let counted = wait_for(Duration::from_secs(30), || {
            let page = http_get(port, "/metrics").ok()?.1;
            (metric(
                &page,
                &format!("guild_gateway_gateway_closes_total{{code=\"{code}\"}}"),
            ) == 1.0)
                .then_some(())
        });
        assert!(counted.is_some(), "close {code} not counted");
        let back = wait_for(Duration::from_secs(60), || {
            (http_get(port, "/readyz").ok()?.0 == 200).then_some(())
        });
        assert!(back.is_some(), "not ready again after {code}");
    }
    // 4012: fatal, with the table's message, and no reconnect loop.
    let before = identifies(fake_port)["identifies"].as_u64().unwrap();
    close(4012);
    let status = wait_exit(&mut pod.0, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(dir.path().join("gateway-0.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("4012") && last.contains("API version"),
        "{last}"
    );
    // No loop: serenity may have sent one identify on its own before the pod stopped it.
    let after = identifies(fake_port)["identifies"].as_u64().unwrap();
    assert!(
        after <= before + 1,
        "{before} identifies before 4012, {after} after"
    );
}
