//! The relay's protocol edges, from a raw WebSocket client against a real pod (real serenity
//! in front of `guild-gateway-dev fake-discord`, all on 127.0.0.1): what a hostile or broken
//! client gets (Discord's close codes), a zombie closed, op 3 passed to the pod's Discord
//! session, and op 7 when the pod stops. The discord.js side (cache, order, resume, rescale)
//! is tested in examples/discordjs-bot.

use guild_gateway_dev::testing::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

const TOKEN: &str = "relay-edge-token";
/// Short, so that a zombie is found within a couple of seconds.
const HEARTBEAT_MS: u64 = 1000;

struct Pod {
    proc: Proc,
    relay: u16,
    fake_port: u16,
    _dir: tempfile::TempDir,
    _fake: Proc,
}

/// A pod with a relay, once its Discord session is ready (the relay knows the bot's user).
fn start_pod() -> Pod {
    let (fake, fake_port) = start_fake_discord(TOKEN, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, relay) = (free_port(), free_port());
    let proc = Proc(
        serving_pod(&dir.path().join("pod.sqlite3"), http, fake_port, TOKEN)
            .env("RELAY_ADDR", format!("127.0.0.1:{relay}"))
            .env("RELAY_HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .spawn()
            .expect("starting serve"),
    );
    let ready = wait_for(Duration::from_secs(60), || {
        let status = get_json(http, "/status")?;
        (status["gateway_ready"] == true).then_some(())
    });
    assert!(ready.is_some(), "the pod's Discord session became ready");
    Pod {
        proc,
        relay,
        fake_port,
        _dir: dir,
        _fake: fake,
    }
}

struct Client(WebSocket<TcpStream>);

impl Client {
    /// Connects with `query` (e.g. `v=10&encoding=json`).
    fn connect(port: u16, query: &str) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the relay");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("read timeout");
        let url = format!("ws://127.0.0.1:{port}/?{query}");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("the WebSocket handshake");
        Client(ws)
    }

    fn send_text(&mut self, text: String) {
        // The relay may close before reading everything: a failed write shows in the close.
        let _ = self.0.send(Message::Text(text));
    }

    fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string());
    }

    /// The next JSON frame; None once the connection closed.
    fn next(&mut self) -> Option<Value> {
        loop {
            match self.0.read() {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("the relay sends JSON"))
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next JSON frame, heartbeating meanwhile as a live client does; None once closed.
    fn next_heartbeating(&mut self) -> Option<Value> {
        let interval = Duration::from_millis(HEARTBEAT_MS / 2);
        self.0
            .get_mut()
            .set_read_timeout(Some(interval))
            .expect("read timeout");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.0.read() {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("the relay sends JSON"))
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    self.send(json!({"op": 1, "d": null}));
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Reads until the relay closes; the close code, if it sent one.
    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.0.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    fn identify(&mut self, token: &str, shard: [u64; 2]) {
        self.send(json!({"op": 2, "d": {
            "token": token, "intents": 513, "shard": shard,
            "properties": {"os": "linux", "browser": "test", "device": "test"},
        }}));
    }

    /// Identifies and reads until READY.
    fn ready(port: u16) -> (Client, Value) {
        let mut client = Client::connect(port, "v=10&encoding=json");
        client.identify(TOKEN, [0, 1]);
        let ready = loop {
            let frame = client.next().expect("READY before the relay closes");
            if frame["t"] == "READY" {
                break frame;
            }
        };
        (client, ready)
    }
}

fn closed_with(port: u16, what: &str, frames: &[String]) -> Option<u16> {
    let mut client = Client::connect(port, "v=10&encoding=json");
    let hello = client.next();
    assert_eq!(
        hello.as_ref().map(|h| &h["op"]),
        Some(&json!(10)),
        "{what}: HELLO first"
    );
    for frame in frames {
        client.send_text(frame.clone());
    }
    client.close_code()
}

#[test]
fn a_broken_or_hostile_client_gets_discords_close_code() {
    require_test_hooks();
    let pod = start_pod();
    let port = pod.relay;
    let identify = |token: &str, shard: [u64; 2]| {
        json!({"op": 2, "d": {"token": token, "intents": 1, "shard": shard,
            "properties": {"os": "linux", "browser": "test", "device": "test"}}})
        .to_string()
    };
    let cases: Vec<(&str, Vec<String>, u16)> = vec![
        ("not JSON", vec!["{op: 1".into()], 4002),
        (
            "an unknown opcode",
            vec![r#"{"op": 99, "d": null}"#.into()],
            4001,
        ),
        (
            "a member request before IDENTIFY",
            vec![json!({"op": 8, "d": {"guild_id": "1", "query": "", "limit": 0}}).to_string()],
            4003,
        ),
        (
            "a wrong token",
            vec![identify("not-the-token", [0, 1])],
            4004,
        ),
        (
            "a shard the relay does not serve",
            vec![identify(TOKEN, [1, 2])],
            4010,
        ),
        (
            "a frame over the size limit",
            vec![format!(r#"{{"op": 1, "d": "{}"}}"#, "x".repeat(64 * 1024))],
            4002,
        ),
        (
            "more than 120 frames a minute",
            (0..130)
                .map(|_| r#"{"op": 1, "d": null}"#.to_owned())
                .collect(),
            4008,
        ),
    ];
    for (what, frames, code) in cases {
        assert_eq!(closed_with(port, what, &frames), Some(code), "{what}");
    }

    // A second IDENTIFY on an identified session.
    let (mut client, ready) = Client::ready(port);
    assert_eq!(ready["d"]["v"], 10, "READY is Discord's v10");
    client.identify(TOKEN, [0, 1]);
    assert_eq!(client.close_code(), Some(4005), "IDENTIFY twice");

    // Another gateway version is refused at once.
    let mut client = Client::connect(port, "v=9&encoding=json");
    assert_eq!(client.close_code(), Some(4012), "v=9");

    // A client that stops heartbeating is a zombie: closed after two intervals.
    let (mut client, _) = Client::ready(port);
    let started = Instant::now();
    assert_eq!(client.close_code(), Some(4009), "no heartbeats");
    assert!(
        started.elapsed() >= Duration::from_millis(HEARTBEAT_MS),
        "closed as a zombie only after missing heartbeats"
    );

    // A client that heartbeats stays, and gets its ACKs.
    let (mut client, _) = Client::ready(port);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(HEARTBEAT_MS / 2));
        client.send(json!({"op": 1, "d": null}));
        let ack = loop {
            let frame = client
                .next()
                .expect("a heartbeating client stays connected");
            if frame["op"] == 11 {
                break frame;
            }
        };
        assert_eq!(ack["op"], 11);
    }
    // The pod still serves: none of the above took it down.
    let (_, ready) = Client::ready(port);
    assert_eq!(ready["t"], "READY");
}

#[test]
fn a_clients_presence_is_the_pods_on_discord() {
    require_test_hooks();
    let pod = start_pod();
    let (mut client, _) = Client::ready(pod.relay);
    client.send(json!({"op": 3, "d": {
        "since": null, "afk": false, "status": "dnd",
        "activities": [{"name": "the mod queue", "type": 3}],
    }}));
    // op 3 goes out on the pod's own Discord session, which the fake records.
    let presence = wait_for(Duration::from_secs(20), || {
        let sessions = get_json(pod.fake_port, "/fake/sessions")?;
        sessions
            .as_array()?
            .iter()
            .find_map(|s| Some(s["presence"].clone()).filter(|p| !p.is_null()))
    })
    .expect("the pod's session sent a presence update");
    assert_eq!(presence["status"], "dnd", "{presence}");
    assert_eq!(
        presence["activities"][0]["name"], "the mod queue",
        "{presence}"
    );
    assert_eq!(presence["activities"][0]["type"], 3, "{presence}");
}

#[test]
fn a_stopping_pod_tells_its_clients_to_reconnect() {
    require_test_hooks();
    let mut pod = start_pod();
    let (mut client, _) = Client::ready(pod.relay);
    sigterm(&pod.proc.0);
    let reconnect = loop {
        // The pod drains first (its sessions close, in-flight events commit and are relayed).
        let frame = client
            .next_heartbeating()
            .expect("op 7 before the relay closes");
        if frame["op"] == 7 {
            break frame;
        }
    };
    assert_eq!(reconnect["d"], Value::Null);
    assert_eq!(client.close_code(), Some(4000), "closed as resumable");
    let status = wait_exit(&mut pod.proc.0, Duration::from_secs(30));
    assert!(status.success(), "the pod drains and exits 0: {status}");
}
