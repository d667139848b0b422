//! Guarded writes for the data API (`POST /v1/guilds/{id}/execute`): one INSERT, UPDATE or
//! DELETE the bot's query builder compiled, run on the writer's connection in a transaction of
//! its own, confined to one guild's rows of the registered guild tables.
//!
//! What confines it, besides the reads' guards (one statement, listed functions, no ATTACH,
//! PRAGMA, DDL or transaction statement, a deadline, caps on the RETURNING rows):
//! - the authorizer lets it write only tables of the registry that the bot writes
//!   ([`crate::storage::tables`]); any other is refused before it runs;
//! - SQLite's pre-update hook sees every row the statement changes, before and after (an
//!   upsert's update, a REPLACE's deletion and a DELETE without WHERE included). A row whose
//!   guild column names another guild, before or after, fails the statement; for tables tied
//!   to their guild through a parent row, the parent keys are collected and checked once the
//!   statement has run. Any such row rolls the whole statement back.

use super::guard::{allowed, refused_tables};
use super::row_watch::RowWatch;
use super::run::{install_guards, one_statement, read_rows};
use super::values::to_sql_values;
use super::{QueryError, QueryLimits, QueryResult};
use crate::storage::tables::{guild_table, GuildOf, GuildTable, GUILD_TABLES};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value as Json;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// A write's answer, after its commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Executed {
    /// The RETURNING rows, encoded as a query's.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Json>>,
    pub rows_affected: u64,
    pub last_insert_rowid: i64,
}

/// Where each writable table keeps what ties a row to its guild: the column's position in
/// the row the pre-update hook sees. Read from the schema once per writer.
pub(crate) struct Scopes {
    tables: HashMap<String, (&'static GuildTable, i32)>,
}

impl Scopes {
    pub(crate) fn read(conn: &Connection) -> rusqlite::Result<Scopes> {
        let mut tables = HashMap::new();
        for table in GUILD_TABLES.iter().filter(|t| t.bot_writes) {
            let column = match table.guild {
                GuildOf::Column(c) => c,
                GuildOf::Parent { column, .. } => column,
            };
            let position: i32 = conn.query_row(
                "SELECT cid FROM pragma_table_info(?1) WHERE name = ?2",
                [table.name, column],
                |r| r.get(0),
            )?;
            tables.insert(table.name.to_ascii_lowercase(), (table, position));
        }
        Ok(Scopes { tables })
    }

    fn get(&self, table: &str) -> Option<&(&'static GuildTable, i32)> {
        self.tables.get(&table.to_ascii_lowercase())
    }
}

/// What the pre-update hook saw of one statement.
#[derive(Default)]
struct Seen {
    /// The first table with a row of another guild (or a table it may not write).
    foreign: Option<String>,
    /// Parent keys of rows of parent-scoped tables, before and after: (table, key).
    parent_keys: BTreeSet<(&'static str, Option<String>)>,
}

/// Runs `sql` for `guild_id` on `conn` (the writer's connection, no transaction open) and
/// commits it, or rolls it back and says why.
pub(crate) fn execute(
    conn: &mut Connection,
    scopes: &Arc<Scopes>,
    guild_id: &str,
    sql: &str,
    params: &[Json],
    limits: QueryLimits,
    deadline: Instant,
) -> Result<Executed, ExecuteFailure> {
    let params = to_sql_values(params)?;
    // Read before the authorizer is installed (which would refuse reading the module list).
    let refused = refused_tables(conn).map_err(QueryError::Database)?;
    let tx = conn.transaction().map_err(ExecuteFailure::Storage)?;
    let seen = Rc::new(RefCell::new(Seen::default()));
    let (answer, changes, rowid) = {
        let hooks = Hooks(&tx);
        let denied = install_guards(&tx, deadline, move |action| write_allowed(action, &refused))?;
        let watch = watch_rows(&tx, scopes.clone(), guild_id, seen.clone());
        let mut stmt = one_statement(&tx, sql, params.len(), &denied, limits)?;
        if stmt.readonly() {
            return Err(QueryError::Refused(
                "the statement only reads; send reads to /v1/guilds/{id}/query".into(),
            )
            .into());
        }
        let answer = read_rows(&mut stmt, &params, deadline, limits)?;
        drop(stmt);
        drop(watch);
        drop(hooks);
        (answer, tx.changes(), tx.last_insert_rowid())
    };
    let seen = seen.take();
    if let Some(table) = seen.foreign {
        return Err(out_of_scope(&table, guild_id).into());
    }
    check_parents(&tx, &seen.parent_keys, guild_id)?;
    tx.commit().map_err(ExecuteFailure::Storage)?;
    let QueryResult { columns, rows, .. } = answer;
    Ok(Executed {
        columns,
        rows,
        rows_affected: changes,
        last_insert_rowid: rowid,
    })
}

/// Why a write was not committed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecuteFailure {
    /// The statement's own fault: refused, out of scope, a constraint, too slow.
    #[error(transparent)]
    Statement(#[from] QueryError),
    /// The storage failed (begin or commit): the writer decides what that means.
    #[error("the database failed")]
    Storage(#[source] rusqlite::Error),
}

fn out_of_scope(table: &str, guild_id: &str) -> QueryError {
    QueryError::OutOfScope {
        table: table.to_owned(),
        detail: format!(
            "the statement touched a row of the table {table} that is not guild {guild_id}'s; it was rolled back"
        ),
    }
}

/// The authorizer's rule for writes: the reads' rule, plus INSERT, UPDATE and DELETE on the
/// tables the bot writes.
fn write_allowed(
    action: &AuthAction<'_>,
    refused: &std::collections::HashSet<String>,
) -> Result<(), QueryError> {
    let written = match action {
        AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name } => table_name,
        _ => {
            return allowed(action, refused).map_err(|what| {
                QueryError::Refused(format!(
                    "{what} is not allowed: /execute runs one INSERT, UPDATE or DELETE"
                ))
            })
        }
    };
    // DDL reaches the authorizer as a write to the schema table first.
    if [
        "sqlite_master",
        "sqlite_schema",
        "sqlite_temp_master",
        "sqlite_temp_schema",
    ]
    .iter()
    .any(|t| t.eq_ignore_ascii_case(written))
    {
        return Err(QueryError::Refused(
            "a change to the schema is not allowed: /execute runs one INSERT, UPDATE or DELETE"
                .into(),
        ));
    }
    match guild_table(written) {
        Some(table) if table.bot_writes => Ok(()),
        _ => Err(QueryError::OutOfScope {
            table: (*written).to_owned(),
            detail: format!(
                "the table {written} is not one of the guild tables the bot writes (see the README's table registry)"
            ),
        }),
    }
}

/// Records, into `seen`, every changed row that is not `guild_id`'s, and the parent keys of
/// parent-scoped rows.
fn watch_rows<'c>(
    conn: &'c Connection,
    scopes: Arc<Scopes>,
    guild_id: &str,
    seen: Rc<RefCell<Seen>>,
) -> RowWatch<'c> {
    let guild = guild_id.to_owned();
    RowWatch::install(conn, move |change| {
        let mut seen = seen.borrow_mut();
        let scope = scopes.get(change.table).filter(|_| change.db == "main");
        let Some(&(registered, position)) = scope else {
            seen.foreign.get_or_insert_with(|| change.table.to_owned());
            return;
        };
        for value in change.values(position) {
            match registered.guild {
                GuildOf::Column(_) if value.as_deref() == Some(guild.as_str()) => {}
                GuildOf::Column(_) => {
                    seen.foreign.get_or_insert_with(|| change.table.to_owned());
                }
                GuildOf::Parent { .. } => {
                    seen.parent_keys.insert((registered.name, value));
                }
            }
        }
    })
}

/// Every parent key a parent-scoped row had, before or after, must be a parent row of
/// `guild_id` (a row tied to no parent belongs to no guild, and is refused too).
fn check_parents(
    conn: &Connection,
    keys: &BTreeSet<(&'static str, Option<String>)>,
    guild_id: &str,
) -> Result<(), QueryError> {
    for (name, key) in keys {
        let Some(table) = guild_table(name) else {
            continue;
        };
        // The registry's own SQL for the row's guild, over a one-row table holding the key.
        let guild: Option<Option<String>> = match key {
            Some(key) => conn
                .query_row(
                    &format!(
                        "SELECT {} FROM (SELECT ?1 AS \"{}\") t",
                        table.guild_sql("t", "main"),
                        match table.guild {
                            GuildOf::Parent { column, .. } => column,
                            GuildOf::Column(c) => c,
                        }
                    ),
                    [key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(QueryError::Database)?,
            None => None,
        };
        if guild.flatten().as_deref() != Some(guild_id) {
            return Err(out_of_scope(name, guild_id));
        }
    }
    Ok(())
}

/// Removes the authorizer and the deadline when dropped, whatever path the write took: the
/// writer's connection goes on writing events without them (and its COMMIT must not meet the
/// authorizer).
struct Hooks<'c>(&'c Connection);

impl Drop for Hooks<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
        let _ = self.0.progress_handler(0, None::<fn() -> bool>);
    }
}
