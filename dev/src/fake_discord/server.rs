//! The server: the shared state every connection works on, the listener, and the routing of
//! each connection to the gateway (WebSocket upgrade) or the REST side.

use super::clock::Clock;
use super::rules::Limits;
use super::{gateway, rest, FakeOptions, Recording, Session};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// The server's shared state.
pub struct Fake {
    pub recording: Recording,
    pub options: FakeOptions,
    pub addr: SocketAddr,
    /// Identify times are ms since this.
    pub started: Instant,
    // Lock order: `limits` before `sessions`; nothing is taken while `clock` is held.
    pub(super) sessions: Mutex<Vec<Session>>,
    pub(super) limits: Mutex<Limits>,
    /// The live timeline's clock (None: not in live mode).
    pub(super) clock: Option<Mutex<Clock>>,
    /// Changed at every start, pause and resume: connections waiting for the clock to run
    /// (or sleeping until a due time it moved) look again.
    pub(super) clock_moved: tokio::sync::watch::Sender<()>,
}

impl Fake {
    pub fn sessions(&self) -> MutexGuard<'_, Vec<Session>> {
        // Updates are single steps; a panic elsewhere leaves consistent data.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
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
    let started = Instant::now();
    let limits = Limits::new(started, &options);
    let clock = options
        .live_rate
        .map(|rate| Mutex::new(Clock::new(rate, recording.frames.len() as u64)));
    let fake = Arc::new(Fake {
        recording,
        options,
        addr,
        started,
        sessions: Mutex::new(Vec::new()),
        limits: Mutex::new(limits),
        clock,
        clock_moved: tokio::sync::watch::Sender::new(()),
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
pub(super) fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}
