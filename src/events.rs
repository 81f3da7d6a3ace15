//! What webhooks receive: one event type per kind of change, each with a documented payload.
//!
//! Every delivery is a POST of `{"id", "type", "occurred_at", "data"}`. The `data` of a
//! resource has one shape whatever event carries it: every referral event carries the
//! referral exactly as `GET /v1/referrals/{id}` returns it (its previous status, for
//! `referral.status_changed`, is the second-to-last entry of its `history`). The OpenAPI
//! document lists the events under `webhooks`, each with its envelope schema
//! ([`add_webhooks`]).

use crate::domain::session_check::Action;
use crate::domain::types::{AppointmentType, Modality, SubjectRef};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// The kinds of event; a webhook subscribes to some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum WebhookEvent {
    /// A fallback referral was created.
    #[serde(rename = "referral.created")]
    ReferralCreated,
    /// A referral changed status.
    #[serde(rename = "referral.status_changed")]
    ReferralStatusChanged,
    /// A referral passed its due time unscheduled (sent once).
    #[serde(rename = "referral.overdue")]
    ReferralOverdue,
    /// A plan reached its review date (sent once per date).
    #[serde(rename = "plan.review_due")]
    PlanReviewDue,
    /// A start-of-session check said do not proceed: offer face-to-face.
    #[serde(rename = "session_check.do_not_proceed")]
    SessionCheckDoNotProceed,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 5] = [
        WebhookEvent::ReferralCreated,
        WebhookEvent::ReferralStatusChanged,
        WebhookEvent::ReferralOverdue,
        WebhookEvent::PlanReviewDue,
        WebhookEvent::SessionCheckDoNotProceed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::ReferralCreated => "referral.created",
            WebhookEvent::ReferralStatusChanged => "referral.status_changed",
            WebhookEvent::ReferralOverdue => "referral.overdue",
            WebhookEvent::PlanReviewDue => "plan.review_due",
            WebhookEvent::SessionCheckDoNotProceed => "session_check.do_not_proceed",
        }
    }

    /// The schema of the event's `data`, and what the event means.
    fn data_schema(self) -> (&'static str, &'static str, &'static str) {
        match self {
            WebhookEvent::ReferralCreated => (
                "Referral",
                "ReferralCreatedEvent",
                "A face-to-face fallback referral was created (F2F-1).",
            ),
            WebhookEvent::ReferralStatusChanged => (
                "Referral",
                "ReferralStatusChangedEvent",
                "A referral changed status; its previous status is the second-to-last entry of \
                 `history`.",
            ),
            WebhookEvent::ReferralOverdue => (
                "Referral",
                "ReferralOverdueEvent",
                "A referral passed its due time while still waiting for an appointment (sent \
                 once per referral).",
            ),
            WebhookEvent::PlanReviewDue => (
                "PlanReviewDue",
                "PlanReviewDueEvent",
                "A preference plan reached its review date (FLEX-4; sent once per date).",
            ),
            WebhookEvent::SessionCheckDoNotProceed => (
                "SessionCheckDoNotProceed",
                "SessionCheckDoNotProceedEvent",
                "A start-of-session check said the session must not go ahead remotely: offer a \
                 face-to-face appointment without delay (F2F-1). The service user's location is \
                 not part of the event.",
            ),
        }
    }
}

/// The `data` of `plan.review_due`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanReviewDue {
    pub plan_id: Uuid,
    pub subject: SubjectRef,
    /// The plan's version when its review date was reached.
    pub version: i64,
    #[schema(value_type = String, format = Date)]
    pub next_review_due: NaiveDate,
}

/// The `data` of `session_check.do_not_proceed`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionCheckDoNotProceed {
    pub session_check_id: Uuid,
    pub subject: SubjectRef,
    pub modality: Modality,
    pub appointment_type: AppointmentType,
    /// Always `do_not_proceed`.
    #[schema(value_type = String, pattern = "^do_not_proceed$")]
    pub outcome: &'static str,
    /// What blocked the session and what to do, each with its rule.
    pub actions: Vec<Action>,
    /// Always true: a face-to-face alternative must be offered.
    pub face_to_face_alternative_required: bool,
}

/// Adds the events to the OpenAPI document: an envelope schema per event type under
/// `components.schemas`, and the document's `webhooks` (OpenAPI 3.1), one per event type,
/// with the headers every delivery carries.
pub fn add_webhooks(doc: &mut Value) {
    let mut hooks = serde_json::Map::new();
    for e in WebhookEvent::ALL {
        let (data, envelope, what) = e.data_schema();
        doc["components"]["schemas"][envelope] = json!({
            "type": "object",
            "description": format!("The body of a `{}` delivery. {what}", e.as_str()),
            "required": ["id", "type", "occurred_at", "data"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string", "format": "uuid",
                       "description": "The event's id, also in `Telemental-Event-Id`: de-duplicate on it (delivery is at least once)."},
                "type": {"type": "string", "const": e.as_str()},
                "occurred_at": {"type": "string", "format": "date-time"},
                "data": {"$ref": format!("#/components/schemas/{data}")}
            }
        });
        let header = |name: &str, description: &str| {
            json!({"name": name, "in": "header", "required": true, "description": description,
                   "schema": {"type": "string"}})
        };
        hooks.insert(
            e.as_str().to_string(),
            json!({"post": {
                "operationId": format!("on{envelope}"),
                "summary": what,
                "tags": ["webhooks"],
                "parameters": [
                    header("Telemental-Event-Id", "The event's id (the same on every retry)."),
                    header("Telemental-Delivery-Id", "This delivery's id (one per webhook)."),
                    header("Telemental-Signature", "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\" with the webhook's secret>`.")
                ],
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": format!("#/components/schemas/{envelope}")}}}},
                "responses": {"2XX": {"description": "Acknowledged: not sent again."},
                              "default": {"description": "Not acknowledged: retried with backoff, then dead-lettered."}},
                "security": []
            }}),
        );
    }
    doc["webhooks"] = Value::Object(hooks);
}
