//! The TypeScript bot's dashboard runs its SQL unchanged on a pod's file
//! (../shared/fixtures/dashboard_queries.json). An empty database is enough: a name that the
//! pod's schema makes ambiguous, or a table or column it lacks, fails when the statement is
//! prepared.

use gateway_actors::open_writer;
use rusqlite::types::Value as Sql;
use rusqlite::Connection;
use serde_json::Value;
use std::path::PathBuf;

/// The queries that need no earlier query's results (those fill an `/*AUTHOR_IDS*/` marker).
fn standalone_queries() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/dashboard_queries.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let all: Value = serde_json::from_str(&text).expect("fixture is valid JSON");
    all.as_array()
        .expect("an array of queries")
        .iter()
        .filter(|q| !q["sql"].as_str().expect("sql").contains("/*AUTHOR_IDS*/"))
        .cloned()
        .collect()
}

fn run(conn: &Connection, query: &Value) -> rusqlite::Result<usize> {
    let parameters: Vec<Sql> = query["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| match p {
            Value::String(s) => Sql::Text(s.clone()),
            Value::Number(n) => Sql::Integer(n.as_i64().expect("an integer parameter")),
            other => panic!("{}: unexpected parameter {other}", query["name"]),
        })
        .collect();
    let mut stmt = conn.prepare(query["sql"].as_str().expect("sql"))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(parameters))?;
    let mut n = 0;
    while rows.next()?.is_some() {
        n += 1;
    }
    Ok(n)
}

#[test]
fn the_dashboards_queries_run_on_a_pods_database() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_writer(&dir.path().join("gateway.sqlite3")).unwrap();
    let queries = standalone_queries();
    assert!(
        queries
            .iter()
            .any(|q| q["sql"].as_str().unwrap().contains("\"channel_info\"")),
        "the fixture joins channel_info"
    );
    for query in &queries {
        if let Err(e) = run(&conn, query) {
            panic!("{}: {e}\n{}", query["name"], query["sql"]);
        }
    }
}

/// The check above is the one that fails for a guild_id column in channel_info, as the pod's
/// schema had.
#[test]
fn a_guild_id_in_channel_info_makes_the_channel_query_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_writer(&dir.path().join("gateway.sqlite3")).unwrap();
    conn.execute_batch("ALTER TABLE channel_info ADD COLUMN guild_id TEXT")
        .unwrap();
    let channel_query = standalone_queries()
        .into_iter()
        .find(|q| q["sql"].as_str().unwrap().contains("\"channel_info\""))
        .expect("a query joining channel_info");
    let err = run(&conn, &channel_query).unwrap_err();
    assert!(
        err.to_string().contains("ambiguous column name: guild_id"),
        "{err}"
    );
}
