//! Read-only SQL for the guild data API: the dashboard's own statements, run on the pod's file.
//!
//! The HTTP services send the SQL their query builder compiles, so the statement is arbitrary
//! text from the network. What makes that safe:
//! - connections opened read-only, from their own pool (a slow dashboard query never delays
//!   a guild actor's lookups on the pipeline's pool), seeing committed data only (WAL);
//! - an authorizer that allows reading and nothing else: no write, no ATTACH, no PRAGMA, no
//!   `load_extension` (which SQLite also leaves disabled), and no second statement;
//! - a deadline checked by SQLite's progress handler, which interrupts a long query;
//! - a cap on the rows returned (an error, never a silent truncation) and on any one value.

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Batch, Connection, OpenFlags};
use serde::Serialize;
use serde_json::Value as Json;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bounds on one query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Wall time for waiting on a connection and running the statement.
    pub timeout: Duration,
    /// Rows beyond this fail the query.
    pub max_rows: usize,
}

/// SQLite's cap on one string or blob on these connections (its default is 1 GB).
const MAX_VALUE_BYTES: i32 = 16 << 20;

/// VM steps between deadline checks: frequent enough to stop within milliseconds.
const PROGRESS_STEPS: i32 = 10_000;

/// A query's answer: SQLite's values as JSON (integers and reals as numbers, text as strings,
/// blobs as arrays of bytes, NULL as null).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Json>>,
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
    #[error("no database connection free within {0:?}")]
    Busy(Duration),
    #[error("SQL error: {0}")]
    Sql(String),
    #[error("database error")]
    Database(#[source] rusqlite::Error),
}

impl QueryError {
    /// Whether the client sent something that can never run (as opposed to a pod problem).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            QueryError::Refused(_) | QueryError::TooManyRows(_) | QueryError::Sql(_)
        )
    }
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
                c.busy_timeout(crate::BUSY_TIMEOUT)?;
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
        let params = params
            .iter()
            .enumerate()
            .map(|(i, p)| to_sql_value(p).ok_or_else(|| {
                QueryError::Refused(format!(
                    "parameter {} is an array or an object; send null, a boolean, a number or a string",
                    i + 1
                ))
            }))
            .collect::<Result<Vec<_>, _>>()?;
        let conn = self
            .pool
            .get_timeout(self.limits.timeout)
            .map_err(|_| QueryError::Busy(self.limits.timeout))?;
        let deadline = started + self.limits.timeout;
        let result = run_guarded(&conn, sql, &params, deadline, self.limits);
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

fn run_guarded(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    deadline: Instant,
    limits: QueryLimits,
) -> Result<QueryResult, QueryError> {
    let denied: Arc<Mutex<Option<String>>> = Arc::default();
    let record = denied.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        match allowed(&ctx.action) {
            Ok(()) => Authorization::Allow,
            Err(what) => {
                if let Ok(mut slot) = record.lock() {
                    slot.get_or_insert(what);
                }
                Authorization::Deny
            }
        }
    }))
    .map_err(QueryError::Database)?;
    conn.progress_handler(PROGRESS_STEPS, Some(move || Instant::now() >= deadline))
        .map_err(QueryError::Database)?;

    let refusal = |e: rusqlite::Error| match denied.lock().ok().and_then(|mut d| d.take()) {
        Some(what) => QueryError::Refused(format!(
            "{what} is not allowed: the API runs one read-only statement"
        )),
        None => sql_error(e, limits.timeout),
    };
    let mut batch = Batch::new(conn, sql);
    let mut stmt = match batch.next() {
        Ok(Some(stmt)) => stmt,
        Ok(None) => return Err(QueryError::Refused("no SQL statement".into())),
        Err(e) => return Err(refusal(e)),
    };
    // Whatever follows the first statement, a second statement or one refused as such, is
    // refused: only trailing spaces, comments and semicolons may follow.
    if !matches!(batch.next(), Ok(None)) {
        return Err(QueryError::Refused(
            "more than one SQL statement; send one at a time".into(),
        ));
    }
    if !stmt.readonly() {
        return Err(QueryError::Refused(
            "the statement writes; the API only reads (settings have their own endpoint)".into(),
        ));
    }
    let expected = stmt.parameter_count();
    if expected != params.len() {
        return Err(QueryError::Refused(format!(
            "the statement takes {expected} parameters and {} were sent",
            params.len()
        )));
    }
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut rows = Vec::new();
    let mut cursor = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(|e| sql_error(e, limits.timeout))?;
    while let Some(row) = cursor.next().map_err(|e| sql_error(e, limits.timeout))? {
        if rows.len() == limits.max_rows {
            return Err(QueryError::TooManyRows(limits.max_rows));
        }
        let values = (0..columns.len())
            .map(|i| row.get_ref(i).map(to_json))
            .collect::<Result<Vec<_>, _>>()
            .map_err(QueryError::Database)?;
        rows.push(values);
    }
    Ok(QueryResult { columns, rows })
}

/// The authorizer's rule: reading only. `Err` names what was refused.
fn allowed(action: &AuthAction<'_>) -> Result<(), String> {
    match action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Recursive => Ok(()),
        AuthAction::Function { function_name }
            if !function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Ok(())
        }
        AuthAction::Function { function_name } => Err(format!("the function {function_name}")),
        AuthAction::Attach { .. } => Err("ATTACH".into()),
        AuthAction::Detach { .. } => Err("DETACH".into()),
        AuthAction::Pragma { pragma_name, .. } => Err(format!("PRAGMA {pragma_name}")),
        AuthAction::Insert { .. } => Err("INSERT".into()),
        AuthAction::Update { .. } => Err("UPDATE".into()),
        AuthAction::Delete { .. } => Err("DELETE".into()),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => {
            Err("a transaction statement".into())
        }
        other => Err(format!("{other:?}")),
    }
}

fn sql_error(e: rusqlite::Error, timeout: Duration) -> QueryError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::OperationInterrupted) => QueryError::Timeout(timeout),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            QueryError::Busy(timeout)
        }
        _ if matches!(
            e,
            rusqlite::Error::SqliteFailure(..) | rusqlite::Error::SqlInputError { .. }
        ) =>
        {
            QueryError::Sql(e.to_string())
        }
        _ => QueryError::Database(e),
    }
}

fn to_sql_value(param: &Json) -> Option<Value> {
    Some(match param {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64()?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => return None,
    })
}

fn to_json(value: ValueRef<'_>) -> Json {
    match value {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => Json::from(i),
        // A non-finite real (SQLite's 9e999) has no JSON number: null, as JSON.stringify does.
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Json::Array(b.iter().map(|&byte| Json::from(byte)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(dir: &tempfile::TempDir, timeout_ms: u64, max_rows: usize) -> QueryPool {
        let path = dir.path().join("q.sqlite3");
        let conn = crate::store::open_writer(&path).unwrap();
        conn.execute_batch(
            "INSERT INTO guilds (id, settings) VALUES ('1', '{\"a\":1}'), ('2', '{}');",
        )
        .unwrap();
        QueryPool::open(
            &path,
            2,
            QueryLimits {
                timeout: Duration::from_millis(timeout_ms),
                max_rows,
            },
        )
        .unwrap()
    }

    fn refused(pool: &QueryPool, sql: &str) -> String {
        match pool.run(sql, &[]) {
            Err(QueryError::Refused(why)) => why,
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn reads_with_parameters_and_json_values() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 5000, 100);
        let r = pool
            .run(
                "select id, settings ->> 'a' as a, ?1 as b, ?2 as c, ?3 as d, x'00ff' as e, 9e999 as f from guilds where id = ?4",
                &[json!(true), json!(2.5), Json::Null, json!("1")],
            )
            .unwrap();
        assert_eq!(r.columns, ["id", "a", "b", "c", "d", "e", "f"]);
        assert_eq!(
            r.rows,
            vec![vec![
                json!("1"),
                json!(1),
                json!(1),
                json!(2.5),
                Json::Null,
                json!([0, 255]),
                Json::Null
            ]]
        );
        assert_eq!(pool.settings("1").unwrap().as_deref(), Some("{\"a\":1}"));
        assert_eq!(pool.settings("3").unwrap(), None);
    }

    #[test]
    fn writes_attach_pragmas_extensions_and_second_statements_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 5000, 100);
        assert!(refused(&pool, "DELETE FROM guilds").contains("DELETE"));
        assert!(refused(&pool, "UPDATE guilds SET settings = '{}'").contains("UPDATE"));
        assert!(refused(&pool, "INSERT INTO guilds (id) VALUES ('9')").contains("INSERT"));
        assert!(refused(&pool, "ATTACH DATABASE '/tmp/x.db' AS x").contains("ATTACH"));
        assert!(refused(&pool, "PRAGMA writable_schema = 1").contains("PRAGMA"));
        assert!(refused(&pool, "SELECT load_extension('/tmp/x.so')").contains("load_extension"));
        assert!(refused(&pool, "CREATE TABLE x (a)").contains("not allowed"));
        assert!(refused(&pool, "BEGIN").contains("transaction"));
        assert!(refused(&pool, "SELECT 1; SELECT 2").contains("more than one"));
        assert!(refused(&pool, "SELECT 1; DROP TABLE guilds").contains("more than one"));
        assert!(refused(&pool, "WITH x AS (SELECT 1) DELETE FROM guilds").contains("DELETE"));
        assert!(refused(&pool, "  -- nothing\n").contains("no SQL"));
        // Trailing semicolons and comments are one statement.
        assert_eq!(
            pool.run("SELECT 1; -- done\n;", &[]).unwrap().rows,
            vec![vec![json!(1)]]
        );
        // Nothing was written.
        assert_eq!(
            pool.run("SELECT count(*) FROM guilds", &[]).unwrap().rows,
            vec![vec![json!(2)]]
        );
        match pool.run("SELECT ?1", &[json!([1])]) {
            Err(QueryError::Refused(why)) => assert!(why.contains("parameter 1")),
            other => panic!("{other:?}"),
        }
        match pool.run("SELECT ?1, ?2", &[json!(1)]) {
            Err(QueryError::Refused(why)) => assert!(why.contains("takes 2 parameters")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pool.run("SELECT nope FROM guilds", &[]),
            Err(QueryError::Sql(_))
        ));
    }

    #[test]
    fn a_long_query_is_interrupted_and_the_pool_still_answers() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 200, 100);
        let endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
        assert!(matches!(
            pool.run(endless, &[]),
            Err(QueryError::Timeout(_))
        ));
        assert_eq!(
            pool.run("SELECT 7", &[]).unwrap().rows,
            vec![vec![json!(7)]]
        );
    }

    #[test]
    fn more_rows_than_the_cap_is_an_error_not_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 5000, 3);
        let rows = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT ?1) SELECT i FROM n";
        assert_eq!(pool.run(rows, &[json!(3)]).unwrap().rows.len(), 3);
        assert!(matches!(
            pool.run(rows, &[json!(4)]),
            Err(QueryError::TooManyRows(3))
        ));
    }
}
