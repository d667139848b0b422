//! `guild-gateway serve`: a live gateway pod.
//!
//! The Discord connection feeds the [`GatewayActor`], which submits each event to the pipeline
//! in order. With `SHARD_STRATEGY=discord` the pod identifies as shard
//! `[POD_ORDINAL, NUM_GATEWAY_PODS]` and Discord sends it only its own guilds' events.
//! SIGTERM/SIGINT: close the connection, submit what it had received, drain, exit 0. A fatal
//! gateway error (bad token, bad intents) ends the pod with a clear message and status 1.

use crate::config::PodConfig;
use crate::gateway::connection::{Connection, ConnectionConfig};
use crate::gateway::{GatewayActor, GatewayMetrics};
use crate::http;
use crate::signals::shutdown_signal;
use actix::prelude::*;
use anyhow::Context as _;
use clap::Args;
use gateway_actors::metrics::Metrics;
use gateway_actors::shard::Strategy;
use gateway_actors::Pipeline;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub pod: crate::config::PodArgs,
    /// The bot's token (required)
    #[arg(long, env = "DISCORD_TOKEN", hide_env_values = true)]
    pub discord_token: Option<String>,
    /// Base URL of a Discord-compatible API (a local fake-discord, an HTTP proxy) [default: discord.com]
    #[arg(long, env = "DISCORD_API_URL")]
    pub discord_api_url: Option<String>,
}

/// The validated Discord settings.
pub struct DiscordSettings {
    pub token: String,
    pub api_url: Option<String>,
}

impl ServeArgs {
    pub fn validate(&self) -> Result<DiscordSettings, crate::config::ConfigError> {
        let token = match self.discord_token.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => {
                return Err(crate::config::ConfigError {
                    variable: "DISCORD_TOKEN",
                    value: String::new(),
                    problem: "required: the bot's token".into(),
                })
            }
        };
        let api_url = match self.discord_api_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.to_owned())
            }
            Some(url) => {
                return Err(crate::config::ConfigError {
                    variable: "DISCORD_API_URL",
                    value: url.to_owned(),
                    problem: "must be an http:// or https:// URL".into(),
                })
            }
        };
        Ok(DiscordSettings { token, api_url })
    }
}

/// At shutdown, how long a storage fault may last before the pod exits without having
/// committed everything (and says so).
const STORAGE_GIVE_UP: Duration = Duration::from_secs(20);

/// At shutdown, how long the drain may take in all: within the StatefulSet's grace period
/// (60 s), so the pod says what it could not commit before Kubernetes kills it.
const DRAIN_LIMIT: Duration = Duration::from_secs(25);

pub async fn run(config: PodConfig, discord: DiscordSettings) -> anyhow::Result<ExitCode> {
    let signal = shutdown_signal()?;
    let sharding = config.sharding;
    let metrics =
        Arc::new(Metrics::new(sharding.ordinal, sharding.pods).context("registering metrics")?);
    let gateway_metrics =
        Arc::new(GatewayMetrics::register(&metrics.registry).context("registering metrics")?);
    let pipeline = Arc::new(
        Pipeline::start(config.pipeline.clone(), metrics)
            .with_context(|| format!("opening the pod's database {}", config.database.display()))?,
    );
    let shard =
        (sharding.strategy == Strategy::Discord).then_some([sharding.ordinal, sharding.pods]);
    let (mut connection, mut events) = Connection::start(
        ConnectionConfig {
            token: discord.token,
            api_url: discord.api_url,
            shard,
        },
        gateway_metrics,
    );
    let server = http::start_pod(&config, pipeline.clone(), Some(connection.state.clone()))?;
    tracing::info!(pod = sharding.ordinal, pods = sharding.pods, strategy = %sharding.strategy, ?shard,
        database = %config.database.display(), "serving");

    let (submitted_tx, submitted) = tokio::sync::oneshot::channel();
    let events = futures_util::stream::poll_fn(move |cx| events.poll_recv(cx));
    let feeder_pipeline = pipeline.clone();
    GatewayActor::create(move |ctx| {
        ctx.add_stream(events);
        GatewayActor::new(feeder_pipeline, submitted_tx)
    });

    tokio::pin!(signal);
    let outcome = tokio::select! {
        name = &mut signal => {
            tracing::info!("{name}: closing the Discord connection and draining");
            connection.shutdown().await;
            match tokio::time::timeout(Duration::from_secs(10), &mut connection.finished).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the connection ended with an error while closing"),
                Err(_) => tracing::warn!("the connection did not close within 10 s"),
                _ => {}
            }
            Ok(())
        }
        finished = &mut connection.finished => match finished {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(crate::gateway::connection::ConnectionError::Thread("the connection thread ended".into())),
        },
    };
    // Everything the connection received is submitted (the stream ends when the connection's
    // thread does), then committed.
    if tokio::time::timeout(Duration::from_secs(5), submitted)
        .await
        .is_err()
    {
        tracing::warn!("the connection's events were still arriving 5 s after it closed");
    }
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
    server.stop(true).await;
    if let Some(why) = undrained {
        eprintln!(
            "error: {} accepted events are not committed: {why}",
            status.in_flight
        );
        return Ok(ExitCode::FAILURE);
    }
    tracing::info!(events_done = status.events_done, last_seq_committed = ?status.last_seq_committed, "drained");
    // Everything accepted is done; say so if some of it was dropped or rolled back.
    let (shed, failed) = (
        pipeline.metrics().shed.get(),
        pipeline.metrics().handler_errors.get(),
    );
    if shed > 0 || failed > 0 {
        eprintln!(
            "error: during this run {shed} events were dropped (stuck guilds) and {failed} failed (rolled back); see the log"
        );
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
