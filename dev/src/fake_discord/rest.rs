//! The REST side of the fake: what serenity asks at start, channels of the stream, and the
//! admin API (`/fake/sessions`, `/fake/identifies`, `/fake/sessions/{id}/drop`,
//! `/fake/sessions/{id}/close/{code}`, `/fake/clock` and its `start`, `pause`, `resume`).

use super::{close, Control, ControlError, Fake, NotLive};
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn serve(fake: Arc<Fake>, mut stream: TcpStream, head: String) {
    // Consume the head we peeked at (requests we answer have no body).
    let mut consumed = vec![0u8; head.len() + 4];
    if stream.read_exact(&mut consumed).await.is_err() {
        return;
    }
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());

    let (status, body) = route(&fake, &method, &path, authorization.as_deref());
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn route(fake: &Fake, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let ws_url = format!("ws://{}", fake.addr);
    if let Some(admin) = path.strip_prefix("/fake/") {
        return admin_route(fake, method, admin);
    }
    let Some(api) = path.strip_prefix("/api/v10/") else {
        return not_found();
    };
    // After the session start limit was exceeded the token is reset: refused until the reset.
    if !authorization.is_some_and(|a| fake.token_ok(a)) || fake.token_reset() {
        return (
            401,
            json!({"message": "401: Unauthorized", "code": 0}).to_string(),
        );
    }
    let bot_id = fake.options.bot_user_id.to_string();
    match (method, api) {
        ("GET", "gateway") => (200, json!({ "url": ws_url }).to_string()),
        ("GET", "gateway/bot") => {
            let limit = fake.session_start_limit();
            (
                200,
                json!({
                    "url": ws_url,
                    "shards": fake.recommended_shards(),
                    "session_start_limit": {
                        "total": limit.total,
                        "remaining": limit.remaining,
                        "reset_after": limit.reset_after_ms,
                        "max_concurrency": limit.max_concurrency,
                    }
                })
                .to_string(),
            )
        }
        ("GET", "users/@me") => (200, bot_user(&bot_id).to_string()),
        ("GET", "oauth2/applications/@me" | "applications/@me") => {
            (200, json!({"id": bot_id, "name": "guild-gateway", "flags": 0, "bot_public": false, "description": ""}).to_string())
        }
        ("GET", other) => match other.strip_prefix("channels/").and_then(|id| id.parse::<u64>().ok()) {
            Some(id) => match fake.recording.channels.get(&id) {
                Some(raw) => (200, raw.get().to_owned()),
                None => (404, json!({"message": "Unknown Channel", "code": 10003}).to_string()),
            },
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn admin_route(fake: &Fake, method: &str, path: &str) -> (u16, String) {
    match (method, path.trim_end_matches('/')) {
        ("GET", "sessions") => (
            200,
            serde_json::to_string(&fake.session_views()).unwrap_or_else(|_| "[]".into()),
        ),
        ("GET", "identifies") => (
            200,
            serde_json::to_string(&fake.identifies_view()).unwrap_or_else(|_| "{}".into()),
        ),
        ("GET", "clock") => (
            200,
            serde_json::to_string(&fake.clock_view()).unwrap_or_else(|_| "{}".into()),
        ),
        ("POST", "clock/start") => clock_answer(fake.clock_start()),
        ("POST", "clock/pause") => clock_answer(fake.clock_pause()),
        ("POST", "clock/resume") => clock_answer(fake.clock_resume()),
        ("POST", other) => {
            let Some(rest) = other.strip_prefix("sessions/") else {
                return not_found();
            };
            if let Some(id) = rest.strip_suffix("/drop") {
                // A session without a connection has nothing to drop: answered as before.
                return match fake.control(id, Control::Drop) {
                    Ok(()) | Err(ControlError::NotConnected) => {
                        (200, json!({"dropped": id}).to_string())
                    }
                    Err(ControlError::UnknownSession) => unknown_session(),
                };
            }
            let Some((id, code)) = rest.split_once("/close/") else {
                return not_found();
            };
            let Some(code) = code.parse::<u16>().ok().filter(|&c| close::sendable(c)) else {
                return (
                    400,
                    json!({"message": "the close code must be 1000-1003, 1007-1014 or 3000-4999"})
                        .to_string(),
                );
            };
            match fake.control(id, Control::Close(code)) {
                Ok(()) => (
                    200,
                    json!({"closed": id, "code": code, "reason": close::reason(code)}).to_string(),
                ),
                Err(ControlError::UnknownSession) => unknown_session(),
                Err(ControlError::NotConnected) => (
                    409,
                    json!({"message": "the session has no connection to close"}).to_string(),
                ),
            }
        }
        _ => not_found(),
    }
}

fn clock_answer(result: Result<(), NotLive>) -> (u16, String) {
    match result {
        Ok(()) => (204, String::new()),
        Err(NotLive) => (
            409,
            json!({"message": "the fake is not in live mode (no live_rate)"}).to_string(),
        ),
    }
}

fn unknown_session() -> (u16, String) {
    (404, json!({"message": "Unknown Session"}).to_string())
}

fn not_found() -> (u16, String) {
    (
        404,
        json!({"message": "404: Not Found", "code": 0}).to_string(),
    )
}

pub fn bot_user(id: &str) -> serde_json::Value {
    json!({
        "id": id, "username": "guild-gateway", "discriminator": "0000", "global_name": null,
        "avatar": null, "bot": true, "verified": true, "mfa_enabled": false, "flags": 0
    })
}
