//! The SQL of a live rescale ([`crate::domain::rescale::ownership`]): the persisted ownership, the capture log,
//! and the export, import and removal of the guilds that move.
//!
//! Rows move with the same copy as `reshard` ([`crate::storage::reshard::copy_owned`]), through an
//! `owner(guild_id)` SQL function that names which guilds go where.

use crate::domain::event::Id;
use crate::domain::partition::Strategy;
use crate::domain::rescale::anchor::{Anchor, AnchorOutcome, Group};
use crate::domain::rescale::ownership::{Layout, Ownership, Transition};
use crate::storage::database::{self, StoreError};
use crate::storage::rescale::event_log::{handed_over, EventLog};
use crate::storage::reshard::{copy_owned, ReshardError};
use crate::storage::tables::GUILD_TABLES;
use rusqlite::functions::FunctionFlags;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// The persisted ownership, if this database has one (a pod that never started has none).
pub(crate) fn load(conn: &Connection, ordinal: u32) -> rusqlite::Result<Option<Ownership>> {
    conn.query_row(
        "SELECT epoch, pods, strategy, shards, next_epoch, next_pods, next_strategy,
                next_shards, frozen, live, sessions_epoch, operation FROM gateway_ownership
         WHERE id = 1",
        [],
        |r| {
            let strategy = |s: String| s.parse::<Strategy>().unwrap_or_default();
            let layout = Layout {
                pods: r.get(1)?,
                strategy: strategy(r.get(2)?),
                shards: r.get(3)?,
            };
            let next = match r.get::<_, Option<i64>>(4)? {
                Some(epoch) => Some(Transition {
                    epoch: epoch as u64,
                    layout: Layout {
                        pods: r.get(5)?,
                        strategy: strategy(r.get(6)?),
                        shards: r.get(7)?,
                    },
                    frozen: r.get(8)?,
                    live: r.get(9)?,
                    operation: r.get::<_, Option<i64>>(11)?.map_or(0, |op| op as u64),
                }),
                None => None,
            };
            Ok(Ownership {
                ordinal,
                epoch: r.get::<_, i64>(0)? as u64,
                layout,
                sessions_epoch: r.get::<_, i64>(10)? as u64,
                next,
            })
        },
    )
    .optional()
}

/// Persists `ownership` (in the caller's transaction).
pub(crate) fn save(conn: &Connection, ownership: &Ownership) -> rusqlite::Result<()> {
    let next = ownership.next;
    conn.execute(
        "INSERT OR REPLACE INTO gateway_ownership (id, epoch, pods, strategy, shards, next_epoch,
           next_pods, next_strategy, next_shards, frozen, live, sessions_epoch, operation)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            ownership.epoch as i64,
            ownership.layout.pods,
            ownership.layout.strategy.as_str(),
            ownership.layout.shards,
            next.map(|t| t.epoch as i64),
            next.map(|t| t.layout.pods),
            next.map(|t| t.layout.strategy.as_str()),
            next.map(|t| t.layout.shards),
            next.is_some_and(|t| t.frozen),
            next.is_some_and(|t| t.live),
            ownership.sessions_epoch as i64,
            next.map(|t| t.operation as i64),
        ],
    )?;
    Ok(())
}

/// Copies `from`'s handed-over events of the guilds `take` selects into `conn`.
fn copy_handed_over(
    conn: &Connection,
    from: &Path,
    take: impl Fn(u64) -> bool,
) -> rusqlite::Result<()> {
    let source = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    for c in handed_over(&source, take)? {
        EventLog::HandedOver.append(
            conn,
            Id(c.guild_id),
            c.seq,
            &c.kind,
            &c.payload,
            c.received_ms.unwrap_or(0),
        )?;
    }
    Ok(())
}

/// Records what this old owner did with each anchor (in the writer's transaction).
pub(crate) fn save_anchors(conn: &Connection, outcomes: &[AnchorOutcome]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR REPLACE INTO gateway_anchors (source, target, grp, identity, skip, passed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for o in outcomes {
        stmt.execute(params![
            o.source,
            o.anchor.group.to,
            o.anchor.group.key as i64,
            o.anchor.identity as i64,
            o.skip as i64,
            o.passed
        ])?;
    }
    Ok(())
}

/// The anchors recorded for the guilds coming to pod `target` (by their old owners).
pub(crate) fn anchors_for(conn: &Connection, target: u32) -> rusqlite::Result<Vec<AnchorOutcome>> {
    let mut stmt = conn.prepare(
        "SELECT source, grp, identity, skip, passed FROM gateway_anchors WHERE target = ?1",
    )?;
    let rows = stmt
        .query_map([target], |r| {
            Ok(AnchorOutcome {
                source: r.get(0)?,
                anchor: Anchor {
                    group: Group {
                        to: target,
                        key: r.get::<_, i64>(1)? as u64,
                    },
                    identity: r.get::<_, i64>(2)? as u64,
                },
                skip: r.get::<_, i64>(3)? as u64,
                passed: r.get(4)?,
            })
        })?
        .collect();
    rows
}

/// Copies the anchors of `from`'s file for pod `target` into `conn`'s (an export carries the
/// old owner's to the new owner).
fn copy_anchors(conn: &Connection, from: &Path, target: Option<u32>) -> rusqlite::Result<()> {
    let source = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut rows = Vec::new();
    {
        let mut stmt = source.prepare(
            "SELECT source, target, grp, identity, skip, passed FROM gateway_anchors
             WHERE ?1 IS NULL OR target = ?1",
        )?;
        let mut read = stmt.query([target])?;
        while let Some(r) = read.next()? {
            rows.push((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, bool>(5)?,
            ));
        }
    }
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO gateway_anchors (source, target, grp, identity, skip, passed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for row in rows {
        insert.execute(params![row.0, row.1, row.2, row.3, row.4, row.5])?;
    }
    Ok(())
}

/// Registers the SQL function `name(guild_id)`: `f` of the numeric id (NULL or a non-numeric
/// id: `otherwise`).
fn register_guild_fn(
    conn: &Connection,
    name: &str,
    otherwise: i64,
    f: impl Fn(u64) -> i64 + Send + 'static,
) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        name,
        1,
        FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_UTF8,
        move |ctx| {
            let guild: Option<String> = ctx.get(0)?;
            Ok(guild
                .and_then(|g| g.parse::<u64>().ok())
                .map_or(otherwise, &f))
        },
    )
}

/// Registers `owner(guild_id)` as `reshard`'s copy reads it: 0 for the guilds `moves`
/// selects, else -1 (copied nowhere).
fn register_owner(
    conn: &Connection,
    moves: impl Fn(u64) -> bool + Send + 'static,
) -> rusqlite::Result<()> {
    register_guild_fn(conn, "owner", -1, move |g| if moves(g) { 0 } else { -1 })
}

/// Writes a new database `out` holding the rows of `database` of the guilds `moves` selects.
pub(crate) fn export(
    database: &Path,
    out: &Path,
    to: u32,
    moves: impl Fn(u64) -> bool + Send + Sync + 'static,
) -> Result<(), ReshardError> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", out.display()));
    }
    let moves = std::sync::Arc::new(moves);
    let conn = database::open_writer(out)?;
    let selected = moves.clone();
    register_owner(&conn, move |g| selected(g)).map_err(StoreError::Sql)?;
    copy_owned(&conn, database, 0)?;
    copy_anchors(&conn, database, Some(to)).map_err(StoreError::Sql)?;
    copy_handed_over(&conn, database, |g| moves(g)).map_err(StoreError::Sql)?;
    // One self-contained file to send: no WAL beside it.
    conn.pragma_update(None, "journal_mode", "DELETE")
        .map_err(StoreError::Sql)?;
    Ok(())
}

/// Copies every row of an exported file into `conn` (rows already present are kept: an
/// import that is retried changes nothing).
pub(crate) fn import(conn: &Connection, file: &Path) -> Result<(), ReshardError> {
    register_owner(conn, |_| true).map_err(StoreError::Sql)?;
    copy_owned(conn, file, 0)?;
    copy_anchors(conn, file, None).map_err(StoreError::Sql)?;
    copy_handed_over(conn, file, |_| true).map_err(StoreError::Sql)?;
    Ok(())
}

/// Deletes every row of the guilds `gone` selects (in the caller's transaction), and the
/// capture log.
pub(crate) fn remove_guilds(
    conn: &Connection,
    gone: impl Fn(u64) -> bool + Send + 'static,
) -> rusqlite::Result<()> {
    register_guild_fn(conn, "gone", 0, move |g| i64::from(gone(g)))?;
    // Children first: their rows are found through their parents'.
    for table in GUILD_TABLES.iter().rev() {
        conn.execute(&table.delete_sql("gone"), [])?;
    }
    conn.execute_batch(
        "DELETE FROM gateway_captured;
         DELETE FROM gateway_anchors;
         DELETE FROM gateway_handover;",
    )
}

/// Guilds of an exported file.
pub(crate) fn guild_count(file: &Path) -> rusqlite::Result<u64> {
    let conn = Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.query_row("SELECT COUNT(*) FROM guilds", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}

/// Guilds of `database` that `selected` picks.
pub(crate) fn count_guilds(
    database: &Path,
    selected: impl Fn(u64) -> bool + Send + 'static,
) -> rusqlite::Result<i64> {
    let conn = Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    register_owner(&conn, selected)?;
    conn.query_row("SELECT COUNT(*) FROM guilds WHERE owner(id) = 0", [], |r| {
        r.get(0)
    })
}
