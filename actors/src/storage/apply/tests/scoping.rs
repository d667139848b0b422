//! A guild's writes never touch another guild's rows, whichever table they name.

use super::*;

#[test]
fn writes_of_one_guild_never_change_another_guilds_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open_writer(&dir.path().join("db.sqlite3")).unwrap();
    let guild_a = guild_a_rows();
    for op in guild_a {
        assert_eq!(apply_one(&mut conn, op), Outcome::Done);
    }
    let before = every_row(&conn);

    let guild_b = foreign_writes();
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

/// A row in every table a guild writes, for guild A.
fn guild_a_rows() -> Vec<Op> {
    vec![
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
    ]
}

/// Guild B's writes aimed at each of guild A's rows: every one must be refused.
fn foreign_writes() -> Vec<Op> {
    vec![
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
    ]
}
