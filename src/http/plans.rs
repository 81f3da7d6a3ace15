//! `/v1/plans`: telemental health preference plans (FLEX-1, FLEX-4, CONN-1, CONN-2, EXCL-1).

use super::extract::{Input, ValidJson};
use super::records::{self, Meta, PageParams, RecordListParams, Resource};
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::plan::{DigitalExclusion, PlanInput};
use crate::domain::types::SubjectRef;
use crate::domain::FieldError;
use crate::error::ApiError;
use crate::store::{RecordTable, PLANS};
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

/// A preference plan as stored: the agreed content plus what the service computes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Plan {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(flatten)]
    pub content: PlanInput,
    /// `last_reviewed_on` + `review_interval_days` (FLEX-4).
    #[schema(value_type = String, format = Date)]
    pub next_review_due: NaiveDate,
    /// Computed from `resources` (EXCL-1).
    pub digital_exclusion: DigitalExclusion,
}

/// A page of plans or plan versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanList {
    pub items: Vec<Plan>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl Input for PlanInput {
    fn template() -> Value {
        json!({
            "subject": "Patient/123",
            "preferences": {"default": ["video", "telephone", "in_person"]},
            "resources": {"devices": ["smartphone"], "connectivity": "reliable", "digital_skills": "basic"}
        })
    }
    const SERVER_FIELDS: &'static [&'static str] = &[
        "id",
        "version",
        "created_at",
        "updated_at",
        "updated_by",
        "next_review_due",
        "digital_exclusion",
    ];
}

impl Resource for PlanInput {
    const TABLE: RecordTable = PLANS;
    const READ: Scope = Scope::PlansRead;
    const WRITE: Scope = Scope::PlansWrite;
    const PATH: &'static str = "/v1/plans";
    type View = Plan;

    fn subject(&self) -> &SubjectRef {
        &self.subject
    }
    fn validate(self, today: NaiveDate) -> Result<Self, Vec<FieldError>> {
        PlanInput::validate(self, today)
    }
    fn review_due(&self) -> NaiveDate {
        self.next_review_due()
    }
    fn view(meta: Meta, content: Self) -> Plan {
        Plan {
            meta,
            next_review_due: content.next_review_due(),
            digital_exclusion: content.digital_exclusion(),
            content,
        }
    }
}

/// Create the service user's plan.
///
/// One plan per subject per tenant: a second is refused with 409 and the existing plan's id.
#[utoipa::path(
    tag = "plans",
    operation_id = "createPlan",
    request_body = PlanInput,
    responses((status = 201, description = "Created", body = Plan,
        headers(("ETag" = String, description = "The version, quoted"), ("Location" = String)))),
    security(("bearer" = ["plans:write"]))
)]
#[post("/plans")]
pub async fn create_plan(
    st: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<PlanInput>,
) -> Result<HttpResponse, ApiError> {
    records::create(&st, &caller, body.0).await
}

/// Read a plan (its current version).
#[utoipa::path(
    tag = "plans",
    operation_id = "getPlan",
    params(("id" = Uuid, Path, description = "Plan id")),
    responses((status = 200, description = "The current version", body = Plan,
        headers(("ETag" = String, description = "The version, quoted")))),
    security(("bearer" = ["plans:read"]))
)]
#[get("/plans/{id}")]
pub async fn get_plan(
    st: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    records::read::<PlanInput>(&st, &caller, id.into_inner()).await
}

/// Replace a plan, making a new version.
///
/// Needs `If-Match` with the version read (`"3"`): 428 without it, 412 when another write came
/// first. The subject cannot change. Old versions stay readable.
#[utoipa::path(
    tag = "plans",
    operation_id = "replacePlan",
    params(
        ("id" = Uuid, Path, description = "Plan id"),
        ("If-Match" = String, Header, description = "The ETag of the version being replaced, e.g. \"3\"")
    ),
    request_body = PlanInput,
    responses((status = 200, description = "The new version", body = Plan,
        headers(("ETag" = String, description = "The new version, quoted")))),
    security(("bearer" = ["plans:write"]))
)]
#[put("/plans/{id}")]
pub async fn replace_plan(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: ValidJson<PlanInput>,
) -> Result<HttpResponse, ApiError> {
    records::replace(&st, &caller, &req, id.into_inner(), body.0).await
}

/// Every version of a plan, newest first.
#[utoipa::path(
    tag = "plans",
    operation_id = "listPlanVersions",
    params(("id" = Uuid, Path, description = "Plan id"), PageParams),
    responses((status = 200, description = "Versions, newest first", body = PlanList)),
    security(("bearer" = ["plans:read"]))
)]
#[get("/plans/{id}/versions")]
pub async fn list_plan_versions(
    st: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    page: web::Query<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) =
        records::versions::<PlanInput>(&st, &caller, id.into_inner(), page.into_inner()).await?;
    Ok(HttpResponse::Ok().json(PlanList { items, next_cursor }))
}

/// List plans by subject, or those due for review before a date (soonest first).
#[utoipa::path(
    tag = "plans",
    operation_id = "listPlans",
    params(RecordListParams),
    responses((status = 200, description = "A page of plans", body = PlanList)),
    security(("bearer" = ["plans:read"]))
)]
#[get("/plans")]
pub async fn list_plans(
    st: web::Data<AppState>,
    caller: Caller,
    q: web::Query<RecordListParams>,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) = records::list::<PlanInput>(&st, &caller, q.into_inner()).await?;
    Ok(HttpResponse::Ok().json(PlanList { items, next_cursor }))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_plan)
        .service(list_plans)
        .service(get_plan)
        .service(replace_plan)
        .service(list_plan_versions);
}
