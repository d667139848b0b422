//! The pod's HTTP endpoints (actix-web, in the same System as the actors):
//! `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz` (readiness), `/status` (JSON),
//! and the guild data API under `/v1` ([`crate::api`]).

use crate::api::Api;
use crate::config::PodConfig;
use crate::gateway::sessions::Sessions;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use gateway_actors::Pipeline;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// What the handlers read.
pub struct HttpState {
    pub pipeline: Arc<Pipeline>,
    /// The Discord sessions, in `serve`; readiness then requires them.
    pub gateway: Option<Arc<Sessions>>,
}

#[derive(Serialize)]
struct Status {
    /// The committed ownership this pod follows (its epoch, and the rescale under way).
    ownership: crate::rescale::endpoints::RescaleState,
    pod_ordinal: u32,
    num_pods: u32,
    /// The ordinal is at or past the pod count: this pod owns nothing until a rescale
    /// includes it.
    standby: bool,
    strategy: &'static str,
    /// The bot's Discord shard count, and those this pod runs.
    shards: u32,
    pod_shards: Vec<u32>,
    last_seq_received: Option<u64>,
    last_seq_committed: Option<u64>,
    events_accepted: u64,
    events_done: u64,
    in_flight: u64,
    guild_actors: i64,
    /// Dropped because their guild was stuck (the last resort).
    events_shed: u64,
    /// Queued in a guild's overflow when its mailbox was full (none lost).
    events_overflowed: u64,
    /// Rolled back because their writes failed on their own (bad data, a bug).
    events_failed: u64,
    guilds_stuck: i64,
    /// Why commits are failing, while they are: nothing is marked done meanwhile.
    storage_error: Option<String>,
    storage_failing_secs: Option<f64>,
    /// The first session's id (compatibility: one session per pod before DISCORD_SHARDS).
    session_id: Option<String>,
    gateway_ready: Option<bool>,
    /// Each session (serve): its shard, id, readiness, identifies and the seq of its last
    /// event submitted to the pipeline.
    sessions: Option<Vec<SessionStatus>>,
    /// Why sessions are not identifying now (budget, crash-loop backoff, identify slot).
    identify_waiting: Option<String>,
}

#[derive(Serialize)]
struct SessionStatus {
    shard: [u32; 2],
    session_id: Option<String>,
    ready: bool,
    identifies: u64,
    last_seq_submitted: u64,
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    state.pipeline.refresh_gauges();
    if let Some(sessions) = &state.gateway {
        sessions.refresh_gauges();
    }
    let ready = readiness(&state).await.is_ok();
    state.pipeline.metrics().ready.set(i64::from(ready));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.pipeline.metrics().render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

/// Ready: the database takes writes and, in `serve`, the Discord session is up.
async fn readiness(state: &HttpState) -> Result<(), String> {
    if let Err(e) = state.pipeline.check_writable(Duration::from_secs(2)).await {
        return Err(format!(
            "database not writable: {}",
            gateway_actors::errors::chain(&e)
        ));
    }
    match state.gateway.as_ref().and_then(|g| g.not_ready()) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    match readiness(&state).await {
        Ok(()) => HttpResponse::Ok().body("ready\n"),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("not ready: {e}\n")),
    }
}

async fn status(state: web::Data<HttpState>, api: web::Data<Api>) -> HttpResponse {
    let p = state.pipeline.status();
    let m = state.pipeline.metrics();
    let fault = state.pipeline.storage_fault();
    let ownership = state.pipeline.ownership();
    let sharding = ownership.sharding();
    HttpResponse::Ok().json(Status {
        ownership: crate::rescale::endpoints::state_of(&api, ownership),
        pod_ordinal: sharding.ordinal,
        num_pods: sharding.pods,
        standby: sharding.ordinal >= sharding.pods,
        strategy: sharding.strategy.as_str(),
        last_seq_received: p.last_seq_received,
        last_seq_committed: p.last_seq_committed,
        events_accepted: p.events_accepted,
        events_done: p.events_done,
        in_flight: p.in_flight,
        guild_actors: m.guild_actors.get(),
        events_shed: m.shed.get(),
        events_overflowed: m.events_overflowed.get(),
        events_failed: m.handler_errors.get(),
        guilds_stuck: m.guilds_stuck.get(),
        storage_error: fault.as_ref().map(|f| f.error.clone()),
        storage_failing_secs: fault.as_ref().map(|f| f.since.elapsed().as_secs_f64()),
        shards: sharding.shards,
        pod_shards: ownership
            .layout
            .sessions(sharding.ordinal)
            .iter()
            .map(|s| s[0])
            .collect(),
        session_id: state
            .gateway
            .as_ref()
            .and_then(|g| g.list().first().cloned())
            .and_then(|s| s.session_id()),
        gateway_ready: state.gateway.as_ref().map(|g| g.ready()),
        sessions: state.gateway.as_ref().map(|g| {
            g.list()
                .iter()
                .map(|s| SessionStatus {
                    shard: s.shard,
                    session_id: s.session_id(),
                    ready: s.ready.load(Ordering::SeqCst),
                    identifies: s.identifies.load(Ordering::SeqCst),
                    last_seq_submitted: s.last_seq_submitted.load(Ordering::SeqCst),
                })
                .collect()
        }),
        identify_waiting: state.gateway.as_ref().and_then(|g| g.gate.waiting_reason()),
    })
}

/// Starts a pod's HTTP server (status and data API) on the current System.
pub fn start_pod(
    config: &PodConfig,
    pipeline: Arc<Pipeline>,
    gateway: Option<Arc<Sessions>>,
    relay: Option<Arc<crate::relay::hub::Hub>>,
) -> anyhow::Result<actix_web::dev::ServerHandle> {
    let mut api = Api::new(
        config.api.clone(),
        pipeline.clone(),
        &config.database,
        gateway.clone(),
    )?;
    api.relay = relay;
    let state = HttpState { pipeline, gateway };
    start(config.http_addr, state, api)
}

/// Binds and starts the server on the current System; stop it with the returned handle.
fn start(
    addr: SocketAddr,
    state: HttpState,
    api: Api,
) -> anyhow::Result<actix_web::dev::ServerHandle> {
    let state = web::Data::new(state);
    let api = web::Data::new(api);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(api.clone())
            .configure(crate::api::routes(api.clone()))
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/status", web::get().to(status))
    })
    // Queries run on blocking threads; this thread only routes and encodes.
    .workers(1)
    // Signals are ours: a SIGTERM drains the pipeline before anything stops.
    .disable_signals()
    .shutdown_timeout(5)
    .bind(addr)
    .with_context(|| format!("binding HTTP_ADDR {addr}"))?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    tracing::info!(%addr, "HTTP listening");
    Ok(handle)
}
