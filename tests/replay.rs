//! `replay` of the sample stream end to end: real binary, real SQLite files.

use guild_gateway_dev::testing::*;

/// Replays the sample into every pod of an N-pod deployment and checks: the union of the pods'
/// rows is exactly the expected rows; each guild's rows are in its owner's database only; a
/// second replay changes nothing.
fn sample_into_pods(pods: u32, strategy: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let dbs: Vec<_> = (0..pods)
        .map(|k| dir.path().join(format!("pod-{k}/gateway.sqlite3")))
        .collect();
    for (k, db) in dbs.iter().enumerate() {
        replay(db, k as u32, pods, strategy, &sample_stream());
    }
    assert_expected_rows(&dbs, strategy);

    let before: Vec<_> = dbs.iter().map(|db| all_rows(db)).collect();
    for (k, db) in dbs.iter().enumerate() {
        replay(db, k as u32, pods, strategy, &sample_stream());
    }
    let after: Vec<_> = dbs.iter().map(|db| all_rows(db)).collect();
    assert_eq!(
        before, after,
        "a second replay changed rows ({pods} pods, {strategy})"
    );
}

#[test]
fn sample_into_1_pod() {
    sample_into_pods(1, "md5");
}

#[test]
fn sample_into_2_pods() {
    sample_into_pods(2, "md5");
}

#[test]
fn sample_into_3_pods() {
    sample_into_pods(3, "md5");
}

#[test]
fn sample_into_5_pods() {
    sample_into_pods(5, "md5");
}

#[test]
fn sample_into_3_pods_discord_strategy() {
    sample_into_pods(3, "discord");
}

#[test]
fn guilds_spread_over_pods() {
    // Guard against a vacuous ownership check: with 3 pods, more than one pod owns guilds.
    let expected = expected();
    let ids: Vec<String> = expected["guilds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_owned())
        .collect();
    let owners = owners(&ids, 3, "md5");
    let distinct: std::collections::BTreeSet<_> = owners.values().collect();
    assert!(
        distinct.len() > 1,
        "all sample guilds on one pod: {owners:?}"
    );
}

#[test]
fn malformed_lines_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let stream = std::fs::read_to_string(sample_stream()).unwrap();
    let mut lines: Vec<&str> = stream.lines().collect();
    lines.insert(1, "{not json");
    lines.insert(
        3,
        r#"{"op":0,"t":"MESSAGE_CREATE","s":9999,"d":{"id":"oops"}}"#,
    );
    let file = dir.path().join("broken.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let out = gateway()
        .arg("replay")
        .arg(&file)
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a malformed line must fail the run");
    assert!(stderr.contains("line 2: not a gateway frame"), "{stderr}");
    assert!(
        stderr.contains("line 4: bad MESSAGE_CREATE payload"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 malformed"), "summary: {stdout}");
    // Everything else was processed.
    let rows = comparable_rows(&db);
    assert_eq!(
        rows["message_stats"].len(),
        expected()["message_stats"].as_array().unwrap().len()
    );
}

#[test]
fn shard_of_prints_one_line_per_id_in_order() {
    let ids: Vec<String> = (0..5000u64)
        .map(|i| (1325263406417087088 + i * 7919).to_string())
        .collect();
    let mut with_odd = ids.clone();
    with_odd.push("not-a-number".into());
    let out = gateway()
        .args(["shard-of", "--any-string", "--pods", "7", "--"])
        .args(&with_odd)
        .output()
        .unwrap();
    let text = assert_success("shard-of", &out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), with_odd.len());
    for (line, id) in lines.iter().zip(&with_odd) {
        let (got_id, ordinal) = line.split_once(' ').unwrap();
        assert_eq!(got_id, id);
        assert!(ordinal.parse::<u32>().unwrap() < 7);
    }
    // discord strategy: (id >> 22) % pods, and a clear error for a non-numeric id.
    let out = gateway()
        .args([
            "shard-of",
            "--pods",
            "3",
            "--strategy",
            "discord",
            "1325263406417087088",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "1325263406417087088 {}\n",
            (1325263406417087088u64 >> 22) % 3
        )
    );
    let out = gateway()
        .args(["shard-of", "--strategy", "discord", "abc"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"abc\" is not a Discord snowflake"));
    // Without --any-string, every id must be a snowflake, with either strategy.
    for bad in [
        "abc",
        "-1",
        "00012",
        "0",
        "18446744073709551616",
        "\u{1F600}",
    ] {
        let out = gateway().args(["shard-of", "--", bad]).output().unwrap();
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("is not a Discord snowflake"),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // pods from NUM_GATEWAY_PODS, ids from stdin.
    let mut child = gateway()
        .args(["shard-of"])
        .env("NUM_GATEWAY_PODS", "16")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"55273423993581201\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    // From shard_vectors.json: 55273423993581201 -> 9 with 16 pods.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "55273423993581201 9\n"
    );
}

#[test]
fn replay_never_sheds_even_with_a_tiny_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let out = gateway()
        .arg("replay")
        .arg(sample_stream())
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("GUILD_MAILBOX_CAPACITY", "1")
        .env("WRITER_MAILBOX_CAPACITY", "1")
        .env("WRITER_MAX_BATCH", "1")
        .output()
        .unwrap();
    assert!(assert_success("replay", &out).contains(" 0 shed"));
    let rows = comparable_rows(&db);
    assert_eq!(
        sorted(rows["message_stats"].clone()),
        sorted(expected()["message_stats"].as_array().unwrap().clone())
    );
}

#[test]
fn invalid_utf8_is_a_malformed_line_and_a_bom_and_escaped_type_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let sample = std::fs::read_to_string(sample_stream()).unwrap();
    let lines: Vec<&str> = sample.lines().collect();
    let middle = lines.len() / 2;
    let mut input = b"\xEF\xBB\xBF".to_vec();
    for (i, line) in lines.iter().enumerate() {
        if i == middle {
            input.extend_from_slice(b"{\"op\":0,\"t\":\"MESSAGE_CREATE\",\"d\":\"\xFF\xFE\"}\n");
        }
        // A JSON escape in the type name is still the same name.
        let line = line.replacen(
            "\"t\":\"MESSAGE_CREATE\"",
            "\"t\":\"MESSAGE\\u005fCREATE\"",
            1,
        );
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
    }
    let stream = dir.path().join("stream.ndjson");
    std::fs::write(&stream, &input).unwrap();
    let out = gateway()
        .arg("replay")
        .arg(&stream)
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The bad line is reported and skipped; everything after it is still read and committed.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("line {}: not UTF-8", middle + 1)),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("{} lines, 1 malformed", lines.len() + 1)),
        "{stdout}"
    );
    assert!(stdout.contains(" 0 not committed"), "{stdout}");
    // Every expected table, the moderation log included.
    assert_expected_rows(std::slice::from_ref(&db), "md5");
}

#[test]
fn a_second_process_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let port = free_port();
    let _first = start_replay_pod(lingering_replay(&db, port), port);
    let out = gateway()
        .arg("replay")
        .arg(sample_stream())
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the database {} is in use by another process",
            db.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_full_disk_stops_the_replay_and_reports_what_is_not_committed() {
    // Room for the schema and some small batches, far from the whole stream (about 10 MB).
    let disk = Tmpfs::mount("3m");
    let scratch = tempfile::tempdir().unwrap();
    let stream = scratch.path().join("synthetic.ndjson");
    guild_gateway_dev::synthetic::write_file(&stream, 50, 20_000).unwrap();
    let db = disk.path().join("gateway.sqlite3");
    let out = gateway()
        .args(["replay", "--give-up-after", "2"])
        .arg(&stream)
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        // Small transactions, so some commit before the disk is full and the check below
        // has committed rows to look for.
        .env("WRITER_MAX_BATCH", "100")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("stopped early: the database has not taken writes"),
        "{stdout}"
    );
    let not_committed: u64 = stdout
        .split(" not committed")
        .next()
        .and_then(|s| s.rsplit(", ").next())
        .and_then(|n| n.parse().ok())
        .expect("the summary counts what is not committed");
    assert!(not_committed > 0, "{stdout}");
    assert!(stderr.contains(&format!(
        "{not_committed} events were accepted and not committed"
    )));
    // The errors are logged at a bounded rate, not once per command.
    let errors = stderr.matches("commit failed").count();
    assert!((1..=5).contains(&errors), "{errors} error lines:\n{stderr}");

    // Nothing reported committed is missing: every message up to the committed seq is stored.
    let committed: u64 = stdout
        .split("last seq ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("the summary gives the committed seq");
    let prefix = scratch.path().join("prefix.ndjson");
    let text = std::fs::read_to_string(&stream).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["s"]
                .as_u64()
                .is_some_and(|s| s <= committed)
        })
        .collect();
    std::fs::write(&prefix, kept.join("\n")).unwrap();
    let truth = scratch.path().join("truth.sqlite3");
    replay(&truth, 0, 1, "md5", &prefix);
    let ids = |conn: &rusqlite::Connection| -> std::collections::BTreeSet<String> {
        let mut stmt = conn
            .prepare("SELECT message_id FROM message_stats")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let stored = ids(&open_copy(&db, scratch.path()));
    // Events after the committed seq may be committed too (guilds run in parallel): a later
    // delete can have removed a reported row legitimately, so deleted messages are left out.
    let deleted: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["t"] == "MESSAGE_DELETE" || v["t"] == "MESSAGE_DELETE_BULK")
        .flat_map(|v| {
            let d = &v["d"];
            let mut ids: Vec<String> = d["ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            ids.extend(d["id"].as_str().map(str::to_owned));
            ids
        })
        .collect();
    let reported: std::collections::BTreeSet<String> =
        ids(&open(&truth)).difference(&deleted).cloned().collect();
    assert!(!reported.is_empty());
    let missing: Vec<_> = reported.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} reported committed, not stored",
        missing.len()
    );
}

#[test]
fn shard_of_into_a_closed_pipe_succeeds() {
    use std::io::{BufRead, Write};
    let mut child = gateway()
        .arg("shard-of")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        // Far more than a pipe buffer holds; errors once the child is gone.
        for id in 0..200_000u64 {
            if writeln!(stdin, "{}", 80_000_000_000_000_000 + id).is_err() {
                break;
            }
        }
    });
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    drop(stdout); // as `| head -1` does
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(first.starts_with("80000000000000000 "), "{first}");
    assert_success("shard-of into a closed pipe", &out);
}

/// An ordinal at or past the pod count (a typo, or a standby pod's) would own nothing: replay
/// refuses it, naming both variables, and writes no database.
#[test]
fn replay_refuses_an_ordinal_past_the_pod_count() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pod.sqlite3");
    let out = gateway()
        .arg("replay")
        .arg(sample_stream())
        .env("POD_ORDINAL", "3")
        .env("NUM_GATEWAY_PODS", "3")
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("POD_ORDINAL=3") && stderr.contains("NUM_GATEWAY_PODS=3"),
        "{stderr}"
    );
    assert!(!db.exists());
}
