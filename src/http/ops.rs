//! Unauthenticated operational endpoints; none reveals personal data.

use super::observe::prometheus;
use super::AppState;
use crate::error::ApiError;
use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    pub database: &'static str,
}

/// Where to go from here: the docs and the contract.
#[derive(Serialize, ToSchema)]
pub struct Root {
    #[schema(example = "telemental")]
    pub service: &'static str,
    /// Swagger UI.
    #[schema(example = "/docs/")]
    pub docs: &'static str,
    /// The OpenAPI document.
    #[schema(example = "/openapi.json")]
    pub openapi: &'static str,
}

/// Points at the docs and the OpenAPI document.
#[utoipa::path(tag = "operations", operation_id = "getRoot",
    responses((status = 200, description = "Links to the docs and the contract", body = Root)), security(()))]
#[get("/")]
pub async fn root() -> HttpResponse {
    HttpResponse::Ok().json(Root {
        service: "telemental",
        docs: "/docs/",
        openapi: "/openapi.json",
    })
}

/// The process is up.
#[utoipa::path(tag = "operations", operation_id = "getHealth",
    responses((status = 200, description = "Up", body = Health)), security(()))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

crate::errors!(ReadinessErrors: 503);

/// The database answers and can be written: 200, else 503 (take the instance out of the load
/// balancer). A read-only or full database is not ready: every write would fail.
#[utoipa::path(tag = "operations", operation_id = "getReadiness",
    responses((status = 200, description = "Ready", body = Readiness), ReadinessErrors), security(()))]
#[get("/readyz")]
pub async fn readyz(st: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    st.store.ping().await.map_err(|_| ApiError::Unavailable)?;
    if let Err(e) = st.store.check_writable().await {
        tracing::warn!(error = %e, "readiness: the database cannot be written");
        return Err(ApiError::Unavailable);
    }
    // Nor is an instance whose keys do not open what they sealed (a key's bytes changed), or
    // that has met stored values under a key it does not have.
    match st.store.check_keys().await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            tracing::error!(problem = %why, "readiness: encryption keys are misconfigured");
            return Err(ApiError::KeyMissing);
        }
        Err(_) => return Err(ApiError::Unavailable),
    }
    Ok(HttpResponse::Ok().json(Readiness {
        status: "ready",
        database: st.store.engine(),
    }))
}

/// Prometheus text: `http_requests_total` and `http_request_duration_seconds` by method, route
/// template and status.
#[utoipa::path(tag = "operations", operation_id = "getMetrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")),
    security(()))]
#[get("/metrics")]
pub async fn metrics() -> HttpResponse {
    ::metrics::counter!("telemental_log_lines_dropped_total")
        .absolute(super::observe::dropped_log_lines());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(prometheus().render())
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(root)
        .service(healthz)
        .service(readyz)
        .service(metrics);
}
