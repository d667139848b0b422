//! The one client for calls to a pod: the commands' (`coverage`, `rescale`, `shard-of
//! --from-pod`) and the pods' own (cross-guild reads, rescale transfers).
//!
//! Every such call needs the same things, so they live here once: the bearer token, a time
//! limit per call, a bounded retry when the pod could not be reached at all, the header that
//! marks a call forwarded by a pod, and one error type that names the pod and keeps the
//! cause. A retry covers only failures to connect: the request never reached the pod, so
//! repeating it is safe for every method, idempotent or not.

use crate::routing::UrlTemplate;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The header a pod sets on a call to another pod: the callee answers from its own data only
/// and never calls further (so a disagreement about owners cannot loop).
pub const FORWARDED: &str = "x-guild-gateway-forwarded";

/// How many times a call is tried when the pod cannot be reached.
const CONNECT_ATTEMPTS: u32 = 3;
/// The wait before the first retry; doubled for each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long connecting to a pod may take (inside the cluster this is milliseconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a call to a pod failed. Each variant names the pod and the URL called.
#[derive(Debug, thiserror::Error)]
pub enum PodCallError {
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
    #[error("{pod} is unreachable ({attempts} attempts)")]
    Unreachable {
        pod: Pod,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{pod} did not answer within {timeout:?}")]
    TimedOut { pod: Pod, timeout: Duration },
    #[error("{pod} broke off its answer")]
    Interrupted {
        pod: Pod,
        #[source]
        source: reqwest::Error,
    },
    /// The pod answered, with an error status; `message` is its `{"error": ...}` (or the start
    /// of its body).
    #[error("{pod} answered {status}: {message}")]
    Refused {
        pod: Pod,
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("{pod} gave an unexpected answer")]
    Unexpected {
        pod: Pod,
        #[source]
        source: serde_json::Error,
    },
}

/// The pod a call went to: its ordinal (none for a pod given by URL) and the URL called.
#[derive(Debug, Clone)]
pub struct Pod {
    pub ordinal: Option<u32>,
    pub url: String,
}

impl std::fmt::Display for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ordinal {
            Some(k) => write!(f, "pod {k} ({})", self.url),
            None => write!(f, "the pod at {}", self.url),
        }
    }
}

/// One request: its method, path under the pod's base URL, body and time limit.
pub struct Call<'a> {
    method: reqwest::Method,
    path: &'a str,
    body: Option<Vec<u8>>,
    timeout: Duration,
    forwarded: bool,
}

impl<'a> Call<'a> {
    pub fn get(path: &'a str, timeout: Duration) -> Call<'a> {
        Call {
            method: reqwest::Method::GET,
            path,
            body: None,
            timeout,
            forwarded: false,
        }
    }

    /// A POST with a JSON body.
    pub fn post(path: &'a str, body: &impl serde::Serialize, timeout: Duration) -> Call<'a> {
        Call {
            method: reqwest::Method::POST,
            path,
            // Serializing our own request types cannot fail (no maps with non-string keys).
            body: Some(serde_json::to_vec(body).unwrap_or_default()),
            timeout,
            forwarded: false,
        }
    }

    /// Marks the call as made by a pod on behalf of its caller.
    pub fn forwarded(mut self) -> Call<'a> {
        self.forwarded = true;
        self
    }
}

/// Calls pods by ordinal (through the URL template) with this process's token.
#[derive(Clone)]
pub struct PodClient {
    http: reqwest::Client,
    urls: UrlTemplate,
    token: Option<String>,
}

impl PodClient {
    pub fn new(urls: UrlTemplate, token: Option<String>) -> Result<PodClient, PodCallError> {
        Self::build(urls, token, None)
    }

    /// A client for long transfers: a call may take its whole time limit, but a pod that
    /// stops sending for `stall` fails it early (a stopped or overloaded peer).
    pub fn for_transfers(
        urls: UrlTemplate,
        token: Option<String>,
        stall: Duration,
    ) -> Result<PodClient, PodCallError> {
        Self::build(urls, token, Some(stall))
    }

    fn build(
        urls: UrlTemplate,
        token: Option<String>,
        stall: Option<Duration>,
    ) -> Result<PodClient, PodCallError> {
        let mut http = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(stall) = stall {
            http = http.read_timeout(stall);
        }
        Ok(PodClient {
            http: http.build().map_err(PodCallError::Build)?,
            urls,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The base URL of pod `ordinal`.
    pub fn url(&self, ordinal: u32) -> String {
        self.urls.url(ordinal)
    }

    /// The call's answer, parsed as `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        ordinal: u32,
        call: Call<'_>,
    ) -> Result<T, PodCallError> {
        let (pod, body) = self.send(ordinal, call).await?;
        serde_json::from_slice(&body).map_err(|source| PodCallError::Unexpected { pod, source })
    }

    /// The call's answer as it came.
    pub async fn bytes(&self, ordinal: u32, call: Call<'_>) -> Result<Vec<u8>, PodCallError> {
        Ok(self.send(ordinal, call).await?.1)
    }

    async fn send(&self, ordinal: u32, call: Call<'_>) -> Result<(Pod, Vec<u8>), PodCallError> {
        let pod = Pod {
            ordinal: self.urls.has_ordinal().then_some(ordinal),
            url: format!("{}{}", self.urls.url(ordinal), call.path),
        };
        let mut attempts = 0;
        let response = loop {
            attempts += 1;
            match self.request(&pod.url, &call).send().await {
                Ok(response) => break response,
                Err(e) if e.is_connect() && attempts < CONNECT_ATTEMPTS => {
                    tokio::time::sleep(FIRST_BACKOFF * 2u32.pow(attempts - 1)).await;
                }
                Err(e) => return Err(failed(pod, attempts, call.timeout, e)),
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(e) if e.is_timeout() => return Err(failed(pod, attempts, call.timeout, e)),
            Err(source) => return Err(PodCallError::Interrupted { pod, source }),
        };
        if !status.is_success() {
            let message = error_message(&body);
            return Err(PodCallError::Refused {
                pod,
                status,
                message,
            });
        }
        Ok((pod, body))
    }

    fn request(&self, url: &str, call: &Call<'_>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .request(call.method.clone(), url)
            .timeout(call.timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if call.forwarded {
            request = request.header(FORWARDED, "1");
        }
        if let Some(body) = &call.body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        request
    }
}

fn failed(pod: Pod, attempts: u32, timeout: Duration, e: reqwest::Error) -> PodCallError {
    if e.is_timeout() {
        PodCallError::TimedOut { pod, timeout }
    } else {
        PodCallError::Unreachable {
            pod,
            attempts,
            source: e,
        }
    }
}

/// A pod's error answer is `{"error": "..."}`; anything else is quoted, shortened.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-connection-at-a-time HTTP server on 127.0.0.1 that answers every request with
    /// `answer` (after `delay`) and sends each request's head to the test.
    async fn server(
        answer: &'static str,
        delay: Duration,
    ) -> (UrlTemplate, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (heads, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = heads.send(read_request(&mut socket).await);
                tokio::time::sleep(delay).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        let urls = UrlTemplate::parse(&format!("http://127.0.0.1:{port}/{{ordinal}}")).unwrap();
        (urls, received)
    }

    /// The request's head and body (as far as its content-length says).
    async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
        let mut request = Vec::new();
        let mut buf = [0; 4096];
        loop {
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    return String::from_utf8_lossy(&request).into_owned();
                }
            }
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&request).into_owned(),
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn response(status: &str, body: &str) -> &'static str {
        let text = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        Box::leak(text.into_boxed_str())
    }

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_call_carries_the_token_the_forwarded_mark_and_the_body() {
        let (urls, mut heads) = server(response("200 OK", r#"{"n":7}"#), Duration::ZERO).await;
        let client = PodClient::new(urls, Some("secret".into())).unwrap();
        let call = Call::post("/v1/query", &serde_json::json!({"sql": "SELECT 1"}), LIMIT);
        let answer: serde_json::Value = client.json(3, call.forwarded()).await.unwrap();
        assert_eq!(answer["n"], 7);
        let head = heads.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("post /3/v1/query "), "{head}");
        assert!(head.contains("authorization: bearer secret"), "{head}");
        assert!(head.contains(&format!("{FORWARDED}: 1")), "{head}");
        assert!(head.contains(r#"{"sql":"select 1"}"#), "{head}");
    }

    #[tokio::test]
    async fn no_token_and_no_mark_unless_asked() {
        let (urls, mut heads) = server(response("200 OK", "{}"), Duration::ZERO).await;
        let client = PodClient::new(urls, Some(String::new())).unwrap();
        let _: serde_json::Value = client.json(0, Call::get("/status", LIMIT)).await.unwrap();
        let head = heads.recv().await.unwrap().to_ascii_lowercase();
        assert!(!head.contains("authorization"), "{head}");
        assert!(!head.contains(FORWARDED), "{head}");
    }

    #[tokio::test]
    async fn an_error_answer_keeps_its_status_and_the_pods_message() {
        let answer = response("503 Service Unavailable", r#"{"error":"frozen"}"#);
        let (urls, _heads) = server(answer, Duration::ZERO).await;
        let client = PodClient::new(urls, None).unwrap();
        let e = client
            .json::<serde_json::Value>(2, Call::get("/v1/rescale", LIMIT))
            .await
            .unwrap_err();
        match &e {
            PodCallError::Refused {
                pod,
                status,
                message,
            } => {
                assert_eq!(pod.ordinal, Some(2));
                assert_eq!(status.as_u16(), 503);
                assert_eq!(message, "frozen");
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().starts_with("pod 2 ("), "{e}");
    }

    #[tokio::test]
    async fn an_answer_that_is_not_the_expected_json_is_unexpected() {
        let (urls, _heads) = server(response("200 OK", "<html>"), Duration::ZERO).await;
        let client = PodClient::new(urls, None).unwrap();
        let e = client
            .json::<serde_json::Value>(0, Call::get("/status", LIMIT))
            .await
            .unwrap_err();
        assert!(matches!(e, PodCallError::Unexpected { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_pod_that_does_not_answer_in_time_times_out() {
        let (urls, _heads) = server(response("200 OK", "{}"), Duration::from_secs(30)).await;
        let client = PodClient::new(urls, None).unwrap();
        let limit = Duration::from_millis(200);
        let e = client
            .bytes(1, Call::get("/status", limit))
            .await
            .unwrap_err();
        assert!(
            matches!(e, PodCallError::TimedOut { timeout, .. } if timeout == limit),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_pod_is_tried_a_bounded_number_of_times() {
        // A port that was just free: nothing listens, so every attempt is refused.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let urls = UrlTemplate::parse(&format!("http://127.0.0.1:{port}/{{ordinal}}")).unwrap();
        let client = PodClient::new(urls, None).unwrap();
        let e = client
            .bytes(4, Call::get("/status", LIMIT))
            .await
            .unwrap_err();
        match &e {
            PodCallError::Unreachable { attempts, pod, .. } => {
                assert_eq!(*attempts, CONNECT_ATTEMPTS);
                assert_eq!(pod.ordinal, Some(4));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("pod 4") && e.to_string().contains("unreachable"));
    }

    #[tokio::test]
    async fn a_pod_given_by_url_is_named_by_it() {
        let (urls, _heads) = server(response("404 Not Found", "nope"), Duration::ZERO).await;
        let single = UrlTemplate::single(&urls.url(0)).unwrap();
        let client = PodClient::new(single, None).unwrap();
        let e = client
            .bytes(0, Call::get("/status", LIMIT))
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("the pod at http://"), "{e}");
        assert!(
            e.to_string().ends_with("answered 404 Not Found: nope"),
            "{e}"
        );
    }
}
