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
    /// Only events about this kind of resource, e.g. `plan`.
    pub resource_type: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One audited access.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// The token's `sub`.
    pub actor: String,
    /// `create`, `read`, `update`, `list`, `read_versions`, …
    pub action: String,
    /// `plan`, `safety_protocol`, …
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub subject: Option<String>,
    pub request_id: String,
    /// `success`, `not_found` or `denied`.
    pub outcome: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventList {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

/// The audit trail of this tenant, oldest first.
#[utoipa::path(tag = "audit", operation_id = "listAuditEvents", params(AuditParams),
    responses((status = 200, description = "A page of events", body = AuditEventList)),
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
        resource_type: q.resource_type,
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
