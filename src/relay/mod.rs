//! The pod's Discord-compatible gateway for the bot's own process (`RELAY_ADDR`): a discord.js
//! client connects to it as if it were Discord and receives exactly this pod's guilds.
//!
//! - [`hub`]: the served guilds' documents and the ring of released events, kept by one task
//!   that takes the pipeline's released events ([`gateway_actors::RelayFeed`]);
//! - [`session`]: one client connection, Discord's protocol;
//! - [`upstream`]: the pod's Discord sessions as the clients reach them (the bot's identity,
//!   member requests, presence);
//! - [`metrics`].
//!
//! The listener also answers `GET /api/v10/gateway/bot` (Discord's route, with the bot's token)
//! with this relay's URL: the one request a discord.js client must send here instead of to
//! Discord (deploy/RUNBOOK.md shows the setting).

pub mod hub;
pub mod metrics;
pub mod session;
pub mod upstream;

use anyhow::Context as _;
use gateway_actors::RelayFeed;
use hub::{Hub, RelaySettings};
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use upstream::Upstream;

/// The running relay.
pub struct Relay {
    /// What a rescale's steps tell the relay (guilds that leave, documents to export).
    pub hub: Arc<Hub>,
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl Relay {
    /// Binds `addr` and serves clients from the feed's released events.
    pub async fn start(
        addr: SocketAddr,
        settings: RelaySettings,
        feed: Arc<RelayFeed>,
        upstream: Arc<Upstream>,
        owns: Box<dyn Fn(u64) -> bool + Send + Sync>,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Relay> {
        let metrics = metrics::RelayMetrics::register(registry).context("registering metrics")?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding RELAY_ADDR {addr}"))?;
        let addr = listener.local_addr().context("reading RELAY_ADDR")?;
        let hub = Arc::new(Hub::new(settings, metrics, upstream, feed, owns));
        tokio::spawn(hub.clone().pump());
        let (shutdown, stopping) = watch::channel(false);
        tokio::spawn(accept(listener, hub.clone(), stopping));
        Ok(Relay {
            hub,
            addr,
            shutdown,
        })
    }

    /// Sends every client what was released so far, then tells it to reconnect (op 7) and
    /// closes its connection.
    pub async fn shutdown(&self) {
        self.hub.catch_up();
        self.shutdown.send_replace(true);
        // The sessions' close frames go out on their own tasks.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn accept(listener: TcpListener, hub: Arc<Hub>, stopping: watch::Receiver<bool>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "relay: accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if *stopping.borrow() {
            continue;
        }
        let (hub, stopping) = (hub.clone(), stopping.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            if let Err(e) = connection(stream, hub, stopping).await {
                tracing::debug!(error = %e, "relay: a connection ended early");
            }
        });
    }
}

/// Longest request head read for `GET /api/v10/gateway/bot`.
const MAX_HEAD: usize = 8192;

/// A WebSocket client, or the one REST route the relay answers.
// tungstenite's handshake callback fixes its (large) error type.
#[allow(clippy::result_large_err)]
async fn connection(
    stream: TcpStream,
    hub: Arc<Hub>,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut start = [0u8; 32];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.peek(&mut start))
        .await
        .context("no request within 10 s")??;
    if start[..n].starts_with(b"GET /api/v10/gateway/bot") {
        return gateway_bot(stream, &hub).await;
    }
    let mut version_ok = true;
    let check = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
        let query = request.uri().query().unwrap_or("");
        version_ok = query
            .split('&')
            .all(|pair| !pair.starts_with("v=") || pair == "v=10");
        Ok(response)
    };
    let limits = tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
        max_message_size: Some(session::MAX_CLIENT_FRAME),
        max_frame_size: Some(session::MAX_CLIENT_FRAME),
        ..Default::default()
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(limits))
        .await
        .context("the WebSocket handshake")?;
    if !version_ok {
        let mut ws = ws;
        use futures_util::SinkExt;
        let close = gateway_actors::relay::protocol::Close::InvalidApiVersion;
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: close.code().into(),
            reason: close.reason().into(),
        };
        let _ = ws
            .send(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))
            .await;
        return Ok(());
    }
    session::serve(hub, ws, stopping).await;
    Ok(())
}

/// `GET /api/v10/gateway/bot` with `Authorization: Bot TOKEN`: this relay, one shard.
async fn gateway_bot(mut stream: TcpStream, hub: &Hub) -> anyhow::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            anyhow::bail!("request head over {MAX_HEAD} bytes");
        }
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
            .await
            .context("request head not sent within 10 s")??;
        if n == 0 {
            anyhow::bail!("closed before the end of the request head");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let authorized = head.lines().any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        let token = value.trim();
        let token = token.strip_prefix("Bot ").unwrap_or(token);
        name.eq_ignore_ascii_case("authorization")
            && bool::from(token.as_bytes().ct_eq(hub.settings.token.as_bytes()))
    });
    let (status, body) = if authorized {
        let body = serde_json::json!({
            "url": hub.settings.public_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1,
            },
        });
        ("200 OK", body.to_string())
    } else {
        (
            "401 Unauthorized",
            r#"{"message":"401: Unauthorized","code":0}"#.to_owned(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    Ok(())
}
