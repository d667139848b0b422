//! One Discord session (one shard): a serenity client on a thread of its own. A pod runs one
//! per shard it connects ([`super::shards`]), each waiting for its turn to identify
//! ([`super::identify`]).
//!
//! serenity hands each event to its handlers in a freshly spawned task. On a multi-threaded
//! runtime those tasks can run out of order; on this thread's single-threaded runtime they run
//! in spawn order (FIFO), and the handler passes the event on before its first `.await`, so the
//! pipeline receives events in the order the gateway sent them.
//!
//! The queue to the pipeline is bounded ([`EVENT_QUEUE`]). When it is full the handler blocks
//! this thread, and so the whole connection: serenity stops reading the socket, and TCP holds
//! the rest at Discord's side. Memory stays bounded and nothing is dropped. Heartbeats stop
//! too while the pipeline cannot keep up, so after a long stall Discord may close the
//! connection as a zombie; serenity then resumes the session and Discord replays everything
//! after the last seq serenity saw, which the pipeline had already accepted.

use super::close_codes;
use super::convert::{relay_payload, to_dispatch};
use super::identify::{IdentifyGate, StartLimits};
use super::GatewayMetrics;
use crate::relay::upstream::{Identity, Upstream};
use gateway_actors::event::Dispatch;
use serenity::all::{GatewayIntents, ShardManager};
use serenity::async_trait;
use serenity::client::{ClientBuilder, Context, RawEventHandler};
use serenity::gateway::ConnectionStage;
use serenity::http::HttpBuilder;
use serenity::model::event::Event;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Events decoded and waiting for the pipeline, at most.
pub const EVENT_QUEUE: usize = 256;

/// The intents of the TypeScript bot.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS
        | GatewayIntents::GUILD_MEMBERS
        | GatewayIntents::GUILD_MODERATION
        | GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
        | GatewayIntents::GUILD_MESSAGE_REACTIONS
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::DIRECT_MESSAGE_REACTIONS
        | GatewayIntents::AUTO_MODERATION_EXECUTION
}

/// How to connect.
#[derive(Clone)]
pub struct ConnectionConfig {
    pub token: String,
    /// Base URL of a Discord-compatible API (a local fake, an HTTP proxy); None: discord.com.
    pub api_url: Option<String>,
    /// `[id, total]`: the shard this session identifies as.
    pub shard: [u32; 2],
    /// The ownership epoch whose layout this session serves, and this pod under that
    /// layout (its identify slot depends on it).
    pub epoch: u64,
    pub sharding: gateway_actors::partition::Partition,
}

/// One session's state: whether it is usable (READY or RESUMED seen and not lost since), and
/// how far the pipeline has taken its events.
pub struct SessionState {
    pub shard: [u32; 2],
    /// The ownership epoch whose layout this session serves.
    pub epoch: u64,
    pub ready: AtomicBool,
    /// The current session's id (from READY), for matching a pod with a fake's session.
    pub session_id: std::sync::Mutex<Option<String>>,
    /// READYs seen: each one is an identify that Discord accepted.
    pub identifies: AtomicU64,
    /// The seq of this session's last event submitted to the pipeline.
    pub last_seq_submitted: AtomicU64,
    /// The socket is up (serenity's stage), READY or not.
    pub connected: AtomicBool,
}

impl SessionState {
    pub fn new(shard: [u32; 2], epoch: u64) -> SessionState {
        SessionState {
            shard,
            epoch,
            ready: AtomicBool::new(false),
            session_id: std::sync::Mutex::new(None),
            identifies: AtomicU64::new(0),
            last_seq_submitted: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        }
    }

    pub fn session_id(&self) -> Option<String> {
        self.session_id
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// An event and the session it came from.
pub type ShardEvent = (Arc<SessionState>, Dispatch);

/// Why the connection ended for good.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("shard {shard:?}: Discord closed the session with {code} ({name}): {why}")]
    Closed {
        shard: [u32; 2],
        code: u16,
        name: &'static str,
        why: String,
    },
    #[error("Discord rejected the token (DISCORD_TOKEN): authentication failed")]
    Authentication,
    #[error("Discord rejected the gateway intents (invalid or not enabled for this bot)")]
    Intents,
    #[error("cannot reach the Discord API at {api}")]
    Unreachable {
        api: String,
        source: serenity::Error,
    },
    #[error("building the Discord client: {0}")]
    Build(serenity::Error),
    #[error("the Discord connection failed: {0}")]
    Other(serenity::Error),
    #[error("the Discord connection thread failed: {0}")]
    Thread(String),
}

/// A fatal close serenity reported as an error, as the close-code table words it.
fn closed(code: u16) -> ConnectionError {
    let row = close_codes::lookup(code);
    ConnectionError::Closed {
        shard: [0, 0],
        code,
        name: row.map_or("unknown", |c| c.name),
        why: match row.map(|c| c.action) {
            Some(close_codes::Action::Fatal(why)) => why.to_owned(),
            _ => String::new(),
        },
    }
}

fn classify(e: serenity::Error) -> ConnectionError {
    use serenity::gateway::GatewayError;
    use serenity::http::HttpError;
    match &e {
        serenity::Error::Gateway(GatewayError::InvalidAuthentication) => {
            ConnectionError::Authentication
        }
        serenity::Error::Gateway(
            GatewayError::InvalidGatewayIntents | GatewayError::DisallowedGatewayIntents,
        ) => ConnectionError::Intents,
        serenity::Error::Gateway(GatewayError::OverloadedShard) => closed(4011),
        serenity::Error::Gateway(GatewayError::InvalidShardData) => closed(4010),
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r))
            if r.status_code.as_u16() == 401 =>
        {
            ConnectionError::Authentication
        }
        _ => ConnectionError::Other(e),
    }
}

struct Forwarder {
    tx: mpsc::Sender<ShardEvent>,
    relay: Option<Arc<Upstream>>,
    /// Dispatches since READY (READY is 1): the gateway seq, which serenity does not expose.
    seq: AtomicU64,
    state: Arc<SessionState>,
    metrics: Arc<GatewayMetrics>,
}

#[async_trait]
impl RawEventHandler for Forwarder {
    async fn raw_event(&self, ctx: Context, event: Event) {
        // No `.await` before the send: order is kept (see the module docs).
        let seq = match &event {
            Event::Ready(ready) => {
                if let Ok(mut id) = self.state.session_id.lock() {
                    if id.is_some() {
                        // A new session after a lost one: serenity re-identified.
                        self.metrics.reconnects.inc();
                    }
                    *id = Some(ready.ready.session_id.clone());
                }
                self.state.identifies.fetch_add(1, Ordering::SeqCst);
                self.state.connected.store(true, Ordering::SeqCst);
                self.metrics.identifies.inc();
                close_codes::watch().connected(self.state.shard[0]);
                self.seq.store(1, Ordering::SeqCst);
                self.state.ready.store(true, Ordering::SeqCst);
                if let Some(relay) = &self.relay {
                    relay.ready(
                        self.state.shard,
                        relay_identity(&ready.ready),
                        ready.ready.guilds.iter().map(|g| g.id.get()).collect(),
                        ctx.shard.clone(),
                    );
                }
                Some(1)
            }
            // RESUMED repeats the last seq instead of taking a new one.
            Event::Resumed(_) => {
                self.state.ready.store(true, Ordering::SeqCst);
                self.state.connected.store(true, Ordering::SeqCst);
                close_codes::watch().connected(self.state.shard[0]);
                self.metrics.resumes.inc();
                None
            }
            _ => Some(self.seq.fetch_add(1, Ordering::SeqCst) + 1),
        };
        let mut dispatch = to_dispatch(&event, seq);
        self.metrics.count(dispatch.kind);
        if let Some(relay) = &self.relay {
            dispatch.relay_payload = relay_payload(&event);
            if let (Some(data), "GUILD_MEMBERS_CHUNK") = (&dispatch.relay_payload, dispatch.name())
            {
                relay.chunk(data);
            }
        }
        match self.tx.try_send((self.state.clone(), dispatch)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(dispatch)) => {
                // Block this thread (see the module docs): the connection waits for the pipeline.
                self.metrics.backpressure_waits.inc();
                if block_on(self.tx.send(dispatch)).is_err() {
                    tracing::warn!("an event arrived after the pipeline stopped taking events");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("an event arrived after the pipeline stopped taking events");
            }
        }
    }
}

/// The bot as READY introduced it, for the relay's own READY.
fn relay_identity(ready: &serenity::model::gateway::Ready) -> Identity {
    // serenity writes an absent field as null, which discord.js takes as a value.
    let without_nulls = |value: serde_json::Value| match value {
        serde_json::Value::Object(mut fields) => {
            fields.retain(|_, v| !v.is_null());
            serde_json::Value::Object(fields)
        }
        other => other,
    };
    let mut user = without_nulls(serde_json::to_value(&ready.user).unwrap_or_default());
    // serenity reads Discord's "0" (a user without a discriminator) as none; discord.js
    // expects the field.
    if let Some(fields) = user.as_object_mut() {
        fields
            .entry("discriminator")
            .or_insert_with(|| serde_json::Value::from("0"));
    }
    Identity {
        user,
        application: without_nulls(serde_json::to_value(&ready.application).unwrap_or_default()),
    }
}

/// Runs a future to completion on this thread, parking it in between: a bounded channel's
/// `send` never needs the runtime that this thread is running (and blocking it is the point).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = TaskContext::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// serenity's REST client for the bot, at `api_url` if set (a local fake, a proxy).
pub fn discord_http(token: &str, api_url: Option<&str>) -> serenity::http::Http {
    let builder = HttpBuilder::new(token);
    match api_url {
        // The rate limiter would send requests to discord.com itself: off when proxied.
        Some(url) => builder
            .proxy(url.trim_end_matches('/'))
            .ratelimiter_disabled(true)
            .build(),
        None => builder.build(),
    }
}

/// A running session.
pub struct Connection {
    pub state: Arc<SessionState>,
    /// Resolves when the connection ends for good (an error, or after `shutdown`).
    finished: oneshot::Receiver<Result<(), ConnectionError>>,
    shard_manager: oneshot::Receiver<Arc<ShardManager>>,
    /// Ends a connection still waiting for its turn to identify.
    stop: tokio::sync::watch::Sender<bool>,
    /// The thread has ended (nothing left to shut down).
    ended: Arc<AtomicBool>,
    /// `shutdown` was called: the end that follows was asked for.
    asked: Arc<AtomicBool>,
}

/// What every session of a pod shares.
#[derive(Clone)]
pub struct Shared {
    pub events: mpsc::Sender<ShardEvent>,
    pub metrics: Arc<GatewayMetrics>,
    pub gate: Arc<IdentifyGate>,
    /// The relay's view of the sessions, when the pod runs a relay.
    pub relay: Option<Arc<Upstream>>,
}

impl Connection {
    /// Starts the session on its own thread; its events go to `shared.events`, in order.
    pub fn start(config: ConnectionConfig, shared: Shared) -> Connection {
        let (done_tx, finished) = oneshot::channel();
        let (manager_tx, shard_manager) = oneshot::channel();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let state = Arc::new(SessionState::new(config.shard, config.epoch));
        let thread_state = state.clone();
        let ended = Arc::new(AtomicBool::new(false));
        let thread_ended = ended.clone();
        let spawned = std::thread::Builder::new()
            .name(close_codes::thread_name(config.shard[0]))
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        runtime.block_on(run(config, shared, thread_state, manager_tx, stopped))
                    }
                    Err(e) => Err(ConnectionError::Thread(e.to_string())),
                };
                thread_ended.store(true, Ordering::SeqCst);
                let _ = done_tx.send(result);
            });
        let finished = match spawned {
            Ok(_) => finished,
            Err(e) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(ConnectionError::Thread(e.to_string())));
                rx
            }
        };
        Connection {
            state,
            finished,
            shard_manager,
            stop,
            ended,
            asked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The session's end, for whoever waits on it (once).
    pub fn take_finished(&mut self) -> oneshot::Receiver<Result<(), ConnectionError>> {
        std::mem::replace(&mut self.finished, oneshot::channel().1)
    }

    /// Whether `shutdown` was called (read when the session ends).
    pub fn stop_requested(&self) -> Arc<AtomicBool> {
        self.asked.clone()
    }

    /// Closes the session (or gives up waiting to open it).
    pub async fn shutdown(&mut self) {
        self.asked.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(manager) = (&mut self.shard_manager).await {
            manager.shutdown_all().await;
        }
    }
}

async fn run(
    config: ConnectionConfig,
    shared: Shared,
    state: Arc<SessionState>,
    manager_tx: oneshot::Sender<Arc<ShardManager>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let [shard, shards] = config.shard;
    let http = || discord_http(&config.token, config.api_url.as_deref());
    let unreachable = |e: serenity::Error| match classify(e) {
        ConnectionError::Other(e) => ConnectionError::Unreachable {
            api: config
                .api_url
                .clone()
                .unwrap_or_else(|| "https://discord.com".into()),
            source: e,
        },
        fatal => fatal,
    };
    // Ask for the gateway URL first: serenity, when this fails, falls back to Discord's public
    // gateway host, which must never happen when DISCORD_API_URL points elsewhere, and a
    // rejected token must end the pod rather than loop.
    let rest = http();
    rest.get_gateway().await.map_err(unreachable)?;
    let mut fatal = close_codes::watch().register(shard);
    tokio::select! {
        turn = shared.gate.wait_turn(&config.sharding, shard, &rest) => { turn.map_err(unreachable)?; }
        _ = stopped.wait_for(|stop| *stop) => return Ok(()),
    }
    tracing::info!(shard, shards, "identifying");

    let forwarder = Forwarder {
        tx: shared.events.clone(),
        relay: shared.relay.clone(),
        seq: AtomicU64::new(0),
        state: state.clone(),
        metrics: shared.metrics.clone(),
    };
    // No `EventHandler`: serenity would clone every event into a second model and spawn a
    // second task for it. The connection's stage is polled from the shard manager instead.
    let mut client = ClientBuilder::new_with_http(http(), intents())
        .raw_event_handler(forwarder)
        .await
        .map_err(ConnectionError::Build)?;
    let manager = client.shard_manager.clone();
    let _ = manager_tx.send(manager.clone());
    tokio::spawn(watch_stage(
        manager.clone(),
        state.clone(),
        shared.metrics.clone(),
    ));

    let result = tokio::select! {
        result = client.start_shard(shard, shards) => result.map_err(classify),
        // Returning drops the client and this thread's runtime with every serenity task: the
        // socket closes at once (serenity's own shutdown waits, and races its restarts).
        Some((code, why)) = fatal.recv() => {
            Err(ConnectionError::Closed {
                shard: config.shard,
                code,
                name: close_codes::lookup(code).map_or("unknown", |c| c.name),
                why: why.to_owned(),
            })
        }
    };
    // Let the handler tasks spawned for the last events run before the runtime goes away.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    explain_too_many_guilds(result, &rest, config.shard).await
}

/// A 4011 close (sharding required) names the shard count given and the one Discord
/// recommends, from where it says so.
async fn explain_too_many_guilds(
    result: Result<(), ConnectionError>,
    rest: &serenity::http::Http,
    shard: [u32; 2],
) -> Result<(), ConnectionError> {
    let shards = shard[1];
    match result {
        Err(ConnectionError::Closed {
            code, name, why, ..
        }) => {
            let why = if code == 4011 {
                // Name the count Discord recommends, from where it says so.
                let recommended = rest
                    .start_limit()
                    .await
                    .map(|l| {
                        format!(
                            "; Discord recommends {} (GET /gateway/bot)",
                            l.recommended_shards
                        )
                    })
                    .unwrap_or_default();
                format!("{why} (DISCORD_SHARDS gives {shards} shard(s)){recommended}")
            } else {
                why
            };
            Err(ConnectionError::Closed {
                shard,
                code,
                name,
                why,
            })
        }
        other => other,
    }
}

/// The session's stage and heartbeat latency, as serenity's shard runner reports them.
async fn watch_stage(
    manager: Arc<ShardManager>,
    state: Arc<SessionState>,
    metrics: Arc<GatewayMetrics>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut was_connected = false;
    loop {
        every.tick().await;
        let runners = manager.runners.lock().await;
        if let Some(latency) = runners.values().find_map(|r| r.latency) {
            metrics.heartbeat_latency.set(latency.as_secs_f64());
        }
        let connected = !runners.is_empty()
            && runners
                .values()
                .all(|r| r.stage == ConnectionStage::Connected);
        drop(runners);
        state.connected.store(connected, Ordering::SeqCst);
        if was_connected && !connected {
            state.ready.store(false, Ordering::SeqCst);
            tracing::warn!(
                shard = state.shard[0],
                "gateway connection lost; serenity is reconnecting"
            );
        }
        was_connected = connected;
    }
}
