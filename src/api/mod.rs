//! The guild data API, `/v1`: how the bot's HTTP services read and write guild data through
//! the pod that owns it.
//!
//! - `GET  /v1/guilds/{id}/owner`: the owner's ordinal and URL (any pod answers);
//! - `POST /v1/guilds/{id}/query`: one read-only statement on the owner ([`query`]);
//! - `POST /v1/query`: the same statement on the owners of a list of guilds, merged
//!   ([`fan_out`]);
//! - `GET|PATCH /v1/guilds/{id}/settings`: the settings document, patched through the writer
//!   ([`settings`]).
//!
//! A pod that does not own the guild answers 421 with the owner (Redis Cluster's MOVED). Every
//! request needs `Authorization: Bearer API_TOKEN` ([`guard`]); with no token configured, the
//! API refuses everything.

mod errors;
mod fan_out;
mod guard;
mod metrics;
mod query;
mod settings;

use crate::config::ApiConfig;
use crate::routing::Owner;
use actix_web::{web, HttpResponse};
use gateway_actors::query::QueryPool;
use gateway_actors::shard::Sharding;
use gateway_actors::Pipeline;
use std::sync::Arc;

pub use errors::ApiError;
pub use metrics::ApiMetrics;

/// What the API's handlers share.
pub struct Api {
    pub config: ApiConfig,
    pub sharding: Sharding,
    pub pool: QueryPool,
    /// The one writer, for settings.
    pub pipeline: Arc<Pipeline>,
    /// Calls to the other pods (cross-guild reads).
    pub client: reqwest::Client,
    pub metrics: ApiMetrics,
}

impl Api {
    pub fn new(
        config: ApiConfig,
        sharding: Sharding,
        pipeline: Arc<Pipeline>,
        database: &std::path::Path,
    ) -> anyhow::Result<Api> {
        use anyhow::Context as _;
        let pool = QueryPool::open(database, config.pool_size, config.limits)
            .with_context(|| format!("opening the query pool on {}", database.display()))?;
        let client = reqwest::Client::builder()
            // A remote pod has its own query limit; this covers the network around it.
            .timeout(config.limits.timeout + std::time::Duration::from_secs(5))
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()
            .context("building the HTTP client for pod-to-pod calls")?;
        let metrics = ApiMetrics::register(&pipeline.metrics().registry)
            .context("registering the API's metrics")?;
        Ok(Api {
            config,
            sharding,
            pool,
            pipeline,
            client,
            metrics,
        })
    }

    pub fn owner(&self, guild_id: &str) -> Result<Owner, ApiError> {
        Owner::of(guild_id, &self.sharding, &self.config.pod_urls)
            .map_err(|e| ApiError::BadRequest(format!("guild id {guild_id:?}: {e}")))
    }

    /// The guild's owner, if it is this pod; else the 421 that names the owner.
    pub fn owned(&self, guild_id: &str) -> Result<(), ApiError> {
        let owner = self.owner(guild_id)?;
        if owner.ordinal == self.sharding.ordinal {
            Ok(())
        } else {
            self.metrics.misdirected.inc();
            Err(ApiError::Misdirected(owner))
        }
    }
}

/// Mounts `/v1` on an App.
pub fn routes(api: web::Data<Api>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let max_body = api.config.max_body;
        cfg.service(
            web::scope("/v1")
                .app_data(api.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(errors::json_error),
                )
                .wrap(actix_web::middleware::from_fn(guard::guard))
                .route("/guilds/{guild_id}/owner", web::get().to(owner))
                .route(
                    "/guilds/{guild_id}/query",
                    web::post().to(query::guild_query),
                )
                .route("/query", web::post().to(fan_out::query_guilds))
                .route("/guilds/{guild_id}/settings", web::get().to(settings::get))
                .route(
                    "/guilds/{guild_id}/settings",
                    web::patch().to(settings::patch),
                )
                .default_service(web::to(|| async {
                    ApiError::NotFound("no such /v1 endpoint".into()).into_response()
                })),
        );
    }
}

async fn owner(api: web::Data<Api>, guild_id: web::Path<String>) -> HttpResponse {
    match api.owner(&guild_id) {
        Ok(owner) => HttpResponse::Ok().json(owner),
        Err(e) => e.into_response(),
    }
}
