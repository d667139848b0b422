//! In front of every `/v1` route: the bearer token, and the request metrics.

use super::{Api, ApiError};
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use subtle::ConstantTimeEq;

pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(api) = req.app_data::<web::Data<Api>>().cloned() else {
        return Err(ApiError::Internal("the API's state is missing".into()).into());
    };
    // The route's pattern, never the path itself: guild ids are not labels.
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let response = match authorize(&api, &req) {
        Ok(()) => next.call(req).await?.map_into_boxed_body(),
        Err(e) => req.into_response(e.into_response()),
    };
    api.metrics
        .requests
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    Ok(response)
}

fn authorize(api: &Api, req: &ServiceRequest) -> Result<(), ApiError> {
    let Some(expected) = api.config.token.as_deref() else {
        return Err(ApiError::Disabled);
    };
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <API_TOKEN>".into()))?;
    // Constant time in the token's contents (its length is not a secret worth hiding).
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("wrong API token".into()))
    }
}
