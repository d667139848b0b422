//! `reshard`: the sample in 3 pods, moved to 2 and to 5, a pod's file from before
//! guild_channels split in 3, and the TypeScript-style single file split in 3, give exactly the
//! rows a direct replay into that many pods gives (the TypeScript file: but for the channels it
//! does not know the guild of).

use guild_gateway_dev::testing::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn reshard(sources: &[PathBuf], pods: u32, out: &std::path::Path) -> String {
    let out_run = gateway()
        .args(["reshard", "--pods", &pods.to_string(), "--out"])
        .arg(out)
        .args(sources)
        .output()
        .unwrap();
    assert!(
        out_run.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&out_run.stderr)
    );
    String::from_utf8(out_run.stdout).unwrap()
}

/// Every row of every table of `dbs` together, sorted; mod_actions without their ids, which are
/// each file's own sequence (the rest of the row must match).
fn union_of(dbs: &[PathBuf]) -> BTreeMap<&'static str, Vec<serde_json::Value>> {
    let mut union = BTreeMap::new();
    for db in dbs {
        for (table, rows) in all_rows(db) {
            union
                .entry(table)
                .or_insert_with(Vec::new)
                .extend(rows.into_iter().map(|mut r| {
                    if table == "mod_actions" {
                        r.as_object_mut().unwrap().remove("id");
                    }
                    r
                }));
        }
    }
    union
        .into_iter()
        .map(|(t, rows)| (t, sorted(rows)))
        .collect()
}

fn targets(out: &Path, pods: u32) -> Vec<PathBuf> {
    (0..pods)
        .map(|k| out.join(format!("gateway-{k}.sqlite3")))
        .collect()
}

/// The sample stream replayed into 3 md5 pods' files under `dir/old`.
fn three_md5_pods(dir: &Path) -> Vec<PathBuf> {
    let old: Vec<PathBuf> = (0..3)
        .map(|k| dir.join(format!("old/gateway-{k}.sqlite3")))
        .collect();
    for (k, db) in old.iter().enumerate() {
        replay(db, k as u32, 3, "md5", &sample_stream());
    }
    old
}

#[test]
fn resharding_moves_every_row_to_its_new_owner() {
    let dir = tempfile::tempdir().unwrap();
    let old = three_md5_pods(dir.path());
    let before = union_of(&old);
    for pods in [2u32, 5] {
        let out = dir.path().join(format!("new-{pods}"));
        let summary = reshard(&old, pods, &out);
        assert!(summary.contains("message_stats"), "{summary}");
        let new = targets(&out, pods);
        assert_expected_rows(&new, "md5");
        assert_eq!(
            union_of(&new),
            before,
            "{pods} pods: every row of every table moved, none lost or added"
        );
    }
    // The targets must be new files.
    let again = gateway()
        .args(["reshard", "--pods", "2", "--out"])
        .arg(dir.path().join("new-2"))
        .args(&old)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn a_pod_file_from_before_guild_channels_splits_by_owner() {
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("gateway-0.sqlite3");
    replay(&single, 0, 1, "md5", &sample_stream());
    let reference = dir.path().join("reference.sqlite3");
    // Back to the layout of earlier releases: the channel's guild, type and parent as columns of
    // channel_info. reshard reads its sources as they are: this one is not migrated first.
    let conn = rusqlite::Connection::open(&single).unwrap();
    conn.execute("VACUUM INTO ?1", [reference.to_str().unwrap()])
        .unwrap();
    conn.execute_batch(
        "ALTER TABLE channel_info ADD COLUMN guild_id TEXT;
         ALTER TABLE channel_info ADD COLUMN channel_type INTEGER;
         ALTER TABLE channel_info ADD COLUMN parent_id TEXT;
         UPDATE channel_info SET (guild_id, channel_type, parent_id) =
           (SELECT guild_id, channel_type, parent_id FROM guild_channels
            WHERE channel_id = channel_info.id);
         DROP TABLE guild_channels;
         CREATE INDEX channel_info_guild ON channel_info (guild_id);
         CREATE INDEX channel_info_parent ON channel_info (parent_id);",
    )
    .unwrap_or_else(|e| panic!("making a file of the earlier layout: {e}"));
    drop(conn);
    let out = dir.path().join("split");
    reshard(&[single], 3, &out);
    let new = targets(&out, 3);
    assert_expected_rows(&new, "md5");
    assert_eq!(
        union_of(&new),
        union_of(&[reference]),
        "every row moved, channels with their type and parent"
    );
}

#[test]
fn the_single_file_of_the_typescript_deployment_splits_by_owner() {
    // One pod owning everything is the single-file deployment's data.
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("bot.sqlite3");
    replay(&single, 0, 1, "md5", &sample_stream());
    // The TypeScript file has none of the added columns and tables: its channel_info is
    // (id, name, category), with no guild.
    let conn = rusqlite::Connection::open(&single).unwrap();
    conn.execute_batch(
        "DROP TABLE message_reactions; DROP TABLE member_timeouts; DROP TABLE mod_action_late_entries;
         DROP TABLE guild_channels;
         CREATE TABLE ts_mod_actions AS SELECT id, user_id, guild_id, action_type, executor_id,
           executor_username, reason, duration, created_at FROM mod_actions;
         DROP TABLE mod_actions; ALTER TABLE ts_mod_actions RENAME TO mod_actions;",
    )
    .unwrap_or_else(|e| panic!("making a TypeScript-shaped file: {e}"));
    drop(conn);
    let out = dir.path().join("split");
    let summary = reshard(&[single], 3, &out);
    let new = targets(&out, 3);

    // A channel's guild is then known from its messages only: a channel nobody wrote in (or a
    // category) goes nowhere, and every other row as in a direct replay.
    let mut expected = expected();
    let with_messages: std::collections::BTreeSet<String> = ["message_stats", "message_cache"]
        .iter()
        .flat_map(|t| expected[*t].as_array().unwrap().iter())
        .map(|r| r["channel_id"].as_str().unwrap().to_owned())
        .collect();
    let channels = expected["channel_info"].as_array_mut().unwrap();
    let all = channels.len();
    channels.retain(|c| with_messages.contains(c["id"].as_str().unwrap()));
    let unplaced = all - channels.len();
    assert!(
        unplaced > 0 && !channels.is_empty(),
        "the sample has both kinds"
    );
    assert_rows(&new, "md5", &expected);
    assert!(
        summary.contains(&format!(
            "note: {unplaced} channel_info rows were copied nowhere"
        )),
        "{summary}"
    );
    assert!(!summary.contains("more than one source"), "{summary}");
}

#[test]
fn resharding_to_discord_with_eight_shards_puts_each_guild_on_its_shards_pod() {
    let dir = tempfile::tempdir().unwrap();
    let old = three_md5_pods(dir.path());
    let out = dir.path().join("discord-8");
    let run = gateway()
        .args([
            "reshard",
            "--pods",
            "3",
            "--strategy",
            "discord",
            "--shards",
            "8",
            "--out",
        ])
        .arg(&out)
        .args(&old)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_rows_with_shards(&targets(&out, 3), "discord", Some(8), &expected());
    assert_eq!(union_of(&targets(&out, 3)), union_of(&old));
}

/// A file shaped like the bot's whole schema (its TypeScript layout, with rows in every one of
/// its guild tables) splits by owner: each row of every registered table lands on the pod
/// that owns its guild, through its parent for the tables tied that way, exactly once.
#[test]
fn a_file_with_the_bots_whole_schema_moves_every_registered_table() {
    use gateway_actors::tables::GUILD_TABLES;
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("bot.sqlite3");
    replay(&single, 0, 1, "md5", &sample_stream());
    let conn = rusqlite::Connection::open(&single).unwrap();
    let guilds: Vec<(String, String)> = conn
        .prepare("SELECT guild_id, min(channel_id) FROM message_stats GROUP BY guild_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(guilds.len() > 3, "the sample has guilds with messages");
    for (i, (guild, channel)) in guilds.iter().enumerate() {
        conn.execute_batch(&format!(
            "INSERT INTO guild_subscriptions (guild_id, product_tier) VALUES ('{guild}', 'paid');
             INSERT INTO reported_messages (id, reported_message_id, reported_channel_id,
               reported_user_id, guild_id, log_message_id, log_channel_id, reason, created_at)
               VALUES ('p{i}', 'm{i}', '{channel}', 'u', '{guild}', 'l', 'lc', 'spam', '2026-01-01');
             INSERT INTO escalations (id, guild_id, thread_id, vote_message_id, reported_user_id,
               initiator_id, flags) VALUES ('e{i}', '{guild}', 't', 'v', 'u', 'i', '{{}}');
             INSERT INTO escalation_records (id, escalation_id, voter_id, vote)
               VALUES ('r{i}a', 'e{i}', 'v1', 'ban'), ('r{i}b', 'e{i}', 'v2', 'kick');
             INSERT INTO honeypot_config (guild_id, channel_id) VALUES ('{guild}', '{channel}');
             INSERT INTO reactji_channeler_config (id, guild_id, channel_id, emoji, configured_by_id)
               VALUES ('x{i}', '{guild}', '{channel}', 'star', 'mod');
             INSERT INTO user_threads (user_id, guild_id, thread_id) VALUES ('u', '{guild}', 't{i}');
             INSERT INTO deletion_log_threads (user_id, guild_id, thread_id) VALUES ('u', '{guild}', 'd{i}');
             INSERT INTO tickets_config (message_id, channel_id, role_id) VALUES ('k{i}', '{channel}', 'role');"
        ))
        .unwrap();
    }
    // The bot's own layout: none of the gateway's tables, mod_actions without source_key.
    conn.execute_batch(
        "DROP TABLE message_reactions; DROP TABLE member_timeouts; DROP TABLE mod_action_late_entries;
         DROP TABLE unpaired_member_removals; DROP TABLE guild_channels;
         CREATE TABLE ts_mod_actions AS SELECT id, user_id, guild_id, action_type, executor_id,
           executor_username, reason, duration, created_at FROM mod_actions;
         DROP TABLE mod_actions; ALTER TABLE ts_mod_actions RENAME TO mod_actions;",
    )
    .unwrap();
    let source_rows = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let expected: BTreeMap<&str, i64> = GUILD_TABLES
        .iter()
        .filter(|t| t.bot_writes && t.name != "channel_info")
        .map(|t| (t.name, source_rows(t.name)))
        .collect();
    drop(conn);

    let out = dir.path().join("split");
    reshard(&[single], 3, &out);
    let ids: Vec<String> = guilds.iter().map(|(g, _)| g.clone()).collect();
    let owner = owners(&ids, 3, "md5");
    let mut moved: BTreeMap<&str, i64> = BTreeMap::new();
    for (k, db) in targets(&out, 3).iter().enumerate() {
        let conn = open(db);
        for table in GUILD_TABLES
            .iter()
            .filter(|t| expected.contains_key(t.name))
        {
            // The registry's own rule finds each row's guild in the file it landed in.
            let guilds: Vec<Option<String>> = conn
                .prepare(&format!(
                    "SELECT {} FROM \"{}\" t",
                    table.guild_sql("t", "main"),
                    table.name
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for guild in &guilds {
                let guild = guild
                    .as_deref()
                    .unwrap_or_else(|| panic!("{}: a row of no guild", table.name));
                if let Some(o) = owner.get(guild) {
                    assert_eq!(*o, k as u32, "{}: guild {guild}", table.name);
                }
            }
            *moved.entry(table.name).or_default() += guilds.len() as i64;
        }
    }
    assert_eq!(moved, expected, "every row of every bot table, once");
    assert!(expected.values().all(|n| *n > 0), "{expected:?}");
}
