//! A minimal HTTP/1.0 GET for probing our own pods on 127.0.0.1 (no client library needed).

use anyhow::Context as _;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Returns (status code, body); bounded by a 5 s timeout.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .context("timed out")?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    Ok(status_and_body(&response))
}

/// The status code and the body of an HTTP/1.0 response (0 when there is no status line).
pub fn status_and_body(response: &str) -> (u16, String) {
    let code = response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}
