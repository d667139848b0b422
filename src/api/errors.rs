//! Every refusal of the API, its HTTP status, and its JSON body `{"error": "..."}`.

use crate::routing::Owner;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use gateway_actors::query::QueryError;
use gateway_actors::{ExecuteError, RescaleError, SettingsError};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// No API_TOKEN is configured: the API is closed.
    #[error("the data API is disabled on this pod: API_TOKEN is not set")]
    Disabled,
    #[error("{0}")]
    NotFound(String),
    #[error("guild {} is owned by pod {} ({})", .0.guild_id, .0.ordinal, .0.url)]
    Misdirected(Owner),
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Execute(#[from] ExecuteError),
    /// Another pod failed a cross-guild read: no rows are answered.
    #[error("{message}")]
    Pod { status: StatusCode, message: String },
    #[error("{0}")]
    Internal(String),
    /// A rescale step out of order or for another epoch.
    #[error(transparent)]
    Rescale(#[from] RescaleError),
    /// The guild is moving to another pod: try again in a moment.
    #[error("{0}")]
    Moving(String),
    /// Too many writes wait for the pod's writer: none got a place within its time limit.
    #[error("more writes are waiting for this pod's writer than it takes within {0:?} (API_WRITE_TIMEOUT_MS); retry")]
    WritesBusy(std::time::Duration),
    /// The client did not send its whole body in time (API_BODY_TIMEOUT_MS).
    #[error("the request body did not arrive within {0:?} (API_BODY_TIMEOUT_MS)")]
    BodyTimeout(std::time::Duration),
}

impl ApiError {
    pub fn into_response(self) -> HttpResponse {
        self.error_response()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Disabled => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Query(e) | ApiError::Execute(ExecuteError::Statement(e)) => query_status(e),
            ApiError::Execute(ExecuteError::WriterGone) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Execute(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Settings(SettingsError::Unwritable(_) | SettingsError::Unavailable(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Settings(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Pod { status, .. } => *status,
            ApiError::Rescale(RescaleError::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Rescale(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Moving(_) | ApiError::WritesBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = gateway_actors::errors::chain(self);
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Misdirected(owner) => response.json(json!({
                "error": message,
                "guild_id": owner.guild_id,
                "ordinal": owner.ordinal,
                "pods": owner.pods,
                "strategy": owner.strategy,
                "shards": owner.shards,
                "url": owner.url,
                "epoch": owner.epoch,
            })),
            ApiError::Query(QueryError::OutOfScope { table, .. })
            | ApiError::Execute(ExecuteError::Statement(QueryError::OutOfScope {
                table, ..
            })) => response.json(json!({ "error": message, "table": table })),
            ApiError::Unauthorized(_) | ApiError::Disabled => response
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(json!({ "error": message })),
            _ => response.json(json!({ "error": message })),
        }
    }
}

/// A statement's refusal as HTTP: the client's fault is 4xx, the pod's limits 5xx.
fn query_status(e: &QueryError) -> StatusCode {
    match e {
        QueryError::Refused(_) | QueryError::Sql(_) => StatusCode::BAD_REQUEST,
        QueryError::OutOfScope { .. } => StatusCode::FORBIDDEN,
        QueryError::Constraint(_) => StatusCode::CONFLICT,
        QueryError::TooManyRows(_) | QueryError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
        QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
