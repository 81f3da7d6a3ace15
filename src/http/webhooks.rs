//! `/v1/webhooks`: outbound, signed notifications for scheduling systems.

use super::extract::{page_limit, parse_cursor, path_id, Input, QueryParams, ValidJson};
use super::records::split_page;
use super::AppState;
use crate::auth::{Caller, Scope};
use crate::domain::FieldError;
use crate::error::ApiError;
use crate::outbox::guard::{check_resolved, check_webhook_url, new_secret};
use crate::store::outbox::{InsertWebhook, NewWebhook};
use crate::store::Ts;
use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub use crate::events::WebhookEvent;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where to POST events: an http(s) URL whose host resolves. Loopback, private and
    /// link-local addresses are refused (also after DNS resolution) unless the service runs
    /// with TELEMENTAL_WEBHOOK_ALLOW_PRIVATE=true, as for a receiver on your own machine (the
    /// example).
    #[schema(
        example = "http://127.0.0.1:9000/hooks/telemental",
        format = "uri",
        max_length = 2048,
        pattern = "^[hH][tT][tT][pP][sS]?://[^@/?#]+([/?#].*)?$"
    )]
    pub url: String,
    /// One or more event types, each once.
    #[schema(schema_with = events_schema)]
    pub events: Vec<WebhookEvent>,
    /// What the webhook is for, up to 500 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 500,
        example = "Scheduling system: offer face-to-face appointments"
    )]
    pub description: Option<String>,
}

fn events_schema() -> utoipa::openapi::schema::Array {
    crate::domain::types::list_schema::<WebhookEvent>(1, None, true)
}

impl Input for WebhookInput {
    fn template() -> Value {
        json!({"url": "https://example.org/hook", "events": ["referral.created"]})
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// A new webhook, with its signing secret: shown this once, never again.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// HMAC-SHA256 key for `Telemental-Signature`. Store it now.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<Webhook>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookListParams {
    /// Page size, 1–200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const RESOURCE: &str = "webhook";

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status, when it answered.
    #[schema(required = true)]
    pub status_code: Option<i32>,
    /// Why the attempt failed, when it did.
    #[schema(required = true)]
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub event_id: Uuid,
    #[schema(value_type = WebhookEvent)]
    pub event_type: String,
    #[schema(value_type = DeliveryStatus)]
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    #[schema(required = true)]
    pub last_status: Option<i32>,
    #[schema(required = true)]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    pub attempt_log: Vec<DeliveryAttempt>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<Delivery>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Where a delivery stands: `pending` (to be sent or retried), `delivered`, `dead` (gave up;
/// replayable) or `cancelled` (its webhook was deleted).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Dead,
    Cancelled,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Only deliveries in this state.
    #[param(value_type = Option<DeliveryStatus>)]
    pub status: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
}

fn webhook(row: crate::store::outbox::WebhookRow) -> Webhook {
    let events = row
        .events
        .split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|s| serde_json::from_value(Value::from(s)).ok())
        .collect();
    Webhook {
        id: row.id,
        url: row.url,
        events,
        description: row.description,
        created_at: row.created_at.0,
        created_by: row.created_by,
    }
}

crate::errors!(CreateWebhookErrors: 400, 401, 403, 413, 415, 422, 500, 503);
crate::errors!(ListWebhooksErrors: 400, 401, 403, 422, 500, 503);
crate::errors!(GetWebhookErrors: 401, 403, 404, 500, 503);
crate::errors!(DeleteWebhookErrors: 401, 403, 404, 500, 503);
crate::errors!(ListWebhookDeliveriesErrors: 400, 401, 403, 404, 422, 500, 503);
crate::errors!(ReplayWebhookDeliveryErrors: 401, 403, 404, 500, 503);

/// Register a webhook.
///
/// Events are POSTed as `{"id", "type", "occurred_at", "data"}` with headers
/// `Telemental-Event-Id` and `Telemental-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
/// retried with exponential backoff until a 2xx, dead-lettered after the configured attempts.
#[utoipa::path(tag = "webhooks", operation_id = "createWebhook",
    request_body(content = WebhookInput, example = json!({
        "url": "http://127.0.0.1:9000/hooks/telemental",
        "events": ["referral.created", "referral.status_changed", "referral.overdue",
                   "plan.review_due", "session_check.do_not_proceed"],
        "description": "Scheduling system: offer face-to-face appointments"
    })),
    responses((status = 201, description = "Registered; the secret is shown once", body = WebhookCreated,
        headers(("Location" = String))), CreateWebhookErrors),
    security(("bearer" = ["webhooks:manage"])))]
#[post("/webhooks")]
pub async fn create_webhook(
    st: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<WebhookInput>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::WebhooksManage, RESOURCE, "create")
        .await?;
    let mut input = body.parse()?;
    let mut errors = Vec::new();
    match check_webhook_url(&input.url, st.webhook_allow_private) {
        Ok(url) => {
            if let Err(e) = check_resolved(&url, st.webhook_allow_private).await {
                errors.push(FieldError::new("url", e));
            }
        }
        Err(e) => errors.push(FieldError::new("url", e)),
    }
    if input.events.is_empty() {
        errors.push(FieldError::new(
            "events",
            "must name at least one event type",
        ));
    }
    crate::domain::types::check_unique(&mut errors, "events", &input.events);
    if let Some(d) = &input.description {
        if d.chars().count() > 500 {
            errors.push(FieldError::new(
                "description",
                "must be at most 500 characters",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let id = Uuid::now_v7();
    let secret = new_secret();
    // One order, so that the same events in another order are the same subscription.
    input.events.sort_by_key(|e| e.as_str());
    let events = format!(
        ",{},",
        input
            .events
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let now = Ts::now();
    let mut audit = st.audit_entry(&caller, "create", RESOURCE, Some(id), None, "success");
    audit.at = now;
    let new = NewWebhook {
        id,
        tenant: &caller.tenant,
        url: &input.url,
        events: &events,
        secret: &secret,
        description: input.description.as_deref(),
        at: now,
    };
    match st
        .store
        .insert_webhook(&new, st.webhooks_per_tenant, &audit)
        .await?
    {
        InsertWebhook::Created => {}
        InsertWebhook::Duplicate(existing) => {
            return Err(ApiError::Conflict {
                detail: "a webhook with this URL and these events exists".into(),
                existing_id: Some(existing.to_string()),
                allowed: None,
            })
        }
        InsertWebhook::TooMany => {
            return Err(ApiError::conflict(format!(
                "this tenant has the most webhooks allowed ({}, TELEMENTAL_WEBHOOKS_PER_TENANT); delete one first",
                st.webhooks_per_tenant
            )))
        }
    }
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/webhooks/{id}")))
        .json(WebhookCreated {
            webhook: Webhook {
                id,
                url: input.url,
                events: input.events,
                description: input.description,
                created_at: now.0,
                created_by: caller.sub.clone(),
            },
            secret,
        }))
}

/// List this tenant's webhooks, oldest first (secrets are never shown again).
#[utoipa::path(tag = "webhooks", operation_id = "listWebhooks", params(WebhookListParams),
    responses((status = 200, description = "A page of webhooks", body = WebhookList), ListWebhooksErrors),
    security(("bearer" = ["webhooks:manage"])))]
#[get("/webhooks")]
pub async fn list_webhooks(
    st: web::Data<AppState>,
    caller: Caller,
    q: QueryParams<WebhookListParams>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::WebhooksManage, RESOURCE, "list")
        .await?;
    let q = q.parse()?;
    let limit = page_limit(q.limit)?;
    let after = parse_cursor::<Uuid>(q.cursor.as_deref())?;
    let rows = st
        .store
        .list_webhooks(&caller.tenant, after, limit + 1)
        .await?;
    let (rows, next_cursor) = split_page(rows, limit, |r| r.id.to_string());
    let items = rows.into_iter().map(webhook).collect();
    Ok(HttpResponse::Ok().json(WebhookList { items, next_cursor }))
}

/// Read a webhook.
#[utoipa::path(tag = "webhooks", operation_id = "getWebhook",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 200, description = "The webhook", body = Webhook), GetWebhookErrors),
    security(("bearer" = ["webhooks:manage"])))]
#[get("/webhooks/{id}")]
pub async fn get_webhook(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::WebhooksManage, RESOURCE, "read")
        .await?;
    let id = path_id(&req, "id")?;
    let row = st
        .store
        .get_webhook(&caller.tenant, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(webhook(row)))
}

/// Delete a webhook; its pending deliveries are cancelled, its history stays readable.
#[utoipa::path(tag = "webhooks", operation_id = "deleteWebhook",
    params(("id" = Uuid, Path, description = "Webhook id")),
    responses((status = 204, description = "Deleted"), DeleteWebhookErrors),
    security(("bearer" = ["webhooks:manage"])))]
#[delete("/webhooks/{id}")]
pub async fn delete_webhook(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::WebhooksManage, RESOURCE, "delete")
        .await?;
    let id = path_id(&req, "id")?;
    let audit = st.audit_entry(&caller, "delete", RESOURCE, Some(id), None, "success");
    if st.store.delete_webhook(&caller.tenant, id, &audit).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        st.audit(&caller, "delete", RESOURCE, Some(id), None, "not_found")
            .await?;
        Err(ApiError::NotFound)
    }
}

/// A webhook's deliveries with every attempt, oldest first.
#[utoipa::path(tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(("id" = Uuid, Path, description = "Webhook id"), DeliveryParams),
    responses((status = 200, description = "Deliveries", body = DeliveryList), ListWebhookDeliveriesErrors),
    security(("bearer" = ["webhooks:manage"])))]
#[get("/webhooks/{id}/deliveries")]
pub async fn list_webhook_deliveries(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    q: QueryParams<DeliveryParams>,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::WebhooksManage, RESOURCE, "list_deliveries")
        .await?;
    let q = q.parse()?;
    let limit = page_limit(q.limit)?;
    if let Some(s) = &q.status {
        if !["pending", "delivered", "dead", "cancelled"].contains(&s.as_str()) {
            return Err(ApiError::BadRequest(
                "status must be pending, delivered, dead or cancelled".into(),
            ));
        }
    }
    let after = parse_cursor::<Uuid>(q.cursor.as_deref())?;
    let id = path_id(&req, "id")?;
    // A deleted webhook's history stays readable.
    if !st.store.webhook_ever_existed(&caller.tenant, id).await? {
        return Err(ApiError::NotFound);
    }
    let (rows, attempts) = st
        .store
        .list_deliveries(&caller.tenant, id, q.status.as_deref(), after, limit + 1)
        .await?;
    let (rows, next_cursor) = split_page(rows, limit, |r| r.id.to_string());
    let items = rows
        .into_iter()
        .map(|d| Delivery {
            attempt_log: attempts
                .iter()
                .filter(|a| a.delivery_id == d.id)
                .map(|a| DeliveryAttempt {
                    at: a.at.0,
                    status_code: a.status_code,
                    error: a.error.clone(),
                    duration_ms: a.duration_ms,
                })
                .collect(),
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.0,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at.0,
            delivered_at: d.delivered_at.map(|t| t.0),
        })
        .collect();
    Ok(HttpResponse::Ok().json(DeliveryList { items, next_cursor }))
}

/// Send a dead (or delivered) delivery again, from attempt one.
#[utoipa::path(tag = "webhooks", operation_id = "replayWebhookDelivery",
    params(("id" = Uuid, Path, description = "Webhook id"), ("delivery_id" = Uuid, Path, description = "Delivery id")),
    responses((status = 202, description = "Queued again"), ReplayWebhookDeliveryErrors),
    security(("bearer" = ["webhooks:manage"])))]
#[post("/webhooks/{id}/deliveries/{delivery_id}/replay")]
pub async fn replay_webhook_delivery(
    st: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    st.require(&caller, Scope::WebhooksManage, RESOURCE, "replay_delivery")
        .await?;
    let (id, delivery) = (path_id(&req, "id")?, path_id(&req, "delivery_id")?);
    // The audited resource is the webhook; the delivery is named by the request id's trail.
    let audit = st.audit_entry(
        &caller,
        "replay_delivery",
        RESOURCE,
        Some(id),
        None,
        "success",
    );
    if st
        .store
        .replay_delivery(&caller.tenant, id, delivery, &audit)
        .await?
    {
        st.wake_outbox();
        Ok(HttpResponse::Accepted().finish())
    } else {
        st.audit(
            &caller,
            "replay_delivery",
            RESOURCE,
            Some(id),
            None,
            "not_found",
        )
        .await?;
        Err(ApiError::NotFound)
    }
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_webhook)
        .service(list_webhooks)
        .service(get_webhook)
        .service(delete_webhook)
        .service(list_webhook_deliveries)
        .service(replay_webhook_delivery);
}
