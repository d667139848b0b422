//! `GET|PATCH /v1/guilds/{id}/settings`: the guild's settings document. A PATCH is a JSON
//! merge patch applied by SQLite's `json_patch` in the pod's one writer, answered after its
//! commit.

use super::body::JsonBody;
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
    body: JsonBody<Json>,
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
    check_patch(&body, "")?;
    let stored = api
        .pipeline
        .patch_settings(&guild_id, body.into_inner().to_string())
        .await?;
    respond(&guild_id, &stored)
}

/// Refuses what SQLite's JSON would not keep apart or JavaScript would not keep exact: a key
/// with a NUL character (SQLite cuts it there, so `"a\u0000b"` would overwrite `a`), and a
/// number beyond 2^53 (send those, ids above all, as strings).
fn check_patch(value: &Json, path: &str) -> Result<(), ApiError> {
    match value {
        Json::Object(map) => map.iter().try_for_each(|(key, value)| {
            let here = format!("{path}/{}", key.replace('\0', "\\u0000"));
            if key.contains('\0') {
                return Err(ApiError::BadRequest(format!(
                    "the settings key {here:?} holds a NUL character"
                )));
            }
            check_patch(value, &here)
        }),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_patch(v, &format!("{path}/{i}"))),
        Json::Number(n) if !gateway_actors::query::exact_number(n) => Err(ApiError::BadRequest(
            format!("the settings value at {path:?} is a number beyond 2^53, which JavaScript cannot hold exactly; send it as a string"),
        )),
        _ => Ok(()),
    }
}

fn respond(guild_id: &str, stored: &str) -> Result<HttpResponse, ApiError> {
    let settings: Json = serde_json::from_str(stored).map_err(|e| {
        ApiError::Internal(format!(
            "guild {guild_id}'s stored settings are not JSON: {e}"
        ))
    })?;
    Ok(HttpResponse::Ok().json(json!({ "guild_id": guild_id, "settings": settings })))
}
