//! `/v1/session-checks`: the start-of-session safety check and disconnections
//! (SAFE-1, SAFE-2, SAFE-3, CONN-2, THER-2, F2F-1).

use super::extract::{Input, ValidJson};
use super::records::current;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::plan::PlanInput;
use crate::domain::protocol::SafetyProtocolInput;
use crate::domain::session_check::{
    evaluate, on_disconnection, DisconnectionAdvice, SessionCheckInput, SessionCheckOutcome,
};
use crate::error::ApiError;
use crate::store::NewCheck;
use actix_web::{get, http::header, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

const RESOURCE: &str = "session_check";

/// A recorded session check: what the clinician confirmed and the service's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionCheck {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Who ran the check (the token's `sub`).
    pub created_by: String,
    #[serde(flatten)]
    pub check: SessionCheckInput,
    #[serde(flatten)]
    pub result: SessionCheckOutcome,
    /// The safety protocol version the outcome was computed from (`null`: none on record).
    pub protocol_version: Option<i64>,
    /// The plan version used (`null`: none on record).
    pub plan_version: Option<i64>,
    /// Disconnections recorded for this session so far.
    pub disconnections: i64,
}

impl Input for SessionCheckInput {
    fn template() -> Value {
        json!({
            "subject": "Patient/123", "modality": "video", "appointment_type": "therapy",
            "service_user_location": {"description": "home"},
            "call_back_number": "+447700900123", "clinician_in_private_space": true,
            "others_present": ["trainee"], "headphones": true
        })
    }
}

/// A disconnection during a remote session. Send `{}` when there is nothing to add.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectionInput {
    /// Free text, at most 1 000 characters. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Input for DisconnectionInput {
    fn template() -> Value {
        json!({})
    }
}

/// The recorded disconnection and how to go on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Disconnection {
    pub session_check_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    #[serde(flatten)]
    pub advice: DisconnectionAdvice,
}

/// Run the start-of-session safety check for a remote session.
///
/// The outcome is computed from the check, the subject's safety protocol and plan:
/// `do_not_proceed` (a blocking action: high risk and unknown location; no confirmed call-back
/// number with sensitive topics or risk above low; clinician not private with neither others
/// disclosed nor headphones; no safety protocol at all; high risk without an in-person crisis
/// plan) — a face-to-face alternative must then be offered (F2F-1); `proceed_with_actions`
/// (something still to do); or `proceed`. Every action names its rule and code.
#[utoipa::path(
    tag = "session-checks",
    operation_id = "createSessionCheck",
    request_body = SessionCheckInput,
    responses((status = 201, description = "The check and its outcome", body = SessionCheck,
        headers(("Location" = String)))),
    security(("bearer" = ["sessions:write"]))
)]
#[post("/session-checks")]
pub async fn create_session_check(
    st: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<SessionCheckInput>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::SessionsWrite, RESOURCE, "create")
        .await?;
    let check = body.0.validate().map_err(ApiError::Invalid)?;
    let subject = check.subject.as_str().to_string();
    let protocol = current::<SafetyProtocolInput>(&st, &caller.tenant, &subject).await?;
    let plan = current::<PlanInput>(&st, &caller.tenant, &subject).await?;
    let result = evaluate(
        &check,
        protocol.as_ref().map(|p| &p.0),
        plan.as_ref().map(|p| &p.0),
    );
    let id = Uuid::now_v7();
    let body = serde_json::to_value(&check)
        .map_err(|e| ApiError::internal("session check does not serialise", e))?;
    let result_json = serde_json::to_value(&result)
        .map_err(|e| ApiError::internal("session check outcome does not serialise", e))?;
    let outcome = result_json["outcome"].as_str().unwrap_or("").to_string();
    let audit = st.audit_entry(
        &caller,
        "create",
        RESOURCE,
        Some(id),
        Some(&subject),
        "success",
    );
    // The scheduler hears of it at once, to offer a face-to-face alternative (F2F-1). The
    // service user's location is not part of the event.
    let event = (outcome == "do_not_proceed").then(|| {
        json!({
            "session_check_id": id, "subject": subject, "modality": check.modality,
            "appointment_type": check.appointment_type, "outcome": outcome,
            "actions": result.actions, "face_to_face_alternative_required": true,
        })
    });
    st.store
        .insert_session_check(
            &NewCheck {
                id,
                tenant: &caller.tenant,
                subject: &subject,
                body: &body,
                outcome: &outcome,
                result: &result_json,
                protocol_version: protocol.as_ref().map(|p| p.1),
                plan_version: plan.as_ref().map(|p| p.1),
            },
            &audit,
            event.as_ref(),
        )
        .await?;
    if event.is_some() {
        st.wake_outbox();
    }
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/session-checks/{id}")))
        .json(SessionCheck {
            id,
            created_at: audit.at.0,
            created_by: caller.sub.clone(),
            check,
            result,
            protocol_version: protocol.map(|p| p.1),
            plan_version: plan.map(|p| p.1),
            disconnections: 0,
        }))
}

async fn load(
    st: &AppState,
    caller: &Caller,
    id: Uuid,
    action: &'static str,
) -> Result<(SessionCheck, crate::store::CheckRow), ApiError> {
    let Some(row) = st.store.get_session_check(&caller.tenant, id).await? else {
        st.audit(caller, action, RESOURCE, Some(id), None, "not_found")
            .await?;
        return Err(ApiError::NotFound);
    };
    let parse = |e| ApiError::internal("stored session check does not parse", e);
    let check: SessionCheckInput = serde_json::from_value(row.body.0.clone()).map_err(parse)?;
    let result: SessionCheckOutcome =
        serde_json::from_value(row.result.0.clone()).map_err(parse)?;
    Ok((
        SessionCheck {
            id: row.id,
            created_at: row.created_at.0,
            created_by: row.created_by.clone(),
            check,
            result,
            protocol_version: row.protocol_version,
            plan_version: row.plan_version,
            disconnections: row.disconnections,
        },
        row,
    ))
}

/// Read a recorded session check.
#[utoipa::path(
    tag = "session-checks",
    operation_id = "getSessionCheck",
    params(("id" = Uuid, Path, description = "Session check id")),
    responses((status = 200, description = "The check", body = SessionCheck)),
    security(("bearer" = ["sessions:write"]))
)]
#[get("/session-checks/{id}")]
pub async fn get_session_check(
    st: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::SessionsWrite, RESOURCE, "read")
        .await?;
    let (check, row) = load(&st, &caller, id.into_inner(), "read").await?;
    st.audit(
        &caller,
        "read",
        RESOURCE,
        Some(check.id),
        Some(&row.subject),
        "success",
    )
    .await?;
    Ok(HttpResponse::Ok().json(check))
}

/// Record a disconnection and say how to reconnect.
///
/// Returns the back-up route (CONN-2); for `high` risk with sensitive topics, that the
/// emergency protocol applies if the call-back fails (SAFE-2); from the second disconnection
/// on, that a face-to-face or telephone alternative should be offered (F2F-1).
#[utoipa::path(
    tag = "session-checks",
    operation_id = "recordDisconnection",
    params(("id" = Uuid, Path, description = "Session check id")),
    request_body = DisconnectionInput,
    responses((status = 201, description = "Recorded; how to go on", body = Disconnection)),
    security(("bearer" = ["sessions:write"]))
)]
#[post("/session-checks/{id}/disconnections")]
pub async fn record_disconnection(
    st: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: ValidJson<DisconnectionInput>,
) -> Result<HttpResponse, ApiError> {
    st.require(
        &caller,
        Scope::SessionsWrite,
        RESOURCE,
        "record_disconnection",
    )
    .await?;
    let input = body.0;
    if input
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > 1000)
    {
        return Err(ApiError::invalid("note", "must be at most 1000 characters"));
    }
    let (check, row) = load(&st, &caller, id.into_inner(), "record_disconnection").await?;
    let protocol = current::<SafetyProtocolInput>(&st, &caller.tenant, &row.subject).await?;
    let audit = st.audit_entry(
        &caller,
        "record_disconnection",
        RESOURCE,
        Some(check.id),
        Some(&row.subject),
        "success",
    );
    let body = serde_json::to_value(&input)
        .map_err(|e| ApiError::internal("disconnection does not serialise", e))?;
    let n = st
        .store
        .add_disconnection(&caller.tenant, check.id, &body, &audit)
        .await?;
    let advice = on_disconnection(
        &check.check,
        &check.result,
        protocol.as_ref().map(|p| &p.0),
        u32::try_from(n).unwrap_or(u32::MAX),
    );
    Ok(HttpResponse::Created().json(Disconnection {
        session_check_id: check.id,
        recorded_at: audit.at.0,
        advice,
    }))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_session_check)
        .service(get_session_check)
        .service(record_disconnection);
}
