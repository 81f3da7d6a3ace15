//! `/v1/safety-protocols`: co-developed safety protocols (SAFE-1, SAFE-2).

use super::extract::{Input, QueryParams, ValidJson};
use super::records::{self, Ignored, Meta, PageParams, RecordListParams, Resource};
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::protocol::{
    CrisisResponse, EmergencyContact, SafetyProtocol, SafetyProtocolInput, UsualLocation,
};
use crate::domain::types::{
    list_schema, CalendarDate, Notes, PhoneNumber, ReviewInterval, RiskLevel, SubjectRef,
    MAX_CALL_BACK_NUMBERS,
};
use crate::domain::FieldError;
use crate::error::ApiError;
use crate::store::Record;
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

/// A safety protocol as a client sends it (create, or replace with `If-Match`).
///
/// The fields the server sets (`id`, `version`, `created_at`, `updated_at`, `updated_by`,
/// `next_review_due`) may be sent back as they were read, and are ignored; any other unknown
/// field is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyProtocolRequest {
    pub subject: SubjectRef,
    /// The clinician's current assessment.
    pub risk_level: RiskLevel,
    /// Numbers to call the service user back on after a disconnection (SAFE-2); 1 to 10, each
    /// once.
    #[schema(schema_with = call_back_numbers_schema)]
    pub call_back_numbers: Vec<PhoneNumber>,
    /// Where the service user usually is during remote sessions (SAFE-1).
    #[serde(default)]
    #[schema(max_items = 20)]
    pub usual_locations: Vec<UsualLocation>,
    #[serde(default)]
    #[schema(max_items = 20)]
    pub emergency_contacts: Vec<EmergencyContact>,
    /// How a fast in-person crisis response is mobilised (SAFE-1). Required, with an
    /// `in_person_plan`, when `risk_level` is `high`.
    #[serde(default)]
    #[schema(nullable = false)]
    pub crisis_response: Option<CrisisResponse>,
    /// The day the protocol was agreed with the service user; not in the future.
    pub agreed_with_service_user_on: CalendarDate,
    /// Days between reviews (7–365, default 90).
    #[serde(default)]
    pub review_interval_days: ReviewInterval,
    #[serde(default)]
    pub notes: Option<Notes>,
    #[serde(default)]
    pub id: Ignored,
    #[serde(default)]
    pub version: Ignored,
    #[serde(default)]
    pub created_at: Ignored,
    #[serde(default)]
    pub updated_at: Ignored,
    #[serde(default)]
    pub updated_by: Ignored,
    #[serde(default)]
    pub next_review_due: Ignored,
}

fn call_back_numbers_schema() -> impl Into<RefOr<Schema>> {
    list_schema::<PhoneNumber>(1, Some(MAX_CALL_BACK_NUMBERS), true)
}

impl From<SafetyProtocolRequest> for SafetyProtocolInput {
    fn from(r: SafetyProtocolRequest) -> SafetyProtocolInput {
        SafetyProtocolInput {
            subject: r.subject,
            risk_level: r.risk_level,
            call_back_numbers: r.call_back_numbers,
            usual_locations: r.usual_locations,
            emergency_contacts: r.emergency_contacts,
            crisis_response: r.crisis_response,
            agreed_with_service_user_on: r.agreed_with_service_user_on,
            review_interval_days: r.review_interval_days,
            notes: r.notes,
        }
    }
}

impl Input for SafetyProtocolRequest {
    const NOT_NULL: &'static [&'static str] = &["crisis_response"];

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
}

/// A safety protocol: the agreed content, its next review date, and the version's metadata.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SafetyProtocol)]
pub struct SafetyProtocolView {
    #[serde(flatten)]
    pub meta: Meta,
    pub subject: SubjectRef,
    pub risk_level: RiskLevel,
    pub call_back_numbers: Vec<PhoneNumber>,
    pub usual_locations: Vec<UsualLocation>,
    pub emergency_contacts: Vec<EmergencyContact>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub crisis_response: Option<CrisisResponse>,
    pub agreed_with_service_user_on: CalendarDate,
    pub review_interval_days: ReviewInterval,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub notes: Option<Notes>,
    /// `agreed_with_service_user_on` + `review_interval_days`.
    #[schema(value_type = String, format = Date)]
    pub next_review_due: NaiveDate,
}

/// A page of safety protocols or of one protocol's versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SafetyProtocolList {
    pub items: Vec<SafetyProtocolView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The safety protocols resource.
pub struct Protocols;

impl Resource for Protocols {
    type Kind = SafetyProtocol;
    type Request = SafetyProtocolRequest;
    type View = SafetyProtocolView;
    const READ: Scope = Scope::ProtocolsRead;
    const WRITE: Scope = Scope::ProtocolsWrite;
    const PATH: &'static str = "/v1/safety-protocols";

    fn check(
        request: SafetyProtocolRequest,
        today: NaiveDate,
    ) -> Result<SafetyProtocol, Vec<FieldError>> {
        SafetyProtocolInput::from(request).check(today)
    }

    fn view(record: Record<SafetyProtocol>) -> SafetyProtocolView {
        let next_review_due = record.content.next_review_due();
        let p = record.content.into_content();
        SafetyProtocolView {
            meta: record.meta.into(),
            subject: p.subject,
            risk_level: p.risk_level,
            call_back_numbers: p.call_back_numbers,
            usual_locations: p.usual_locations,
            emergency_contacts: p.emergency_contacts,
            crisis_response: p.crisis_response,
            agreed_with_service_user_on: p.agreed_with_service_user_on,
            review_interval_days: p.review_interval_days,
            notes: p.notes,
            next_review_due,
        }
    }
}

crate::errors!(CreateSafetyProtocolErrors: 400, 401, 403, 409, 413, 415, 422, 500, 503);
crate::errors!(GetSafetyProtocolErrors: 401, 403, 404, 500, 503);
crate::errors!(ReplaceSafetyProtocolErrors: 400, 401, 403, 404, 412, 413, 415, 422, 428, 500, 503);
crate::errors!(ListSafetyProtocolVersionsErrors: 400, 401, 403, 404, 422, 500, 503);
crate::errors!(ListSafetyProtocolsErrors: 400, 401, 403, 422, 500, 503);

/// Create the service user's safety protocol.
///
/// One per subject per tenant (409 with the existing id). At least one call-back number;
/// `crisis_response` with an `in_person_plan` is required when `risk_level` is `high`.
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "createSafetyProtocol",
    request_body(content = SafetyProtocolRequest, example = json!({
        "subject": "Patient/123", "risk_level": "high",
        "call_back_numbers": ["+447700900123"],
        "usual_locations": [{"label": "home", "address": "1 High St, Leeds"}],
        "emergency_contacts": [{"name": "A. Carer", "relationship": "mother", "phone": "+447700900456"}],
        "crisis_response": {"team": "Leeds crisis team", "phone": "+441130000000",
                            "in_person_plan": "Crisis team attends within 4 hours", "hours": "24/7"},
        "agreed_with_service_user_on": "2026-11-20", "review_interval_days": 30
    })),
    responses((status = 201, description = "Created", body = SafetyProtocolView,
        headers(("ETag" = String, description = "The version, quoted"), ("Location" = String))),
        CreateSafetyProtocolErrors),
    security(("bearer" = ["protocols:write"]))
)]
#[post("/safety-protocols")]
pub async fn create_safety_protocol(
    st: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<SafetyProtocolRequest>,
) -> Result<HttpResponse, ApiError> {
    records::create::<Protocols>(&st, &caller, body).await
}

/// Read a safety protocol (its current version).
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "getSafetyProtocol",
    params(("id" = Uuid, Path, description = "Safety protocol id")),
    responses((status = 200, description = "The current version", body = SafetyProtocolView,
        headers(("ETag" = String, description = "The version, quoted"))), GetSafetyProtocolErrors),
    security(("bearer" = ["protocols:read"]))
)]
#[get("/safety-protocols/{id}")]
pub async fn get_safety_protocol(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    records::read::<Protocols>(&st, &caller, &req).await
}

/// Replace a safety protocol, making a new version (needs `If-Match`).
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "replaceSafetyProtocol",
    params(
        ("id" = Uuid, Path, description = "Safety protocol id"),
        ("If-Match" = String, Header, description = "The ETag of the version being replaced, e.g. \"3\"")
    ),
    request_body(content = SafetyProtocolRequest, example = json!({
        "subject": "Patient/123", "risk_level": "high",
        "call_back_numbers": ["+447700900123"],
        "usual_locations": [{"label": "home", "address": "1 High St, Leeds"}],
        "emergency_contacts": [{"name": "A. Carer", "relationship": "mother", "phone": "+447700900456"}],
        "crisis_response": {"team": "Leeds crisis team", "phone": "+441130000000",
                            "in_person_plan": "Crisis team attends within 4 hours", "hours": "24/7"},
        "agreed_with_service_user_on": "2026-11-20", "review_interval_days": 30
    })),
    responses((status = 200, description = "The new version", body = SafetyProtocolView,
        headers(("ETag" = String, description = "The new version, quoted"))),
        ReplaceSafetyProtocolErrors),
    security(("bearer" = ["protocols:write"]))
)]
#[put("/safety-protocols/{id}")]
pub async fn replace_safety_protocol(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: ValidJson<SafetyProtocolRequest>,
) -> Result<HttpResponse, ApiError> {
    records::replace::<Protocols>(&st, &caller, &req, body).await
}

/// Every version of a safety protocol, newest first.
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "listSafetyProtocolVersions",
    params(("id" = Uuid, Path, description = "Safety protocol id"), PageParams),
    responses((status = 200, description = "Versions, newest first", body = SafetyProtocolList),
        ListSafetyProtocolVersionsErrors),
    security(("bearer" = ["protocols:read"]))
)]
#[get("/safety-protocols/{id}/versions")]
pub async fn list_safety_protocol_versions(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    page: QueryParams<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) = records::versions::<Protocols>(&st, &caller, &req, page).await?;
    Ok(HttpResponse::Ok().json(SafetyProtocolList { items, next_cursor }))
}

/// List safety protocols by subject, or those due for review before a date.
#[utoipa::path(
    tag = "safety-protocols",
    operation_id = "listSafetyProtocols",
    params(RecordListParams),
    responses((status = 200, description = "A page of safety protocols", body = SafetyProtocolList),
        ListSafetyProtocolsErrors),
    security(("bearer" = ["protocols:read"]))
)]
#[get("/safety-protocols")]
pub async fn list_safety_protocols(
    st: web::Data<AppState>,
    caller: Caller,
    q: QueryParams<RecordListParams>,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) = records::list::<Protocols>(&st, &caller, q).await?;
    Ok(HttpResponse::Ok().json(SafetyProtocolList { items, next_cursor }))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_safety_protocol)
        .service(list_safety_protocols)
        .service(get_safety_protocol)
        .service(replace_safety_protocol)
        .service(list_safety_protocol_versions);
}
