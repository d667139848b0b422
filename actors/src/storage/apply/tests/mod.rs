//! Each op's SQL against a real file: idempotence, guild scoping, late entries, migrations.

mod channels;
mod moderation;
mod scoping;

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

#[test]
fn ids_are_stored_as_their_decimal_text() {
    for id in [0, 7, 10, 1_000_000_000_000_000_003, u64::MAX] {
        assert_eq!(&*IdText::new(Id(id)), id.to_string());
    }
}

#[test]
fn a_redelivered_message_forgets_its_reactions_and_a_new_one_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_writer(&dir.path().join("db.sqlite3")).unwrap();
    let reaction = |message_id: u64, user: u64| Op::Reaction {
        guild_id: A,
        message_id: Id(message_id),
        user_id: Id(user),
        emoji: "👍".into(),
        added: true,
    };
    let reactions = |conn: &Connection| -> Vec<(String, i64)> {
        conn.prepare(
            "SELECT r.message_id, s.react_count FROM message_reactions r
             JOIN message_stats s USING (message_id) ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    for op in [
        message(A, 700),
        reaction(700, 1),
        message(A, 701),
        reaction(701, 1),
    ] {
        assert_eq!(apply_one(&mut conn, op), Outcome::Done);
    }
    assert_eq!(reactions(&conn), [("700".into(), 1), ("701".into(), 1)]);
    // The message's row is written again (a redelivery takes the upsert's update): its
    // reactions start afresh, in the same transaction as a new message's insert.
    let tx = conn.transaction().unwrap();
    let now = iso8601(SystemTime::now());
    assert_eq!(apply(&tx, &message(A, 702), &now).unwrap(), Outcome::Done);
    assert_eq!(apply(&tx, &message(A, 700), &now).unwrap(), Outcome::Done);
    assert_eq!(apply(&tx, &message(A, 703), &now).unwrap(), Outcome::Done);
    tx.commit().unwrap();
    assert_eq!(reactions(&conn), [("701".into(), 1)]);
    assert_eq!(count_rows(&conn, "message_stats").unwrap(), 4);
}
