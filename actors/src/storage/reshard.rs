//! Moving guilds' rows to their owners: split one or more pod databases (or the TypeScript
//! bot's single file) into the databases of a new set of N pods.
//!
//! Each row goes to the pod that owns its guild under the new N and strategy. Copies are
//! `INSERT OR IGNORE`, so overlapping sources (the same guild in two files, a retried run)
//! leave one row. Columns are those the source and the target share, so the TypeScript bot's
//! file (without the added columns and tables) is a valid source.

use crate::domain::partition::{Partition, Strategy};
use crate::storage::database::{self, StoreError, NEW_UUID};
use crate::storage::tables::{GuildOf, GUILD_TABLES};
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Rows per table, in the sources and in the new databases.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReshardReport {
    pub targets: Vec<PathBuf>,
    /// Per table: rows written to each target, in ordinal order.
    pub rows: BTreeMap<&'static str, Vec<i64>>,
    /// channel_info rows of the sources whose guild no source records, so no target got them
    /// (the TypeScript bot's file: a channel nobody wrote in, or a category). Each pod's next
    /// GUILD_CREATE writes its guilds' channels.
    pub unplaced_channels: i64,
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

/// Writes `out_dir/gateway-k.sqlite3` for every k < pods from `sources`, each guild to its
/// owner under `strategy`, `pods` and the bot's Discord shard count `shards`.
pub fn reshard(
    sources: &[PathBuf],
    strategy: Strategy,
    pods: u32,
    shards: u32,
    out_dir: &Path,
) -> Result<ReshardReport, ReshardError> {
    let layout = Partition {
        strategy,
        ordinal: 0,
        pods,
        shards,
    };
    let targets: Vec<PathBuf> = (0..pods)
        .map(|k| out_dir.join(format!("gateway-{k}.sqlite3")))
        .collect();
    if let Some(existing) = targets.iter().find(|t| t.exists()) {
        return Err(ReshardError::TargetExists(existing.clone()));
    }
    let mut report = ReshardReport {
        targets: targets.clone(),
        rows: BTreeMap::new(),
        unplaced_channels: 0,
    };
    for (ordinal, target) in targets.iter().enumerate() {
        let conn = database::open_writer(target)?;
        // owner(guild_id) in SQL: the same function the pods and the HTTP services use.
        conn.create_scalar_function(
            "owner",
            1,
            FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_UTF8,
            move |ctx| {
                let guild: Option<String> = ctx.get(0)?;
                Ok(guild
                    .and_then(|g| layout.owner_of_str(&g).ok())
                    .map(i64::from))
            },
        )
        .map_err(|source| StoreError::Prepare {
            path: target.clone(),
            source,
        })?;
        for source_path in sources {
            let unplaced = copy_owned(&conn, source_path, ordinal as u32)?;
            if ordinal == 0 {
                report.unplaced_channels += unplaced;
            }
        }
        for table in GUILD_TABLES {
            let n = database::count_rows(&conn, table.name).map_err(StoreError::Sql)?;
            report.rows.entry(table.name).or_default().push(n);
        }
    }
    Ok(report)
}

/// A source channel_info row's guild (`t` is the row), from `temp.channel_guild`.
const CHANNEL_GUILD: &str =
    "(SELECT c.guild_id FROM temp.channel_guild c WHERE c.channel_id = t.id)";

/// The SQL giving the guild of `table`'s source row `t`. A channel's guild (channel_info's,
/// tickets_config's) comes from `temp.channel_guild`, which knows more channels than a source's
/// guild_channels; other parents are looked up in the source.
fn source_guild_sql(table: &crate::storage::tables::GuildTable) -> String {
    match table.guild {
        GuildOf::Parent {
            column,
            parent: "guild_channels",
            ..
        } => format!(
            "(SELECT c.guild_id FROM temp.channel_guild c WHERE c.channel_id = t.\"{column}\")"
        ),
        _ => table.guild_sql("t", "src"),
    }
}

/// Fills `temp.channel_guild` with the guild of every channel the attached source records, from
/// the first of: its guild_channels row in a pod's file; its channel_info guild_id column in a
/// pod's file from before guild_channels (sources are read as they are, not migrated); the
/// guild of a message in it, which is all the TypeScript bot's file records (its channel_info
/// has no guild). One pass over each source table, rather than a lookup per channel in
/// message tables that have no index on channel_id.
fn collect_channel_guilds(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.channel_guild;
         CREATE TEMP TABLE channel_guild (channel_id TEXT PRIMARY KEY, guild_id TEXT NOT NULL)
           WITHOUT ROWID;",
    )?;
    let has = |table: &str, wanted: &[&str]| -> rusqlite::Result<bool> {
        let have = columns(conn, "src", table)?;
        Ok(wanted.iter().all(|w| have.iter().any(|h| h == w)))
    };
    let mut selects = Vec::new();
    if has("guild_channels", &["channel_id", "guild_id"])? {
        selects.push("SELECT channel_id, guild_id FROM src.guild_channels");
    }
    if has("channel_info", &["id", "guild_id"])? {
        selects.push("SELECT id, guild_id FROM src.channel_info");
    }
    if has("message_stats", &["channel_id", "guild_id"])? {
        selects.push("SELECT channel_id, guild_id FROM src.message_stats");
    }
    if has("message_cache", &["channel_id", "guild_id"])? {
        selects.push("SELECT channel_id, guild_id FROM src.message_cache");
    }
    for select in selects {
        conn.execute(
            &format!(
                "INSERT OR IGNORE INTO temp.channel_guild {select} WHERE guild_id IS NOT NULL"
            ),
            [],
        )?;
    }
    Ok(())
}

/// Copies the rows of `source_path` that pod `ordinal` owns into `conn`; returns how many of
/// its channel_info rows have no known guild (and so were copied nowhere).
pub(crate) fn copy_owned(
    conn: &Connection,
    source_path: &Path,
    ordinal: u32,
) -> Result<i64, ReshardError> {
    let copy_error = |table, error| ReshardError::Copy {
        table,
        source_path: source_path.to_owned(),
        error,
    };
    conn.execute("ATTACH DATABASE ?1 AS src", [source_path.to_string_lossy()])
        .map_err(|e| copy_error("(attach)", e))?;
    let result = (|| {
        collect_channel_guilds(conn).map_err(|e| copy_error("channel_info", e))?;
        for table in GUILD_TABLES {
            copy_table(conn, table.name, &source_guild_sql(table), ordinal)
                .map_err(|e| copy_error(table.name, e))?;
        }
        copy_channel_guilds(conn, ordinal, &copy_error)
    })();
    conn.execute("DETACH DATABASE src", [])
        .map_err(|e| copy_error("(detach)", e))?;
    result
}

/// Copies `table`'s rows whose guild (`guild_expr`, over the source row `t`) pod `ordinal`
/// owns, in the columns both files have.
fn copy_table(
    conn: &Connection,
    table: &str,
    guild_expr: &str,
    ordinal: u32,
) -> rusqlite::Result<()> {
    let source_columns = columns(conn, "src", table)?;
    if source_columns.is_empty() {
        return Ok(()); // the TypeScript bot's file has no such table
    }
    let target_columns = columns(conn, "main", table)?;
    let shared: Vec<String> = target_columns
        .into_iter()
        .filter(|c| source_columns.contains(c))
        .collect();
    let list = shared
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let values = shared
        .iter()
        .map(|c| match (table, c.as_str()) {
            // A file of an earlier release numbered its moderation rows itself: they get UUIDs
            // (unique across pods), as its own migration at open would give them.
            ("mod_actions", "id") => {
                format!("CASE WHEN typeof(t.id) = 'text' THEN t.id ELSE {NEW_UUID} END")
            }
            _ => format!("t.\"{c}\""),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let same_row = same_row_clause(table, &source_columns);
    let sql = format!(
        "INSERT OR IGNORE INTO main.\"{table}\" ({list}) SELECT {values} FROM src.\"{table}\" t WHERE owner({guild_expr}) = ?1{same_row}",
    );
    conn.execute(&sql, [ordinal])?;
    Ok(())
}

/// A moderation row without a source_key (the TypeScript bot's) and with an integer id (an
/// earlier release's) has no unique key to be ignored by: a row already there with the same
/// guild, user, action and time is the same row (a second source, a retried copy). Other
/// tables' keys suffice.
fn same_row_clause(table: &str, source_columns: &[String]) -> &'static str {
    if table == "mod_actions" && source_columns.iter().any(|c| c == "source_key") {
        " AND NOT (t.source_key IS NULL AND EXISTS (SELECT 1 FROM main.mod_actions m
                   WHERE m.source_key IS NULL AND m.guild_id = t.guild_id AND m.user_id = t.user_id
                   AND m.action_type = t.action_type AND m.created_at = t.created_at))"
    } else if table == "mod_actions" {
        " AND NOT EXISTS (SELECT 1 FROM main.mod_actions m
                   WHERE m.source_key IS NULL AND m.guild_id = t.guild_id AND m.user_id = t.user_id
                   AND m.action_type = t.action_type AND m.created_at = t.created_at)"
    } else {
        ""
    }
}

/// A channel copied without a guild_channels row (a source without that table) gets one, so
/// the target's pod knows its guild; type and parent as the source has them, else NULL until
/// the next GUILD_CREATE. Answers the source's channels with no known guild.
fn copy_channel_guilds(
    conn: &Connection,
    ordinal: u32,
    copy_error: &impl Fn(&'static str, rusqlite::Error) -> ReshardError,
) -> Result<i64, ReshardError> {
    let source_columns =
        columns(conn, "src", "channel_info").map_err(|e| copy_error("guild_channels", e))?;
    if source_columns.is_empty() {
        return Ok(0);
    }
    let [kind, parent] = ["channel_type", "parent_id"].map(|c| {
        if source_columns.iter().any(|have| have == c) {
            format!("t.{c}")
        } else {
            "NULL".to_string()
        }
    });
    conn.execute(
        &format!(
            "INSERT OR IGNORE INTO main.guild_channels (channel_id, guild_id, channel_type, parent_id)
             SELECT t.id, {CHANNEL_GUILD}, {kind}, {parent} FROM src.channel_info t
             WHERE owner({CHANNEL_GUILD}) = ?1"
        ),
        [ordinal],
    )
    .map_err(|e| copy_error("guild_channels", e))?;
    conn.query_row(
        &format!("SELECT COUNT(*) FROM src.channel_info t WHERE {CHANNEL_GUILD} IS NULL"),
        [],
        |r| r.get(0),
    )
    .map_err(|e| copy_error("channel_info", e))
}
