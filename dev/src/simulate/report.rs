//! Everything `simulate` prints: a progress line each second, a line per rescale, the
//! per-pod summary (a table, or JSON lines with `--json`), and the verdict on lost events.

use super::cost::Cost;
use super::fleet::{Pod, PodStatus};
use super::schedule;
use anyhow::Context as _;
use gateway_actors::partition::Strategy;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// One line per rescale: what moved, how long it took, and what it cost the pods.
pub(super) fn print_rescale(index: usize, r: &schedule::Summary, cost: Option<Cost>, json: bool) {
    if json {
        let line = serde_json::json!({"rescale": {
            "index": index + 1, "epoch": r.epoch, "from": r.from, "to": r.to,
            "guilds_moved": r.guilds_moved,
            // Every event the new owners captured: re-applied, or skipped because the old
            // owner applied it before its freeze point.
            "events_captured": r.events_replayed + r.events_skipped,
            "events_replayed": r.events_replayed,
            "longest_pause_ms": r.longest_pause_ms, "duration_ms": r.duration_ms,
            "cost": cost,
        }});
        println!("{line}");
    } else {
        println!(
            "rescale {}: {} -> {} pods ({}, {} shards), epoch {}: {} guilds moved, longest pause {} ms, {:.1} s, {} captured events re-applied, {} skipped",
            index + 1,
            r.from.pods,
            r.to.pods,
            r.to.strategy,
            r.to.shards,
            r.epoch,
            r.guilds_moved,
            r.longest_pause_ms,
            r.duration_ms as f64 / 1000.0,
            r.events_replayed,
            r.events_skipped
        );
        if let Some(c) = cost {
            let mb = |b: u64| b as f64 / 1_048_576.0;
            println!(
                "  pods' CPU meanwhile {:.2} s ({:.2} s at their rate before); files {:.1} MB before, {:.1} MB at most, {:.1} MB after ({:.1} MB of growth at their rate before)",
                c.cpu_seconds,
                c.cpu_seconds_at_rate_before,
                mb(c.disk_bytes_before),
                mb(c.disk_bytes_peak),
                mb(c.disk_bytes_after),
                mb(c.disk_bytes_growth_at_rate_before)
            );
        }
    }
}

/// One pod's line of the summary.
#[derive(serde::Serialize)]
pub(super) struct PodSummary {
    pod: u32,
    /// Discord sessions the pod ran, the shards they were, and the identifies they took.
    sessions: usize,
    shards: Vec<u32>,
    identifies: u64,
    guilds: i64,
    received: u64,
    owned: u64,
    foreign: u64,
    committed: u64,
    overflowed: u64,
    shed: u64,
    failed: u64,
    message_stats: i64,
    message_cache: i64,
    channels: i64,
    mod_actions: i64,
    events_per_sec: f64,
    cpu_seconds: f64,
}

fn print_table(rows: &[PodSummary]) {
    println!();
    println!(
        "{:>4} {:>8} {:>16} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6} {:>6} {:>13} {:>13} {:>11} {:>11} {:>10} {:>7}",
        "pod", "sessions", "shards", "identifies", "guilds", "received", "owned", "foreign", "committed", "overflowed", "shed",
        "failed", "message_stats", "message_cache", "channels", "mod_actions", "events/s", "cpu s"
    );
    for r in rows {
        let shards = format!("{:?}", r.shards);
        println!(
            "{:>4} {:>8} {:>16} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6} {:>6} {:>13} {:>13} {:>11} {:>11} {:>10.0} {:>7.2}",
            r.pod, r.sessions, shards, r.identifies, r.guilds, r.received, r.owned, r.foreign, r.committed, r.overflowed, r.shed,
            r.failed, r.message_stats, r.message_cache, r.channels, r.mod_actions,
            r.events_per_sec, r.cpu_seconds,
        );
    }
}

fn row_counts(db: &Path) -> anyhow::Result<[i64; 5]> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", db.display()))?;
    let mut counts = [0; 5];
    for (i, table) in [
        "guilds",
        "message_stats",
        "message_cache",
        "channel_info",
        "mod_actions",
    ]
    .iter()
    .enumerate()
    {
        counts[i] = gateway_actors::count_rows(&conn, table)
            .with_context(|| format!("counting {table}"))?;
    }
    Ok(counts)
}

/// The sum of a labelled counter's series in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The progress line, at most once a second: on one rewritten line on a terminal, a line each
/// otherwise (a log).
pub(super) struct Progress {
    started: Instant,
    last: Instant,
    tty: bool,
}

impl Progress {
    pub(super) fn new(started: Instant) -> Progress {
        Progress {
            started,
            last: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Prints where each pod is (always when `finished`, to end on the final figures).
    pub(super) fn print(&mut self, pods: &[Pod], statuses: &[Option<PodStatus>], finished: bool) {
        if self.last.elapsed() >= Duration::from_secs(1) || finished {
            self.last = Instant::now();
            let line: Vec<String> = pods
                .iter()
                .zip(statuses)
                .map(|(p, s)| match s {
                    _ if p.stopped => format!("pod {}: stopped", p.ordinal),
                    Some(s) => format!("pod {}: {} events", p.ordinal, s.events_done),
                    None => format!("pod {}: starting", p.ordinal),
                })
                .collect();
            let elapsed = self.started.elapsed().as_secs_f64();
            if self.tty {
                eprint!("\r{:>6.1}s  {}   ", elapsed, line.join("  |  "));
            } else {
                eprintln!("{:>6.1}s  {}", elapsed, line.join("  |  "));
            }
        }
        if finished && self.tty {
            eprintln!();
        }
    }
}

/// What a pod ended with: its status, its metrics page and CPU time scraped before it was
/// stopped (empty and 0 for a pod a rescale stopped earlier).
pub(super) struct Ended<'a> {
    pub(super) pod: &'a Pod,
    pub(super) status: &'a PodStatus,
    pub(super) metrics: &'a str,
    pub(super) cpu_seconds: f64,
}

/// A pod's line of the summary, with the rows its database holds.
pub(super) fn summarize(ended: &Ended<'_>, elapsed: f64) -> anyhow::Result<PodSummary> {
    let Ended {
        pod,
        status,
        metrics: page,
        cpu_seconds,
    } = *ended;
    let counts = row_counts(&pod.database)?;
    Ok(PodSummary {
        pod: pod.ordinal,
        sessions: status.sessions.len(),
        shards: status.pod_shards.clone(),
        identifies: status.identifies,
        guilds: counts[0],
        received: status.events_accepted,
        owned: metric_sum(page, "guild_gateway_events_owned_total"),
        foreign: metric_sum(page, "guild_gateway_events_foreign_total"),
        committed: status.events_done,
        overflowed: status.events_overflowed,
        shed: status.events_shed,
        failed: status.events_failed,
        message_stats: counts[1],
        message_cache: counts[2],
        channels: counts[3],
        mod_actions: counts[4],
        events_per_sec: status.events_done as f64 / elapsed.max(1e-9),
        cpu_seconds,
    })
}

/// The per-pod summary: a table, or one `summary` JSON line.
pub(super) fn print_summary(rows: &[PodSummary], strategy: Strategy, elapsed: f64, json: bool) {
    if json {
        let summary = serde_json::json!({"summary": {
            "strategy": strategy.as_str(), "elapsed_seconds": elapsed, "pods": rows,
        }});
        println!("{summary}");
    } else {
        print_table(rows);
    }
}

/// Success unless events were lost: failed ones always fail the run, shed ones unless
/// `allow_shed`.
pub(super) fn verdict(
    statuses: &[PodStatus],
    pods: usize,
    strategy: Strategy,
    elapsed: f64,
    allow_shed: bool,
) -> ExitCode {
    let shed: u64 = statuses.iter().map(|s| s.events_shed).sum();
    let failed: u64 = statuses.iter().map(|s| s.events_failed).sum();
    if shed > 0 || failed > 0 {
        eprintln!(
            "\n{shed} events were dropped (shed) and {failed} failed (rolled back) in {elapsed:.1} s ({strategy} strategy): they are NOT in the databases"
        );
        if failed > 0 || !allow_shed {
            eprintln!(
                "error: events were lost ({shed} shed, {failed} failed); see the pods' logs{}",
                if failed == 0 {
                    " (--allow-shed accepts shedding)"
                } else {
                    ""
                }
            );
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "\nall {pods} pods committed everything they were sent in {elapsed:.1} s ({strategy} strategy)"
    );
    ExitCode::SUCCESS
}
