//! The gateway side of the fake: Hello, Identify, READY, heartbeats, Resume, and each
//! session's dispatches, with Discord's close codes for clients that misbehave.

use super::{new_session_id, rest::bot_user, Fake, Session};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Discord's gateway close codes used here.
mod close {
    pub const UNKNOWN_OPCODE: u16 = 4001;
    pub const DECODE_ERROR: u16 = 4002;
    pub const NOT_AUTHENTICATED: u16 = 4003;
    pub const AUTHENTICATION_FAILED: u16 = 4004;
    pub const ALREADY_AUTHENTICATED: u16 = 4005;
    pub const INVALID_SHARD: u16 = 4010;
    pub const DISALLOWED_INTENTS: u16 = 4014;
}

type Ws = WebSocketStream<TcpStream>;

/// Where this connection is in a session.
struct Attached {
    index: usize,
    /// Position in the session's frames of the next dispatch to send.
    next: usize,
    /// Whether this is the session's first connection (the one `drop_at_seq` drops).
    first: bool,
    drop_requested: Arc<Notify>,
}

pub async fn serve(fake: Arc<Fake>, stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": fake.options.heartbeat_interval.as_millis() as u64}});
    if ws.send(Message::Text(hello.to_string())).await.is_err() {
        return;
    }
    let mut attached: Option<Attached> = None;
    let mut pace = fake
        .options
        .rate
        .map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.max(1)))));
    let never = Arc::new(Notify::new());
    loop {
        let sending = attached
            .as_ref()
            .is_some_and(|a| a.next < fake.sessions()[a.index].frames.len());
        let drop_requested = attached
            .as_ref()
            .map_or(never.clone(), |a| a.drop_requested.clone());
        tokio::select! {
            biased;
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => return close_with(&mut ws, close::DECODE_ERROR, "binary frames are not supported").await,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                match handle_client_frame(&fake, &mut ws, &mut attached, &text).await {
                    Ok(()) => {}
                    Err((code, reason)) => return close_with(&mut ws, code, reason).await,
                }
            }
            _ = drop_requested.notified() => {
                tracing::info!("dropping a session's connection on request");
                break;
            }
            _ = tick(&mut pace), if sending => {
                let Some(a) = attached.as_mut() else { continue };
                let (text, seq, drop_now) = {
                    let mut sessions = fake.sessions();
                    let session = &mut sessions[a.index];
                    let frame = &fake.recording.frames[session.frames[a.next]];
                    let seq = a.next as u64 + 2;
                    let text = format!(r#"{{"op":0,"t":"{}","s":{seq},"d":{}}}"#, frame.name, frame.data.get());
                    let drop_now = a.first && fake.options.drop_at_seq == Some(seq);
                    (text, seq, drop_now)
                };
                if ws.send(Message::Text(text)).await.is_err() {
                    break;
                }
                a.next += 1;
                {
                    let mut sessions = fake.sessions();
                    let session = &mut sessions[a.index];
                    session.last_seq_sent = session.last_seq_sent.max(seq);
                }
                if drop_now {
                    tracing::info!(seq, "dropping the session's first connection (--drop-at-seq)");
                    break;
                }
            }
        }
    }
    // Leaving without a close frame is what a network failure looks like to the client.
    if let Some(a) = attached {
        fake.sessions()[a.index].connected = false;
    }
}

async fn tick(pace: &mut Option<tokio::time::Interval>) {
    if let Some(interval) = pace {
        interval.tick().await;
    }
}

async fn close_with(ws: &mut Ws, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = ws.flush().await;
}

async fn handle_client_frame(
    fake: &Arc<Fake>,
    ws: &mut Ws,
    attached: &mut Option<Attached>,
    text: &str,
) -> Result<(), (u16, &'static str)> {
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
            ws.send(Message::Text(ack.to_string()))
                .await
                .map_err(|_| (close::DECODE_ERROR, "send failed"))?;
        }
        2 => {
            if attached.is_some() {
                return Err((close::ALREADY_AUTHENTICATED, "already authenticated"));
            }
            let token = d.get("token").and_then(Value::as_str).unwrap_or_default();
            if !fake.token_ok(token) {
                return Err((close::AUTHENTICATION_FAILED, "Authentication failed."));
            }
            let intents = d.get("intents").and_then(Value::as_u64).unwrap_or(0);
            if intents & !fake.options.allowed_intents != 0 {
                return Err((close::DISALLOWED_INTENTS, "Disallowed intent(s)."));
            }
            let shard = match d.get("shard") {
                None | Some(Value::Null) => [0, 1],
                Some(s) => {
                    let parsed: Option<[u32; 2]> = serde_json::from_value(s.clone()).ok();
                    match parsed {
                        Some([id, total]) if total > 0 && id < total => [id, total],
                        _ => return Err((close::INVALID_SHARD, "Invalid shard.")),
                    }
                }
            };
            let frames = fake.recording.frames_for(shard);
            let id = new_session_id();
            let guilds: Vec<Value> = frames
                .iter()
                .filter(|&&i| fake.recording.frames[i].name == "GUILD_CREATE")
                .filter_map(|&i| fake.recording.frames[i].guild_id)
                .map(|g| json!({"id": g.to_string(), "unavailable": true}))
                .collect();
            let drop_requested = Arc::new(Notify::new());
            let index = {
                let mut sessions = fake.sessions();
                sessions.push(Session {
                    id: id.clone(),
                    shard,
                    frames,
                    last_seq_sent: 1,
                    connected: true,
                    connections: 1,
                    drop_requested: drop_requested.clone(),
                });
                sessions.len() - 1
            };
            let bot_id = fake.options.bot_user_id.to_string();
            let ready = json!({"op": 0, "s": 1, "t": "READY", "d": {
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
            }});
            ws.send(Message::Text(ready.to_string()))
                .await
                .map_err(|_| (close::DECODE_ERROR, "send failed"))?;
            tracing::info!(session = %id, ?shard, "identified");
            *attached = Some(Attached {
                index,
                next: 0,
                first: true,
                drop_requested,
            });
        }
        6 => {
            if attached.is_some() {
                return Err((close::ALREADY_AUTHENTICATED, "already authenticated"));
            }
            let token = d.get("token").and_then(Value::as_str).unwrap_or_default();
            if !fake.token_ok(token) {
                return Err((close::AUTHENTICATION_FAILED, "Authentication failed."));
            }
            let session_id = d
                .get("session_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let seq = d.get("seq").and_then(Value::as_u64).unwrap_or(0);
            let found = {
                let mut sessions = fake.sessions();
                sessions
                    .iter_mut()
                    .enumerate()
                    .find(|(_, s)| s.id == session_id)
                    .map(|(index, s)| {
                        s.connected = true;
                        s.connections += 1;
                        (index, s.drop_requested.clone(), s.last_seq_sent)
                    })
            };
            let Some((index, drop_requested, last_sent)) = found else {
                let invalid = json!({"op": 9, "s": null, "t": null, "d": false});
                ws.send(Message::Text(invalid.to_string()))
                    .await
                    .map_err(|_| (close::DECODE_ERROR, "send failed"))?;
                return Ok(());
            };
            // Replay what the client missed (seq after its last) up to what had been sent,
            // then RESUMED (carrying the last seq, so the client's count stays exact), then go on.
            let mut next = seq.saturating_sub(1) as usize;
            let frames_len = fake.sessions()[index].frames.len();
            while next < frames_len && (next as u64 + 2) <= last_sent {
                let text = {
                    let sessions = fake.sessions();
                    let frame = &fake.recording.frames[sessions[index].frames[next]];
                    format!(
                        r#"{{"op":0,"t":"{}","s":{},"d":{}}}"#,
                        frame.name,
                        next + 2,
                        frame.data.get()
                    )
                };
                ws.send(Message::Text(text))
                    .await
                    .map_err(|_| (close::DECODE_ERROR, "send failed"))?;
                next += 1;
            }
            let resumed = json!({"op": 0, "s": last_sent.max(seq), "t": "RESUMED", "d": {}});
            ws.send(Message::Text(resumed.to_string()))
                .await
                .map_err(|_| (close::DECODE_ERROR, "send failed"))?;
            tracing::info!(session = %session_id, from_seq = seq, "resumed");
            *attached = Some(Attached {
                index,
                next,
                first: false,
                drop_requested,
            });
        }
        3 | 4 | 8 | 31 if attached.is_some() => {} // presence, voice, member requests: accepted, ignored
        _ if attached.is_none() => return Err((close::NOT_AUTHENTICATED, "Not authenticated.")),
        _ => return Err((close::UNKNOWN_OPCODE, "Unknown opcode.")),
    }
    Ok(())
}
