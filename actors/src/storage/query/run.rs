//! Running one guarded statement: the authorizer and deadline installed, the statement
//! checked (one, read-only, with as many parameters as sent), then the rows read within the
//! row, byte and time budgets. The guarded writes (`execute`) share these steps.

use super::guard::{allowed, refused_tables};
use super::values::{encoded_len, to_json};
use super::{QueryError, QueryLimits, QueryResult};
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthContext, Authorization};
use rusqlite::types::Value;
use rusqlite::{Batch, Connection, Statement};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// VM steps between deadline checks: frequent enough to stop within milliseconds.
const PROGRESS_STEPS: i32 = 10_000;

/// Runs `sql` on `conn` under the guard. The caller removes the hooks afterwards, so that
/// the connection goes back to its pool without them.
pub(super) fn run_guarded(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    deadline: Instant,
    limits: QueryLimits,
) -> Result<QueryResult, QueryError> {
    // Read before the authorizer is installed (which would refuse reading the module list).
    let refused = refused_tables(conn).map_err(QueryError::Database)?;
    let denied = install_guards(conn, deadline, move |action| {
        allowed(action, &refused).map_err(|what| {
            QueryError::Refused(format!(
                "{what} is not allowed: the API runs one read-only statement"
            ))
        })
    })?;
    let mut stmt = one_statement(conn, sql, params.len(), &denied, limits)?;
    if !stmt.readonly() {
        return Err(QueryError::Refused(
            "the statement writes; send writes to /v1/guilds/{id}/execute".into(),
        ));
    }
    read_rows(&mut stmt, params, deadline, limits)
}

/// What the authorizer denied first, if anything: SQLite itself only says "not authorized".
pub(super) type Denied = Arc<Mutex<Option<QueryError>>>;

/// Installs the authorizer, which applies `rule` to every action and records the first
/// refusal, and the deadline's progress handler.
pub(super) fn install_guards(
    conn: &Connection,
    deadline: Instant,
    rule: impl Fn(&rusqlite::hooks::AuthAction<'_>) -> Result<(), QueryError> + Send + 'static,
) -> Result<Denied, QueryError> {
    let denied: Denied = Arc::default();
    let record = denied.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| match rule(&ctx.action) {
        Ok(()) => Authorization::Allow,
        Err(what) => {
            if let Ok(mut slot) = record.lock() {
                slot.get_or_insert(what);
            }
            Authorization::Deny
        }
    }))
    .map_err(QueryError::Database)?;
    conn.progress_handler(PROGRESS_STEPS, Some(move || Instant::now() >= deadline))
        .map_err(QueryError::Database)?;
    Ok(denied)
}

/// The one statement `sql` holds, prepared, if it takes `params` parameters.
pub(super) fn one_statement<'c>(
    conn: &'c Connection,
    sql: &str,
    params: usize,
    denied: &Denied,
    limits: QueryLimits,
) -> Result<Statement<'c>, QueryError> {
    let refusal = |e: rusqlite::Error| {
        denied
            .lock()
            .ok()
            .and_then(|mut d| d.take())
            .unwrap_or_else(|| sql_error(e, limits.timeout))
    };
    let mut batch = Batch::new(conn, sql);
    let stmt = match batch.next() {
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
    let expected = stmt.parameter_count();
    if expected != params {
        return Err(QueryError::Refused(format!(
            "the statement takes {expected} parameters and {params} were sent"
        )));
    }
    Ok(stmt)
}

/// Reads the answer, failing (never truncating) past the row cap, the byte budget or the
/// deadline.
pub(super) fn read_rows(
    stmt: &mut Statement<'_>,
    params: &[Value],
    deadline: Instant,
    limits: QueryLimits,
) -> Result<QueryResult, QueryError> {
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

/// SQLite's error as the API reports it: an interrupt is the deadline, a lock is busy.
pub(super) fn sql_error(e: rusqlite::Error, timeout: Duration) -> QueryError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::OperationInterrupted) => QueryError::Timeout(timeout),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            QueryError::Busy(timeout)
        }
        Some(rusqlite::ErrorCode::ConstraintViolation) => QueryError::Constraint(e.to_string()),
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
