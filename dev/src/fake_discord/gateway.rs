//! The gateway side of the fake: Hello, Identify (judged by the rules in the module docs),
//! READY, heartbeats, Resume, and each session's dispatches (in live mode, each when the
//! clock has passed it), with Discord's close codes for clients that misbehave.

use super::clock::Due;
use super::server::new_session_id;
use super::{close, rest::bot_user, Control, Fake, Refusal, Session};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// Where this connection is in a session.
struct Attached {
    index: usize,
    /// Position in the session's frames of the next dispatch to send.
    next: usize,
    /// Whether this is the session's first connection (the one `drop_at_seq` drops).
    first: bool,
    control: Arc<Notify>,
}

/// How a connection ends: a close frame with this code and reason, or none.
type Ending = Option<(u16, Cow<'static, str>)>;

pub async fn serve(fake: Arc<Fake>, stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": fake.options.heartbeat_interval.as_millis() as u64}});
    if ws.send(Message::Text(hello.to_string())).await.is_err() {
        return;
    }
    let mut attached: Option<Attached> = None;
    let ending = run(&fake, &mut ws, &mut attached).await;
    if let Some(a) = attached {
        let mut sessions = fake.sessions();
        let session = &mut sessions[a.index];
        session.connected = false;
        session.pending = None;
    }
    // Leaving without a close frame is what a network failure looks like to the client.
    if let Some((code, reason)) = ending {
        close_with(&mut ws, code, reason).await;
    }
}

/// The connection's loop: whatever comes first of a client frame, an admin request, a clock
/// change, or the next dispatch being due.
async fn run(fake: &Arc<Fake>, ws: &mut Ws, attached: &mut Option<Attached>) -> Ending {
    let live = fake.live();
    // In live mode the clock sets the pace.
    let mut pace = fake
        .options
        .rate
        .filter(|_| !live)
        .map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.max(1)))));
    let never = Arc::new(Notify::new());
    let mut clock_moved = fake.clock_moved.subscribe();
    loop {
        // Marked seen before the clock is read below, so that a start, pause or resume from
        // here on wakes the select.
        clock_moved.borrow_and_update();
        let (next_frame, pending) = next_of_session(fake, attached.as_ref());
        if let Some(control) = pending {
            return obey(control);
        }
        // Outside live mode every frame is due at once; in live mode a frame not yet
        // happened is waited for until its due time, or (clock stopped) for a resume.
        let (sending, due) = match next_frame.map(|index| fake.due(index)) {
            Some(Due::Now) => (true, None),
            Some(Due::At(at)) => (false, Some(at)),
            Some(Due::Waiting) | None => (false, None),
        };
        let control = attached
            .as_ref()
            .map_or(never.clone(), |a| a.control.clone());
        tokio::select! {
            biased;
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => return Some((close::DECODE_ERROR, "binary frames are not supported".into())),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => continue,
                };
                if let Err((code, reason)) = handle_client_frame(fake, ws, attached, &text).await {
                    return Some((code, reason.into()));
                }
            }
            // The request is in the session's `pending`, read at the top of the loop.
            _ = control.notified() => {}
            // The clock was started, paused or resumed: due times change.
            _ = clock_moved.changed(), if live => {}
            _ = sleep_until(due) => {}
            _ = tick(&mut pace), if sending => {
                let Some(a) = attached.as_mut() else { continue };
                if let Sent::Stop = send_next_dispatch(fake, ws, a).await {
                    return None;
                }
            }
        }
    }
}

/// The session's next frame (a recording index) and the admin request waiting for this
/// connection, taken so that it is obeyed once.
fn next_of_session(fake: &Fake, attached: Option<&Attached>) -> (Option<usize>, Option<Control>) {
    let Some(a) = attached else {
        return (None, None);
    };
    let mut sessions = fake.sessions();
    let session = &mut sessions[a.index];
    (session.frames.get(a.next).copied(), session.pending.take())
}

/// How the connection ends on an admin request.
fn obey(control: Control) -> Ending {
    match control {
        Control::Drop => {
            tracing::info!("dropping a session's connection on request");
            None
        }
        Control::Close(code) => {
            tracing::info!(code, "closing a session's connection on request");
            Some((code, close::reason(code).into()))
        }
    }
}

/// Whether the connection goes on after a dispatch.
enum Sent {
    Continue,
    /// The client is gone, or `drop_at_seq` drops the connection now.
    Stop,
}

/// Sends the session's next dispatch and records it as sent.
async fn send_next_dispatch(fake: &Fake, ws: &mut Ws, a: &mut Attached) -> Sent {
    let (text, seq, drop_now) = {
        let sessions = fake.sessions();
        let session = &sessions[a.index];
        let seq = a.next as u64 + 2;
        let text = dispatch_text(fake, session.frames[a.next], seq);
        let drop_now = a.first && fake.options.drop_at_seq == Some(seq);
        (text, seq, drop_now)
    };
    if ws.send(Message::Text(text)).await.is_err() {
        return Sent::Stop;
    }
    a.next += 1;
    {
        let mut sessions = fake.sessions();
        let session = &mut sessions[a.index];
        session.last_seq_sent = session.last_seq_sent.max(seq);
    }
    if drop_now {
        tracing::info!(
            seq,
            "dropping the session's first connection (--drop-at-seq)"
        );
        return Sent::Stop;
    }
    Sent::Continue
}

/// Op 0 for recording frame `index` with sequence number `seq`.
fn dispatch_text(fake: &Fake, index: usize, seq: u64) -> String {
    let frame = &fake.recording.frames[index];
    format!(
        r#"{{"op":0,"t":"{}","s":{seq},"d":{}}}"#,
        frame.name,
        frame.data.get()
    )
}

/// Sleeps until `due`; never returns when None.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn tick(pace: &mut Option<tokio::time::Interval>) {
    if let Some(interval) = pace {
        interval.tick().await;
    }
}

async fn close_with(ws: &mut Ws, code: u16, reason: Cow<'static, str>) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason,
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = ws.flush().await;
}

/// A close code and reason for a client that broke the protocol or the rules.
type Refused = (u16, &'static str);

async fn handle_client_frame(
    fake: &Arc<Fake>,
    ws: &mut Ws,
    attached: &mut Option<Attached>,
    text: &str,
) -> Result<(), Refused> {
    let payload: Value =
        serde_json::from_str(text).map_err(|_| (close::DECODE_ERROR, "invalid JSON"))?;
    let op = payload
        .get("op")
        .and_then(Value::as_u64)
        .ok_or((close::DECODE_ERROR, "missing op"))?;
    let d = payload.get("d").cloned().unwrap_or(Value::Null);
    match op {
        1 => {
            let ack = json!({"op": 11, "s": null, "t": null, "d": null});
            send_text(ws, ack.to_string()).await?;
        }
        2 | 6 if attached.is_some() => {
            return Err((close::ALREADY_AUTHENTICATED, "already authenticated"))
        }
        2 => identify(fake, ws, attached, &d).await?,
        6 => resume(fake, ws, attached, &d).await?,
        8 if attached.is_some() => members_chunk(fake, ws, attached, &d).await?,
        3 => {
            if let Some(a) = attached.as_ref() {
                fake.sessions()[a.index].presence = Some(d);
            } else {
                return Err((close::NOT_AUTHENTICATED, "Not authenticated."));
            }
        }
        4 | 31 if attached.is_some() => {} // voice: accepted, ignored
        _ if attached.is_none() => return Err((close::NOT_AUTHENTICATED, "Not authenticated.")),
        _ => return Err((close::UNKNOWN_OPCODE, "Unknown opcode.")),
    }
    Ok(())
}

async fn send_text(ws: &mut Ws, text: String) -> Result<(), Refused> {
    ws.send(Message::Text(text))
        .await
        .map_err(|_| (close::DECODE_ERROR, "send failed"))
}

/// Op 2: checks the token, intents and shard, has the rules judge it, then READY.
async fn identify(
    fake: &Arc<Fake>,
    ws: &mut Ws,
    attached: &mut Option<Attached>,
    d: &Value,
) -> Result<(), Refused> {
    let token = d.get("token").and_then(Value::as_str).unwrap_or_default();
    if !fake.token_ok(token) {
        return Err((close::AUTHENTICATION_FAILED, "Authentication failed."));
    }
    let intents = d.get("intents").and_then(Value::as_u64).unwrap_or(0);
    if intents & !fake.options.allowed_intents != 0 {
        return Err((close::DISALLOWED_INTENTS, "Disallowed intent(s)."));
    }
    let shard_sent = shard_of_identify(d)?;
    let shard = shard_sent.unwrap_or([0, 1]);
    let frames = fake.recording.frames_for(shard);
    let guilds = unavailable_guilds(fake, &frames);
    let id = new_session_id();
    let control = Arc::new(Notify::new());
    let session = Session {
        id: id.clone(),
        shard,
        shard_sent,
        identified_at_ms: Vec::new(),
        frames,
        last_seq_sent: 1,
        connected: true,
        connections: 1,
        open: true,
        control: control.clone(),
        pending: None,
        presence: None,
    };
    let index = match fake.admit(session) {
        Ok(index) => index,
        Err(Refusal::RateLimited) => {
            tracing::info!(?shard, "identify rate limit: invalid session");
            return send_invalid_session(ws).await;
        }
        Err(Refusal::ShardingRequired) => {
            tracing::info!(?shard, "sharding required");
            return Err((
                close::SHARDING_REQUIRED,
                close::reason(close::SHARDING_REQUIRED),
            ));
        }
        Err(refusal @ (Refusal::SessionStartLimit | Refusal::TokenReset)) => {
            tracing::info!(?shard, ?refusal, "session start limit: the token is reset");
            return Err((close::AUTHENTICATION_FAILED, "Authentication failed."));
        }
    };
    send_text(ws, ready_payload(fake, &id, shard, guilds).to_string()).await?;
    tracing::info!(session = %id, ?shard, "identified");
    *attached = Some(Attached {
        index,
        next: 0,
        first: true,
        control,
    });
    Ok(())
}

/// The Identify's `shard`: None when it sent none; an impossible one is closed with 4010.
fn shard_of_identify(d: &Value) -> Result<Option<[u32; 2]>, Refused> {
    match d.get("shard") {
        None | Some(Value::Null) => Ok(None),
        Some(s) => match serde_json::from_value::<[u32; 2]>(s.clone()).ok() {
            Some([id, total]) if total > 0 && id < total => Ok(Some([id, total])),
            _ => Err((close::INVALID_SHARD, "Invalid shard.")),
        },
    }
}

/// READY lists the shard's guilds as unavailable; GUILD_CREATE fills them in, as Discord does.
fn unavailable_guilds(fake: &Fake, frames: &[usize]) -> Vec<Value> {
    frames
        .iter()
        .filter(|&&i| fake.recording.frames[i].name == "GUILD_CREATE")
        .filter_map(|&i| fake.recording.frames[i].guild_id)
        .map(|g| json!({"id": g.to_string(), "unavailable": true}))
        .collect()
}

fn ready_payload(fake: &Fake, id: &str, shard: [u32; 2], guilds: Vec<Value>) -> Value {
    let bot_id = fake.options.bot_user_id.to_string();
    json!({"op": 0, "s": 1, "t": "READY", "d": {
        "v": 10,
        "user": bot_user(&bot_id),
        "guilds": guilds,
        "session_id": id,
        "resume_gateway_url": format!("ws://{}", fake.addr),
        "shard": shard,
        "application": {"id": bot_id, "flags": 0},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "user_settings": {},
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": [],
    }})
}

/// Op 6: reattaches an open session, replays what the client missed, then RESUMED.
async fn resume(
    fake: &Arc<Fake>,
    ws: &mut Ws,
    attached: &mut Option<Attached>,
    d: &Value,
) -> Result<(), Refused> {
    let token = d.get("token").and_then(Value::as_str).unwrap_or_default();
    if !fake.token_ok(token) || fake.token_reset() {
        return Err((close::AUTHENTICATION_FAILED, "Authentication failed."));
    }
    let session_id = d
        .get("session_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let seq = d.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let Some((index, control, last_sent)) = reattach(fake, session_id) else {
        return send_invalid_session(ws).await;
    };
    let next = replay_missed(fake, ws, index, seq, last_sent).await?;
    // RESUMED carries the last seq, so the client's count stays exact.
    let resumed = json!({"op": 0, "s": last_sent.max(seq), "t": "RESUMED", "d": {}});
    send_text(ws, resumed.to_string()).await?;
    tracing::info!(session = %session_id, from_seq = seq, "resumed");
    *attached = Some(Attached {
        index,
        next,
        first: false,
        control,
    });
    Ok(())
}

/// Marks the open session `id` connected again: its index, control and last seq sent.
fn reattach(fake: &Fake, id: &str) -> Option<(usize, Arc<Notify>, u64)> {
    let mut sessions = fake.sessions();
    sessions
        .iter_mut()
        .enumerate()
        .find(|(_, s)| s.id == id && s.open)
        .map(|(index, s)| {
            s.connected = true;
            s.connections += 1;
            s.pending = None;
            (index, s.control.clone(), s.last_seq_sent)
        })
}

/// Sends what the client missed (seqs after `seq`) up to what had been sent; returns the
/// position in the session's frames to go on from.
async fn replay_missed(
    fake: &Fake,
    ws: &mut Ws,
    index: usize,
    seq: u64,
    last_sent: u64,
) -> Result<usize, Refused> {
    let mut next = seq.saturating_sub(1) as usize;
    let frames_len = fake.sessions()[index].frames.len();
    while next < frames_len && (next as u64 + 2) <= last_sent {
        let frame = fake.sessions()[index].frames[next];
        send_text(ws, dispatch_text(fake, frame, next as u64 + 2)).await?;
        next += 1;
    }
    Ok(next)
}

/// Op 9 Invalid Session, not resumable: the client must identify (again).
async fn send_invalid_session(ws: &mut Ws) -> Result<(), Refused> {
    let invalid = json!({"op": 9, "s": null, "t": null, "d": false});
    send_text(ws, invalid.to_string()).await
}

/// Op 8: one GUILD_MEMBERS_CHUNK with the members the recording's GUILD_CREATE of the guild
/// lists, filtered by `user_ids` or a username prefix `query`, at most `limit` (0: all), with
/// the request's nonce. Its seq repeats the last one sent, so the session's count stays exact.
async fn members_chunk(
    fake: &Fake,
    ws: &mut Ws,
    attached: &Option<Attached>,
    d: &Value,
) -> Result<(), Refused> {
    let Some(a) = attached else { return Ok(()) };
    let guild = d
        .get("guild_id")
        .and_then(Value::as_str)
        .and_then(|g| g.parse::<u64>().ok())
        .ok_or((close::DECODE_ERROR, "guild_id"))?;
    let wanted: Option<Vec<&str>> = d
        .get("user_ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect());
    let query = d.get("query").and_then(Value::as_str).unwrap_or("");
    let limit = d.get("limit").and_then(Value::as_u64).unwrap_or(0);
    let mut members: Vec<Value> = fake
        .recording
        .frames
        .iter()
        .filter(|f| f.name == "GUILD_CREATE" && f.guild_id == Some(guild))
        .filter_map(|f| serde_json::from_str::<Value>(f.data.get()).ok())
        .filter_map(|g| g.get("members").and_then(Value::as_array).cloned())
        .next_back()
        .unwrap_or_default();
    members.retain(|m| {
        let id = m.pointer("/user/id").and_then(Value::as_str).unwrap_or("");
        let name = m
            .pointer("/user/username")
            .and_then(Value::as_str)
            .unwrap_or("");
        match &wanted {
            Some(ids) => ids.contains(&id),
            None => name.starts_with(query),
        }
    });
    if limit > 0 {
        members.truncate(limit as usize);
    }
    let seq = fake.sessions()[a.index].last_seq_sent;
    let mut chunk = json!({"guild_id": guild.to_string(), "members": members, "chunk_index": 0, "chunk_count": 1});
    if let Some(nonce) = d.get("nonce") {
        chunk["nonce"] = nonce.clone();
    }
    let frame = json!({"op": 0, "t": "GUILD_MEMBERS_CHUNK", "s": seq, "d": chunk});
    send_text(ws, frame.to_string()).await
}
