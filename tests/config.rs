//! Bad configuration ends the program before it touches anything: non-zero exit, one line on
//! stderr naming the variable and the value, no database file.

use guild_gateway_dev::testing::*;

fn assert_rejected(env: &[(&str, &str)], variable: &str, value: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub/gateway.sqlite3");
    let mut cmd = gateway();
    cmd.arg("replay")
        .arg(sample_stream())
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{env:?} was accepted");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{env:?}: expected one line, got:\n{stderr}"
    );
    assert!(
        stderr.contains(variable) && stderr.contains(value),
        "{env:?}: {stderr}"
    );
    assert!(
        !db.exists() && !db.parent().unwrap().exists(),
        "{env:?}: the database was touched"
    );
}

#[test]
fn bad_pod_counts() {
    assert_rejected(&[("NUM_GATEWAY_PODS", "0")], "NUM_GATEWAY_PODS", "\"0\"");
    assert_rejected(&[("NUM_GATEWAY_PODS", "-2")], "NUM_GATEWAY_PODS", "\"-2\"");
    assert_rejected(
        &[("NUM_GATEWAY_PODS", "three")],
        "NUM_GATEWAY_PODS",
        "\"three\"",
    );
}

#[test]
fn bad_ordinals() {
    assert_rejected(&[("POD_ORDINAL", "-1")], "POD_ORDINAL", "\"-1\"");
    assert_rejected(&[("POD_ORDINAL", "1.5")], "POD_ORDINAL", "\"1.5\"");
}

#[test]
fn bad_strategy_format_and_address() {
    assert_rejected(
        &[("SHARD_STRATEGY", "crc32")],
        "SHARD_STRATEGY",
        "\"crc32\"",
    );
    assert_rejected(&[("LOG_FORMAT", "xml")], "LOG_FORMAT", "\"xml\"");
    assert_rejected(&[("HTTP_ADDR", "localhost")], "HTTP_ADDR", "\"localhost\"");
    assert_rejected(
        &[("GUILD_MAILBOX_CAPACITY", "0")],
        "GUILD_MAILBOX_CAPACITY",
        "\"0\"",
    );
}

#[test]
fn flags_mirror_the_variables() {
    let out = gateway().args(["replay", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, var) in [
        ("--pod-ordinal", "POD_ORDINAL"),
        ("--num-gateway-pods", "NUM_GATEWAY_PODS"),
        ("--shard-strategy", "SHARD_STRATEGY"),
        ("--database-url", "DATABASE_URL"),
        ("--http-addr", "HTTP_ADDR"),
        ("--log-format", "LOG_FORMAT"),
    ] {
        assert!(
            help.contains(flag) && help.contains(&format!("env: {var}")),
            "--help lacks {flag} / {var}:\n{help}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let out = gateway()
        .args(["replay", "--num-gateway-pods", "0", "--database-url"])
        .arg(&db)
        .arg(sample_stream())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NUM_GATEWAY_PODS=\"0\""));
    assert!(!db.exists());
}

#[test]
fn hostname_gives_the_ordinal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let port = free_port();
    let mut cmd = lingering_replay(&db, port);
    cmd.env("HOSTNAME", "gateway-2")
        .env("NUM_GATEWAY_PODS", "3");
    let mut pod = start_replay_pod(cmd, port);
    // Wait for the whole stream: a replay stopped early by the signal exits non-zero.
    let events = std::fs::read_to_string(sample_stream())
        .unwrap()
        .lines()
        .count();
    let status = wait_replayed(port, events as u64);
    sigterm(&pod.0);
    let exit = wait_exit(&mut pod.0, std::time::Duration::from_secs(30));
    assert_eq!(status["pod_ordinal"], 2);
    assert_eq!(status["num_pods"], 3);
    assert!(exit.success());
}

#[test]
fn bad_shard_counts() {
    assert_rejected(&[("DISCORD_SHARDS", "0")], "DISCORD_SHARDS", "\"0\"");
    assert_rejected(&[("DISCORD_SHARDS", "many")], "DISCORD_SHARDS", "\"many\"");
    // With discord the shard count moves guilds: it must be a number, one shard per pod at least.
    assert_rejected(
        &[("SHARD_STRATEGY", "discord"), ("DISCORD_SHARDS", "auto")],
        "DISCORD_SHARDS",
        "\"auto\"",
    );
    assert_rejected(
        &[
            ("SHARD_STRATEGY", "discord"),
            ("NUM_GATEWAY_PODS", "3"),
            ("POD_ORDINAL", "0"),
            ("DISCORD_SHARDS", "2"),
        ],
        "DISCORD_SHARDS",
        "\"2\"",
    );
}
