//! Live rescale: ownership is durable, and a change of pod count moves every guild's history
//! to its new owner while traffic flows, through crashes of any party at any step.
//!
//! The traffic comes from fake-discord's live timeline: one clock over the stream, each event
//! sent once to the sessions open when it happens. Crash tests pause that clock while a pod
//! is down, because Discord sends nothing again to a session that did not exist: what they
//! test is the protocol, and a pod's own downtime is another matter (the README says so).

use guild_gateway_dev::testing::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const TOKEN: &str = "rescale-test-api-token";

/// A pod that replays the sample and stays up (`replay --linger`) with `pods` as its setting.
fn lingering_pod(db: &Path, port: u16, pods: u32) -> Proc {
    let pod = Proc(
        gateway()
            .args(["replay", "--linger"])
            .arg(sample_stream())
            .env("NUM_GATEWAY_PODS", pods.to_string())
            .env("POD_ORDINAL", "0")
            .env("DATABASE_URL", db)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("API_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = wait_for(Duration::from_secs(30), || get_json(port, "/status"));
    assert!(up.is_some(), "the pod did not start");
    pod
}

/// A pod restarted with another NUM_GATEWAY_PODS follows the ownership its database committed,
/// and says so in /status and a metric; the owner endpoint answers with that epoch.
#[test]
fn a_stale_pod_count_is_followed_not_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pod0.sqlite3");
    let port = free_port();
    let first = lingering_pod(&db, port, 3);
    sigterm(&first.0);
    drop(first);
    let _second = lingering_pod(&db, port, 4);
    let status = get_json(port, "/status").unwrap();
    assert_eq!(status["num_pods"], 3, "{status}");
    assert_eq!(status["ownership"]["epoch"], 1);
    let stale = status["ownership"]["config_stale"].as_str().unwrap_or("");
    assert!(
        stale.contains("4 pods") && stale.contains("3 pods"),
        "{status}"
    );
    let (_, page) = http_get(port, "/metrics").unwrap();
    assert_eq!(metric(&page, "guild_gateway_config_stale"), 1.0);
    assert_eq!(metric(&page, "guild_gateway_pods"), 3.0);
    assert_eq!(metric(&page, "guild_gateway_ownership_epoch"), 1.0);
    let bearer = format!("Bearer {TOKEN}");
    let (code, owner) = http_request(
        port,
        "GET",
        "/v1/guilds/1325263406417087088/owner",
        &[("Authorization", &bearer)],
        "",
    )
    .unwrap();
    assert_eq!(code, 200, "{owner}");
    let owner: Value = serde_json::from_str(&owner).unwrap();
    assert_eq!(
        (owner["pods"].clone(), owner["epoch"].clone()),
        (3.into(), 1.into())
    );
}

/// The heavy tests below run one at a time: each starts a fake Discord and several pods, and
/// together they would only compete for the machine's cores.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fake Discord's identify window here, and the pods' slot: short, to save the tests' time.
const IDENTIFY_WINDOW_MS: &str = "300";
const IDENTIFY_SLOT_MS: &str = "400";

/// The rows of `stream` replayed into one pod, in the shape `assert_rows_with_shards` takes.
fn one_pod_rows(dir: &Path, stream: &Path) -> Value {
    let db = dir.join("one-pod.sqlite3");
    replay(&db, 0, 1, "md5", stream);
    expected_rows_of(&db)
}

/// Final pods `0..pods` hold exactly the one-pod rows, each guild on its owner; pods past them
/// hold no guild's rows.
fn assert_final_rows(
    dir: &Path,
    stream: &Path,
    dbs: &[PathBuf],
    pods: usize,
    strategy: &str,
    shards: Option<u32>,
) {
    let expected = one_pod_rows(dir, stream);
    assert_rows_with_shards(&dbs[..pods], strategy, shards, &expected);
    for db in &dbs[pods..] {
        for (table, rows) in comparable_rows(db) {
            assert!(rows.is_empty(), "{} still holds {table} rows", db.display());
        }
    }
}

/// A synthetic stream of `guilds` guilds and `messages` messages in `dir`.
fn synthetic_stream(dir: &Path, guilds: u32, messages: u64) -> PathBuf {
    let path = dir.join("stream.ndjson");
    guild_gateway_dev::synthetic::write_file(&path, guilds, messages).unwrap();
    path
}

/// `guild-gateway-dev simulate --json` of `stream` with `args`; its JSON lines, after
/// asserting exit 0 and simulate's own check against a one-pod replay.
fn simulate(dir: &Path, stream: &Path, args: &[&str]) -> Vec<Value> {
    let out = dev()
        .arg("simulate")
        .args(args)
        .arg("--events")
        .arg(stream)
        .args([
            "--identify-window-ms",
            IDENTIFY_WINDOW_MS,
            "--json",
            "--data-dir",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "simulate {args:?} failed:\n{stderr}");
    assert!(
        stderr.contains("hold exactly the one-pod replay's rows"),
        "{stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `rescale` lines of simulate's output; each moved guilds, and none was lost or shed.
fn rescales(lines: &[Value], expected: &[u32]) -> Vec<Value> {
    let rescales: Vec<Value> = lines
        .iter()
        .filter_map(|l| l.get("rescale").cloned())
        .collect();
    let to: Vec<u64> = rescales
        .iter()
        .map(|r| r["to"]["pods"].as_u64().unwrap())
        .collect();
    assert_eq!(
        to,
        expected.iter().map(|&n| u64::from(n)).collect::<Vec<_>>()
    );
    for r in &rescales {
        assert!(r["guilds_moved"].as_u64().unwrap() > 0, "{r}");
        assert!(r["events_captured"].as_u64().unwrap() > 0, "{r}");
    }
    let summary = lines.iter().find_map(|l| l.get("summary")).unwrap();
    for pod in summary["pods"].as_array().unwrap() {
        assert_eq!(
            (pod["shed"].as_u64(), pod["failed"].as_u64()),
            (Some(0), Some(0)),
            "{pod}"
        );
    }
    rescales
}

fn pod_dbs(dir: &Path, pods: u32) -> Vec<PathBuf> {
    (0..pods)
        .map(|k| dir.join(format!("gateway-{k}.sqlite3")))
        .collect()
}

#[test]
fn md5_one_to_three_to_five_to_two_under_live_traffic() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 200, 15_000);
    let lines = simulate(
        dir.path(),
        &stream,
        &["--pods", "1", "--rescale", "3,5,2", "--live-rate", "800"],
    );
    rescales(&lines, &[3, 5, 2]);
    assert_final_rows(dir.path(), &stream, &pod_dbs(dir.path(), 5), 2, "md5", None);
}

#[test]
fn discord_three_to_five_under_live_traffic() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 200, 15_000);
    let lines = simulate(
        dir.path(),
        &stream,
        &[
            "--pods",
            "3",
            "--strategy",
            "discord",
            "--rescale",
            "5",
            "--live-rate",
            "800",
        ],
    );
    let r = &rescales(&lines, &[5])[0];
    // S follows N with discord unless DISCORD_SHARDS says otherwise: 3 -> 5 shards.
    assert_eq!(
        (r["from"]["shards"].as_u64(), r["to"]["shards"].as_u64()),
        (Some(3), Some(5))
    );
    assert_final_rows(
        dir.path(),
        &stream,
        &pod_dbs(dir.path(), 5),
        5,
        "discord",
        Some(5),
    );
}

#[test]
fn md5_to_discord_switch_under_live_traffic() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 200, 15_000);
    let lines = simulate(
        dir.path(),
        &stream,
        &[
            "--pods",
            "3",
            "--rescale",
            "3:discord",
            "--live-rate",
            "800",
        ],
    );
    let r = &rescales(&lines, &[3])[0];
    assert_eq!(
        (r["from"]["strategy"].as_str(), r["to"]["strategy"].as_str()),
        (Some("md5"), Some("discord"))
    );
    assert_final_rows(
        dir.path(),
        &stream,
        &pod_dbs(dir.path(), 3),
        3,
        "discord",
        Some(3),
    );
}
