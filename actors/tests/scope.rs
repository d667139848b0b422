//! Each guild's events change only that guild's rows: events of guild B that name guild A's
//! channels, messages and audit entries are refused, counted and change nothing. Real actors,
//! real SQLite files.

mod common;

use common::*;

use gateway_actors::event::decode_frame;
use gateway_actors::metrics::Metrics;
use gateway_actors::Pipeline;
use rusqlite::types::Value;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;

fn frame(t: &str, seq: u64, d: &str) -> String {
    format!(r#"{{"op":0,"t":"{t}","s":{seq},"d":{d}}}"#)
}

fn rows(conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let width = stmt.column_count();
    stmt.query_map([], |r| (0..width).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every row of guild 1 in every table, all columns.
fn guild_a_rows(db: &Path) -> Vec<Vec<Vec<Value>>> {
    let conn = Connection::open(db).unwrap();
    [
        "SELECT * FROM guilds WHERE id = '1'",
        "SELECT c.* FROM channel_info c JOIN guild_channels g ON g.channel_id = c.id
           WHERE g.guild_id = '1' ORDER BY c.id",
        "SELECT * FROM guild_channels WHERE guild_id = '1' ORDER BY channel_id",
        "SELECT * FROM message_stats WHERE guild_id = '1' ORDER BY message_id",
        "SELECT * FROM message_cache WHERE guild_id = '1' ORDER BY message_id",
        "SELECT * FROM message_reactions WHERE message_id IN ('1000', '1001') ORDER BY 1, 2, 3",
        "SELECT * FROM mod_actions WHERE guild_id = '1' ORDER BY id",
    ]
    .iter()
    .map(|sql| rows(&conn, sql))
    .collect()
}

/// Guild 1 (A): a category, a channel in it, two messages, a reaction, a ban with its entry.
fn guild_a_events() -> Vec<String> {
    vec![
        frame(
            "GUILD_CREATE",
            1,
            r#"{"id":"1","channels":[{"id":"101","type":4,"name":"Lounge"},{"id":"102","type":0,"name":"general","parent_id":"101"}]}"#,
        ),
        frame(
            "MESSAGE_CREATE",
            2,
            r#"{"id":"1000","channel_id":"102","guild_id":"1","author":{"id":"42"},"content":"hello there world"}"#,
        ),
        frame(
            "MESSAGE_CREATE",
            3,
            r#"{"id":"1001","channel_id":"102","guild_id":"1","author":{"id":"42"},"content":"second message"}"#,
        ),
        frame(
            "MESSAGE_REACTION_ADD",
            4,
            r#"{"user_id":"7","channel_id":"102","message_id":"1000","guild_id":"1","emoji":{"id":null,"name":"👍"}}"#,
        ),
        frame("GUILD_BAN_ADD", 5, r#"{"guild_id":"1","user":{"id":"77"}}"#),
        frame(
            "GUILD_AUDIT_LOG_ENTRY_CREATE",
            6,
            r#"{"guild_id":"1","id":"5000","action_type":22,"target_id":"77","user_id":"3","reason":"raid"}"#,
        ),
    ]
}

/// Guild 2 (B) naming A's rows, with the number of writes each must have refused.
fn guild_b_events() -> Vec<(Vec<String>, u64)> {
    vec![
        // Would move A's channel to B and rename it.
        (
            vec![frame(
                "CHANNEL_UPDATE",
                10,
                r#"{"id":"102","type":0,"guild_id":"2","name":"hijacked"}"#,
            )],
            1,
        ),
        // Would rename A's category, and with it the category of A's channel.
        (
            vec![frame(
                "CHANNEL_UPDATE",
                11,
                r#"{"id":"101","type":4,"guild_id":"2","name":"renamed"}"#,
            )],
            1,
        ),
        (
            vec![frame(
                "CHANNEL_DELETE",
                12,
                r#"{"id":"102","guild_id":"2"}"#,
            )],
            1,
        ),
        // B's own channel 201 is written; A's 101 is not taken over.
        (
            vec![frame(
                "GUILD_CREATE",
                13,
                r#"{"id":"2","channels":[{"id":"101","type":4,"name":"stolen"},{"id":"201","type":0,"name":"b-general"}]}"#,
            )],
            1,
        ),
        // The cache row and the stats row.
        (
            vec![frame(
                "MESSAGE_CREATE",
                14,
                r#"{"id":"1000","channel_id":"102","guild_id":"2","author":{"id":"43"},"content":"overwritten"}"#,
            )],
            2,
        ),
        (
            vec![frame(
                "MESSAGE_UPDATE",
                15,
                r#"{"id":"1000","channel_id":"102","guild_id":"2","content":"edited text"}"#,
            )],
            2,
        ),
        (
            vec![frame(
                "MESSAGE_REACTION_ADD",
                16,
                r#"{"user_id":"8","channel_id":"102","message_id":"1000","guild_id":"2","emoji":{"id":null,"name":"👍"}}"#,
            )],
            1,
        ),
        (
            vec![frame(
                "MESSAGE_REACTION_REMOVE",
                17,
                r#"{"user_id":"7","channel_id":"102","message_id":"1000","guild_id":"2","emoji":{"id":null,"name":"👍"}}"#,
            )],
            1,
        ),
        (
            vec![frame(
                "MESSAGE_DELETE",
                18,
                r#"{"id":"1000","channel_id":"102","guild_id":"2"}"#,
            )],
            1,
        ),
        // 9999 is nobody's: deleting it is no refusal.
        (
            vec![frame(
                "MESSAGE_DELETE_BULK",
                19,
                r#"{"ids":["1000","1001","9999"],"channel_id":"102","guild_id":"2"}"#,
            )],
            2,
        ),
        // B's ban paired with an entry that has the id of A's: its row would be A's row.
        (
            vec![
                frame(
                    "GUILD_BAN_ADD",
                    20,
                    r#"{"guild_id":"2","user":{"id":"77"}}"#,
                ),
                frame(
                    "GUILD_AUDIT_LOG_ENTRY_CREATE",
                    21,
                    r#"{"guild_id":"2","id":"5000","action_type":22,"target_id":"77","user_id":"3","reason":"raid"}"#,
                ),
            ],
            1,
        ),
        // A late entry with the id of A's: completes nothing of B's, and not A's row.
        (
            vec![frame(
                "GUILD_AUDIT_LOG_ENTRY_CREATE",
                22,
                r#"{"guild_id":"2","id":"5000","action_type":23,"target_id":"77","user_id":"3"}"#,
            )],
            1,
        ),
    ]
}

#[test]
fn events_of_one_guild_cannot_change_another_guilds_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(one_pod(&db), metrics.clone()).unwrap();
        let submit_all = |lines: Vec<String>| async {
            for line in lines {
                pipeline.submit(decode_frame(&line).unwrap()).await;
            }
            pipeline.drain().await;
        };
        submit_all(guild_a_events()).await;
        let before = guild_a_rows(&db);
        assert_eq!(before[1].len(), 2, "A's channels: {:?}", before[1]);
        assert_eq!(before[2].len(), 2, "A's channels' guild, type and parent");
        assert_eq!(before[3].len(), 2, "A's messages");
        assert_eq!(before[5].len(), 1, "A's reaction");
        assert_eq!(before[6].len(), 1, "A's ban");
        assert_eq!(metrics.cross_guild_writes_refused.get(), 0);

        let mut expected_refused = 0;
        for (lines, refused) in guild_b_events() {
            expected_refused += refused;
            let line = lines.join("\n");
            submit_all(lines).await;
            assert_eq!(
                metrics.cross_guild_writes_refused.get(),
                expected_refused,
                "refused writes after {line}"
            );
            assert_eq!(guild_a_rows(&db), before, "A's rows after {line}");
        }
        assert_eq!(expected_refused, 15);
        assert!(metrics
            .render()
            .contains("guild_gateway_cross_guild_writes_refused_total 15"));

        // B's own rows are written as usual.
        assert_eq!(count(&db, "SELECT COUNT(*) FROM guilds WHERE id = '2'"), 1);
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM channel_info c JOIN guild_channels g ON g.channel_id = c.id
                   WHERE g.guild_id = '2' AND c.id = '201'"
            ),
            1
        );
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM guild_channels WHERE guild_id = '2'"
            ),
            1
        );

        // A redelivering its own events is not a refusal.
        submit_all(guild_a_events()).await;
        assert_eq!(metrics.cross_guild_writes_refused.get(), 15);
        assert_eq!(metrics.handler_errors.get(), 0);
    });
}
