//! A running pod: its HTTP endpoints (metrics linted by promtool) and its SIGTERM drain.

use guild_gateway_dev::testing::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use guild_gateway_dev::testing::Proc as Pod;

/// Facts about the sample stream the assertions below rely on, drawn from the fixture.
struct Sample {
    /// The last dispatch's seq (every line is a dispatch, numbered from 1).
    last_seq: u64,
    events: usize,
    messages_created: usize,
    guilds: usize,
}

fn sample() -> Sample {
    let lines = sample_lines();
    let guilds: std::collections::BTreeSet<u64> = lines.iter().filter_map(dispatch_guild).collect();
    Sample {
        last_seq: lines.iter().filter_map(|l| l["s"].as_u64()).max().unwrap(),
        events: lines.len(),
        messages_created: lines.iter().filter(|l| l["t"] == "MESSAGE_CREATE").count(),
        guilds: guilds.len(),
    }
}

#[test]
fn metrics_pass_promtool_and_probes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pod = Pod(gateway()
        .args(["replay", "--linger"])
        .arg(sample_stream())
        .env("DATABASE_URL", dir.path().join("gateway.sqlite3"))
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let sample = sample();
    let status = wait_for(Duration::from_secs(20), || {
        let (_, body) = http_get(port, "/status").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["last_seq_committed"] == sample.last_seq).then_some(v)
    })
    .expect("the pod commits the whole sample");
    assert_eq!(status["in_flight"], 0);
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);

    let (code, page) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    for name in [
        format!(
            "guild_gateway_events_received_total{{type=\"MESSAGE_CREATE\"}} {}",
            sample.messages_created
        ),
        "guild_gateway_events_owned_total".to_string(),
        "guild_gateway_events_foreign_total".to_string(),
        "guild_gateway_events_skipped_total".to_string(),
        format!("guild_gateway_events_processed_total {}", sample.events),
        "guild_gateway_handler_errors_total 0".to_string(),
        "guild_gateway_events_shed_total 0".to_string(),
        format!("guild_gateway_guild_actors {}", sample.guilds),
        "guild_gateway_guild_mailbox_depth 0".to_string(),
        "guild_gateway_writer_batch_size_bucket".to_string(),
        "guild_gateway_writer_commit_seconds_bucket".to_string(),
        "guild_gateway_database_size_bytes".to_string(),
        "guild_gateway_pod_ordinal 0".to_string(),
        "guild_gateway_pods 1".to_string(),
        "guild_gateway_process_resident_memory_bytes".to_string(),
    ] {
        assert!(page.contains(&name), "/metrics lacks {name}");
    }
    assert_promtool_accepts(&page);

    sigterm(&pod.0);
    assert!(wait_exit(&mut pod.0, Duration::from_secs(30)).success());
}

#[test]
fn sigterm_drains_everything_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let port = free_port();
    let mut pod = Pod(gateway()
        .args(["replay", "-"])
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        // Large batches, so events are still queued when the signal arrives.
        .env("WRITER_MAX_BATCH", "100000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    wait_for(Duration::from_secs(20), || http_get(port, "/healthz").ok()).expect("the pod starts");
    let stream = std::fs::read(sample_stream()).unwrap();
    // Keep stdin open: the pod must stop because of the signal, not end of input.
    let mut stdin = pod.0.stdin.take().unwrap();
    stdin.write_all(&stream).unwrap();
    stdin.flush().unwrap();
    wait_for(Duration::from_secs(20), || {
        let (_, body) = http_get(port, "/status").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["last_seq_received"] == sample().last_seq).then_some(())
    })
    .expect("the pod accepts the whole sample");
    sigterm(&pod.0);
    let exit = wait_exit(&mut pod.0, Duration::from_secs(30));
    let mut stdout = String::new();
    std::io::Read::read_to_string(pod.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    drop(stdin);
    // Stopped before the end of its input: everything accepted is committed, and the exit
    // status says the replay is incomplete.
    assert_eq!(exit.code(), Some(1), "exit after SIGTERM: {exit}");
    assert!(
        stdout.contains("stopped early: interrupted by SIGTERM"),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 not committed"), "{stdout}");

    // Every expected table, the moderation log included.
    assert_expected_rows(std::slice::from_ref(&db), "md5");
}
