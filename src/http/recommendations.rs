//! `POST /v1/recommendations` and `GET /v1/guideline-rules`: the guideline as explainable rules.

use super::extract::{Input, ValidJson};
use super::records::today;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::report::RecommendationTally;
use crate::domain::rules::{catalog, recommend, Recommendation, RecommendationRequest, Rule};
use crate::error::ApiError;
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
    request_body = RecommendationRequest,
    responses((status = 200, description = "The recommendation", body = RecommendationResponse)),
    security(("bearer" = ["recommendations:read"]))
)]
#[post("/recommendations")]
pub async fn recommend_modality(
    st: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<RecommendationRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::RecommendationsRead)?;
    let req = body.parse()?;
    let subject = req.subject.as_str();
    // Two indexed lookups in one round trip, and nothing else on the hot path.
    let (plan, protocol) = st.store.plan_and_protocol(&caller.tenant, subject).await?;
    let recommendation = recommend(
        &req,
        plan.as_ref().map(|p| p.0.content()),
        protocol.as_ref().map(|p| p.0.content()),
        today(),
    );
    // Counts only, for the equity report: one small write, kept apart so that it can be batched.
    let tally =
        RecommendationTally::of(&req, plan.as_ref().map(|p| &p.0), &recommendation, today());
    super::reports::count_recommendation(&st.store, &caller.tenant, tally).await;
    Ok(HttpResponse::Ok().json(RecommendationResponse {
        recommendation,
        plan_version: plan.map(|p| p.1),
        protocol_version: protocol.map(|p| p.1),
    }))
}

/// The guideline rules: id, section, title, guideline text and what the service does.
///
/// Every reason, prerequisite and action the service returns names one of these ids.
#[utoipa::path(
    tag = "recommendations",
    operation_id = "listGuidelineRules",
    responses((status = 200, description = "All 15 rules", body = GuidelineRuleList)),
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
