//! Request bodies of `/v1`: read within a size cap and a time limit, parsed off the HTTP
//! thread.
//!
//! A client holding the token must not be able to hold a connection (and its buffer) open by
//! sending a body slowly, nor stall the thread that answers the probes by sending a large one:
//! the body is read under `API_BODY_TIMEOUT_MS` and parsed on a blocking thread. A body that
//! another pod forwards ([`FORWARDED`]) may be a little larger than the caller's original (the
//! pod re-encodes it), so the cap for those leaves room for that.

use super::{Api, ApiError};
use crate::pod_client::FORWARDED;
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::pin::Pin;

/// A JSON body of type `T` (the replacement of `web::Json` on every `/v1` route).
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonBody<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The cap on a body forwarded by another pod: its re-encoding may be longer than what the
/// client sent (numbers, escapes), never more than twice as long.
pub fn forwarded_cap(max_body: usize) -> usize {
    max_body * 2 + 64 * 1024
}

impl<T: DeserializeOwned + Send + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let api = req.app_data::<web::Data<Api>>().cloned();
        let forwarded = req.headers().contains_key(FORWARDED);
        let is_json = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            let api = api.ok_or_else(|| ApiError::Internal("the API's state is missing".into()))?;
            if !is_json {
                return Err(ApiError::BadRequest(
                    "send Content-Type: application/json".into(),
                ));
            }
            let limit = if forwarded {
                forwarded_cap(api.config.max_body)
            } else {
                api.config.max_body
            };
            let too_large = || {
                ApiError::TooLarge(format!(
                    "the body is over the limit of {limit} bytes (API_MAX_BODY_BYTES)"
                ))
            };
            if declared.is_some_and(|n| n > limit) {
                return Err(too_large());
            }
            let read = async {
                let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|e| {
                        ApiError::BadRequest(format!("reading the request body: {e}"))
                    })?;
                    if body.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body.freeze())
            };
            let timeout = api.config.body_timeout;
            let body = tokio::time::timeout(timeout, read)
                .await
                .map_err(|_| ApiError::BodyTimeout(timeout))??;
            let value = web::block(move || serde_json::from_slice::<T>(&body))
                .await
                .map_err(|e| ApiError::Internal(format!("the body's parsing thread failed: {e}")))?
                .map_err(|e| {
                    ApiError::BadRequest(format!("the body is not the expected JSON: {e}"))
                })?;
            Ok(JsonBody(value))
        })
    }
}
