//! What the benches share: a realistic recorded stream, and the pipeline (or the plain-loop
//! baseline) run over it with only the processing timed.

#![allow(dead_code)] // each bench uses a part

// The allocator the binary uses, so the benches measure what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use gateway_actors::event::{decode_frame, Event, Id};
use gateway_actors::metrics::Metrics;
use gateway_actors::op::Op;
use gateway_actors::partition::{Partition, Strategy};
use gateway_actors::GuildState;
use gateway_actors::ModerationLog;
use gateway_actors::{apply, open_writer};
use gateway_actors::{Pipeline, PipelineConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The TypeScript bot's message texts (../shared/fixtures/message_stats.json), so the stats
/// work is the real one; the synthetic defaults if the fixture is missing.
pub fn texts() -> Vec<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/message_stats.json");
    let parsed: Option<Vec<serde_json::Value>> = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let texts: Vec<String> = parsed
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["content"].as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    if texts.is_empty() {
        guild_gateway_dev::synthetic::DEFAULT_TEXTS
            .iter()
            .map(|t| t.to_string())
            .collect()
    } else {
        texts
    }
}

/// A recorded stream as lines: `guilds` guilds, `messages` messages plus reactions, edits,
/// deletes, DMs and moderation events (guild_gateway_dev::synthetic).
pub fn stream(guilds: u32, messages: u64) -> Vec<String> {
    let mut buf = Vec::new();
    guild_gateway_dev::synthetic::generate(&mut buf, guilds, messages, &texts())
        .expect("writing to memory");
    String::from_utf8(buf)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn one_pod() -> Partition {
    Partition::new(Strategy::Md5, 0, 1)
}

pub fn in_system<F: std::future::Future>(f: F) -> F::Output {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
    .block_on(f)
}

/// Runs `lines` through a fresh pipeline on a fresh database in `dir`, as `replay` does
/// (decoding on a runtime worker); returns the time from the first line to the last commit.
pub fn run_actors(
    lines: &Arc<Vec<String>>,
    dir: &Path,
    sharding: Partition,
    tune: impl FnOnce(&mut PipelineConfig),
) -> Duration {
    let db = fresh_db(dir);
    in_system(async {
        let mut config = PipelineConfig::new(sharding, db);
        tune(&mut config);
        let metrics = Arc::new(Metrics::new(sharding.ordinal, sharding.pods).expect("metrics"));
        let pipeline = Arc::new(Pipeline::start(config, metrics.clone()).expect("pipeline"));
        let started = Instant::now();
        feed(&pipeline, lines).await;
        pipeline.drain().await;
        let elapsed = started.elapsed();
        assert_eq!(metrics.shed.get(), 0, "the bench must commit every event");
        // Its threads (writer, guild workers, checkpointer, read pool) and their caches end
        // here, not at the end of the bench: the next run starts on the same machine.
        Arc::try_unwrap(pipeline)
            .unwrap_or_else(|_| panic!("the feeder let go of the pipeline"))
            .shutdown();
        elapsed
    })
}

/// Decodes and submits every line from a runtime worker thread, as `replay` does.
pub async fn feed(pipeline: &Arc<Pipeline>, lines: &Arc<Vec<String>>) {
    let (pipeline, lines) = (pipeline.clone(), lines.clone());
    tokio::spawn(async move {
        for line in lines.iter() {
            pipeline
                .submit(decode_frame(line).expect("the stream decodes"))
                .await;
        }
    })
    .await
    .expect("the feeder task");
}

/// The same work in a plain single-threaded loop: the same decoding, handlers, moderation log
/// and statements, in transactions of the same size. The baseline for `pipeline/actors`.
pub fn run_plain_loop(lines: &[String], dir: &Path, sharding: Partition) -> Duration {
    let db = fresh_db(dir);
    let mut conn = open_writer(&db).expect("database");
    let max_batch = PipelineConfig::new(sharding, db.clone()).max_batch;
    let started = Instant::now();
    let mut guilds: HashMap<Id, (GuildState, ModerationLog<()>)> = HashMap::new();
    let mut batch: Vec<Vec<Op>> = Vec::with_capacity(max_batch);
    let commit = |conn: &mut rusqlite::Connection, batch: &mut Vec<Vec<Op>>| {
        let now = gateway_actors::time::iso8601(std::time::SystemTime::now());
        let tx = conn.transaction().expect("begin");
        for op in batch.iter().flatten() {
            // As the writer: a write refused as another guild's changes nothing.
            let _ = apply(&tx, op, &now).expect("apply");
        }
        tx.commit().expect("commit");
        batch.clear();
    };
    for line in lines {
        let dispatch = decode_frame(line).expect("the stream decodes");
        let Some(guild) = dispatch.guild_id else {
            continue;
        };
        if !sharding.owns(Some(guild.0)) || matches!(dispatch.event, Event::Other) {
            continue;
        }
        let (state, moderation) = guilds.entry(guild).or_insert_with(|| {
            (
                GuildState::new(guild),
                ModerationLog::new(guild, Duration::from_secs(5), HashMap::new()),
            )
        });
        let ops =
            match moderation.handle((), &dispatch.event, dispatch.seq, Instant::now(), 0, None) {
                Ok(resolutions) => resolutions.into_iter().flat_map(|r| r.ops).collect(),
                Err(()) => state.handle(&dispatch.event),
            };
        if !ops.is_empty() {
            batch.push(ops);
            if batch.len() >= max_batch {
                commit(&mut conn, &mut batch);
            }
        }
    }
    for (_, moderation) in guilds.values_mut() {
        batch.extend(moderation.flush().into_iter().map(|r| r.ops));
    }
    commit(&mut conn, &mut batch);
    started.elapsed()
}

fn fresh_db(dir: &Path) -> PathBuf {
    let db = dir.join("bench.sqlite3");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    db
}
