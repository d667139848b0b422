//! `guild-gateway rescale`: changes the pod count (or the strategy, or the Discord shard count)
//! under live traffic, through the pods' `/v1/rescale` API.
//!
//! The state lives on the pods, so the command holds none: each run reads every pod's
//! ownership, finds the change under way (or starts the one asked for), and drives every pod
//! through the remaining steps: prepare (capture) -> margin -> freeze -> import (live) ->
//! commit. Each step is idempotent on the pods, so a run that died is resumed by running the
//! command again. Before any pod froze, `--abort` cancels; after a freeze the change only
//! rolls forward.
//!
//! One operation at a time: a new change gets an operation id that every pod it prepares
//! holds, and a pod holding another operation refuses with that one's id and target. A
//! prepare that fails anywhere is undone on the pods that took it. Every call to a pod has a
//! time limit (`--pod-timeout-secs`), so a pod that stops answering ends the command within
//! it, naming the pod and the step; running the command again resumes.

pub mod endpoints;

use crate::routing::UrlTemplate;
use anyhow::{bail, Context as _};
use clap::Args;
use endpoints::{FreezeAnswer, ImportAnswer, LayoutBody, NextBody, RescaleState};
use gateway_actors::partition::{default_shards, Strategy};
use gateway_actors::rescale::anchor::Anchor;
use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Args)]
pub struct RescaleArgs {
    /// The new number of pods
    #[arg(long, value_parser = crate::config::number("--to", 1, 1 << 16))]
    pub to: Option<u64>,
    /// The new strategy (md5 or discord) [default: the current one]
    #[arg(long, value_parser = crate::config::strategy("--strategy"))]
    pub strategy: Option<Strategy>,
    /// The new Discord shard count [default: kept if it still fits, else 1 with md5 and --to with discord]
    #[arg(long, value_parser = crate::config::number("--shards", 1, 1 << 16))]
    pub shards: Option<u64>,
    /// Show every pod's ownership and the change under way, and change nothing
    #[arg(long, conflicts_with_all = ["to", "abort"])]
    pub status: bool,
    /// Cancel the change under way (only before any pod froze its guilds)
    #[arg(long, conflicts_with = "to")]
    pub abort: bool,
    /// Wait this long between every pod capturing and the freeze: the skew between sessions
    #[arg(long, default_value = "2000",
        value_parser = crate::config::number("--margin-ms", 0, 600_000))]
    pub margin_ms: u64,
    /// Give up waiting for the new sessions to capture after this many seconds
    #[arg(long, default_value = "600",
        value_parser = crate::config::number("--capture-timeout-secs", 1, 86_400))]
    pub capture_timeout_secs: u64,
    /// Stop after this step (prepare, freeze or import); running the command again goes on
    /// from there. For stepping through a change, and for testing that it resumes.
    #[arg(long, value_enum)]
    pub until: Option<Step>,
    /// Print the summary as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// How long an old owner goes on applying a moving group while it catches up to the
    /// group's anchor (its lag behind its sessions); past it the group is frozen anyway
    #[arg(long, default_value = "300",
        value_parser = crate::config::number("--drain-timeout-secs", 1, 86_400))]
    pub drain_timeout_secs: u64,
    /// The longest any one call to a pod may take (a freeze waits up to 60 s on the pod; an
    /// import moves the guilds' rows): a pod that stops answering ends the command then
    #[arg(long, default_value = "120",
        value_parser = crate::config::number("--pod-timeout-secs", 1, 86_400))]
    pub pod_timeout_secs: u64,
    /// Bearer token of the pods' /v1 API
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Base URL of pod {ordinal}
    #[arg(long, env = "POD_URL_TEMPLATE", default_value = crate::config::DEFAULT_POD_URL_TEMPLATE,
        value_parser = crate::config::pod_url_template)]
    pub pod_url_template: UrlTemplate,
}

/// The steps `--until` can stop after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Step {
    Prepare,
    Freeze,
    Import,
}

/// What a finished rescale reports.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub epoch: u64,
    pub from: LayoutBody,
    pub to: LayoutBody,
    /// Guilds imported by their new owners.
    pub guilds_moved: u64,
    /// Captured events re-applied by the new owners.
    pub events_replayed: u64,
    /// Captured events the new owners skipped: their old owners applied them before the
    /// freeze point.
    pub events_skipped: u64,
    /// From the freeze to the last new owner live: the longest any guild waited.
    pub longest_pause_ms: u64,
    /// This run, from its start to the commit.
    pub duration_ms: u64,
}

pub fn run(args: RescaleArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(drive(args))
}

struct Pods {
    client: reqwest::Client,
    token: String,
    urls: UrlTemplate,
    /// The limit of one call (`--pod-timeout-secs`).
    timeout: Duration,
    /// The freeze's: the pods go on applying while they catch up to their anchors.
    freeze_timeout: Duration,
}

/// One pod's answer to `GET /v1/rescale`, or why it gave none.
type Answered = Result<RescaleState, String>;

impl Pods {
    /// One call to pod `ordinal`, for the protocol step `step`; its errors name both.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        ordinal: u32,
        step: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}/v1/rescale{path}", self.urls.url(ordinal));
        let timeout = if step == "freeze" {
            self.freeze_timeout
        } else {
            self.timeout
        };
        let mut request = self
            .client
            .request(method, &url)
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let failed = || format!("pod {ordinal}, step {step} ({url})");
        let response = request.send().await.with_context(failed)?;
        let status = response.status();
        let text = response.text().await.with_context(failed)?;
        if !status.is_success() {
            let error = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("pod {ordinal}, step {step}: answered {status}: {error}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("pod {ordinal}, step {step}: an unexpected answer"))
    }

    async fn state(&self, ordinal: u32) -> anyhow::Result<RescaleState> {
        self.call(ordinal, "read state", reqwest::Method::GET, "", None)
            .await
    }

    /// Every pod's state: ordinals 0.. up to the largest pod count any of them names, then
    /// standby pods past it while they answer (one may hold a prepare a dead command left).
    /// With `tolerant`, a pod that does not answer is reported, not an error.
    async fn states(&self, tolerant: bool) -> anyhow::Result<Vec<Answered>> {
        let mut states: Vec<Answered> = Vec::new();
        let mut wanted = 1;
        loop {
            let k = states.len() as u32;
            let answer = self.state(k).await;
            if k >= wanted {
                // Past every count named: only pods that answer are of interest.
                match answer {
                    Ok(state) if k < wanted + MAX_STANDBY_PROBES => states.push(Ok(state)),
                    _ => break,
                }
                continue;
            }
            match answer {
                Ok(state) => {
                    wanted = wanted
                        .max(state.layout.pods)
                        .max(state.next.as_ref().map_or(0, |n| n.layout.pods));
                    states.push(Ok(state));
                }
                Err(e) if tolerant => states.push(Err(format!("{e:#}"))),
                Err(e) => return Err(e),
            }
        }
        Ok(states)
    }

    /// The same call on several pods at once; every pod's outcome.
    async fn each<T: serde::de::DeserializeOwned>(
        &self,
        ordinals: impl Iterator<Item = u32>,
        step: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Vec<(u32, anyhow::Result<T>)> {
        let calls = ordinals.map(|k| {
            let body = body.clone();
            async move {
                let outcome = self
                    .call::<T>(k, step, reqwest::Method::POST, path, Some(body))
                    .await;
                (k, outcome)
            }
        });
        futures_util::future::join_all(calls).await
    }

    /// [`Pods::each`], failing on the first error.
    async fn all<T: serde::de::DeserializeOwned>(
        &self,
        ordinals: impl Iterator<Item = u32>,
        step: &str,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<Vec<(u32, T)>> {
        self.each(ordinals, step, path, body)
            .await
            .into_iter()
            .map(|(k, outcome)| outcome.map(|t| (k, t)))
            .collect()
    }
}

/// How many ordinals past every pod count the command looks at for standby pods.
const MAX_STANDBY_PROBES: u32 = 16;

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

/// Prepares whose epoch some pod has already committed (under another operation): a command
/// that lost a race, or died, left them, and none can finish them.
fn left_behind(states: &[Answered]) -> Vec<(u32, &NextBody)> {
    let committed = states.iter().flatten().map(|s| s.epoch).max().unwrap_or(0);
    states
        .iter()
        .flatten()
        .filter_map(|s| Some((s.ordinal, s.next.as_ref()?)))
        .filter(|(_, next)| next.epoch <= committed)
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn progress(text: impl std::fmt::Display) {
    eprintln!("rescale: {text}");
}

async fn drive(args: RescaleArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let token = match args.api_token.as_deref() {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => bail!("API_TOKEN (or --api-token) is required: the pods' /v1 API needs it"),
    };
    let pods = Pods {
        client: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?,
        token,
        urls: args.pod_url_template.clone(),
        timeout: Duration::from_secs(args.pod_timeout_secs),
        freeze_timeout: Duration::from_secs(args.pod_timeout_secs + args.drain_timeout_secs),
    };
    if args.status {
        let states = pods.states(true).await?;
        print_status(&states);
        let healthy = states.iter().all(Result::is_ok)
            && left_behind(&states).is_empty()
            && committed_alike(&states);
        return Ok(if healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if args.abort {
        return abort(&pods).await;
    }
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
    let under_way = states.iter().find_map(|s| s.next.as_ref());
    let current = &states[0];

    // The target: the change under way, or the one asked for.
    let (epoch, target, operation, fresh) = match under_way {
        Some(next) => {
            let asked = args.to.map(|m| target_of(&args, &next.layout, m as u32));
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
            (
                next.epoch,
                next.layout.clone(),
                next.operation.clone(),
                false,
            )
        }
        None => {
            let Some(to) = args.to else {
                bail!("--to M is required (or --status, or --abort)");
            };
            if !agree(&states) {
                print_status(&states.into_iter().map(Ok).collect::<Vec<_>>());
                bail!("the pods do not agree on their committed ownership: see above (and `guild-gateway coverage`)");
            }
            let target = target_of(&args, &current.layout, to as u32);
            if target == current.layout {
                progress(format_args!(
                    "already at {target} (epoch {})",
                    current.epoch
                ));
                return Ok(ExitCode::SUCCESS);
            }
            (current.epoch + 1, target, new_operation(), true)
        }
    };
    // The layout before: that of a pod which has not committed the new epoch.
    let from = states
        .iter()
        .find(|s| s.epoch != epoch)
        .map_or_else(|| current.layout.clone(), |s| s.layout.clone());
    let everyone = from.pods.max(target.pods);
    progress(format_args!(
        "operation {operation}: {from} -> {target}, epoch {epoch}, pods 0..{everyone}"
    ));
    // Pods that committed already (a run that died during the commits) are done.
    let pending: Vec<u32> = (0..everyone)
        .filter(|&k| states.get(k as usize).is_none_or(|s| s.epoch != epoch))
        .collect();

    // 1. prepare: every pod captures what comes to it.
    let prepare = serde_json::json!({
        "epoch": epoch, "pods": target.pods, "strategy": target.strategy, "shards": target.shards,
        "from": from, "operation": operation,
    });
    let prepared = pods
        .each::<RescaleState>(pending.iter().copied(), "prepare", "/prepare", prepare)
        .await;
    let failed: Vec<String> = prepared
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    if !failed.is_empty() {
        if fresh {
            // Nothing froze: undo this operation where it was taken, so no pod keeps a
            // prepare that no command will finish.
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
    progress("prepared: the new owners capture their incoming guilds");
    let deadline = Instant::now() + Duration::from_secs(args.capture_timeout_secs);
    let mut any_frozen = false;
    loop {
        let mut waiting = Vec::new();
        for &k in &pending {
            let state = pods.state(k).await?;
            if let Some(next) = &state.next {
                any_frozen |= next.frozen;
                if !next.capturing {
                    waiting.push(k);
                }
            }
        }
        if waiting.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "pods {waiting:?} did not open their new Discord sessions within {} s (see their /status); run again to keep waiting, or --abort",
                args.capture_timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if args.until == Some(Step::Prepare) {
        progress("stopped after prepare (--until)");
        return Ok(ExitCode::SUCCESS);
    }
    if !any_frozen {
        progress(format_args!(
            "every pod captures; waiting {} ms for the skew between sessions",
            args.margin_ms
        ));
        tokio::time::sleep(Duration::from_millis(args.margin_ms)).await;
    }

    // 2. freeze: the old owners stop applying the guilds that leave, each group at the
    // anchor where its new owner's capture log takes over (exact, whatever their lag).
    let mut anchors: Vec<Anchor> = Vec::new();
    for &k in pending.iter().filter(|&&k| k < target.pods) {
        let path = format!("/anchors?epoch={epoch}");
        anchors.extend(
            pods.call::<Vec<Anchor>>(k, "anchors", reqwest::Method::GET, &path, None)
                .await?,
        );
    }
    let frozen_at_ms = now_ms();
    let freezing = Instant::now();
    let old_pods = pending.iter().copied().filter(|&k| k < from.pods);
    let drain_ms = args.drain_timeout_secs * 1000;
    let freezes = pods
        .all::<FreezeAnswer>(
            old_pods,
            "freeze",
            "/freeze",
            serde_json::json!({"epoch": epoch, "anchors": anchors, "drain_ms": drain_ms}),
        )
        .await?;
    let (passed, missed) = freezes.iter().fold((0, 0), |(p, m), (_, f)| {
        (p + f.anchors_passed, m + f.anchors_missed)
    });
    progress(format_args!(
        "frozen in {} ms: {passed} anchors passed{}",
        freezing.elapsed().as_millis(),
        if missed > 0 {
            format!(", {missed} did not within --drain-timeout-secs (those groups are re-applied whole, as with a margin alone)")
        } else {
            String::new()
        }
    ));
    if args.until == Some(Step::Freeze) {
        progress("stopped after freeze (--until)");
        return Ok(ExitCode::SUCCESS);
    }

    // 3. import: each new owner fetches its guilds, re-applies its capture log, goes live.
    let new_pods = pending.iter().copied().filter(|&k| k < target.pods);
    let imports = pods
        .all::<ImportAnswer>(
            new_pods,
            "import",
            "/import",
            serde_json::json!({"epoch": epoch, "frozen_at_ms": frozen_at_ms}),
        )
        .await?;
    let longest_pause_ms = freezing.elapsed().as_millis() as u64;
    let guilds_moved: u64 = imports.iter().map(|(_, a)| a.guilds).sum();
    let events_replayed: u64 = imports.iter().map(|(_, a)| a.replayed as u64).sum();
    let events_skipped: u64 = imports.iter().map(|(_, a)| a.skipped as u64).sum();
    for (k, answer) in &imports {
        progress(format_args!(
            "pod {k} is live: {} guilds imported, {} captured events re-applied, {} skipped (their old owner applied them before the anchor)",
            answer.guilds, answer.replayed, answer.skipped
        ));
    }

    if args.until == Some(Step::Import) {
        progress("stopped after import (--until)");
        return Ok(ExitCode::SUCCESS);
    }

    // 4. commit: the epoch moves on; the old owners delete what they gave away.
    pods.all::<RescaleState>(
        pending.iter().copied(),
        "commit",
        "/commit",
        serde_json::json!({"epoch": epoch}),
    )
    .await?;
    let summary = Summary {
        epoch,
        from,
        to: target,
        guilds_moved,
        events_replayed,
        events_skipped,
        longest_pause_ms,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
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
    Ok(ExitCode::SUCCESS)
}

/// `--abort`: removes every prepare left behind, and cancels the change under way if no pod
/// froze, went live or committed it. Pods of the old layout must answer (one of them might
/// have frozen); a new pod that is down is named, and a later `--abort` removes its prepare
/// once it answers.
async fn abort(pods: &Pods) -> anyhow::Result<ExitCode> {
    let states = pods.states(true).await?;
    let mut targets: Vec<(u32, u64, String)> = left_behind(&states)
        .into_iter()
        .map(|(k, next)| (k, next.epoch, next.operation.clone()))
        .collect();
    let reachable: Vec<&RescaleState> = states.iter().flatten().collect();
    let under_way = reachable
        .iter()
        .filter_map(|s| s.next.as_ref())
        .find(|next| !targets.iter().any(|(_, _, op)| *op == next.operation));
    if let Some(next) = under_way {
        // Frozen, live or committed anywhere: guilds may already be applied only by their
        // new owners, so the change can only finish.
        let past_freeze = |s: &&&RescaleState| {
            (s.epoch == next.epoch && s.layout == next.layout)
                || s.next
                    .as_ref()
                    .is_some_and(|n| n.operation == next.operation && (n.frozen || n.live))
        };
        if let Some(frozen) = reachable.iter().find(past_freeze) {
            bail!(
                "pod {} froze, went live or committed operation {} (epoch {}): a rescale only rolls forward after a freeze; run `guild-gateway rescale` again to finish it",
                frozen.ordinal,
                next.operation,
                next.epoch
            );
        }
        let old_pods = reachable
            .iter()
            .find(|s| s.epoch + 1 == next.epoch)
            .map_or(0, |s| s.layout.pods);
        let silent: Vec<u32> = (0..old_pods)
            .filter(|&k| states.get(k as usize).is_none_or(Result::is_err))
            .collect();
        if !silent.is_empty() {
            bail!(
                "pods {silent:?} of the old layout do not answer, and one of them may have frozen: run --abort again once they answer"
            );
        }
        targets.extend(
            reachable
                .iter()
                .filter(|s| {
                    s.next
                        .as_ref()
                        .is_some_and(|n| n.operation == next.operation)
                })
                .map(|s| (s.ordinal, next.epoch, next.operation.clone())),
        );
    }
    for (k, why) in states
        .iter()
        .enumerate()
        .filter_map(|(k, s)| Some((k, s.as_ref().err()?)))
    {
        progress(format_args!(
            "pod {k} does not answer ({why}): if it holds a prepare, --abort again once it answers"
        ));
    }
    if targets.is_empty() {
        progress("no rescale under way and none left behind: nothing to abort");
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = Vec::new();
    for (k, epoch, operation) in targets {
        let body = serde_json::json!({"epoch": epoch, "operation": operation});
        match pods
            .call::<RescaleState>(k, "abort", reqwest::Method::POST, "/abort", Some(body))
            .await
        {
            Ok(_) => progress(format_args!(
                "pod {k}: operation {operation} (epoch {epoch}) aborted"
            )),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(ExitCode::SUCCESS)
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

/// Every pod that owns guilds follows the same committed epoch and layout (standby pods, which
/// own nothing, may have started on another epoch): each guild has one owner.
fn committed_alike(states: &[Answered]) -> bool {
    let Some(Ok(first)) = states.first() else {
        return false;
    };
    let owners = &states[..states.len().min(first.layout.pods as usize)];
    owners.iter().all(|s| {
        s.as_ref()
            .is_ok_and(|s| s.epoch == first.epoch && s.layout == first.layout)
    })
}

/// Every pod answered the same committed ownership, with no change under way.
fn agree(states: &[RescaleState]) -> bool {
    let answered: Vec<Answered> = states.iter().map(|s| Ok(s.clone())).collect();
    committed_alike(&answered) && states.iter().all(|s| s.next.is_none())
}

fn print_status(states: &[Answered]) {
    let left = left_behind(states);
    for (k, s) in states.iter().enumerate() {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                println!("pod {k}: DOES NOT ANSWER: {e}");
                continue;
            }
        };
        let next = match &s.next {
            None => "no rescale under way".to_owned(),
            Some(n) => format!(
                "operation {}: rescale to epoch {} ({}): capturing {}, frozen {}, live {}{}",
                n.operation,
                n.epoch,
                n.layout,
                n.capturing,
                n.frozen,
                n.live,
                if left.iter().any(|(o, _)| *o == s.ordinal) {
                    " -- LEFT BEHIND (its epoch is committed): remove it with --abort"
                } else {
                    ""
                }
            ),
        };
        println!(
            "pod {}: epoch {} ({}); {next}{}",
            s.ordinal,
            s.epoch,
            s.layout,
            s.config_stale
                .as_deref()
                .map_or(String::new(), |c| format!("; STALE SETTINGS: {c}"))
        );
    }
}
