//! The SQLite file of one pod: opening it (schema, migrations, integrity), the writer's lock,
//! the read pool, and the small questions asked of the whole file.

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The schema, applied at every start (every statement is `IF NOT EXISTS`).
pub(crate) const SCHEMA: &str = include_str!("../../../schema.sql");

/// The writer connection's page cache, in KiB (SQLite's negative `cache_size`).
const WRITER_CACHE_KIB: i64 = -32 * 1024;

/// How long a connection waits for a lock (Litestream's checkpoints take one briefly).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) type ReadPool = r2d2::Pool<SqliteConnectionManager>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the database directory {path}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the database {path}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the database {path} failed its integrity check: {detail} (restore it from the replica; see deploy/RUNBOOK.md)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("preparing the database {path}")]
    Prepare {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("starting the checkpointer thread for {path}")]
    Checkpointer {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the read pool for {path}")]
    Pool { path: PathBuf, source: r2d2::Error },
    #[error("the database {path} is in use by another process (one writer per file)")]
    Locked {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error")]
    Sql(#[from] rusqlite::Error),
}

/// Opens (creating if needed) the pod's database for writing: WAL, synchronous=NORMAL,
/// busy_timeout, integrity checked, schema applied and earlier layouts migrated.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_owned(),
        source,
    })?;
    let prepare = |source| StoreError::Prepare {
        path: path.to_owned(),
        source,
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(prepare)?;
    // A file that is not a database fails here, at the first read.
    let check: Result<String, _> = conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
    match check {
        Ok(ok) if ok == "ok" => {}
        Ok(detail) => {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail,
            })
        }
        Err(e) => {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: e.to_string(),
            })
        }
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(prepare)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(prepare)?;
    // The writer's lookups (upserts by message id, channels, reactions) touch pages all over a
    // growing file: with SQLite's default 2 MiB cache most of them were re-read with pread,
    // which made the writer thread the pipeline's bottleneck (BENCHMARKS.md).
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)
        .map_err(prepare)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(prepare)?;
    // One transaction: a start that fails half-way leaves the file as it was.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(prepare)?;
    tx.execute_batch(SCHEMA).map_err(prepare)?;
    move_channel_columns_to_guild_channels(&tx).map_err(prepare)?;
    give_mod_actions_text_ids(&tx).map_err(prepare)?;
    add_missing_column(&tx, "gateway_ownership", "operation", "INTEGER").map_err(prepare)?;
    add_missing_column(&tx, "gateway_captured", "received_ms", "INTEGER").map_err(prepare)?;
    tx.commit().map_err(prepare)?;
    Ok(conn)
}

/// Adds a column that a newer schema has to a table an older release created.
fn add_missing_column(
    tx: &Transaction,
    table: &str,
    column: &str,
    declaration: &str,
) -> rusqlite::Result<()> {
    let present: bool = tx.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )?;
    if !present {
        tx.execute_batch(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
        ))?;
    }
    Ok(())
}

/// Files written before `guild_channels` existed kept a channel's guild, type and parent as
/// columns of `channel_info`. The TypeScript bot's dashboard joins `channel_info` with
/// `message_stats` and names `guild_id` unqualified, which those columns made ambiguous, so they
/// move to `guild_channels` (rows without a guild have no owner to move to: they stay as they
/// were, refused to every guild's writes). Does nothing on a fresh or already migrated file.
fn move_channel_columns_to_guild_channels(tx: &Transaction) -> rusqlite::Result<()> {
    let columns: Vec<String> = tx
        .prepare("SELECT name FROM pragma_table_info('channel_info')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !columns.iter().any(|c| c == "guild_id") {
        return Ok(());
    }
    // Every release that had guild_id had the other two as well; a file that somehow lacks
    // one still migrates, with NULL there.
    let moved = ["channel_type", "parent_id"].map(|c| {
        if columns.iter().any(|have| have == c) {
            c
        } else {
            "NULL"
        }
    });
    tx.execute(
        &format!(
            "INSERT OR IGNORE INTO guild_channels (channel_id, guild_id, channel_type, parent_id)
               SELECT id, guild_id, {}, {} FROM channel_info WHERE guild_id IS NOT NULL",
            moved[0], moved[1]
        ),
        [],
    )?;
    // An indexed column cannot be dropped.
    tx.execute_batch(
        "DROP INDEX IF EXISTS channel_info_guild; DROP INDEX IF EXISTS channel_info_parent;",
    )?;
    for column in ["guild_id", "channel_type", "parent_id"] {
        if columns.iter().any(|c| c == column) {
            tx.execute_batch(&format!("ALTER TABLE channel_info DROP COLUMN {column}"))?;
        }
    }
    Ok(())
}

/// A new random id in the form of JavaScript's `crypto.randomUUID()` (version 4), as SQL: what
/// the bot gives its `mod_actions` rows, so the gateway's rows look the same and stay unique
/// when guilds move between pods.
pub(crate) const NEW_UUID: &str = "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' \
    || substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) \
    || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))";

/// Files written before the bot's own tables moved here kept `mod_actions.id` as an INTEGER
/// sequence of the pod's own, where the bot writes UUID strings (which such a column refuses).
/// The table is rebuilt with the bot's TEXT id, each old row given a UUID in its old order.
/// Does nothing on a fresh or already migrated file.
fn give_mod_actions_text_ids(tx: &Transaction) -> rusqlite::Result<()> {
    let id_type: String = tx.query_row(
        "SELECT upper(type) FROM pragma_table_info('mod_actions') WHERE name = 'id'",
        [],
        |r| r.get(0),
    )?;
    if id_type != "INTEGER" {
        return Ok(());
    }
    // The new table's indexes take the old names: free them first.
    tx.execute_batch(
        "DROP INDEX IF EXISTS mod_actions_guild;
         DROP INDEX IF EXISTS mod_actions_target;
         DROP INDEX IF EXISTS idx_mod_actions_user_guild;
         ALTER TABLE mod_actions RENAME TO mod_actions_integer_ids;",
    )?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(&format!(
        "INSERT INTO mod_actions (id, user_id, guild_id, action_type, executor_id,
           executor_username, reason, duration, created_at, source_key)
         SELECT {NEW_UUID}, user_id, guild_id, action_type, executor_id, executor_username,
           reason, duration, created_at, source_key FROM mod_actions_integer_ids ORDER BY id;
         DROP TABLE mod_actions_integer_ids;"
    ))
}

/// An exclusive lock on a database file, held as long as this value lives.
pub(crate) struct WriterLock {
    _file: std::fs::File,
}

/// Takes the one-writer lock of the database at `path` (on `PATH.lock` beside it: SQLite's own
/// locks on the database file would be released if another descriptor of it were closed).
/// A second process on the same file gets [`StoreError::Locked`].
pub(crate) fn lock_writer(path: &Path) -> Result<WriterLock, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    let locked = |source| StoreError::Locked {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(locked)?;
    file.try_lock().map_err(|e| {
        locked(match e {
            std::fs::TryLockError::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("{} is held", lock_path.display()),
            ),
            std::fs::TryLockError::Error(e) => e,
        })
    })?;
    Ok(WriterLock { _file: file })
}

/// A pool of read-only connections for the guild actors' lookups and the HTTP status.
pub(crate) fn read_pool(path: &Path, size: u32) -> Result<ReadPool, StoreError> {
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(|c| c.busy_timeout(BUSY_TIMEOUT));
    r2d2::Pool::builder()
        .max_size(size)
        .build(manager)
        .map_err(|source| StoreError::Pool {
            path: path.to_owned(),
            source,
        })
}

/// Is the database writable right now? Takes the write lock and releases it.
pub(crate) fn check_writable(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
}

/// Bytes on disk of the database and its WAL.
pub(crate) fn database_size(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Count of rows in a table; for status and summaries.
pub fn count_rows(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_renames_use_the_parent_index_also_in_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        // A file from before the index.
        open_writer(&path)
            .unwrap()
            .execute_batch("DROP INDEX guild_channels_parent")
            .unwrap();
        let conn = open_writer(&path).unwrap();
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN UPDATE channel_info SET category = ?3 WHERE id IN
                   (SELECT channel_id FROM guild_channels WHERE parent_id = ?1 AND guild_id = ?2)",
            )
            .unwrap()
            .query_map(["101", "1", "x"], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("guild_channels_parent")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|step| step.starts_with("SCAN")),
            "{plan:?}"
        );
    }

    #[test]
    fn integer_mod_action_ids_become_uuids_in_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        // A file of an earlier release: an INTEGER sequence for ids.
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE mod_actions (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,
               guild_id TEXT NOT NULL, action_type TEXT NOT NULL, executor_id TEXT,
               executor_username TEXT, reason TEXT, duration TEXT, created_at TEXT NOT NULL,
               source_key TEXT UNIQUE);
             CREATE INDEX mod_actions_guild ON mod_actions (guild_id, created_at);
             INSERT INTO mod_actions (user_id, guild_id, action_type, created_at, source_key)
               VALUES ('u1', '1', 'ban', '2026-01-01', 'audit:1'), ('u2', '1', 'kick', '2026-01-02', NULL);",
        )
        .unwrap();
        drop(old);
        let conn = open_writer(&path).unwrap();
        let rows: Vec<(String, String, Option<String>)> = conn
            .prepare("SELECT id, user_id, source_key FROM mod_actions ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].1.as_str(), rows[0].2.as_deref()),
            ("u1", Some("audit:1"))
        );
        assert_eq!((rows[1].1.as_str(), rows[1].2.as_deref()), ("u2", None));
        for (id, ..) in &rows {
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
            assert_eq!(id.as_bytes()[14], b'4', "{id}");
        }
        assert_ne!(rows[0].0, rows[1].0);
        // The bot's id and index, and the source_key's uniqueness, on the rebuilt table.
        conn.execute(
            "INSERT INTO mod_actions (id, user_id, guild_id, action_type, created_at)
             VALUES ('7b0c1e6a-1111-4222-8333-444455556666', 'u3', '1', 'ban', '2026-01-03')",
            [],
        )
        .unwrap();
        let dup = conn.execute(
            "INSERT INTO mod_actions (id, user_id, guild_id, action_type, created_at, source_key)
             VALUES ('x', 'u4', '1', 'ban', '2026-01-04', 'audit:1')",
            [],
        );
        assert!(dup.is_err());
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE tbl_name = 'mod_actions' AND name IN
                   ('idx_mod_actions_user_guild', 'mod_actions_guild', 'mod_actions_target')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 3);
        // A second open changes nothing.
        drop(conn);
        let again: i64 = open_writer(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM mod_actions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(again, 3);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let err = open_writer(&path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("integrity check"), "{err}");
    }
}
