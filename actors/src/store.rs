//! The SQLite file of one pod: opening it, its schema, and the write operations.
//!
//! Handlers never touch SQL; they produce [`Op`]s, which the single writer applies in batched
//! transactions. Every op is idempotent, so a stream delivered twice (recovery, resharding)
//! leaves the same rows.

use crate::event::Id;
use crate::stats::MessageStats;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, OpenFlags, Transaction};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The schema, applied at every start (every statement is `IF NOT EXISTS`).
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// The writer connection's page cache, in KiB (SQLite's negative `cache_size`).
const WRITER_CACHE_KIB: i64 = -32 * 1024;

/// How long a connection waits for a lock (Litestream's checkpoints take one briefly).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub type ReadPool = r2d2::Pool<SqliteConnectionManager>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the database {path} failed its integrity check: {detail} (restore it from the replica; see deploy/RUNBOOK.md)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("preparing the database {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("building the read pool for {path}: {source}")]
    Pool { path: PathBuf, source: r2d2::Error },
    #[error("the database {path} is in use by another process (one writer per file): {source}")]
    Locked {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Opens (creating if needed) the pod's database for writing: WAL, synchronous=NORMAL,
/// busy_timeout, integrity checked, schema applied.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
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
    conn.execute_batch(SCHEMA).map_err(prepare)?;
    Ok(conn)
}

/// An exclusive lock on a database file, held as long as this value lives.
pub struct WriterLock {
    _file: std::fs::File,
}

/// Takes the one-writer lock of the database at `path` (on `PATH.lock` beside it: SQLite's own
/// locks on the database file would be released if another descriptor of it were closed).
/// A second process on the same file gets [`StoreError::Locked`].
pub fn lock_writer(path: &Path) -> Result<WriterLock, StoreError> {
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
pub fn read_pool(path: &Path, size: u32) -> Result<ReadPool, StoreError> {
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

/// A `message_stats` row for a new message.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub message_id: Id,
    pub author_id: Id,
    pub guild_id: Id,
    pub channel_id: Id,
    pub channel_category: Option<String>,
    pub recipient_id: Option<Id>,
    pub react_count: i64,
    pub sent_at: i64,
    pub stats: MessageStats,
}

/// One idempotent write.
#[derive(Debug, Clone)]
pub enum Op {
    /// A `guilds` row if absent; settings are never overwritten.
    EnsureGuild(Id),
    UpsertChannel {
        id: Id,
        guild_id: Id,
        name: Option<String>,
        category: Option<String>,
        kind: u8,
        parent_id: Option<Id>,
    },
    /// A channel was (re)named: its children's category follows.
    RenameParent {
        parent_id: Id,
        name: Option<String>,
    },
    DeleteChannel(Id),
    /// Insert or replace a message's stats; its reaction history starts again.
    InsertMessage(Box<MessageRow>),
    UpdateMessageStats {
        message_id: Id,
        stats: MessageStats,
    },
    DeleteMessage(Id),
    Reaction {
        message_id: Id,
        user_id: Id,
        emoji: String,
        added: bool,
    },
    UpsertCache {
        message_id: Id,
        guild_id: Id,
        channel_id: Id,
        user_id: Id,
        content: String,
    },
    UpdateCache {
        message_id: Id,
        content: String,
    },
    /// A `mod_actions` row; with a `source_key`, written once however often it is delivered.
    InsertModAction {
        guild_id: Id,
        user_id: Id,
        action: &'static str,
        executor_id: Option<Id>,
        reason: String,
        duration: Option<String>,
        source_key: Option<String>,
    },
    /// A member's communication_disabled_until (None: no timeout).
    SetMemberTimeout {
        guild_id: Id,
        user_id: Id,
        until_ms: Option<i64>,
    },
}

fn opt_id(id: Option<Id>) -> Option<String> {
    id.map(|i| i.to_string())
}

/// Applies one op inside the writer's transaction. `now` is the processing time (ISO-8601 UTC).
pub fn apply(tx: &Transaction, op: &Op, now: &str) -> rusqlite::Result<()> {
    match op {
        Op::EnsureGuild(id) => {
            tx.prepare_cached("INSERT OR IGNORE INTO guilds (id) VALUES (?1)")?
                .execute([id.to_string()])?;
        }
        Op::UpsertChannel {
            id,
            guild_id,
            name,
            category,
            kind,
            parent_id,
        } => {
            tx.prepare_cached(
                "INSERT INTO channel_info (id, name, category, guild_id, channel_type, parent_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, category = excluded.category,
                   guild_id = excluded.guild_id, channel_type = excluded.channel_type,
                   parent_id = excluded.parent_id",
            )?
            .execute(params![
                id.to_string(),
                name,
                category,
                guild_id.to_string(),
                kind,
                opt_id(*parent_id)
            ])?;
        }
        Op::RenameParent { parent_id, name } => {
            tx.prepare_cached("UPDATE channel_info SET category = ?2 WHERE parent_id = ?1")?
                .execute(params![parent_id.to_string(), name])?;
        }
        Op::DeleteChannel(id) => {
            tx.prepare_cached("DELETE FROM channel_info WHERE id = ?1")?
                .execute([id.to_string()])?;
        }
        Op::InsertMessage(row) => {
            let id = row.message_id.to_string();
            tx.prepare_cached(
                "INSERT OR REPLACE INTO message_stats (message_id, author_id, guild_id, channel_id,
                   channel_category, recipient_id, char_count, word_count, react_count, sent_at,
                   code_stats, link_stats)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                id,
                row.author_id.to_string(),
                row.guild_id.to_string(),
                row.channel_id.to_string(),
                row.channel_category,
                opt_id(row.recipient_id),
                row.stats.char_count,
                row.stats.word_count,
                row.react_count,
                row.sent_at,
                row.stats.code_stats,
                row.stats.link_stats,
            ])?;
            tx.prepare_cached("DELETE FROM message_reactions WHERE message_id = ?1")?
                .execute([id])?;
        }
        Op::UpdateMessageStats { message_id, stats } => {
            tx.prepare_cached(
                "UPDATE message_stats SET char_count = ?2, word_count = ?3, code_stats = ?4,
                   link_stats = ?5 WHERE message_id = ?1",
            )?
            .execute(params![
                message_id.to_string(),
                stats.char_count,
                stats.word_count,
                stats.code_stats,
                stats.link_stats
            ])?;
        }
        Op::DeleteMessage(id) => {
            let id = id.to_string();
            tx.prepare_cached("DELETE FROM message_stats WHERE message_id = ?1")?
                .execute([&id])?;
            tx.prepare_cached("DELETE FROM message_reactions WHERE message_id = ?1")?
                .execute([&id])?;
        }
        Op::Reaction {
            message_id,
            user_id,
            emoji,
            added,
        } => apply_reaction(tx, *message_id, *user_id, emoji, *added)?,
        Op::UpsertCache {
            message_id,
            guild_id,
            channel_id,
            user_id,
            content,
        } => {
            tx.prepare_cached(
                "INSERT INTO message_cache (message_id, guild_id, channel_id, user_id, content,
                   last_touched, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                 ON CONFLICT (message_id) DO UPDATE SET content = excluded.content,
                   last_touched = excluded.last_touched",
            )?
            .execute(params![
                message_id.to_string(),
                guild_id.to_string(),
                channel_id.to_string(),
                user_id.to_string(),
                content,
                now
            ])?;
        }
        Op::UpdateCache {
            message_id,
            content,
        } => {
            tx.prepare_cached(
                "UPDATE message_cache SET content = ?2, last_touched = ?3 WHERE message_id = ?1",
            )?
            .execute(params![message_id.to_string(), content, now])?;
        }
        Op::InsertModAction {
            guild_id,
            user_id,
            action,
            executor_id,
            reason,
            duration,
            source_key,
        } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO mod_actions (user_id, guild_id, action_type, executor_id,
                   executor_username, reason, duration, created_at, source_key)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                user_id.to_string(),
                guild_id.to_string(),
                action,
                opt_id(*executor_id),
                reason,
                duration,
                now,
                source_key
            ])?;
        }
        Op::SetMemberTimeout {
            guild_id,
            user_id,
            until_ms: Some(until),
        } => {
            tx.prepare_cached("INSERT OR REPLACE INTO member_timeouts (guild_id, user_id, until_ms) VALUES (?1, ?2, ?3)")?
                .execute(params![guild_id.to_string(), user_id.to_string(), until])?;
        }
        Op::SetMemberTimeout {
            guild_id,
            user_id,
            until_ms: None,
        } => {
            tx.prepare_cached("DELETE FROM member_timeouts WHERE guild_id = ?1 AND user_id = ?2")?
                .execute(params![guild_id.to_string(), user_id.to_string()])?;
        }
    }
    Ok(())
}

/// A reaction changes react_count only when it changes the (message, user, emoji) state, so a
/// redelivered add or remove counts once. A remove with no recorded add (a reaction the message
/// already had when created) still decrements, as the TypeScript bot does, and is recorded.
fn apply_reaction(
    tx: &Transaction,
    message_id: Id,
    user_id: Id,
    emoji: &str,
    added: bool,
) -> rusqlite::Result<()> {
    let message_id = message_id.to_string();
    let changed = tx
        .prepare_cached(
            "INSERT INTO message_reactions (message_id, user_id, emoji, present)
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM message_stats WHERE message_id = ?1)
             ON CONFLICT (message_id, user_id, emoji) DO UPDATE SET present = excluded.present
               WHERE present <> excluded.present",
        )?
        .execute(params![message_id, user_id.to_string(), emoji, added])?;
    if changed == 1 {
        let sql = if added {
            "UPDATE message_stats SET react_count = react_count + 1 WHERE message_id = ?1"
        } else {
            "UPDATE message_stats SET react_count = MAX(react_count - 1, 0) WHERE message_id = ?1"
        };
        tx.prepare_cached(sql)?.execute([message_id])?;
    }
    Ok(())
}

/// A channel as a guild actor remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    pub id: Id,
    pub name: Option<String>,
    pub kind: Option<u8>,
    pub parent_id: Option<Id>,
}

/// The channels of one guild, for a guild actor starting after passivation or a restart.
pub fn load_channels(conn: &Connection, guild_id: Id) -> rusqlite::Result<Vec<ChannelRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, channel_type, parent_id FROM channel_info WHERE guild_id = ?1",
    )?;
    let rows = stmt.query_map([guild_id.to_string()], |r| {
        let id: String = r.get(0)?;
        let parent: Option<String> = r.get(3)?;
        Ok((id, r.get(1)?, r.get(2)?, parent))
    })?;
    let mut channels = Vec::new();
    for row in rows {
        let (id, name, kind, parent) = row?;
        // Rows are written by this service from parsed ids; skip any that are not.
        let Ok(id) = id.parse() else { continue };
        channels.push(ChannelRow {
            id: Id(id),
            name,
            kind,
            parent_id: parent.and_then(|p| p.parse().ok()).map(Id),
        });
    }
    Ok(channels)
}

/// The members of one guild with a timeout set, as (user, until Unix ms).
pub fn load_timeouts(conn: &Connection, guild_id: Id) -> rusqlite::Result<HashMap<Id, i64>> {
    let mut stmt =
        conn.prepare_cached("SELECT user_id, until_ms FROM member_timeouts WHERE guild_id = ?1")?;
    let rows = stmt.query_map([guild_id.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut timeouts = HashMap::new();
    for row in rows {
        let (user, until) = row?;
        if let Ok(user) = user.parse() {
            timeouts.insert(Id(user), until);
        }
    }
    Ok(timeouts)
}

/// The message cache's retention: content is forgotten after `content_ttl` without a touch,
/// rows are deleted `retention` after creation.
#[derive(Debug, Clone, Copy)]
pub struct CacheExpiry {
    pub content_ttl: Duration,
    pub retention: Duration,
}

/// What the periodic expiry job changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub contents_cleared: usize,
    pub rows_deleted: usize,
}

pub fn expire_cache(
    conn: &Connection,
    expiry: CacheExpiry,
    now: SystemTime,
) -> rusqlite::Result<Expired> {
    let cutoff = |age: Duration| iso8601(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
    let contents_cleared = conn
        .prepare_cached("UPDATE message_cache SET content = NULL WHERE content IS NOT NULL AND last_touched < ?1")?
        .execute([cutoff(expiry.content_ttl)])?;
    let rows_deleted = conn
        .prepare_cached("DELETE FROM message_cache WHERE created_at < ?1")?
        .execute([cutoff(expiry.retention)])?;
    Ok(Expired {
        contents_cleared,
        rows_deleted,
    })
}

/// ISO-8601 UTC with milliseconds, as JavaScript's `toISOString()`; sorts as text.
pub fn iso8601(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Is the database writable right now? Takes the write lock and releases it.
pub fn check_writable(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
}

/// Bytes on disk of the database and its WAL.
pub fn database_size(path: &Path) -> u64 {
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
    use std::time::Duration;

    fn cache_row(conn: &Connection, id: &str, touched: SystemTime, created: SystemTime) {
        conn.execute(
            "INSERT INTO message_cache VALUES (?1, '1', '2', '3', 'text', ?2, ?3)",
            params![id, iso8601(touched), iso8601(created)],
        )
        .unwrap();
    }

    #[test]
    fn cache_expiry_clears_old_content_and_deletes_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("nested/dir/db.sqlite3")).unwrap();
        let now = SystemTime::now();
        let ago = |mins: u64| now - Duration::from_secs(mins * 60);
        cache_row(&conn, "fresh", ago(5), ago(5));
        cache_row(&conn, "stale", ago(61), ago(61));
        cache_row(&conn, "old", ago(10), ago(25 * 60));
        let expiry = CacheExpiry {
            content_ttl: Duration::from_secs(3600),
            retention: Duration::from_secs(24 * 3600),
        };
        let expired = expire_cache(&conn, expiry, now).unwrap();
        assert_eq!(
            expired,
            Expired {
                contents_cleared: 1,
                rows_deleted: 1
            }
        );
        let content = |id: &str| -> Option<String> {
            conn.query_row(
                "SELECT content FROM message_cache WHERE message_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(content("fresh").as_deref(), Some("text"));
        assert_eq!(content("stale"), None);
        assert_eq!(count_rows(&conn, "message_cache").unwrap(), 2);
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
