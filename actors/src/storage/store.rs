//! The SQLite file of one pod: opening it, its schema, and the write operations.
//!
//! Handlers never touch SQL; they produce [`Op`]s, which the single writer applies in batched
//! transactions. Every op is idempotent, so a stream delivered twice (recovery, resharding)
//! leaves the same rows.

use crate::event::Id;
use crate::scope::{CrossGuildWrite, Outcome};
use crate::stats::MessageStats;
use crate::time::iso8601;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The schema, applied at every start (every statement is `IF NOT EXISTS`).
pub const SCHEMA: &str = include_str!("../../../schema.sql");

/// The writer connection's page cache, in KiB (SQLite's negative `cache_size`).
const WRITER_CACHE_KIB: i64 = -32 * 1024;

/// How long a connection waits for a lock (Litestream's checkpoints take one briefly).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub type ReadPool = r2d2::Pool<SqliteConnectionManager>;

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

/// One idempotent write of one guild's actor. Each names its guild and touches only that
/// guild's rows: a row found by its own id (a channel, a message, an audit entry) that belongs
/// to another guild is left as it is and the write is refused (see [`crate::scope`]).
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
        guild_id: Id,
        parent_id: Id,
        name: Option<String>,
    },
    DeleteChannel {
        guild_id: Id,
        id: Id,
    },
    /// Insert or replace a message's stats; its reaction history starts again.
    InsertMessage(Box<MessageRow>),
    UpdateMessageStats {
        guild_id: Id,
        message_id: Id,
        stats: MessageStats,
    },
    DeleteMessage {
        guild_id: Id,
        id: Id,
    },
    Reaction {
        guild_id: Id,
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
        guild_id: Id,
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
        /// A row paired with its entry: the key its event's row carries when written without
        /// one. An event delivered again (after a restart) may have been written so before
        /// its window closed; that row is completed, not written twice.
        unpaired_key: Option<String>,
    },
    /// An audit log entry that no waiting event matched. Its event may have been written
    /// without it (the window closed first, or a flush at shutdown or at the end of a replay,
    /// possibly by an earlier process): that row, the guild's most recent one for this member
    /// and action with no executor and not paired with an entry, is completed with the entry's
    /// executor and reason, or removed if the bot itself acted (its own actions are not
    /// logged). Rows written before `not_before_ms` (the entry's own creation, less some
    /// clock skew) cannot be its event's and are left alone. Without such a row nothing is
    /// written. Done once per entry: `source_key` is recorded in `mod_action_late_entries`.
    CompleteModAction {
        guild_id: Id,
        user_id: Id,
        action: &'static str,
        /// "audit:<entry id>", as the row would carry had the pair been found in time.
        source_key: String,
        not_before_ms: i64,
        executor_id: Option<Id>,
        reason: String,
        by_bot: bool,
    },
    /// A member left and no kick entry came in its window: a late entry may still make it a
    /// kick (`CompleteModAction`).
    RecordUnpairedRemoval {
        guild_id: Id,
        user_id: Id,
    },
    /// A member's communication_disabled_until (None: no timeout).
    SetMemberTimeout {
        guild_id: Id,
        user_id: Id,
        until_ms: Option<i64>,
    },
    /// Append an event of a guild coming to this pod to the capture log (a live rescale).
    Capture {
        guild_id: Id,
        seq: Option<u64>,
        kind: &'static str,
        payload: std::sync::Arc<str>,
        /// When the pod received it (Unix ms).
        received_ms: i64,
    },
    /// Keep a moderation event or entry of a guild given away in a rescale that was still
    /// waiting for its counterpart: the new owner pairs it (see `gateway_handover`).
    HandOver {
        guild_id: Id,
        /// Its seq: what identifies a ban without its entry, re-applied after a restart.
        seq: Option<u64>,
        kind: &'static str,
        payload: std::sync::Arc<str>,
        received_ms: i64,
    },
}

fn opt_id(id: Option<Id>) -> Option<String> {
    id.map(|i| i.to_string())
}

/// Who owns a row: `None` if there is no such row, `Some(None)` if it has no guild.
type Owner = Option<Option<String>>;

fn owner(tx: &Transaction, select_guild_by_key: &str, key: &str) -> rusqlite::Result<Owner> {
    tx.prepare_cached(select_guild_by_key)?
        .query_row([key], |r| r.get::<_, Option<String>>(0))
        .optional()
}

/// A channel's guild is in guild_channels; a channel_info row without one (a file from before
/// guild_channels with no guild there) has no guild, as a NULL guild_id had.
const CHANNEL_OWNER: &str = "SELECT g.guild_id FROM channel_info c
     LEFT JOIN guild_channels g ON g.channel_id = c.id WHERE c.id = ?1";
const MESSAGE_OWNER: &str = "SELECT guild_id FROM message_stats WHERE message_id = ?1";
const CACHE_OWNER: &str = "SELECT guild_id FROM message_cache WHERE message_id = ?1";
const MOD_ACTION_OWNER: &str = "SELECT guild_id FROM mod_actions WHERE source_key = ?1";
const LATE_ENTRY_OWNER: &str = "SELECT guild_id FROM mod_action_late_entries WHERE source_key = ?1";

/// The outcome of a write that, scoped to `guild`, found nothing to change: refused if the
/// row is there but another guild's.
fn unless_foreign(
    tx: &Transaction,
    select_guild_by_key: &str,
    write: &'static str,
    table: &'static str,
    key: &str,
    guild: &str,
    guild_id: Id,
) -> rusqlite::Result<Outcome> {
    Ok(match owner(tx, select_guild_by_key, key)? {
        Some(owner) if owner.as_deref() != Some(guild) => Outcome::Refused(CrossGuildWrite {
            write,
            table,
            key: key.to_owned(),
            guild_id,
            owner,
        }),
        _ => Outcome::Done,
    })
}

/// A new message's statistics row (rewritten on redelivery); its reactions start afresh.
fn insert_message(tx: &Transaction, row: &MessageRow) -> rusqlite::Result<Outcome> {
    let (id, guild) = (row.message_id.to_string(), row.guild_id.to_string());
    let changed = tx
        .prepare_cached(
            "INSERT INTO message_stats (message_id, author_id, guild_id, channel_id,
                       channel_category, recipient_id, char_count, word_count, react_count,
                       sent_at, code_stats, link_stats)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (message_id) DO UPDATE SET author_id = excluded.author_id,
                       channel_id = excluded.channel_id,
                       channel_category = excluded.channel_category,
                       recipient_id = excluded.recipient_id, char_count = excluded.char_count,
                       word_count = excluded.word_count, react_count = excluded.react_count,
                       sent_at = excluded.sent_at, code_stats = excluded.code_stats,
                       link_stats = excluded.link_stats
                     WHERE message_stats.guild_id = excluded.guild_id",
        )?
        .execute(params![
            id,
            row.author_id.to_string(),
            guild,
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
    if changed == 0 {
        return unless_foreign(
            tx,
            MESSAGE_OWNER,
            "insert message",
            "message_stats",
            &id,
            &guild,
            row.guild_id,
        );
    }
    tx.prepare_cached("DELETE FROM message_reactions WHERE message_id = ?1")?
        .execute([id])?;
    Ok(Outcome::Done)
}

#[allow(clippy::too_many_arguments)]
/// A channel's rows (channel_info and guild_channels), kept only while it belongs to the
/// event's guild.
fn upsert_channel(
    tx: &Transaction,
    id: &Id,
    guild_id: &Id,
    name: &Option<String>,
    category: &Option<String>,
    kind: &u8,
    parent_id: &Option<Id>,
) -> rusqlite::Result<Outcome> {
    let (id, guild) = (id.to_string(), guild_id.to_string());
    // The owner is checked first, as the two rows are written by two statements; the single
    // writer's transaction keeps it true until both are.
    let refused = unless_foreign(
        tx,
        CHANNEL_OWNER,
        "upsert channel",
        "channel_info",
        &id,
        &guild,
        *guild_id,
    )?;
    if matches!(refused, Outcome::Refused(_)) {
        return Ok(refused);
    }
    tx.prepare_cached(
        "INSERT INTO channel_info (id, name, category) VALUES (?1, ?2, ?3)
           ON CONFLICT (id) DO UPDATE SET name = excluded.name, category = excluded.category",
    )?
    .execute(params![id, name, category])?;
    tx.prepare_cached(
        "INSERT INTO guild_channels (channel_id, guild_id, channel_type, parent_id)
           VALUES (?1, ?2, ?3, ?4)
           ON CONFLICT (channel_id) DO UPDATE SET channel_type = excluded.channel_type,
             parent_id = excluded.parent_id",
    )?
    .execute(params![id, guild, kind, opt_id(*parent_id)])?;
    Ok(Outcome::Done)
}

/// A message's cached content, kept only while it belongs to the event's guild.
fn upsert_cache(
    tx: &Transaction,
    message_id: &Id,
    guild_id: &Id,
    channel_id: &Id,
    user_id: &Id,
    content: &str,
    now: &str,
) -> rusqlite::Result<Outcome> {
    let (id, guild) = (message_id.to_string(), guild_id.to_string());
    let changed = tx
        .prepare_cached(
            "INSERT INTO message_cache (message_id, guild_id, channel_id, user_id, content,
                       last_touched, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT (message_id) DO UPDATE SET content = excluded.content,
                       last_touched = excluded.last_touched
                     WHERE message_cache.guild_id = excluded.guild_id",
        )?
        .execute(params![
            id,
            guild,
            channel_id.to_string(),
            user_id.to_string(),
            content,
            now
        ])?;
    if changed == 0 {
        return unless_foreign(
            tx,
            CACHE_OWNER,
            "upsert cached message",
            "message_cache",
            &id,
            &guild,
            *guild_id,
        );
    }
    Ok(Outcome::Done)
}

/// A moderation row, once per source key, unless a late entry already completed one.
#[allow(clippy::too_many_arguments)]
fn insert_mod_action(
    tx: &Transaction,
    guild_id: &Id,
    user_id: &Id,
    action: &str,
    executor_id: &Option<Id>,
    reason: &str,
    duration: &Option<String>,
    source_key: &Option<String>,
    now: &str,
) -> rusqlite::Result<Outcome> {
    let guild = guild_id.to_string();
    // An entry that already completed a row written without it is not written again.
    let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO mod_actions (user_id, guild_id, action_type,
                       executor_id, executor_username, reason, duration, created_at, source_key)
                     SELECT ?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8
                     WHERE NOT EXISTS (SELECT 1 FROM mod_action_late_entries WHERE source_key = ?8)",
                )?
                .execute(params![
                    user_id.to_string(),
                    guild,
                    action,
                    opt_id(*executor_id),
                    reason,
                    duration,
                    now,
                    source_key
                ])?;
    if let (0, Some(key)) = (inserted, source_key) {
        for (select, table) in [
            (MOD_ACTION_OWNER, "mod_actions"),
            (LATE_ENTRY_OWNER, "mod_action_late_entries"),
        ] {
            let outcome = unless_foreign(
                tx,
                select,
                "insert moderation action",
                table,
                key,
                &guild,
                *guild_id,
            )?;
            if outcome != Outcome::Done {
                return Ok(outcome);
            }
        }
    }
    Ok(Outcome::Done)
}

/// Applies one op inside the writer's transaction. `now` is the processing time (ISO-8601 UTC).
pub fn apply(tx: &Transaction, op: &Op, now: &str) -> rusqlite::Result<Outcome> {
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
        } => return upsert_channel(tx, id, guild_id, name, category, kind, parent_id),
        Op::RenameParent {
            guild_id,
            parent_id,
            name,
        } => {
            tx.prepare_cached(
                "UPDATE channel_info SET category = ?3 WHERE id IN
                   (SELECT channel_id FROM guild_channels WHERE parent_id = ?1 AND guild_id = ?2)",
            )?
            .execute(params![parent_id.to_string(), guild_id.to_string(), name])?;
        }
        Op::DeleteChannel { guild_id, id } => {
            let (id, guild) = (id.to_string(), guild_id.to_string());
            let deleted = tx
                .prepare_cached(
                    "DELETE FROM guild_channels WHERE channel_id = ?1 AND guild_id = ?2",
                )?
                .execute([&id, &guild])?;
            if deleted > 0 {
                tx.prepare_cached("DELETE FROM channel_info WHERE id = ?1")?
                    .execute([&id])?;
            } else {
                return unless_foreign(
                    tx,
                    CHANNEL_OWNER,
                    "delete channel",
                    "channel_info",
                    &id,
                    &guild,
                    *guild_id,
                );
            }
        }
        Op::InsertMessage(row) => return insert_message(tx, row),
        Op::Capture {
            guild_id,
            seq,
            kind,
            payload,
            received_ms,
        } => crate::handoff::capture(tx, *guild_id, *seq, kind, payload, *received_ms)?,
        Op::HandOver {
            guild_id,
            seq,
            kind,
            payload,
            received_ms,
        } => crate::handoff::hand_over(tx, *guild_id, *seq, kind, payload, *received_ms)?,
        Op::UpdateMessageStats {
            guild_id,
            message_id,
            stats,
        } => {
            let (id, guild) = (message_id.to_string(), guild_id.to_string());
            let changed = tx
                .prepare_cached(
                    "UPDATE message_stats SET char_count = ?3, word_count = ?4, code_stats = ?5,
                       link_stats = ?6 WHERE message_id = ?1 AND guild_id = ?2",
                )?
                .execute(params![
                    id,
                    guild,
                    stats.char_count,
                    stats.word_count,
                    stats.code_stats,
                    stats.link_stats
                ])?;
            if changed == 0 {
                return unless_foreign(
                    tx,
                    MESSAGE_OWNER,
                    "update message",
                    "message_stats",
                    &id,
                    &guild,
                    *guild_id,
                );
            }
        }
        Op::DeleteMessage { guild_id, id } => {
            let (id, guild) = (id.to_string(), guild_id.to_string());
            let deleted = tx
                .prepare_cached(
                    "DELETE FROM message_stats WHERE message_id = ?1 AND guild_id = ?2",
                )?
                .execute([&id, &guild])?;
            if deleted == 0 {
                let outcome = unless_foreign(
                    tx,
                    MESSAGE_OWNER,
                    "delete message",
                    "message_stats",
                    &id,
                    &guild,
                    *guild_id,
                )?;
                // The reactions of another guild's message are that guild's too.
                if outcome != Outcome::Done {
                    return Ok(outcome);
                }
            }
            tx.prepare_cached("DELETE FROM message_reactions WHERE message_id = ?1")?
                .execute([&id])?;
        }
        Op::Reaction {
            guild_id,
            message_id,
            user_id,
            emoji,
            added,
        } => return apply_reaction(tx, *guild_id, *message_id, *user_id, emoji, *added),
        Op::UpsertCache {
            message_id,
            guild_id,
            channel_id,
            user_id,
            content,
        } => return upsert_cache(tx, message_id, guild_id, channel_id, user_id, content, now),
        Op::UpdateCache {
            guild_id,
            message_id,
            content,
        } => {
            let (id, guild) = (message_id.to_string(), guild_id.to_string());
            let changed = tx
                .prepare_cached(
                    "UPDATE message_cache SET content = ?3, last_touched = ?4
                     WHERE message_id = ?1 AND guild_id = ?2",
                )?
                .execute(params![id, guild, content, now])?;
            if changed == 0 {
                return unless_foreign(
                    tx,
                    CACHE_OWNER,
                    "update cached message",
                    "message_cache",
                    &id,
                    &guild,
                    *guild_id,
                );
            }
        }
        Op::InsertModAction {
            guild_id,
            user_id,
            action,
            executor_id,
            reason,
            duration,
            source_key,
            unpaired_key,
        } => {
            if let Some(key) = unpaired_key {
                let completed = tx
                    .prepare_cached(
                        "UPDATE OR IGNORE mod_actions SET executor_id = ?3, reason = ?4, source_key = ?5
                         WHERE guild_id = ?1 AND source_key = ?2 AND executor_id IS NULL",
                    )?
                    .execute(params![
                        guild_id.to_string(),
                        key,
                        opt_id(*executor_id),
                        reason,
                        source_key
                    ])?;
                if completed > 0 {
                    return Ok(Outcome::Done);
                }
            }
            return insert_mod_action(
                tx,
                guild_id,
                user_id,
                action,
                executor_id,
                reason,
                duration,
                source_key,
                now,
            );
        }
        Op::CompleteModAction {
            guild_id,
            user_id,
            action,
            source_key,
            not_before_ms,
            executor_id,
            reason,
            by_bot,
        } => {
            return complete_mod_action(
                tx,
                *guild_id,
                *user_id,
                action,
                source_key,
                *not_before_ms,
                *executor_id,
                reason,
                *by_bot,
            )
        }
        Op::RecordUnpairedRemoval { guild_id, user_id } => {
            tx.prepare_cached(
                "INSERT INTO unpaired_member_removals (guild_id, user_id, removed_at)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![guild_id.to_string(), user_id.to_string(), now])?;
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
    Ok(Outcome::Done)
}

#[allow(clippy::too_many_arguments)]
fn complete_mod_action(
    tx: &Transaction,
    guild_id: Id,
    user_id: Id,
    action: &str,
    source_key: &str,
    not_before_ms: i64,
    executor_id: Option<Id>,
    reason: &str,
    by_bot: bool,
) -> rusqlite::Result<Outcome> {
    let guild = guild_id.to_string();
    // Paired with its event after all (in time, in this process or an earlier one), or
    // already applied late: nothing more to do, unless that was another guild's.
    for (select, table) in [
        (MOD_ACTION_OWNER, "mod_actions"),
        (LATE_ENTRY_OWNER, "mod_action_late_entries"),
    ] {
        if owner(tx, select, source_key)?.is_some() {
            return unless_foreign(
                tx,
                select,
                "complete moderation action",
                table,
                source_key,
                &guild,
                guild_id,
            );
        }
    }
    // The last millisecond of year 9999: later ones do not format, and no row is that new.
    const LAST_MS: i64 = 253_402_300_799_999;
    if not_before_ms > LAST_MS {
        return Ok(Outcome::Done);
    }
    let not_before = iso8601(
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(not_before_ms).unwrap_or(0)),
    );
    let row: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM mod_actions
             WHERE guild_id = ?1 AND user_id = ?2 AND action_type = ?3 AND executor_id IS NULL
               AND (source_key IS NULL OR source_key NOT LIKE 'audit:%') AND created_at >= ?4
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(
            params![guild, user_id.to_string(), action, not_before],
            |r| r.get(0),
        )
        .optional()?;
    // No row: the entry's event was never seen, or was the bot's own, or it is a kick (no row
    // is written for a member who left without an entry): a kick entry makes the member's
    // unpaired removal the row it would have been. Otherwise an entry alone writes nothing.
    let Some(row) = row else {
        if action == "kick" {
            complete_unpaired_removal(
                tx,
                &guild,
                user_id,
                source_key,
                &not_before,
                executor_id,
                reason,
                by_bot,
            )?;
        }
        return Ok(Outcome::Done);
    };
    if by_bot {
        tx.prepare_cached("DELETE FROM mod_actions WHERE id = ?1")?
            .execute([row])?;
    } else {
        tx.prepare_cached("UPDATE mod_actions SET executor_id = ?2, reason = ?3 WHERE id = ?1")?
            .execute(params![row, opt_id(executor_id), reason])?;
    }
    tx.prepare_cached(
        "INSERT INTO mod_action_late_entries (source_key, guild_id) VALUES (?1, ?2)",
    )?
    .execute([source_key, &guild])?;
    Ok(Outcome::Done)
}

/// The member's latest removal since `not_before` that waited for a kick entry in vain becomes
/// the kick row (none for the bot's own kicks), and is consumed.
#[allow(clippy::too_many_arguments)]
fn complete_unpaired_removal(
    tx: &Transaction,
    guild: &str,
    user_id: Id,
    source_key: &str,
    not_before: &str,
    executor_id: Option<Id>,
    reason: &str,
    by_bot: bool,
) -> rusqlite::Result<()> {
    let removal: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT rowid, removed_at FROM unpaired_member_removals
             WHERE guild_id = ?1 AND user_id = ?2 AND removed_at >= ?3
             ORDER BY removed_at DESC LIMIT 1",
        )?
        .query_row(params![guild, user_id.to_string(), not_before], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((removal, removed_at)) = removal else {
        return Ok(());
    };
    tx.prepare_cached("DELETE FROM unpaired_member_removals WHERE rowid = ?1")?
        .execute([removal])?;
    if !by_bot {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO mod_actions (user_id, guild_id, action_type, executor_id,
               executor_username, reason, duration, created_at, source_key)
             VALUES (?1, ?2, 'kick', ?3, NULL, ?4, NULL, ?5, ?6)",
        )?
        .execute(params![
            user_id.to_string(),
            guild,
            opt_id(executor_id),
            reason,
            removed_at,
            source_key
        ])?;
    }
    Ok(())
}

/// A reaction changes react_count only when it changes the (message, user, emoji) state, so a
/// redelivered add or remove counts once. A remove with no recorded add (a reaction the message
/// already had when created) still decrements, as the TypeScript bot does, and is recorded.
/// Messages that are not counted (no `message_stats` row) track no reactions.
fn apply_reaction(
    tx: &Transaction,
    guild_id: Id,
    message_id: Id,
    user_id: Id,
    emoji: &str,
    added: bool,
) -> rusqlite::Result<Outcome> {
    let (message_id, guild) = (message_id.to_string(), guild_id.to_string());
    match owner(tx, MESSAGE_OWNER, &message_id)? {
        None => return Ok(Outcome::Done),
        Some(owner) if owner.as_deref() != Some(guild.as_str()) => {
            return Ok(Outcome::Refused(CrossGuildWrite {
                write: "reaction",
                table: "message_stats",
                key: message_id,
                guild_id,
                owner,
            }))
        }
        Some(_) => {}
    }
    let changed = tx
        .prepare_cached(
            "INSERT INTO message_reactions (message_id, user_id, emoji, present)
             VALUES (?1, ?2, ?3, ?4)
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
    Ok(Outcome::Done)
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
        "SELECT c.id, c.name, g.channel_type, g.parent_id FROM guild_channels g
           JOIN channel_info c ON c.id = g.channel_id WHERE g.guild_id = ?1",
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

/// How long a member's removal without a kick entry waits for a late one.
const UNPAIRED_REMOVAL_TTL: Duration = Duration::from_secs(24 * 3600);

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
    // A kick entry a day late is not waited for.
    conn.prepare_cached("DELETE FROM unpaired_member_removals WHERE removed_at < ?1")?
        .execute([cutoff(UNPAIRED_REMOVAL_TTL)])?;
    Ok(Expired {
        contents_cleared,
        rows_deleted,
    })
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

    const A: Id = Id(1);
    const B: Id = Id(2);

    fn apply_one(conn: &mut Connection, op: Op) -> Outcome {
        let tx = conn.transaction().unwrap();
        let outcome = apply(&tx, &op, &iso8601(SystemTime::now())).unwrap();
        tx.commit().unwrap();
        outcome
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
            stats: crate::stats::message_stats("hello there"),
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
                stats: crate::stats::message_stats("rewritten"),
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
