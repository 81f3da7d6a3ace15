//! `GET /cds-services`, `POST /cds-services/telemental-modality` and its `/feedback`.

use super::auth::{cors, CdsCaller};
use super::cards::{self, Assessed, CardInputs, CdsResponse, HOOK, SERVICE_ID};
use crate::domain::rules::{recommend, RecommendationRequest};
use crate::domain::types::SubjectRef;
use crate::error::{ApiError, Problem};
use crate::http::extract::{Input, ValidJson};
use crate::http::records::today;
use crate::http::AppState;
use crate::store::writer::Writer;
use crate::store::{AuditEntry, Ts};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{get, post, web, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// Errors of the CDS endpoints: the service's problems, plus 412 when the hook's context
/// lacks what the service needs.
#[derive(Debug, thiserror::Error)]
pub enum CdsError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Context(String),
}

impl From<crate::store::DbError> for CdsError {
    fn from(e: crate::store::DbError) -> Self {
        CdsError::Api(e.into())
    }
}

impl ResponseError for CdsError {
    fn status_code(&self) -> StatusCode {
        match self {
            CdsError::Api(e) => e.status_code(),
            CdsError::Context(_) => StatusCode::PRECONDITION_FAILED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            CdsError::Api(e) => e.error_response(),
            CdsError::Context(detail) => {
                let p = Problem {
                    type_: "urn:telemental:problem:cds-context".into(),
                    title: "The hook's context lacks what the service needs".into(),
                    status: 412,
                    detail: detail.clone(),
                    errors: None,
                    current_version: None,
                    existing_id: None,
                    allowed: None,
                };
                HttpResponse::PreconditionFailed()
                    .insert_header((header::CONTENT_TYPE, "application/problem+json"))
                    .body(serde_json::to_vec(&p).unwrap_or_default())
            }
        }
    }
}

/// One service of the discovery document.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CdsService {
    pub hook: &'static str,
    pub id: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub usage_requirements: &'static str,
}

/// The CDS Hooks discovery document.
#[derive(Debug, Serialize, ToSchema)]
pub struct CdsServices {
    pub services: Vec<CdsService>,
}

/// A CDS Hooks call (`appointment-book`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "hook": "appointment-book",
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "context": {
        "userId": "PractitionerRole/9",
        "patientId": "123",
        "appointments": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
            "resourceType": "Appointment", "id": "apt-1", "status": "proposed",
            "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "PHONE"}]}],
            "participant": [{"actor": {"reference": "Patient/123"}, "status": "needs-action"}]}}]}
    }
}))]
pub struct HookRequest {
    /// `appointment-book`.
    pub hook: String,
    /// The EHR's id of this hook firing.
    pub hook_instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_server: Option<String>,
    /// Not used: the service reads its own records, never the EHR's FHIR server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub fhir_authorization: Option<Value>,
    /// `patientId` (a bare id), `userId`, `appointments` (a Bundle of proposed Appointments).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub context: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub prefetch: Option<Value>,
}

impl Input for HookRequest {
    fn template() -> Value {
        json!({"hook": HOOK, "hookInstance": "00000000-0000-0000-0000-000000000000", "context": {}})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CdsOutcome)]
pub enum Outcome {
    Accepted,
    Overridden,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = CdsAcceptedSuggestion)]
pub struct AcceptedSuggestion {
    pub id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CdsOverrideReason)]
pub struct OverrideReason {
    /// One of the card's `overrideReasons`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub reason: Option<Value>,
    /// Free text; never stored or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_comment: Option<String>,
}

/// What the clinician did with one card.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CdsFeedback)]
pub struct Feedback {
    /// The card's `uuid`.
    pub card: Uuid,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_suggestions: Vec<AcceptedSuggestion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<OverrideReason>,
    pub outcome_timestamp: DateTime<Utc>,
}

/// A CDS Hooks feedback call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeedbackRequest {
    /// 1 to 100 items.
    pub feedback: Vec<Feedback>,
}

impl Input for FeedbackRequest {
    fn template() -> Value {
        json!({"feedback": [{"card": "00000000-0000-0000-0000-000000000000", "outcome": "accepted",
                             "outcomeTimestamp": "2026-11-29T10:00:00Z"}]})
    }
}

fn audit_entry(
    caller: &CdsCaller,
    action: &'static str,
    resource_type: &'static str,
    resource_id: Option<Uuid>,
    subject: Option<&str>,
    at: Ts,
) -> AuditEntry {
    AuditEntry {
        tenant: caller.tenant.clone(),
        actor: caller.actor.clone(),
        action,
        resource_type,
        resource_id,
        subject: subject.map(str::to_owned),
        request_id: caller.request_id.clone(),
        outcome: "success",
        at,
    }
}

crate::errors!(CdsDiscoveryErrors: 401, 500, 503);
crate::errors!(CdsHookErrors: 400, 401, 413, 415, 422, 500, 503);
crate::errors!(CdsFeedbackErrors: 400, 401, 413, 415, 422, 500, 503);

/// CDS Hooks discovery: the `telemental-modality` service for `appointment-book`.
///
/// Authenticated like the hook itself (an EHR's JWT from the JWKS).
#[utoipa::path(tag = "cds-hooks", operation_id = "cdsDiscovery",
    responses((status = 200, description = "The services", body = CdsServices), CdsDiscoveryErrors),
    security(("bearer" = [])))]
#[get("")]
pub async fn discovery(
    caller: CdsCaller,
    writer: web::Data<Writer>,
) -> Result<HttpResponse, CdsError> {
    caller.commit(&writer, Vec::new()).await?;
    Ok(HttpResponse::Ok().json(CdsServices {
        services: vec![CdsService {
            hook: HOOK,
            id: SERVICE_ID,
            title: "Telemental health modality",
            description: "While an appointment is booked, checks each proposed appointment's \
                modality (face-to-face, video, telephone, secure messaging) against the service \
                user's telemental health plan, safety protocol and the Telemental Health Top Tips \
                guideline; warns when it is unsuitable or against the plan, suggests the \
                recommended modality or a face-to-face referral, and lists what to put in place \
                before remote care. Every card names its guideline rules.",
            usage_requirements: "The patient's plan and safety protocol must be recorded in \
                telemental for the same tenant (the token's tenant claim). The modality is read \
                from v3 ParticipationMode codings (FACE, VIDEOCONF, PHONE, written codes), \
                SNOMED CT 448337001/185317003, v3 ActCode VR/AMB, or the R5 class and \
                virtualService extensions. No prefetch is needed.",
        }],
    }))
}

/// The `appointment-book` hook: cards for the proposed appointments.
///
/// For each proposed Appointment, reads its modality, runs the recommendation for the patient
/// (`Patient/<patientId>`) and answers cards: `warning` (`critical` at high risk without a usable
/// safety protocol) when the modality is unsuitable or not the recommended one, with
/// suggestions to book the recommended modality or to create a face-to-face ServiceRequest;
/// `info` for prerequisites of remote care. No card when the appointment fits. 412 when the
/// context has no `patientId` or no Appointment. Needs an EHR's JWT (RS256/RS384/ES256/ES384
/// from the JWKS, `aud` the configured audience or this URL, a `tenant`, a fresh `jti`).
#[utoipa::path(tag = "cds-hooks", operation_id = "cdsTelementalModality",
    request_body = HookRequest,
    responses(
        (status = 200, description = "Cards (possibly none)", body = CdsResponse),
        (status = 412, description = "The context lacks patientId or proposed appointments", body = Problem, content_type = "application/problem+json"),
        CdsHookErrors,
    ),
    security(("bearer" = [])))]
#[post("/telemental-modality")]
pub async fn telemental_modality(
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: CdsCaller,
    body: ValidJson<HookRequest>,
) -> Result<HttpResponse, CdsError> {
    let req = body.parse()?;
    if req.hook != HOOK {
        return Err(
            ApiError::invalid("hook", format!("this service answers the {HOOK} hook")).into(),
        );
    }
    if req.hook_instance.trim().is_empty() {
        return Err(ApiError::invalid("hookInstance", "must not be empty").into());
    }
    let ctx = cards::read_context(&req.context).map_err(CdsError::Context)?;
    let subject = SubjectRef::parse(&ctx.subject).map_err(CdsError::Context)?;
    let (plan, protocol) = st
        .store
        .plan_and_protocol(&caller.tenant, &ctx.subject)
        .await?;
    let (plan, protocol) = (plan.map(|p| p.content), protocol.map(|p| p.content));
    let today = today();
    let recommendations: Vec<_> = ctx
        .appointments
        .iter()
        .map(|a| {
            recommend(
                &RecommendationRequest {
                    subject: subject.clone(),
                    appointment_type: a.appointment_type,
                    first_appointment: false,
                    sensitive_topics: false,
                    risk_level: None,
                },
                plan.as_ref(),
                protocol.as_ref(),
                today,
            )
        })
        .collect();
    let assessed: Vec<Assessed> = ctx
        .appointments
        .iter()
        .zip(&recommendations)
        .map(|(appointment, recommendation)| Assessed {
            appointment,
            recommendation,
        })
        .collect();
    let inputs = CardInputs {
        context: &ctx,
        protocol: protocol.as_ref(),
        today,
    };
    let cards = cards::cards(&inputs, &assessed, Uuid::new_v4);
    // The call (a read of the plan and protocol) and each card issued, so feedback on a card
    // can be traced to its patient.
    let at = Ts::now();
    let mut audit = vec![audit_entry(
        &caller,
        "hook",
        "cds_service",
        None,
        Some(&ctx.subject),
        at,
    )];
    audit.extend(cards.iter().map(|c| {
        audit_entry(
            &caller,
            "issue",
            "cds_card",
            Some(c.uuid),
            Some(&ctx.subject),
            at,
        )
    }));
    caller.commit(&writer, audit).await?;
    Ok(HttpResponse::Ok().json(CdsResponse { cards }))
}

/// Feedback on cards: accepted (with the suggestions taken) or overridden (with a reason).
///
/// Each item is audited (`feedback_accepted` or `feedback_overridden` on the card's uuid); a
/// free-text `userComment` is neither stored nor logged.
#[utoipa::path(tag = "cds-hooks", operation_id = "cdsTelementalModalityFeedback",
    request_body = FeedbackRequest,
    responses((status = 200, description = "Accepted"), CdsFeedbackErrors),
    security(("bearer" = [])))]
#[post("/telemental-modality/feedback")]
pub async fn feedback(
    writer: web::Data<Writer>,
    caller: CdsCaller,
    body: ValidJson<FeedbackRequest>,
) -> Result<HttpResponse, CdsError> {
    let items = body.parse()?.feedback;
    if items.is_empty() || items.len() > 100 {
        return Err(ApiError::invalid("feedback", "must hold 1 to 100 items").into());
    }
    let at = Ts::now();
    let audit: Vec<AuditEntry> = items
        .iter()
        .map(|f| {
            let action = match f.outcome {
                Outcome::Accepted => "feedback_accepted",
                Outcome::Overridden => "feedback_overridden",
            };
            audit_entry(&caller, action, "cds_card", Some(f.card), None, at)
        })
        .collect();
    caller.commit(&writer, audit).await?;
    Ok(HttpResponse::Ok().finish())
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(
        utoipa_actix_web::scope("/cds-services")
            .wrap(from_fn(cors))
            .service(discovery)
            .service(telemental_modality)
            .service(feedback),
    );
}
