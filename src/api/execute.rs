//! `POST /v1/guilds/{id}/execute`: one of the bot's writes (an INSERT, UPDATE or DELETE as
//! Kysely compiles it), run in the owner's one writer and answered after its commit.
//!
//! The statement is confined to the registered guild tables the bot writes, and to the path's
//! guild's rows in them (`gateway_actors::query::execute`); a guild frozen for a rescale, or
//! no longer this pod's, is refused by the writer itself, in order with the rescale's steps.

use super::body::JsonBody;
use super::query::{respond, QueryBody};
use super::{Api, ApiError};
use actix_web::{web, HttpResponse};
use std::time::Instant;

pub async fn execute(
    api: web::Data<Api>,
    guild_id: web::Path<String>,
    body: JsonBody<QueryBody>,
) -> Result<HttpResponse, ApiError> {
    api.owned(&guild_id)?;
    api.writable(&guild_id)?;
    let started = Instant::now();
    let limits = api.pool.limits();
    let QueryBody { sql, params } = body.into_inner();
    let executed = api
        .pipeline
        .execute(&guild_id, sql, params, limits, started + limits.timeout)
        .await;
    api.metrics
        .query_seconds
        .with_label_values(&["guild_execute"])
        .observe(started.elapsed().as_secs_f64());
    respond(&api, started, executed?).await
}
