//! The HTTP surface: thin handlers over the domain and the store, documented with utoipa.

pub mod audit;
pub mod dashboard;
pub mod extract;
pub mod observe;
pub mod ops;
pub mod plans;
pub mod protocols;
pub mod recommendations;
pub mod records;
pub mod referrals;
pub mod reports;
pub mod session_checks;
pub mod webhooks;

use crate::auth::{Caller, Scope};
use crate::error::{ApiError, Problem};
use crate::store::{AuditEntry, Store, Ts};
use actix_web::dev::ResourceDef;
use actix_web::http::Method;
use actix_web::{web, HttpRequest};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr};
use utoipa::{Modify, OpenApi};
use uuid::Uuid;

/// What handlers share.
pub struct AppState {
    pub store: Store,
    pub referral_due: crate::domain::referral::DueDurations,
    pub webhook_allow_private: bool,
    /// Wakes the outbox worker after a commit that wrote events, so delivery starts at once.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Equity report: counts below this are suppressed.
    pub report_suppression: u32,
}

impl AppState {
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
    }
}

impl AppState {
    pub fn audit_entry(
        &self,
        caller: &Caller,
        action: &'static str,
        resource_type: &'static str,
        resource_id: Option<Uuid>,
        subject: Option<&str>,
        outcome: &'static str,
    ) -> AuditEntry {
        AuditEntry {
            tenant: caller.tenant.clone(),
            actor: caller.sub.clone(),
            action,
            resource_type,
            resource_id,
            subject: subject.map(str::to_owned),
            request_id: caller.request_id.clone(),
            outcome,
            at: Ts::now(),
        }
    }

    /// Records one access; if the trail cannot be written the request fails (503), so nothing
    /// is read without a record of it.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: &'static str,
        resource_type: &'static str,
        resource_id: Option<Uuid>,
        subject: Option<&str>,
        outcome: &'static str,
    ) -> Result<(), ApiError> {
        let e = self.audit_entry(caller, action, resource_type, resource_id, subject, outcome);
        self.store.audit(&[e]).await.map_err(ApiError::from)
    }

    /// 403 unless the caller has `scope`; a refusal is audited.
    pub async fn require(
        &self,
        caller: &Caller,
        scope: Scope,
        resource_type: &'static str,
        action: &'static str,
    ) -> Result<(), ApiError> {
        if let Err(e) = caller.require(scope) {
            self.audit(caller, action, resource_type, None, None, "denied")
                .await?;
            return Err(e);
        }
        Ok(())
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "telemental",
        description = "Telemental health guideline service: preference plans, safety protocols, \
            start-of-session safety checks, modality recommendations explained by guideline rule, \
            and face-to-face fallback referrals. Every error is application/problem+json (RFC 9457).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
        version = "0.1.0"
    ),
    servers((url = "/", description = "This instance")),
    components(schemas(Problem, crate::domain::FieldError)),
    security(("bearer" = [])),
    tags(
        (name = "plans", description = "Telemental health preference plans (FLEX-*, CONN-*, EXCL-1)"),
        (name = "safety-protocols", description = "Co-developed safety protocols (SAFE-1, SAFE-2)"),
        (name = "session-checks", description = "Start-of-session safety checks and disconnections (SAFE-*, CONN-2, F2F-1)"),
        (name = "recommendations", description = "Modality recommendations explained by guideline rule, and the rule catalog"),
        (name = "referrals", description = "Face-to-face fallback referrals without delay (F2F-1)"),
        (name = "webhooks", description = "Signed outbound notifications, delivered at least once from a transactional outbox"),
        (name = "audit", description = "The audit trail"),
        (name = "reports", description = "Aggregate counts per tenant, small numbers suppressed (EXCL-1, F2F-1)"),
        (name = "operations", description = "Health, readiness, metrics")
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme and the error responses every operation can give, all pointing at
/// the one `Problem` schema, so no operation forgets to document its errors.
struct Conventions;

const ERRORS: &[(&str, &str, &str)] = &[
    ("BadRequest", "400", "Unparsable body or query"),
    ("Unauthorized", "401", "Missing or invalid bearer token"),
    ("Forbidden", "403", "The token lacks the scope"),
    ("NotFound", "404", "No such record for this tenant"),
    (
        "Conflict",
        "409",
        "Conflicts with an existing record or state",
    ),
    (
        "PreconditionFailed",
        "412",
        "If-Match does not match the current version",
    ),
    ("PayloadTooLarge", "413", "Body over 1 MiB"),
    ("UnsupportedMediaType", "415", "The body is not JSON"),
    (
        "Unprocessable",
        "422",
        "Well-formed but invalid; `errors` names every bad field",
    ),
    ("PreconditionRequired", "428", "Update without If-Match"),
    (
        "Internal",
        "500",
        "Unexpected error (never caused by the request)",
    ),
    ("Unavailable", "503", "The database is unavailable; retry"),
];

impl Modify for Conventions {
    fn modify(&self, api: &mut OpenApiDoc) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT with `sub`, `tenant`, `scope` (space-separated), `aud`, `exp`.",
                    ))
                    .build(),
            ),
        );
        for (name, _, description) in ERRORS {
            components.responses.insert(
                name.to_string(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(*description)
                        .content(
                            "application/problem+json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        )
                        .build(),
                ),
            );
        }
        for (path, item) in api.paths.paths.iter_mut() {
            let has_id = path.contains('{');
            let ops: [(&Method, &mut Option<Operation>); 4] = [
                (&Method::GET, &mut item.get),
                (&Method::POST, &mut item.post),
                (&Method::PUT, &mut item.put),
                (&Method::DELETE, &mut item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op.as_mut() else { continue };
                let public = op.security.as_ref().is_some_and(|s| {
                    serde_json::to_value(s)
                        .map(|v| v == serde_json::json!([{}]))
                        .unwrap_or(false)
                });
                let has_body = op.request_body.is_some();
                let has_query = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        serde_json::to_value(p)
                            .map(|v| v["in"] == "query")
                            .unwrap_or(false)
                    })
                });
                let mut codes: Vec<&str> = vec!["500"];
                if !public {
                    codes.extend(["401", "403", "503"]);
                }
                if has_body || has_query {
                    codes.push("400");
                }
                if has_body {
                    codes.extend(["413", "415", "422"]);
                }
                if has_id && !public {
                    codes.push("404");
                }
                let has_if_match = op.parameters.as_ref().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        serde_json::to_value(p)
                            .map(|v| v["name"] == "If-Match")
                            .unwrap_or(false)
                    })
                });
                if *method == Method::PUT {
                    codes.extend(["412", "428"]);
                } else if has_if_match {
                    codes.push("412");
                }
                // Creates (duplicates, reused idempotency keys) and state transitions.
                if *method == Method::POST && (!has_id || path.ends_with("/status")) {
                    codes.push("409");
                }
                if path == "/readyz" {
                    codes.push("503");
                }
                let mut extra = ResponsesBuilder::new();
                for (name, code, _) in ERRORS {
                    if codes.contains(code) && !op.responses.responses.contains_key(*code) {
                        extra = extra
                            .response(*code, Ref::new(format!("#/components/responses/{name}")));
                    }
                }
                op.responses.responses.extend(extra.build().responses);
                let sorted: BTreeMap<_, _> = std::mem::take(&mut op.responses.responses)
                    .into_iter()
                    .collect();
                op.responses.responses.extend(sorted);
            }
        }
    }
}

/// Registers every documented route.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.configure(ops::configure).service(
        utoipa_actix_web::scope("/v1")
            .configure(plans::configure)
            .configure(protocols::configure)
            .configure(session_checks::configure)
            .configure(recommendations::configure)
            .configure(referrals::configure)
            .configure(webhooks::configure)
            .configure(audit::configure)
            .configure(reports::configure),
    );
}

/// The OpenAPI document of the routes above.
pub fn openapi() -> OpenApiDoc {
    use utoipa_actix_web::AppExt;
    let (_, mut api) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes)
        .split_for_parts();
    // After the paths exist: the conventions are applied per operation.
    Conventions.modify(&mut api);
    api
}

/// Path templates of the document with their methods, for 405 answers.
pub struct KnownPaths(Vec<(ResourceDef, Vec<&'static str>)>);

impl KnownPaths {
    pub fn of(api: &OpenApiDoc) -> KnownPaths {
        let mut known: Vec<_> = api
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let mut methods = Vec::new();
                if item.get.is_some() {
                    methods.extend(["GET", "HEAD"]);
                }
                if item.post.is_some() {
                    methods.push("POST");
                }
                if item.put.is_some() {
                    methods.push("PUT");
                }
                if item.delete.is_some() {
                    methods.push("DELETE");
                }
                (ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        known.push((ResourceDef::new("/openapi.json"), vec!["GET", "HEAD"]));
        KnownPaths(known)
    }
}

/// Unknown path: 404; known path, other method: 405 with `Allow`.
pub async fn fallback(
    req: HttpRequest,
    known: web::Data<Arc<KnownPaths>>,
) -> Result<actix_web::HttpResponse, ApiError> {
    let path = req.path();
    Err(match known.0.iter().find(|(def, _)| def.is_match(path)) {
        Some((_, methods)) => ApiError::MethodNotAllowed(methods.join(", ")),
        None => ApiError::NotFound,
    })
}

/// Problems for actix's own extractors: a bad path id can name nothing (404), a bad query is 400.
pub fn path_error(_: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound.into()
}

pub fn query_error(e: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    let msg = match &e {
        actix_web::error::QueryPayloadError::Deserialize(d) => d.to_string(),
        other => other.to_string(),
    };
    ApiError::BadRequest(format!("invalid query: {msg}")).into()
}
