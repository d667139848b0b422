//! `guild-gateway coverage`: every guild has exactly one owner, or the command says which pod
//! breaks it.

use guild_gateway_dev::testing::*;

/// Pods replaying the sample on consecutive ports, pod k with NUM_GATEWAY_PODS `counts[k]`.
fn pods(dir: &std::path::Path, counts: &[u32]) -> (Vec<Proc>, String) {
    let base = free_port_block(counts.len() as u16);
    let template = format!("http://127.0.0.1:{{ordinal+{base}}}");
    let procs = counts
        .iter()
        .enumerate()
        .map(|(k, n)| {
            let port = base + k as u16;
            let mut cmd = lingering_replay(&dir.join(format!("pod{k}.sqlite3")), port);
            cmd.env("NUM_GATEWAY_PODS", n.to_string())
                .env("POD_ORDINAL", k.to_string())
                .env("SHARD_STRATEGY", "discord");
            start_replay_pod(cmd, port)
        })
        .collect();
    (procs, template)
}

fn coverage(pods: u32, template: &str) -> (bool, String) {
    let out = gateway()
        .args([
            "coverage",
            "--pods",
            &pods.to_string(),
            "--pod-url-template",
            template,
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn agreeing_pods_cover_every_guild_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_pods, template) = pods(dir.path(), &[3, 3, 3]);
    let (ok, text) = coverage(3, &template);
    assert!(ok, "{text}");
    assert!(text.contains("every guild has exactly one owner"), "{text}");
}

#[test]
fn a_stale_pod_count_or_a_missing_pod_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    // Pod 2 started on a fresh volume with another count: it shards for 4 pods.
    let (mut pods, template) = pods(dir.path(), &[3, 3, 4]);
    let (ok, text) = coverage(3, &template);
    assert!(!ok, "{text}");
    assert!(text.contains("pod 2 shards for 4 pods"), "{text}");
    // And a pod that is gone leaves its guilds without an owner.
    pods.truncate(2);
    let (ok, text) = coverage(3, &template);
    assert!(!ok, "{text}");
    assert!(text.contains("pod 2 does not answer"), "{text}");
}
