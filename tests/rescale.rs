//! Live rescale: ownership is durable, and a change of pod count moves every guild's history
//! to its new owner while traffic flows, through crashes of any party at any step.
//!
//! The traffic comes from fake-discord's live timeline: one clock over the stream, each event
//! sent once to the sessions open when it happens. Crash tests pause that clock while a pod
//! is down, because Discord sends nothing again to a session that did not exist: what they
//! test is the protocol, and a pod's own downtime is another matter (the README says so).

use guild_gateway_dev::testing::*;
use serde_json::Value;
use std::path::Path;
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
