//! A pod's database read into comparable JSON rows, and the check that pods hold exactly the
//! expected rows between them, each guild's in its owner's database only.

use super::{assert_success, expected, gateway};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn open(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opening the pod's database")
}

fn query(conn: &Connection, sql: &str) -> Vec<Value> {
    let mut stmt = conn.prepare(sql).expect("query prepares");
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let rows = stmt
        .query_map([], |r| {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(n) => json!(n),
                    rusqlite::types::ValueRef::Real(f) => json!(f),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    rusqlite::types::ValueRef::Blob(_) => json!("<blob>"),
                };
                obj.insert(name.clone(), v);
            }
            Ok(Value::Object(obj))
        })
        .expect("query runs");
    rows.map(|r| r.expect("row reads")).collect()
}

/// A pod's rows in the fixture's shape (the columns the expected file compares), per table.
pub fn comparable_rows(db: &Path) -> BTreeMap<&'static str, Vec<Value>> {
    let conn = open(db);
    let mut tables = BTreeMap::new();
    tables.insert("message_stats", query(&conn, "SELECT message_id, author_id, guild_id, channel_id, channel_category, recipient_id, char_count, word_count, react_count, sent_at, code_stats, link_stats FROM message_stats"));
    tables.insert(
        "channel_info",
        // A channel's guild is in guild_channels; LEFT JOIN, so a channel_info row without one
        // shows (with a null guild) instead of hiding.
        query(
            &conn,
            "SELECT c.id, g.guild_id, c.name, c.category FROM channel_info c
               LEFT JOIN guild_channels g ON g.channel_id = c.id",
        ),
    );
    tables.insert(
        "message_cache",
        query(
            &conn,
            "SELECT message_id, guild_id, channel_id, user_id, content FROM message_cache",
        ),
    );
    tables.insert(
        "guilds",
        query(&conn, "SELECT id FROM guilds")
            .into_iter()
            .map(|r| r["id"].clone())
            .collect(),
    );
    tables.insert(
        "mod_actions",
        query(
            &conn,
            "SELECT guild_id, user_id, action_type, executor_id, reason FROM mod_actions",
        ),
    );
    tables
}

/// Every row of every table, all columns but processing-time timestamps: for "a second
/// replay changes nothing".
pub fn all_rows(db: &Path) -> BTreeMap<&'static str, Vec<Value>> {
    let conn = open(db);
    let mut tables = BTreeMap::new();
    tables.insert(
        "message_stats",
        query(&conn, "SELECT * FROM message_stats ORDER BY message_id"),
    );
    tables.insert(
        "channel_info",
        query(&conn, "SELECT * FROM channel_info ORDER BY id"),
    );
    tables.insert(
        "guild_channels",
        query(&conn, "SELECT * FROM guild_channels ORDER BY channel_id"),
    );
    tables.insert("message_cache", query(&conn, "SELECT message_id, guild_id, channel_id, user_id, content FROM message_cache ORDER BY message_id"));
    tables.insert(
        "message_reactions",
        query(&conn, "SELECT * FROM message_reactions ORDER BY 1, 2, 3"),
    );
    tables.insert("guilds", query(&conn, "SELECT * FROM guilds ORDER BY id"));
    tables.insert("mod_actions", query(&conn, "SELECT id, user_id, guild_id, action_type, executor_id, reason, duration, source_key FROM mod_actions ORDER BY id"));
    tables.insert(
        "member_timeouts",
        query(&conn, "SELECT * FROM member_timeouts ORDER BY 1, 2"),
    );
    tables
}

/// Sorts rows by their JSON text, for order-insensitive comparison.
pub fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// The guild a row belongs to.
pub fn row_guild(table: &str, row: &Value) -> String {
    let v = if table == "guilds" {
        row
    } else {
        &row["guild_id"]
    };
    v.as_str().expect("guild id is text").to_owned()
}

/// The ordinal of the owning pod, computed by the binary's own `shard-of` (which the fixture
/// tests pin to the TypeScript function).
pub fn owners(ids: &[String], pods: u32, strategy: &str) -> BTreeMap<String, u32> {
    owners_with_shards(ids, pods, strategy, None)
}

/// [`owners`] for a bot with `shards` Discord shards (DISCORD_SHARDS).
pub fn owners_with_shards(
    ids: &[String],
    pods: u32,
    strategy: &str,
    shards: Option<u32>,
) -> BTreeMap<String, u32> {
    let mut cmd = gateway();
    cmd.args([
        "shard-of",
        "--pods",
        &pods.to_string(),
        "--strategy",
        strategy,
    ]);
    if let Some(shards) = shards {
        cmd.args(["--shards", &shards.to_string()]);
    }
    let out = cmd.arg("--").args(ids).output().expect("running shard-of");
    assert_success("shard-of", &out)
        .lines()
        .map(|l| {
            let (id, owner) = l.split_once(' ').expect("`ID ORDINAL`");
            (id.to_owned(), owner.parse().expect("ordinal"))
        })
        .collect()
}

/// The pods' databases (pod k's at `dbs[k]`) hold exactly the sample's expected rows between
/// them, each guild's rows in its owner's database only.
pub fn assert_expected_rows(dbs: &[PathBuf], strategy: &str) {
    assert_rows(dbs, strategy, &expected());
}

/// As [`assert_expected_rows`], against `expected` in the shape of the fixture's expected rows.
pub fn assert_rows(dbs: &[PathBuf], strategy: &str, expected: &Value) {
    assert_rows_with_shards(dbs, strategy, None, expected)
}

/// The rows of one database that holds every guild (a one-pod replay), in the shape
/// [`assert_rows`] expects (its `guilds` table is the guild list).
pub fn expected_rows_of(db: &Path) -> Value {
    Value::Object(
        comparable_rows(db)
            .into_iter()
            .map(|(table, rows)| (table.to_owned(), Value::Array(rows)))
            .collect(),
    )
}

/// [`assert_rows`] for a bot with `shards` Discord shards.
pub fn assert_rows_with_shards(
    dbs: &[PathBuf],
    strategy: &str,
    shards: Option<u32>,
    expected: &Value,
) {
    let pods = dbs.len() as u32;
    let per_pod: Vec<_> = dbs.iter().map(|db| comparable_rows(db)).collect();
    let guild_ids: Vec<String> = expected["guilds"]
        .as_array()
        .expect("guild list")
        .iter()
        .map(|g| g.as_str().expect("id").to_owned())
        .collect();
    let owner = owners_with_shards(&guild_ids, pods, strategy, shards);
    let setup = format!("{pods} pods ({strategy})");
    for table in [
        "message_stats",
        "channel_info",
        "message_cache",
        "guilds",
        "mod_actions",
    ] {
        let union = rows_at_their_owners(table, &per_pod, &owner, &setup);
        let want = expected[table].as_array().expect("table rows").clone();
        assert_same_rows(table, union, want, &setup);
    }
}

/// Every pod's rows of `table`, each checked to be in its guild's owner's database.
fn rows_at_their_owners(
    table: &str,
    per_pod: &[BTreeMap<&'static str, Vec<Value>>],
    owner: &BTreeMap<String, u32>,
    setup: &str,
) -> Vec<Value> {
    let mut union = Vec::new();
    for (k, rows) in per_pod.iter().enumerate() {
        for row in &rows[table] {
            let guild = row_guild(table, row);
            assert_eq!(
                owner.get(&guild),
                Some(&(k as u32)),
                "{table} row of guild {guild} is in pod {k}'s database ({setup})"
            );
            union.push(row.clone());
        }
    }
    union
}

/// The same rows in any order; on a difference, panics with a few missing and extra ones.
fn assert_same_rows(table: &str, got: Vec<Value>, want: Vec<Value>, setup: &str) {
    let (got, want) = (sorted(got), sorted(want));
    if got != want {
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
        let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
        panic!(
            "{table} with {setup}: {} rows, expected {}\nmissing: {missing:#?}\nextra: {extra:#?}",
            got.len(),
            want.len()
        );
    }
}

/// Copies a database and its WAL elsewhere and opens the copy (a full or crashed file is
/// left as it was).
pub fn open_copy(db: &Path, into: &Path) -> Connection {
    let copy = into.join("copy.sqlite3");
    std::fs::copy(db, &copy).expect("copying the database");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", copy.display())).expect("copying the WAL");
    }
    open(&copy)
}
