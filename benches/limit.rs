//! `limit`: how close the pipeline comes to what SQLite itself can take on this machine.
//!
//! - `limit/sqlite_rows`: the ceiling. The exact rows a stream leaves in a pod's file (every
//!   table, column and value, as the pipeline wrote them) inserted into a fresh file with the
//!   pod's schema (its indexes and triggers) and settings (WAL, synchronous=NORMAL, the
//!   writer's cache), by a bare loop of prepared statements in transactions of
//!   [`ROWS_PER_TRANSACTION`] rows: no decoding, no logic, no actors.
//! - `limit/replay`: the same stream through the whole pipeline as `replay` runs it (decoding
//!   on a runtime worker, guild actors, the writer), the pod owning every guild.
//!
//! Both report the stream's events per second, so `replay / sqlite_rows` is the fraction of
//! the ceiling the pipeline reaches. `BENCH_MESSAGES` (default 50000) sets the stream's size,
//! as in `pipeline`.

mod common;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rusqlite::types::Value;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Large enough that commits cost nothing per row; the writer's own batches are smaller.
const ROWS_PER_TRANSACTION: usize = 10_000;

/// One table's rows as stored, in the order SQLite returns them (rowid or primary key).
struct TableRows {
    name: String,
    columns: usize,
    rows: Vec<Vec<Value>>,
}

/// Every non-empty table of the file the pipeline left.
fn stored_rows(db: &Path) -> Vec<TableRows> {
    let conn = Connection::open(db).expect("the pipeline's file");
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("the tables");
    names
        .into_iter()
        .filter_map(|name| {
            let mut select = conn
                .prepare(&format!("SELECT * FROM \"{name}\""))
                .expect("select");
            let columns = select.column_count();
            let rows: Vec<Vec<Value>> = select
                .query_map([], |r| (0..columns).map(|i| r.get::<_, Value>(i)).collect())
                .and_then(|rows| rows.collect())
                .expect("the rows");
            (!rows.is_empty()).then_some(TableRows {
                name,
                columns,
                rows,
            })
        })
        .collect()
}

/// Inserts `tables` into a fresh file with the pod's schema; returns the time of the inserts.
fn insert_all(tables: &[TableRows], dir: &Path) -> Duration {
    let db = dir.join("ceiling.sqlite3");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let mut conn = gateway_actors::open_writer(&db).expect("a fresh file with the pod's schema");
    let started = Instant::now();
    for table in tables {
        let placeholders = vec!["?"; table.columns].join(", ");
        let sql = format!("INSERT INTO \"{}\" VALUES ({placeholders})", table.name);
        for chunk in table.rows.chunks(ROWS_PER_TRANSACTION) {
            let tx = conn.transaction().expect("begin");
            {
                let mut insert = tx.prepare_cached(&sql).expect("prepare");
                for row in chunk {
                    insert
                        .execute(rusqlite::params_from_iter(row))
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
    }
    started.elapsed()
}

fn limit(c: &mut Criterion) {
    let messages = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(50_000);
    let lines = Arc::new(stream(1000, messages));
    let dir = tempfile::tempdir().expect("temp dir");

    // The rows: what one replay of the stream leaves.
    let source = dir.path().join("rows");
    std::fs::create_dir_all(&source).expect("a directory for the rows");
    run_actors(&lines, &source, one_pod(), |_| {});
    let tables = stored_rows(&source.join("bench.sqlite3"));
    let total: usize = tables.iter().map(|t| t.rows.len()).sum();
    eprintln!(
        "limit: {} events leave {total} rows: {}",
        lines.len(),
        tables
            .iter()
            .map(|t| format!("{} {}", t.name, t.rows.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut group = c.benchmark_group("limit");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("sqlite_rows", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| insert_all(&tables, dir.path())).sum())
    });
    group.bench_function("replay", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| run_actors(&lines, dir.path(), one_pod(), |_| {}))
                .sum()
        })
    });
    group.finish();
}

criterion_group!(benches, limit);
criterion_main!(benches);
