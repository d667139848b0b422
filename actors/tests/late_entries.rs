//! Moderation rows completed late: an event written without its audit log entry (its window
//! closed, or a flush at shutdown or at the end of a replay) gets the entry's executor and
//! reason when the entry arrives later, in the same run or after a restart, and is never
//! written twice. Real actors, real SQLite files.

mod common;

use common::*;

use gateway_actors::event::decode_frame;
use gateway_actors::metrics::Metrics;
use gateway_actors::{Pipeline, PipelineConfig};
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn config(db: &Path) -> PipelineConfig {
    let mut config = one_pod(db);
    config.audit_window = Duration::from_secs(1);
    config
}

fn frame(t: &str, seq: u64, d: &str) -> String {
    format!(r#"{{"op":0,"t":"{t}","s":{seq},"d":{d}}}"#)
}

fn ready(seq: u64) -> String {
    frame("READY", seq, r#"{"user":{"id":"4"}}"#)
}

fn ban(seq: u64, user: u64) -> String {
    frame(
        "GUILD_BAN_ADD",
        seq,
        &format!(r#"{{"guild_id":"1","user":{{"id":"{user}"}}}}"#),
    )
}

fn timeout(seq: u64, user: u64) -> String {
    frame(
        "GUILD_MEMBER_UPDATE",
        seq,
        &format!(
            r#"{{"guild_id":"1","user":{{"id":"{user}"}},"communication_disabled_until":"2099-01-01T00:00:00.000000+00:00"}}"#
        ),
    )
}

/// An audit log entry of guild 1 by `executor`, for `user`.
fn entry(seq: u64, id: u64, action: u16, user: u64, executor: u64) -> String {
    let changes = if action == 24 {
        r#","changes":[{"key":"communication_disabled_until","new_value":"2099-01-01T00:00:00.000000+00:00"}]"#
    } else {
        ""
    };
    frame(
        "GUILD_AUDIT_LOG_ENTRY_CREATE",
        seq,
        &format!(
            r#"{{"guild_id":"1","id":"{id}","action_type":{action},"target_id":"{user}","user_id":"{executor}","reason":"raid"{changes}}}"#
        ),
    )
}

/// (user, action, executor, reason) of every mod_actions row, by id.
fn mod_rows(db: &Path) -> Vec<(String, String, Option<String>, Option<String>)> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT user_id, action_type, executor_id, reason FROM mod_actions ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn row(
    user: &str,
    action: &str,
    executor: Option<&str>,
    reason: &str,
) -> (String, String, Option<String>, Option<String>) {
    (
        user.into(),
        action.into(),
        executor.map(Into::into),
        Some(reason.into()),
    )
}

async fn submit(pipeline: &Pipeline, lines: &[String]) {
    for line in lines {
        pipeline.submit(decode_frame(line).unwrap()).await;
    }
}

/// Waits until every event is committed without flushing what waits: windows close by time.
async fn settle(pipeline: &Pipeline) {
    eventually("every event committed", || pipeline.status().in_flight == 0).await;
}

#[test]
fn a_late_entry_completes_its_row_in_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(config(&db), metrics.clone()).unwrap();
        submit(&pipeline, &[ready(1)]).await;

        // The window closes on the ban: written without executor.
        submit(&pipeline, &[ban(2, 77)]).await;
        settle(&pipeline).await;
        assert_eq!(mod_rows(&db), vec![row("77", "ban", None, "")]);
        // Its entry, after the window: the row is completed, not written again.
        submit(&pipeline, &[entry(3, 5000, 22, 77, 3)]).await;
        settle(&pipeline).await;
        let completed = vec![row("77", "ban", Some("3"), "raid")];
        assert_eq!(mod_rows(&db), completed);
        // Redelivered, the entry and the event change nothing more.
        submit(&pipeline, &[entry(3, 5000, 22, 77, 3)]).await;
        settle(&pipeline).await;
        submit(&pipeline, &[ban(2, 77)]).await;
        settle(&pipeline).await;
        assert_eq!(mod_rows(&db), completed);

        // Flushed (end of a replay), then completed by its entry.
        submit(&pipeline, &[timeout(4, 78)]).await;
        pipeline.drain().await;
        submit(&pipeline, &[entry(5, 5001, 24, 78, 3)]).await;
        pipeline.drain().await;
        let mut expected = completed.clone();
        expected.push(row("78", "timeout", Some("3"), "raid"));
        assert_eq!(mod_rows(&db), expected);

        // The entry first, its event within the window: paired as always.
        submit(&pipeline, &[entry(6, 5002, 22, 79, 3), ban(7, 79)]).await;
        settle(&pipeline).await;
        expected.push(row("79", "ban", Some("3"), "raid"));
        assert_eq!(mod_rows(&db), expected);

        // An entry whose event never came writes nothing.
        submit(&pipeline, &[entry(8, 5003, 22, 80, 3)]).await;
        pipeline.drain().await;
        assert_eq!(mod_rows(&db), expected);

        // A late entry saying the bot did it: the bot's own actions are not logged.
        submit(&pipeline, &[ban(9, 81)]).await;
        pipeline.drain().await;
        assert_eq!(mod_rows(&db).len(), expected.len() + 1);
        submit(&pipeline, &[entry(10, 5004, 22, 81, 4)]).await;
        pipeline.drain().await;
        assert_eq!(mod_rows(&db), expected);

        assert_eq!(metrics.cross_guild_writes_refused.get(), 0);
        assert_eq!(metrics.handler_errors.get(), 0);
    });
}

#[test]
fn a_late_entry_completes_its_row_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    // A process that stops with a ban and a timeout waiting: both are written without executor.
    let run = |lines: Vec<String>| {
        in_system(async {
            let metrics = Arc::new(Metrics::new(0, 1).unwrap());
            let pipeline = Pipeline::start(config(&db), metrics.clone()).unwrap();
            submit(&pipeline, &lines).await;
            pipeline.drain().await;
            pipeline.shutdown();
            (
                metrics.cross_guild_writes_refused.get(),
                metrics.handler_errors.get(),
            )
        })
    };
    assert_eq!(run(vec![ready(1), ban(2, 77), timeout(3, 78)]), (0, 0));
    assert_eq!(
        mod_rows(&db),
        vec![row("77", "ban", None, ""), row("78", "timeout", None, "")]
    );

    // The next process receives the entries.
    let entries = vec![
        ready(1),
        entry(2, 5000, 22, 77, 3),
        entry(3, 5001, 24, 78, 3),
    ];
    assert_eq!(run(entries.clone()), (0, 0));
    let completed = vec![
        row("77", "ban", Some("3"), "raid"),
        row("78", "timeout", Some("3"), "raid"),
    ];
    assert_eq!(mod_rows(&db), completed);

    // Another gets them again, and then the ban with its entry in time: no second row.
    assert_eq!(run(entries), (0, 0));
    assert_eq!(mod_rows(&db), completed);
    assert_eq!(
        run(vec![ready(1), ban(2, 77), entry(3, 5000, 22, 77, 3)]),
        (0, 0)
    );
    assert_eq!(mod_rows(&db), completed);
}

/// Several moderation events of one guild waiting in one window: each is written when its own
/// window closes, with no later event and no flush (the timer used to be set once, for the
/// oldest, and the others waited for the guild's next moderation event).
#[test]
fn every_waiting_event_is_written_when_its_window_closes_without_a_later_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(config(&db), metrics.clone()).unwrap();
        submit(&pipeline, &[ready(1), ban(2, 77)]).await;
        // Inside the first ban's window: a timeout and a second ban, no entries.
        tokio::time::sleep(Duration::from_millis(300)).await;
        submit(&pipeline, &[timeout(3, 78)]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        submit(&pipeline, &[ban(4, 79)]).await;
        settle(&pipeline).await;
        assert_eq!(
            mod_rows(&db),
            vec![
                row("77", "ban", None, ""),
                row("78", "timeout", None, ""),
                row("79", "ban", None, "")
            ]
        );
        assert_eq!(pipeline.status().last_seq_committed, Some(4));
        pipeline.shutdown();
    });
}

/// A timeout captured by a rescale's new owner and re-applied after its end has passed (a long
/// pause) is still logged: it is judged as of when the pod received it, which the capture log
/// keeps.
#[test]
fn a_captured_timeout_is_judged_as_of_its_receipt() {
    use gateway_actors::partition::{md5_u32, Partition, Strategy};
    use gateway_actors::rescale::ownership::Layout;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    // A guild that pod 1, standby under one pod, receives when there are two.
    let guild = (1u64..).find(|g| md5_u32(&g.to_string()) % 2 == 1).unwrap();
    let mut config = config(&db);
    config.sharding = Partition::new(Strategy::Md5, 1, 1);
    let until_ms = gateway_actors::time::now_ms() + 1_500;
    let until = gateway_actors::time::iso8601(
        std::time::UNIX_EPOCH + Duration::from_millis(until_ms as u64),
    );
    let update = frame(
        "GUILD_MEMBER_UPDATE",
        2,
        &format!(
            r#"{{"guild_id":"{guild}","user":{{"id":"78"}},"communication_disabled_until":"{until}"}}"#
        ),
    );
    in_system(async {
        let metrics = Arc::new(Metrics::new(1, 1).unwrap());
        let pipeline = Pipeline::start(config, metrics).unwrap();
        let layout = |pods| Layout {
            pods,
            strategy: Strategy::Md5,
            shards: 1,
        };
        pipeline.prepare(2, layout(2), layout(1), 7).await.unwrap();
        submit(&pipeline, &[ready(1)]).await;
        // From the sessions this standby pod opened for the new layout (epoch 2).
        pipeline
            .submit_from(decode_frame(&update).unwrap(), 2)
            .await;
        settle(&pipeline).await;
        // The pause: the timeout's end passes before the guild goes live here.
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert!(gateway_actors::time::now_ms() > until_ms);
        let (_, _, replayed, _) = pipeline.import(2, Vec::new(), None).await.unwrap();
        assert_eq!(replayed, 1);
        settle(&pipeline).await;
        assert_eq!(mod_rows(&db), vec![row("78", "timeout", None, "")]);
        pipeline.shutdown();
    });
}

/// A kick whose event reached the old owner before a rescale's freeze and whose audit entry
/// reaches only the new owner after it: the waiting event is handed over with the guild, and
/// the new owner pairs the two (written as they stood, the member would count as having left,
/// and the kick would be lost).
#[test]
fn a_waiting_moderation_event_is_handed_over_at_the_freeze() {
    use gateway_actors::partition::{md5_u32, Partition, Strategy};
    use gateway_actors::rescale::ownership::Layout;
    let dir = tempfile::tempdir().unwrap();
    let (old_db, new_db) = (
        dir.path().join("old.sqlite3"),
        dir.path().join("new.sqlite3"),
    );
    let guild = (1u64..).find(|g| md5_u32(&g.to_string()) % 2 == 1).unwrap();
    let mut old_config = one_pod(&old_db);
    old_config.audit_window = Duration::from_secs(30);
    let mut new_config = one_pod(&new_db);
    new_config.sharding = Partition::new(Strategy::Md5, 1, 1);
    let kick = frame(
        "GUILD_MEMBER_REMOVE",
        2,
        &format!(r#"{{"guild_id":"{guild}","user":{{"id":"77"}}}}"#),
    );
    let entry = frame(
        "GUILD_AUDIT_LOG_ENTRY_CREATE",
        3,
        &format!(
            r#"{{"guild_id":"{guild}","id":"5000","action_type":20,"target_id":"77","user_id":"3","reason":"raid"}}"#
        ),
    );
    let create = frame(
        "GUILD_CREATE",
        1,
        &format!(r#"{{"id":"{guild}","name":"g","channels":[],"threads":[]}}"#),
    );
    in_system(async {
        let old = Pipeline::start(old_config, Arc::new(Metrics::new(0, 1).unwrap())).unwrap();
        let new = Pipeline::start(new_config, Arc::new(Metrics::new(1, 1).unwrap())).unwrap();
        let layout = |pods| Layout {
            pods,
            strategy: Strategy::Md5,
            shards: 1,
        };
        submit(&old, &[ready(1), create]).await;
        for pipeline in [&old, &new] {
            pipeline.prepare(2, layout(2), layout(1), 9).await.unwrap();
        }
        // The kick reaches the old owner and waits for its entry.
        submit(&old, &[kick]).await;
        // Freeze (no anchor: the group freezes at once), export, import.
        let (_, report) = old
            .freeze(
                2,
                Vec::new(),
                Duration::from_secs(5),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(report.anchors_missed, 0);
        // The entry comes after the freeze point: only the new owner has it.
        new.submit_from(decode_frame(&entry).unwrap(), 2).await;
        settle(&new).await;
        settle(&old).await;
        let export = dir.path().join("export.sqlite3");
        old.export(2, 1, export.clone()).await.unwrap();
        new.import(2, vec![export], None).await.unwrap();
        settle(&new).await;
        assert_eq!(
            mod_rows(&new_db),
            vec![row("77", "kick", Some("3"), "raid")]
        );
        assert_eq!(mod_rows(&old_db), vec![]);
        new.shutdown();
        old.shutdown();
    });
}

#[test]
fn a_drain_flushes_what_waits_only_after_the_queued_events() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        let mut config = config(&db);
        // Windows that never close by time in this test, one event in the guild's mailbox at
        // a time, and slow events: at the drain, the ban and its entry are still queued in
        // the guild's overflow behind the messages.
        config.audit_window = Duration::from_secs(3600);
        config.guild_mailbox = 1;
        config.slow_hook = Some(Arc::new(|_| Some(Duration::from_millis(20))));
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(config, metrics.clone()).unwrap();
        let message = |seq: u64| {
            frame(
                "MESSAGE_CREATE",
                seq,
                &format!(
                    r#"{{"id":"{seq}","channel_id":"7","guild_id":"1","author":{{"id":"42"}},"content":"hi"}}"#
                ),
            )
        };
        let mut lines: Vec<String> = vec![ready(1)];
        lines.extend((2..12).map(message));
        // A ban with its entry, and one whose entry never comes.
        lines.extend([ban(12, 77), entry(13, 5000, 22, 77, 3), ban(14, 78)]);
        submit(&pipeline, &lines).await;
        // Flushing before the queued events are handled would leave the second ban waiting
        // out its hour-long window: the drain would not end.
        tokio::time::timeout(Duration::from_secs(120), pipeline.drain())
            .await
            .expect("the drain ends once the queued events are handled");
        assert!(
            metrics.events_overflowed.get() > 0,
            "the guild's events queued"
        );
        assert_eq!(
            mod_rows(&db),
            vec![
                row("77", "ban", Some("3"), "raid"),
                row("78", "ban", None, "")
            ]
        );
        assert_eq!(pipeline.status().in_flight, 0);
    });
}
