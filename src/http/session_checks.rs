//! `/v1/session-checks`: the start-of-session safety check and disconnections
//! (SAFE-1, SAFE-2, SAFE-3, CONN-2, THER-2, F2F-1).

use super::extract::{path_id, Input, ValidJson};
use super::records::current;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::plan::Plan;
use crate::domain::protocol::SafetyProtocol;
use crate::domain::session_check::{
    evaluate, on_disconnection, DisconnectionAdvice, Outcome, ServiceUserLocation,
    SessionCheckInput, SessionCheckOutcome,
};
use crate::domain::types::{
    AppointmentType, Modality, Name, PhoneNumber, RiskLevel, ShortNote, SubjectRef,
};
use crate::error::ApiError;
use crate::store::{CheckRecord, NewCheck};
use actix_web::{get, http::header, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

const RESOURCE: &str = "session_check";

/// A recorded session check: what the clinician confirmed and the service's answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SessionCheck)]
pub struct SessionCheckView {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Who ran the check (the token's `sub`).
    pub created_by: String,
    pub subject: SubjectRef,
    pub modality: Modality,
    pub appointment_type: AppointmentType,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub service_user_location: Option<ServiceUserLocation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub call_back_number: Option<PhoneNumber>,
    pub clinician_in_private_space: bool,
    pub others_present: Vec<Name>,
    pub headphones: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub service_user_private: Option<bool>,
    pub sensitive_topics: bool,
    pub first_remote_appointment: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub risk_level: Option<RiskLevel>,
    #[serde(flatten)]
    pub result: SessionCheckOutcome,
    /// The safety protocol version the outcome was computed from (`null`: none on record).
    #[schema(required = true)]
    pub protocol_version: Option<i64>,
    /// The plan version used (`null`: none on record).
    #[schema(required = true)]
    pub plan_version: Option<i64>,
    /// Disconnections recorded for this session so far.
    pub disconnections: i64,
}

impl SessionCheckView {
    fn of(r: CheckRecord) -> SessionCheckView {
        let c = r.check.into_content();
        SessionCheckView {
            id: r.id,
            created_at: r.created_at.0,
            created_by: r.created_by,
            subject: c.subject,
            modality: c.modality,
            appointment_type: c.appointment_type,
            service_user_location: c.service_user_location,
            call_back_number: c.call_back_number,
            clinician_in_private_space: c.clinician_in_private_space,
            others_present: c.others_present,
            headphones: c.headphones,
            service_user_private: c.service_user_private,
            sensitive_topics: c.sensitive_topics,
            first_remote_appointment: c.first_remote_appointment,
            risk_level: c.risk_level,
            result: r.result,
            protocol_version: r.protocol_version,
            plan_version: r.plan_version,
            disconnections: r.disconnections,
        }
    }
}

impl Input for SessionCheckInput {
    const NOT_NULL: &'static [&'static str] = &["service_user_location"];

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<ShortNote>,
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

crate::errors!(CreateSessionCheckErrors: 400, 401, 403, 413, 415, 422, 500, 503);
crate::errors!(GetSessionCheckErrors: 401, 403, 404, 500, 503);
crate::errors!(RecordDisconnectionErrors: 400, 401, 403, 404, 413, 415, 422, 500, 503);

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
    request_body(content = SessionCheckInput, example = json!({
        "subject": "Patient/123", "modality": "video", "appointment_type": "therapy",
        "service_user_location": {"description": "home", "address": "1 High St, Leeds"},
        "call_back_number": "+447700900123", "clinician_in_private_space": false,
        "others_present": ["trainee psychologist"], "headphones": true,
        "service_user_private": true, "sensitive_topics": true
    })),
    responses((status = 201, description = "The check and its outcome", body = SessionCheckView,
        headers(("Location" = String))), CreateSessionCheckErrors),
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
    let check = body.parse()?.check().map_err(ApiError::Invalid)?;
    let subject = check.subject.as_str().to_string();
    let protocol = current::<SafetyProtocol>(&st, &caller.tenant, &subject).await?;
    let plan = current::<Plan>(&st, &caller.tenant, &subject).await?;
    let result = evaluate(
        &check,
        protocol.as_ref().map(|p| &p.0),
        plan.as_ref().map(|p| &p.0),
    );
    let id = Uuid::now_v7();
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
    let event = (result.outcome == Outcome::DoNotProceed).then(|| {
        serde_json::to_value(crate::events::SessionCheckDoNotProceed {
            session_check_id: id,
            subject: check.subject.clone(),
            modality: check.modality,
            appointment_type: check.appointment_type,
            outcome: "do_not_proceed",
            actions: result.actions.clone(),
            face_to_face_alternative_required: true,
        })
        .unwrap_or_default()
    });
    let (protocol_version, plan_version) =
        (protocol.as_ref().map(|p| p.1), plan.as_ref().map(|p| p.1));
    st.store
        .insert_session_check(
            &NewCheck {
                id,
                tenant: &caller.tenant,
                check: &check,
                result: &result,
                protocol_version,
                plan_version,
            },
            &audit,
            event.as_ref(),
        )
        .await?;
    if event.is_some() {
        st.wake_outbox();
    }
    let view = SessionCheckView::of(CheckRecord {
        id,
        subject,
        check,
        result,
        protocol_version,
        plan_version,
        created_at: audit.at,
        created_by: caller.sub.clone(),
        disconnections: 0,
    });
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/session-checks/{id}")))
        .json(view))
}

async fn load(
    st: &AppState,
    caller: &Caller,
    id: Uuid,
    action: &'static str,
) -> Result<CheckRecord, ApiError> {
    match st.store.get_session_check(&caller.tenant, id).await? {
        Some(r) => Ok(r),
        None => {
            st.audit(caller, action, RESOURCE, Some(id), None, "not_found")
                .await?;
            Err(ApiError::NotFound)
        }
    }
}

/// Read a recorded session check.
#[utoipa::path(
    tag = "session-checks",
    operation_id = "getSessionCheck",
    params(("id" = Uuid, Path, description = "Session check id")),
    responses((status = 200, description = "The check", body = SessionCheckView), GetSessionCheckErrors),
    security(("bearer" = ["sessions:write"]))
)]
#[get("/session-checks/{id}")]
pub async fn get_session_check(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::SessionsWrite, RESOURCE, "read")
        .await?;
    let id = path_id(&req, "id")?;
    let r = load(&st, &caller, id, "read").await?;
    st.audit(
        &caller,
        "read",
        RESOURCE,
        Some(r.id),
        Some(&r.subject),
        "success",
    )
    .await?;
    Ok(HttpResponse::Ok().json(SessionCheckView::of(r)))
}

/// Record a disconnection and say how to reconnect.
///
/// Returns the back-up route (CONN-2), flagged when the subject's current plan says the
/// service user cannot use it (e.g. a call with a hearing barrier, FLEX-5); for `high` risk
/// with sensitive topics, that the emergency protocol applies if the call-back fails (SAFE-2);
/// from the second disconnection on, that an alternative should be offered (F2F-1):
/// face-to-face, and telephone or text only when the rules leave them suitable for the
/// service user under their current plan and safety protocol.
#[utoipa::path(
    tag = "session-checks",
    operation_id = "recordDisconnection",
    params(("id" = Uuid, Path, description = "Session check id")),
    request_body(content = DisconnectionInput, example = json!({"note": "the video call dropped"})),
    responses((status = 201, description = "Recorded; how to go on", body = Disconnection),
        RecordDisconnectionErrors),
    security(("bearer" = ["sessions:write"]))
)]
#[post("/session-checks/{id}/disconnections")]
pub async fn record_disconnection(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: ValidJson<DisconnectionInput>,
) -> Result<HttpResponse, ApiError> {
    st.require(
        &caller,
        Scope::SessionsWrite,
        RESOURCE,
        "record_disconnection",
    )
    .await?;
    let input = body.parse()?;
    let id = path_id(&req, "id")?;
    let r = load(&st, &caller, id, "record_disconnection").await?;
    let protocol = current::<SafetyProtocol>(&st, &caller.tenant, &r.subject).await?;
    let plan = current::<Plan>(&st, &caller.tenant, &r.subject).await?;
    let audit = st.audit_entry(
        &caller,
        "record_disconnection",
        RESOURCE,
        Some(r.id),
        Some(&r.subject),
        "success",
    );
    let n = st
        .store
        .add_disconnection(&caller.tenant, r.id, input.note.as_ref(), &audit)
        .await?;
    let advice = on_disconnection(
        &r.check,
        &r.result,
        protocol.as_ref().map(|p| &p.0),
        plan.as_ref().map(|p| &p.0),
        u32::try_from(n).unwrap_or(u32::MAX),
    );
    Ok(HttpResponse::Created().json(Disconnection {
        session_check_id: r.id,
        recorded_at: audit.at.0,
        advice,
    }))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_session_check)
        .service(get_session_check)
        .service(record_disconnection);
}
