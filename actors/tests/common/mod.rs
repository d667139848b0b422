//! What the library's integration tests share: a System to run the pipeline in, and one pod's
//! configuration.

#![allow(dead_code)] // each test file uses a part

use gateway_actors::partition::{Partition, Strategy};
use gateway_actors::PipelineConfig;
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Runs `f` in an actix System on a two-worker tokio runtime, as the pod does.
pub fn in_system<F: std::future::Future>(f: F) -> F::Output {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
    .block_on(f)
}

/// The defaults, for the only pod of a deployment.
pub fn one_pod(db: &Path) -> PipelineConfig {
    PipelineConfig::new(Partition::new(Strategy::Md5, 0, 1), db.to_owned())
}

/// Polls `check` every 10 ms for at most 60 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The one number a query returns.
pub fn count(db: &Path, sql: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}
