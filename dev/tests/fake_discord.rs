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
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Close(Some(close)) = msg {
                    return Some(u16::from(close.code));
                }
            }
            None
        })
        .await
        .expect("closed within 10 s");
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
    let answered = wait_for(Duration::from_secs(20), || {
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
    let status = wait_exit(&mut fake.0, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(fake.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("LOG_FORMAT"),
        "an unknown LOG_FORMAT is mentioned: {stderr}"
    );
}
