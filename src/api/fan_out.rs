//! `POST /v1/query`: one statement on the owners of a list of guilds, rows merged.
//!
//! Each owner holds only its own guilds' rows, so the statement runs unchanged on every owner
//! and the answers partition the truth: rows of different pods never describe the same guild.
//! That is why an aggregate across guilds must group by guild_id (a `count(*)` without it
//! would come back once per pod). Rows come in pod ordinal order. If any owner fails, the
//! answer is an error that names it and its guilds, never the other pods' rows alone.

use super::body::JsonBody;
use super::query::{respond, run_local, QueryBody};
use super::{Api, ApiError};
use crate::pod_client::{Call, PodCallError, FORWARDED};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use gateway_actors::errors::chain;
use gateway_actors::query::{QueryError, QueryResult};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuildsQueryBody {
    pub guilds: Vec<String>,
    pub sql: String,
    #[serde(default, alias = "parameters")]
    pub params: Vec<Json>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GuildsQueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Json>>,
    /// Who answered for which guilds, and with how many rows.
    pub pods: Vec<PodRows>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PodRows {
    pub ordinal: u32,
    pub url: String,
    pub guilds: Vec<String>,
    pub rows: usize,
}

pub async fn query_guilds(
    api: web::Data<Api>,
    req: HttpRequest,
    body: JsonBody<GuildsQueryBody>,
) -> Result<HttpResponse, ApiError> {
    let GuildsQueryBody {
        guilds,
        sql,
        params,
    } = body.into_inner();
    if guilds.is_empty() {
        return Err(ApiError::BadRequest("guilds is empty".into()));
    }
    let started = std::time::Instant::now();
    let by_owner = group_by_owner(&api, guilds).await?;
    let forwarded = req.headers().contains_key(FORWARDED);
    let parts = by_owner.into_iter().map(|(ordinal, guilds)| {
        let (api, sql, params) = (api.clone(), sql.clone(), params.clone());
        async move {
            let rows = if ordinal == api.sharding().ordinal {
                run_local(&api, "query", QueryBody { sql, params }).await
            } else if forwarded {
                // The caller thought this pod owns these guilds: pods disagree on ownership.
                // Answer 421 rather than call further, so a disagreement cannot loop.
                api.owner(&guilds[0]).and_then(|owner| {
                    api.metrics.misdirected.inc();
                    Err(ApiError::Misdirected(owner))
                })
            } else {
                call_pod(&api, ordinal, &guilds, sql, params).await
            };
            (ordinal, guilds, rows)
        }
    });
    let mut answer = GuildsQueryResult {
        columns: Vec::new(),
        rows: Vec::new(),
        pods: Vec::new(),
    };
    let max_bytes = api.pool.limits().max_bytes;
    let mut bytes = 0;
    for (ordinal, guilds, result) in futures_util::future::join_all(parts).await {
        let result = result?;
        // The merged answer is held in memory too: the byte budget is the whole answer's.
        bytes += result.bytes;
        if bytes > max_bytes {
            return Err(QueryError::TooLarge(max_bytes).into());
        }
        if answer.pods.is_empty() {
            answer.columns = result.columns;
        } else if answer.columns != result.columns {
            return Err(ApiError::Pod {
                status: StatusCode::BAD_GATEWAY,
                message: format!("pod {ordinal} answered other columns than pod {}: are the pods on different versions?", answer.pods[0].ordinal),
            });
        }
        answer.pods.push(PodRows {
            ordinal,
            url: api.config.pod_urls.url(ordinal),
            guilds,
            rows: result.rows.len(),
        });
        answer.rows.extend(result.rows);
    }
    respond(&api, started, answer).await
}

/// The listed guilds grouped by owner, each once, in the order first listed. Linear in the
/// list, and on a blocking thread: a list of 100k ids takes some milliseconds.
async fn group_by_owner(
    api: &web::Data<Api>,
    guilds: Vec<String>,
) -> Result<BTreeMap<u32, Vec<String>>, ApiError> {
    let api = api.clone();
    web::block(move || {
        let mut seen = HashSet::with_capacity(guilds.len());
        let mut by_owner: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for guild in guilds {
            if seen.contains(&guild) {
                continue;
            }
            let owner = api.owner(&guild)?;
            seen.insert(guild.clone());
            by_owner.entry(owner.ordinal).or_default().push(guild);
        }
        Ok(by_owner)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the grouping thread failed: {e}")))?
}

/// Runs the statement on pod `ordinal` for its `guilds`, with this pod's token.
async fn call_pod(
    api: &Api,
    ordinal: u32,
    guilds: &[String],
    sql: String,
    params: Vec<Json>,
) -> Result<QueryResult, ApiError> {
    let body = GuildsQueryBody {
        guilds: guilds.to_vec(),
        sql,
        params,
    };
    // A remote pod has its own query limit; this covers the network around it.
    let limit = api.pool.limits().timeout + std::time::Duration::from_secs(5);
    let call = Call::post("/v1/query", &body, limit).forwarded();
    let failed = |status: StatusCode, e: PodCallError| ApiError::Pod {
        status,
        message: format!("{}, the owner of guilds {guilds:?}", chain(&e)),
    };
    let bytes = match api.pods.bytes(ordinal, call).await {
        Ok(bytes) => bytes,
        Err(e @ PodCallError::Refused { status, .. }) => {
            api.metrics.pod_calls.with_label_values(&["refused"]).inc();
            // The statement's own faults (bad SQL, too many rows, its time limit) keep their
            // status; anything else is the other pod's failure.
            let status = match status.as_u16() {
                400 => StatusCode::BAD_REQUEST,
                422 => StatusCode::UNPROCESSABLE_ENTITY,
                504 => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            return Err(failed(status, e));
        }
        Err(e) => {
            api.metrics
                .pod_calls
                .with_label_values(&["unreachable"])
                .inc();
            return Err(failed(StatusCode::BAD_GATEWAY, e));
        }
    };
    let size = bytes.len();
    let parsed = web::block(move || serde_json::from_slice::<GuildsQueryResult>(&bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("the parsing thread failed: {e}")))?;
    match parsed {
        Ok(answer) => {
            api.metrics.pod_calls.with_label_values(&["ok"]).inc();
            Ok(QueryResult {
                columns: answer.columns,
                rows: answer.rows,
                bytes: size,
            })
        }
        Err(e) => {
            api.metrics.pod_calls.with_label_values(&["refused"]).inc();
            Err(ApiError::Pod {
                status: StatusCode::BAD_GATEWAY,
                message: format!(
                    "pod {ordinal} ({}), the owner of guilds {guilds:?}, gave an unexpected answer: {e}",
                    api.pods.url(ordinal)
                ),
            })
        }
    }
}
