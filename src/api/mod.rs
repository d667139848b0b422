//! The guild data API, `/v1`: how the bot's HTTP services read and write guild data through
//! the pod that owns it.
//!
//! - `GET  /v1/guilds/{id}/owner`: the owner's ordinal and URL (any pod answers);
//! - `POST /v1/guilds/{id}/query`: one read-only statement on the owner ([`query`]);
//! - `POST /v1/query`: the same statement on the owners of a list of guilds, merged
//!   ([`fan_out`]);
//! - `POST /v1/guilds/{id}/execute`: one of the bot's writes, confined to the guild's rows of
//!   the registered tables, run in the owner's writer ([`execute`]);
//! - `GET|PATCH /v1/guilds/{id}/settings`: the settings document, patched through the writer
//!   ([`settings`]).
//!
//! A pod that does not own the guild answers 421 with the owner (Redis Cluster's MOVED). Every
//! request needs `Authorization: Bearer API_TOKEN` ([`guard`]); with no token configured, the
//! API refuses everything. [`routes`] lists every route; `openapi.json` describes them all
//! (served at `GET /v1/openapi.json`, [`openapi`]), and tests hold the two together.

pub(crate) mod body;
mod errors;
mod execute;
mod fan_out;
mod guard;
mod metrics;
mod openapi;
mod query;
mod routes;
mod settings;

use crate::config::ApiConfig;
use crate::gateway::sessions::Sessions;
use crate::pod_client::PodClient;
use crate::routing::Owner;
use actix_web::{web, HttpResponse};
use gateway_actors::partition::{parse_snowflake, Partition, PartitionError};
use gateway_actors::query::QueryPool;
use gateway_actors::Pipeline;
use std::sync::Arc;

pub use errors::ApiError;
pub use metrics::ApiMetrics;

/// What the API's handlers share.
pub struct Api {
    pub config: ApiConfig,
    pub pool: QueryPool,
    /// The one writer, for settings and the bot's writes.
    pub pipeline: Arc<Pipeline>,
    /// Calls to the other pods (cross-guild reads).
    pub pods: PodClient,
    /// Calls to the other pods that move a guild's rows (no query-sized time limit).
    pub transfers: PodClient,
    pub metrics: ApiMetrics,
    pub database: std::path::PathBuf,
    /// The Discord sessions (serve): a rescale asks whether the new ones are up.
    pub gateway: Option<Arc<Sessions>>,
    /// Places for writes in the writer's mailbox: a flood of writes waits here (and times
    /// out), never in front of the guilds' events.
    pub writes: tokio::sync::Semaphore,
    /// The pod's relay (serve with RELAY_ADDR): a rescale hands its guilds' state over.
    pub relay: Option<Arc<crate::relay::hub::Hub>>,
}

/// Writes of the data API in the writer's mailbox at once: enough to keep it busy between
/// round trips, few enough that events queued behind them wait at most this many writes.
const WRITES_IN_WRITER: usize = 4;

impl Api {
    pub fn new(
        config: ApiConfig,
        pipeline: Arc<Pipeline>,
        database: &std::path::Path,
        gateway: Option<Arc<Sessions>>,
    ) -> anyhow::Result<Api> {
        use anyhow::Context as _;
        let pool = QueryPool::open(database, config.pool_size, config.limits)
            .with_context(|| format!("opening the query pool on {}", database.display()))?;
        let pods = PodClient::new(config.pod_urls.clone(), config.token.clone())?;
        // A peer that stalls (stopped, overloaded) fails a transfer within 30 s, and the
        // rescale command reports it; a large export still has the call's whole limit.
        let transfers = PodClient::for_transfers(
            config.pod_urls.clone(),
            config.token.clone(),
            std::time::Duration::from_secs(30),
        )?;
        let metrics = ApiMetrics::register(&pipeline.metrics().registry)
            .context("registering the API's metrics")?;
        Ok(Api {
            config,
            pool,
            pipeline,
            pods,
            transfers,
            metrics,
            database: database.to_owned(),
            gateway,
            writes: tokio::sync::Semaphore::new(WRITES_IN_WRITER),
            relay: None,
        })
    }

    /// This pod under the committed ownership: owners, 421s and the routing of cross-guild
    /// reads follow it (a rescale moves a guild's reads at its commit).
    pub fn sharding(&self) -> Partition {
        self.pipeline.ownership().sharding()
    }

    /// The guild's owner under the committed ownership; 400 for an id that is not a
    /// snowflake (no row may be keyed by one).
    pub fn owner(&self, guild_id: &str) -> Result<Owner, ApiError> {
        let bad = |e: PartitionError| ApiError::BadRequest(e.to_string());
        parse_snowflake(guild_id).map_err(bad)?;
        let ownership = self.pipeline.ownership();
        Owner::of(guild_id, &ownership.sharding(), &self.config.pod_urls)
            .map(|owner| owner.at_epoch(ownership.epoch))
            .map_err(bad)
    }

    /// Refuses a write to a guild this pod has frozen for a rescale: its rows are being
    /// exported, and the new owner takes writes after the commit.
    pub fn writable(&self, guild_id: &str) -> Result<(), ApiError> {
        let ownership = self.pipeline.ownership();
        let frozen = ownership.next.is_some_and(|t| t.frozen);
        match guild_id.parse::<u64>() {
            Ok(id) if frozen && ownership.outgoing(id) => Err(ApiError::Moving(format!(
                "guild {guild_id} is moving to another pod (rescale to epoch {}); retry in a few seconds",
                ownership.next.map_or(0, |t| t.epoch)
            ))),
            _ => Ok(()),
        }
    }

    /// The guild's owner, if it is this pod; else the 421 that names the owner.
    pub fn owned(&self, guild_id: &str) -> Result<(), ApiError> {
        let owner = self.owner(guild_id)?;
        if owner.ordinal == self.pipeline.ownership().ordinal {
            Ok(())
        } else {
            self.metrics.misdirected.inc();
            Err(ApiError::Misdirected(owner))
        }
    }
}

/// Mounts `/v1` on an App: the routes of [`routes::ROUTES`], behind the token guard.
pub fn routes(api: web::Data<Api>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let scope = routes::ROUTES
            .iter()
            .fold(web::scope("/v1").app_data(api.clone()), |scope, r| {
                scope.route(r.path, r.route())
            });
        cfg.service(
            scope
                .wrap(actix_web::middleware::from_fn(guard::guard))
                .default_service(web::to(routes::fallback)),
        );
    }
}

async fn owner(api: web::Data<Api>, guild_id: web::Path<String>) -> HttpResponse {
    match api.owner(&guild_id) {
        Ok(owner) => HttpResponse::Ok().json(owner),
        Err(e) => e.into_response(),
    }
}
