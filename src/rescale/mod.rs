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

mod abort;
mod pods;
mod steps;

use crate::routing::UrlTemplate;
use anyhow::Context as _;
use clap::Args;
use endpoints::LayoutBody;
use gateway_actors::partition::Strategy;
use pods::{committed_alike, left_behind, print_status, Pods};
use serde::Serialize;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use steps::progress;

#[derive(Debug, Args)]
pub struct RescaleArgs {
    /// The new number of pods
    #[arg(long, value_parser = crate::config::number(1, 1 << 16))]
    pub to: Option<u64>,
    /// The new strategy (md5 or discord) [default: the current one]
    #[arg(long, value_parser = crate::config::strategy())]
    pub strategy: Option<Strategy>,
    /// The new Discord shard count [default: kept if it still fits, else 1 with md5 and --to with discord]
    #[arg(long, value_parser = crate::config::number(1, 1 << 16))]
    pub shards: Option<u64>,
    /// Show every pod's ownership and the change under way, and change nothing
    #[arg(long, conflicts_with_all = ["to", "abort"])]
    pub status: bool,
    /// Cancel the change under way (only before any pod froze its guilds)
    #[arg(long, conflicts_with = "to")]
    pub abort: bool,
    /// Wait this long between every pod capturing and the freeze: the skew between sessions
    #[arg(long, default_value = "2000",
        value_parser = crate::config::millis(0, 600_000))]
    pub margin_ms: Duration,
    /// Give up waiting for the new sessions to capture after this many seconds
    #[arg(long, default_value = "600",
        value_parser = crate::config::seconds(1, 86_400))]
    pub capture_timeout_secs: Duration,
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
        value_parser = crate::config::seconds(1, 86_400))]
    pub drain_timeout_secs: Duration,
    /// The longest any one call to a pod may take (a freeze waits up to 60 s on the pod; an
    /// import moves the guilds' rows): a pod that stops answering ends the command then
    #[arg(long, default_value = "120",
        value_parser = crate::config::seconds(1, 86_400))]
    pub pod_timeout_secs: Duration,
    /// Bearer token of the pods' /v1 API
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Base URL of pod {ordinal}
    #[arg(long, env = "POD_URL_TEMPLATE", default_value = crate::config::DEFAULT_POD_URL_TEMPLATE,
        value_parser = crate::config::pod_url_template())]
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

/// The command, one protocol step after another; each step fails with the pod and the step
/// named, and running the command again resumes from what the pods hold.
async fn drive(args: RescaleArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let pods = Pods::new(&args)?;
    if args.status {
        return status(&pods).await;
    }
    if args.abort {
        return abort::abort(&pods).await;
    }
    let Some(plan) = steps::plan(&args, &pods).await? else {
        return Ok(ExitCode::SUCCESS);
    };
    steps::prepare(&pods, &plan).await?;
    let any_frozen = steps::wait_until_capturing(&pods, &plan, args.capture_timeout_secs).await?;
    if stops_after(&args, Step::Prepare) {
        return Ok(ExitCode::SUCCESS);
    }
    if !any_frozen {
        progress(format_args!(
            "every pod captures; waiting {} ms for the skew between sessions",
            args.margin_ms.as_millis()
        ));
        tokio::time::sleep(args.margin_ms).await;
    }
    let frozen = steps::freeze(&pods, &plan, args.drain_timeout_secs).await?;
    if stops_after(&args, Step::Freeze) {
        return Ok(ExitCode::SUCCESS);
    }
    let imported = steps::import(&pods, &plan, frozen.at_ms).await?;
    let longest_pause_ms = frozen.started.elapsed().as_millis() as u64;
    if stops_after(&args, Step::Import) {
        return Ok(ExitCode::SUCCESS);
    }
    steps::commit(&pods, &plan).await?;
    steps::report(
        &Summary {
            epoch: plan.epoch,
            from: plan.from,
            to: plan.target,
            guilds_moved: imported.guilds,
            events_replayed: imported.replayed,
            events_skipped: imported.skipped,
            longest_pause_ms,
            duration_ms: started.elapsed().as_millis() as u64,
        },
        args.json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `--until`: whether the command stops after `step`.
fn stops_after(args: &RescaleArgs, step: Step) -> bool {
    let stop = args.until == Some(step);
    if stop {
        let step = format!("{step:?}").to_lowercase();
        progress(format_args!("stopped after {step} (--until)"));
    }
    stop
}

/// `--status`: every pod's state; fails unless all answer and agree with nothing left behind.
async fn status(pods: &Pods) -> anyhow::Result<ExitCode> {
    let states = pods.states(true).await?;
    print_status(&states);
    let healthy = states.iter().all(Result::is_ok)
        && left_behind(&states).is_empty()
        && committed_alike(&states);
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
