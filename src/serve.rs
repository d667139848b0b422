//! `guild-gateway serve`: a live gateway pod.
//!
//! The pod's Discord sessions (one per shard it runs: all `DISCORD_SHARDS` with md5, its share
//! with discord) feed the [`GatewayActor`], which submits each event to the pipeline in order.
//! Each session identifies only when [`IdentifyGate`] says so (budget, buckets, crash loops).
//! SIGTERM/SIGINT: close the sessions, submit what they had received, drain, exit 0. A fatal
//! close (bad token, bad intents, sharding required: the close-code table) ends the pod with a
//! clear message and status 1.

use crate::config::PodConfig;
use crate::gateway::connection::discord_http;
use crate::gateway::connection::{ConnectionError, ShardEvent};
use crate::gateway::identify::{IdentifyGate, StartLimits};
use crate::gateway::sessions::{Discord, SessionSet};
use crate::gateway::{GatewayActor, GatewayMetrics};
use crate::http;
use crate::relay::upstream::Upstream;
use crate::relay::Relay;
use crate::signals::shutdown_signal;
use actix::prelude::*;
use anyhow::Context as _;
use clap::Args;
use gateway_actors::metrics::Metrics;
use gateway_actors::rescale::ownership::Ownership;
use gateway_actors::Pipeline;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub pod: crate::config::PodArgs,
    /// The bot's token (required)
    #[arg(long, env = "DISCORD_TOKEN", hide_env_values = true)]
    pub discord_token: Option<String>,
    /// Base URL of a Discord-compatible API (a local fake-discord, an HTTP proxy) [default: discord.com]
    #[arg(long, env = "DISCORD_API_URL", value_parser = crate::config::http_url())]
    pub discord_api_url: Option<String>,
    /// Session starts the bot keeps in reserve: at or under this many remaining today, the pod does not identify and waits for Discord's reset
    #[arg(long, env = "SESSION_START_RESERVE", default_value = "50",
        value_parser = crate::config::number(0, 1_000_000))]
    pub session_start_reserve: u64,
    /// First wait, in seconds, before identifying again after a quick restart (a crash loop); it doubles with each one
    #[arg(long, env = "IDENTIFY_BACKOFF_SECS", default_value = "15",
        value_parser = crate::config::seconds(1, 3600))]
    pub identify_backoff_secs: Duration,
    /// One identify slot in milliseconds: Discord's 5 s per bucket and a margin for clock skew. Lower it only against a Discord-compatible server with a shorter window (a local fake-discord)
    #[arg(long, env = "IDENTIFY_SLOT_MS", default_value = "6500",
        value_parser = crate::config::millis(100, 600_000))]
    pub identify_slot_ms: Duration,
    #[command(flatten)]
    pub relay: crate::config::RelayArgs,
}

/// The validated Discord settings.
pub struct DiscordSettings {
    pub token: String,
    pub api_url: Option<String>,
    pub session_start_reserve: u64,
    pub identify_backoff: Duration,
    pub identify_slot: Duration,
    /// The relay's address and settings, when RELAY_ADDR is set.
    pub relay: Option<(std::net::SocketAddr, crate::relay::hub::RelaySettings)>,
}

impl ServeArgs {
    pub fn validate(&self) -> Result<DiscordSettings, crate::config::ConfigError> {
        let token = match self.discord_token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => {
                return Err(crate::config::ConfigError {
                    variable: "DISCORD_TOKEN".into(),
                    value: String::new(),
                    problem: "required: the bot's token".into(),
                })
            }
        };
        let api_url = self.discord_api_url.clone().filter(|url| !url.is_empty());
        Ok(DiscordSettings {
            relay: self.relay.settings(&token),
            token,
            api_url,
            session_start_reserve: self.session_start_reserve,
            identify_backoff: self.identify_backoff_secs,
            identify_slot: self.identify_slot_ms,
        })
    }
}

/// At shutdown, how long a storage fault may last before the pod exits without having
/// committed everything (and says so).
const STORAGE_GIVE_UP: Duration = Duration::from_secs(20);

/// At shutdown, how long the drain may take in all: within the StatefulSet's grace period
/// (60 s), so the pod says what it could not commit before Kubernetes kills it.
const DRAIN_LIMIT: Duration = Duration::from_secs(25);

/// The pod, top-down: start the pipeline and the sessions, feed events until a signal or a
/// fatal close, close the sessions, drain, and exit with what could not be committed.
pub async fn run(mut config: PodConfig, discord: DiscordSettings) -> anyhow::Result<ExitCode> {
    let signal = shutdown_signal()?;
    if config.shards_auto {
        config.sharding.shards = recommended_shards(&discord).await?;
        config.pipeline.sharding.shards = config.sharding.shards;
    }
    config.pipeline.relay = discord.relay.is_some();
    let upstream = Arc::new(Upstream::default());
    let (pipeline, mut shards, events) = start(&config, &discord, &upstream)?;
    let relay = start_relay(&discord, &pipeline, upstream).await?;
    follow_rescale(&mut shards, &pipeline.ownership()).await;
    let server = http::start_pod(
        &config,
        pipeline.clone(),
        Some(shards.sessions.clone()),
        relay.as_ref().map(|r| r.hub.clone()),
    )?;
    log_serving(&config, &pipeline);
    let submitted = feed(events, pipeline.clone());
    let outcome = serve_until_stopped(signal, &pipeline, &mut shards).await;
    close_sessions(&mut shards, submitted).await;
    let drained = drain(&pipeline).await;
    // After the drain: what it committed is released, and Discord will not send it again.
    if let Some(relay) = &relay {
        relay.shutdown().await;
    }
    server.stop(true).await;
    if !drained || !nothing_dropped(&pipeline) {
        return Ok(ExitCode::FAILURE);
    }
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The pipeline on the pod's database, and the Discord sessions the committed ownership
/// needs (not the settings': they differ after a rescale until the settings are updated;
/// /status says so).
fn start(
    config: &PodConfig,
    discord: &DiscordSettings,
    upstream: &Arc<Upstream>,
) -> anyhow::Result<(Arc<Pipeline>, SessionSet, mpsc::Receiver<ShardEvent>)> {
    let metrics = Arc::new(
        Metrics::new(config.sharding.ordinal, config.sharding.pods)
            .context("registering metrics")?,
    );
    let gateway_metrics =
        Arc::new(GatewayMetrics::register(&metrics.registry).context("registering metrics")?);
    let pipeline = Arc::new(
        Pipeline::start(config.pipeline.clone(), metrics)
            .with_context(|| format!("opening the pod's database {}", config.database.display()))?,
    );
    let ownership = pipeline.ownership();
    let gate = Arc::new(IdentifyGate::new(
        discord.identify_slot,
        discord.session_start_reserve,
        discord.identify_backoff,
        identify_record_path(&config.database),
        gateway_metrics.session_starts_remaining.clone(),
    ));
    let (shards, events) = SessionSet::start(
        Discord {
            token: discord.token.clone(),
            api_url: discord.api_url.clone(),
            ordinal: ownership.ordinal,
            relay: discord.relay.is_some().then(|| upstream.clone()),
        },
        ownership.sessions_epoch,
        ownership.layout,
        gate,
        gateway_metrics,
    );
    if ownership.ordinal >= ownership.layout.pods {
        tracing::warn!(pod = ownership.ordinal, pods = ownership.layout.pods,
            "standby: this pod owns nothing (POD_ORDINAL at or past NUM_GATEWAY_PODS) and runs no Discord session until a rescale includes it");
    }
    Ok((pipeline, shards, events))
}

/// The relay on RELAY_ADDR, when set: it serves what the pipeline releases.
async fn start_relay(
    discord: &DiscordSettings,
    pipeline: &Arc<Pipeline>,
    upstream: Arc<Upstream>,
) -> anyhow::Result<Option<Relay>> {
    let (Some((addr, settings)), Some(feed)) = (&discord.relay, pipeline.relay_feed()) else {
        return Ok(None);
    };
    let relay = Relay::start(
        *addr,
        settings.clone(),
        feed.clone(),
        upstream,
        {
            let pipeline = pipeline.clone();
            Box::new(move |g| pipeline.ownership().sharding().owns(Some(g)))
        },
        &pipeline.metrics().registry,
    )
    .await?;
    tracing::info!(addr = %relay.addr, url = %settings.public_url, "relay: serving the bot's discord.js clients");
    Ok(Some(relay))
}

fn log_serving(config: &PodConfig, pipeline: &Pipeline) {
    let ownership = pipeline.ownership();
    let sharding = ownership.sharding();
    tracing::info!(pod = sharding.ordinal, pods = sharding.pods, strategy = %sharding.strategy,
        shards = sharding.shards, pod_shards = ?ownership.layout.sessions(sharding.ordinal),
        epoch = ownership.epoch, database = %config.database.display(), "serving");
}

/// Starts the [`GatewayActor`] on the sessions' events; the receiver fires once it has
/// submitted the last of them.
fn feed(
    mut events: mpsc::Receiver<ShardEvent>,
    pipeline: Arc<Pipeline>,
) -> tokio::sync::oneshot::Receiver<()> {
    let (submitted_tx, submitted) = tokio::sync::oneshot::channel();
    let events = futures_util::stream::poll_fn(move |cx| events.poll_recv(cx));
    GatewayActor::create(move |ctx| {
        ctx.add_stream(events);
        GatewayActor::new(pipeline, submitted_tx)
    });
    submitted
}

/// Until a signal, or a fatal close of a session; follows every rescale meanwhile.
async fn serve_until_stopped(
    signal: impl std::future::Future<Output = &'static str>,
    pipeline: &Pipeline,
    shards: &mut SessionSet,
) -> Result<(), ConnectionError> {
    tokio::pin!(signal);
    let mut ownership_changes = pipeline.watch_ownership();
    loop {
        tokio::select! {
            name = &mut signal => {
                tracing::info!("{name}: closing the Discord sessions and draining");
                return Ok(());
            }
            finished = shards.finished() => return finished,
            Ok(()) = ownership_changes.changed() => {
                let ownership = *ownership_changes.borrow_and_update();
                follow_rescale(shards, &ownership).await;
            }
        }
    }
}

/// Every session closes (a fatal close of one ends the pod: the others would only keep
/// receiving guilds whose shard is gone), and everything they received is submitted (the
/// stream ends when the connection's thread does).
async fn close_sessions(shards: &mut SessionSet, submitted: tokio::sync::oneshot::Receiver<()>) {
    shards.shutdown().await;
    match shards.closed(Duration::from_secs(10)).await {
        Ok(errors) => {
            for e in errors {
                tracing::warn!(error = %gateway_actors::errors::chain(&e), "a session ended with an error while closing");
            }
        }
        Err(()) => tracing::warn!("the Discord sessions did not close within 10 s"),
    }
    if tokio::time::timeout(Duration::from_secs(5), submitted)
        .await
        .is_err()
    {
        tracing::warn!("the connection's events were still arriving 5 s after it closed");
    }
}

/// Commits everything accepted, within bounds; says what it could not.
async fn drain(pipeline: &Pipeline) -> bool {
    let undrained = tokio::select! {
        () = pipeline.drain() => None,
        fault = pipeline.storage_failing_for(STORAGE_GIVE_UP) => {
            Some(format!("the database has not taken writes for {STORAGE_GIVE_UP:?} ({fault})"))
        }
        () = tokio::time::sleep(DRAIN_LIMIT) => {
            Some(format!("they were not done within {DRAIN_LIMIT:?} (a stuck guild?)"))
        }
    };
    let status = pipeline.status();
    if let Some(why) = undrained {
        eprintln!(
            "error: {} accepted events are not committed: {why}",
            status.in_flight
        );
        return false;
    }
    tracing::info!(events_done = status.events_done, last_seq_committed = ?status.last_seq_committed, "drained");
    true
}

/// Everything accepted is done; says so if some of it was dropped or rolled back.
fn nothing_dropped(pipeline: &Pipeline) -> bool {
    let (shed, failed) = (
        pipeline.metrics().shed.get(),
        pipeline.metrics().handler_errors.get(),
    );
    if shed > 0 || failed > 0 {
        eprintln!(
            "error: during this run {shed} events were dropped (stuck guilds) and {failed} failed (rolled back); see the log"
        );
        return false;
    }
    true
}

/// Runs the sessions a rescale needs: the new layout's beside the old while it changes this
/// pod's sessions, and only the committed layout's otherwise.
async fn follow_rescale(shards: &mut SessionSet, ownership: &Ownership) {
    match ownership.next {
        Some(next) if ownership.sessions_change() => shards.open(next.epoch, next.layout),
        Some(_) => {}
        None => {
            shards
                .settle(ownership.sessions_epoch, ownership.layout)
                .await
        }
    }
}

/// Beside the database (on the pod's volume), so that restarts see the previous start.
fn identify_record_path(database: &std::path::Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.identify.json", database.display()))
}

/// DISCORD_SHARDS=auto: the count Discord recommends now (md5 only: it moves no guild).
async fn recommended_shards(discord: &DiscordSettings) -> anyhow::Result<u32> {
    let limit = discord_http(&discord.token, discord.api_url.as_deref())
        .start_limit()
        .await
        .context("DISCORD_SHARDS=auto: asking Discord for its recommended shard count (GET /gateway/bot)")?;
    tracing::info!(
        shards = limit.recommended_shards,
        "DISCORD_SHARDS=auto: Discord recommends"
    );
    Ok(limit.recommended_shards.max(1))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        serve: super::ServeArgs,
    }

    #[test]
    fn the_identify_slot_defaults_to_discords_window_and_its_margin() {
        let args = Serve::try_parse_from(["serve", "--discord-token", "t"]).unwrap();
        assert_eq!(args.serve.identify_slot_ms, crate::gateway::identify::SLOT);
        let e = Serve::try_parse_from(["serve", "--identify-backoff-secs", "0"]).unwrap_err();
        assert!(e.to_string().contains("IDENTIFY_BACKOFF_SECS=\"0\""), "{e}");
    }
}
