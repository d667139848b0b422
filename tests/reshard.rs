//! `reshard`: the sample in 3 pods, moved to 2 and to 5, and the TypeScript-style single file
//! split in 3, give exactly the rows a direct replay into that many pods gives.

use guild_gateway_dev::testing::*;
use std::path::PathBuf;

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

#[test]
fn resharding_moves_every_row_to_its_new_owner() {
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<PathBuf> = (0..3)
        .map(|k| dir.path().join(format!("old/gateway-{k}.sqlite3")))
        .collect();
    for (k, db) in old.iter().enumerate() {
        replay(db, k as u32, 3, "md5", &sample_stream());
    }
    let union_of = |dbs: &[PathBuf]| {
        let mut union = std::collections::BTreeMap::new();
        for db in dbs {
            for (table, rows) in all_rows(db) {
                union
                    .entry(table)
                    .or_insert_with(Vec::new)
                    .extend(rows.into_iter().map(|mut r| {
                        // mod_actions ids are each file's own sequence; the rest of the row must match.
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
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = union_of(&old);
    for pods in [2u32, 5] {
        let out = dir.path().join(format!("new-{pods}"));
        let summary = reshard(&old, pods, &out);
        assert!(summary.contains("message_stats"), "{summary}");
        let new: Vec<PathBuf> = (0..pods)
            .map(|k| out.join(format!("gateway-{k}.sqlite3")))
            .collect();
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
fn the_single_file_of_the_typescript_deployment_splits_by_owner() {
    // One pod owning everything is the single-file deployment's data.
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("bot.sqlite3");
    replay(&single, 0, 1, "md5", &sample_stream());
    // The TypeScript file has none of the added columns and tables.
    let conn = rusqlite::Connection::open(&single).unwrap();
    conn.execute_batch(
        "DROP TABLE message_reactions; DROP TABLE member_timeouts; DROP TABLE mod_action_late_entries;
         DROP INDEX channel_info_parent;
         ALTER TABLE channel_info DROP COLUMN channel_type; ALTER TABLE channel_info DROP COLUMN parent_id;
         CREATE TABLE ts_mod_actions AS SELECT id, user_id, guild_id, action_type, executor_id,
           executor_username, reason, duration, created_at FROM mod_actions;
         DROP TABLE mod_actions; ALTER TABLE ts_mod_actions RENAME TO mod_actions;",
    )
    .unwrap_or_else(|e| panic!("making a TypeScript-shaped file: {e}"));
    drop(conn);
    let out = dir.path().join("split");
    reshard(&[single], 3, &out);
    let new: Vec<PathBuf> = (0..3)
        .map(|k| out.join(format!("gateway-{k}.sqlite3")))
        .collect();
    assert_expected_rows(&new, "md5");
}
