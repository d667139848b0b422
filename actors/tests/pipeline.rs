//! The actor pipeline under conditions a replay of the sample does not reach: a guild that
//! is stuck, and guild actors that passivate and come back. Real actors, real SQLite files.

mod common;

use common::*;

use gateway_actors::event::{decode_frame, Id};
use gateway_actors::metrics::Metrics;
use gateway_actors::Pipeline;
use rusqlite::Connection;
use std::sync::Arc;
use std::time::Duration;

fn message(seq: u64, guild: u64, channel: u64, id: u64) -> String {
    format!(
        r#"{{"op":0,"t":"MESSAGE_CREATE","s":{seq},"d":{{"id":"{id}","channel_id":"{channel}","guild_id":"{guild}","author":{{"id":"42"}},"content":"hello there world"}}}}"#
    )
}

#[test]
fn a_stuck_guild_is_dropped_after_the_stuck_timeout_and_the_others_keep_flowing() {
    const STUCK: u64 = 999_000_000_000_000_001;
    // Larger than any other guild's share (20 events), so only the stuck guild overflows.
    const CAPACITY: usize = 64;
    const STUCK_EVENTS: u64 = 100;
    const OTHER_EVENTS: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        let mut config = one_pod(&db);
        config.guild_mailbox = CAPACITY;
        config.guild_workers = 2;
        config.guild_stuck = Duration::from_secs(1);
        // The stuck guild waits an hour per event: it will not finish during this test.
        config.slow_hook = Some(Arc::new(|guild: Id| {
            (guild.0 == STUCK).then_some(Duration::from_secs(3600))
        }));
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(config, metrics.clone()).unwrap();

        let mut seq = 0;
        let mut stuck_sent = 0u64;
        for i in 0..OTHER_EVENTS {
            seq += 1;
            pipeline
                .submit(decode_frame(&message(seq, 1000 + i % 100, 7, 10_000 + i)).unwrap())
                .await;
            if i % (OTHER_EVENTS / STUCK_EVENTS) == 0 {
                seq += 1;
                stuck_sent += 1;
                pipeline
                    .submit(decode_frame(&message(seq, STUCK, 7, 900_000 + i)).unwrap())
                    .await;
            }
        }
        assert_eq!(stuck_sent, STUCK_EVENTS);

        // Everything except what the stuck guild holds completes: its mailbox (CAPACITY
        // events, one of them in its handler) and nothing more, since once the stuck timeout
        // passed its overflow was dropped, counted.
        eventually("every other guild's events are done", || {
            pipeline.status().in_flight == CAPACITY as u64
        })
        .await;
        assert_eq!(metrics.shed.get(), STUCK_EVENTS - CAPACITY as u64);
        assert_eq!(
            metrics.events_overflowed.get(),
            STUCK_EVENTS - CAPACITY as u64
        );
        assert_eq!(metrics.guild_mailbox_depth.get(), CAPACITY as i64);
        assert_eq!(metrics.guild_overflow_depth.get(), 0);
        assert_eq!(metrics.guilds_stuck.get(), 1);
        // A stuck guild's new events are dropped at once, counted.
        seq += 1;
        pipeline
            .submit(decode_frame(&message(seq, STUCK, 7, 999_999)).unwrap())
            .await;
        eventually("the new event of the stuck guild is dropped", || {
            metrics.shed.get() == STUCK_EVENTS - CAPACITY as u64 + 1
        })
        .await;
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM message_stats WHERE guild_id <> '999000000000000001'"
            ),
            OTHER_EVENTS as i64
        );
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM message_stats WHERE guild_id = '999000000000000001'"
            ),
            0
        );
    });
}

#[test]
fn a_passivated_guild_comes_back_with_its_channels() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        let mut config = one_pod(&db);
        config.guild_idle = Duration::from_millis(100);
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(config, metrics.clone()).unwrap();
        let guild_create = r#"{"op":0,"t":"GUILD_CREATE","s":1,"d":{"id":"500","channels":[
            {"id":"501","type":4,"name":"Lounge"},
            {"id":"502","type":0,"name":"general","parent_id":"501"},
            {"id":"503","type":13,"name":"stage","parent_id":"501"}]}}"#
            .replace('\n', "");
        pipeline.submit(decode_frame(&guild_create).unwrap()).await;
        pipeline.drain().await;
        assert_eq!(metrics.guild_actors.get(), 1);
        eventually("the idle guild actor stops", || {
            metrics.guild_actors.get() == 0
        })
        .await;

        // A new actor must know the channels from the database: the category of 502 and
        // that 503 (a stage channel) does not count.
        pipeline
            .submit(decode_frame(&message(2, 500, 502, 600)).unwrap())
            .await;
        pipeline
            .submit(decode_frame(&message(3, 500, 503, 601)).unwrap())
            .await;
        pipeline.drain().await;
        assert_eq!(metrics.guild_actors.get(), 1);
        let category: Option<String> = Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT channel_category FROM message_stats WHERE message_id = '600'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(category.as_deref(), Some("Lounge"));
        assert_eq!(
            count(
                &db,
                "SELECT COUNT(*) FROM message_stats WHERE message_id = '601'"
            ),
            0
        );
        assert_eq!(count(&db, "SELECT COUNT(*) FROM message_cache"), 2);
        eventually("and stops again when idle", || {
            metrics.guild_actors.get() == 0
        })
        .await;
    });
}

#[test]
fn reactions_count_once_when_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let reaction = |t: &str, user: u64| {
        format!(
            r#"{{"op":0,"t":"{t}","s":null,"d":{{"user_id":"{user}","channel_id":"7","message_id":"700","guild_id":"1","emoji":{{"id":null,"name":"👍"}}}}}}"#
        )
    };
    let react_count = || {
        count(
            &db,
            "SELECT react_count FROM message_stats WHERE message_id = '700'",
        )
    };
    in_system(async {
        let pipeline =
            Pipeline::start(one_pod(&db), Arc::new(Metrics::new(0, 1).unwrap())).unwrap();
        let phases: [(&[String], i64); 3] = [
            // user 1 twice (a redelivery) and user 2: two reactions
            (
                &[
                    message(1, 1, 7, 700),
                    reaction("MESSAGE_REACTION_ADD", 1),
                    reaction("MESSAGE_REACTION_ADD", 1),
                    reaction("MESSAGE_REACTION_ADD", 2),
                ],
                2,
            ),
            // user 2 removes, redelivered: one left
            (
                &[
                    reaction("MESSAGE_REACTION_REMOVE", 2),
                    reaction("MESSAGE_REACTION_REMOVE", 2),
                ],
                1,
            ),
            // a remove never added (a reaction from before creation) still counts, down to 0 and no lower
            (
                &[
                    reaction("MESSAGE_REACTION_REMOVE", 3),
                    reaction("MESSAGE_REACTION_REMOVE", 4),
                ],
                0,
            ),
        ];
        for (lines, expected) in phases {
            for line in lines {
                pipeline.submit(decode_frame(line).unwrap()).await;
            }
            pipeline.drain().await;
            assert_eq!(react_count(), expected);
        }
    });
}

fn update(seq: u64, guild: u64, channel: u64, id: u64, content: &str) -> String {
    format!(
        r#"{{"op":0,"t":"MESSAGE_UPDATE","s":{seq},"d":{{"id":"{id}","channel_id":"{channel}","guild_id":"{guild}","content":"{content}"}}}}"#
    )
}

#[test]
fn a_burst_for_one_guild_overflows_in_order_and_loses_nothing() {
    const BUSY: u64 = 777;
    // 10,000 messages, each created then edited: an edit applied before its create would be
    // overwritten by the create, so the final contents prove per-guild order.
    const BURST_MESSAGES: u64 = 10_000;
    const OTHER_GUILDS: u64 = 100;
    const OTHER_EVENTS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        // A live pod's settings: the default mailbox (1024) and stuck timeout (far longer than
        // this test's hiccup).
        let mut config = one_pod(&db);
        config.guild_workers = 2;
        // The busy guild's first event hangs for 2 s, so its burst piles up behind it.
        let hiccup = Arc::new(std::sync::atomic::AtomicBool::new(true));
        config.slow_hook = Some(Arc::new(move |guild: Id| {
            (guild.0 == BUSY && hiccup.swap(false, std::sync::atomic::Ordering::SeqCst))
                .then_some(Duration::from_secs(2))
        }));
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(config, metrics.clone()).unwrap();

        let mut seq = 0;
        for i in 0..BURST_MESSAGES {
            seq += 1;
            let frame = message(seq, BUSY, 7, 1_000_000 + i);
            pipeline.submit(decode_frame(&frame).unwrap()).await;
            seq += 1;
            let frame = update(seq, BUSY, 7, 1_000_000 + i, &format!("edited {i}"));
            pipeline.submit(decode_frame(&frame).unwrap()).await;
        }
        for i in 0..OTHER_EVENTS {
            seq += 1;
            let frame = message(seq, 1000 + i % OTHER_GUILDS, 8, 5_000_000 + i);
            pipeline.submit(decode_frame(&frame).unwrap()).await;
        }
        let others = "SELECT COUNT(*) FROM message_stats WHERE guild_id <> '777'";
        eventually("the other guilds are committed", || {
            count(&db, others) == OTHER_EVENTS as i64
        })
        .await;
        // ... while the busy guild still has a backlog waiting in its overflow.
        assert!(
            metrics.guild_overflow_depth.get() > 0,
            "the busy guild had drained before the others were committed"
        );

        pipeline.drain().await;
        assert_eq!(metrics.shed.get(), 0);
        assert_eq!(metrics.guilds_stuck.get(), 0);
        assert!(metrics.events_overflowed.get() >= 2 * BURST_MESSAGES - 1024);
        assert_eq!(metrics.guild_overflow_depth.get(), 0);
        assert_eq!(metrics.guild_mailbox_depth.get(), 0);
        let busy = "SELECT COUNT(*) FROM message_stats WHERE guild_id = '777'";
        assert_eq!(count(&db, busy), BURST_MESSAGES as i64);
        let out_of_order = "SELECT COUNT(*) FROM message_cache
            WHERE guild_id = '777' AND content <> 'edited ' || (CAST(message_id AS INTEGER) - 1000000)";
        assert_eq!(count(&db, out_of_order), 0);
        assert_eq!(pipeline.status().in_flight, 0);
    });
}

#[test]
fn a_lock_held_past_busy_timeout_delays_commits_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(one_pod(&db), metrics.clone()).unwrap();
        pipeline
            .submit(decode_frame(&message(1, 1, 7, 1)).unwrap())
            .await;
        pipeline.drain().await;

        // Another connection holds the write lock for longer than the writer's busy_timeout.
        let holder = Connection::open(&db).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        for seq in 2..=100 {
            pipeline
                .submit(decode_frame(&message(seq, 1, 7, seq)).unwrap())
                .await;
        }
        let busy = gateway_actors::BUSY_TIMEOUT + Duration::from_secs(1);
        eventually("the writer reports the lock", || {
            pipeline.storage_fault().is_some()
        })
        .await;
        tokio::time::sleep(busy).await;
        let fault = pipeline
            .storage_fault()
            .expect("still failing while the lock is held");
        assert!(!fault.persistent, "a lock is transient: {fault:?}");
        let status = pipeline.status();
        assert_eq!(
            status.last_seq_committed,
            Some(1),
            "nothing after the lock is done"
        );
        assert_eq!(status.in_flight, 99);
        assert!(pipeline
            .check_writable(Duration::from_secs(1))
            .await
            .is_err());

        holder.execute_batch("ROLLBACK").unwrap();
        pipeline.drain().await;
        assert!(pipeline.storage_fault().is_none());
        assert_eq!(pipeline.status().last_seq_committed, Some(100));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM message_stats"), 100);
        assert_eq!(metrics.handler_errors.get(), 0);
        assert!(
            metrics
                .write_retries
                .with_label_values(&["transient"])
                .get()
                >= 1
        );
        drop(holder);
    });
}

#[test]
fn a_second_pipeline_on_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    in_system(async {
        let first = Pipeline::start(one_pod(&db), Arc::new(Metrics::new(0, 1).unwrap())).unwrap();
        let second = Pipeline::start(one_pod(&db), Arc::new(Metrics::new(0, 1).unwrap()));
        let error = second
            .err()
            .expect("the second writer is refused")
            .to_string();
        assert!(error.contains(&db.display().to_string()), "{error}");
        assert!(error.contains("in use by another process"), "{error}");
        first.shutdown();
        // Once the first is gone, the file can be opened again.
        Pipeline::start(one_pod(&db), Arc::new(Metrics::new(0, 1).unwrap())).unwrap();
    });
}

#[test]
fn writes_that_wait_for_room_in_the_writer_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    let frame = |t: &str, seq: u64, d: String| {
        decode_frame(&format!(r#"{{"op":0,"t":"{t}","s":{seq},"d":{d}}}"#)).unwrap()
    };
    let user = |t: &str, seq: u64, user: u64| {
        frame(
            t,
            seq,
            format!(r#"{{"guild_id":"5","user":{{"id":"{user}"}}}}"#),
        )
    };
    in_system(async {
        let mut config = one_pod(&db);
        // One write command at a time, and moderation events that wait for their audit log
        // entries until the drain flushes them together.
        config.writer_mailbox = 1;
        config.audit_window = Duration::from_secs(3600);
        let metrics = Arc::new(Metrics::new(0, 1).unwrap());
        let pipeline = Pipeline::start(config, metrics.clone()).unwrap();
        pipeline
            .submit(decode_frame(&message(1, 6, 7, 1)).unwrap())
            .await;
        pipeline.drain().await;

        // A ban, its unban, another member's ban: each waits for its entry.
        pipeline.submit(user("GUILD_BAN_ADD", 2, 42)).await;
        pipeline.submit(user("GUILD_BAN_REMOVE", 3, 42)).await;
        pipeline.submit(user("GUILD_BAN_ADD", 4, 43)).await;
        // Another guild's message takes the writer's one place, held while the lock is.
        let holder = Connection::open(&db).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        pipeline
            .submit(decode_frame(&message(5, 6, 7, 2)).unwrap())
            .await;
        eventually("the writer is stuck on the lock", || {
            pipeline.storage_fault().is_some()
        })
        .await;
        // The drain flushes the three moderation rows at once; all of them wait for room.
        let drained = async {
            eventually("the three rows wait for the writer", || {
                metrics.writes_waiting_for_writer.get() == 3
            })
            .await;
            holder.execute_batch("ROLLBACK").unwrap();
        };
        tokio::join!(pipeline.drain(), drained);

        let conn = Connection::open(&db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT action_type || ' ' || user_id FROM mod_actions
                 WHERE guild_id = '5' ORDER BY rowid",
            )
            .unwrap();
        let order: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(order, ["ban 42", "unban 42", "ban 43"]);
        assert_eq!(pipeline.status().in_flight, 0);
    });
}
