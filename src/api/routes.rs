//! Every `/v1` route, in one table. [`super::routes`] mounts these and nothing else, and the
//! OpenAPI document (`openapi.json`, [`super::openapi`]) must describe exactly these: its
//! tests compare the two both ways, and ask the mounted router for each documented operation.
//! A request no route takes gets [`fallback`]: 405 naming the methods the path has, or 404.

use super::{execute, fan_out, openapi, query, settings, ApiError};
use crate::rescale::endpoints;
use actix_web::dev::ResourceDef;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, Route};
use std::sync::OnceLock;

/// One route: its method, its path under `/v1` (actix's `{name}` segments, which are
/// OpenAPI's path templates too) and its handler.
pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
    handler: fn(Route) -> Route,
}

impl ApiRoute {
    /// The actix route: the method's guard and the handler.
    pub fn route(&self) -> Route {
        let method = Method::from_bytes(self.method.as_bytes()).expect("an HTTP method");
        (self.handler)(web::route().method(method))
    }
}

const fn route(method: &'static str, path: &'static str, handler: fn(Route) -> Route) -> ApiRoute {
    ApiRoute {
        method,
        path,
        handler,
    }
}

/// Every `/v1` route. Its paths, prefixed with `/v1`, are the document's paths.
pub const ROUTES: &[ApiRoute] = &[
    route("GET", "/openapi.json", |r| r.to(openapi::document)),
    route("GET", "/guilds/{guild_id}/owner", |r| r.to(super::owner)),
    route("POST", "/guilds/{guild_id}/query", |r| {
        r.to(query::guild_query)
    }),
    route("POST", "/guilds/{guild_id}/execute", |r| {
        r.to(execute::execute)
    }),
    route("POST", "/query", |r| r.to(fan_out::query_guilds)),
    route("GET", "/guilds/{guild_id}/settings", |r| {
        r.to(settings::get)
    }),
    route("PATCH", "/guilds/{guild_id}/settings", |r| {
        r.to(settings::patch)
    }),
    route("GET", "/rescale", |r| r.to(endpoints::state)),
    route("POST", "/rescale/prepare", |r| r.to(endpoints::prepare)),
    route("GET", "/rescale/anchors", |r| r.to(endpoints::anchors)),
    route("POST", "/rescale/freeze", |r| r.to(endpoints::freeze)),
    route("GET", "/rescale/export", |r| r.to(endpoints::export)),
    route("POST", "/rescale/import", |r| r.to(endpoints::import)),
    route("POST", "/rescale/commit", |r| r.to(endpoints::commit)),
    route("POST", "/rescale/abort", |r| r.to(endpoints::abort)),
];

/// The answer to a `/v1` request that no route takes: 405 with `Allow` when the path is a
/// route's under other methods, else 404 (both with the API's JSON error body).
pub async fn fallback(req: HttpRequest) -> HttpResponse {
    static PATTERNS: OnceLock<Vec<(ResourceDef, &'static str)>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        ROUTES
            .iter()
            .map(|r| (ResourceDef::new(format!("/v1{}", r.path)), r.method))
            .collect()
    });
    let path = req.match_info().as_str();
    let mut allowed: Vec<&str> = patterns
        .iter()
        .filter(|(def, _)| def.is_match(path))
        .map(|&(_, method)| method)
        .collect();
    if allowed.is_empty() {
        return ApiError::NotFound("no such /v1 endpoint".into()).into_response();
    }
    allowed.sort_unstable();
    allowed.dedup();
    let allow = allowed.join(", ");
    HttpResponse::build(StatusCode::METHOD_NOT_ALLOWED)
        .insert_header((header::ALLOW, allow.clone()))
        .json(serde_json::json!({
            "error": format!("{} is not a method of this /v1 endpoint; it allows {allow}", req.method())
        }))
}
