//! `/v1/referrals`: face-to-face fallback referrals without delay (F2F-1), idempotent under
//! retries, each change announced by webhook through the outbox.

use super::extract::{etag, if_match, page_limit, parse_cursor, Input, ValidJson};
use super::records::{split_page, Meta, PageParams};
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::referral::{
    is_overdue, ReferralInput, ReferralState, ReferralStatus, StatusChange, Transition,
    TransitionError,
};
use crate::error::ApiError;
use crate::store::referrals::{ChangeError, IdemKey, Idempotent, ReferralRow, StoredResponse};
use crate::store::Ts;
use actix_web::http::header;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

const RESOURCE: &str = "referral";

/// A fallback referral as stored, with `overdue` computed at read time.
#[derive(Debug, Serialize, ToSchema)]
pub struct Referral {
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(flatten)]
    pub request: ReferralInput,
    pub status: ReferralStatus,
    /// The face-to-face appointment, once scheduled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appointment_at: Option<DateTime<Utc>>,
    /// Requested time + the urgency's duration (`TELEMENTAL_REFERRAL_DUE_*`).
    pub due_by: DateTime<Utc>,
    /// Past `due_by` while neither scheduled, completed nor cancelled.
    pub overdue: bool,
    /// Every status, oldest first, with who set it and when.
    pub history: Vec<Transition>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralList {
    pub items: Vec<Referral>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReferralListParams {
    pub subject: Option<String>,
    pub status: Option<ReferralStatus>,
    /// `true`: only overdue referrals; `false`: only those not overdue.
    pub overdue: Option<bool>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Input for ReferralInput {
    fn template() -> Value {
        json!({"subject": "Patient/123", "reason": "not_accessible", "urgency": "routine"})
    }
    const SERVER_FIELDS: &'static [&'static str] = &[
        "id",
        "version",
        "created_at",
        "updated_at",
        "updated_by",
        "status",
        "appointment_at",
        "due_by",
        "overdue",
        "history",
    ];
}

impl Input for StatusChange {
    fn template() -> Value {
        json!({"status": "accepted"})
    }
}

fn view(row: &ReferralRow, now: DateTime<Utc>) -> Result<Referral, ApiError> {
    let state: ReferralState = serde_json::from_value(row.body.0.clone())
        .map_err(|e| ApiError::internal("stored referral does not parse", e))?;
    Ok(Referral {
        meta: Meta {
            id: row.id,
            version: row.version,
            created_at: row.created_at.0,
            updated_at: row.updated_at.0,
            updated_by: row.updated_by.clone(),
        },
        overdue: is_overdue(state.status, state.due_by, now),
        request: state.request,
        status: state.status,
        appointment_at: state.appointment_at,
        due_by: state.due_by,
        history: state.history,
    })
}

fn stored(row: &ReferralRow, status: u16) -> StoredResponse {
    let body = view(row, Utc::now())
        .ok()
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Value::Null);
    StoredResponse {
        status,
        body,
        etag: Some(format!("\"{}\"", row.version)),
        location: Some(format!("/v1/referrals/{}", row.id)),
    }
}

fn respond(resp: StoredResponse, replayed: bool) -> HttpResponse {
    let mut b = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(resp.status)
            .unwrap_or(actix_web::http::StatusCode::OK),
    );
    if let Some(e) = resp.etag {
        b.insert_header((header::ETAG, e));
    }
    if resp.status == 201 {
        if let Some(l) = resp.location {
            b.insert_header((header::LOCATION, l));
        }
    }
    if replayed {
        b.insert_header(("Idempotent-Replayed", "true"));
    }
    b.json(resp.body)
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("");
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(Some(s.to_string()))
}

fn request_hash(parsed: &impl Serialize) -> String {
    // The parsed request, re-serialised: key order and spacing do not make a body "other".
    hex::encode(Sha256::digest(
        serde_json::to_vec(parsed).unwrap_or_default(),
    ))
}

fn replay_or_conflict<T>(
    r: Idempotent<T>,
    fresh: impl FnOnce(T, StoredResponse) -> HttpResponse,
) -> Result<HttpResponse, ApiError> {
    match r {
        Idempotent::Fresh(row, resp) => Ok(fresh(row, resp)),
        Idempotent::Replay(resp) => Ok(respond(resp, true)),
        Idempotent::KeyReused => Err(ApiError::conflict(
            "this Idempotency-Key was used with another request body; use a new key",
        )),
    }
}

/// Create a face-to-face fallback referral.
///
/// `due_by` follows the urgency (defaults: routine 7 days, urgent 24 h, emergency 4 h). With an
/// `Idempotency-Key`, a retry with the same body replays the first response (header
/// `Idempotent-Replayed: true`) and creates nothing, also under concurrent retries; the same key
/// with another body is 409. Keys are kept for at least 24 h. Emits `referral.created`.
#[utoipa::path(
    tag = "referrals",
    operation_id = "createReferral",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: 1–255 visible ASCII characters")),
    request_body = ReferralInput,
    responses((status = 201, description = "Created (or the replayed first response)", body = Referral,
        headers(("ETag" = String), ("Location" = String)))),
    security(("bearer" = ["referrals:write"]))
)]
#[post("/referrals")]
pub async fn create_referral(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: ValidJson<ReferralInput>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::ReferralsWrite, RESOURCE, "create")
        .await?;
    let key = idempotency_key(&req)?;
    let input = body.0.validate().map_err(ApiError::Invalid)?;
    let idem = key.as_deref().map(|k| IdemKey {
        endpoint: "POST /v1/referrals",
        key: k,
        request_hash: request_hash(&input),
    });
    let now = Ts::now();
    let id = Uuid::now_v7();
    let subject = input.subject.as_str().to_string();
    let state = ReferralState::new(input, &st.referral_due, now.0, &caller.sub);
    let due_by = Ts::from(state.due_by);
    let body = serde_json::to_value(&state)
        .map_err(|e| ApiError::internal("referral does not serialise", e))?;
    let mut audit = st.audit_entry(
        &caller,
        "create",
        RESOURCE,
        Some(id),
        Some(&subject),
        "success",
    );
    audit.at = now;
    let r = st
        .store
        .create_referral(
            &caller.tenant,
            id,
            &subject,
            &body,
            due_by,
            &audit,
            idem.as_ref(),
            |row| stored(row, 201),
        )
        .await?;
    if matches!(r, Idempotent::Fresh(..)) {
        st.wake_outbox();
    }
    replay_or_conflict(r, |_, resp| respond(resp, false))
}

/// Read a referral.
#[utoipa::path(
    tag = "referrals",
    operation_id = "getReferral",
    params(("id" = Uuid, Path, description = "Referral id")),
    responses((status = 200, description = "The referral", body = Referral, headers(("ETag" = String)))),
    security(("bearer" = ["referrals:read"]))
)]
#[get("/referrals/{id}")]
pub async fn get_referral(
    st: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::ReferralsRead, RESOURCE, "read")
        .await?;
    let id = id.into_inner();
    let Some(row) = st.store.get_referral(&caller.tenant, id).await? else {
        st.audit(&caller, "read", RESOURCE, Some(id), None, "not_found")
            .await?;
        return Err(ApiError::NotFound);
    };
    st.audit(
        &caller,
        "read",
        RESOURCE,
        Some(id),
        Some(&row.subject),
        "success",
    )
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header(etag(row.version))
        .json(view(&row, Utc::now())?))
}

/// List referrals by subject, status and `overdue`, oldest first.
#[utoipa::path(
    tag = "referrals",
    operation_id = "listReferrals",
    params(ReferralListParams),
    responses((status = 200, description = "A page of referrals", body = ReferralList)),
    security(("bearer" = ["referrals:read"]))
)]
#[get("/referrals")]
pub async fn list_referrals(
    st: web::Data<AppState>,
    caller: Caller,
    q: web::Query<ReferralListParams>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::ReferralsRead, RESOURCE, "list")
        .await?;
    let q = q.into_inner();
    let limit = page_limit(q.limit)?;
    let after = parse_cursor::<Uuid>(q.cursor.as_deref())?;
    let now = Ts::now();
    let rows = st
        .store
        .list_referrals(
            &caller.tenant,
            q.subject.as_deref(),
            q.status.map(ReferralStatus::as_str),
            q.overdue,
            now,
            after,
            limit + 1,
        )
        .await?;
    let (rows, next_cursor) = split_page(rows, limit, |r| r.id.to_string());
    let entries: Vec<_> = rows
        .iter()
        .map(|r| {
            st.audit_entry(
                &caller,
                "list",
                RESOURCE,
                Some(r.id),
                Some(&r.subject),
                "success",
            )
        })
        .collect();
    st.store.audit(&entries).await?;
    let items = rows
        .iter()
        .map(|r| view(r, now.0))
        .collect::<Result<_, _>>()?;
    Ok(HttpResponse::Ok().json(ReferralList { items, next_cursor }))
}

/// Every version of a referral, newest first.
#[utoipa::path(
    tag = "referrals",
    operation_id = "listReferralVersions",
    params(("id" = Uuid, Path, description = "Referral id"), PageParams),
    responses((status = 200, description = "Versions, newest first", body = ReferralList)),
    security(("bearer" = ["referrals:read"]))
)]
#[get("/referrals/{id}/versions")]
pub async fn list_referral_versions(
    st: web::Data<AppState>,
    caller: Caller,
    id: web::Path<Uuid>,
    page: web::Query<PageParams>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::ReferralsRead, RESOURCE, "read_versions")
        .await?;
    let id = id.into_inner();
    let page = page.into_inner();
    let limit = page_limit(page.limit)?;
    let before = parse_cursor::<i64>(page.cursor.as_deref())?;
    let rows = st
        .store
        .referral_versions(&caller.tenant, id, before, limit + 1)
        .await?;
    if rows.is_empty() && st.store.get_referral(&caller.tenant, id).await?.is_none() {
        st.audit(
            &caller,
            "read_versions",
            RESOURCE,
            Some(id),
            None,
            "not_found",
        )
        .await?;
        return Err(ApiError::NotFound);
    }
    st.audit(
        &caller,
        "read_versions",
        RESOURCE,
        Some(id),
        rows.first().map(|r| r.subject.as_str()),
        "success",
    )
    .await?;
    let (rows, next_cursor) = split_page(rows, limit, |r| r.version.to_string());
    let now = Utc::now();
    let items = rows
        .iter()
        .map(|r| {
            // A version's own status, from its snapshot.
            let mut v = view(r, now)?;
            v.overdue = is_overdue(v.status, v.due_by, now) && r.version == v.meta.version;
            Ok(v)
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(HttpResponse::Ok().json(ReferralList { items, next_cursor }))
}

/// Move a referral through its states.
///
/// requested → accepted | scheduled | cancelled; accepted → scheduled | cancelled; scheduled →
/// scheduled (reschedule) | completed | cancelled. Anything else is 409 naming the allowed
/// transitions; `scheduled` needs `appointment_at`. `If-Match` is honoured when sent;
/// `Idempotency-Key` as on create. Emits `referral.status_changed`.
#[utoipa::path(
    tag = "referrals",
    operation_id = "changeReferralStatus",
    params(
        ("id" = Uuid, Path, description = "Referral id"),
        ("If-Match" = Option<String>, Header, description = "Optional: the version being changed"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")
    ),
    request_body = StatusChange,
    responses((status = 200, description = "The referral in its new state", body = Referral, headers(("ETag" = String)))),
    security(("bearer" = ["referrals:write"]))
)]
#[post("/referrals/{id}/status")]
pub async fn change_referral_status(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: ValidJson<StatusChange>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::ReferralsWrite, RESOURCE, "change_status")
        .await?;
    let id = id.into_inner();
    let key = idempotency_key(&req)?;
    let expected = if_match(&req, false)?;
    let change = body.0;
    let endpoint = format!("POST /v1/referrals/{id}/status");
    let idem = key.as_deref().map(|k| IdemKey {
        endpoint: &endpoint,
        key: k,
        request_hash: request_hash(&change),
    });
    let now = Ts::now();
    let mut audit = st.audit_entry(
        &caller,
        "change_status",
        RESOURCE,
        Some(id),
        None,
        "success",
    );
    audit.at = now;
    let actor = caller.sub.clone();
    let r = st
        .store
        .change_referral_status(
            &caller.tenant,
            id,
            expected,
            &audit,
            idem.as_ref(),
            |row| {
                let state: ReferralState = serde_json::from_value(row.body.0.clone())
                    .map_err(|_| TransitionError::Invalid(vec![]))?;
                let next = state.apply(change, now.0, &actor)?;
                let status = next.status.as_str().to_string();
                let body =
                    serde_json::to_value(&next).map_err(|_| TransitionError::Invalid(vec![]))?;
                Ok((body, status))
            },
            |row| stored(row, 200),
        )
        .await;
    let r = match r {
        Ok(r) => r,
        Err(ChangeError::NotFound) => {
            st.audit(
                &caller,
                "change_status",
                RESOURCE,
                Some(id),
                None,
                "not_found",
            )
            .await?;
            return Err(ApiError::NotFound);
        }
        Err(ChangeError::VersionMismatch(v)) => return Err(ApiError::PreconditionFailed(v)),
        Err(ChangeError::Concurrent) => {
            return Err(ApiError::conflict(
                "the referral changed at the same time; read it and retry",
            ))
        }
        Err(ChangeError::Rejected(TransitionError::NotAllowed { from, to, allowed })) => {
            return Err(ApiError::Conflict {
                detail: format!(
                    "a {} referral cannot become {}; allowed: {}",
                    from.as_str(),
                    to.as_str(),
                    if allowed.is_empty() {
                        "none (final state)".to_string()
                    } else {
                        allowed
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                existing_id: None,
                allowed: Some(allowed.iter().map(|s| s.as_str().to_string()).collect()),
            })
        }
        Err(ChangeError::Rejected(TransitionError::Invalid(errors))) if errors.is_empty() => {
            return Err(ApiError::internal(
                "referral transition",
                "refused without a reason",
            ))
        }
        Err(ChangeError::Rejected(TransitionError::Invalid(errors))) => {
            return Err(ApiError::Invalid(errors))
        }
        Err(ChangeError::Db(e)) => return Err(e.into()),
    };
    if matches!(r, Idempotent::Fresh(..)) {
        st.wake_outbox();
    }
    replay_or_conflict(r, |_, resp| respond(resp, false))
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_referral)
        .service(list_referrals)
        .service(get_referral)
        .service(list_referral_versions)
        .service(change_referral_status);
}
