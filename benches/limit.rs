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
//! - `limit/plain_loop`: the same work as replay in one thread (`pipeline`'s baseline).
//!
//! All report the stream's events per second, so `replay / sqlite_rows` is the fraction of the
//! ceiling the pipeline reaches. Printed, not criterion: the three alternate in rounds on the
//! same stream, and the ratios are taken within each round. `BENCH_MESSAGES` (default 50000)
//! sets the stream's size, as in `pipeline`.

mod common;

use common::*;
use guild_gateway_dev::simulate::cpu_seconds;
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

/// Rounds of the three, alternating: the machine is shared and its speed drifts, so each
/// ratio is taken within a round and the medians are reported.
const ROUNDS: usize = 9;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let messages = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(50_000);
    let lines = Arc::new(stream(1000, messages));
    let events = lines.len() as f64;
    let dir = tempfile::tempdir().expect("temp dir");

    // The rows: what one replay of the stream leaves.
    let source = dir.path().join("rows");
    std::fs::create_dir_all(&source).expect("a directory for the rows");
    run_actors(&lines, &source, one_pod(), |_| {});
    let tables = stored_rows(&source.join("bench.sqlite3"));
    let total: usize = tables.iter().map(|t| t.rows.len()).sum();
    println!(
        "limit: {events} events leave {total} rows: {}",
        tables
            .iter()
            .map(|t| format!("{} {}", t.name, t.rows.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let (mut ceiling, mut replay, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    let (mut of_ceiling, mut over_plain) = (Vec::new(), Vec::new());
    // The process's CPU seconds in each run: on 2 cores, whether the pipeline is bound by its
    // writer (CPU near its wall time) or by all of its threads (near twice its wall time).
    let (mut replay_cpu, mut plain_cpu) = (Vec::new(), Vec::new());
    let cpu = || cpu_seconds(std::process::id());
    for round in 1..=ROUNDS {
        let c = insert_all(&tables, dir.path()).as_secs_f64();
        let cpu_before = cpu();
        let r = run_actors(&lines, dir.path(), one_pod(), |_| {}).as_secs_f64();
        let r_cpu = cpu() - cpu_before;
        let cpu_before = cpu();
        let p = run_plain_loop(&lines, dir.path(), one_pod()).as_secs_f64();
        let p_cpu = cpu() - cpu_before;
        println!(
            "round {round}: sqlite_rows {:.0} ms, replay {:.0} ms ({r_cpu:.2} CPU s), plain_loop {:.0} ms ({p_cpu:.2} CPU s)",
            c * 1e3,
            r * 1e3,
            p * 1e3
        );
        ceiling.push(events / c);
        replay.push(events / r);
        plain.push(events / p);
        of_ceiling.push(c / r);
        over_plain.push(p / r);
        replay_cpu.push(r_cpu);
        plain_cpu.push(p_cpu);
    }
    println!("medians of {ROUNDS} rounds, events/s of the stream's {events} events:");
    println!("  limit/sqlite_rows  {:>9.0}", median(ceiling));
    println!("  limit/replay       {:>9.0}", median(replay));
    println!("  limit/plain_loop   {:>9.0}", median(plain));
    println!(
        "  replay / sqlite_rows {:.2}; replay (actors) / plain_loop {:.2} (medians of the rounds' ratios)",
        median(of_ceiling),
        median(over_plain)
    );
    println!(
        "  CPU s (process, setup included): replay {:.2}, plain_loop {:.2}",
        median(replay_cpu),
        median(plain_cpu)
    );
}
