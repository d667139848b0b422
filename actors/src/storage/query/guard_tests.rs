//! The guard's edges: functions and virtual tables by name, and the byte budget with blobs.

use super::guard::function_allowed;
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
