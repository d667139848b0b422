//! Live pods: real serenity against `guild-gateway-dev fake-discord`, all on 127.0.0.1.

use guild_gateway_dev::testing::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

const TOKEN: &str = "live-test-token";

fn start_fake(extra: &[&str]) -> (Proc, u16) {
    start_fake_discord(TOKEN, extra)
}

struct LivePod {
    proc: Proc,
    port: u16,
    db: PathBuf,
}

fn start_pod(
    dir: &std::path::Path,
    fake_port: u16,
    ordinal: u32,
    pods: u32,
    strategy: &str,
    token: &str,
) -> LivePod {
    let port = free_port();
    let db = dir.join(format!("gateway-{ordinal}.sqlite3"));
    let proc = Proc(
        serving_pod(&db, port, fake_port, token)
            .env("POD_ORDINAL", ordinal.to_string())
            .env("NUM_GATEWAY_PODS", pods.to_string())
            .env("SHARD_STRATEGY", strategy)
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting serve"),
    );
    LivePod { proc, port, db }
}

/// Waits until every pod has committed everything its session was sent; returns the sessions.
/// Fails when the pods stop making progress for 30 s (a slow runner only makes this slower).
fn wait_all_committed(pods: &[LivePod], fake_port: u16) -> Vec<Value> {
    let mut seen = Vec::new();
    let done = wait_progressing(Duration::from_secs(30), Duration::from_secs(600), || {
        let sessions = get_json(fake_port, "/fake/sessions").ok_or(None)?;
        let sessions = sessions.as_array().ok_or(None)?.clone();
        seen = vec![Value::Array(sessions.clone())];
        let mut all_committed = true;
        for pod in pods {
            let status = get_json(pod.port, "/status").ok_or(None)?;
            let session = sessions
                .iter()
                .find(|s| s["session_id"] == status["session_id"]);
            all_committed &= session.is_some_and(|s| {
                s["done"] == true
                    && status["last_seq_committed"] == s["last_seq_sent"]
                    && status["in_flight"] == 0
            });
            seen.push(status);
        }
        if all_committed {
            return Ok(sessions);
        }
        let progress: Vec<Value> = seen
            .iter()
            .skip(1)
            .map(|s| s["last_seq_committed"].clone())
            .chain(sessions.iter().map(|s| s["last_seq_sent"].clone()))
            .collect();
        Err(Some(progress))
    });
    done.unwrap_or_else(|| panic!("every pod commits what it was sent; last seen: {seen:?}"))
}

fn stop_all(pods: &mut [LivePod]) {
    for pod in pods.iter() {
        sigterm(&pod.proc.0);
    }
    for pod in pods.iter_mut() {
        let status = wait_exit(&mut pod.proc.0, Duration::from_secs(30));
        assert!(status.success(), "a pod exited with {status} on SIGTERM");
    }
}

fn three_pods(strategy: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = start_fake(&[]);
    let mut pods: Vec<LivePod> = (0..3)
        .map(|k| start_pod(dir.path(), fake_port, k, 3, strategy, TOKEN))
        .collect();
    let sessions = wait_all_committed(&pods, fake_port);
    assert_eq!(sessions.len(), 3, "one session per pod: {sessions:?}");

    let lines = sample_lines();
    let total = lines.len() as f64;
    let dms = lines
        .iter()
        .filter(|l| l["t"] == "MESSAGE_CREATE" && dispatch_guild(l).is_none())
        .count() as f64;
    let guild_ids: Vec<String> = lines
        .iter()
        .filter_map(dispatch_guild)
        .map(|g| g.to_string())
        .collect();
    let owner = owners(&guild_ids, 3, strategy);
    for (k, pod) in pods.iter().enumerate() {
        let (_, page) = http_get(pod.port, "/metrics").unwrap();
        let owned_lines: Vec<&Value> = lines
            .iter()
            .filter(|l| match dispatch_guild(l) {
                Some(g) => owner[&g.to_string()] == k as u32,
                None => k == 0,
            })
            .collect();
        let received = metric_total(&page, "guild_gateway_events_received_total");
        let foreign = metric_total(&page, "guild_gateway_events_foreign_total");
        // Each session starts with READY, counted as received and owned by every pod.
        let owned_messages = owned_lines
            .iter()
            .filter(|l| l["t"] == "MESSAGE_CREATE")
            .count() as f64;
        assert_eq!(
            metric(
                &page,
                "guild_gateway_events_owned_total{type=\"MESSAGE_CREATE\"}"
            ),
            owned_messages,
            "pod {k}: owned MESSAGE_CREATE (DMs on pod 0 only)"
        );
        if strategy == "discord" {
            // Discord (here the fake) routed to this pod only its own guilds' events.
            assert_eq!(
                received,
                owned_lines.len() as f64 + 1.0,
                "pod {k} received {received}"
            );
            assert_eq!(foreign, 0.0, "pod {k} received foreign events");
        } else {
            assert_eq!(
                received,
                total + 1.0,
                "pod {k}: md5 pods receive everything"
            );
            assert_eq!(
                foreign,
                total - owned_lines.len() as f64,
                "pod {k}: foreign events"
            );
        }
        assert_eq!(metric(&page, "guild_gateway_gateway_connected"), 1.0);
        assert_eq!(http_get(pod.port, "/readyz").unwrap().0, 200);
    }
    assert!(dms > 0.0);
    stop_all(&mut pods);
    let dbs: Vec<PathBuf> = pods.iter().map(|p| p.db.clone()).collect();
    assert_expected_rows(&dbs, strategy);
}

#[test]
fn three_live_pods_md5() {
    three_pods("md5");
}

#[test]
fn three_live_pods_discord_receive_only_their_guilds() {
    three_pods("discord");
}

#[test]
fn a_dropped_session_resumes_and_the_rows_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = start_fake(&["--drop-at-seq", "200"]);
    let mut pods = vec![start_pod(dir.path(), fake_port, 0, 1, "md5", TOKEN)];
    let sessions = wait_all_committed(&pods, fake_port);
    assert_eq!(
        sessions.len(),
        1,
        "resumed, not re-identified: {sessions:?}"
    );
    assert_eq!(
        sessions[0]["connections"], 2,
        "the session was dropped once and resumed"
    );
    let (_, page) = http_get(pods[0].port, "/metrics").unwrap();
    assert_eq!(metric(&page, "guild_gateway_gateway_resumes_total"), 1.0);
    stop_all(&mut pods);
    assert_expected_rows(&[pods[0].db.clone()], "md5");
}

#[test]
fn a_wrong_token_stops_the_pod_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = start_fake(&[]);
    let mut pod = start_pod(dir.path(), fake_port, 0, 1, "md5", "not-the-token");
    let status = wait_exit(&mut pod.proc.0, Duration::from_secs(30));
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(pod.proc.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("Discord rejected the token (DISCORD_TOKEN)"),
        "{stderr}"
    );

    // No token at all: refused before anything starts.
    let out = gateway()
        .arg("serve")
        .env("DATABASE_URL", dir.path().join("x.sqlite3"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DISCORD_TOKEN"), "{stderr}");
    assert!(!dir.path().join("x.sqlite3").exists());
}

#[test]
fn disallowed_intents_stop_the_pod_instead_of_looping() {
    let dir = tempfile::tempdir().unwrap();
    // Guilds only (1): the pod asks for message content and more.
    let (_fake, fake_port) = start_fake(&["--allowed-intents", "1"]);
    let mut pod = start_pod(dir.path(), fake_port, 0, 1, "md5", TOKEN);
    let status = wait_exit(&mut pod.proc.0, Duration::from_secs(30));
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(pod.proc.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("Discord rejected the gateway intents"),
        "{stderr}"
    );
}

#[test]
fn live_metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = start_fake(&[]);
    let mut pods = vec![start_pod(dir.path(), fake_port, 0, 1, "md5", TOKEN)];
    wait_all_committed(&pods, fake_port);
    let (_, page) = http_get(pods[0].port, "/metrics").unwrap();
    assert!(page.contains("guild_gateway_gateway_heartbeat_latency_seconds"));
    assert!(page.contains("guild_gateway_gateway_events_total{type=\"MESSAGE_CREATE\"} 300"));
    assert_promtool_accepts(&page);
    stop_all(&mut pods);
}

/// Peak resident memory of a process (Linux: VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

#[test]
fn a_slow_pipeline_holds_the_connection_back_with_bounded_memory_and_loses_nothing() {
    require_test_hooks();
    // 4,000 messages of 16 KiB: 64 MiB of content. An unbounded queue between serenity and the
    // pipeline would hold most of it (twice: serenity's event and ours) while the slowed
    // pipeline crawls. The bound: the process itself (~50 MiB in a debug build), the writer's
    // SQLite page cache (32 MiB, filled by the cached contents), and the bounded queues
    // (EVENT_QUEUE + MAX_IN_FLIGHT events, about 8 MiB here, twice: raw and parsed).
    const MESSAGES: u64 = 4_000;
    const RSS_BOUND: u64 = 120 << 20;
    let dir = tempfile::tempdir().unwrap();
    let lines = sample_lines();
    let template = lines
        .iter()
        .find(|l| l["t"] == "MESSAGE_CREATE" && dispatch_guild(l).is_some())
        .unwrap()
        .clone();
    let content = "moderation ".repeat(16 * 1024 / 11);
    let mut stream = String::new();
    for l in lines.iter().filter(|l| l["t"] == "GUILD_CREATE") {
        stream.push_str(&l.to_string());
        stream.push('\n');
    }
    for i in 0..MESSAGES {
        let mut m = template.clone();
        m["d"]["id"] = Value::String((1_300_000_000_000_000_000 + i).to_string());
        m["d"]["content"] = Value::String(content.clone());
        stream.push_str(&m.to_string());
        stream.push('\n');
    }
    let events = dir.path().join("big.ndjson");
    std::fs::write(&events, stream).unwrap();
    let (_fake, fake_port) = start_fake_discord_on(TOKEN, &events, &[]);

    let port = free_port();
    let db = dir.path().join("gateway-0.sqlite3");
    let mut pod = LivePod {
        proc: Proc(
            serving_pod(&db, port, fake_port, TOKEN)
                .env("TEST_EVENT_DELAY_MS", "1")
                .env("MAX_IN_FLIGHT", "256")
                .spawn()
                .unwrap(),
        ),
        port,
        db,
    };
    let sessions = wait_all_committed(std::slice::from_ref(&pod), fake_port);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (_, page) = http_get(port, "/metrics").unwrap();
    assert!(
        metric(&page, "guild_gateway_gateway_backpressure_waits_total") > 0.0,
        "the pipeline was never full: the test did not slow it enough"
    );
    assert_eq!(metric(&page, "guild_gateway_events_shed_total"), 0.0);
    let peak = peak_rss(pod.proc.0.id());
    assert!(peak < RSS_BOUND, "peak RSS {} MiB", peak >> 20);
    stop_all(std::slice::from_mut(&mut pod));
    let stored: i64 = open(&pod.db)
        .query_row(
            "SELECT COUNT(*) FROM message_stats WHERE message_id LIKE '13%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, MESSAGES as i64);
    eprintln!("peak RSS {} MiB", peak >> 20);
}

#[test]
fn a_full_disk_makes_serve_unready_and_it_commits_everything_once_space_is_back() {
    let disk = Tmpfs::mount("8m");
    let (_fake, fake_port) = start_fake(&["--rate", "100"]);
    let mut pod = start_pod(disk.path(), fake_port, 0, 1, "md5", TOKEN);
    wait_for(Duration::from_secs(30), || {
        let status = get_json(pod.port, "/status")?;
        (status["events_done"].as_u64()? >= 50).then_some(())
    })
    .expect("the pod commits its first events");
    let ballast = disk.fill();

    let fault = wait_for(Duration::from_secs(30), || {
        let status = get_json(pod.port, "/status")?;
        let error = status["storage_error"].as_str()?.to_owned();
        Some((error, status))
    })
    .expect("the pod reports the full disk");
    assert!(fault.0.contains("full"), "{fault:?}");
    let (code, body) = http_get(pod.port, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("database not writable"), "{body}");
    // Nothing is reported committed while commits fail.
    let stalled = fault.1["last_seq_committed"].clone();
    std::thread::sleep(Duration::from_secs(1));
    let status = get_json(pod.port, "/status").unwrap();
    assert_eq!(status["last_seq_committed"], stalled);
    assert!(status["in_flight"].as_u64().unwrap() > 0);

    std::fs::remove_file(ballast).unwrap();
    wait_all_committed(std::slice::from_ref(&pod), fake_port);
    let status = get_json(pod.port, "/status").unwrap();
    assert_eq!(status["storage_error"], Value::Null);
    assert_eq!(status["events_shed"], 0);
    assert_eq!(http_get(pod.port, "/readyz").unwrap().0, 200);
    stop_all(std::slice::from_mut(&mut pod));
    assert_expected_rows(&[pod.db.clone()], "md5");
}
