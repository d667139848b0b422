//! `guild-gateway-dev fake-discord` as clients see it: Discord's close codes and REST errors,
//! and a start that does not depend on the pods' settings.

use guild_gateway_dev::testing::*;
use std::time::Duration;

const TOKEN: &str = "live-test-token";

/// The fake answers misbehaving clients with Discord's close codes.
#[tokio::test(flavor = "current_thread")]
async fn fake_discord_closes_bad_clients_with_discords_codes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (_fake, port) = start_fake_discord(TOKEN, &[]);
    let url = format!("ws://127.0.0.1:{port}/?v=10&encoding=json");
    let cases: [(&str, u16); 5] = [
        ("not json", 4002),
        (r#"{"op":3,"d":{}}"#, 4003),
        (r#"{"op":2,"d":{"token":"wrong","intents":1}}"#, 4004),
        (
            r#"{"op":2,"d":{"token":"live-test-token","intents":1,"shard":[3,3]}}"#,
            4010,
        ),
        (r#"{"op":99,"d":null}"#, 4003),
    ];
    for (frame, code) in cases {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connects");
        let hello = ws.next().await.expect("hello").expect("a frame");
        assert!(hello.to_text().unwrap().contains(r#""op":10"#), "{hello:?}");
        ws.send(Message::Text(frame.into())).await.unwrap();
        let closed = tokio::time::timeout(HANG_GUARD, async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Close(Some(close)) = msg {
                    return Some(u16::from(close.code));
                }
            }
            None
        })
        .await
        .expect("closed in time");
        assert_eq!(closed, Some(code), "{frame}");
    }
    // Heartbeats are answered, and a wrong token on REST is a 401.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Message::Text(r#"{"op":1,"d":null}"#.into()))
        .await
        .unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains(r#""op":11"#));
    let response = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET /api/v10/gateway HTTP/1.0\r\nAuthorization: Bot wrong\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    };
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
}

/// The fake is started beside pods whose settings are under test; it must not read them.
#[test]
fn fake_discord_starts_whatever_the_pod_variables_say() {
    let port = free_port();
    let mut fake = Proc(
        dev()
            .args([
                "fake-discord",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--events",
            ])
            .arg(sample_stream())
            .env("NUM_GATEWAY_PODS", "zero")
            .env("POD_ORDINAL", "-1")
            .env("SHARD_STRATEGY", "round-robin")
            .env("DATABASE_URL", "/nonexistent/dir/x.sqlite3")
            .env("HTTP_ADDR", "not an address")
            .env("MAX_IN_FLIGHT", "lots")
            .env("LOG_FORMAT", "yaml")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let answered = wait_for(HANG_GUARD, || {
        http_get(port, "/fake/sessions")
            .ok()
            .filter(|(c, _)| *c == 200)
    });
    assert!(
        answered.is_some(),
        "fake-discord did not answer; exit: {:?}",
        fake.0.try_wait()
    );
    sigterm(&fake.0);
    let status = wait_exit(&mut fake.0, HANG_GUARD);
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(fake.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("LOG_FORMAT"),
        "an unknown LOG_FORMAT is mentioned: {stderr}"
    );
}

// --- Discord's rules for a growing bot: sharding required, identify buckets, session starts,
// and closing a session with any code on request. Raw WebSocket clients, as above.

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the fake answered an Identify or a Resume with.
#[derive(Debug, PartialEq)]
enum Answer {
    /// READY, with the session id.
    Ready(String),
    Resumed,
    /// Op 9 with `d`.
    InvalidSession(bool),
    /// A close frame with this code.
    Closed(u16),
}

/// A connection past Hello.
async fn connect(port: u16) -> Ws {
    use futures_util::StreamExt;
    let url = format!("ws://127.0.0.1:{port}/?v=10&encoding=json");
    let (mut ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::connect_async(&url))
        .await
        .expect("connects in time")
        .expect("connects");
    let hello = tokio::time::timeout(HANG_GUARD, ws.next())
        .await
        .expect("hello in time")
        .expect("hello")
        .expect("a frame");
    assert!(hello.to_text().unwrap().contains(r#""op":10"#), "{hello:?}");
    ws
}

async fn send(ws: &mut Ws, payload: serde_json::Value) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(payload.to_string())).await.unwrap();
}

/// Sends an Identify (`shard` None: no shard field) and returns the answer.
async fn identify(ws: &mut Ws, shard: Option<[u32; 2]>) -> Answer {
    let mut d = serde_json::json!({"token": TOKEN, "intents": 1, "properties": {}});
    if let Some(shard) = shard {
        d["shard"] = serde_json::json!(shard);
    }
    send(ws, serde_json::json!({"op": 2, "d": d})).await;
    answer(ws).await
}

async fn resume(ws: &mut Ws, session_id: &str) -> Answer {
    let d = serde_json::json!({"token": TOKEN, "session_id": session_id, "seq": 1});
    send(ws, serde_json::json!({"op": 6, "d": d})).await;
    answer(ws).await
}

/// Reads (skipping dispatches) until READY, RESUMED, op 9 or a close frame; at most [`HANG_GUARD`].
async fn answer(ws: &mut Ws) -> Answer {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(HANG_GUARD, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(text)) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    match (v["op"].as_u64(), v["t"].as_str()) {
                        (Some(0), Some("READY")) => {
                            return Answer::Ready(v["d"]["session_id"].as_str().unwrap().into())
                        }
                        (Some(0), Some("RESUMED")) => return Answer::Resumed,
                        (Some(9), _) => return Answer::InvalidSession(v["d"] == true),
                        _ => {}
                    }
                }
                Ok(Message::Close(Some(close))) => return Answer::Closed(u16::from(close.code)),
                Ok(_) => {}
                Err(e) => panic!("the connection failed without a close frame: {e}"),
            }
        }
        panic!("the connection ended without a close frame");
    })
    .await
    .expect("an answer in time")
}

/// `GET /api/v10/gateway/bot` with the token: (status, body).
fn gateway_bot(port: u16) -> (u16, serde_json::Value) {
    let auth = format!("Bot {TOKEN}");
    let (code, body) = http_request(
        port,
        "GET",
        "/api/v10/gateway/bot",
        &[("Authorization", &auth)],
        "",
    )
    .unwrap();
    (code, serde_json::from_str(&body).unwrap_or_default())
}

fn identifies(port: u16) -> serde_json::Value {
    get_json(port, "/fake/identifies").expect("/fake/identifies answers JSON")
}

fn sessions(port: u16) -> Vec<serde_json::Value> {
    get_json(port, "/fake/sessions")
        .and_then(|v| v.as_array().cloned())
        .expect("/fake/sessions is an array")
}

fn session(port: u16, id: &str) -> serde_json::Value {
    sessions(port)
        .into_iter()
        .find(|s| s["session_id"] == id)
        .unwrap_or_else(|| panic!("session {id} is listed"))
}

/// Polls until `session`'s `connected` is `want` (the fake detaches right after closing).
fn wait_connected(port: u16, id: &str, want: bool) -> serde_json::Value {
    wait_for(HANG_GUARD, || {
        let s = session(port, id);
        (s["connected"] == want).then_some(s)
    })
    .unwrap_or_else(|| panic!("session {id} never had connected == {want}"))
}

/// How long a wait on a condition may take before the test is declared hung: a guard, not an
/// expectation of speed.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// Waits until the fake's own clock (ms since it started) reaches `at_ms`.
fn wait_until_fake_time(port: u16, at_ms: u64) {
    wait_for(HANG_GUARD, || {
        (identifies(port)["now_ms"].as_u64()? >= at_ms).then_some(())
    })
    .unwrap_or_else(|| panic!("the fake's clock did not reach {at_ms} ms"));
}

/// Polls `check` (in this thread: for a fake in this process, which must keep running) until
/// it is true; panics naming `what` after [`HANG_GUARD`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: never");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sample's 8 guilds by shard of 4 are 1, 3, 1 and 3; of 2, 2 and 6.
#[tokio::test(flavor = "current_thread")]
async fn a_shard_holding_too_many_guilds_is_closed_with_4011() {
    let (_fake, port) = start_fake_discord(TOKEN, &["--max-guilds-per-shard", "3"]);
    let mut ws = connect(port).await;
    assert_eq!(
        identify(&mut ws, None).await,
        Answer::Closed(4011),
        "unsharded: 8 guilds"
    );
    let mut ws = connect(port).await;
    assert_eq!(
        identify(&mut ws, Some([1, 2])).await,
        Answer::Closed(4011),
        "6 guilds"
    );

    let mut open = Vec::new();
    for id in 0..4 {
        let mut ws = connect(port).await;
        let answer = identify(&mut ws, Some([id, 4])).await;
        assert!(matches!(answer, Answer::Ready(_)), "[{id}, 4]: {answer:?}");
        open.push(ws);
    }
    // Discord's 5 s window by default: shard 0 again at once (bucket 0) is refused. Done
    // first, so that only the identifies above come between the two.
    let mut ws = connect(port).await;
    assert_eq!(
        identify(&mut ws, Some([0, 4])).await,
        Answer::InvalidSession(false)
    );
    let all = sessions(port);
    assert_eq!(all.len(), 4, "refused identifies start no session: {all:?}");
    for (id, s) in all.iter().enumerate() {
        assert_eq!(s["shard"], serde_json::json!([id, 4]));
        assert_eq!(s["open"], true);
        assert_eq!(s["connected"], true);
        assert_eq!(s["identified_at_ms"].as_array().map(Vec::len), Some(1));
    }

    let report = identifies(port);
    assert_eq!(report["identifies"], 4);
    assert_eq!(report["identify_violations"], 1);
    assert_eq!(report["max_concurrency"], 16);
    assert_eq!(report["identify_window_ms"], 5000);
    assert_eq!(report["session_starts_remaining"], 996);
    let outcomes: Vec<&str> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "sharding_required",
            "sharding_required",
            "ready",
            "ready",
            "ready",
            "ready",
            "invalid_session"
        ]
    );
    let first = &report["attempts"][0];
    assert_eq!(first["shard"], serde_json::Value::Null);
    assert_eq!(first["accepted"], false);
    assert_eq!(first["session"], serde_json::Value::Null);
}

/// Buckets are shard_id % max_concurrency, one accepted Identify each per window.
#[tokio::test(flavor = "current_thread")]
async fn one_identify_per_bucket_per_window() {
    // Long enough that the three identifies below always fall in it, however loaded the
    // machine; the test then waits for it to pass by the fake's own clock.
    const WINDOW_MS: u64 = 10_000;
    let (_fake, port) = start_fake_discord(
        TOKEN,
        &[
            "--max-concurrency",
            "2",
            "--identify-window-ms",
            &WINDOW_MS.to_string(),
        ],
    );
    // Shards 0 and 1 of 4: buckets 0 and 1, both at once.
    let mut shard0 = connect(port).await;
    let mut shard1 = connect(port).await;
    let a0 = identify(&mut shard0, Some([0, 4])).await;
    let a1 = identify(&mut shard1, Some([1, 4])).await;
    assert!(matches!(a0, Answer::Ready(_)), "{a0:?}");
    assert!(matches!(a1, Answer::Ready(_)), "{a1:?}");
    // Shard 2: bucket 0 again, within the window.
    let mut shard2 = connect(port).await;
    assert_eq!(
        identify(&mut shard2, Some([2, 4])).await,
        Answer::InvalidSession(false)
    );
    let report = identifies(port);
    assert_eq!(report["identifies"], 2);
    assert_eq!(report["identify_violations"], 1);
    assert_eq!(
        report["session_starts_remaining"], 998,
        "a violation takes no start"
    );
    let refused = &report["attempts"][2];
    assert_eq!(refused["shard"], serde_json::json!([2, 4]));
    assert_eq!(refused["bucket"], 0);
    assert_eq!(refused["accepted"], false);
    assert_eq!(refused["outcome"], "invalid_session");
    assert_eq!(sessions(port).len(), 2, "a violation starts no session");

    // After the window (from shard 0's accepted Identify), on the same connection: accepted.
    let accepted_at = report["attempts"][0]["at_ms"].as_u64().unwrap();
    let refused_at = refused["at_ms"].as_u64().unwrap();
    assert!(refused_at - accepted_at < WINDOW_MS);
    wait_until_fake_time(port, accepted_at + WINDOW_MS);
    let again = identify(&mut shard2, Some([2, 4])).await;
    assert!(matches!(again, Answer::Ready(_)), "{again:?}");
    let report = identifies(port);
    assert_eq!(report["identifies"], 3);
    assert_eq!(report["identify_violations"], 1);
    let last = &report["attempts"][3];
    assert_eq!(last["bucket"], 0);
    assert_eq!(last["accepted"], true);
    assert!(last["at_ms"].as_u64().unwrap() - accepted_at >= WINDOW_MS);
    drop((shard0, shard1));
}

/// One Identify past the session start limit: every session ends, the token is refused (4004,
/// REST 401) until the reset, then all starts are back.
#[tokio::test(flavor = "current_thread")]
async fn the_session_start_limit_resets_the_token_until_its_reset() {
    // Long enough that the steps below always fit in one period, however loaded the machine;
    // the test waits for the period's start and end by what the fake reports.
    const PERIOD_MS: u64 = 15_000;
    const STEPS_MS: u64 = 10_000;
    let (_fake, port) = start_fake_discord(
        TOKEN,
        &[
            "--session-start-limit",
            "2",
            "--session-start-reset-ms",
            &PERIOD_MS.to_string(),
        ],
    );
    // Periods count from the fake's start: begin early in one, so the steps below fit in it.
    let (code, bot) = gateway_bot(port);
    assert_eq!(code, 200, "{bot}");
    let reset_after = bot["session_start_limit"]["reset_after"].as_u64().unwrap();
    assert!(reset_after <= PERIOD_MS, "{bot}");
    let bot = wait_for(HANG_GUARD, || {
        let (code, bot) = gateway_bot(port);
        let left = bot["session_start_limit"]["reset_after"].as_u64()?;
        (code == 200 && left >= STEPS_MS).then_some(bot)
    })
    .expect("a period with time for the steps");
    assert_eq!(bot["session_start_limit"]["total"], 2, "{bot}");
    assert_eq!(bot["session_start_limit"]["remaining"], 2, "{bot}");

    let mut first = connect(port).await;
    let mut second = connect(port).await;
    let Answer::Ready(first_id) = identify(&mut first, Some([0, 2])).await else {
        panic!("first identify refused")
    };
    assert!(matches!(
        identify(&mut second, Some([1, 2])).await,
        Answer::Ready(_)
    ));
    let (code, bot) = gateway_bot(port);
    assert_eq!(code, 200);
    assert_eq!(bot["session_start_limit"]["remaining"], 0, "{bot}");
    assert_eq!(identifies(port)["session_starts_remaining"], 0);

    // The third: refused, and the open sessions are terminated with it.
    let mut third = connect(port).await;
    assert_eq!(
        identify(&mut third, Some([1, 2])).await,
        Answer::Closed(4004)
    );
    assert_eq!(answer(&mut first).await, Answer::Closed(4004));
    assert_eq!(answer(&mut second).await, Answer::Closed(4004));
    let (code, _) = gateway_bot(port);
    assert_eq!(code, 401, "REST refuses the reset token");
    let report = identifies(port);
    assert_eq!(report["token_reset"], true);
    assert_eq!(report["identifies"], 2);
    assert_eq!(report["attempts"][2]["outcome"], "session_start_limit");
    assert!(sessions(port).iter().all(|s| s["open"] == false));

    // After the reset: REST answers, the starts are back, the old sessions stay ended.
    let bot = wait_for(HANG_GUARD, || {
        let (code, bot) = gateway_bot(port);
        (code == 200).then_some(bot)
    })
    .expect("REST answers again after the reset");
    assert_eq!(bot["session_start_limit"]["remaining"], 2, "{bot}");
    let mut ws = connect(port).await;
    assert_eq!(
        resume(&mut ws, &first_id).await,
        Answer::InvalidSession(false)
    );
    // (Bucket 3: buckets 0 and 1 had identifies within the last 5 s.)
    let mut ws = connect(port).await;
    assert!(matches!(
        identify(&mut ws, Some([3, 4])).await,
        Answer::Ready(_)
    ));
    let (_, bot) = gateway_bot(port);
    assert_eq!(bot["session_start_limit"]["remaining"], 1, "{bot}");
    assert_eq!(identifies(port)["token_reset"], false);
}

#[test]
fn gateway_bot_recommends_a_shard_per_thousand_guilds() {
    let (_fake, port) = start_fake_discord(TOKEN, &[]);
    let (code, bot) = gateway_bot(port);
    assert_eq!(code, 200);
    assert_eq!(bot["url"], format!("ws://127.0.0.1:{port}"));
    assert_eq!(bot["shards"], 1, "8 guilds: {bot}");
    let limit = &bot["session_start_limit"];
    assert_eq!(limit["total"], 1000);
    assert_eq!(limit["remaining"], 1000);
    assert_eq!(limit["max_concurrency"], 16);
    let reset_after = limit["reset_after"].as_u64().unwrap();
    assert!(
        reset_after > 86_000_000 && reset_after <= 86_400_000,
        "{bot}"
    );

    let (_fake, port) = start_fake_discord(
        TOKEN,
        &["--recommended-shards", "5", "--max-concurrency", "4"],
    );
    let (_, bot) = gateway_bot(port);
    assert_eq!(bot["shards"], 5);
    assert_eq!(bot["session_start_limit"]["max_concurrency"], 4);

    // 2,001 guilds: 3 shards.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("guilds.ndjson");
    guild_gateway_dev::synthetic::write_file(&events, 2001, 10).unwrap();
    let (_fake, port) = start_fake_discord_on(TOKEN, &events, &[]);
    let (_, bot) = gateway_bot(port);
    assert_eq!(bot["shards"], 3, "{bot}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_session_is_closed_with_any_code_on_request() {
    let (_fake, port) = start_fake_discord(TOKEN, &[]);
    let mut ws = connect(port).await;
    let Answer::Ready(id) = identify(&mut ws, None).await else {
        panic!("identify refused")
    };
    assert_eq!(
        session(port, &id)["shard"],
        serde_json::Value::Null,
        "no shard sent"
    );
    let post = |path: String| http_request(port, "POST", &path, &[], "").unwrap();

    // 4008 (rate limited): the session can be resumed.
    let (code, body) = post(format!("/fake/sessions/{id}/close/4008"));
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"closed": id, "code": 4008, "reason": "Rate limited."})
    );
    assert_eq!(answer(&mut ws).await, Answer::Closed(4008));
    let s = wait_connected(port, &id, false);
    assert_eq!(s["open"], true);
    let (code, _) = post(format!("/fake/sessions/{id}/close/4008"));
    assert_eq!(code, 409, "no connection to close");
    let mut ws = connect(port).await;
    assert_eq!(resume(&mut ws, &id).await, Answer::Resumed);

    // 4009 (session timed out): it ends, a Resume gets Invalid Session.
    let (code, _) = post(format!("/fake/sessions/{id}/close/4009"));
    assert_eq!(code, 200);
    assert_eq!(answer(&mut ws).await, Answer::Closed(4009));
    let s = wait_connected(port, &id, false);
    assert_eq!(s["open"], false);
    assert_eq!(s["connections"], 2);
    let mut ws = connect(port).await;
    assert_eq!(resume(&mut ws, &id).await, Answer::InvalidSession(false));

    // Any code a server may send; others are refused. (Bucket 1: bucket 0 identified < 5 s ago.)
    let mut ws = connect(port).await;
    let Answer::Ready(id) = identify(&mut ws, Some([1, 2])).await else {
        panic!("identify refused")
    };
    for bad in ["1005", "999", "5000", "x"] {
        let (code, body) = post(format!("/fake/sessions/{id}/close/{bad}"));
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (code, _) = post("/fake/sessions/nope/close/4000".into());
    assert_eq!(code, 404);
    let (code, _) = post(format!("/fake/sessions/{id}/close/4012"));
    assert_eq!(code, 200);
    assert_eq!(answer(&mut ws).await, Answer::Closed(4012));
    assert_eq!(wait_connected(port, &id, false)["open"], false);
}

// --- Live timeline: one clock over the recording, each event sent once to the sessions open
// when it happens.

/// A dispatch as received: (seq, t, d).
type Dispatch = (u64, String, serde_json::Value);

/// A fake in live mode in this process (so a test can hold its clock exactly), on the sample
/// stream, any Identify accepted at once.
async fn start_live_fake(rate: u32) -> std::sync::Arc<guild_gateway_dev::fake_discord::Fake> {
    use guild_gateway_dev::fake_discord::{start, FakeOptions, Recording};
    let recording = Recording::load(&sample_stream()).expect("the sample stream loads");
    let options = FakeOptions {
        token: TOKEN.into(),
        live_rate: Some(rate),
        identify_window: Duration::ZERO,
        ..FakeOptions::default()
    };
    start("127.0.0.1:0".parse().unwrap(), recording, options)
        .await
        .expect("the fake starts")
}

/// Sends an Identify and returns READY's `d`.
async fn ready(ws: &mut Ws, shard: Option<[u32; 2]>) -> serde_json::Value {
    let mut d = serde_json::json!({"token": TOKEN, "intents": 1, "properties": {}});
    if let Some(shard) = shard {
        d["shard"] = serde_json::json!(shard);
    }
    send(ws, serde_json::json!({"op": 2, "d": d})).await;
    let first = next_frame(ws, HANG_GUARD).await.expect("READY in time");
    assert_eq!(first["t"], "READY", "{first}");
    assert_eq!(first["s"], 1);
    first["d"].clone()
}

/// The next text frame, parsed; None if none came within `within`.
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<serde_json::Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
                Some(Ok(Message::Close(close))) => panic!("closed: {close:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("the connection failed: {e}"),
                None => panic!("the connection ended"),
            }
        }
    })
    .await
    .ok()
}

/// The next `n` dispatches, within `within` in all.
async fn dispatches(ws: &mut Ws, n: usize, within: Duration) -> Vec<Dispatch> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(v) = next_frame(ws, left).await else {
            panic!("{} of {n} dispatches within {within:?}", got.len());
        };
        assert_eq!(v["op"], 0, "{v}");
        got.push((
            v["s"].as_u64().expect("a seq"),
            v["t"].as_str().expect("a t").to_owned(),
            v["d"].clone(),
        ));
    }
    got
}

/// What a session gets for these recording indexes: seq 2 onwards, the recorded `t` and `d`.
fn expected_dispatches(
    recording: &guild_gateway_dev::fake_discord::Recording,
    indexes: &[usize],
) -> Vec<Dispatch> {
    indexes
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let frame = &recording.frames[i];
            (
                k as u64 + 2,
                frame.name.clone(),
                serde_json::from_str(frame.data.get()).unwrap(),
            )
        })
        .collect()
}

/// Sessions admitted before the start get everything of their shard; sessions admitted later
/// only what happens after them, and their READY still lists the shard's guilds.
#[tokio::test(flavor = "current_thread")]
async fn a_live_session_gets_only_what_happens_after_it_opened() {
    let fake = start_live_fake(200).await;
    let port = fake.addr.port();
    let recording = &fake.recording;
    let total = recording.frames.len() as u64;
    let view = fake.clock_view();
    assert!(view.live && !view.running, "{view:?}");
    assert_eq!((view.position, view.total), (0, total));

    // Admitted at position 0, before the start: nothing comes until the clock runs.
    let mut early = connect(port).await;
    ready(&mut early, Some([0, 2])).await;
    assert!(
        next_frame(&mut early, Duration::from_millis(500))
            .await
            .is_none(),
        "a dispatch before the clock started"
    );
    assert_eq!(
        fake.clock_view().position,
        0,
        "the clock waits to be started"
    );

    fake.clock_start().unwrap();
    eventually("the clock advances a third of the way", || {
        fake.clock_view().position >= total / 3
    })
    .await;
    // Paused, so that the later sessions are admitted at a known position.
    fake.clock_pause().unwrap();
    let at = fake.clock_view().position;
    assert!(at < total, "paused before the end: {at} of {total}");

    let mut late = connect(port).await;
    ready(&mut late, None).await;
    let mut late_half = connect(port).await;
    let half_ready = ready(&mut late_half, Some([1, 2])).await;
    let shard_guilds: Vec<String> = recording
        .frames_for([1, 2])
        .into_iter()
        .filter(|&i| recording.frames[i].name == "GUILD_CREATE")
        .filter_map(|i| recording.frames[i].guild_id.map(|g| g.to_string()))
        .collect();
    let listed: Vec<String> = half_ready["guilds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!shard_guilds.is_empty());
    assert_eq!(
        listed, shard_guilds,
        "READY lists the shard's guilds as usual"
    );
    fake.clock_resume().unwrap();

    let early_want = expected_dispatches(recording, &recording.frames_for([0, 2]));
    let late_indexes: Vec<usize> = (at as usize..recording.frames.len()).collect();
    let late_want = expected_dispatches(recording, &late_indexes);
    let half_indexes: Vec<usize> = recording
        .frames_for([1, 2])
        .into_iter()
        .filter(|&i| i as u64 >= at)
        .collect();
    let half_want = expected_dispatches(recording, &half_indexes);
    let within = Duration::from_secs(60);
    let (early_got, late_got, half_got) = tokio::join!(
        dispatches(&mut early, early_want.len(), within),
        dispatches(&mut late, late_want.len(), within),
        dispatches(&mut late_half, half_want.len(), within),
    );
    // The first dispatch of a late session is the first of its shard at or after `at`.
    assert_eq!(late_got[0].0, 2);
    assert_eq!(
        late_got[0].2,
        serde_json::from_str::<serde_json::Value>(recording.frames[at as usize].data.get())
            .unwrap()
    );
    assert_eq!(late_got, late_want, "unsharded, admitted at {at}");
    assert_eq!(half_got[0].2, half_want[0].2);
    assert_eq!(half_got, half_want, "shard [1, 2], admitted at {at}");
    assert_eq!(early_got, early_want, "shard [0, 2], admitted at 0");

    assert_eq!(fake.clock_view().position, total);
    // The server counts a dispatch as sent once written, which may be after the client read it.
    eventually("every session done after its last dispatch", || {
        fake.session_views().iter().all(|s| s.done)
    })
    .await;
    assert_eq!(fake.session_views().len(), 3);
}

/// `--live-rate` starts the clock at once; the HTTP admin API pauses and resumes it, and a
/// session is done once it sent everything and the clock reached the end.
#[tokio::test(flavor = "current_thread")]
async fn the_live_clock_pauses_and_resumes_over_http() {
    let lines = sample_lines();
    let total = lines.len() as u64;
    let (_fake, port) = start_fake_discord(TOKEN, &["--live-rate", "50"]);
    let clock = || get_json(port, "/fake/clock").expect("/fake/clock answers JSON");
    let post = |path: &str| http_request(port, "POST", path, &[], "").unwrap();
    let c = clock();
    assert_eq!(c["live"], true, "{c}");
    assert_eq!(c["running"], true, "started at once: {c}");
    assert_eq!(c["total"], total, "{c}");

    let mut ws = connect(port).await;
    let Answer::Ready(id) = identify(&mut ws, None).await else {
        panic!("identify refused")
    };
    // A dispatch is the recording's line `first + seq - 2`: find `first` from the first one.
    let got = dispatches(&mut ws, 1, Duration::from_secs(30)).await;
    assert_eq!(got[0].0, 2);
    let first = lines
        .iter()
        .position(|l| l["t"] == got[0].1.as_str() && l["d"] == got[0].2)
        .expect("the first dispatch is a line of the recording");
    let is_line = |(seq, t, d): &Dispatch| {
        let line = &lines[first + *seq as usize - 2];
        line["t"] == t.as_str() && line["d"] == *d
    };

    let (code, body) = post("/fake/clock/pause");
    assert_eq!((code, body.as_str()), (204, ""));
    let c = clock();
    assert_eq!(c["running"], false, "{c}");
    let at = c["position"].as_u64().unwrap();
    assert!(
        at > first as u64 && at < total,
        "paused between the first dispatch ({first}) and the end ({total}): {c}"
    );
    // What happened before the pause still comes (up to line at - 1), then nothing.
    let before = dispatches(&mut ws, (at as usize - 1) - first, Duration::from_secs(30)).await;
    assert!(before.iter().all(is_line), "{before:?}");
    assert_eq!(before.last().map(|d| d.0), Some(at + 1 - first as u64));
    let quiet = next_frame(&mut ws, Duration::from_secs(1)).await;
    assert!(quiet.is_none(), "a dispatch while paused: {quiet:?}");
    let c = clock();
    assert_eq!(c["position"], at, "paused: {c}");
    assert_eq!(session(port, &id)["done"], false);

    let (code, _) = post("/fake/clock/resume");
    assert_eq!(code, 204);
    assert_eq!(clock()["running"], true);
    let rest = dispatches(&mut ws, (total - at) as usize, Duration::from_secs(120)).await;
    assert!(rest.iter().all(is_line), "{rest:?}");
    assert_eq!(rest[0].0, at + 2 - first as u64, "no gap, no repeat");
    let c = clock();
    assert_eq!(c["position"], total, "{c}");
    assert_eq!(c["running"], true, "{c}");
    let s = wait_for(HANG_GUARD, || {
        let s = session(port, &id);
        (s["done"] == true).then_some(s)
    })
    .expect("the session is done once the clock ended and it sent everything");
    assert_eq!(s["last_seq_sent"], total + 1 - first as u64);
    // Starting again changes nothing.
    assert_eq!(post("/fake/clock/start").0, 204);
    assert_eq!(clock()["position"], total);
}

/// A Resume in live mode replays what the client missed, then goes on with the clock.
#[tokio::test(flavor = "current_thread")]
async fn a_live_session_resumes() {
    let fake = start_live_fake(100).await;
    let port = fake.addr.port();
    let recording = &fake.recording;
    let mut ws = connect(port).await;
    let id = ready(&mut ws, None).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.clock_start().unwrap();
    let want = expected_dispatches(recording, &(0..recording.frames.len()).collect::<Vec<_>>());
    let got = dispatches(&mut ws, 20, Duration::from_secs(30)).await;
    assert_eq!(got, want[..20]);
    fake.control(&id, guild_gateway_dev::fake_discord::Control::Drop)
        .unwrap();
    drop(ws);
    let mut ws = connect(port).await;
    // From seq 21: dispatches 22 onwards (some sent before the drop and lost) then RESUMED.
    let d = serde_json::json!({"token": TOKEN, "session_id": id, "seq": 21});
    send(&mut ws, serde_json::json!({"op": 6, "d": d})).await;
    let mut got = Vec::new();
    loop {
        let v = next_frame(&mut ws, Duration::from_secs(30))
            .await
            .expect("a frame within 30 s");
        if v["t"] == "RESUMED" {
            break;
        }
        got.push((
            v["s"].as_u64().unwrap(),
            v["t"].as_str().unwrap().to_owned(),
            v["d"].clone(),
        ));
    }
    let rest = want.len() - 20 - got.len();
    got.extend(dispatches(&mut ws, rest, Duration::from_secs(60)).await);
    assert_eq!(got, want[20..], "no gap, no repeat");
}

#[test]
fn clock_requests_outside_live_mode_are_refused() {
    let (_fake, port) = start_fake_discord(TOKEN, &[]);
    for action in ["start", "pause", "resume"] {
        let (code, body) =
            http_request(port, "POST", &format!("/fake/clock/{action}"), &[], "").unwrap();
        assert_eq!(code, 409, "{action}: {body}");
    }
    let c = get_json(port, "/fake/clock").expect("/fake/clock answers JSON");
    assert_eq!(c["live"], false, "{c}");
    assert_eq!(c["total"], sample_lines().len(), "{c}");
}
