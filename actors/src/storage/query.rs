//! Read-only SQL for the guild data API: the dashboard's own statements, run on the pod's file.
//!
//! The HTTP services send the SQL their query builder compiles, so the statement is arbitrary
//! text from the network. What makes that safe:
//! - connections opened read-only, from their own pool (a slow dashboard query never delays
//!   a guild actor's lookups on the pipeline's pool), seeing committed data only (WAL);
//! - an authorizer that allows reading and nothing else: no write, no ATTACH, no PRAGMA, and
//!   no second statement;
//! - functions only from a list ([`ALLOWED_FUNCTIONS`]): SQLite's core scalar, aggregate,
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

use base64::prelude::{Engine as _, BASE64_STANDARD};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Batch, Connection, OpenFlags};
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::HashSet;
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
    /// Encoded bytes of the whole answer beyond this fail the query (QUERY_MAX_BYTES).
    pub max_bytes: usize,
}

/// SQLite's cap on one string or blob on these connections (its default is 1 GB).
const MAX_VALUE_BYTES: i32 = 16 << 20;

/// VM steps between deadline checks: frequent enough to stop within milliseconds.
const PROGRESS_STEPS: i32 = 10_000;

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

/// The key of the tagged object that carries a blob.
pub const BLOB_TAG: &str = "$blob";

/// The functions a query may call: SQLite's built-in scalar, aggregate, date and time, math,
/// JSON and window functions (<https://sqlite.org/lang_corefunc.html> and its siblings).
/// Everything else that a build of SQLite registers (full-text and R-tree helpers,
/// `fts3_tokenizer`, `load_extension`, test and debugging functions) is refused by name.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // core scalar
    "abs",
    "char",
    "coalesce",
    "concat",
    "concat_ws",
    "format",
    "glob",
    "hex",
    "if",
    "ifnull",
    "iif",
    "instr",
    "length",
    "like",
    "likelihood",
    "likely",
    "lower",
    "ltrim",
    "max",
    "min",
    "nullif",
    "octet_length",
    "printf",
    "quote",
    "random",
    "randomblob",
    "replace",
    "round",
    "rtrim",
    "sign",
    "soundex",
    "substr",
    "substring",
    "trim",
    "typeof",
    "unhex",
    "unicode",
    "unistr",
    "unistr_quote",
    "unlikely",
    "upper",
    "zeroblob",
    "sqlite_version",
    "sqlite_source_id",
    "changes",
    "total_changes",
    "last_insert_rowid",
    // aggregate
    "avg",
    "count",
    "group_concat",
    "string_agg",
    "sum",
    "total",
    "median",
    "percentile",
    "percentile_cont",
    "percentile_disc",
    // date and time
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
    "timediff",
    "current_date",
    "current_time",
    "current_timestamp",
    // math
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "ceil",
    "ceiling",
    "cos",
    "cosh",
    "degrees",
    "exp",
    "floor",
    "ln",
    "log",
    "log10",
    "log2",
    "mod",
    "pi",
    "pow",
    "power",
    "radians",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
    // JSON (the operators -> and ->> are functions to the authorizer)
    "json",
    "jsonb",
    "json_array",
    "jsonb_array",
    "json_array_length",
    "json_error_position",
    "json_extract",
    "jsonb_extract",
    "json_insert",
    "jsonb_insert",
    "json_object",
    "jsonb_object",
    "json_patch",
    "jsonb_patch",
    "json_pretty",
    "json_remove",
    "jsonb_remove",
    "json_replace",
    "jsonb_replace",
    "json_set",
    "jsonb_set",
    "json_type",
    "json_valid",
    "json_quote",
    "json_group_array",
    "jsonb_group_array",
    "json_group_object",
    "jsonb_group_object",
    "->",
    "->>",
    // window
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
];

/// Table-valued functions that only turn a value into rows.
const ALLOWED_VIRTUAL_TABLES: &[&str] = &["json_each", "json_tree"];

/// Whether a query may call the function `name` (case-insensitive, as SQL is).
pub fn function_allowed(name: &str) -> bool {
    ALLOWED_FUNCTIONS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
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
            QueryError::Refused(_)
                | QueryError::TooManyRows(_)
                | QueryError::TooLarge(_)
                | QueryError::Sql(_)
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
        let params = params
            .iter()
            .enumerate()
            .map(|(i, p)| to_sql_value(p).ok_or_else(|| {
                QueryError::Refused(format!(
                    "parameter {} is an array, an object or a number beyond 2^53 (which JavaScript cannot hold exactly); send null, a boolean, a number or a string",
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
    // Read before the authorizer is installed (which would refuse reading the module list).
    let refused = refused_tables(conn).map_err(QueryError::Database)?;
    let denied: Arc<Mutex<Option<String>>> = Arc::default();
    let record = denied.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        match allowed(&ctx.action, &refused) {
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
    // `{"columns":[...],"rows":[]}` and each column name, quoted.
    let mut bytes = 24 + columns.iter().map(|c| c.len() + 3).sum::<usize>();
    let mut rows = Vec::new();
    let mut cursor = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(|e| sql_error(e, limits.timeout))?;
    while let Some(row) = cursor.next().map_err(|e| sql_error(e, limits.timeout))? {
        if rows.len() == limits.max_rows {
            return Err(QueryError::TooManyRows(limits.max_rows));
        }
        // The progress handler only runs inside SQLite's steps; reading and encoding the
        // values of a long answer is ours to bound.
        if Instant::now() >= deadline {
            return Err(QueryError::Timeout(limits.timeout));
        }
        let mut values = Vec::with_capacity(columns.len());
        bytes += 3;
        for i in 0..columns.len() {
            let value = row.get_ref(i).map_err(QueryError::Database)?;
            // Counted before the value is copied, so a huge value is refused unread.
            bytes += encoded_len(value) + 1;
            if bytes > limits.max_bytes {
                return Err(QueryError::TooLarge(limits.max_bytes));
            }
            values.push(to_json(value));
        }
        rows.push(values);
    }
    Ok(QueryResult {
        columns,
        rows,
        bytes,
    })
}

/// The tables a query may not read: every virtual table module this SQLite has (eponymous
/// ones such as `dbstat`, `sqlite_dbpage` and `fts3tokenize` need no CREATE), the schema's
/// virtual tables and their shadow tables, except the JSON table-valued functions. (A CTE's
/// name is reported like a table's, so the rule is a list of what to refuse.)
fn refused_tables(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare_cached(
        r"SELECT lower(name) FROM pragma_module_list
          UNION
          SELECT lower(s.name) FROM sqlite_schema s, sqlite_schema v
          WHERE v.type = 'table' AND v.sql LIKE 'CREATE VIRTUAL%'
            AND (s.name = v.name OR s.name LIKE v.name || '\_%' ESCAPE '\')",
    )?;
    let mut tables: HashSet<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for allowed in ALLOWED_VIRTUAL_TABLES {
        tables.remove(*allowed);
    }
    Ok(tables)
}

/// The authorizer's rule: reading plain tables, with listed functions. `Err` names what was
/// refused.
fn allowed(action: &AuthAction<'_>, refused: &HashSet<String>) -> Result<(), String> {
    match action {
        AuthAction::Select | AuthAction::Recursive => Ok(()),
        AuthAction::Read { table_name, .. } => {
            let table = table_name.to_ascii_lowercase();
            if refused.contains(&table) || table.starts_with("pragma_") {
                Err(format!("the table {table_name}"))
            } else {
                Ok(())
            }
        }
        AuthAction::Function { function_name } if function_allowed(function_name) => Ok(()),
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

/// The largest integer JavaScript (the bot, the dashboard) holds exactly: 2^53 - 1.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Whether a JSON number survives a round trip through JavaScript and SQLite unchanged
/// (larger ones, ids above all, must be sent as strings).
pub fn exact_number(n: &serde_json::Number) -> bool {
    n.as_f64().is_some_and(|f| f.abs() <= MAX_SAFE_INTEGER)
}

fn to_sql_value(param: &Json) -> Option<Value> {
    Some(match param {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) if !exact_number(n) => return None,
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64()?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => return None,
    })
}

/// The bytes `value` takes in the JSON answer (text counted without escapes).
fn encoded_len(value: ValueRef<'_>) -> usize {
    match value {
        ValueRef::Null => 4,
        ValueRef::Integer(_) | ValueRef::Real(_) => 24,
        ValueRef::Text(t) => t.len() + 2,
        ValueRef::Blob(b) => b.len().div_ceil(3) * 4 + BLOB_TAG.len() + 7,
    }
}

fn to_json(value: ValueRef<'_>) -> Json {
    match value {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => Json::from(i),
        // A non-finite real (SQLite's 9e999) has no JSON number: null, as JSON.stringify does.
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => {
            let mut tagged = serde_json::Map::with_capacity(1);
            tagged.insert(BLOB_TAG.into(), Json::String(BASE64_STANDARD.encode(b)));
            Json::Object(tagged)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(dir: &tempfile::TempDir, timeout_ms: u64, max_rows: usize) -> QueryPool {
        let path = dir.path().join("q.sqlite3");
        let conn = crate::storage::database::open_writer(&path).unwrap();
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
                max_bytes: 1 << 20,
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
                json!({"$blob": "AP8="}),
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
        // Integers beyond 2^53 are refused, not silently made floats.
        for big in [
            json!(9007199254740992u64),
            json!(u64::MAX),
            json!(1e300),
            json!(-9007199254740993i64),
        ] {
            match pool.run("SELECT ?1", std::slice::from_ref(&big)) {
                Err(QueryError::Refused(why)) => assert!(why.contains("2^53"), "{why}"),
                other => panic!("{big}: {other:?}"),
            }
        }
        assert_eq!(
            pool.run("SELECT ?1", &[json!(9007199254740991u64)])
                .unwrap()
                .rows,
            vec![vec![json!(9007199254740991u64)]]
        );
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
        let outcome = pool.run(endless, &[]);
        assert!(
            matches!(outcome, Err(QueryError::Timeout(_))),
            "{outcome:?}"
        );
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

#[cfg(test)]
mod guard_tests {
    use super::*;
    use serde_json::json;

    fn pool(dir: &tempfile::TempDir, max_bytes: usize) -> QueryPool {
        let path = dir.path().join("g.sqlite3");
        let conn = crate::storage::database::open_writer(&path).unwrap();
        conn.execute_batch("INSERT INTO guilds (id, settings) VALUES ('1', '{}');")
            .unwrap();
        QueryPool::open(
            &path,
            1,
            QueryLimits {
                timeout: Duration::from_secs(5),
                max_rows: 1000,
                max_bytes,
            },
        )
        .unwrap()
    }

    fn refusal(pool: &QueryPool, sql: &str, params: &[Json]) -> Option<String> {
        match pool.run(sql, params) {
            Err(QueryError::Refused(why)) => Some(why),
            _ => None,
        }
    }

    #[test]
    fn fts3_tokenizer_and_unlisted_functions_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 1 << 20);
        let why = refusal(&pool, "SELECT hex(fts3_tokenizer(?1))", &[json!("simple")]).unwrap();
        assert!(why.contains("the function fts3_tokenizer"), "{why}");
        let why = refusal(
            &pool,
            "SELECT fts3_tokenizer('simple', ?1)",
            &[json!("AAAAAAAA")],
        )
        .unwrap();
        assert!(why.contains("fts3_tokenizer"), "{why}");
        assert!(refusal(&pool, "SELECT load_extension('x')", &[])
            .unwrap()
            .contains("load_extension"));
        // Listed functions of every family still run.
        let r = pool
            .run(
                "SELECT upper('a'), count(*), date('2024-01-02'), json_extract('{\"a\":1}', '$.a'),
                        '{\"b\":2}' ->> 'b', row_number() OVER (), abs(-2.0)
                 FROM guilds",
                &[],
            )
            .unwrap();
        assert_eq!(
            r.rows,
            vec![vec![
                json!("A"),
                json!(1),
                json!("2024-01-02"),
                json!(1),
                json!(2),
                json!(1),
                json!(2.0)
            ]]
        );
    }

    #[test]
    fn virtual_tables_that_are_not_plain_data_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 1 << 20);
        for sql in [
            "SELECT * FROM fts3tokenize WHERE input = 'a b'",
            "SELECT * FROM dbstat",
            "SELECT * FROM sqlite_dbpage",
            "SELECT * FROM pragma_function_list",
            "SELECT * FROM pragma_table_info('guilds')",
        ] {
            let outcome = pool.run(sql, &[]);
            assert!(
                matches!(
                    &outcome,
                    Err(QueryError::Refused(_)) | Err(QueryError::Sql(_))
                ),
                "{sql}: {outcome:?}"
            );
            assert!(outcome.is_err());
        }
        // Full-text shadow tables, in a file that has one (the pod's schema has none).
        let path = dir.path().join("g.sqlite3");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE VIRTUAL TABLE notes USING fts4(body); INSERT INTO notes VALUES ('x');",
            )
            .unwrap();
        let fresh = QueryPool::open(&path, 1, pool.limits()).unwrap();
        for table in ["notes", "notes_content", "notes_segments", "notes_segdir"] {
            // (Connecting to the FTS table runs a PRAGMA, refused first.)
            let why = refusal(&fresh, &format!("SELECT * FROM {table}"), &[]);
            assert!(
                why.as_deref()
                    .is_some_and(|w| w.contains("the table") || w.contains("PRAGMA")),
                "{table}: {why:?}"
            );
        }
        // json_each is plain data.
        let r = fresh
            .run("SELECT value FROM json_each('[1,2]')", &[])
            .unwrap();
        assert_eq!(r.rows.len(), 2);
    }

    /// Every function this build of SQLite registers is either on the list or refused by the
    /// guard: a new SQLite that adds a function cannot widen what a caller may run.
    #[test]
    fn every_registered_function_is_listed_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 1 << 20);
        let conn = rusqlite::Connection::open(dir.path().join("g.sqlite3")).unwrap();
        let mut stmt = conn
            .prepare("SELECT DISTINCT name, narg FROM pragma_function_list")
            .unwrap();
        let functions: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(functions.len() > 100, "{}", functions.len());
        let mut refused = 0;
        for (name, narg) in functions {
            if function_allowed(&name) {
                continue;
            }
            let args = vec!["NULL"; narg.max(0) as usize].join(", ");
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let sql = format!("SELECT {quoted}({args})");
            let why = refusal(&pool, &sql, &[]);
            assert!(
                why.as_deref()
                    .is_some_and(|w| w.contains(&format!("the function {name}"))),
                "{sql} was not refused: {why:?}"
            );
            refused += 1;
        }
        assert!(refused > 0);
    }

    #[test]
    fn blobs_are_base64_and_the_byte_budget_is_counted_while_reading() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 64 * 1024);
        let r = pool.run("SELECT x'00ff10', zeroblob(2)", &[]).unwrap();
        assert_eq!(
            r.rows,
            vec![vec![json!({"$blob": "AP8Q"}), json!({"$blob": "AAA="})]]
        );
        // One value over the budget: refused before it is copied.
        assert!(matches!(
            pool.run("SELECT zeroblob(16000000) FROM guilds", &[]),
            Err(QueryError::TooLarge(65536))
        ));
        // Many small ones: refused once their sum is over it.
        let many = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 900) SELECT printf('%0100d', i) FROM n";
        assert!(matches!(pool.run(many, &[]), Err(QueryError::TooLarge(_))));
        let fits = pool.run("SELECT randomblob(1000)", &[]).unwrap();
        assert!(fits.bytes > 1300 && fits.bytes < 1500, "{}", fits.bytes);
    }
}
