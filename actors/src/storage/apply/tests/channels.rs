//! The channel table's migration: columns of earlier files move to guild_channels once.

use super::*;

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

/// One migration followed from an old file to a reopened one, step by step, which is why it
/// runs past the usual length.
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
