//! `channels`: one CHANNEL_UPDATE that renames a category, in a pod that stores 200,000
//! channels (1,000 guilds of 200, loaded by GUILD_CREATE: 20 categories with 9 text channels
//! each). The rename rewrites the category of the category's children, found by `parent_id`. Each iteration: the guild's handler turns the event into its ops, which are
//! applied and committed in one transaction on a file database (WAL, synchronous=NORMAL).
//!
//! `BENCH_CHANNELS` (default 200000) sets the number of channels stored.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gateway_actors::event::{Channel, Event, GuildCreate, Id};
use gateway_actors::op::Op;
use gateway_actors::GuildState;
use gateway_actors::{apply, open_writer};
use std::time::{Duration, SystemTime};

const CHANNELS_PER_GUILD: u64 = 200;
const CATEGORIES_PER_GUILD: u64 = 20;
const CATEGORY: u8 = 4;
const TEXT: u8 = 0;

/// The channels of guild `g`: ids `g * 1000 + i`; the first CATEGORIES_PER_GUILD are
/// categories, the rest text channels spread over them.
fn guild_channels(g: u64) -> Vec<Channel> {
    (0..CHANNELS_PER_GUILD)
        .map(|i| {
            let category = i < CATEGORIES_PER_GUILD;
            Channel {
                id: Id(g * 1000 + i),
                kind: if category { CATEGORY } else { TEXT },
                guild_id: Some(Id(g)),
                name: Some(format!("channel-{i}")),
                parent_id: (!category).then(|| Id(g * 1000 + i % CATEGORIES_PER_GUILD)),
            }
        })
        .collect()
}

fn channel_update(c: &mut Criterion) {
    let total: u64 = std::env::var("BENCH_CHANNELS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let guilds = (total / CHANNELS_PER_GUILD).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = open_writer(&dir.path().join("channels.sqlite3")).expect("database");
    let now = gateway_actors::time::iso8601(SystemTime::now());
    // The guild whose category is renamed, in the middle of the table.
    let target = 1 + guilds / 2;
    let mut target_state = None;
    let tx = conn.transaction().expect("begin");
    for g in 1..=guilds {
        let mut state = GuildState::new(Id(g));
        let create = GuildCreate {
            id: Id(g),
            channels: guild_channels(g),
            threads: Vec::new(),
        };
        for op in state.handle(&Event::GuildCreate(create)) {
            let _ = apply(&tx, &op, &now).expect("apply");
        }
        if g == target {
            target_state = Some(state);
        }
    }
    tx.commit().expect("commit");
    let stored = gateway_actors::count_rows(&conn, "channel_info").expect("count");
    assert_eq!(stored as u64, guilds * CHANNELS_PER_GUILD);
    let mut state = target_state.expect("the renamed guild exists");

    let mut group = c.benchmark_group("channels");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(10));
    let mut round = 0u64;
    group.bench_function(format!("category_rename_{stored}_stored"), |b| {
        b.iter(|| {
            round += 1;
            let category = Channel {
                id: Id(target * 1000 + round % CATEGORIES_PER_GUILD),
                kind: CATEGORY,
                guild_id: Some(Id(target)),
                name: Some(format!("renamed-{round}")),
                parent_id: None,
            };
            let ops: Vec<Op> = state.handle(&Event::ChannelUpsert(category));
            let tx = conn.transaction().expect("begin");
            for op in &ops {
                let _ = apply(&tx, op, &now).expect("apply");
            }
            tx.commit().expect("commit");
        })
    });
    group.finish();
}

criterion_group!(benches, channel_update);
criterion_main!(benches);
