//! The guarded writes against a real file with the whole schema: what passes, what is refused,
//! and that a refused statement leaves every row as it was.

use super::execute::{execute, ExecuteFailure, Executed, Scopes};
use super::{QueryError, QueryLimits};
use rusqlite::Connection;
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMITS: QueryLimits = QueryLimits {
    timeout: Duration::from_secs(5),
    max_rows: 100,
    max_bytes: 1 << 20,
};

struct Db {
    _dir: tempfile::TempDir,
    conn: Connection,
    scopes: Arc<Scopes>,
}

/// Guild 1 and guild 2, each with a channel, an escalation, a ticket button and a report.
fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let conn = crate::storage::database::open_writer(&dir.path().join("db.sqlite3")).unwrap();
    conn.execute_batch(
        "INSERT INTO guild_channels (channel_id, guild_id) VALUES ('c1', '1'), ('c2', '2');
         INSERT INTO escalations (id, guild_id, thread_id, vote_message_id, reported_user_id,
           initiator_id, flags) VALUES ('e1', '1', 't', 'v', 'u', 'i', '{}'),
           ('e2', '2', 't', 'v', 'u', 'i', '{}');
         INSERT INTO escalation_records (id, escalation_id, voter_id, vote)
           VALUES ('r2', 'e2', 'v', 'ban');
         INSERT INTO tickets_config (message_id, channel_id, role_id) VALUES ('m2', 'c2', 'role');
         INSERT INTO channel_info (id, name) VALUES ('c1', 'one'), ('c2', 'two');
         INSERT INTO reported_messages (id, reported_message_id, reported_channel_id,
           reported_user_id, guild_id, log_message_id, log_channel_id, reason, created_at)
           VALUES ('p1', 'msg', 'c1', 'spammer', '1', 'l', 'lc', 'spam', '2026-01-01'),
                  ('p2', 'msg2', 'c2', 'spammer', '2', 'l', 'lc', 'spam', '2026-01-01');",
    )
    .unwrap();
    let scopes = Arc::new(Scopes::read(&conn).unwrap());
    Db {
        _dir: dir,
        conn,
        scopes,
    }
}

impl Db {
    fn run(&mut self, guild: &str, sql: &str, params: &[Json]) -> Result<Executed, QueryError> {
        let deadline = Instant::now() + LIMITS.timeout;
        execute(
            &mut self.conn,
            &self.scopes,
            guild,
            sql,
            params,
            LIMITS,
            deadline,
        )
        .map_err(|e| match e {
            ExecuteFailure::Statement(e) => e,
            ExecuteFailure::Storage(e) => panic!("storage failed: {e}"),
        })
    }

    /// Every row of every table, to show a refusal changed nothing.
    fn snapshot(&self) -> Vec<String> {
        let tables: Vec<String> = self
            .conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables
            .iter()
            .flat_map(|t| {
                let sql = format!("SELECT * FROM \"{t}\"");
                let mut stmt = self.conn.prepare(&sql).unwrap();
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    let values: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect();
                    Ok(format!("{t}: {}", values.join("|")))
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
            })
            .collect()
    }

    /// `sql` is refused as out of scope naming `table`, and changes nothing.
    fn refused(&mut self, sql: &str, params: &[Json], table: &str) {
        let before = self.snapshot();
        match self.run("1", sql, params) {
            Err(QueryError::OutOfScope { table: t, detail }) => {
                assert_eq!(t, table, "{sql}: {detail}");
                assert!(detail.contains(table), "{detail}");
            }
            other => panic!("{sql}: {other:?}"),
        }
        assert_eq!(self.snapshot(), before, "{sql} changed rows");
    }
}

#[test]
fn the_bots_writes_to_its_own_guild_commit_and_answer() {
    let mut db = db();
    let done = db
        .run(
            "1",
            r#"insert into "reported_messages" ("id", "reported_message_id", "reported_channel_id", "reported_user_id", "guild_id", "log_message_id", "log_channel_id", "reason", "created_at") values (?, ?, ?, ?, ?, ?, ?, ?, ?) returning "id", "reason""#,
            &[json!("p3"), json!("m"), json!("c1"), json!("u"), json!("1"), json!("l"), json!("lc"), json!("track"), json!("2026-01-02")],
        )
        .unwrap();
    assert_eq!(done.rows_affected, 1);
    assert_eq!(done.columns, ["id", "reason"]);
    assert_eq!(done.rows, [[json!("p3"), json!("track")]]);
    assert!(done.last_insert_rowid > 0);
    // An upsert of the guild's own row, a vote on its own escalation, a ticket in its channel.
    let upsert = r#"insert into "user_threads" ("user_id", "guild_id", "thread_id", "created_at") values (?, ?, ?, ?) on conflict ("user_id", "guild_id") do update set "thread_id" = ?"#;
    for thread in ["t1", "t2"] {
        let p = [
            json!("u"),
            json!("1"),
            json!(thread),
            json!("2026-01-01"),
            json!(thread),
        ];
        assert_eq!(db.run("1", upsert, &p).unwrap().rows_affected, 1);
    }
    db.run("1", "insert into escalation_records (id, escalation_id, voter_id, vote) values ('r1', 'e1', 'v', 'kick')", &[]).unwrap();
    db.run(
        "1",
        "insert into tickets_config (message_id, channel_id, role_id) values ('m1', 'c1', 'r')",
        &[],
    )
    .unwrap();
    let marked = db
        .run(
            "1",
            r#"update "reported_messages" set "deleted_at" = ? where "reported_message_id" = ? and "guild_id" = ? and "deleted_at" is null"#,
            &[json!("2026-01-03"), json!("msg"), json!("1")],
        )
        .unwrap();
    assert_eq!((marked.rows_affected, marked.rows.len()), (1, 0));
    let deleted = db
        .run(
            "1",
            "delete from escalation_records where escalation_id = 'e1'",
            &[],
        )
        .unwrap();
    assert_eq!(deleted.rows_affected, 1);
    let thread: String = db
        .conn
        .query_row(
            "SELECT thread_id FROM user_threads WHERE guild_id = '1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(thread, "t2");
}

#[test]
fn another_guilds_rows_are_refused_in_where_in_values_and_through_parents() {
    let mut db = db();
    // In VALUES.
    db.refused(
        "insert into honeypot_config (guild_id, channel_id) values (?, ?)",
        &[json!("2"), json!("c2")],
        "honeypot_config",
    );
    // In WHERE (the rows it finds are guild 2's).
    db.refused(
        "update reported_messages set reason = 'x' where guild_id = '2'",
        &[],
        "reported_messages",
    );
    // Both guilds' rows at once: the whole statement goes.
    db.refused("delete from reported_messages", &[], "reported_messages");
    // Moving a row to another guild.
    db.refused(
        "update reported_messages set guild_id = '2' where id = 'p1'",
        &[],
        "reported_messages",
    );
    // An upsert whose conflicting row is another guild's.
    db.refused(
        "insert into reported_messages (id, reported_message_id, reported_channel_id, reported_user_id, guild_id, log_message_id, log_channel_id, reason) values ('p2', 'a', 'b', 'c', '1', 'd', 'e', 'f') on conflict (id) do update set reason = 'stolen'",
        &[],
        "reported_messages",
    );
    // A REPLACE that would delete another guild's row to make room.
    db.refused(
        "insert or replace into reported_messages (id, reported_message_id, reported_channel_id, reported_user_id, guild_id, log_message_id, log_channel_id, reason) values ('p2', 'a', 'b', 'c', '1', 'd', 'e', 'f')",
        &[],
        "reported_messages",
    );
    // Through a parent: a vote on guild 2's escalation, a ticket in guild 2's channel, a
    // ticket in no known channel, a channel of guild 2.
    db.refused(
        "insert into escalation_records (id, escalation_id, voter_id, vote) values ('x', 'e2', 'v', 'ban')",
        &[],
        "escalation_records",
    );
    db.refused("delete from escalation_records", &[], "escalation_records");
    db.refused(
        "insert into tickets_config (message_id, channel_id, role_id) values ('x', 'c2', 'r')",
        &[],
        "tickets_config",
    );
    db.refused(
        "insert into tickets_config (message_id, channel_id, role_id) values ('x', NULL, 'r')",
        &[],
        "tickets_config",
    );
    db.refused("update channel_info set name = 'x'", &[], "channel_info");
    db.refused(
        "insert or replace into channel_info (id, name) values ('c2', 'mine now')",
        &[],
        "channel_info",
    );
    db.refused(
        "insert into channel_info (id, name) values ('c9', 'of no known guild')",
        &[],
        "channel_info",
    );
}

#[test]
fn tables_outside_the_bots_registry_are_refused_by_name() {
    let mut db = db();
    for (sql, table) in [
        ("insert into gateway_ownership (id, epoch, pods, strategy, shards) values (1, 1, 1, 'md5', 1)", "gateway_ownership"),
        ("delete from guild_channels where guild_id = '1'", "guild_channels"),
        ("delete from member_timeouts", "member_timeouts"),
        ("insert into sqlite_sequence (name, seq) values ('x', 1)", "sqlite_sequence"),
    ] {
        db.refused(sql, &[], table);
    }
}

#[test]
fn statements_other_than_one_write_are_refused_with_a_reason() {
    let mut db = db();
    let before = db.snapshot();
    for (sql, why) in [
        ("create table x (a)", "not allowed"),
        ("drop table reported_messages", "not allowed"),
        ("attach database ':memory:' as other", "ATTACH"),
        ("pragma writable_schema = 1", "PRAGMA"),
        ("begin", "transaction"),
        ("savepoint s", "transaction"),
        ("select 1", "only reads"),
        (
            "delete from honeypot_config where guild_id = '1'; delete from honeypot_config",
            "more than one",
        ),
        (
            "insert into honeypot_config values ('1', load_extension('x'))",
            "load_extension",
        ),
        ("insert into honeypot_config values (?, ?)", "parameters"),
    ] {
        match db.run("1", sql, &[]) {
            Err(QueryError::Refused(message)) => assert!(message.contains(why), "{sql}: {message}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert_eq!(db.snapshot(), before);
}

#[test]
fn a_broken_constraint_is_its_own_error_and_rolls_back() {
    let mut db = db();
    let duplicate = "insert into reported_messages (id, reported_message_id, reported_channel_id, reported_user_id, guild_id, log_message_id, log_channel_id, reason) values ('p9', 'msg', 'c', 'u', '1', 'l', 'lc', 'spam')";
    match db.run("1", duplicate, &[]) {
        Err(QueryError::Constraint(message)) => assert!(message.contains("UNIQUE"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_guilds_settings_stay_a_json_document() {
    let mut db = db();
    db.run(
        "1",
        "insert into guilds (id, settings) values ('1', '{\"modLog\":\"9\"}')",
        &[],
    )
    .unwrap();
    for sql in [
        "update guilds set settings = 'not json' where id = '1'",
        "insert into guilds (id, settings) values ('1', '{') on conflict (id) do update set settings = excluded.settings",
    ] {
        match db.run("1", sql, &[]) {
            Err(QueryError::Constraint(message)) => {
                assert!(message.contains("JSON document"), "{sql}: {message}")
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    let settings: String = db
        .conn
        .query_row("SELECT settings FROM guilds WHERE id = '1'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(settings, r#"{"modLog":"9"}"#);
}

#[test]
fn a_long_write_is_interrupted_at_its_deadline() {
    let mut db = db();
    let deadline = Instant::now() + Duration::from_millis(200);
    let slow = "insert into honeypot_config (guild_id, channel_id) select '1', x from (with recursive n(x) as (select 1 union all select x + 1 from n) select x from n) limit 100000000";
    let result = execute(&mut db.conn, &db.scopes, "1", slow, &[], LIMITS, deadline);
    assert!(
        matches!(
            result,
            Err(ExecuteFailure::Statement(QueryError::Timeout(_)))
        ),
        "{result:?}"
    );
    let left: i64 = db
        .conn
        .query_row("SELECT count(*) FROM honeypot_config", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    // The connection writes as before: no hook or authorizer left behind.
    db.conn
        .execute(
            "INSERT INTO guild_channels (channel_id, guild_id) VALUES ('c3', '2')",
            [],
        )
        .unwrap();
}
