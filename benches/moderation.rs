//! `moderation`: one guild's moderation log with 100,000 events waiting for their audit log
//! entries (a mass ban), as its guild actor drives it: each event handled, then the next
//! deadline asked for (the actor schedules its expiry timer after every moderation event).
//!
//! - `moderation/bans_then_expire`: 100k bans, no entries, then the window closes: every ban
//!   is written without executor;
//! - `moderation/bans_then_entries_reversed`: 100k bans, then their entries, newest first:
//!   every entry finds its ban among all that wait.
//!
//! `BENCH_BANS` (default 100000) sets the number of bans.

mod common;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gateway_actors::event::{AuditEntry, Event, Id};
use gateway_actors::ModerationLog;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(5);
const GUILD: Id = Id(1);
const MODERATOR: Id = Id(2);
const MEMBER_BAN_ADD: u16 = 22;

fn ban(user: u64) -> Event {
    Event::Ban {
        user_id: Id(user),
        added: true,
    }
}

fn entry(user: u64) -> Event {
    Event::AuditEntry(AuditEntry {
        id: Id(1_000_000_000 + user),
        action: MEMBER_BAN_ADD,
        target_id: Some(Id(user)),
        executor_id: Some(MODERATOR),
        reason: Some("raid".into()),
        timeout_change: None,
    })
}

/// Handles every event as the guild actor does; returns the rows written.
fn run(events: &[Event], t0: Instant) -> usize {
    let mut log: ModerationLog<u64> = ModerationLog::new(GUILD, WINDOW, HashMap::new());
    let mut rows = 0;
    for (seq, event) in events.iter().enumerate() {
        let resolved = log
            .handle(seq as u64, event, Some(seq as u64), t0, 0, None)
            .unwrap_or_else(|_| panic!("a moderation event"));
        rows += resolved.iter().map(|r| r.ops.len()).sum::<usize>();
        black_box(log.next_deadline());
    }
    rows += log
        .expire(t0 + WINDOW)
        .iter()
        .map(|r| r.ops.len())
        .sum::<usize>();
    assert!(!log.is_waiting());
    rows
}

fn moderation(c: &mut Criterion) {
    let bans: u64 = std::env::var("BENCH_BANS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let mut group = c.benchmark_group("moderation");
    group.throughput(Throughput::Elements(bans));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    let only_bans: Vec<Event> = (0..bans).map(ban).collect();
    group.bench_function("bans_then_expire", |b| {
        b.iter_batched(
            Instant::now,
            |t0| assert_eq!(run(&only_bans, t0), bans as usize),
            BatchSize::PerIteration,
        )
    });

    let with_entries: Vec<Event> = (0..bans)
        .map(ban)
        .chain((0..bans).rev().map(entry))
        .collect();
    group.bench_function("bans_then_entries_reversed", |b| {
        b.iter_batched(
            Instant::now,
            |t0| assert_eq!(run(&with_entries, t0), bans as usize),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, moderation);
criterion_main!(benches);
