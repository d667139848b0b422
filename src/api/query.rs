//! `POST /v1/guilds/{id}/query`: one read-only statement on the guild's owner.

use super::body::JsonBody;
use super::{Api, ApiError};
use actix_web::{web, HttpResponse};
use gateway_actors::query::{QueryError, QueryResult};
use serde::Deserialize;
use serde_json::Value as Json;
use std::time::Instant;

/// A compiled query: what Kysely's `query.compile()` gives (`parameters`), or `params`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub sql: String,
    #[serde(default, alias = "parameters")]
    pub params: Vec<Json>,
}

pub async fn guild_query(
    api: web::Data<Api>,
    guild_id: web::Path<String>,
    body: JsonBody<QueryBody>,
) -> Result<HttpResponse, ApiError> {
    api.owned(&guild_id)?;
    let started = Instant::now();
    let result = run_local(&api, "guild_query", body.into_inner()).await?;
    respond(&api, started, result).await
}

/// Encodes an answer on a blocking thread (a large one takes milliseconds the probes must not
/// wait for), within the query's time limit: the limit covers reading and encoding.
pub async fn respond<T: serde::Serialize + Send + 'static>(
    api: &Api,
    started: Instant,
    answer: T,
) -> Result<HttpResponse, ApiError> {
    let timeout = api.pool.limits().timeout;
    let body = web::block(move || serde_json::to_vec(&answer))
        .await
        .map_err(|e| ApiError::Internal(format!("the encoding thread failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))?;
    if started.elapsed() > timeout {
        return Err(QueryError::Timeout(timeout).into());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body))
}

/// Runs the statement on this pod's file, off the async threads.
pub async fn run_local(api: &Api, route: &str, body: QueryBody) -> Result<QueryResult, ApiError> {
    let pool = api.pool.clone();
    let started = Instant::now();
    let result = web::block(move || pool.run(&body.sql, &body.params))
        .await
        .map_err(|e| ApiError::Internal(format!("the query's thread failed: {e}")))?;
    api.metrics
        .query_seconds
        .with_label_values(&[route])
        .observe(started.elapsed().as_secs_f64());
    Ok(result?)
}
