//! `/v1/plans`: telemental health preference plans (FLEX-1, FLEX-4, CONN-1, CONN-2, EXCL-1).

use super::extract::{Input, QueryParams, ValidJson};
use super::records::{self, Ignored, Meta, PageParams, RecordListParams, Resource};
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::plan::{
    BackupContact, Barrier, DigitalExclusion, InitialConversation, Personalisation, Plan,
    PlanInput, Preferences, Resources,
};
use crate::domain::types::{CalendarDate, Notes, ReviewInterval, SubjectRef};
use crate::domain::FieldError;
use crate::error::ApiError;
use crate::store::Record;
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// A preference plan as a client sends it (create, or replace with `If-Match`).
///
/// The fields the server sets (`id`, `version`, `created_at`, `updated_at`, `updated_by`,
/// `next_review_due`, `digital_exclusion`) may be sent back as they were read, and are
/// ignored; any other unknown field is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub subject: SubjectRef,
    /// The initial conversation about telemental health (FLEX-1). Without it, recommendations
    /// ask for one and suggest in-person care.
    #[serde(default)]
    #[schema(nullable = false)]
    pub initial_conversation: Option<InitialConversation>,
    pub preferences: Preferences,
    pub resources: Resources,
    /// Sensory, psychological or other barriers to telemental health (FLEX-5).
    #[serde(default)]
    #[schema(max_items = 20)]
    pub barriers: Vec<Barrier>,
    #[serde(default)]
    pub personalisation: Personalisation,
    /// The agreed back-up way to reconnect after a disconnection (CONN-2).
    #[serde(default)]
    #[schema(nullable = false)]
    pub backup_contact: Option<BackupContact>,
    /// Days between reviews of the plan (7–365, default 90) (FLEX-4).
    #[serde(default)]
    pub review_interval_days: ReviewInterval,
    /// When the plan was last reviewed with the service user; defaults to the day of the write
    /// and may not lie in the future.
    #[serde(default)]
    pub last_reviewed_on: Option<CalendarDate>,
    #[serde(default)]
    pub notes: Option<Notes>,
    #[serde(default)]
    pub id: Ignored,
    #[serde(default)]
    pub version: Ignored,
    #[serde(default)]
    pub created_at: Ignored,
    #[serde(default)]
    pub updated_at: Ignored,
    #[serde(default)]
    pub updated_by: Ignored,
    #[serde(default)]
    pub next_review_due: Ignored,
    #[serde(default)]
    pub digital_exclusion: Ignored,
}

impl From<PlanRequest> for PlanInput {
    fn from(r: PlanRequest) -> PlanInput {
        PlanInput {
            subject: r.subject,
            initial_conversation: r.initial_conversation,
            preferences: r.preferences,
            resources: r.resources,
            barriers: r.barriers,
            personalisation: r.personalisation,
            backup_contact: r.backup_contact,
            review_interval_days: r.review_interval_days,
            last_reviewed_on: r.last_reviewed_on,
            notes: r.notes,
        }
    }
}

impl Input for PlanRequest {
    const NOT_NULL: &'static [&'static str] = &["initial_conversation", "backup_contact"];

    fn template() -> Value {
        json!({
            "subject": "Patient/123",
            "initial_conversation": {"held_on": "2026-01-01"},
            "preferences": {"default": ["video", "telephone", "in_person"]},
            "resources": {"devices": ["smartphone"], "connectivity": "reliable", "digital_skills": "basic",
                          "familiar_platforms": ["WhatsApp"]},
            "barriers": [{"kind": "hearing"}],
            "personalisation": {"participants": [{"role": "family"}]},
            "backup_contact": {"method": "telephone", "number": "+447700900123"}
        })
    }
}

/// A preference plan: the agreed content, what the service computes, and the version's
/// metadata.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Plan)]
pub struct PlanView {
    #[serde(flatten)]
    pub meta: Meta,
    pub subject: SubjectRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub initial_conversation: Option<InitialConversation>,
    pub preferences: Preferences,
    pub resources: Resources,
    pub barriers: Vec<Barrier>,
    pub personalisation: Personalisation,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub backup_contact: Option<BackupContact>,
    pub review_interval_days: ReviewInterval,
    #[schema(value_type = String, format = Date)]
    pub last_reviewed_on: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub notes: Option<Notes>,
    /// `last_reviewed_on` + `review_interval_days` (FLEX-4).
    #[schema(value_type = String, format = Date)]
    pub next_review_due: NaiveDate,
    /// Computed from `resources` (EXCL-1).
    pub digital_exclusion: DigitalExclusion,
}

/// A page of plans or plan versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanList {
    pub items: Vec<PlanView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The plans resource.
pub struct Plans;

impl Resource for Plans {
    type Kind = Plan;
    type Request = PlanRequest;
    type View = PlanView;
    const READ: Scope = Scope::PlansRead;
    const WRITE: Scope = Scope::PlansWrite;
    const PATH: &'static str = "/v1/plans";

    fn check(request: PlanRequest, today: NaiveDate) -> Result<Plan, Vec<FieldError>> {
        PlanInput::from(request).check(today)
    }

    fn view(record: Record<Plan>) -> PlanView {
        let plan = record.content;
        let (last_reviewed_on, next_review_due) = (plan.last_reviewed_on(), plan.next_review_due());
        let digital_exclusion = plan.digital_exclusion();
        let p = plan.into_content();
        PlanView {
            meta: record.meta.into(),
            subject: p.subject,
            initial_conversation: p.initial_conversation,
            preferences: p.preferences,
            resources: p.resources,
            barriers: p.barriers,
            personalisation: p.personalisation,
            backup_contact: p.backup_contact,
            review_interval_days: p.review_interval_days,
            last_reviewed_on,
            notes: p.notes,
            next_review_due,
            digital_exclusion,
        }
    }
}

crate::errors!(CreatePlanErrors: 400, 401, 403, 409, 413, 415, 422, 500, 503);
crate::errors!(GetPlanErrors: 401, 403, 404, 500, 503);
crate::errors!(ReplacePlanErrors: 400, 401, 403, 404, 412, 413, 415, 422, 428, 500, 503);
crate::errors!(ListPlanVersionsErrors: 400, 401, 403, 404, 422, 500, 503);
crate::errors!(ListPlansErrors: 400, 401, 403, 422, 500, 503);

/// Create the service user's plan.
///
/// One plan per subject per tenant: a second is refused with 409 and the existing plan's id.
#[utoipa::path(
    tag = "plans",
    operation_id = "createPlan",
    request_body(content = PlanRequest, example = json!({
        "subject": "Patient/123",
        "initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
        "preferences": {"default": ["video", "telephone", "in_person"],
                        "by_appointment_type": {"medication_review": ["telephone", "in_person"]}},
        "resources": {"devices": ["smartphone", "computer"], "connectivity": "reliable",
                      "digital_skills": "basic", "familiar_platforms": ["WhatsApp"], "private_space": "yes"},
        "barriers": [{"kind": "hearing", "note": "uses captions"}],
        "backup_contact": {"method": "telephone", "number": "+447700900123"},
        "review_interval_days": 90
    })),
    responses((status = 201, description = "Created", body = PlanView,
        headers(("ETag" = String, description = "The version, quoted"), ("Location" = String))), CreatePlanErrors),
    security(("bearer" = ["plans:write"]))
)]
#[post("/plans")]
pub async fn create_plan(
    st: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<PlanRequest>,
) -> Result<HttpResponse, ApiError> {
    records::create::<Plans>(&st, &caller, body).await
}

/// Read a plan (its current version).
#[utoipa::path(
    tag = "plans",
    operation_id = "getPlan",
    params(("id" = Uuid, Path, description = "Plan id")),
    responses((status = 200, description = "The current version", body = PlanView,
        headers(("ETag" = String, description = "The version, quoted"))), GetPlanErrors),
    security(("bearer" = ["plans:read"]))
)]
#[get("/plans/{id}")]
pub async fn get_plan(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    records::read::<Plans>(&st, &caller, &req).await
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
    request_body(content = PlanRequest, example = json!({
        "subject": "Patient/123",
        "initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
        "preferences": {"default": ["video", "telephone", "in_person"],
                        "by_appointment_type": {"medication_review": ["telephone", "in_person"]}},
        "resources": {"devices": ["smartphone", "computer"], "connectivity": "reliable",
                      "digital_skills": "basic", "familiar_platforms": ["WhatsApp"], "private_space": "yes"},
        "barriers": [{"kind": "hearing", "note": "uses captions"}],
        "backup_contact": {"method": "telephone", "number": "+447700900123"},
        "review_interval_days": 90
    })),
    responses((status = 200, description = "The new version", body = PlanView,
        headers(("ETag" = String, description = "The new version, quoted"))), ReplacePlanErrors),
    security(("bearer" = ["plans:write"]))
)]
#[put("/plans/{id}")]
pub async fn replace_plan(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: ValidJson<PlanRequest>,
) -> Result<HttpResponse, ApiError> {
    records::replace::<Plans>(&st, &caller, &req, body).await
}

/// Every version of a plan, newest first.
#[utoipa::path(
    tag = "plans",
    operation_id = "listPlanVersions",
    params(("id" = Uuid, Path, description = "Plan id"), PageParams),
    responses((status = 200, description = "Versions, newest first", body = PlanList), ListPlanVersionsErrors),
    security(("bearer" = ["plans:read"]))
)]
#[get("/plans/{id}/versions")]
pub async fn list_plan_versions(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    page: QueryParams<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) = records::versions::<Plans>(&st, &caller, &req, page).await?;
    Ok(HttpResponse::Ok().json(PlanList { items, next_cursor }))
}

/// List plans by subject, or those due for review before a date (soonest first).
#[utoipa::path(
    tag = "plans",
    operation_id = "listPlans",
    params(RecordListParams),
    responses((status = 200, description = "A page of plans", body = PlanList), ListPlansErrors),
    security(("bearer" = ["plans:read"]))
)]
#[get("/plans")]
pub async fn list_plans(
    st: web::Data<AppState>,
    caller: Caller,
    q: QueryParams<RecordListParams>,
) -> Result<HttpResponse, ApiError> {
    let (items, next_cursor) = records::list::<Plans>(&st, &caller, q).await?;
    Ok(HttpResponse::Ok().json(PlanList { items, next_cursor }))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_plan)
        .service(list_plans)
        .service(get_plan)
        .service(replace_plan)
        .service(list_plan_versions);
}
