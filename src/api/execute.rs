//! `POST /v1/guilds/{id}/execute`: one of the bot's writes (an INSERT, UPDATE or DELETE as
//! Kysely compiles it), run in the owner's one writer and answered after its commit.
//!
//! The statement is confined to the registered guild tables the bot writes, and to the path's
//! guild's rows in them (`gateway_actors::query::execute`); a guild frozen for a rescale, or
//! no longer this pod's, is refused by the writer itself, in order with the rescale's steps.
//! A write holds the writer while it runs, so it has a short limit of its own
//! (API_WRITE_TIMEOUT_MS) and only a few wait in the writer's mailbox at once: a flood of
//! writes queues here, in front of nobody's events.

use super::body::JsonBody;
use super::query::{respond, QueryBody};
use super::{Api, ApiError};
use actix_web::{web, HttpResponse};
use gateway_actors::query::QueryLimits;
use std::time::Instant;

pub async fn execute(
    api: web::Data<Api>,
    guild_id: web::Path<String>,
    body: JsonBody<QueryBody>,
) -> Result<HttpResponse, ApiError> {
    api.owned(&guild_id)?;
    api.writable(&guild_id)?;
    let started = Instant::now();
    let timeout = api.config.write_timeout;
    let limits = QueryLimits {
        timeout,
        ..api.pool.limits()
    };
    let deadline = started + timeout;
    let _place = tokio::time::timeout_at(deadline.into(), api.writes.acquire())
        .await
        .map_err(|_| ApiError::WritesBusy(timeout))?
        .map_err(|_| ApiError::Internal("the write places are closed".into()))?;
    let QueryBody { sql, params } = body.into_inner();
    let executed = api
        .pipeline
        .execute(&guild_id, sql, params, limits, deadline)
        .await;
    api.metrics
        .query_seconds
        .with_label_values(&["guild_execute"])
        .observe(started.elapsed().as_secs_f64());
    respond(&api, started, executed?).await
}
