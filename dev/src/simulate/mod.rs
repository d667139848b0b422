//! `guild-gateway-dev simulate`: a whole deployment on one machine. A fake Discord (in this
//! process) and N pods (`guild-gateway serve` child processes, each with its own database and
//! HTTP port) share a bot's traffic; the run ends when every pod has committed everything it
//! was sent, with a per-pod summary. A pod that dies fails the run, naming the pod.
//! The pods serve the data API on consecutive ports (`POD_URL_TEMPLATE` says which), with the
//! token [`API_TOKEN`], while the run lasts.
//!
//! With `--rescale M[,M2...]` the fake plays the stream as live traffic (one clock, each event
//! sent once, [`crate::fake_discord`]'s live timeline) and the pod count changes at evenly
//! spaced points of it, each time by the real `guild-gateway rescale` ([`schedule`]): standby
//! pods start first when it grows, emptied pods stop after its commit when it shrinks. The run
//! then proves that nothing was lost against a one-pod replay of the same stream ([`verify`]).
//!
//! `fleet` starts, reads and stops the pods, `deployment` runs the rounds until everything is
//! committed, `cost` measures what a rescale costs, `report` prints, `schedule` drives the
//! rescales and `verify` compares with a one-pod replay.

mod cost;
mod deployment;
mod fleet;
mod report;
mod schedule;
mod verify;

pub use fleet::cpu_seconds;
pub(crate) use fleet::remove_database;

use crate::fake_discord::{self, Fake, FakeOptions, Recording};
use anyhow::Context as _;
use clap::Args;
use deployment::Deployment;
use gateway_actors::partition::Strategy;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The data API's token of a simulated deployment (local, loopback only).
pub const API_TOKEN: &str = "simulate-data-api-token";

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Number of pods
    #[arg(long, default_value = "3", value_parser = clap::value_parser!(u32).range(1..))]
    pub pods: u32,
    /// md5 or discord
    #[arg(long, default_value = "md5", value_parser = |s: &str| s.parse::<Strategy>())]
    pub strategy: Strategy,
    /// The bot's Discord shard count (the pods' DISCORD_SHARDS) [default: the pods' default]
    #[arg(long)]
    pub shards: Option<u32>,
    /// A recorded stream (NDJSON) instead of a synthetic one
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Synthetic stream: number of guilds
    #[arg(long, default_value = "300")]
    pub guilds: u32,
    /// Synthetic stream: number of messages
    #[arg(long, default_value = "100000")]
    pub messages: u64,
    /// Where the pods' databases and logs go (their previous files there are replaced)
    #[arg(long, default_value = "./data/simulate")]
    pub data_dir: PathBuf,
    /// Dispatches per second per session (default: as fast as the pods read)
    #[arg(long)]
    pub rate: Option<u32>,
    /// Give up after this many seconds
    #[arg(long, default_value = "900")]
    pub timeout_secs: u64,
    /// Change the pod count under live traffic, at evenly spaced points of the stream: `M`,
    /// `M:STRATEGY` or `M:STRATEGY:SHARDS`, comma-separated (e.g. 3,5,2 or 3:discord)
    #[arg(long, value_parser = |list: &str| schedule::parse(list).map(Schedule))]
    pub rescale: Option<Schedule>,
    /// Live traffic (implied by --rescale): the stream's pace, dispatches per second for the
    /// whole bot [default with --rescale: 1000]
    #[arg(long)]
    pub live_rate: Option<u32>,
    /// With --rescale: the rescale command's --margin-ms
    #[arg(long, default_value = "1000")]
    pub margin_ms: u64,
    /// Discord's identify rate-limit window in the fake, in milliseconds; the pods' identify
    /// slot (IDENTIFY_SLOT_MS) follows it. Shorter than Discord's 5000 only to save time
    #[arg(long, default_value = "5000")]
    pub identify_window_ms: u64,
    /// Exit 0 even if a pod dropped (shed) events of a stuck guild
    #[arg(long)]
    pub allow_shed: bool,
    /// Machine-readable output: one JSON object a line on stdout, a `pod` line per started pod
    /// and a `summary` line at the end (progress stays on stderr)
    #[arg(long)]
    pub json: bool,
    /// Serve a relay on each pod (RELAY_ADDR; `--json` prints its URL in the pod's line) and
    /// wait for this many discord.js clients on each started pod before the live stream starts
    /// and before each rescale [default: 0, no relay]
    #[arg(long, default_value = "0")]
    pub relay_clients: u32,
    /// The pod binary the pods run [default: guild-gateway beside this program]
    #[arg(long, env = "GUILD_GATEWAY_BIN")]
    pub pod_binary: Option<PathBuf>,
}

/// `--rescale`'s changes, in order.
#[derive(Debug, Clone)]
pub struct Schedule(pub Vec<schedule::Step>);

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let strategy = args.strategy;
    let steps = args.rescale.clone().map_or_else(Vec::new, |s| s.0);
    // Before generating anything: a missing pod binary is the likeliest mistake.
    let exe = fleet::pod_binary(args.pod_binary.as_deref())?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let events = stream(&args)?;
    let live = !steps.is_empty() || args.live_rate.is_some();
    let fake = start_fake(&args, &events, live).await?;
    let mut deployment = Deployment::start(&args, exe, fake, steps, strategy, live)?;
    let statuses = deployment.run_until_finished().await?;
    let elapsed = deployment.elapsed();
    let rows = deployment.stop_and_summarize(&statuses, elapsed).await?;
    report::print_summary(&rows, deployment.strategy, elapsed, args.json);
    if live && !deployment.matches_one_pod_replay(&events)? {
        return Ok(ExitCode::FAILURE);
    }
    Ok(report::verdict(
        &statuses,
        deployment.pods.len(),
        deployment.strategy,
        elapsed,
        args.allow_shed,
    ))
}

/// `--events`, or a synthetic stream of `--guilds` and `--messages` written to the data
/// directory.
fn stream(args: &SimulateArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &args.events {
        return Ok(path.clone());
    }
    let path = args.data_dir.join(format!(
        "synthetic-{}g-{}m.ndjson",
        args.guilds, args.messages
    ));
    eprintln!(
        "generating a synthetic stream: {} guilds, {} messages -> {}",
        args.guilds,
        args.messages,
        path.display()
    );
    let n = crate::synthetic::write_file(&path, args.guilds, args.messages)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("  {n} events");
    Ok(path)
}

/// The fake Discord in this process, playing `events` (as live traffic when `live`).
async fn start_fake(
    args: &SimulateArgs,
    events: &std::path::Path,
    live: bool,
) -> anyhow::Result<Arc<Fake>> {
    let recording = Recording::load(events)?;
    let total_frames = recording.frames.len();
    let live_rate = args.live_rate.unwrap_or(1000);
    let options = FakeOptions {
        token: "simulate-token".to_string(),
        rate: args.rate,
        live_rate: live.then_some(live_rate),
        identify_window: Duration::from_millis(args.identify_window_ms),
        // Discord's own interval: a pod that stalls briefly under load is not a zombie.
        heartbeat_interval: Duration::from_millis(41_250),
        ..FakeOptions::default()
    };
    let fake = fake_discord::start("127.0.0.1:0".parse()?, recording, options).await?;
    if args.json {
        // What a bot needs besides the pods' relays: the (fake) Discord's REST API and token.
        let line = serde_json::json!({"discord": {
            "api": format!("http://{}/api", fake.addr), "token": fake.options.token,
        }});
        println!("{line}");
    }
    eprintln!(
        "fake Discord on http://{} ({total_frames} events{})",
        fake.addr,
        if live {
            format!(" of live traffic at {live_rate} a second")
        } else {
            " per full session".into()
        }
    );
    Ok(fake)
}
