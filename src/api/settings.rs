//! `GET|PATCH /v1/guilds/{id}/settings`: the guild's settings document. A PATCH is a JSON
//! merge patch applied by SQLite's `json_patch` in the pod's one writer, answered after its
//! commit.

use super::{Api, ApiError};
use actix_web::{web, HttpResponse};
use serde_json::{json, Value as Json};

pub async fn get(
    api: web::Data<Api>,
    guild_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    api.owned(&guild_id)?;
    let pool = api.pool.clone();
    let id = guild_id.clone();
    let stored = web::block(move || pool.settings(&id))
        .await
        .map_err(|e| ApiError::Internal(format!("the query's thread failed: {e}")))??
        .ok_or_else(|| ApiError::NotFound(format!("guild {guild_id} has no settings row")))?;
    respond(&guild_id, &stored)
}

pub async fn patch(
    api: web::Data<Api>,
    guild_id: web::Path<String>,
    body: web::Json<Json>,
) -> Result<HttpResponse, ApiError> {
    api.owned(&guild_id)?;
    api.writable(&guild_id)?;
    // Any other JSON value would replace the whole document (RFC 7396); the settings page
    // only ever sends objects, so anything else is a mistake.
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "a settings patch is a JSON object (a JSON merge patch)".into(),
        ));
    }
    let stored = api
        .pipeline
        .patch_settings(&guild_id, body.into_inner().to_string())
        .await?;
    respond(&guild_id, &stored)
}

fn respond(guild_id: &str, stored: &str) -> Result<HttpResponse, ApiError> {
    let settings: Json = serde_json::from_str(stored).map_err(|e| {
        ApiError::Internal(format!(
            "guild {guild_id}'s stored settings are not JSON: {e}"
        ))
    })?;
    Ok(HttpResponse::Ok().json(json!({ "guild_id": guild_id, "settings": settings })))
}
