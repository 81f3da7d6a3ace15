//! `POST /v1/recommendations` and `GET /v1/guideline-rules`: the guideline as explainable rules.

use super::extract::{Input, ValidJson};
use super::records::today;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::report::RecommendationTally;
use crate::domain::rules::{catalog, recommend, Recommendation, RecommendationRequest, Rule};
use crate::error::ApiError;
use crate::store::{PLANS, SAFETY_PROTOCOLS};
use actix_web::{get, post, web, HttpResponse};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// A recommendation with the record versions it was computed from.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendationResponse {
    #[serde(flatten)]
    pub recommendation: Recommendation,
    /// The plan version used (`null`: no plan on record).
    pub plan_version: Option<i64>,
    /// The safety protocol version used (`null`: none on record).
    pub protocol_version: Option<i64>,
}

/// The rule catalog.
#[derive(Debug, Serialize, ToSchema)]
pub struct GuidelineRuleList {
    pub items: Vec<Rule>,
}

impl Input for RecommendationRequest {
    fn template() -> Value {
        json!({"subject": "Patient/123", "appointment_type": "therapy"})
    }
}

crate::errors!(RecommendModalityErrors: 400, 401, 403, 413, 415, 422, 500, 503);
crate::errors!(ListGuidelineRulesErrors: 401);

/// Recommend a modality for one appointment, explaining every option by guideline rule.
///
/// Applies the rules in the catalog's order: rule out what is not accessible (CONN-1, EXCL-1,
/// FLEX-5), then what is not appropriate (SAFE-1, SAFE-2 for the risk level), follow the
/// service user's ranking (FLEX-2, with THER-3 and FLEX-3 as tie-breaks and THER-1 for first
/// appointments): the recommendation is their highest-ranked option that remains suitable.
/// `in_person` is always offered, and a fallback referral is suggested when the recommendation
/// is `in_person` because nothing remote they ranked above it remains suitable or because they
/// ranked it first (F2F-1). `risk_level` in the request is the caller's newer assessment and
/// can only make remote care less suitable.
#[utoipa::path(
    tag = "recommendations",
    operation_id = "recommendModality",
    request_body(content = RecommendationRequest, example = json!({
        "subject": "Patient/123", "appointment_type": "therapy",
        "first_appointment": false, "sensitive_topics": true
    })),
    responses((status = 200, description = "The recommendation", body = RecommendationResponse),
        RecommendModalityErrors),
    security(("bearer" = ["recommendations:read"]))
)]
#[post("/recommendations")]
pub async fn recommend_modality(
    st: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<RecommendationRequest>,
) -> Result<HttpResponse, ApiError> {
    st.require(
        &caller,
        Scope::RecommendationsRead,
        "recommendation",
        "create",
    )
    .await?;
    let req = body.parse()?;
    let subject = req.subject.as_str();
    // Two indexed lookups in one round trip, and nothing else on the hot path.
    let (plan, protocol) = st.store.plan_and_protocol(&caller.tenant, subject).await?;
    let recommendation = recommend(
        &req,
        plan.as_ref().map(|p| &p.content),
        protocol.as_ref().map(|p| &p.content),
        today(),
    );
    // A recommendation discloses what the plan and the protocol say: it is audited as a read
    // of each (group-committed with the other requests waiting), before it is answered.
    let mut audit = Vec::with_capacity(2);
    for (resource_type, id) in [
        (PLANS.resource_type, plan.as_ref().map(|p| p.id)),
        (
            SAFETY_PROTOCOLS.resource_type,
            protocol.as_ref().map(|p| p.id),
        ),
    ] {
        if let Some(id) = id {
            audit.push(st.audit_entry(
                &caller,
                "recommend",
                resource_type,
                Some(id),
                Some(subject),
                "success",
            ));
        }
    }
    if audit.is_empty() {
        audit.push(st.audit_entry(
            &caller,
            "recommend",
            "recommendation",
            None,
            Some(subject),
            "success",
        ));
    }
    // Counts only, for the equity report, in the same group commit.
    let tally = RecommendationTally::of(
        &req,
        plan.as_ref().map(|p| &p.content),
        &recommendation,
        today(),
    );
    st.writer
        .record_recommendation(audit, &caller.tenant, tally)
        .await?;
    Ok(HttpResponse::Ok().json(RecommendationResponse {
        recommendation,
        plan_version: plan.map(|p| p.version),
        protocol_version: protocol.map(|p| p.version),
    }))
}

/// The guideline rules: id, section, title, guideline text and what the service does.
///
/// Every reason, prerequisite and action the service returns names one of these ids.
#[utoipa::path(
    tag = "recommendations",
    operation_id = "listGuidelineRules",
    responses((status = 200, description = "All 15 rules", body = GuidelineRuleList),
        ListGuidelineRulesErrors),
    security(("bearer" = []))
)]
#[get("/guideline-rules")]
pub async fn list_guideline_rules(_caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(GuidelineRuleList {
        items: catalog().to_vec(),
    })
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(recommend_modality)
        .service(list_guideline_rules);
}
