//! Live pods: real serenity against `guild-gateway fake-discord`, all on 127.0.0.1.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
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
        gateway()
            .arg("serve")
            .env("POD_ORDINAL", ordinal.to_string())
            .env("NUM_GATEWAY_PODS", pods.to_string())
            .env("SHARD_STRATEGY", strategy)
            .env("DATABASE_URL", &db)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("DISCORD_TOKEN", token)
            .env("DISCORD_API_URL", format!("http://127.0.0.1:{fake_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting serve"),
    );
    LivePod { proc, port, db }
}

fn json(port: u16, path: &str) -> Option<Value> {
    let (code, body) = http_get(port, path).ok()?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// Waits until every pod has committed everything its session was sent; returns the sessions.
fn wait_all_committed(pods: &[LivePod], fake_port: u16) -> Vec<Value> {
    wait_for(Duration::from_secs(60), || {
        let sessions = json(fake_port, "/fake/sessions")?;
        let sessions = sessions.as_array()?.clone();
        for pod in pods {
            let status = json(pod.port, "/status")?;
            let session = sessions
                .iter()
                .find(|s| s["session_id"] == status["session_id"])?;
            let committed = session["done"] == true
                && status["last_seq_committed"] == session["last_seq_sent"]
                && status["in_flight"] == 0;
            if !committed {
                return None;
            }
        }
        Some(sessions)
    })
    .expect("every pod commits what it was sent")
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

#[test]
fn simulate_fails_naming_a_pod_killed_with_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // A paced synthetic stream, so the run is still going when the pod is killed.
    let mut sim = Proc(
        gateway()
            .args([
                "simulate",
                "--pods",
                "3",
                "--guilds",
                "30",
                "--messages",
                "20000",
                "--rate",
                "1000",
                "--data-dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = sim.0.stdout.take().unwrap();
    let mut pid = None;
    let mut http = None;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    for line in lines.by_ref().take(10) {
        let line = line.unwrap();
        // "pod 1: pid N, http://127.0.0.1:P, ..."
        if let Some(rest) = line.strip_prefix("pod 1: pid ") {
            let (p, rest) = rest.split_once(',').unwrap();
            pid = Some(p.to_owned());
            let port = rest
                .split("127.0.0.1:")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            http = Some(port.parse::<u16>().unwrap());
            break;
        }
    }
    let (pid, http) = (pid.expect("simulate names pod 1's pid"), http.unwrap());
    // Keep reading its output so it never writes to a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    // Kill it once it is connected and working.
    wait_for(Duration::from_secs(30), || {
        json(http, "/status").filter(|s| s["events_done"].as_u64() > Some(10))
    })
    .expect("pod 1 processes events");
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut sim.0, Duration::from_secs(60));
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(sim.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains(&format!("pod 1 (pid {pid}) died")),
        "{stderr}"
    );
}

/// The fake answers misbehaving clients with Discord's close codes.
#[tokio::test(flavor = "current_thread")]
async fn fake_discord_closes_bad_clients_with_discords_codes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_fake, port) = start_fake(&[]);
    let url = format!("ws://127.0.0.1:{port}/?v=10&encoding=json");
    let cases: [(&str, u16); 5] = [
        ("not json", 4002),
        (r#"{"op":3,"d":{}}"#, 4003),
        (r#"{"op":2,"d":{"token":"wrong","intents":1}}"#, 4004),
        (
            r#"{"op":2,"d":{"token":"live-test-token","intents":1,"shard":[3,3]}}"#,
            4010,
        ),
        (r#"{"op":99,"d":null}"#, 4003),
    ];
    for (frame, code) in cases {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connects");
        let hello = ws.next().await.expect("hello").expect("a frame");
        assert!(hello.to_text().unwrap().contains(r#""op":10"#), "{hello:?}");
        ws.send(Message::Text(frame.into())).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Close(Some(close)) = msg {
                    return Some(u16::from(close.code));
                }
            }
            None
        })
        .await
        .expect("closed within 10 s");
        assert_eq!(closed, Some(code), "{frame}");
    }
    // Heartbeats are answered, and a wrong token on REST is a 401.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Message::Text(r#"{"op":1,"d":null}"#.into()))
        .await
        .unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains(r#""op":11"#));
    let response = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET /api/v10/gateway HTTP/1.0\r\nAuthorization: Bot wrong\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
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
    // 8,000 messages of 8 KiB: 64 MiB of content. An unbounded queue between serenity and the
    // pipeline would hold most of it (twice: serenity's event and ours) while the slowed
    // pipeline crawls. The bound: the process itself (~50 MiB in a debug build), the writer's
    // SQLite page cache (32 MiB, filled by the cached contents), and the bounded queues
    // (EVENT_QUEUE + MAX_IN_FLIGHT events, about 4 MiB here).
    const MESSAGES: u64 = 8_000;
    const RSS_BOUND: u64 = 112 << 20;
    let dir = tempfile::tempdir().unwrap();
    let lines = sample_lines();
    let template = lines
        .iter()
        .find(|l| l["t"] == "MESSAGE_CREATE" && dispatch_guild(l).is_some())
        .unwrap()
        .clone();
    let content = "moderation ".repeat(8 * 1024 / 11);
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
            gateway()
                .arg("serve")
                .env("DATABASE_URL", &db)
                .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env("DISCORD_TOKEN", TOKEN)
                .env("DISCORD_API_URL", format!("http://127.0.0.1:{fake_port}"))
                .env("TEST_EVENT_DELAY_MS", "1")
                .env("MAX_IN_FLIGHT", "256")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
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
        let status = json(pod.port, "/status")?;
        (status["events_done"].as_u64()? >= 50).then_some(())
    })
    .expect("the pod commits its first events");
    let ballast = disk.fill();

    let fault = wait_for(Duration::from_secs(30), || {
        let status = json(pod.port, "/status")?;
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
    let status = json(pod.port, "/status").unwrap();
    assert_eq!(status["last_seq_committed"], stalled);
    assert!(status["in_flight"].as_u64().unwrap() > 0);

    std::fs::remove_file(ballast).unwrap();
    wait_all_committed(std::slice::from_ref(&pod), fake_port);
    let status = json(pod.port, "/status").unwrap();
    assert_eq!(status["storage_error"], Value::Null);
    assert_eq!(status["events_shed"], 0);
    assert_eq!(http_get(pod.port, "/readyz").unwrap().0, 200);
    stop_all(std::slice::from_mut(&mut pod));
    assert_expected_rows(&[pod.db.clone()], "md5");
}

#[test]
fn simulate_fails_when_a_pod_sheds_unless_allowed() {
    // Every event takes 1.5 s and a guild is stuck after 1 s without progress: each guild's
    // queued events are dropped, counted, and simulate must say so.
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        gateway()
            .args(["simulate", "--pods", "1", "--events"])
            .arg(sample_stream())
            .arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .env("TEST_EVENT_DELAY_MS", "1500")
            .env("GUILD_STUCK_SECS", "1")
            .env("GUILD_MAILBOX_CAPACITY", "1")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("error: events were lost"), "{stderr}");
    assert!(stdout.contains("events were dropped (shed)"), "{stdout}");
    let allowed = run(&["--allow-shed"]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
}
