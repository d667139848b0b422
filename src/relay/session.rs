//! One client of the relay, as Discord's gateway treats a connection: HELLO; IDENTIFY (READY,
//! then a GUILD_CREATE per served guild, then the released events with this session's own
//! sequence numbers) or RESUME (what it missed, then RESUMED); heartbeats and their ACKs; op 8
//! and op 3 passed to the pod's Discord sessions; anything else closed with Discord's code.

use super::hub::{Hub, Parked};
use super::upstream::Direct;
use futures_util::{SinkExt, StreamExt};
use gateway_actors::relay::protocol::{self, ClientFrame, Close};
use gateway_actors::relay::ring::Released;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// How long an IDENTIFY waits for the pod's own Discord session to be ready.
const IDENTITY_WAIT: Duration = Duration::from_secs(10);

/// Member chunks waiting for a client, at most.
const DIRECT_QUEUE: usize = 64;

/// A connection that has not identified or resumed by then is closed (4003): an idle socket
/// must not hold one of the RELAY_MAX_CLIENTS slots.
const AUTHENTICATE_WITHIN: Duration = Duration::from_secs(20);

/// Frames a client may send per minute, as Discord allows (more: closed with 4008).
const FRAMES_PER_MINUTE: u32 = 120;

/// The largest frame a client may send. Discord's limit is 4096 bytes; a member request
/// with 100 user ids and a presence with activities fit well inside this.
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;

/// Where a connection is in its session.
struct Session {
    id: String,
    /// The last seq sent.
    seq: u64,
    /// A dispatch at ring position `p` is this session's seq `p + offset`.
    offset: i64,
    /// The last ring position sent.
    position: u64,
    stream_from: u64,
}

/// How a connection ends: a close frame, or the client went away.
enum End {
    Close(u16, &'static str),
    Gone,
}

impl From<Close> for End {
    fn from(close: Close) -> End {
        End::Close(close.code(), close.reason())
    }
}

/// Serves one client until it leaves, breaks the protocol, or the relay shuts down.
pub async fn serve(hub: Arc<Hub>, ws: Ws, mut shutdown: watch::Receiver<bool>) {
    let mut ws = ws;
    let Some(_slot) = hub.connect() else {
        close(&mut ws, 4000, "the relay serves no more clients").await;
        return;
    };
    let interval = hub.settings.heartbeat_interval;
    if send(&mut ws, protocol::hello(interval.as_millis() as u64))
        .await
        .is_err()
    {
        return;
    }
    let (direct_tx, mut direct) = mpsc::channel::<Direct>(DIRECT_QUEUE);
    let mut positions = hub.watch_position();
    let mut session: Option<Session> = None;
    let mut last_heartbeat = Instant::now();
    let mut zombie_check = tokio::time::interval(interval / 2);
    let connected = Instant::now();
    let mut frames = Window::new(FRAMES_PER_MINUTE, Duration::from_secs(60));
    let end = loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => break End::from(Close::DecodeError),
                    // Over MAX_CLIENT_FRAME.
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                        break End::from(Close::DecodeError)
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break End::Gone,
                    Some(Ok(_)) => continue,
                };
                if !frames.admit(Instant::now()) {
                    break End::from(Close::RateLimited);
                }
                let frame = match protocol::parse_client_frame(&text) {
                    Ok(frame) => frame,
                    Err(close) => break End::from(close),
                };
                if let ClientFrame::Heartbeat(_) = frame {
                    last_heartbeat = Instant::now();
                }
                match handle(&hub, &mut ws, &mut session, frame, &direct_tx, &mut positions).await {
                    Ok(()) => {}
                    Err(end) => break end,
                }
            }
            Ok(()) = positions.changed(), if session.is_some() => {
                if let Some(s) = session.as_mut() {
                    if let Err(end) = stream(&hub, &mut ws, s).await {
                        break end;
                    }
                }
            }
            Some(chunk) = direct.recv(), if session.is_some() => {
                let seq = session.as_ref().map_or(0, |s| s.seq);
                if send(&mut ws, protocol::dispatch(seq, chunk.kind, &chunk.data)).await.is_err() {
                    break End::Gone;
                }
            }
            _ = zombie_check.tick() => {
                if last_heartbeat.elapsed() > interval * 2 {
                    break End::from(Close::SessionTimedOut);
                }
                if session.is_none() && connected.elapsed() > AUTHENTICATE_WITHIN {
                    break End::from(Close::NotAuthenticated);
                }
            }
            Ok(()) = shutdown.changed() => {
                // Everything released first (the pod drained before this), then op 7.
                if let Some(s) = session.as_mut() {
                    if let Err(end) = stream(&hub, &mut ws, s).await {
                        break end;
                    }
                }
                let _ = send(&mut ws, protocol::reconnect()).await;
                break End::Close(4000, "the relay is restarting: resume");
            }
        }
    };
    if let Some(s) = session {
        hub.park(
            s.id,
            Parked {
                offset: s.offset,
                stream_from: s.stream_from,
                at: Instant::now(),
            },
        );
    }
    if let End::Close(code, reason) = end {
        close(&mut ws, code, reason).await;
    }
}

/// One client frame (a heartbeat's time is already noted).
async fn handle(
    hub: &Arc<Hub>,
    ws: &mut Ws,
    session: &mut Option<Session>,
    frame: ClientFrame,
    direct: &mpsc::Sender<Direct>,
    positions: &mut watch::Receiver<u64>,
) -> Result<(), End> {
    match frame {
        ClientFrame::Heartbeat(_) => sent(send(ws, protocol::heartbeat_ack()).await),
        ClientFrame::Identify { .. } | ClientFrame::Resume { .. } if session.is_some() => {
            Err(Close::AlreadyAuthenticated.into())
        }
        ClientFrame::Identify {
            token,
            shard,
            presence,
            ..
        } => {
            check_token(hub, &token)?;
            if shard.is_some_and(|s| s != (0, 1)) {
                return Err(Close::InvalidShard.into());
            }
            let Some(identity) = hub.upstream.identity(IDENTITY_WAIT).await else {
                return Err(End::Close(4000, "the pod has no Discord session yet"));
            };
            if let Some(presence) = presence {
                hub.upstream.set_presence(&presence);
            }
            // Marked seen first: a release after the snapshot still wakes this connection.
            positions.borrow_and_update();
            let snapshot = hub.snapshot();
            let id = new_session_id();
            let ready = protocol::ready(
                &id,
                &hub.settings.public_url,
                &identity.user,
                &identity.application,
                snapshot.guild_ids,
            );
            sent(feed(ws, protocol::dispatch(1, "READY", &ready)).await)?;
            let mut seq = 1;
            for guild in &snapshot.guild_creates {
                seq += 1;
                sent(feed(ws, protocol::dispatch(seq, "GUILD_CREATE", guild)).await)?;
            }
            sent(ws.flush().await)?;
            let mut s = Session {
                id,
                seq,
                offset: seq as i64 - snapshot.position as i64,
                position: snapshot.position,
                stream_from: seq + 1,
            };
            let streamed = stream(hub, ws, &mut s).await;
            *session = Some(s);
            streamed
        }
        ClientFrame::Resume {
            token,
            session_id,
            seq,
        } => {
            check_token(hub, &token)?;
            positions.borrow_and_update();
            match resume(hub, ws, &session_id, seq).await? {
                Some(s) => {
                    hub.metrics.resumes_ok.inc();
                    *session = Some(s);
                }
                None => {
                    hub.metrics.resumes_failed.inc();
                    sent(send(ws, protocol::invalid_session(false)).await)?;
                }
            }
            Ok(())
        }
        _ if session.is_none() => Err(Close::NotAuthenticated.into()),
        ClientFrame::Presence(presence) => {
            hub.upstream.set_presence(&presence);
            Ok(())
        }
        ClientFrame::RequestMembers { guild_id, request } => {
            let Ok(guild) = guild_id.parse::<u64>() else {
                return Err(Close::DecodeError.into());
            };
            if let Err(e) = hub
                .upstream
                .request_members(guild, &request, direct.clone())
            {
                tracing::debug!(error = %e, "a relay client's member request was not sent");
            }
            Ok(())
        }
    }
}

/// RESUME: what the session missed, then RESUMED; None if it cannot be resumed (unknown,
/// expired, or what it missed left the ring).
async fn resume(
    hub: &Hub,
    ws: &mut Ws,
    session_id: &str,
    seq: u64,
) -> Result<Option<Session>, End> {
    let Some(parked) = hub.unpark(session_id) else {
        return Ok(None);
    };
    if seq + 1 < parked.stream_from {
        return Ok(None);
    }
    let position = seq as i64 - parked.offset;
    let Some(missed) = u64::try_from(position).ok().and_then(|p| hub.after(p)) else {
        return Ok(None);
    };
    let mut s = Session {
        id: session_id.to_owned(),
        seq,
        offset: parked.offset,
        position: position as u64,
        stream_from: parked.stream_from,
    };
    send_released(hub, ws, &mut s, missed).await?;
    sent(send(ws, protocol::dispatch(s.seq, "RESUMED", "{}")).await)?;
    Ok(Some(s))
}

/// Sends what was released after the session's position; a client that fell behind what the
/// ring holds must identify again.
async fn stream(hub: &Hub, ws: &mut Ws, s: &mut Session) -> Result<(), End> {
    match hub.after(s.position) {
        Some(events) => send_released(hub, ws, s, events).await,
        None => Err(End::Close(4000, "fell behind the relay's buffer")),
    }
}

async fn send_released(
    hub: &Hub,
    ws: &mut Ws,
    s: &mut Session,
    events: Vec<Released>,
) -> Result<(), End> {
    if events.is_empty() {
        return Ok(());
    }
    let count = events.len() as u64;
    for event in &events {
        let seq = (event.position as i64 + s.offset) as u64;
        sent(feed(ws, protocol::dispatch(seq, &event.kind, &event.data)).await)?;
        s.seq = seq;
        s.position = event.position;
    }
    sent(ws.flush().await)?;
    let now_ms = gateway_actors::time::now_ms();
    for event in &events {
        hub.metrics
            .lag
            .observe((now_ms - event.received_ms).max(0) as f64 / 1000.0);
    }
    hub.metrics.sent.inc_by(count);
    Ok(())
}

fn check_token(hub: &Hub, presented: &str) -> Result<(), End> {
    let presented = presented.strip_prefix("Bot ").unwrap_or(presented);
    if bool::from(presented.as_bytes().ct_eq(hub.settings.token.as_bytes())) {
        Ok(())
    } else {
        Err(Close::AuthenticationFailed.into())
    }
}

/// At most `limit` admissions per `per`, counted in fixed windows.
struct Window {
    limit: u32,
    per: Duration,
    start: Instant,
    count: u32,
}

impl Window {
    fn new(limit: u32, per: Duration) -> Window {
        Window {
            limit,
            per,
            start: Instant::now(),
            count: 0,
        }
    }

    fn admit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.start) >= self.per {
            self.start = now;
            self.count = 0;
        }
        self.count += 1;
        self.count <= self.limit
    }
}

/// A session id no client can guess from another's.
fn new_session_id() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut a = state.build_hasher();
    a.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u64(a.finish());
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

fn sent(result: Result<(), tokio_tungstenite::tungstenite::Error>) -> Result<(), End> {
    result.map_err(|_| End::Gone)
}

async fn send(ws: &mut Ws, text: String) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.send(Message::Text(text)).await
}

/// Queues a frame without flushing: a batch goes out in one write.
async fn feed(ws: &mut Ws, text: String) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    ws.feed(Message::Text(text)).await
}

async fn close(ws: &mut Ws, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = ws.flush().await;
}
