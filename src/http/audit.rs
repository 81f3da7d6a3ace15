//! `GET /v1/audit-events`: the append-only trail of every read and write of a record.

use super::extract::{page_limit, parse_cursor, QueryParams};
use super::records::split_page;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::store::{AuditFilter, Ts};
use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only events about this subject.
    pub subject: Option<String>,
    /// Only events at or after this instant (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only events about this kind of resource.
    pub resource_type: Option<AuditResourceType>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

/// One audited access.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// The token's `sub`.
    pub actor: String,
    #[schema(value_type = AuditAction)]
    pub action: String,
    #[schema(value_type = AuditResourceType)]
    pub resource_type: String,
    /// The record, when the access named one.
    #[schema(required = true)]
    pub resource_id: Option<Uuid>,
    /// The service user concerned, when known.
    #[schema(required = true)]
    pub subject: Option<String>,
    /// The request's `X-Request-Id`.
    pub request_id: String,
    #[schema(value_type = AuditOutcome)]
    pub outcome: String,
}

/// What was done (the document's names for the `action` values the service records).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Create,
    Read,
    Update,
    List,
    ReadVersions,
    ChangeStatus,
    RecordDisconnection,
    /// A recommendation computed from the record.
    Recommend,
    Delete,
    ListDeliveries,
    ReplayDelivery,
    /// A CDS Hooks call answered with cards.
    Hook,
    /// A CDS card issued to the EHR.
    Issue,
    FeedbackAccepted,
    FeedbackOverridden,
}

/// The kind of record an access was about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditResourceType {
    Plan,
    SafetyProtocol,
    SessionCheck,
    Referral,
    Recommendation,
    Webhook,
    AuditEvent,
    CdsService,
    CdsCard,
    EquityReport,
}

impl AuditResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResourceType::Plan => "plan",
            AuditResourceType::SafetyProtocol => "safety_protocol",
            AuditResourceType::SessionCheck => "session_check",
            AuditResourceType::Referral => "referral",
            AuditResourceType::Recommendation => "recommendation",
            AuditResourceType::Webhook => "webhook",
            AuditResourceType::AuditEvent => "audit_event",
            AuditResourceType::CdsService => "cds_service",
            AuditResourceType::CdsCard => "cds_card",
            AuditResourceType::EquityReport => "equity_report",
        }
    }
}

/// How the access ended: `denied` is a missing scope, `not_found` an unknown id.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Success,
    NotFound,
    Denied,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventList {
    pub items: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

crate::errors!(ListAuditEventsErrors: 400, 401, 403, 422, 500, 503);

/// The audit trail of this tenant, oldest first.
#[utoipa::path(tag = "audit", operation_id = "listAuditEvents", params(AuditParams),
    responses((status = 200, description = "A page of events", body = AuditEventList), ListAuditEventsErrors),
    security(("bearer" = ["audit:read"])))]
#[get("/audit-events")]
pub async fn list_audit_events(
    st: web::Data<AppState>,
    caller: Caller,
    q: QueryParams<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::AuditRead, "audit_event", "list")
        .await?;
    let q = q.parse()?;
    let limit = page_limit(q.limit)?;
    let after = parse_cursor::<Uuid>(q.cursor.as_deref())?;
    let filter = AuditFilter {
        subject: q.subject,
        resource_type: q.resource_type.map(|r| r.as_str().to_string()),
        since: q.since.map(Ts::from),
        after,
        limit: limit + 1,
    };
    let rows = st.store.list_audit(&caller.tenant, &filter).await?;
    let (rows, next_cursor) = split_page(rows, limit, |r| r.id.to_string());
    let items = rows
        .into_iter()
        .map(|r| AuditEvent {
            id: r.id,
            at: r.at.0,
            actor: r.actor,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            subject: r.subject,
            request_id: r.request_id,
            outcome: r.outcome,
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditEventList { items, next_cursor }))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_audit_events);
}
