//! Moderation rows: an unpaired row completed by its event redelivered or by a late entry,
//! and a late kick entry turning an unpaired removal into its row.

use super::*;

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
        .prepare("SELECT source_key, executor_id FROM mod_actions ORDER BY rowid")
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

/// One scenario, step by step on the same file (each step depends on the rows the previous
/// ones left), which is why it runs past the usual length.
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
            .prepare("SELECT source_key, executor_id, reason FROM mod_actions ORDER BY rowid")
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
