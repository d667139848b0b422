//! The Discord connection: a serenity client on a thread of its own.
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

use super::convert::to_dispatch;
use super::GatewayMetrics;
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
    /// `[id, total]` to identify as one shard of many (the discord strategy); None: [0, 1].
    pub shard: Option<[u32; 2]>,
}

/// Whether the session is usable: READY or RESUMED seen and not lost since.
#[derive(Default)]
pub struct SessionState {
    pub ready: AtomicBool,
    /// The current session's id (from READY), for matching a pod with a fake's session.
    pub session_id: std::sync::Mutex<Option<String>>,
}

impl SessionState {
    pub fn session_id(&self) -> Option<String> {
        self.session_id
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// Why the connection ended for good.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
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
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r))
            if r.status_code.as_u16() == 401 =>
        {
            ConnectionError::Authentication
        }
        _ => ConnectionError::Other(e),
    }
}

struct Forwarder {
    tx: mpsc::Sender<Dispatch>,
    /// Dispatches since READY (READY is 1): the gateway seq, which serenity does not expose.
    seq: AtomicU64,
    state: Arc<SessionState>,
    metrics: Arc<GatewayMetrics>,
}

#[async_trait]
impl RawEventHandler for Forwarder {
    async fn raw_event(&self, _: Context, event: Event) {
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
                self.metrics.connected.set(1);
                self.seq.store(1, Ordering::SeqCst);
                self.state.ready.store(true, Ordering::SeqCst);
                Some(1)
            }
            // RESUMED repeats the last seq instead of taking a new one.
            Event::Resumed(_) => {
                self.state.ready.store(true, Ordering::SeqCst);
                self.metrics.connected.set(1);
                self.metrics.resumes.inc();
                None
            }
            _ => Some(self.seq.fetch_add(1, Ordering::SeqCst) + 1),
        };
        let dispatch = to_dispatch(&event, seq);
        self.metrics.count(dispatch.kind);
        match self.tx.try_send(dispatch) {
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

/// A running connection.
pub struct Connection {
    pub state: Arc<SessionState>,
    /// Resolves when the connection ends for good (an error, or after `shutdown`).
    pub finished: oneshot::Receiver<Result<(), ConnectionError>>,
    shard_manager: oneshot::Receiver<Arc<ShardManager>>,
}

impl Connection {
    /// Starts the client on its own thread; returns it and the stream of its events, in order.
    pub fn start(
        config: ConnectionConfig,
        metrics: Arc<GatewayMetrics>,
    ) -> (Connection, mpsc::Receiver<Dispatch>) {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let (done_tx, finished) = oneshot::channel();
        let (manager_tx, shard_manager) = oneshot::channel();
        let state = Arc::new(SessionState::default());
        let thread_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("discord-gateway".into())
            .spawn(move || {
                let result = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        runtime.block_on(run(config, tx, thread_state, metrics, manager_tx))
                    }
                    Err(e) => Err(ConnectionError::Thread(e.to_string())),
                };
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
        (
            Connection {
                state,
                finished,
                shard_manager,
            },
            events,
        )
    }

    /// Closes the connection (if it was established).
    pub async fn shutdown(&mut self) {
        if let Ok(manager) = (&mut self.shard_manager).await {
            manager.shutdown_all().await;
        }
    }
}

async fn run(
    config: ConnectionConfig,
    tx: mpsc::Sender<Dispatch>,
    state: Arc<SessionState>,
    metrics: Arc<GatewayMetrics>,
    manager_tx: oneshot::Sender<Arc<ShardManager>>,
) -> Result<(), ConnectionError> {
    let http = || {
        let builder = HttpBuilder::new(&config.token);
        match &config.api_url {
            // The rate limiter would send requests to discord.com itself: off when proxied.
            Some(url) => builder
                .proxy(url.trim_end_matches('/'))
                .ratelimiter_disabled(true)
                .build(),
            None => builder.build(),
        }
    };
    // Ask for the gateway URL first: serenity, when this fails, falls back to Discord's public
    // gateway host, which must never happen when DISCORD_API_URL points elsewhere, and a
    // rejected token must end the pod rather than loop.
    if let Err(e) = http().get_gateway().await {
        return Err(match classify(e) {
            ConnectionError::Other(e) => ConnectionError::Unreachable {
                api: config
                    .api_url
                    .clone()
                    .unwrap_or_else(|| "https://discord.com".into()),
                source: e,
            },
            fatal => fatal,
        });
    }
    let forwarder = Forwarder {
        tx,
        seq: AtomicU64::new(0),
        state: state.clone(),
        metrics: metrics.clone(),
    };
    // No `EventHandler`: serenity would clone every event into a second model and spawn a
    // second task for it. The connection's stage is polled from the shard manager instead.
    let mut client = ClientBuilder::new_with_http(http(), intents())
        .raw_event_handler(forwarder)
        .await
        .map_err(ConnectionError::Build)?;
    let _ = manager_tx.send(client.shard_manager.clone());

    // The connection's stage and heartbeat latency, as serenity's shard runners report them.
    let manager = client.shard_manager.clone();
    tokio::spawn(async move {
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
            metrics.connected.set(i64::from(connected));
            if was_connected && !connected {
                state.ready.store(false, Ordering::SeqCst);
                tracing::warn!("gateway connection lost; serenity is reconnecting");
            }
            was_connected = connected;
        }
    });

    let result = match config.shard {
        Some([id, total]) => client.start_shard(id, total).await,
        None => client.start().await,
    };
    // Let the handler tasks spawned for the last events run before the runtime goes away.
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    result.map_err(classify)
}
