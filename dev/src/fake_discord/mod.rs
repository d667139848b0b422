//! `guild-gateway-dev fake-discord`: a local Discord-compatible server for development, tests and
//! load tests (what a local S3 is for object storage).
//!
//! One port serves the REST API serenity calls (`/api/v10/...`), the gateway WebSocket, and an
//! admin API for tests (`/fake/...`). Every session receives the recorded stream, renumbered
//! from seq 2 (READY is 1), restricted to what Discord routes to the shard it identified as.
//! Sessions survive their connection, so a client can RESUME and get what it missed.

mod gateway;
mod rest;

use anyhow::Context as _;
use gateway_actors::event::decode_frame;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One dispatch of the recorded stream.
pub struct Frame {
    pub name: String,
    pub guild_id: Option<u64>,
    pub data: Box<RawValue>,
}

/// The recorded stream and what the REST API answers about it.
pub struct Recording {
    pub frames: Vec<Frame>,
    /// Channel objects by id, from GUILD_CREATE channels and threads.
    pub channels: HashMap<u64, Box<RawValue>>,
}

#[derive(serde::Deserialize)]
struct WireFrame {
    t: String,
    d: Box<RawValue>,
}

#[derive(serde::Deserialize)]
struct ChannelsOf {
    #[serde(default)]
    channels: Vec<Box<RawValue>>,
    #[serde(default)]
    threads: Vec<Box<RawValue>>,
}

#[derive(serde::Deserialize)]
struct IdOf {
    id: gateway_actors::event::Id,
}

impl Recording {
    /// Reads an NDJSON stream in the `replay` format.
    pub fn load(path: &Path) -> anyhow::Result<Recording> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Recording> {
        let mut frames = Vec::new();
        let mut channels = HashMap::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let dispatch = decode_frame(line).with_context(|| format!("line {}", n + 1))?;
            let wire: WireFrame =
                serde_json::from_str(line).with_context(|| format!("line {}", n + 1))?;
            if wire.t == "GUILD_CREATE" {
                let of: ChannelsOf = serde_json::from_str(wire.d.get())
                    .with_context(|| format!("line {}", n + 1))?;
                for raw in of.channels.into_iter().chain(of.threads) {
                    let IdOf { id } = serde_json::from_str(raw.get())
                        .with_context(|| format!("line {}: channel id", n + 1))?;
                    channels.insert(id.0, raw);
                }
            }
            frames.push(Frame {
                name: wire.t,
                guild_id: dispatch.guild_id.map(|g| g.0),
                data: wire.d,
            });
        }
        Ok(Recording { frames, channels })
    }

    /// The frames Discord would route to shard `[id, total]`.
    pub fn frames_for(&self, shard: [u32; 2]) -> Vec<usize> {
        let [id, total] = shard;
        (0..self.frames.len())
            .filter(|&i| match self.frames[i].guild_id {
                _ if total <= 1 => true,
                Some(guild) => (guild >> 22) % u64::from(total) == u64::from(id),
                None => id == 0,
            })
            .collect()
    }
}

/// Settings of a fake Discord.
#[derive(Clone)]
pub struct FakeOptions {
    pub token: String,
    pub bot_user_id: u64,
    pub heartbeat_interval: Duration,
    /// Drop each session's first connection (no close frame) right after sending this seq.
    pub drop_at_seq: Option<u64>,
    /// Dispatches per second per session (None: as fast as the client reads).
    pub rate: Option<u32>,
    /// Intents this bot may use; an Identify asking for more is closed with 4014.
    pub allowed_intents: u64,
}

/// A session's state, which outlives its connections.
pub struct Session {
    pub id: String,
    pub shard: [u32; 2],
    /// Indexes into the recording, in order; the dispatch at position k has seq k + 2.
    pub frames: Vec<usize>,
    pub last_seq_sent: u64,
    pub connected: bool,
    pub connections: u32,
    pub drop_requested: Arc<Notify>,
}

impl Session {
    pub fn done(&self) -> bool {
        // READY is seq 1, the last frame seq len + 1.
        self.last_seq_sent > self.frames.len() as u64
    }
}

#[derive(Serialize)]
pub struct SessionView {
    pub session_id: String,
    pub shard: [u32; 2],
    pub last_seq_sent: u64,
    pub done: bool,
    pub connected: bool,
    pub connections: u32,
}

/// The server's shared state.
pub struct Fake {
    pub recording: Recording,
    pub options: FakeOptions,
    pub addr: SocketAddr,
    sessions: Mutex<Vec<Session>>,
}

impl Fake {
    pub fn sessions(&self) -> MutexGuard<'_, Vec<Session>> {
        // Updates are single steps; a panic elsewhere leaves consistent data.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn session_views(&self) -> Vec<SessionView> {
        self.sessions()
            .iter()
            .map(|s| SessionView {
                session_id: s.id.clone(),
                shard: s.shard,
                last_seq_sent: s.last_seq_sent,
                done: s.done(),
                connected: s.connected,
                connections: s.connections,
            })
            .collect()
    }

    fn token_ok(&self, presented: &str) -> bool {
        let presented = presented.trim();
        presented == self.options.token
            || presented.strip_prefix("Bot ") == Some(self.options.token.as_str())
    }
}

/// Binds `listen` and serves until the process ends. Returns the bound address and the state.
pub async fn start(
    listen: SocketAddr,
    recording: Recording,
    options: FakeOptions,
) -> anyhow::Result<Arc<Fake>> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let fake = Arc::new(Fake {
        recording,
        options,
        addr,
        sessions: Mutex::new(Vec::new()),
    });
    let server = fake.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(server.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(fake)
}

/// Reads the request head without consuming it, and routes to the WebSocket or REST side.
async fn serve_connection(fake: Arc<Fake>, stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let head = loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(end) = find(&buf[..n], b"\r\n\r\n") {
            break String::from_utf8_lossy(&buf[..end]).to_string();
        }
        if n == buf.len() {
            return; // a head over 16 KiB is not one of our clients
        }
        // Wait for more of the head to arrive.
        if stream.readable().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let upgrade = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("upgrade:") && l.contains("websocket")
    });
    if upgrade {
        gateway::serve(fake, stream).await;
    } else {
        rest::serve(fake, stream, head).await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A random-enough session id (no RNG crate needed).
fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// `guild-gateway-dev fake-discord` arguments.
#[derive(Debug, clap::Args)]
pub struct FakeDiscordArgs {
    /// Address to listen on (use 127.0.0.1:PORT)
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The stream every session receives (NDJSON, as `replay` reads)
    #[arg(long)]
    pub events: std::path::PathBuf,
    /// The token clients must present
    #[arg(long, default_value = "fake-token", hide_default_value = true)]
    pub token: String,
    /// The bot's user id in READY
    #[arg(long, default_value = "1000000000000000001")]
    pub bot_user_id: u64,
    /// Heartbeat interval announced in Hello, in milliseconds
    #[arg(long, default_value = "5000")]
    pub heartbeat_ms: u64,
    /// Drop each session's first connection (no close frame) right after this seq
    #[arg(long)]
    pub drop_at_seq: Option<u64>,
    /// Dispatches per second per session [default: as fast as clients read]
    #[arg(long)]
    pub rate: Option<u32>,
    /// Intents the bot may use (bit mask); an Identify asking for others is closed with 4014
    #[arg(long, default_value_t = u64::MAX)]
    pub allowed_intents: u64,
}

impl FakeDiscordArgs {
    pub fn options(&self) -> FakeOptions {
        FakeOptions {
            token: self.token.clone(),
            bot_user_id: self.bot_user_id,
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms.max(100)),
            drop_at_seq: self.drop_at_seq,
            rate: self.rate,
            allowed_intents: self.allowed_intents,
        }
    }
}

/// Runs the fake until SIGTERM or SIGINT.
pub async fn run(args: FakeDiscordArgs) -> anyhow::Result<()> {
    let signal = shutdown_signal()?;
    let recording = Recording::load(&args.events)?;
    let frames = recording.frames.len();
    let fake = start(args.listen, recording, args.options()).await?;
    tracing::info!(addr = %fake.addr, frames, "fake Discord listening (REST under /api/v10, gateway, admin under /fake)");
    println!("fake-discord listening on http://{}", fake.addr);
    let name = signal.await;
    tracing::info!("{name}: stopping");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now (so a signal arriving while the stream loads
/// is not missed); the future resolves with the signal's name.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
