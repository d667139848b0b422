//! What a query may do: read plain tables and call listed functions, nothing else. The
//! authorizer that applies it is installed per query (see `run`); the lists live here so that
//! widening them is one reviewed edit.

use rusqlite::hooks::AuthAction;
use rusqlite::Connection;
use std::collections::HashSet;

/// The functions a query may call: SQLite's built-in scalar, aggregate, date and time, math,
/// JSON and window functions (<https://sqlite.org/lang_corefunc.html> and its siblings).
/// Everything else that a build of SQLite registers (full-text and R-tree helpers,
/// `fts3_tokenizer`, `load_extension`, test and debugging functions) is refused by name.
pub(crate) const ALLOWED_FUNCTIONS: &[&str] = &[
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
pub(crate) fn function_allowed(name: &str) -> bool {
    ALLOWED_FUNCTIONS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// The tables a query may not read: every virtual table module this SQLite has (eponymous
/// ones such as `dbstat`, `sqlite_dbpage` and `fts3tokenize` need no CREATE), the schema's
/// virtual tables and their shadow tables, except the JSON table-valued functions. (A CTE's
/// name is reported like a table's, so the rule is a list of what to refuse.)
pub(super) fn refused_tables(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
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
pub(super) fn allowed(action: &AuthAction<'_>, refused: &HashSet<String>) -> Result<(), String> {
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
