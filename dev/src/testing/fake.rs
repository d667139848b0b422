//! A `guild-gateway-dev fake-discord` process for a test, started on a free port.

use super::{dev, free_port, http_get, sample_stream, wait_for, Proc};
use std::path::Path;
use std::time::Duration;

/// `guild-gateway-dev fake-discord` on the sample stream, on a free port; returns it once it
/// answers.
pub fn start_fake_discord(token: &str, extra: &[&str]) -> (Proc, u16) {
    start_fake_discord_on(token, &sample_stream(), extra)
}

/// `guild-gateway-dev fake-discord` on a given stream.
pub fn start_fake_discord_on(token: &str, events: &Path, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let fake = Proc(
        dev()
            .args([
                "fake-discord",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--token",
                token,
                "--events",
            ])
            .arg(events)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting fake-discord"),
    );
    wait_for(Duration::from_secs(20), || {
        http_get(port, "/fake/sessions")
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .expect("fake-discord answers");
    (fake, port)
}
