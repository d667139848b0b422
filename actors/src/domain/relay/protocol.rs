//! Discord's gateway protocol (v10, JSON) as the relay speaks it to its clients: the frames it
//! sends, what a client's frame asks, and Discord's close codes for what it refuses.
//!
//! A dispatch's `d` is relayed as the text the pod already holds: the frame around it is
//! written, never re-parsed, so one event's JSON is shared by every client.

use serde_json::{json, Value};
use std::fmt::Write as _;

/// Discord's close codes the relay uses (discord-api-docs, "Gateway Close Event Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    UnknownOpcode = 4001,
    DecodeError = 4002,
    NotAuthenticated = 4003,
    AuthenticationFailed = 4004,
    AlreadyAuthenticated = 4005,
    RateLimited = 4008,
    SessionTimedOut = 4009,
    InvalidShard = 4010,
    InvalidApiVersion = 4012,
}

impl Close {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn reason(self) -> &'static str {
        match self {
            Close::UnknownOpcode => "Unknown opcode.",
            Close::DecodeError => "Error while decoding payload.",
            Close::NotAuthenticated => "Not authenticated.",
            Close::AuthenticationFailed => "Authentication failed.",
            Close::AlreadyAuthenticated => "Already authenticated.",
            Close::RateLimited => "You are being rate limited.",
            Close::SessionTimedOut => "Session timed out.",
            Close::InvalidShard => "Invalid shard.",
            Close::InvalidApiVersion => "Invalid API version.",
        }
    }
}

/// What a client's frame asks of the relay.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// op 1, with the last sequence the client saw.
    Heartbeat(Option<u64>),
    /// op 2.
    Identify {
        token: String,
        /// `[id, count]`; the relay serves one shard, `[0, 1]`.
        shard: Option<(u64, u64)>,
        intents: u64,
        /// The client's presence, applied to the pod's sessions.
        presence: Option<Value>,
    },
    /// op 3.
    Presence(Value),
    /// op 6.
    Resume {
        token: String,
        session_id: String,
        seq: u64,
    },
    /// op 8: sent on to the Discord session that carries the guild.
    RequestMembers { guild_id: String, request: Value },
}

/// Reads a client's text frame; the close code for one that is not a frame the relay takes.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, Close> {
    let frame: Value = serde_json::from_str(text).map_err(|_| Close::DecodeError)?;
    let op = frame
        .get("op")
        .and_then(Value::as_u64)
        .ok_or(Close::DecodeError)?;
    let d = frame.get("d").cloned().unwrap_or(Value::Null);
    let text_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    match op {
        1 => Ok(ClientFrame::Heartbeat(d.as_u64())),
        2 => {
            let token = text_of(&d, "token").ok_or(Close::DecodeError)?;
            let shard = match d.get("shard") {
                None | Some(Value::Null) => None,
                Some(Value::Array(pair)) if pair.len() == 2 => Some((
                    pair[0].as_u64().ok_or(Close::DecodeError)?,
                    pair[1].as_u64().ok_or(Close::DecodeError)?,
                )),
                Some(_) => return Err(Close::DecodeError),
            };
            Ok(ClientFrame::Identify {
                token,
                shard,
                intents: d.get("intents").and_then(Value::as_u64).unwrap_or(0),
                presence: d.get("presence").filter(|p| !p.is_null()).cloned(),
            })
        }
        3 => Ok(ClientFrame::Presence(d)),
        6 => Ok(ClientFrame::Resume {
            token: text_of(&d, "token").ok_or(Close::DecodeError)?,
            session_id: text_of(&d, "session_id").ok_or(Close::DecodeError)?,
            seq: d.get("seq").and_then(Value::as_u64).unwrap_or(0),
        }),
        8 => Ok(ClientFrame::RequestMembers {
            guild_id: text_of(&d, "guild_id").ok_or(Close::DecodeError)?,
            request: d,
        }),
        _ => Err(Close::UnknownOpcode),
    }
}

/// op 10.
pub fn hello(heartbeat_interval_ms: u64) -> String {
    json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": heartbeat_interval_ms}})
        .to_string()
}

/// op 11.
pub fn heartbeat_ack() -> String {
    r#"{"op":11,"s":null,"t":null,"d":null}"#.to_owned()
}

/// op 9: the session cannot be resumed (`false`: identify again).
pub fn invalid_session(resumable: bool) -> String {
    format!(r#"{{"op":9,"s":null,"t":null,"d":{resumable}}}"#)
}

/// op 7: reconnect and resume (sent before the relay shuts down).
pub fn reconnect() -> String {
    r#"{"op":7,"s":null,"t":null,"d":null}"#.to_owned()
}

/// op 0: the dispatch `kind` with `data` (JSON text) at the client's sequence `seq`.
pub fn dispatch(seq: u64, kind: &str, data: &str) -> String {
    let mut frame = String::with_capacity(data.len() + kind.len() + 32);
    let _ = write!(frame, r#"{{"op":0,"s":{seq},"t":"{kind}","d":{data}}}"#);
    frame
}

/// READY's `d`: the bot's user and application as Discord gave them to the pod, the relay's
/// own session, and every guild it serves listed unavailable (their GUILD_CREATEs follow; a
/// guild left out would later arrive as a join, and the bot would welcome it).
pub fn ready(
    session_id: &str,
    resume_gateway_url: &str,
    user: &Value,
    application: &Value,
    guild_ids: impl IntoIterator<Item = String>,
) -> String {
    let guilds: Vec<Value> = guild_ids
        .into_iter()
        .map(|id| json!({"id": id, "unavailable": true}))
        .collect();
    json!({
        "v": 10,
        "user": user,
        "application": application,
        "guilds": guilds,
        "session_id": session_id,
        "resume_gateway_url": resume_gateway_url,
        "shard": [0, 1],
        "private_channels": [],
        "relationships": [],
        "user_settings": {},
        "guild_join_requests": [],
        "presences": [],
        "geo_ordered_rtc_regions": [],
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discord_js_identify_and_resume_are_read() {
        let identify = r#"{"op":2,"d":{"token":"Bot-token","properties":{"os":"linux"},"intents":513,"compress":false,"shard":[0,1],"large_threshold":50}}"#;
        assert_eq!(
            parse_client_frame(identify),
            Ok(ClientFrame::Identify {
                token: "Bot-token".into(),
                shard: Some((0, 1)),
                intents: 513,
                presence: None,
            })
        );
        let resume = r#"{"op":6,"d":{"token":"t","session_id":"s","seq":41}}"#;
        assert_eq!(
            parse_client_frame(resume),
            Ok(ClientFrame::Resume {
                token: "t".into(),
                session_id: "s".into(),
                seq: 41
            })
        );
        assert_eq!(
            parse_client_frame(r#"{"op":1,"d":7}"#),
            Ok(ClientFrame::Heartbeat(Some(7)))
        );
        assert_eq!(
            parse_client_frame(r#"{"op":1,"d":null}"#),
            Ok(ClientFrame::Heartbeat(None))
        );
    }

    #[test]
    fn what_is_not_a_frame_gets_discords_close_code() {
        assert_eq!(parse_client_frame("not json"), Err(Close::DecodeError));
        assert_eq!(parse_client_frame(r#"{"d":1}"#), Err(Close::DecodeError));
        assert_eq!(
            parse_client_frame(r#"{"op":4,"d":{}}"#),
            Err(Close::UnknownOpcode)
        );
        assert_eq!(
            parse_client_frame(r#"{"op":2,"d":{"intents":1}}"#),
            Err(Close::DecodeError)
        );
        assert_eq!(Close::AuthenticationFailed.code(), 4004);
    }

    #[test]
    fn a_dispatch_frame_wraps_the_shared_text_unchanged() {
        let frame = dispatch(12, "MESSAGE_CREATE", r#"{"id":"1","content":"é"}"#);
        let parsed: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(parsed["op"], 0);
        assert_eq!(parsed["s"], 12);
        assert_eq!(parsed["t"], "MESSAGE_CREATE");
        assert_eq!(parsed["d"]["content"], "é");
        let ready: Value = serde_json::from_str(&ready(
            "abc",
            "ws://gateway-0.gateway:3001",
            &json!({"id": "9", "username": "bot", "bot": true}),
            &json!({"id": "9", "flags": 0}),
            ["1".to_string(), "2".to_string()],
        ))
        .unwrap();
        assert_eq!(
            ready["guilds"],
            json!([{"id": "1", "unavailable": true}, {"id": "2", "unavailable": true}])
        );
        assert_eq!(ready["resume_gateway_url"], "ws://gateway-0.gateway:3001");
        for frame in [
            hello(41250),
            heartbeat_ack(),
            invalid_session(false),
            reconnect(),
        ] {
            serde_json::from_str::<Value>(&frame).unwrap();
        }
    }
}
