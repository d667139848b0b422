//! Moving guilds' rows to their owners: split one or more pod databases (or the TypeScript
//! bot's single file) into the databases of a new set of N pods.
//!
//! Each row goes to the pod that owns its guild under the new N and strategy. Copies are
//! `INSERT OR IGNORE`, so overlapping sources (the same guild in two files, a retried run)
//! leave one row. Columns are those the source and the target share, so the TypeScript bot's
//! file (without the added columns and tables) is a valid source.

use crate::shard::{owner_of_str, Strategy};
use crate::store::{self, StoreError};
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each table, and the SQL that gives a row's guild id.
const TABLES: [(&str, &str); 8] = [
    ("guilds", "id"),
    ("channel_info", "guild_id"),
    ("message_stats", "guild_id"),
    ("message_cache", "guild_id"),
    ("mod_actions", "guild_id"),
    ("mod_action_late_entries", "guild_id"),
    ("member_timeouts", "guild_id"),
    // Reactions belong to the guild of their message.
    (
        "message_reactions",
        "(SELECT s.guild_id FROM src.message_stats s WHERE s.message_id = t.message_id)",
    ),
];

/// Rows per table, in the sources and in the new databases.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReshardReport {
    pub targets: Vec<PathBuf>,
    /// Per table: rows written to each target, in ordinal order.
    pub rows: BTreeMap<&'static str, Vec<i64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReshardError {
    #[error("{0} already exists: reshard writes new files only")]
    TargetExists(PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("copying {table} from {source_path}")]
    Copy {
        table: &'static str,
        source_path: PathBuf,
        #[source]
        error: rusqlite::Error,
    },
}

fn columns(conn: &Connection, schema: &str, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1, ?2)")?;
    let names = stmt
        .query_map([table, schema], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    Ok(names)
}

/// Writes `out_dir/gateway-k.sqlite3` for every k < pods from `sources`.
pub fn reshard(
    sources: &[PathBuf],
    strategy: Strategy,
    pods: u32,
    out_dir: &Path,
) -> Result<ReshardReport, ReshardError> {
    let targets: Vec<PathBuf> = (0..pods)
        .map(|k| out_dir.join(format!("gateway-{k}.sqlite3")))
        .collect();
    if let Some(existing) = targets.iter().find(|t| t.exists()) {
        return Err(ReshardError::TargetExists(existing.clone()));
    }
    let mut report = ReshardReport {
        targets: targets.clone(),
        rows: BTreeMap::new(),
    };
    for (ordinal, target) in targets.iter().enumerate() {
        let conn = store::open_writer(target)?;
        // owner(guild_id) in SQL: the same function the pods and the HTTP services use.
        conn.create_scalar_function(
            "owner",
            1,
            FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_UTF8,
            move |ctx| {
                let guild: Option<String> = ctx.get(0)?;
                Ok(guild
                    .and_then(|g| owner_of_str(strategy, &g, pods).ok())
                    .map(i64::from))
            },
        )
        .map_err(|source| StoreError::Prepare {
            path: target.clone(),
            source,
        })?;
        for source_path in sources {
            copy_owned(&conn, source_path, ordinal as u32)?;
        }
        for (table, _) in TABLES {
            let n = store::count_rows(&conn, table).map_err(StoreError::Sql)?;
            report.rows.entry(table).or_default().push(n);
        }
    }
    Ok(report)
}

fn copy_owned(conn: &Connection, source_path: &Path, ordinal: u32) -> Result<(), ReshardError> {
    let copy_error = |table, error| ReshardError::Copy {
        table,
        source_path: source_path.to_owned(),
        error,
    };
    conn.execute("ATTACH DATABASE ?1 AS src", [source_path.to_string_lossy()])
        .map_err(|e| copy_error("(attach)", e))?;
    let result = (|| {
        for (table, guild_expr) in TABLES {
            let source_columns = columns(conn, "src", table).map_err(|e| copy_error(table, e))?;
            if source_columns.is_empty() {
                continue; // the TypeScript bot's file has no such table
            }
            let target_columns = columns(conn, "main", table).map_err(|e| copy_error(table, e))?;
            // mod_actions ids are each file's own sequence; source_key identifies a row.
            let shared: Vec<String> = target_columns
                .into_iter()
                .filter(|c| source_columns.contains(c) && !(table == "mod_actions" && c == "id"))
                .map(|c| format!("\"{c}\""))
                .collect();
            let list = shared.join(", ");
            let sql = format!(
                "INSERT OR IGNORE INTO main.\"{table}\" ({list}) SELECT {} FROM src.\"{table}\" t WHERE owner({guild_expr}) = ?1",
                shared.iter().map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ")
            );
            conn.execute(&sql, [ordinal])
                .map_err(|e| copy_error(table, e))?;
        }
        Ok(())
    })();
    conn.execute("DETACH DATABASE src", [])
        .map_err(|e| copy_error("(detach)", e))?;
    result
}
