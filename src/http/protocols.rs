//! `/v1/safety-protocols`: co-developed safety protocols (SAFE-1, SAFE-2).

use super::extract::{Input, ValidJson};
use super::records::{self, Meta, PageParams, RecordListParams, Resource};
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::protocol::SafetyProtocolInput;
use crate::domain::types::SubjectRef;
use crate::domain::FieldError;
use crate::error::ApiError;
use crate::store::{RecordTable, SAFETY_PROTOCOLS};
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// A safety protocol as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct SafetyProtocol {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(flatten)]
    pub content: SafetyProtocolInput,
    /// `agreed_with_service_user_on` + `review_interval_days`.
    #[schema(value_type = String, format = Date)]
    pub next_review_due: NaiveDate,
}

/// A page of safety protocols or of one protocol's versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SafetyProtocolList {
    pub items: Vec<SafetyProtocol>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl Input for SafetyProtocolInput {
    fn template() -> Value {
        json!({
            "subject": "Patient/123",
            "risk_level": "low",
            "call_back_numbers": ["+447700900123"],
            "usual_locations": [{"label": "home"}],
            "emergency_contacts": [{"name": "A. Carer", "phone": "+447700900456"}],
            "crisis_response": {"team": "Crisis team", "in_person_plan": "Visit"},
            "agreed_with_service_user_on": "2026-01-01"
        })
    }
    const SERVER_FIELDS: &'static [&'static str] = &[
        "id",
        "version",
        "created_at",
        "updated_at",
        "updated_by",
        "next_review_due",
    ];
}

impl Resource for SafetyProtocolInput {
    const TABLE: RecordTable = SAFETY_PROTOCOLS;
    const READ: Scope = Scope::ProtocolsRead;
    const WRITE: Scope = Scope::ProtocolsWrite;
    const PATH: &'static str = "/v1/safety-protocols";
    type View = SafetyProtocol;

    fn subject(&self) -> &SubjectRef {
        &self.subject
    }
    fn validate(self, today: NaiveDate) -> Result<Self, Vec<FieldError>> {
        SafetyProtocolInput::validate(self, today)
    }
    fn review_due(&self) -> NaiveDate {
        self.next_review_due()
    }
    fn view(meta: Meta, content: Self) -> SafetyProtocol {
        SafetyProtocol {
            meta,
            next_review_due: content.next_review_due(),
            content,
        }
    }
}

/// Create the service user's safety protocol.
///
/// One per subject per tenant (409 with the existing id). At least one call-back number;
/// `crisis_response` with an `in_person_plan` is required when `risk_level` is `high`.
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "createSafetyProtocol",
    request_body = SafetyProtocolInput,
    responses((status = 201, description = "Created", body = SafetyProtocol,
        headers(("ETag" = String, description = "The version, quoted"), ("Location" = String)))),
    security(("bearer" = ["protocols:write"]))
)]
#[post("/safety-protocols")]
pub async fn create_safety_protocol(
    st: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<SafetyProtocolInput>,
) -> Result<HttpResponse, ApiError> {
    records::create(&st, &caller, body.0).await
}

/// Read a safety protocol (its current version).
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "getSafetyProtocol",
    params(("id" = Uuid, Path, description = "Safety protocol id")),
    responses((status = 200, description = "The current version", body = SafetyProtocol,
        headers(("ETag" = String, description = "The version, quoted")))),
    security(("bearer" = ["protocols:read"]))
)]
#[get("/safety-protocols/{id}")]
pub async fn get_safety_protocol(
    st: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    records::read::<SafetyProtocolInput>(&st, &caller, id.into_inner()).await
}

/// Replace a safety protocol, making a new version (needs `If-Match`).
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "replaceSafetyProtocol",
    params(
        ("id" = Uuid, Path, description = "Safety protocol id"),
        ("If-Match" = String, Header, description = "The ETag of the version being replaced, e.g. \"3\"")
    ),
    request_body = SafetyProtocolInput,
    responses((status = 200, description = "The new version", body = SafetyProtocol,
        headers(("ETag" = String, description = "The new version, quoted")))),
    security(("bearer" = ["protocols:write"]))
)]
#[put("/safety-protocols/{id}")]
pub async fn replace_safety_protocol(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: ValidJson<SafetyProtocolInput>,
) -> Result<HttpResponse, ApiError> {
    records::replace(&st, &caller, &req, id.into_inner(), body.0).await
}

/// Every version of a safety protocol, newest first.
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "listSafetyProtocolVersions",
    params(("id" = Uuid, Path, description = "Safety protocol id"), PageParams),
    responses((status = 200, description = "Versions, newest first", body = SafetyProtocolList)),
    security(("bearer" = ["protocols:read"]))
)]
#[get("/safety-protocols/{id}/versions")]
pub async fn list_safety_protocol_versions(
    st: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    page: web::Query<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) =
        records::versions::<SafetyProtocolInput>(&st, &caller, id.into_inner(), page.into_inner())
            .await?;
    Ok(HttpResponse::Ok().json(SafetyProtocolList { items, next_cursor }))
}

/// List safety protocols by subject, or those due for review before a date.
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "listSafetyProtocols",
    params(RecordListParams),
    responses((status = 200, description = "A page of safety protocols", body = SafetyProtocolList)),
    security(("bearer" = ["protocols:read"]))
)]
#[get("/safety-protocols")]
pub async fn list_safety_protocols(
    st: web::Data<AppState>,
    caller: Caller,
    q: web::Query<RecordListParams>,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) =
        records::list::<SafetyProtocolInput>(&st, &caller, q.into_inner()).await?;
    Ok(HttpResponse::Ok().json(SafetyProtocolList { items, next_cursor }))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_safety_protocol)
        .service(list_safety_protocols)
        .service(get_safety_protocol)
        .service(replace_safety_protocol)
        .service(list_safety_protocol_versions);
}
