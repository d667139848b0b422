//! SQL for the guild data API: the dashboard's read-only statements, run on the pod's file
//! through a pool of read-only connections, and the bot's guarded writes ([`execute`]), run in
//! the pod's one writer. Both go through the same guards; what follows is about reads.
//!
//! The HTTP services send the SQL their query builder compiles, so the statement is arbitrary
//! text from the network. What makes that safe:
//! - connections opened read-only, from their own pool (a slow dashboard query never delays
//!   a guild actor's lookups on the pipeline's pool), seeing committed data only (WAL);
//! - an authorizer that allows reading and nothing else: no write, no ATTACH, no PRAGMA, and
//!   no second statement;
//! - functions only from a list (`guard::ALLOWED_FUNCTIONS`): SQLite's core scalar, aggregate,
//!   date, math, JSON and window functions. Anything else, `fts3_tokenizer` (which leaks and
//!   sets function pointers) or `load_extension` among them, is refused by name;
//! - tables only if they are plain data: every virtual table module (`dbstat`,
//!   `sqlite_dbpage`, `fts3tokenize`, `pragma_*`, ...) and full-text shadow tables are
//!   refused, except the JSON table-valued functions `json_each` and `json_tree`;
//! - a deadline checked by SQLite's progress handler and between rows, which interrupts a
//!   long query or a long read of its answer;
//! - caps on the rows returned and on the answer's encoded bytes, counted while rows are read
//!   (an error, never a silent truncation), and on any one value. The memory a query holds is
//!   therefore bounded by its byte budget.
//!
//! Blobs are answered as `{"$blob": "<base64>"}` (standard alphabet, padded): compact, and
//! never mistaken for a string or an array of numbers.

pub mod execute;
mod guard;
mod row_watch;
mod run;
mod values;

#[cfg(test)]
mod execute_tests;
#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod tests;

pub use values::exact_number;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::hooks::{AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::OpenFlags;
use serde::Serialize;
use serde_json::Value as Json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The bounds on one query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Wall time for waiting on a connection and running the statement.
    pub timeout: Duration,
    /// Rows beyond this fail the query.
    pub max_rows: usize,
    /// Encoded bytes of the whole answer beyond this fail the query (QUERY_MAX_BYTES).
    pub max_bytes: usize,
}

/// SQLite's cap on one string or blob on these connections (its default is 1 GB).
const MAX_VALUE_BYTES: i32 = 16 << 20;

/// A query's answer: SQLite's values as JSON (integers and reals as numbers, text as strings,
/// blobs as `{"$blob": base64}`, NULL as null).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Json>>,
    /// The answer's size as counted against the byte budget (not sent).
    #[serde(skip)]
    pub bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request is wrong: the client must change it (HTTP 4xx).
    #[error("{0}")]
    Refused(String),
    #[error("the query ran longer than its limit of {0:?} and was interrupted")]
    Timeout(Duration),
    #[error("the result has more than {0} rows; narrow the query or add a LIMIT")]
    TooManyRows(usize),
    #[error("the result is larger than {0} bytes (QUERY_MAX_BYTES); select fewer or smaller columns, or add a LIMIT")]
    TooLarge(usize),
    #[error("no database connection free within {0:?}")]
    Busy(Duration),
    /// A write touched a table it may not, or a row of another guild: rolled back.
    #[error("{detail}")]
    OutOfScope { table: String, detail: String },
    /// A write broke a constraint (a UNIQUE key above all): rolled back.
    #[error("{0}")]
    Constraint(String),
    #[error("SQL error: {0}")]
    Sql(String),
    #[error("database error")]
    Database(#[source] rusqlite::Error),
}

/// The API's pool of read-only connections to the pod's database.
#[derive(Clone)]
pub struct QueryPool {
    pool: r2d2::Pool<SqliteConnectionManager>,
    limits: QueryLimits,
}

impl QueryPool {
    /// Opens `size` read-only connections lazily; the database must exist (the pipeline
    /// creates it).
    pub fn open(path: &Path, size: u32, limits: QueryLimits) -> Result<QueryPool, r2d2::Error> {
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(|c| {
                c.busy_timeout(crate::storage::database::BUSY_TIMEOUT)?;
                c.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
                c.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)?;
                Ok(())
            });
        let pool = r2d2::Pool::builder()
            .max_size(size.max(1))
            .min_idle(Some(0))
            .connection_timeout(limits.timeout)
            .build(manager)?;
        Ok(QueryPool { pool, limits })
    }

    pub fn limits(&self) -> QueryLimits {
        self.limits
    }

    /// Runs one read-only statement with JSON parameters. Blocking: call it off the async
    /// threads.
    pub fn run(&self, sql: &str, params: &[Json]) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let params = values::to_sql_values(params)?;
        let conn = self
            .pool
            .get_timeout(self.limits.timeout)
            .map_err(|_| QueryError::Busy(self.limits.timeout))?;
        let deadline = started + self.limits.timeout;
        let result = run::run_guarded(&conn, sql, &params, deadline, self.limits);
        // The connection goes back to the pool without this query's hooks.
        let _ = conn.progress_handler(0, None::<fn() -> bool>);
        let _ = conn.authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
        result
    }

    /// The guild's settings document, if it has a `guilds` row.
    pub fn settings(&self, guild_id: &str) -> Result<Option<String>, QueryError> {
        let result = self.run(
            "SELECT settings FROM guilds WHERE id = ?1",
            &[Json::String(guild_id.to_owned())],
        )?;
        Ok(result
            .rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next())
            .map(|v| match v {
                Json::String(s) => s,
                other => other.to_string(),
            }))
    }
}
