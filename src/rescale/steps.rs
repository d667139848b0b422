//! The protocol's steps as the command drives them: plan -> prepare -> capture -> freeze ->
//! import -> commit (see `gateway_actors::rescale::ownership` for the rules they keep).

use super::endpoints::{FreezeAnswer, ImportAnswer, LayoutBody, RescaleState};
use super::pods::{agree, left_behind, print_status, Pods};
use super::{RescaleArgs, Summary};
use anyhow::bail;
use gateway_actors::partition::{default_shards, Strategy};
use gateway_actors::rescale::anchor::Anchor;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The change this run drives: the one under way, or a fresh one.
pub struct Plan {
    pub epoch: u64,
    pub from: LayoutBody,
    pub target: LayoutBody,
    pub operation: String,
    /// Started by this run (so a failed prepare is undone), not resumed.
    fresh: bool,
    /// The pods still to take the steps: those that have not committed the epoch.
    pending: Vec<u32>,
}

/// Reads every pod and decides the change: the one under way (resumed), or `--to`'s. None when
/// the pods are already at the target.
pub async fn plan(args: &RescaleArgs, pods: &Pods) -> anyhow::Result<Option<Plan>> {
    let answered = pods.states(false).await?;
    if let Some((k, next)) = left_behind(&answered).first() {
        bail!(
            "pod {k} holds a prepare left behind by operation {} (epoch {}, {}), whose epoch is already committed: remove it with `guild-gateway rescale --abort`",
            next.operation,
            next.epoch,
            next.layout
        );
    }
    let states: Vec<RescaleState> = answered.into_iter().flatten().collect();
    let Some((epoch, target, operation, fresh)) = target(args, &states)? else {
        return Ok(None);
    };
    // The layout before: that of a pod which has not committed the new epoch.
    let from = states
        .iter()
        .find(|s| s.epoch != epoch)
        .map_or_else(|| states[0].layout.clone(), |s| s.layout.clone());
    let everyone = from.pods.max(target.pods);
    progress(format_args!(
        "operation {operation}: {from} -> {target}, epoch {epoch}, pods 0..{everyone}"
    ));
    // Pods that committed already (a run that died during the commits) are done.
    let pending = (0..everyone)
        .filter(|&k| states.get(k as usize).is_none_or(|s| s.epoch != epoch))
        .collect();
    Ok(Some(Plan {
        epoch,
        from,
        target,
        operation,
        fresh,
        pending,
    }))
}

/// The change under way, or the one asked for: (epoch, layout, operation, fresh).
fn target(
    args: &RescaleArgs,
    states: &[RescaleState],
) -> anyhow::Result<Option<(u64, LayoutBody, String, bool)>> {
    let current = &states[0];
    if let Some(next) = states.iter().find_map(|s| s.next.as_ref()) {
        let asked = args.to.map(|m| target_of(args, &next.layout, m as u32));
        if let Some(asked) = asked.filter(|a| *a != next.layout) {
            bail!(
                "operation {} is under way, a rescale to {} (epoch {}): run again without --to (or with the same target) to finish it, or --abort before any freeze; you asked for {asked}",
                next.operation,
                next.layout,
                next.epoch
            );
        }
        progress(format_args!(
            "resuming operation {}: the rescale to {} (epoch {})",
            next.operation, next.layout, next.epoch
        ));
        return Ok(Some((
            next.epoch,
            next.layout.clone(),
            next.operation.clone(),
            false,
        )));
    }
    let Some(to) = args.to else {
        bail!("--to M is required (or --status, or --abort)");
    };
    if !agree(states) {
        print_status(&states.iter().cloned().map(Ok).collect::<Vec<_>>());
        bail!("the pods do not agree on their committed ownership: see above (and `guild-gateway coverage`)");
    }
    let target = target_of(args, &current.layout, to as u32);
    if target == current.layout {
        progress(format_args!(
            "already at {target} (epoch {})",
            current.epoch
        ));
        return Ok(None);
    }
    Ok(Some((current.epoch + 1, target, new_operation(), true)))
}

/// 1. prepare: every pod captures what comes to it. A fresh prepare that fails anywhere is
///    undone where it was taken, so no pod keeps a prepare no command will finish.
pub async fn prepare(pods: &Pods, plan: &Plan) -> anyhow::Result<()> {
    let (epoch, target, operation) = (plan.epoch, &plan.target, &plan.operation);
    let prepare = serde_json::json!({
        "epoch": epoch, "pods": target.pods, "strategy": target.strategy, "shards": target.shards,
        "from": plan.from, "operation": operation,
    });
    let prepared = pods
        .each::<RescaleState>(plan.pending.iter().copied(), "prepare", "/prepare", prepare)
        .await;
    let failed: Vec<String> = prepared
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    if failed.is_empty() {
        progress("prepared: the new owners capture their incoming guilds");
        return Ok(());
    }
    if plan.fresh {
        let took = prepared
            .iter()
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(k, _)| *k);
        let body = serde_json::json!({"epoch": epoch, "operation": operation});
        for (k, outcome) in pods
            .each::<RescaleState>(took, "undo prepare", "/abort", body)
            .await
        {
            match outcome {
                Ok(_) => progress(format_args!("pod {k}: prepare undone")),
                Err(e) => progress(format_args!(
                    "pod {k} keeps the prepare ({e:#}): `guild-gateway rescale --abort` removes it"
                )),
            }
        }
    }
    bail!("the prepare failed, nothing froze: {}", failed.join("; "));
}

/// Waits until every pending pod's new sessions capture; whether any pod froze already (a
/// resumed run past the margin).
pub async fn wait_until_capturing(
    pods: &Pods,
    plan: &Plan,
    capture_timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + capture_timeout;
    let mut any_frozen = false;
    loop {
        let mut waiting = Vec::new();
        for &k in &plan.pending {
            let state = pods.state(k).await?;
            if let Some(next) = &state.next {
                any_frozen |= next.frozen;
                if !next.capturing {
                    waiting.push(k);
                }
            }
        }
        if waiting.is_empty() {
            return Ok(any_frozen);
        }
        if Instant::now() > deadline {
            bail!(
                "pods {waiting:?} did not open their new Discord sessions within {} s (see their /status); run again to keep waiting, or --abort",
                capture_timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// When the freeze happened.
pub struct Frozen {
    pub at_ms: u64,
    pub started: Instant,
}

/// 2. freeze: the old owners stop applying the guilds that leave, each group at the anchor
///    where its new owner's capture log takes over (exact, whatever their lag).
pub async fn freeze(pods: &Pods, plan: &Plan, drain_timeout: Duration) -> anyhow::Result<Frozen> {
    let mut anchors: Vec<Anchor> = Vec::new();
    for &k in plan.pending.iter().filter(|&&k| k < plan.target.pods) {
        let path = format!("/anchors?epoch={}", plan.epoch);
        anchors.extend(pods.call::<Vec<Anchor>>(k, "anchors", &path, None).await?);
    }
    let frozen = Frozen {
        at_ms: now_ms(),
        started: Instant::now(),
    };
    let old_pods = plan.pending.iter().copied().filter(|&k| k < plan.from.pods);
    let drain_ms = drain_timeout.as_millis() as u64;
    let body = serde_json::json!({"epoch": plan.epoch, "anchors": anchors, "drain_ms": drain_ms});
    let freezes = pods
        .all::<FreezeAnswer>(old_pods, "freeze", "/freeze", body)
        .await?;
    let (passed, missed) = freezes.iter().fold((0, 0), |(p, m), (_, f)| {
        (p + f.anchors_passed, m + f.anchors_missed)
    });
    progress(format_args!(
        "frozen in {} ms: {passed} anchors passed{}",
        frozen.started.elapsed().as_millis(),
        if missed > 0 {
            format!(", {missed} did not within --drain-timeout-secs (those groups are re-applied whole, as with a margin alone)")
        } else {
            String::new()
        }
    ));
    Ok(frozen)
}

/// What the new owners imported, summed.
pub struct Imported {
    pub guilds: u64,
    pub replayed: u64,
    pub skipped: u64,
}

/// 3. import: each new owner fetches its guilds, re-applies its capture log, goes live.
pub async fn import(pods: &Pods, plan: &Plan, frozen_at_ms: u64) -> anyhow::Result<Imported> {
    let new_pods = plan
        .pending
        .iter()
        .copied()
        .filter(|&k| k < plan.target.pods);
    let body = serde_json::json!({"epoch": plan.epoch, "frozen_at_ms": frozen_at_ms});
    let imports = pods
        .all::<ImportAnswer>(new_pods, "import", "/import", body)
        .await?;
    for (k, answer) in &imports {
        progress(format_args!(
            "pod {k} is live: {} guilds imported, {} captured events re-applied, {} skipped (their old owner applied them before the anchor)",
            answer.guilds, answer.replayed, answer.skipped
        ));
    }
    Ok(Imported {
        guilds: imports.iter().map(|(_, a)| a.guilds).sum(),
        replayed: imports.iter().map(|(_, a)| a.replayed as u64).sum(),
        skipped: imports.iter().map(|(_, a)| a.skipped as u64).sum(),
    })
}

/// 4. commit: the epoch moves on; the old owners delete what they gave away.
pub async fn commit(pods: &Pods, plan: &Plan) -> anyhow::Result<()> {
    let body = serde_json::json!({"epoch": plan.epoch});
    pods.all::<RescaleState>(plan.pending.iter().copied(), "commit", "/commit", body)
        .await?;
    Ok(())
}

/// Prints the summary (one JSON object with `--json`) and what the operator does next.
pub fn report(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        println!(
            "committed epoch {}: {} -> {}; {} guilds moved, {} captured events re-applied ({} skipped: applied before the freeze points), longest pause {} ms, {:.1} s in all",
            summary.epoch,
            summary.from,
            summary.to,
            summary.guilds_moved,
            summary.events_replayed,
            summary.events_skipped,
            summary.longest_pause_ms,
            summary.duration_ms as f64 / 1000.0
        );
    }
    if summary.to.pods < summary.from.pods {
        progress(format_args!(
            "pods {}..{} own nothing now: scale the StatefulSet to {} and delete their PVCs (deploy/RUNBOOK.md)",
            summary.to.pods, summary.from.pods, summary.to.pods
        ));
    }
    Ok(())
}

/// The layout asked for: `--to M`, the strategy and shard count given or kept.
fn target_of(args: &RescaleArgs, current: &LayoutBody, pods: u32) -> LayoutBody {
    let current_strategy: Strategy = current.strategy.parse().unwrap_or_default();
    let strategy = args.strategy.unwrap_or(current_strategy);
    let shards = match args.shards {
        Some(s) => s as u32,
        // The shard count moves no guild with md5; with discord it is kept while every pod
        // still gets a shard.
        None if strategy == current_strategy
            && (strategy == Strategy::Md5 || current.shards >= pods) =>
        {
            current.shards
        }
        None => default_shards(strategy, pods),
    };
    LayoutBody {
        pods,
        strategy: strategy.as_str().to_owned(),
        shards,
    }
}

/// A fresh operation id: unique enough that two commands never share one.
fn new_operation() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn progress(text: impl std::fmt::Display) {
    eprintln!("rescale: {text}");
}
