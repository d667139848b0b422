//! A minimal HTTP/1.0 client for our own servers (pods, the fake Discord), bounded by read
//! timeouts so that a hung server fails the test instead of hanging it.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GET over HTTP/1.0; returns (status code, body). Bounded by a 10 s timeout.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(crate::probe::status_and_body(&response))
}

/// GET a JSON document; None unless it answers 200 with JSON.
pub fn get_json(port: u16, path: &str) -> Option<Value> {
    let (code, body) = http_get(port, path).ok()?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// An HTTP/1.0 request with headers and a body; returns (status code, body). Bounded by a
/// 30 s timeout.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(crate::probe::status_and_body(&response))
}

/// A call to a pod's `/v1` API with `token` as the bearer (none: unauthenticated) and a JSON
/// body; returns the status and the answer, as JSON, or as a JSON string when it is not JSON.
pub fn api_request(
    port: u16,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, Value)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let (code, text) = http_request(port, method, path, &headers, body)?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((code, json))
}
