//! The HTTP surface: thin handlers over the domain and the store, documented with utoipa.

pub mod audit;
pub mod cors;
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
use actix_web::{web, HttpRequest};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr};
use utoipa::{Modify, OpenApi};
use uuid::Uuid;

/// What handlers share.
pub struct AppState {
    pub store: Store,
    /// Writes audit rows of reads and denials by group commit: one transaction (and, on
    /// SQLite, one flush) for every request waiting.
    pub writer: crate::store::writer::Writer,
    pub referral_due: crate::domain::referral::DueDurations,
    pub webhook_allow_private: bool,
    /// Most webhooks one tenant may register.
    pub webhooks_per_tenant: u32,
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
        self.writer
            .record(None, vec![e])
            .await
            .map(|_| ())
            .map_err(ApiError::from)
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
        description = include_str!("docs.md"),
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
        version = "0.1.0"
    ),
    servers((url = "/", description = "This instance")),
    // Device is named only through a `schema_with` list, which utoipa does not follow.
    components(schemas(
        Problem,
        crate::domain::FieldError,
        crate::domain::plan::Device,
        crate::events::PlanReviewDue,
        crate::events::SessionCheckDoNotProceed
    )),
    security(("bearer" = [])),
    tags(
        (name = "plans", description = "Telemental health preference plans (FLEX-*, CONN-*, EXCL-1)"),
        (name = "safety-protocols", description = "Co-developed safety protocols (SAFE-1, SAFE-2)"),
        (name = "session-checks", description = "Start-of-session safety checks and disconnections (SAFE-*, CONN-2, F2F-1)"),
        (name = "recommendations", description = "Modality recommendations explained by guideline rule, and the rule catalog"),
        (name = "referrals", description = "Face-to-face fallback referrals without delay (F2F-1)"),
        (name = "webhooks", description = "Signed outbound notifications, delivered at least once from a transactional outbox"),
        (name = "audit", description = "The audit trail"),
        (name = "fhir", description = "FHIR R4 read views (application/fhir+json): CarePlan, ServiceRequest; errors are OperationOutcomes"),
        (name = "cds-hooks", description = "CDS Hooks 2.0 appointment-book service for EHRs"),
        (name = "reports", description = "Aggregate counts per tenant, small numbers suppressed (EXCL-1, F2F-1)"),
        (name = "operations", description = "Health, readiness, metrics")
    )
)]
pub struct ApiDoc;

/// Declares the error statuses one operation can return, next to its handler, as a type for
/// the `responses(...)` of its `#[utoipa::path]`: `errors!(CreatePlanErrors: 400, 401, 403)`.
/// Each status points at its shared response in `#/components/responses` (see [`ERRORS`]).
/// The statuses are read off the handler, not guessed from the path: `tests/api/contract.rs`
/// provokes each one over HTTP and fails on any status an operation returns undocumented.
#[macro_export]
macro_rules! errors {
    ($name:ident: $($code:literal),+ $(,)?) => {
        #[doc = concat!("The error statuses of one operation: ", $(stringify!($code), " ",)+)]
        pub struct $name;
        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                [$($code),+]
                    .into_iter()
                    .map(|code: u16| {
                        (code.to_string(), utoipa::openapi::RefOr::Ref($crate::http::error_ref(code)))
                    })
                    .collect()
            }
        }
    };
}

/// The shared error responses: component name, status and description. Every one has the
/// `Problem` schema and its own example (from [`ApiError::example`]).
pub const ERRORS: &[(&str, u16, &str)] = &[
    ("BadRequest", 400, "Unparsable body, bad query parameter or bad header"),
    ("Unauthorized", 401, "Missing or invalid bearer token"),
    ("Forbidden", 403, "The token lacks the operation's scope"),
    ("NotFound", 404, "No such record for this tenant (also a malformed id)"),
    ("Conflict", 409, "Conflicts with an existing record, the record's state, or an earlier use of the Idempotency-Key"),
    ("PreconditionFailed", 412, "If-Match does not match the current version"),
    ("PayloadTooLarge", 413, "Body over 1 MiB"),
    ("UnsupportedMediaType", 415, "The body is not JSON"),
    ("Unprocessable", 422, "Well-formed but invalid; `errors` names every bad field"),
    ("PreconditionRequired", 428, "Replace without If-Match"),
    ("Internal", 500, "Unexpected error, logged with its cause (never caused by the request)"),
    ("Unavailable", 503, "The database is unavailable; retry after `Retry-After` seconds"),
];

/// `#/components/responses/<name>` of an error status declared with [`errors!`].
pub fn error_ref(code: u16) -> Ref {
    let name = ERRORS
        .iter()
        .find(|(_, c, _)| *c == code)
        .map(|(name, _, _)| *name)
        .unwrap_or_else(|| panic!("no shared error response for status {code}"));
    Ref::new(format!("#/components/responses/{name}"))
}

/// Adds the bearer scheme, the shared error responses (each with its own example and headers)
/// and the scopes in each operation's description; orders every operation's responses.
struct Conventions;

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
                        "A JWT with `sub`, `tenant`, `scope` (space-separated), `aud`, `exp`: \
                         the dev token printed at start in dev mode, one minted with \
                         `telemental token`, or one from your identity provider (JWKS).",
                    ))
                    .build(),
            ),
        );
        for (name, code, description) in ERRORS {
            let example = serde_json::to_value(ApiError::example(*code).problem())
                .expect("a problem serialises");
            let mut response = ResponseBuilder::new().description(*description).content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .example(Some(example))
                    .build(),
            );
            for (header, text) in ApiError::example(*code).documented_headers() {
                response = response.header(
                    header,
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some(text))
                        .build(),
                );
            }
            components
                .responses
                .insert(name.to_string(), RefOr::T(response.build()));
        }
        for item in api.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ] {
                let Some(op) = op.as_mut() else { continue };
                note_scopes(op);
                let sorted: BTreeMap<_, _> = std::mem::take(&mut op.responses.responses)
                    .into_iter()
                    .collect();
                op.responses.responses.extend(sorted);
            }
        }
    }
}

/// OpenAPI links: which response feeds which operation, so generated clients and stateful
/// testers can chain create → read → replace. Source operation, status, target operation,
/// parameters (name, runtime expression) and request body (`None`: the client's own).
type LinkRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

const ID: &[(&str, &str)] = &[("id", "$response.body#/id")];
const SAME_ID: &[(&str, &str)] = &[("id", "$request.path.id")];
const FIRST_ID: &[(&str, &str)] = &[("id", "$response.body#/items/0/id")];
/// Replace what was read: the same id, its ETag, and the body as read (the server's fields are
/// ignored on the way back in).
const PUT_BACK: &[(&str, &str)] = &[
    ("id", "$response.body#/id"),
    ("If-Match", "$response.header.ETag"),
];

const LINKS: &[LinkRow] = &[
    ("createPlan", "201", "getPlan", ID, None),
    (
        "createPlan",
        "201",
        "replacePlan",
        PUT_BACK,
        Some("$response.body"),
    ),
    ("createPlan", "201", "listPlanVersions", ID, None),
    (
        "createPlan",
        "201",
        "recommendModality",
        &[],
        Some(r#"{"subject": "$response.body#/subject", "appointment_type": "therapy"}"#),
    ),
    (
        "getPlan",
        "200",
        "replacePlan",
        PUT_BACK,
        Some("$response.body"),
    ),
    ("getPlan", "200", "listPlanVersions", SAME_ID, None),
    ("replacePlan", "200", "getPlan", SAME_ID, None),
    ("listPlans", "200", "getPlan", FIRST_ID, None),
    ("createSafetyProtocol", "201", "getSafetyProtocol", ID, None),
    (
        "createSafetyProtocol",
        "201",
        "replaceSafetyProtocol",
        PUT_BACK,
        Some("$response.body"),
    ),
    (
        "createSafetyProtocol",
        "201",
        "listSafetyProtocolVersions",
        ID,
        None,
    ),
    (
        "createSafetyProtocol",
        "201",
        "createSessionCheck",
        &[],
        Some(
            r#"{"subject": "$response.body#/subject", "modality": "video", "appointment_type": "therapy", "clinician_in_private_space": true}"#,
        ),
    ),
    (
        "getSafetyProtocol",
        "200",
        "replaceSafetyProtocol",
        PUT_BACK,
        Some("$response.body"),
    ),
    (
        "getSafetyProtocol",
        "200",
        "listSafetyProtocolVersions",
        SAME_ID,
        None,
    ),
    (
        "replaceSafetyProtocol",
        "200",
        "getSafetyProtocol",
        SAME_ID,
        None,
    ),
    (
        "listSafetyProtocols",
        "200",
        "getSafetyProtocol",
        FIRST_ID,
        None,
    ),
    ("createSessionCheck", "201", "getSessionCheck", ID, None),
    ("createSessionCheck", "201", "recordDisconnection", ID, None),
    (
        "recordDisconnection",
        "201",
        "getSessionCheck",
        &[("id", "$request.path.id")],
        None,
    ),
    ("createReferral", "201", "getReferral", ID, None),
    ("createReferral", "201", "listReferralVersions", ID, None),
    (
        "createReferral",
        "201",
        "changeReferralStatus",
        &[
            ("id", "$response.body#/id"),
            ("If-Match", "$response.header.ETag"),
        ],
        None,
    ),
    (
        "getReferral",
        "200",
        "changeReferralStatus",
        &[
            ("id", "$response.body#/id"),
            ("If-Match", "$response.header.ETag"),
        ],
        None,
    ),
    ("changeReferralStatus", "200", "getReferral", SAME_ID, None),
    (
        "changeReferralStatus",
        "200",
        "listReferralVersions",
        SAME_ID,
        None,
    ),
    ("listReferrals", "200", "getReferral", FIRST_ID, None),
    ("createWebhook", "201", "getWebhook", ID, None),
    ("createWebhook", "201", "listWebhookDeliveries", ID, None),
    ("createWebhook", "201", "deleteWebhook", ID, None),
    ("listWebhooks", "200", "getWebhook", FIRST_ID, None),
    (
        "listWebhooks",
        "200",
        "listWebhookDeliveries",
        FIRST_ID,
        None,
    ),
    ("listWebhooks", "200", "deleteWebhook", FIRST_ID, None),
    (
        "listWebhookDeliveries",
        "200",
        "replayWebhookDelivery",
        &[
            ("id", "$request.path.id"),
            ("delivery_id", "$response.body#/items/0/id"),
        ],
        None,
    ),
];

/// Adds [`LINKS`] to the serialised document. (utoipa 5 writes a `Link`'s fields in
/// snake_case, `operation_id`, which no client reads, so links are written as JSON here.)
fn add_links(doc: &mut serde_json::Value) {
    use serde_json::{json, Map, Value};
    for (source, status, target, params, body) in LINKS {
        let op = doc["paths"]
            .as_object_mut()
            .into_iter()
            .flat_map(|paths| paths.values_mut())
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .find(|op| op["operationId"] == *source)
            .unwrap_or_else(|| panic!("link from unknown operation {source}"));
        let response = op["responses"][*status]
            .as_object_mut()
            .unwrap_or_else(|| panic!("link from {source} {status}: no such response"));
        let mut link = Map::new();
        link.insert("operationId".into(), json!(target));
        if !params.is_empty() {
            let params: Map<String, Value> = params
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            link.insert("parameters".into(), Value::Object(params));
        }
        if let Some(body) = body {
            let body = serde_json::from_str(body).unwrap_or_else(|_| json!(body));
            link.insert("requestBody".into(), body);
        }
        response
            .entry("links")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("links is an object")
            .insert(target.to_string(), Value::Object(link));
    }
}

/// Appends "Scope: `x`" (or "No token needed") to an operation's description, from its
/// security requirement, so the docs page says what each operation needs.
fn note_scopes(op: &mut Operation) {
    let security = serde_json::to_value(&op.security).unwrap_or_default();
    let scopes: Vec<String> = security
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|req| req.get("bearer"))
        .filter_map(|s| s.as_array())
        .flatten()
        .filter_map(|s| s.as_str().map(|s| format!("`{s}`")))
        .collect();
    let needs_token = security
        .as_array()
        .is_none_or(|reqs| reqs.iter().any(|r| r.get("bearer").is_some()));
    let note = match (needs_token, scopes.is_empty()) {
        (false, _) => "No token needed.".to_string(),
        (true, true) => "Needs a valid token (any scope).".to_string(),
        (true, false) => format!("Scope: {}.", scopes.join(" ")),
    };
    op.description = Some(match op.description.take() {
        Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
        _ => note,
    });
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
    // The EHR-facing views: FHIR R4 and CDS Hooks.
    cfg.configure(crate::fhir::configure)
        .configure(crate::cds::configure);
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
    crate::fhir::document_errors(&mut api);
    api
}

/// The OpenAPI document as served at `/openapi.json` and committed: [`openapi`] with its links.
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).expect("the document serialises");
    add_links(&mut doc);
    add_conditions(&mut doc);
    crate::events::add_webhooks(&mut doc);
    doc
}

/// Rules between fields that the service enforces and JSON Schema 2020-12 can state with
/// `if`/`then`/`else` (utoipa's derive cannot, so they are added to the JSON):
/// - a `high` risk safety protocol needs a `crisis_response` with an `in_person_plan`
///   (SAFE-1, `SafetyProtocolInput::check`);
/// - a referral becomes `scheduled` with an `appointment_at`, and only then has one
///   (`referral::StatusChange`).
fn add_conditions(doc: &mut serde_json::Value) {
    use serde_json::json;
    let schemas = &mut doc["components"]["schemas"];
    let conditions = [
        (
            "SafetyProtocolRequest",
            json!({
                "if": {"properties": {"risk_level": {"const": "high"}}, "required": ["risk_level"]},
                "then": {
                    "required": ["crisis_response"],
                    "properties": {"crisis_response": {
                        "required": ["in_person_plan"],
                        "properties": {"in_person_plan": {"$ref": "#/components/schemas/PlanText"}}
                    }}
                }
            }),
        ),
        (
            "StatusChange",
            json!({
                "if": {"properties": {"status": {"const": "scheduled"}}, "required": ["status"]},
                "then": {
                    "required": ["appointment_at"],
                    "properties": {"appointment_at": {"$ref": "#/components/schemas/Timestamp"}}
                },
                "else": {"properties": {"appointment_at": {"type": "null"}}}
            }),
        ),
    ];
    for (name, condition) in conditions {
        let schema = schemas[name]
            .as_object_mut()
            .unwrap_or_else(|| panic!("no schema {name}"));
        for (k, v) in condition.as_object().expect("an object") {
            schema.insert(k.clone(), v.clone());
        }
    }
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
    // Every template the path matches (`/fhir/R4/CarePlan/_search` is also a `{id}`).
    let mut allowed: Vec<&str> = Vec::new();
    for (_, methods) in known.0.iter().filter(|(def, _)| def.is_match(path)) {
        for m in methods {
            if !allowed.contains(m) {
                allowed.push(m);
            }
        }
    }
    let err = if allowed.is_empty() {
        ApiError::NotFound
    } else {
        ApiError::MethodNotAllowed(allowed.join(", "))
    };
    // FHIR clients expect every error as an OperationOutcome.
    if path.starts_with("/fhir/") {
        return Ok(crate::fhir::fallback_error(err));
    }
    Err(err)
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

#[cfg(test)]
mod schema_names {
    /// utoipa keys components by name and a second type of the same name silently replaces
    /// the first (a CDS `Action` once replaced the session check's `Action`), so every type
    /// that derives `ToSchema` must end up with its own name.
    #[test]
    fn every_schema_name_is_used_once() {
        fn walk(dir: &std::path::Path, files: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, files);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut seen: std::collections::BTreeMap<String, String> = Default::default();
        let mut clashes = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let (mut derives, mut renamed) = (false, None::<String>);
            for line in text.lines().map(str::trim) {
                if line.starts_with("#[derive(") {
                    derives = line.contains("ToSchema");
                    renamed = None;
                } else if let Some(rest) = line.strip_prefix("#[schema(as = ") {
                    renamed = rest.split(')').next().map(str::to_owned);
                } else if let Some(rest) = line
                    .strip_prefix("pub struct ")
                    .or_else(|| line.strip_prefix("pub enum "))
                {
                    if derives {
                        let own: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        let name = renamed.take().unwrap_or(own);
                        let at = f.display().to_string();
                        if let Some(first) = seen.insert(name.clone(), at.clone()) {
                            clashes.push(format!("{name}: {first} and {at}"));
                        }
                    }
                    derives = false;
                } else if !(line.starts_with("#[") || line.starts_with("///")) {
                    derives = false;
                }
            }
        }
        assert!(clashes.is_empty(), "schema names used twice: {clashes:?}");
        assert!(seen.len() > 50, "found only {} schemas", seen.len());
    }
}
