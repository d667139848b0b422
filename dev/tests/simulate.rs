//! `guild-gateway-dev simulate`: a local deployment of real `guild-gateway serve` processes
//! against the fake Discord, and how it reports pods that die or lose events.

use guild_gateway_dev::testing::*;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn simulate_fails_naming_a_pod_killed_with_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // A paced synthetic stream, so the run is still going when the pod is killed.
    let mut sim = Proc(
        dev()
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
                "--json",
                "--data-dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = sim.0.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    // --json: a {"pod": {...}} line per started pod.
    let pod1 = lines
        .by_ref()
        .take(10)
        .map(|line| serde_json::from_str::<serde_json::Value>(&line.unwrap()).unwrap())
        .find(|v| v["pod"]["ordinal"] == 1)
        .expect("simulate names pod 1");
    let pid = pod1["pod"]["pid"].to_string();
    let http: u16 = pod1["pod"]["http"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("pod 1's HTTP address");
    // Keep reading its output so it never writes to a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    // Kill it once it is connected and working.
    wait_for(Duration::from_secs(30), || {
        get_json(http, "/status").filter(|s| s["events_done"].as_u64() > Some(10))
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

#[test]
fn simulate_fails_when_a_pod_sheds_unless_allowed() {
    require_test_hooks();
    // Every event takes 1.5 s and a guild is stuck after 1 s without progress: each guild's
    // queued events are dropped, counted, and simulate must say so.
    let run = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        dev()
            .args(["simulate", "--json", "--pods", "1", "--events"])
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
    let summary: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("summary").is_some())
        .expect("a --json summary line");
    let pod = &summary["summary"]["pods"][0];
    assert!(pod["shed"].as_u64() > Some(0), "{summary}");
    assert_eq!(pod["failed"], 0, "{summary}");
    let allowed = run(&["--allow-shed"]);
    assert_success("simulate --allow-shed", &allowed);
}

#[test]
fn simulate_names_a_missing_pod_binary_and_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-guild-gateway");
    let out = dev()
        .args(["simulate", "--pods", "1", "--events"])
        .arg(sample_stream())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--pod-binary")
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("GUILD_GATEWAY_BIN"), "{stderr}");
    // Nothing was generated or started for a run that cannot start.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
