//! `/v1/rescale`: the steps of a live rescale, driven by `guild-gateway rescale` (see
//! `gateway_actors::rescale::ownership` for the protocol and its invariant). Every step is idempotent,
//! so a command that died can run again; the state lives in each pod's database.
//!
//! - `GET  /v1/rescale`: this pod's ownership, the change under way, and whether the sessions
//!   that capture for it are up;
//! - `POST /v1/rescale/prepare` `{epoch, pods, strategy, shards}`: start capturing;
//! - `GET  /v1/rescale/anchors?epoch=E`: this new owner's anchors (the exact handoff points);
//! - `POST /v1/rescale/freeze` `{epoch, anchors, drain_ms}`: stop applying the guilds that
//!   leave, each group at its anchor;
//! - `GET  /v1/rescale/export?epoch=E&to=K`: the frozen guilds going to pod K, as a SQLite file;
//! - `POST /v1/rescale/import` `{epoch, frozen_at_ms}`: fetch every export for this pod,
//!   import, re-apply the capture log, go live;
//! - `POST /v1/rescale/commit` `{epoch}` and `POST /v1/rescale/abort` `{epoch}`.

use crate::api::body::JsonBody;
use crate::api::{Api, ApiError};
use crate::pod_client::Call;
use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context as _;
use gateway_actors::partition::Strategy;
use gateway_actors::rescale::anchor::Anchor;
use gateway_actors::rescale::ownership::{Layout, Ownership};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

/// How long one export may take to download (a stalled peer fails sooner: see `transfers`).
const TRANSFER_LIMIT: Duration = Duration::from_secs(600);

/// How long a freeze may wait for the events accepted before it to commit.
const FREEZE_LIMIT: Duration = Duration::from_secs(60);

/// What `GET /v1/rescale` answers (and `rescale --status` prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RescaleState {
    pub ordinal: u32,
    pub epoch: u64,
    pub layout: LayoutBody,
    pub next: Option<NextBody>,
    /// How the pod's settings differ from the committed ownership, if they do.
    pub config_stale: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutBody {
    pub pods: u32,
    pub strategy: String,
    pub shards: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextBody {
    pub epoch: u64,
    /// The rescale operation that prepared it (16 hex digits).
    #[serde(default)]
    pub operation: String,
    pub layout: LayoutBody,
    pub frozen: bool,
    pub live: bool,
    /// The Discord sessions this pod needs under the new layout are READY (always, when they
    /// are the ones it already runs).
    pub capturing: bool,
}

impl LayoutBody {
    pub fn of(layout: Layout) -> LayoutBody {
        LayoutBody {
            pods: layout.pods,
            strategy: layout.strategy.as_str().to_owned(),
            shards: layout.shards,
        }
    }

    pub fn layout(&self) -> Result<Layout, ApiError> {
        let strategy: Strategy = self
            .strategy
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("{e}")))?;
        if self.pods == 0 || self.shards == 0 {
            return Err(ApiError::BadRequest(
                "pods and shards must be at least 1".into(),
            ));
        }
        if strategy == Strategy::Discord && self.shards < self.pods {
            return Err(ApiError::BadRequest(
                "with discord the shard count must be at least the pod count".into(),
            ));
        }
        Ok(Layout {
            pods: self.pods,
            strategy,
            shards: self.shards,
        })
    }
}

impl std::fmt::Display for LayoutBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pods, {}, {} shards",
            self.pods, self.strategy, self.shards
        )
    }
}

pub fn state_of(api: &Api, ownership: Ownership) -> RescaleState {
    RescaleState {
        ordinal: ownership.ordinal,
        epoch: ownership.epoch,
        layout: LayoutBody::of(ownership.layout),
        next: ownership.next.map(|t| NextBody {
            epoch: t.epoch,
            operation: format!("{:016x}", t.operation),
            layout: LayoutBody::of(t.layout),
            frozen: t.frozen,
            live: t.live,
            capturing: !ownership.sessions_change()
                || api
                    .gateway
                    .as_ref()
                    .is_none_or(|g| g.ready_for_epoch(t.epoch)),
        }),
        config_stale: api.pipeline.config_stale(),
    }
}

pub async fn state(api: web::Data<Api>) -> HttpResponse {
    HttpResponse::Ok().json(state_of(&api, api.pipeline.ownership()))
}

#[derive(Debug, Deserialize)]
pub struct PrepareBody {
    pub epoch: u64,
    /// The new layout.
    #[serde(flatten)]
    pub layout: LayoutBody,
    /// The layout it replaces (epoch - 1's).
    pub from: LayoutBody,
    /// The command's operation id (16 hex digits): one operation at a time.
    pub operation: String,
}

/// An operation id as the command sends it: 16 hex digits.
fn operation_id(text: &str) -> Result<u64, ApiError> {
    // from_str_radix alone would take a sign ("+123456789abcde" is 16 characters too).
    Some(text)
        .filter(|t| t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .ok_or_else(|| ApiError::BadRequest(format!("operation {text:?} is not 16 hex digits")))
}

pub async fn prepare(
    api: web::Data<Api>,
    body: JsonBody<PrepareBody>,
) -> Result<HttpResponse, ApiError> {
    let (layout, from) = (body.layout.layout()?, body.from.layout()?);
    if body.epoch < 2 {
        return Err(ApiError::BadRequest(
            "a rescale's epoch is at least 2".into(),
        ));
    }
    let operation = operation_id(&body.operation)?;
    let ownership = api
        .pipeline
        .prepare(body.epoch, layout, from, operation)
        .await?;
    Ok(HttpResponse::Ok().json(state_of(&api, ownership)))
}

#[derive(Debug, Deserialize)]
pub struct EpochBody {
    pub epoch: u64,
    /// When the freeze began (ms since the Unix epoch): for the pause metric.
    #[serde(default)]
    pub frozen_at_ms: Option<u64>,
    /// For an abort: only the transition of this operation is cancelled.
    #[serde(default)]
    pub operation: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct FreezeBody {
    pub epoch: u64,
    /// The new owners' anchors (`GET /v1/rescale/anchors`): the exact handoff points.
    #[serde(default)]
    pub anchors: Vec<Anchor>,
    /// How long the pod goes on applying a group while it waits for its anchor.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
}

fn default_drain_ms() -> u64 {
    60_000
}

/// What a freeze answers: the pod's state and how the freeze went.
#[derive(Debug, Serialize, Deserialize)]
pub struct FreezeAnswer {
    #[serde(flatten)]
    pub state: RescaleState,
    #[serde(default)]
    pub drain_ms: u64,
    #[serde(default)]
    pub anchors_passed: usize,
    #[serde(default)]
    pub anchors_missed: usize,
}

/// `GET /v1/rescale/anchors?epoch=E`: this new owner's anchors.
pub async fn anchors(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query: EpochQuery = query_string(&req)?;
    Ok(HttpResponse::Ok().json(api.pipeline.anchors(query.epoch).await?))
}

/// The request's query string as `T`. A bad one is a 400 with the API's JSON error body, as
/// every other refusal of `/v1` (actix's own `web::Query` answers text).
fn query_string<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("the query string: {e}")))
}

#[derive(Debug, Deserialize)]
pub struct EpochQuery {
    pub epoch: u64,
}

pub async fn freeze(
    api: web::Data<Api>,
    body: JsonBody<FreezeBody>,
) -> Result<HttpResponse, ApiError> {
    let FreezeBody {
        epoch,
        anchors,
        drain_ms,
    } = body.into_inner();
    let (ownership, report) = api
        .pipeline
        .freeze(
            epoch,
            anchors,
            Duration::from_millis(drain_ms),
            FREEZE_LIMIT,
        )
        .await?;
    // Everything the leaving guilds' clients were sent is released by now: their state goes
    // with the export, for the new owner's relay to introduce them.
    if let Some(relay) = &api.relay {
        let documents = relay.documents(|g| ownership.outgoing(g));
        api.pipeline.save_relay_documents(documents).await?;
    }
    Ok(HttpResponse::Ok().json(FreezeAnswer {
        state: state_of(&api, ownership),
        drain_ms: report.drain_ms,
        anchors_passed: report.anchors_passed,
        anchors_missed: report.anchors_missed,
    }))
}

#[derive(Debug, Deserialize)]
pub struct ExportQuery {
    pub epoch: u64,
    pub to: u32,
}

pub async fn export(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let query: ExportQuery = query_string(&req)?;
    let out = beside(
        &api.database,
        &format!("export-{}-to-{}", query.epoch, query.to),
    );
    api.pipeline
        .export(query.epoch, query.to, out.clone())
        .await?;
    let bytes = tokio::fs::read(&out)
        .await
        .map_err(|e| ApiError::Internal(format!("reading {}: {e}", out.display())))?;
    let _ = tokio::fs::remove_file(&out).await;
    Ok(HttpResponse::Ok()
        .content_type("application/vnd.sqlite3")
        .body(bytes))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ImportAnswer {
    #[serde(flatten)]
    pub state: RescaleState,
    /// Guild rows imported, captured events re-applied, and captured events skipped (their
    /// old owner applied them before the anchor).
    pub guilds: u64,
    pub replayed: usize,
    #[serde(default)]
    pub skipped: usize,
}

pub async fn import(
    api: web::Data<Api>,
    body: JsonBody<EpochBody>,
) -> Result<HttpResponse, ApiError> {
    let now = api.pipeline.ownership();
    let (epoch, ordinal) = (body.epoch, now.ordinal);
    let Some(next) = now.next.filter(|t| t.epoch == epoch) else {
        return Err(ApiError::Rescale(gateway_actors::RescaleError::Conflict(
            format!("pod {ordinal} has no rescale to epoch {epoch} under way"),
        )));
    };
    let mut files = Vec::new();
    if !next.live {
        for from in (0..now.layout.pods).filter(|&j| j != ordinal) {
            let file = beside(&api.database, &format!("import-{epoch}-from-{from}"));
            fetch_export(&api, from, epoch, ordinal, &file)
                .await
                .map_err(|e| ApiError::Pod {
                    status: actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                    message: format!("{e:#}"),
                })?;
            files.push(file);
        }
    }
    let frozen_at = body
        .frozen_at_ms
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let result = api.pipeline.import(epoch, files.clone(), frozen_at).await;
    for file in &files {
        let _ = tokio::fs::remove_file(file).await;
    }
    let (ownership, guilds, replayed, skipped) = result?;
    Ok(HttpResponse::Ok().json(ImportAnswer {
        state: state_of(&api, ownership),
        guilds,
        replayed,
        skipped,
    }))
}

/// Downloads pod `from`'s export of the guilds coming to `to`.
async fn fetch_export(
    api: &Api,
    from: u32,
    epoch: u64,
    to: u32,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let path = format!("/v1/rescale/export?epoch={epoch}&to={to}");
    let bytes = api
        .transfers
        .bytes(from, Call::get(&path, TRANSFER_LIMIT))
        .await
        .with_context(|| format!("asking pod {from} for its export"))?;
    tokio::fs::write(file, &bytes)
        .await
        .with_context(|| format!("writing {}", file.display()))
}

pub async fn commit(
    api: web::Data<Api>,
    body: JsonBody<EpochBody>,
) -> Result<HttpResponse, ApiError> {
    let ownership = api.pipeline.commit(body.epoch).await?;
    // The guilds given away leave this pod's relay clients (their new owner's already met them).
    if let Some(relay) = &api.relay {
        relay.leave(|g| ownership.layout.owner(g) == ownership.ordinal);
    }
    Ok(HttpResponse::Ok().json(state_of(&api, ownership)))
}

pub async fn abort(
    api: web::Data<Api>,
    body: JsonBody<EpochBody>,
) -> Result<HttpResponse, ApiError> {
    let operation = body.operation.as_deref().map(operation_id).transpose()?;
    let ownership = api.pipeline.abort(body.epoch, operation).await?;
    Ok(HttpResponse::Ok().json(state_of(&api, ownership)))
}

/// A working file beside the database (on the pod's volume), named for this request alone: a
/// command that gave up and runs again may overlap a request still running.
fn beside(database: &std::path::Path, what: &str) -> PathBuf {
    static REQUEST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = REQUEST.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PathBuf::from(format!("{}.{what}.{n}.sqlite3", database.display()))
}

#[cfg(test)]
mod tests {
    use super::operation_id;

    #[test]
    fn operation_ids_are_16_hex_digits() {
        assert_eq!(operation_id("00000000000000aF").unwrap(), 0xaf);
        for bad in [
            "",
            "0",
            "00000000000000000",
            "+00000000000000a",
            "000000000000000g",
        ] {
            assert!(operation_id(bad).is_err(), "{bad:?}");
        }
    }
}
