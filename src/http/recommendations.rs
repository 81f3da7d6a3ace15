//! `POST /v1/recommendations` and `GET /v1/guideline-rules`: the guideline as explainable rules.

use super::extract::{Input, ValidJson};
use super::records::today;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::plan::PlanInput;
use crate::domain::protocol::SafetyProtocolInput;
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
/// appointments); `in_person` is always offered and a fallback referral is suggested when remote
/// care is not preferred, appropriate or accessible (F2F-1). `risk_level` in the request is the
/// caller's newer assessment and can only make remote care less suitable.
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
    let req = body.0;
    let subject = req.subject.as_str();
    // Two indexed lookups in one round trip, and nothing else on the hot path.
    let (plan, protocol) = st.store.plan_and_protocol(&caller.tenant, subject).await?;
    let plan = parse_stored::<PlanInput>(plan)?;
    let protocol = parse_stored::<SafetyProtocolInput>(protocol)?;
    let recommendation = recommend(
        &req,
        plan.as_ref().map(|p| &p.0),
        protocol.as_ref().map(|p| &p.0),
        today(),
    );
    Ok(HttpResponse::Ok().json(RecommendationResponse {
        recommendation,
        plan_version: plan.map(|p| p.1),
        protocol_version: protocol.map(|p| p.1),
    }))
}

fn parse_stored<T: serde::de::DeserializeOwned>(
    row: Option<(String, i64)>,
) -> Result<Option<(T, i64)>, ApiError> {
    row.map(|(body, version)| {
        serde_json::from_str(&body)
            .map(|t| (t, version))
            .map_err(|e| ApiError::internal("stored record does not parse", e))
    })
    .transpose()
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
