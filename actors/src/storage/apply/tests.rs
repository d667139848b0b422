//! Each op's SQL against a real file: idempotence, guild scoping, late entries, migrations.

use super::*;
use crate::domain::op::{ChannelRow, MessageRow};
use crate::domain::time::iso8601;
use crate::storage::database::{count_rows, open_writer};
use crate::storage::restore::load_channels;
use rusqlite::Connection;
use std::time::SystemTime;

const A: Id = Id(1);
const B: Id = Id(2);

fn apply_one(conn: &mut Connection, op: Op) -> Outcome {
    let tx = conn.transaction().unwrap();
    let outcome = apply(&tx, &op, &iso8601(SystemTime::now())).unwrap();
    tx.commit().unwrap();
    outcome
}

fn channel(guild_id: Id, id: u64, name: &str, parent_id: Option<u64>) -> Op {
    Op::UpsertChannel {
        id: Id(id),
        guild_id,
        name: Some(name.into()),
        category: None,
        kind: if parent_id.is_some() { 0 } else { 4 },
        parent_id: parent_id.map(Id),
    }
}

fn message(guild_id: Id, id: u64) -> Op {
    Op::InsertMessage(Box::new(MessageRow {
        message_id: Id(id),
        author_id: Id(42),
        guild_id,
        channel_id: Id(102),
        channel_category: Some("Lounge".into()),
        recipient_id: None,
        react_count: 0,
        sent_at: 0,
        stats: crate::domain::stats::message_stats("hello there"),
    }))
}

fn mod_action(guild_id: Id, user: u64, key: &str) -> Op {
    Op::InsertModAction {
        guild_id,
        user_id: Id(user),
        action: "ban",
        executor_id: None,
        reason: String::new(),
        duration: None,
        source_key: Some(key.into()),
        unpaired_key: None,
    }
}

fn complete(guild_id: Id, user: u64, entry: u64, by_bot: bool) -> Op {
    Op::CompleteModAction {
        guild_id,
        user_id: Id(user),
        action: "ban",
        source_key: format!("audit:{entry}"),
        not_before_ms: 0,
        executor_id: Some(Id(3)),
        reason: "raid".into(),
        by_bot,
    }
}

#[test]
fn writes_of_one_guild_never_change_another_guilds_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_writer(&dir.path().join("db.sqlite3")).unwrap();
    let guild_a = [
        Op::EnsureGuild(A),
        channel(A, 101, "Lounge", None),
        channel(A, 102, "general", Some(101)),
        message(A, 1000),
        Op::UpsertCache {
            message_id: Id(1000),
            guild_id: A,
            channel_id: Id(102),
            user_id: Id(42),
            content: "hello there".into(),
        },
        Op::Reaction {
            guild_id: A,
            message_id: Id(1000),
            user_id: Id(7),
            emoji: "x".into(),
            added: true,
        },
        mod_action(A, 77, "audit:5000"),
        mod_action(A, 78, "ban:1:78:s1"),
    ];
    for op in guild_a {
        assert_eq!(apply_one(&mut conn, op), Outcome::Done);
    }
    let before = every_row(&conn);

    let guild_b = [
        channel(B, 102, "hijacked", None),
        channel(B, 101, "renamed", None),
        Op::DeleteChannel {
            guild_id: B,
            id: Id(102),
        },
        message(B, 1000),
        Op::UpdateMessageStats {
            guild_id: B,
            message_id: Id(1000),
            stats: crate::domain::stats::message_stats("rewritten"),
        },
        Op::DeleteMessage {
            guild_id: B,
            id: Id(1000),
        },
        Op::Reaction {
            guild_id: B,
            message_id: Id(1000),
            user_id: Id(8),
            emoji: "x".into(),
            added: true,
        },
        Op::Reaction {
            guild_id: B,
            message_id: Id(1000),
            user_id: Id(7),
            emoji: "x".into(),
            added: false,
        },
        Op::UpsertCache {
            message_id: Id(1000),
            guild_id: B,
            channel_id: Id(102),
            user_id: Id(43),
            content: "overwritten".into(),
        },
        Op::UpdateCache {
            guild_id: B,
            message_id: Id(1000),
            content: "edited".into(),
        },
        mod_action(B, 77, "audit:5000"),
        complete(B, 77, 5000, false),
    ];
    for op in guild_b {
        let described = format!("{op:?}");
        match apply_one(&mut conn, op) {
            Outcome::Refused(r) => {
                assert_eq!(r.guild_id, B, "{described}");
                assert_eq!(r.owner.as_deref(), Some("1"), "{described}");
            }
            Outcome::Done => panic!("not refused: {described}"),
        }
        assert_eq!(every_row(&conn), before, "after {described}");
    }

    // A rename in B reaches B's children only, and writes that find no row are no refusals.
    for op in [
        Op::RenameParent {
            guild_id: B,
            parent_id: Id(101),
            name: Some("renamed".into()),
        },
        Op::DeleteMessage {
            guild_id: B,
            id: Id(9999),
        },
        Op::DeleteChannel {
            guild_id: B,
            id: Id(9999),
        },
        complete(B, 78, 5001, false),
    ] {
        assert_eq!(apply_one(&mut conn, op), Outcome::Done);
    }
    assert_eq!(every_row(&conn), before);
}

/// An event written without its entry (its window closed), delivered again after a
/// restart and paired this time: its row is completed, not written a second time.
#[test]
fn a_redelivered_event_paired_at_last_completes_its_unpaired_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_writer(&dir.path().join("db.sqlite3")).unwrap();
    let paired = |entry: u64| Op::InsertModAction {
        guild_id: A,
        user_id: Id(77),
        action: "ban",
        executor_id: Some(Id(3)),
        reason: "raid".into(),
        duration: None,
        source_key: Some(format!("audit:{entry}")),
        unpaired_key: Some("ban:1:77:s1".into()),
    };
    for op in [
        mod_action(A, 77, "ban:1:77:s1"),
        paired(4000),
        paired(4000),
        // A later ban of the member, with its own key, is a row of its own.
        mod_action(A, 77, "ban:1:77:s9"),
    ] {
        assert_eq!(apply_one(&mut conn, op), Outcome::Done);
    }
    let rows: Vec<(String, Option<String>)> = conn
        .prepare("SELECT source_key, executor_id FROM mod_actions ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            ("audit:4000".to_string(), Some("3".to_string())),
            ("ban:1:77:s9".to_string(), None)
        ]
    );
}

/// A member who left with no kick entry in time: a late kick entry makes it the kick row,
/// once; the bot's own kick consumes the removal and writes nothing.
#[test]
fn a_late_kick_entry_turns_an_unpaired_removal_into_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_writer(&dir.path().join("db.sqlite3")).unwrap();
    let kick = |user: u64, entry: u64, by_bot: bool| {
        let mut op = complete(A, user, entry, by_bot);
        if let Op::CompleteModAction { action, .. } = &mut op {
            *action = "kick";
        }
        op
    };
    let removed = |user: u64| Op::RecordUnpairedRemoval {
        guild_id: A,
        user_id: Id(user),
    };
    for op in [
        // An entry with no removal before it writes nothing.
        kick(77, 4000, false),
        removed(77),
        kick(77, 4001, false),
        kick(77, 4001, false),
        // The same member again, with no second removal: nothing more.
        kick(77, 4002, false),
        removed(78),
        kick(78, 4003, true),
    ] {
        assert_eq!(apply_one(&mut conn, op), Outcome::Done);
    }
    let rows: Vec<(String, String, Option<String>, String)> = conn
        .prepare("SELECT user_id, action_type, executor_id, source_key FROM mod_actions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected = ("77", "kick", Some("3"), "audit:4001");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            rows[0].0.as_str(),
            rows[0].1.as_str(),
            rows[0].2.as_deref(),
            rows[0].3.as_str()
        ),
        expected
    );
    assert_eq!(count_rows(&conn, "unpaired_member_removals").unwrap(), 0);
}

#[test]
fn a_late_entry_completes_the_latest_unpaired_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_writer(&dir.path().join("db.sqlite3")).unwrap();
    for op in [
        mod_action(A, 77, "ban:1:77:s1"),
        // Paired with its own entry: never completed by another.
        Op::InsertModAction {
            guild_id: A,
            user_id: Id(77),
            action: "ban",
            executor_id: None,
            reason: String::new(),
            duration: None,
            source_key: Some("audit:4000".into()),
            unpaired_key: None,
        },
        mod_action(A, 77, "ban:1:77:s9"),
    ] {
        assert_eq!(apply_one(&mut conn, op), Outcome::Done);
    }
    let executors = |conn: &Connection| -> Vec<(String, Option<String>, Option<String>)> {
        let mut stmt = conn
            .prepare("SELECT source_key, executor_id, reason FROM mod_actions ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let row = |key: &str, executor: Option<&str>, reason: &str| {
        (
            key.to_string(),
            executor.map(String::from),
            Some(reason.to_string()),
        )
    };

    // An entry created after every row was written cannot be theirs.
    let mut too_new = complete(A, 77, 5000, false);
    if let Op::CompleteModAction { not_before_ms, .. } = &mut too_new {
        *not_before_ms = 4_102_444_800_000; // 2100
    }
    assert_eq!(apply_one(&mut conn, too_new), Outcome::Done);

    assert_eq!(
        apply_one(&mut conn, complete(A, 77, 5000, false)),
        Outcome::Done
    );
    let completed = vec![
        row("ban:1:77:s1", None, ""),
        row("audit:4000", None, ""),
        row("ban:1:77:s9", Some("3"), "raid"),
    ];
    assert_eq!(executors(&conn), completed);
    // Redelivered: the entry completes nothing more, and paired with a redelivered event
    // it writes no second row.
    assert_eq!(
        apply_one(&mut conn, complete(A, 77, 5000, false)),
        Outcome::Done
    );
    let mut paired = mod_action(A, 77, "audit:5000");
    if let Op::InsertModAction { executor_id, .. } = &mut paired {
        *executor_id = Some(Id(3));
    }
    assert_eq!(apply_one(&mut conn, paired), Outcome::Done);
    assert_eq!(executors(&conn), completed);

    // The next entry completes the earlier row; one by the bot removes its row instead.
    assert_eq!(
        apply_one(&mut conn, complete(A, 77, 5001, false)),
        Outcome::Done
    );
    assert_eq!(executors(&conn)[0], row("ban:1:77:s1", Some("3"), "raid"));
    assert_eq!(
        apply_one(&mut conn, mod_action(A, 77, "ban:1:77:s20")),
        Outcome::Done
    );
    assert_eq!(
        apply_one(&mut conn, complete(A, 77, 5002, true)),
        Outcome::Done
    );
    assert_eq!(
        apply_one(&mut conn, complete(A, 77, 5002, true)),
        Outcome::Done
    );
    assert_eq!(executors(&conn).len(), 3);
    assert_eq!(count_rows(&conn, "mod_action_late_entries").unwrap(), 3);
}

/// Every row of every table that a guild's writes can reach, all columns.
fn every_row(conn: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
    let mut all = Vec::new();
    for table in [
        "guilds",
        "channel_info",
        "guild_channels",
        "message_stats",
        "message_reactions",
        "message_cache",
        "mod_actions",
        "mod_action_late_entries",
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..width).map(|i| r.get(i)).collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            all.push(row.unwrap());
        }
    }
    all
}

/// channel_info as files written before guild_channels have it.
const CHANNEL_INFO_WITH_GUILD: &str = "
    CREATE TABLE channel_info (
        id           TEXT PRIMARY KEY,
        name         TEXT,
        category     TEXT,
        guild_id     TEXT,
        channel_type INTEGER,
        parent_id    TEXT
    );
    CREATE INDEX channel_info_guild ON channel_info (guild_id);
    CREATE INDEX channel_info_parent ON channel_info (parent_id);
    INSERT INTO channel_info VALUES
        ('101', 'Lounge', NULL, '1', 4, NULL),
        ('102', 'general', 'Lounge', '1', 0, '101'),
        ('201', 'Hall', NULL, '2', 4, NULL),
        ('202', 'chat', 'Hall', '2', 0, '201'),
        ('203', 'voice', 'Hall', '2', 2, '201'),
        ('900', 'orphan', NULL, NULL, 0, NULL);";

fn channel_info_columns(conn: &Connection) -> Vec<String> {
    conn.prepare("SELECT name FROM pragma_table_info('channel_info')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn channel_columns_of_earlier_files_move_to_guild_channels_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite3");
    Connection::open(&path)
        .unwrap()
        .execute_batch(CHANNEL_INFO_WITH_GUILD)
        .unwrap();

    let mut conn = open_writer(&path).unwrap();
    assert_eq!(channel_info_columns(&conn), ["id", "name", "category"]);
    let indexes: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'channel_info'
               AND sql IS NOT NULL",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(indexes.is_empty(), "{indexes:?}");
    let channels = |conn: &Connection, guild: Id| {
        let mut rows = load_channels(conn, guild).unwrap();
        rows.sort_by_key(|c| c.id.0);
        rows
    };
    let row = |id: u64, name: &str, kind: u8, parent: Option<u64>| ChannelRow {
        id: Id(id),
        name: Some(name.into()),
        kind: Some(kind),
        parent_id: parent.map(Id),
    };
    assert_eq!(
        channels(&conn, A),
        [
            row(101, "Lounge", 4, None),
            row(102, "general", 0, Some(101))
        ]
    );
    assert_eq!(
        channels(&conn, B),
        [
            row(201, "Hall", 4, None),
            row(202, "chat", 0, Some(201)),
            row(203, "voice", 2, Some(201))
        ]
    );
    // The row without a guild stays, owned by no guild, as before.
    assert_eq!(count_rows(&conn, "channel_info").unwrap(), 6);
    assert_eq!(count_rows(&conn, "guild_channels").unwrap(), 5);
    match apply_one(&mut conn, channel(A, 900, "claimed", None)) {
        Outcome::Refused(r) => assert_eq!(r.owner, None),
        Outcome::Done => panic!("a channel without a guild was claimed"),
    }
    // The moved rows are the guild's as before: renames reach its children only.
    let rename = Op::RenameParent {
        guild_id: B,
        parent_id: Id(201),
        name: Some("Atrium".into()),
    };
    assert_eq!(apply_one(&mut conn, rename), Outcome::Done);
    let renamed: Vec<String> = conn
        .prepare("SELECT id FROM channel_info WHERE category = 'Atrium' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(renamed, ["202", "203"]);

    // Opened again, nothing changes: neither the rows nor the schema.
    let schema = |conn: &Connection| -> Vec<(String, Option<String>)> {
        conn.prepare("SELECT name, sql FROM sqlite_master ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let (rows_before, schema_before) = (every_row(&conn), schema(&conn));
    drop(conn);
    let conn = open_writer(&path).unwrap();
    assert_eq!(every_row(&conn), rows_before);
    assert_eq!(schema(&conn), schema_before);
}
