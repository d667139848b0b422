//! The data API's reads end to end: parameters, refusals of anything but one read, the
//! deadline and the row cap.

use super::*;
use serde_json::json;

fn pool(dir: &tempfile::TempDir, timeout_ms: u64, max_rows: usize) -> QueryPool {
    let path = dir.path().join("q.sqlite3");
    let conn = crate::storage::database::open_writer(&path).unwrap();
    conn.execute_batch("INSERT INTO guilds (id, settings) VALUES ('1', '{\"a\":1}'), ('2', '{}');")
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
    let endless =
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
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
    let rows =
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT ?1) SELECT i FROM n";
    assert_eq!(pool.run(rows, &[json!(3)]).unwrap().rows.len(), 3);
    assert!(matches!(
        pool.run(rows, &[json!(4)]),
        Err(QueryError::TooManyRows(3))
    ));
}
