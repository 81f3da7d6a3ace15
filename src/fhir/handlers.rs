//! Thin handlers of the FHIR views: authenticate, negotiate, read through the store, map, audit.
//! Successful reads are audited through the group-commit writer (committed before the answer,
//! many reads per commit); refusals and misses directly.

use super::mapping::{self, CarePlanKind};
use super::outcome::{FhirError, FHIR_JSON};
use super::scopes::{self, Interaction, Kind};
use super::search::{self, Filters, ParamDef, Sort};
use super::stored::{self, CarePlanRecord};
use super::FhirSettings;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::extract::{check_query, FormBody};
use crate::http::{cors as http_cors, AppState};
use crate::store::referrals::ReferralRecord;
use crate::store::writer::Writer;
use crate::store::{ListQuery, Ts, PLANS, SAFETY_PROTOCOLS};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Next};
use actix_web::ResponseError;
use actix_web::{get, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A FHIR R4 resource (`application/fhir+json`), described by the FHIR specification rather
/// than here: a CapabilityStatement, CarePlan, ServiceRequest or Bundle.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct FhirResource(#[allow(dead_code)] Value);

/// A FHIR OperationOutcome: every error of the FHIR views.
#[derive(ToSchema)]
#[schema(value_type = Object, example = json!({"resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "not-found", "diagnostics": "no such resource for this tenant"}]}))]
pub struct OperationOutcome(#[allow(dead_code)] Value);

/// Largest page; larger `_count`s are cut to it, as FHIR allows.
const MAX_COUNT: usize = 200;
const DEFAULT_COUNT: usize = 50;

/// The parameters every search reads, besides those of its resource type ([`search`]'s
/// definitions); others are ignored (FHIR's lenient handling), or refused with
/// `Prefer: handling=strict`.
const SEARCH_PARAMETERS: &[&str] = &[
    "subject", "patient", "_sort", "_count", "_offset", "_total", "_format", "_summary",
];

/// The parameters a history reads.
const HISTORY_PARAMETERS: &[&str] = &["_since", "_count", "_offset", "_format", "_summary"];

/// The query parameters (and a POSTed search's form), decoded once.
struct Params(Vec<(String, String)>);

impl Params {
    fn of(req: &HttpRequest) -> Params {
        Params(
            url::form_urlencoded::parse(req.query_string().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The query's parameters and then a POSTed form's: both count the same, as FHIR says.
    fn with_form(mut self, form: &str) -> Params {
        self.0
            .extend(url::form_urlencoded::parse(form.as_bytes()).into_owned());
        self
    }

    /// The names of parameters neither in `common` nor (whatever their modifier) in `defs`,
    /// in order, each once.
    fn unknown(&self, common: &[&str], defs: &[ParamDef]) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (k, _) in &self.0 {
            let base = k.split_once(':').map_or(k.as_str(), |(b, _)| b);
            if !common.contains(&k.as_str())
                && !search::known(defs, base)
                && !names.contains(&k.as_str())
            {
                names.push(k);
            }
        }
        names
    }

    /// The one value of `name`; 400 when repeated.
    fn one(&self, name: &str) -> Result<Option<&str>, FhirError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(bad(format!("{name} may be given once")));
        }
        Ok(first)
    }
}

fn bad(msg: impl Into<String>) -> FhirError {
    FhirError::Api(ApiError::BadRequest(msg.into()))
}

/// Whether the client asked for `Prefer: handling=strict` (an error for any parameter the
/// server does not know) rather than the default, lenient handling (such parameters ignored,
/// and left out of the Bundle's self link).
fn strict_handling(req: &HttpRequest) -> bool {
    req.headers().get_all("prefer").any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split([',', ';']).any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("handling")
                        && v.trim().trim_matches('"').eq_ignore_ascii_case("strict")
                })
            })
        })
    })
}

/// 400 for parameters the server does not know (neither `common` nor of `defs`), when the
/// client asked for strict handling.
fn check_handling(
    req: &HttpRequest,
    params: &Params,
    common: &[&str],
    defs: &[ParamDef],
) -> Result<(), FhirError> {
    let unknown = params.unknown(common, defs);
    if unknown.is_empty() || !strict_handling(req) {
        return Ok(());
    }
    let reads: Vec<&str> = common
        .iter()
        .copied()
        .chain(defs.iter().map(|d| d.name))
        .collect();
    Err(bad(format!(
        "unknown search parameter{} {} (Prefer: handling=strict); this server reads {} here",
        if unknown.len() == 1 { "" } else { "s" },
        unknown.join(", "),
        reads.join(", ")
    )))
}

/// `_format` first, else `Accept`: JSON in any of its FHIR spellings, else 406.
fn negotiate(req: &HttpRequest, params: &Params) -> Result<(), FhirError> {
    // No NUL and no far-off dates in any parameter (a search value reaches the database).
    crate::http::extract::check_query(req.query_string()).map_err(|e| bad(e.problem().detail))?;
    if let Some(f) = params.one("_format")? {
        let f = f.trim().to_ascii_lowercase();
        let essence = f.split(';').next().unwrap_or("").trim();
        return match essence {
            "json" | "application/json" | "application/fhir+json" => Ok(()),
            _ => Err(FhirError::NotAcceptable(format!(
                "_format={f} is not supported: this server speaks application/fhir+json (_format=json)"
            ))),
        };
    }
    let Some(accept) = req.headers().get(header::ACCEPT) else {
        return Ok(());
    };
    let accept = accept.to_str().unwrap_or("").to_ascii_lowercase();
    let acceptable = accept.split(',').any(|part| {
        let mut bits = part.split(';');
        let essence = bits.next().unwrap_or("").trim();
        let refused = bits.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
        });
        !refused
            && matches!(
                essence,
                "" | "*/*" | "application/*" | "application/json" | "application/fhir+json"
            )
    });
    if acceptable {
        Ok(())
    } else {
        Err(FhirError::NotAcceptable(
            "this server answers application/fhir+json (or application/json) only".into(),
        ))
    }
}

/// The absolute base of the FHIR endpoint, for `fullUrl`s and links.
fn fhir_base(req: &HttpRequest, cfg: &FhirSettings) -> String {
    let base = match &cfg.public_url {
        Some(u) => u.clone(),
        None => {
            let c = req.connection_info();
            format!("{}://{}", c.scheme(), c.host())
        }
    };
    format!("{base}/fhir/R4")
}

/// The versioned answer of a read: `ETag: W/"n"`, `Last-Modified`, and 304 for a matching
/// `If-None-Match`.
fn versioned(
    req: &HttpRequest,
    resource: &Value,
    version: i64,
    updated: DateTime<Utc>,
) -> HttpResponse {
    let etag = format!("W/\"{version}\"");
    let last_modified = updated.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t.strip_prefix("W/").unwrap_or(t) == format!("\"{version}\"")
            })
        });
    let mut res = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, etag))
        .insert_header((header::LAST_MODIFIED, last_modified));
    if matches {
        return res.finish();
    }
    res.content_type(FHIR_JSON)
        .body(serde_json::to_vec(resource).unwrap_or_default())
}

fn fhir_json(v: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(FHIR_JSON)
        .body(serde_json::to_vec(v).unwrap_or_default())
}

/// The subject of a search: `subject=Patient/123` (a bare id meaning `Patient/<id>`) or
/// `patient=123`; required.
fn search_subject(params: &Params) -> Result<String, FhirError> {
    let subject = params.one("subject")?;
    let patient = params.one("patient")?;
    let s =
        match (subject, patient) {
            (Some(_), Some(_)) => return Err(bad("give subject or patient, not both")),
            (Some(s), None) if !s.contains('/') => format!("Patient/{s}"),
            (Some(s), None) => s.to_string(),
            (None, Some(p)) if p.starts_with("Patient/") => p.to_string(),
            (None, Some(p)) if !p.contains('/') => format!("Patient/{p}"),
            (None, Some(_)) => return Err(bad("patient must be a Patient id or Patient/<id>")),
            (None, None) => return Err(bad(
                "this server searches by subject only: give subject=Patient/<id> (or patient=<id>)",
            )),
        };
    crate::domain::types::SubjectRef::parse(&s).map_err(|m| bad(format!("subject {m}")))?;
    Ok(s)
}

/// `_count` (0–200; larger values are cut to 200) and `_offset`; `_summary=count` is
/// `_count=0` (the total alone), `_summary=false` the default (whole resources); `_total`, if
/// given, one of FHIR's three (the total is exact whichever).
fn page(params: &Params) -> Result<(usize, usize), FhirError> {
    let summary_count = match params.one("_summary")? {
        None | Some("false") => false,
        Some("count") => true,
        Some(_) => {
            return Err(bad(
                "_summary may be count (the total alone) or false (whole resources) here",
            ))
        }
    };
    match params.one("_total")? {
        None | Some("" | "none" | "estimate" | "accurate") => {}
        Some(_) => return Err(bad(
            "_total may be none, estimate or accurate (the total is always counted exactly here)",
        )),
    }
    let count = match params.one("_count")? {
        _ if summary_count => 0,
        None => DEFAULT_COUNT,
        Some(c) => c
            .trim()
            .parse::<usize>()
            .map_err(|_| bad("_count must be a whole number from 0"))?
            .min(MAX_COUNT),
    };
    let offset = match params.one("_offset")? {
        None => 0,
        Some(o) => o
            .trim()
            .parse::<usize>()
            .map_err(|_| bad("_offset must be a whole number from 0 (use the next link)"))?,
    };
    Ok((count, offset))
}

/// A search's self and next links: its subject, its other parameters as given (`filters`),
/// then the page.
fn links(
    base: &str,
    resource: &str,
    subject: &str,
    filters: &[(String, String)],
    count: usize,
    offset: usize,
    total: usize,
) -> (String, Option<String>) {
    let link = |offset: usize| {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("subject", subject)
            .extend_pairs(filters)
            .append_pair("_count", &count.to_string())
            .append_pair("_offset", &offset.to_string())
            .finish();
        format!("{base}/{resource}?{q}")
    };
    let next = (count > 0 && offset.saturating_add(count) < total)
        .then(|| link(offset.saturating_add(count)));
    (link(offset), next)
}

fn window<T>(items: Vec<T>, count: usize, offset: usize) -> Vec<T> {
    items.into_iter().skip(offset).take(count).collect()
}

/// A search under way: its checks passed (format, scope, parameters) and what it asks for.
struct Search {
    subject: String,
    filters: Filters,
    sort: Sort,
    count: usize,
    offset: usize,
}

/// A record a search lists: its audit row's id, subject and resource type, and its FHIR form.
struct Listed {
    id: Uuid,
    subject: String,
    audited_as: &'static str,
    resource: Value,
}

impl Search {
    /// The checks every search makes, in order: the format asked for (406), a scope allowing
    /// the search on one of `kinds` (403, audited on `resource_type`), then the parameters of
    /// the query and of a POSTed form (400, 408, 413, 415): the common ones and `defs`.
    async fn begin(
        req: &HttpRequest,
        st: &AppState,
        caller: &Caller,
        (kinds, resource_type): (&[Kind], &'static str),
        defs: &'static [ParamDef],
        form: Option<FormBody>,
    ) -> Result<Search, FhirError> {
        let params = Params::of(req);
        negotiate(req, &params)?;
        require_any(
            st,
            caller,
            kinds,
            Interaction::Search,
            resource_type,
            "list",
        )
        .await?;
        let params = search_params(req, params, form, defs)?;
        let subject = search_subject(&params)?;
        let filters = Filters::parse(defs, &params.0).map_err(bad)?;
        let sort = Sort::parse(defs, params.one("_sort")?).map_err(bad)?;
        let (count, offset) = page(&params)?;
        Ok(Search {
            subject,
            filters,
            sort,
            count,
            offset,
        })
    }

    /// The records whose FHIR form passes the search's other parameters, with that form, in
    /// the order `_sort` asks for (else as given).
    fn select<T>(&self, records: Vec<T>, to_fhir: impl Fn(&T) -> Value) -> Vec<(T, Value)> {
        let mut selected: Vec<(T, Value)> = records
            .into_iter()
            .map(|r| {
                let resource = to_fhir(&r);
                (r, resource)
            })
            .filter(|(_, resource)| self.filters.matches(resource))
            .collect();
        self.sort.apply(&mut selected);
        selected
    }

    /// The parameters the Bundle's links carry besides the subject and the page.
    fn given(&self) -> Vec<(String, String)> {
        let mut given = self.filters.given().to_vec();
        if let Some(sort) = self.sort.given() {
            given.push(("_sort".into(), sort.into()));
        }
        given
    }

    /// The searchset of this page of `total` matches: each record listed audited (committed
    /// before the answer), `fullUrl`s and links under the FHIR base.
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        req: &HttpRequest,
        st: &AppState,
        writer: &Writer,
        caller: &Caller,
        cfg: &FhirSettings,
        resource: &str,
        total: usize,
        shown: Vec<Listed>,
    ) -> Result<HttpResponse, FhirError> {
        let audit = shown
            .iter()
            .map(|l| {
                st.audit_entry(
                    caller,
                    "list",
                    l.audited_as,
                    Some(l.id),
                    Some(&l.subject),
                    "success",
                )
            })
            .collect();
        writer.record(None, audit).await?;
        let base = fhir_base(req, cfg);
        let entries = shown
            .into_iter()
            .map(|l| (format!("{base}/{resource}/{}", l.id), l.resource))
            .collect();
        let (self_link, next) = links(
            &base,
            resource,
            &self.subject,
            &self.given(),
            self.count,
            self.offset,
            total,
        );
        Ok(fhir_json(&mapping::searchset(
            total,
            entries,
            &self_link,
            next.as_deref(),
            Utc::now(),
        )))
    }
}

/// A search's parameters: the query's and, for a POST-based search, its form's (checked like
/// a query, `_format` once in both); unknown ones refused under `Prefer: handling=strict`.
fn search_params(
    req: &HttpRequest,
    params: Params,
    form: Option<FormBody>,
    defs: &[ParamDef],
) -> Result<Params, FhirError> {
    let params = match form {
        None => params,
        Some(form) => {
            let form = form.parse()?;
            check_query(&form).map_err(|e| bad(e.problem().detail))?;
            let params = params.with_form(&form);
            negotiate(req, &params)?;
            params
        }
    };
    check_handling(req, &params, SEARCH_PARAMETERS, defs)?;
    Ok(params)
}

/// The parameters every POST-based search takes (`application/x-www-form-urlencoded`).
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
pub struct FhirSearchForm {
    /// The service user, e.g. `Patient/123` (a bare id means `Patient/<id>`); subject or patient is required.
    #[schema(nullable = false)]
    subject: Option<String>,
    /// A Patient id: the same as subject=Patient/<id>.
    #[schema(nullable = false)]
    patient: Option<String>,
    /// Ids, separated by commas.
    #[serde(rename = "_id")]
    #[schema(nullable = false)]
    id: Option<String>,
    /// When the record last changed, with a prefix (eq, ne, gt, lt, ge, le, sa, eb), e.g. `ge2026-01-01`; repeat it for a range.
    #[serde(rename = "_lastUpdated")]
    #[schema(
        nullable = false,
        pattern = "^$|^(eq|ne|gt|lt|ge|le|sa|eb)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?$"
    )]
    last_updated: Option<Vec<String>>,
    /// Sort keys separated by commas, `-` before one for descending: `_id`, `_lastUpdated` (and `authored` for ServiceRequests).
    #[serde(rename = "_sort")]
    #[schema(
        nullable = false,
        pattern = "^$|^-?(_id|_lastUpdated|authored)(,-?(_id|_lastUpdated|authored)){0,2}$"
    )]
    sort: Option<String>,
    /// `none`, `estimate` or `accurate`: the total is exact whichever.
    #[serde(rename = "_total")]
    #[schema(nullable = false, pattern = "^(none|estimate|accurate)?$")]
    total: Option<String>,
    /// Page size, 0–200 (default 50; 0 gives only the total).
    #[serde(rename = "_count")]
    #[schema(nullable = false)]
    count: Option<u32>,
    /// Where the page starts; follow the Bundle's next link rather than setting it.
    #[serde(rename = "_offset")]
    #[schema(nullable = false)]
    offset: Option<u32>,
    /// `count`: the total alone (as `_count=0`); `false`: whole resources (the default).
    #[serde(rename = "_summary")]
    #[schema(nullable = false)]
    summary: Option<String>,
    /// `json` (the only format).
    #[serde(rename = "_format")]
    #[schema(nullable = false)]
    format: Option<String>,
}

/// A POST-based CarePlan search: the common parameters, `status` and `category`.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
pub struct FhirCarePlanSearchForm {
    #[serde(flatten)]
    common: FhirSearchForm,
    /// Statuses (request-status), separated by commas; plans and protocols are `active`.
    #[schema(nullable = false)]
    status: Option<String>,
    /// Categories as tokens, e.g. `telemental-safety-protocol` or `https://telemental.org/fhir/CodeSystem/care-plan-kind|telemental-preference-plan`.
    #[schema(nullable = false)]
    category: Option<String>,
}

/// A POST-based ServiceRequest search: the common parameters, `status`, `priority` and
/// `authored`.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
pub struct FhirServiceRequestSearchForm {
    #[serde(flatten)]
    common: FhirSearchForm,
    /// Statuses (request-status: `active`, `completed`, `revoked`), separated by commas.
    #[schema(nullable = false)]
    status: Option<String>,
    /// Priorities (request-priority: `routine`, `urgent`, `stat`), separated by commas.
    #[schema(nullable = false)]
    priority: Option<String>,
    /// When the referral was made, with a prefix as for `_lastUpdated`; repeat it for a range.
    #[schema(
        nullable = false,
        pattern = "^$|^(eq|ne|gt|lt|ge|le|sa|eb)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?$"
    )]
    authored: Option<Vec<String>>,
}

/// Whether the caller's scopes allow `interaction` on `kind` (its own or SMART scopes).
fn may(caller: &Caller, kind: Kind, interaction: Interaction) -> bool {
    scopes::allows(caller.scopes(), kind, interaction)
}

/// 403 (audited) unless the caller's scopes allow `interaction` on one of `kinds`.
async fn require_any(
    st: &AppState,
    caller: &Caller,
    kinds: &[Kind],
    interaction: Interaction,
    resource_type: &'static str,
    action: &'static str,
) -> Result<(), FhirError> {
    if kinds.iter().any(|k| may(caller, *k, interaction)) {
        return Ok(());
    }
    st.audit(caller, action, resource_type, None, None, "denied")
        .await?;
    let names: Vec<&str> = kinds.iter().map(|k| k.native().as_str()).collect();
    let smart_type = kinds[0].resource_type();
    let smart_permission = match interaction {
        Interaction::Read => "r",
        Interaction::Search => "s",
    };
    Err(ApiError::Forbidden(format!(
        "this operation needs the scope {}, or a SMART scope such as system/{smart_type}.{smart_permission} or system/{smart_type}.read",
        names.join(" or ")
    ))
    .into())
}

/// The server's CapabilityStatement.
///
/// Lists exactly what is supported: `read`, `vread`, `history-instance` and `search-type` (by
/// subject, by GET or POST) of CarePlan and ServiceRequest. Needs a bearer token (any scope).
#[utoipa::path(tag = "fhir", operation_id = "fhirCapabilities",
    params(("_format" = Option<String>, Query, description = "`json` (the only format)")),
    responses(
        (status = 200, description = "A CapabilityStatement", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = [])))]
#[get("/metadata")]
pub async fn metadata(
    req: HttpRequest,
    caller: Result<Caller, ApiError>,
    cfg: web::Data<FhirSettings>,
) -> Result<HttpResponse, FhirError> {
    caller?;
    negotiate(&req, &Params::of(&req))?;
    Ok(fhir_json(&mapping::capability_statement(
        cfg.public_url.as_deref(),
        !cfg.allowed_origins.is_empty(),
    )))
}

/// Read a CarePlan: a preference plan or a safety protocol.
///
/// Plan and protocol ids are both UUIDv7 and never collide, so one CarePlan id space holds
/// both: the id is looked up among plans (with `plans:read`) and safety protocols (with
/// `protocols:read`); a SMART scope that allows reading CarePlans (`system/CarePlan.r`,
/// `system/CarePlan.read`, `user/*.rs`, …) reads both. `meta.versionId` is the record's
/// version, also the weak `ETag`.
#[utoipa::path(tag = "fhir", operation_id = "fhirReadCarePlan",
    params(("id" = String, Path, description = "Plan or safety protocol id"),
        ("_format" = Option<String>, Query, description = "`json` (the only format)"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag read before, e.g. W/\"3\": 304 when unchanged")),
    responses(
        (status = 200, description = "The CarePlan", body = FhirResource, content_type = "application/fhir+json",
            headers(("ETag" = String, description = "W/\"<version>\""), ("Last-Modified" = String))),
        (status = 304, description = "Unchanged since the ETag given in If-None-Match"),
    ),
    security(("bearer" = ["plans:read", "protocols:read"])))]
#[get("/CarePlan/{id}")]
pub async fn read_care_plan(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let caller = caller?;
    negotiate(&req, &Params::of(&req))?;
    require_any(
        &st,
        &caller,
        &[Kind::PreferencePlan, Kind::SafetyProtocol],
        Interaction::Read,
        "plan",
        "read",
    )
    .await?;
    let Ok(id) = Uuid::parse_str(&id) else {
        return Err(ApiError::NotFound.into());
    };
    for (allowed, kind) in [
        (Kind::PreferencePlan, CarePlanKind::PreferencePlan),
        (Kind::SafetyProtocol, CarePlanKind::SafetyProtocol),
    ] {
        if !may(&caller, allowed, Interaction::Read) {
            continue;
        }
        let Some(rec) = stored::get(&st.store, kind, &caller.tenant, id).await? else {
            continue;
        };
        let resource = rec.to_fhir();
        let entry = st.audit_entry(
            &caller,
            "read",
            rec.table().resource_type,
            Some(id),
            Some(rec.subject()),
            "success",
        );
        writer.record(None, vec![entry]).await?;
        return Ok(versioned(&req, &resource, rec.version(), rec.updated_at()));
    }
    care_plan_not_found(&st, &caller, id, "read").await
}

/// Read one version of a CarePlan (FHIR `vread`): a plan or protocol as it was.
///
/// Every version of a plan or safety protocol is kept; `vid` is its `meta.versionId` (1 for the
/// first). Scopes as for a read; audited as `read_versions`.
#[utoipa::path(tag = "fhir", operation_id = "fhirVreadCarePlan",
    params(("id" = String, Path, description = "Plan or safety protocol id"),
        ("vid" = String, Path, description = "The version, from 1"),
        ("_format" = Option<String>, Query, description = "`json` (the only format)"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag read before, e.g. W/\"3\": 304 when it is this version")),
    responses(
        (status = 200, description = "The CarePlan at that version", body = FhirResource, content_type = "application/fhir+json",
            headers(("ETag" = String, description = "W/\"<version>\""), ("Last-Modified" = String, description = "When that version was recorded"))),
        (status = 304, description = "The ETag given in If-None-Match is this version"),
    ),
    security(("bearer" = ["plans:read", "protocols:read"])))]
#[get("/CarePlan/{id}/_history/{vid}")]
pub async fn vread_care_plan(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, FhirError> {
    let caller = caller?;
    negotiate(&req, &Params::of(&req))?;
    require_any(
        &st,
        &caller,
        &[Kind::PreferencePlan, Kind::SafetyProtocol],
        Interaction::Read,
        "plan",
        "read_versions",
    )
    .await?;
    let (id, vid) = path.into_inner();
    let (Ok(id), Some(vid)) = (Uuid::parse_str(&id), version_id(&vid)) else {
        return Err(ApiError::NotFound.into());
    };
    for (allowed, kind) in [
        (Kind::PreferencePlan, CarePlanKind::PreferencePlan),
        (Kind::SafetyProtocol, CarePlanKind::SafetyProtocol),
    ] {
        if !may(&caller, allowed, Interaction::Read) {
            continue;
        }
        let Some(found) =
            stored::versions(&st.store, kind, &caller.tenant, id, Some(vid + 1), 1).await?
        else {
            continue;
        };
        let Some(rec) = found.into_iter().find(|r| r.version() == vid) else {
            // The record exists, not this version of it.
            break;
        };
        let entry = st.audit_entry(
            &caller,
            "read_versions",
            rec.table().resource_type,
            Some(id),
            Some(rec.subject()),
            "success",
        );
        writer.record(None, vec![entry]).await?;
        return Ok(versioned(&req, &rec.to_fhir(), vid, rec.updated_at()));
    }
    care_plan_not_found(&st, &caller, id, "read_versions").await
}

/// A CarePlan's history (FHIR `history-instance`): a `history` Bundle of its versions, newest
/// first.
///
/// Paged like a search (`_count`, `_offset`, the `next` link); `total` is the number of
/// versions. Each entry says how the version was made (`POST` for the first, `PUT` after) with
/// its ETag and when it was recorded. Scopes as for a read; audited as `read_versions`.
#[utoipa::path(tag = "fhir", operation_id = "fhirHistoryCarePlan",
    params(("id" = String, Path, description = "Plan or safety protocol id"),
        ("_since" = Option<String>, Query, description = "Only the versions recorded at or after this instant (or the start of this date), e.g. `2026-12-01T09:00:00Z`", pattern = "^$|^[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?$"),
        ("_count" = Option<u32>, Query, description = "Page size, 0–200 (default 50; 0 gives only the total)"),
        ("_summary" = Option<String>, Query, description = "`count`: the total alone (as `_count=0`); `false`: whole resources (the default); nothing else"),
        ("_offset" = Option<u32>, Query, description = "Where the page starts; follow the Bundle's next link rather than setting it"),
        ("_format" = Option<String>, Query, description = "`json` (the only format)")),
    responses(
        (status = 200, description = "A history Bundle", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["plans:read", "protocols:read"])))]
#[get("/CarePlan/{id}/_history")]
pub async fn care_plan_history(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    cfg: web::Data<FhirSettings>,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let caller = caller?;
    let params = Params::of(&req);
    negotiate(&req, &params)?;
    require_any(
        &st,
        &caller,
        &[Kind::PreferencePlan, Kind::SafetyProtocol],
        Interaction::Read,
        "plan",
        "read_versions",
    )
    .await?;
    let history = History::begin(&req, &params)?;
    let Ok(id) = Uuid::parse_str(&id) else {
        return Err(ApiError::NotFound.into());
    };
    for (allowed, kind) in [
        (Kind::PreferencePlan, CarePlanKind::PreferencePlan),
        (Kind::SafetyProtocol, CarePlanKind::SafetyProtocol),
    ] {
        if !may(&caller, allowed, Interaction::Read) {
            continue;
        }
        let Some(current) = stored::get(&st.store, kind, &caller.tenant, id).await? else {
            continue;
        };
        let latest = current.version();
        let table = (current.table().versions, caller.tenant.as_str(), id);
        let total = history.total(&st, table, latest).await?;
        let shown = match history.window(latest, total) {
            None => Vec::new(),
            Some((below, n)) => {
                stored::versions(&st.store, kind, &caller.tenant, id, Some(below), n)
                    .await?
                    .unwrap_or_default()
            }
        };
        let entry = st.audit_entry(
            &caller,
            "read_versions",
            current.table().resource_type,
            Some(id),
            Some(current.subject()),
            "success",
        );
        writer.record(None, vec![entry]).await?;
        let shown = shown
            .iter()
            .map(|rec| (rec.to_fhir(), rec.version(), rec.updated_at()))
            .collect();
        return Ok(fhir_json(&history.bundle(
            &fhir_base(&req, &cfg),
            "CarePlan",
            id,
            total,
            shown,
        )));
    }
    care_plan_not_found(&st, &caller, id, "read_versions").await
}

/// A history under way: its page, and `_since` when given.
struct History {
    count: usize,
    offset: usize,
    /// `_since`: versions recorded at or after this instant (and the value as given).
    since: Option<(DateTime<Utc>, String)>,
}

impl History {
    /// The checks of a history's parameters: strict handling, the page, `_since`.
    fn begin(req: &HttpRequest, params: &Params) -> Result<History, FhirError> {
        check_handling(req, params, HISTORY_PARAMETERS, &[])?;
        let (count, offset) = page(params)?;
        let since = match params.one("_since")? {
            None | Some("") => None,
            Some(v) => {
                let at = search::span(v).map_err(|m| bad(format!("_since: '{v}': {m}")))?;
                Some((at.start(), v.to_string()))
            }
        };
        Ok(History {
            count,
            offset,
            since,
        })
    }

    /// How many of a record's `latest` versions the history lists: all, or those recorded at
    /// or after `_since`, counted in the versions table `versions`.
    async fn total(
        &self,
        st: &AppState,
        (versions, tenant, id): (&'static str, &str, Uuid),
        latest: i64,
    ) -> Result<i64, FhirError> {
        Ok(match &self.since {
            None => latest,
            Some((since, _)) => {
                // Past year 9999 (an offset can take a date there): nothing is recorded after
                // the last instant of 9999, which the stores' text form still orders.
                let last = "9999-12-31T23:59:59.999999Z".parse::<DateTime<Utc>>();
                let since = last.map_or(*since, |last| (*since).min(last));
                st.store
                    .count_versions_since(versions, tenant, id, Ts::from(since))
                    .await?
            }
        })
    }

    /// The versions this page shows, numbered from 1 and all kept, the newest `total` of
    /// `latest` listed: `Some((below, n))` to read `n` versions below that number (newest
    /// first), `None` for an empty page.
    fn window(&self, latest: i64, total: i64) -> Option<(i64, i64)> {
        let offset = i64::try_from(self.offset).ok()?;
        let count = i64::try_from(self.count).ok()?;
        (count > 0 && offset < total).then(|| (latest - offset + 1, count.min(total - offset)))
    }

    /// The history Bundle of one resource: `versions` are (resource, version, recorded),
    /// newest first, of `total` listed; links page by `_count` and `_offset`, keeping `_since`.
    fn bundle(
        &self,
        base: &str,
        resource_type: &str,
        id: Uuid,
        total: i64,
        versions: Vec<(Value, i64, DateTime<Utc>)>,
    ) -> Value {
        let total = usize::try_from(total).unwrap_or(0);
        let (count, offset) = (self.count, self.offset);
        let full_url = format!("{base}/{resource_type}/{id}");
        let link = |offset: usize| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            if let Some((_, given)) = &self.since {
                q.append_pair("_since", given);
            }
            q.append_pair("_count", &count.to_string())
                .append_pair("_offset", &offset.to_string());
            format!("{full_url}/_history?{}", q.finish())
        };
        let next = (count > 0 && offset.saturating_add(count) < total)
            .then(|| link(offset.saturating_add(count)));
        let entries = versions
            .into_iter()
            .map(|(resource, version, recorded)| mapping::HistoryEntry {
                full_url: full_url.clone(),
                resource,
                version,
                recorded,
            })
            .collect();
        mapping::history(total, entries, &link(offset), next.as_deref(), Utc::now())
    }
}

/// The version number of a `_history/{vid}` path: 1 or more.
fn version_id(vid: &str) -> Option<i64> {
    vid.parse::<i64>().ok().filter(|v| *v >= 1 && *v < i64::MAX)
}

/// 404 for a CarePlan id (or version) the caller may not see, audited on the kind it may read.
async fn care_plan_not_found(
    st: &AppState,
    caller: &Caller,
    id: Uuid,
    action: &'static str,
) -> Result<HttpResponse, FhirError> {
    let table = if may(caller, Kind::PreferencePlan, Interaction::Read) {
        PLANS
    } else {
        SAFETY_PROTOCOLS
    };
    st.audit(
        caller,
        action,
        table.resource_type,
        Some(id),
        None,
        "not_found",
    )
    .await?;
    Err(ApiError::NotFound.into())
}

/// Search CarePlans by subject: the service user's preference plan and safety protocol.
///
/// A `searchset` Bundle with `total`, paged by `_count` and the `next` link. Only the kinds the
/// token may read are searched (`plans:read`, `protocols:read`; a SMART scope that allows
/// searching CarePlans, such as `system/CarePlan.s` or `system/CarePlan.read`, searches both).
#[utoipa::path(tag = "fhir", operation_id = "fhirSearchCarePlan",
    params(
        ("subject" = Option<String>, Query, description = "The service user, e.g. `Patient/123` (a bare id means `Patient/<id>`); subject or patient is required"),
        ("patient" = Option<String>, Query, description = "A Patient id: the same as subject=Patient/<id>"),
        ("_id" = Option<String>, Query, description = "Ids, separated by commas"),
        ("_lastUpdated" = Option<Vec<String>>, Query, description = "When the record last changed, with a prefix (eq, ne, gt, lt, ge, le, sa, eb), e.g. `ge2026-01-01`; repeat it for a range", pattern = "^$|^(eq|ne|gt|lt|ge|le|sa|eb)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?$"),
        ("status" = Option<String>, Query, description = "Statuses (request-status), separated by commas; plans and protocols are `active`"),
        ("category" = Option<String>, Query, description = "Categories as tokens, e.g. `telemental-safety-protocol` or `https://telemental.org/fhir/CodeSystem/care-plan-kind|telemental-preference-plan`"),
        ("_sort" = Option<String>, Query, description = "Sort keys separated by commas, `-` before one for descending: `_id`, `_lastUpdated`", pattern = "^$|^-?(_id|_lastUpdated)(,-?(_id|_lastUpdated))?$"),
        ("_total" = Option<String>, Query, description = "`none`, `estimate` or `accurate`: the total is exact whichever", pattern = "^(none|estimate|accurate)?$"),
        ("_count" = Option<u32>, Query, description = "Page size, 0–200 (default 50; 0 gives only the total)"),
        ("_summary" = Option<String>, Query, description = "`count`: the total alone (as `_count=0`); `false`: whole resources (the default); nothing else"),
        ("_offset" = Option<u32>, Query, description = "Where the page starts; follow the Bundle's next link rather than setting it"),
        ("_format" = Option<String>, Query, description = "`json` (the only format)")),
    responses(
        (status = 200, description = "A searchset Bundle", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["plans:read", "protocols:read"])))]
#[get("/CarePlan")]
pub async fn search_care_plans(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    cfg: web::Data<FhirSettings>,
) -> Result<HttpResponse, FhirError> {
    care_plan_search(&req, &st, &writer, caller?, &cfg, None).await
}

/// Search CarePlans by subject, the parameters in a form (FHIR's POST-based search).
///
/// The same search as `GET /fhir/R4/CarePlan`, for clients that keep parameters out of URLs:
/// the parameters in an `application/x-www-form-urlencoded` body, in the query, or both (each
/// parameter once in all). The Bundle's links are GET links.
#[utoipa::path(tag = "fhir", operation_id = "fhirSearchCarePlanPost",
    params(("_format" = Option<String>, Query, description = "`json` (the only format)"),
        ("Prefer" = Option<String>, Header, description = "`handling=strict`: 400 for a parameter this server does not know (ignored otherwise)")),
    request_body(content = FhirCarePlanSearchForm, content_type = "application/x-www-form-urlencoded",
        description = "The search parameters (an empty body: those of the query alone)"),
    responses(
        (status = 200, description = "A searchset Bundle", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["plans:read", "protocols:read"])))]
#[post("/CarePlan/_search")]
pub async fn search_care_plans_post(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    cfg: web::Data<FhirSettings>,
    form: FormBody,
) -> Result<HttpResponse, FhirError> {
    care_plan_search(&req, &st, &writer, caller?, &cfg, Some(form)).await
}

async fn care_plan_search(
    req: &HttpRequest,
    st: &AppState,
    writer: &Writer,
    caller: Caller,
    cfg: &FhirSettings,
    form: Option<FormBody>,
) -> Result<HttpResponse, FhirError> {
    let kinds = [Kind::PreferencePlan, Kind::SafetyProtocol];
    let search = Search::begin(req, st, &caller, (&kinds, "plan"), search::CARE_PLAN, form).await?;
    let mut found = Vec::new();
    for (allowed, kind) in [
        (Kind::PreferencePlan, CarePlanKind::PreferencePlan),
        (Kind::SafetyProtocol, CarePlanKind::SafetyProtocol),
    ] {
        if !may(&caller, allowed, Interaction::Search) {
            continue;
        }
        // One record of each kind per subject (a unique key): no paging of the store needed.
        let q = ListQuery {
            subject: Some(search.subject.clone()),
            limit: 2,
            ..ListQuery::default()
        };
        found.extend(stored::list(&st.store, kind, &caller.tenant, &q).await?);
    }
    let found = search.select(found, CarePlanRecord::to_fhir);
    let total = found.len();
    let shown = window(found, search.count, search.offset)
        .into_iter()
        .map(|(rec, resource)| Listed {
            id: rec.id(),
            subject: rec.subject().to_string(),
            audited_as: rec.table().resource_type,
            resource,
        })
        .collect();
    search
        .answer(req, st, writer, &caller, cfg, "CarePlan", total, shown)
        .await
}

/// Read a ServiceRequest: a face-to-face fallback referral.
///
/// Needs `referrals:read`, or a SMART scope that allows reading ServiceRequests
/// (`system/ServiceRequest.r`, `system/ServiceRequest.read`, …).
#[utoipa::path(tag = "fhir", operation_id = "fhirReadServiceRequest",
    params(("id" = String, Path, description = "Referral id"),
        ("_format" = Option<String>, Query, description = "`json` (the only format)"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag read before, e.g. W/\"3\": 304 when unchanged")),
    responses(
        (status = 200, description = "The ServiceRequest", body = FhirResource, content_type = "application/fhir+json",
            headers(("ETag" = String, description = "W/\"<version>\""), ("Last-Modified" = String))),
        (status = 304, description = "Unchanged since the ETag given in If-None-Match"),
    ),
    security(("bearer" = ["referrals:read"])))]
#[get("/ServiceRequest/{id}")]
pub async fn read_service_request(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let caller = caller?;
    negotiate(&req, &Params::of(&req))?;
    require_any(
        &st,
        &caller,
        &[Kind::Referral],
        Interaction::Read,
        "referral",
        "read",
    )
    .await?;
    let Ok(id) = Uuid::parse_str(&id) else {
        return Err(ApiError::NotFound.into());
    };
    let Some(r) = st.store.get_referral(&caller.tenant, id).await? else {
        st.audit(&caller, "read", "referral", Some(id), None, "not_found")
            .await?;
        return Err(ApiError::NotFound.into());
    };
    let resource = service_request(&r);
    let entry = st.audit_entry(
        &caller,
        "read",
        "referral",
        Some(id),
        Some(&r.meta.subject),
        "success",
    );
    writer.record(None, vec![entry]).await?;
    Ok(versioned(
        &req,
        &resource,
        r.meta.version,
        r.meta.updated_at.0,
    ))
}

/// Read one version of a ServiceRequest (FHIR `vread`): a referral as it was.
///
/// Each status change of a referral is a new version, all kept; `vid` is its `meta.versionId`.
/// Scopes as for a read; audited as `read_versions`.
#[utoipa::path(tag = "fhir", operation_id = "fhirVreadServiceRequest",
    params(("id" = String, Path, description = "Referral id"),
        ("vid" = String, Path, description = "The version, from 1"),
        ("_format" = Option<String>, Query, description = "`json` (the only format)"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag read before, e.g. W/\"3\": 304 when it is this version")),
    responses(
        (status = 200, description = "The ServiceRequest at that version", body = FhirResource, content_type = "application/fhir+json",
            headers(("ETag" = String, description = "W/\"<version>\""), ("Last-Modified" = String, description = "When that version was recorded"))),
        (status = 304, description = "The ETag given in If-None-Match is this version"),
    ),
    security(("bearer" = ["referrals:read"])))]
#[get("/ServiceRequest/{id}/_history/{vid}")]
pub async fn vread_service_request(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, FhirError> {
    let caller = caller?;
    negotiate(&req, &Params::of(&req))?;
    require_any(
        &st,
        &caller,
        &[Kind::Referral],
        Interaction::Read,
        "referral",
        "read_versions",
    )
    .await?;
    let (id, vid) = path.into_inner();
    let (Ok(id), Some(vid)) = (Uuid::parse_str(&id), version_id(&vid)) else {
        return Err(ApiError::NotFound.into());
    };
    // The version, and the one after it when there is one (when this one was superseded).
    let read = st
        .store
        .referral_versions(&caller.tenant, id, Some(vid.saturating_add(2)), 2)
        .await?;
    let superseded = read
        .iter()
        .find(|r| r.meta.version == vid + 1)
        .map(|r| r.meta.updated_at.0);
    let Some(r) = read.into_iter().find(|r| r.meta.version == vid) else {
        st.audit(
            &caller,
            "read_versions",
            "referral",
            Some(id),
            None,
            "not_found",
        )
        .await?;
        return Err(ApiError::NotFound.into());
    };
    let entry = st.audit_entry(
        &caller,
        "read_versions",
        "referral",
        Some(id),
        Some(&r.meta.subject),
        "success",
    );
    writer.record(None, vec![entry]).await?;
    Ok(versioned(
        &req,
        &service_request_until(&r, superseded),
        vid,
        r.meta.updated_at.0,
    ))
}

/// A ServiceRequest's history (FHIR `history-instance`): a `history` Bundle of the referral's
/// versions (one per status change), newest first.
///
/// Paged like a search (`_count`, `_offset`, the `next` link); `total` is the number of
/// versions. Scopes as for a read; audited as `read_versions`.
#[utoipa::path(tag = "fhir", operation_id = "fhirHistoryServiceRequest",
    params(("id" = String, Path, description = "Referral id"),
        ("_since" = Option<String>, Query, description = "Only the versions recorded at or after this instant (or the start of this date), e.g. `2026-12-01T09:00:00Z`", pattern = "^$|^[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?$"),
        ("_count" = Option<u32>, Query, description = "Page size, 0–200 (default 50; 0 gives only the total)"),
        ("_summary" = Option<String>, Query, description = "`count`: the total alone (as `_count=0`); `false`: whole resources (the default); nothing else"),
        ("_offset" = Option<u32>, Query, description = "Where the page starts; follow the Bundle's next link rather than setting it"),
        ("_format" = Option<String>, Query, description = "`json` (the only format)")),
    responses(
        (status = 200, description = "A history Bundle", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["referrals:read"])))]
#[get("/ServiceRequest/{id}/_history")]
pub async fn service_request_history(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    cfg: web::Data<FhirSettings>,
    id: web::Path<String>,
) -> Result<HttpResponse, FhirError> {
    let caller = caller?;
    let params = Params::of(&req);
    negotiate(&req, &params)?;
    require_any(
        &st,
        &caller,
        &[Kind::Referral],
        Interaction::Read,
        "referral",
        "read_versions",
    )
    .await?;
    let history = History::begin(&req, &params)?;
    let Ok(id) = Uuid::parse_str(&id) else {
        return Err(ApiError::NotFound.into());
    };
    let Some(current) = st.store.get_referral(&caller.tenant, id).await? else {
        st.audit(
            &caller,
            "read_versions",
            "referral",
            Some(id),
            None,
            "not_found",
        )
        .await?;
        return Err(ApiError::NotFound.into());
    };
    let latest = current.meta.version;
    let table = ("referral_versions", caller.tenant.as_str(), id);
    let total = history.total(&st, table, latest).await?;
    let shown = match history.window(latest, total) {
        None => Vec::new(),
        Some((below, n)) => {
            // With the version after the page's newest, when there is one: each version is
            // shown as it stood when superseded.
            let newer = i64::from(below <= latest);
            let read = st
                .store
                .referral_versions(&caller.tenant, id, Some(below + newer), n + newer)
                .await?;
            until_superseded(read, newer == 1, |r| r.meta.updated_at.0)
        }
    };
    let entry = st.audit_entry(
        &caller,
        "read_versions",
        "referral",
        Some(id),
        Some(&current.meta.subject),
        "success",
    );
    writer.record(None, vec![entry]).await?;
    let shown = shown
        .iter()
        .map(|(r, superseded)| {
            let resource = service_request_until(r, *superseded);
            (resource, r.meta.version, r.meta.updated_at.0)
        })
        .collect();
    Ok(fhir_json(&history.bundle(
        &fhir_base(&req, &cfg),
        "ServiceRequest",
        id,
        total,
        shown,
    )))
}

fn service_request(r: &ReferralRecord) -> Value {
    service_request_until(r, None)
}

/// A version of a referral as a ServiceRequest as it stood until `superseded` (when the next
/// version was recorded; `None` for the current version: now). Only `overdue` depends on it:
/// an old version is overdue if it had become so by the time it was superseded.
fn service_request_until(r: &ReferralRecord, superseded: Option<DateTime<Utc>>) -> Value {
    let as_of = superseded.unwrap_or_else(Utc::now);
    mapping::referral_service_request(&r.state, &stored::meta(&r.meta), as_of)
}

/// Versions read newest first, each with when it was superseded: the `recorded` time of the
/// version before it in the list (`None` for the first unless `first_is_newer`, in which case
/// the first, the newer neighbour of a page, is dropped after lending its time).
fn until_superseded<T>(
    read: Vec<T>,
    first_is_newer: bool,
    recorded: impl Fn(&T) -> DateTime<Utc>,
) -> Vec<(T, Option<DateTime<Utc>>)> {
    let mut out = Vec::with_capacity(read.len());
    let mut newer: Option<DateTime<Utc>> = None;
    for (i, v) in read.into_iter().enumerate() {
        let recorded = recorded(&v);
        if !(i == 0 && first_is_newer) {
            out.push((v, newer));
        }
        newer = Some(recorded);
    }
    out
}

/// Search ServiceRequests by subject: the service user's referrals, oldest first.
///
/// Needs `referrals:read`, or a SMART scope that allows searching ServiceRequests
/// (`system/ServiceRequest.s`, `system/ServiceRequest.read`, …).
#[utoipa::path(tag = "fhir", operation_id = "fhirSearchServiceRequest",
    params(
        ("subject" = Option<String>, Query, description = "The service user, e.g. `Patient/123` (a bare id means `Patient/<id>`); subject or patient is required"),
        ("patient" = Option<String>, Query, description = "A Patient id: the same as subject=Patient/<id>"),
        ("_id" = Option<String>, Query, description = "Ids, separated by commas"),
        ("_lastUpdated" = Option<Vec<String>>, Query, description = "When the record last changed, with a prefix (eq, ne, gt, lt, ge, le, sa, eb), e.g. `ge2026-01-01`; repeat it for a range", pattern = "^$|^(eq|ne|gt|lt|ge|le|sa|eb)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?$"),
        ("status" = Option<String>, Query, description = "Statuses (request-status: `active`, `completed`, `revoked`), separated by commas"),
        ("priority" = Option<String>, Query, description = "Priorities (request-priority: `routine`, `urgent`, `stat`), separated by commas"),
        ("authored" = Option<Vec<String>>, Query, description = "When the referral was made, with a prefix as for `_lastUpdated`; repeat it for a range", pattern = "^$|^(eq|ne|gt|lt|ge|le|sa|eb)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+ -][0-9]{2}:[0-9]{2})?)?)?)?$"),
        ("_sort" = Option<String>, Query, description = "Sort keys separated by commas, `-` before one for descending: `_id`, `_lastUpdated`, `authored`", pattern = "^$|^-?(_id|_lastUpdated|authored)(,-?(_id|_lastUpdated|authored)){0,2}$"),
        ("_total" = Option<String>, Query, description = "`none`, `estimate` or `accurate`: the total is exact whichever", pattern = "^(none|estimate|accurate)?$"),
        ("_count" = Option<u32>, Query, description = "Page size, 0–200 (default 50; 0 gives only the total)"),
        ("_summary" = Option<String>, Query, description = "`count`: the total alone (as `_count=0`); `false`: whole resources (the default); nothing else"),
        ("_offset" = Option<u32>, Query, description = "Where the page starts; follow the Bundle's next link rather than setting it"),
        ("_format" = Option<String>, Query, description = "`json` (the only format)")),
    responses(
        (status = 200, description = "A searchset Bundle", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["referrals:read"])))]
#[get("/ServiceRequest")]
pub async fn search_service_requests(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    cfg: web::Data<FhirSettings>,
) -> Result<HttpResponse, FhirError> {
    service_request_search(&req, &st, &writer, caller?, &cfg, None).await
}

/// Search ServiceRequests by subject, the parameters in a form (FHIR's POST-based search).
///
/// The same search as `GET /fhir/R4/ServiceRequest`, the parameters in an
/// `application/x-www-form-urlencoded` body, in the query, or both (each parameter once in
/// all). The Bundle's links are GET links.
#[utoipa::path(tag = "fhir", operation_id = "fhirSearchServiceRequestPost",
    params(("_format" = Option<String>, Query, description = "`json` (the only format)"),
        ("Prefer" = Option<String>, Header, description = "`handling=strict`: 400 for a parameter this server does not know (ignored otherwise)")),
    request_body(content = FhirServiceRequestSearchForm, content_type = "application/x-www-form-urlencoded",
        description = "The search parameters (an empty body: those of the query alone)"),
    responses(
        (status = 200, description = "A searchset Bundle", body = FhirResource, content_type = "application/fhir+json"),
    ),
    security(("bearer" = ["referrals:read"])))]
#[post("/ServiceRequest/_search")]
pub async fn search_service_requests_post(
    req: HttpRequest,
    st: web::Data<AppState>,
    writer: web::Data<Writer>,
    caller: Result<Caller, ApiError>,
    cfg: web::Data<FhirSettings>,
    form: FormBody,
) -> Result<HttpResponse, FhirError> {
    service_request_search(&req, &st, &writer, caller?, &cfg, Some(form)).await
}

async fn service_request_search(
    req: &HttpRequest,
    st: &AppState,
    writer: &Writer,
    caller: Caller,
    cfg: &FhirSettings,
    form: Option<FormBody>,
) -> Result<HttpResponse, FhirError> {
    let search = Search::begin(
        req,
        st,
        &caller,
        (&[Kind::Referral], "referral"),
        search::SERVICE_REQUEST,
        form,
    )
    .await?;
    // A service user has few referrals: read them all (in store pages) for an exact total.
    const CHUNK: i64 = 200;
    let now = Ts::now();
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let chunk = st
            .store
            .list_referrals(
                &caller.tenant,
                Some(&search.subject),
                None,
                None,
                now,
                after,
                CHUNK,
            )
            .await
            .map_err(ApiError::from)?;
        let n = chunk.len() as i64;
        after = chunk.last().map(|r| r.meta.id);
        rows.extend(chunk);
        if n < CHUNK {
            break;
        }
    }
    let rows = search.select(rows, service_request);
    let total = rows.len();
    let shown = window(rows, search.count, search.offset)
        .into_iter()
        .map(|(r, resource)| Listed {
            id: r.meta.id,
            subject: r.meta.subject,
            audited_as: "referral",
            resource,
        })
        .collect();
    search
        .answer(
            req,
            st,
            writer,
            &caller,
            cfg,
            "ServiceRequest",
            total,
            shown,
        )
        .await
}

/// Any other path under `/fhir`: an OperationOutcome rather than a problem document.
pub fn fallback_error(e: ApiError) -> HttpResponse {
    actix_web::ResponseError::error_response(&FhirError::Api(e))
}

/// CORS for SMART apps in an EHR's browser (`TELEMENTAL_FHIR_ALLOWED_ORIGINS`): see
/// `crate::http::cors`. A preflight from another origin is a 403 OperationOutcome.
async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    const POLICY: http_cors::Policy = http_cors::Policy {
        methods: "GET, POST, OPTIONS",
        request_headers: "Authorization, Accept, Content-Type, If-None-Match, Prefer, X-Request-Id",
        exposed_headers: "ETag, Last-Modified, Location, X-Request-Id",
    };
    let allowed = req
        .app_data::<web::Data<FhirSettings>>()
        .map(|c| c.allowed_origins.clone())
        .unwrap_or_default();
    http_cors::apply(req, next, &allowed, &POLICY, || {
        FhirError::from(ApiError::Forbidden(
            "this origin may not read the FHIR views (TELEMENTAL_FHIR_ALLOWED_ORIGINS)".into(),
        ))
        .error_response()
    })
    .await
}

pub fn configure(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(
        utoipa_actix_web::scope("/fhir/R4")
            .wrap(from_fn(cors))
            .service(metadata)
            .service(search_care_plans)
            .service(search_care_plans_post)
            .service(read_care_plan)
            .service(vread_care_plan)
            .service(care_plan_history)
            .service(search_service_requests)
            .service(search_service_requests_post)
            .service(read_service_request)
            .service(vread_service_request)
            .service(service_request_history),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn params(q: &str) -> Params {
        Params::of(&TestRequest::get().uri(&format!("/x?{q}")).to_http_request())
    }

    #[test]
    fn subjects_come_from_subject_or_patient() {
        assert_eq!(
            search_subject(&params("subject=Patient/1")).unwrap(),
            "Patient/1"
        );
        assert_eq!(search_subject(&params("subject=1")).unwrap(), "Patient/1");
        assert_eq!(search_subject(&params("patient=7")).unwrap(), "Patient/7");
        assert_eq!(
            search_subject(&params("patient=Patient%2F7")).unwrap(),
            "Patient/7"
        );
        for bad in [
            "",
            "subject=1&patient=2",
            "subject=1&subject=2",
            "patient=Group/1",
            "subject=a%20b",
        ] {
            assert!(search_subject(&params(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counts_are_bounded_and_offsets_checked() {
        assert_eq!(page(&params("")).unwrap(), (50, 0));
        assert_eq!(page(&params("_count=0")).unwrap(), (0, 0));
        assert_eq!(page(&params("_count=5000&_offset=3")).unwrap(), (200, 3));
        for bad in ["_count=-1", "_count=x", "_offset=-2", "_count=1&_count=2"] {
            assert!(page(&params(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_old_version_stands_until_the_next_was_recorded() {
        let t = |m: i64| DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(m);
        let read = || vec![(3, t(30)), (2, t(20)), (1, t(10))];
        assert_eq!(
            until_superseded(read(), false, |v| v.1),
            [
                ((3, t(30)), None),
                ((2, t(20)), Some(t(30))),
                ((1, t(10)), Some(t(20)))
            ]
        );
        // A page below the newest: its first read is the newer neighbour, lending its time.
        assert_eq!(
            until_superseded(read(), true, |v| v.1),
            [((2, t(20)), Some(t(30))), ((1, t(10)), Some(t(20)))]
        );
        assert!(until_superseded(Vec::<(i64, DateTime<Utc>)>::new(), true, |v| v.1).is_empty());
    }

    fn history(q: &str) -> History {
        let req = TestRequest::get().uri(&format!("/x?{q}")).to_http_request();
        History::begin(&req, &Params::of(&req)).unwrap()
    }

    #[test]
    fn a_history_page_windows_the_newest_versions_listed_and_links_keep_since() {
        // 450 versions, the newest 400 recorded since the instant given.
        let latest = 450_i64;
        let h = history("_since=2026-01-01T00:50:00Z&_count=150&_offset=300");
        assert_eq!(
            h.since
                .as_ref()
                .map(|(at, given)| (at.to_rfc3339(), given.as_str())),
            Some(("2026-01-01T00:50:00+00:00".into(), "2026-01-01T00:50:00Z"))
        );
        assert_eq!(
            h.window(latest, 400),
            Some((151, 100)),
            "versions 150 down to 51"
        );
        let past_the_end = history("_since=2026-01-01T00:50:00Z&_offset=400");
        assert_eq!(past_the_end.window(latest, 400), None);
        assert_eq!(history("_count=0").window(latest, 450), None);
        assert_eq!(history("_count=10").window(latest, 450), Some((451, 10)));
        assert!(history("").since.is_none() && history("_since=").since.is_none());
        // The links keep _since as given; the last page has none.
        let b = h.bundle(
            "https://x/fhir/R4",
            "CarePlan",
            Uuid::nil(),
            400,
            Vec::new(),
        );
        assert_eq!(b["link"].as_array().unwrap().len(), 1, "{b}");
        let first = history("_since=2026-01-01T00:50:00Z&_count=150");
        let b = first.bundle(
            "https://x/fhir/R4",
            "CarePlan",
            Uuid::nil(),
            400,
            Vec::new(),
        );
        assert_eq!(
            b["link"][1]["url"],
            format!(
                "https://x/fhir/R4/CarePlan/{}/_history?_since=2026-01-01T00%3A50%3A00Z&_count=150&_offset=150",
                Uuid::nil()
            )
        );
        let req = TestRequest::get().uri("/x?_since=soon").to_http_request();
        assert!(History::begin(&req, &Params::of(&req)).is_err());
    }

    #[test]
    fn next_links_exist_only_while_more_remain() {
        let (s, n) = links("https://x/fhir/R4", "CarePlan", "Patient/1", &[], 1, 0, 2);
        assert_eq!(
            s,
            "https://x/fhir/R4/CarePlan?subject=Patient%2F1&_count=1&_offset=0"
        );
        assert_eq!(
            n.as_deref(),
            Some("https://x/fhir/R4/CarePlan?subject=Patient%2F1&_count=1&_offset=1")
        );
        assert!(links("b", "CarePlan", "Patient/1", &[], 1, 1, 2)
            .1
            .is_none());
        assert!(links("b", "CarePlan", "Patient/1", &[], 0, 0, 2)
            .1
            .is_none());
        // The other parameters stay in the links, encoded, so that the next page is of the
        // same search.
        let given = [
            ("status".to_string(), "active,completed".to_string()),
            (
                "_lastUpdated".to_string(),
                "ge2026-01-01T00:00:00+01:00".to_string(),
            ),
        ];
        let (_, n) = links("b", "ServiceRequest", "Patient/1", &given, 1, 0, 2);
        assert_eq!(
            n.as_deref(),
            Some("b/ServiceRequest?subject=Patient%2F1&status=active%2Ccompleted&_lastUpdated=ge2026-01-01T00%3A00%3A00%2B01%3A00&_count=1&_offset=1")
        );
        assert_eq!(page(&params("_summary=count&_count=5")).unwrap(), (0, 0));
        assert_eq!(page(&params("_summary=false")).unwrap(), (DEFAULT_COUNT, 0));
        assert!(page(&params("_summary=true")).is_err());
        assert!(links("b", "CarePlan", "Patient/1", &[], 50, usize::MAX, 2)
            .1
            .is_none());
    }

    #[test]
    fn json_is_negotiated_and_other_formats_refused() {
        let with = |accept: Option<&str>, q: &str| {
            let mut r = TestRequest::get().uri(&format!("/x?{q}"));
            if let Some(a) = accept {
                r = r.insert_header((header::ACCEPT, a));
            }
            let req = r.to_http_request();
            negotiate(&req, &Params::of(&req)).is_ok()
        };
        assert!(with(None, ""));
        assert!(with(Some("application/fhir+json"), ""));
        assert!(with(Some("application/json"), ""));
        assert!(with(
            Some("application/fhir+xml, application/json;q=0.5"),
            ""
        ));
        assert!(with(Some("*/*"), ""));
        assert!(!with(Some("application/fhir+xml"), ""));
        assert!(!with(Some("application/json;q=0"), ""));
        assert!(with(Some("application/fhir+xml"), "_format=json"));
        assert!(with(None, "_format=application/fhir%2Bjson"));
        assert!(!with(None, "_format=xml"));
    }

    #[test]
    fn a_form_adds_to_the_query_and_each_parameter_counts_once_in_all() {
        let p = params("_count=2").with_form("subject=Patient%2F1&foo=1&foo=2&bar=3");
        assert_eq!(search_subject(&p).unwrap(), "Patient/1");
        assert_eq!(page(&p).unwrap(), (2, 0));
        assert_eq!(p.unknown(SEARCH_PARAMETERS, &[]), ["foo", "bar"]);
        // A resource type's own parameters are known, with or without a modifier (which the
        // search then refuses); another type's are not.
        let q = params("status:not=active&category=x&priority=stat");
        assert_eq!(
            q.unknown(SEARCH_PARAMETERS, search::CARE_PLAN),
            ["priority"]
        );
        assert_eq!(
            q.unknown(SEARCH_PARAMETERS, search::SERVICE_REQUEST),
            ["category"]
        );
        let twice = params("subject=Patient/1").with_form("subject=Patient/2");
        assert!(search_subject(&twice).is_err());
        assert!(
            params("subject=1&_count=1&_offset=0&_format=json&patient=2")
                .unknown(SEARCH_PARAMETERS, &[])
                .is_empty()
        );
    }

    #[test]
    fn strict_handling_is_asked_in_a_prefer_header() {
        let strict = |prefer: &[&str]| {
            let mut r = TestRequest::get();
            for p in prefer {
                r = r.append_header(("Prefer", *p));
            }
            strict_handling(&r.to_http_request())
        };
        assert!(!strict(&[]));
        assert!(strict(&["handling=strict"]));
        assert!(strict(&["return=minimal, handling=strict"]));
        assert!(strict(&["respond-async", "Handling = \"STRICT\""]));
        assert!(!strict(&["handling=lenient"]));
        assert!(!strict(&["handling"]));
        let req = TestRequest::get()
            .uri("/x?subject=1&intent=plan")
            .insert_header(("Prefer", "handling=strict"))
            .to_http_request();
        assert!(check_handling(
            &req,
            &Params::of(&req),
            SEARCH_PARAMETERS,
            search::CARE_PLAN
        )
        .is_err());
        let lenient = TestRequest::get()
            .uri("/x?subject=1&intent=plan")
            .to_http_request();
        assert!(check_handling(
            &lenient,
            &Params::of(&lenient),
            SEARCH_PARAMETERS,
            search::CARE_PLAN
        )
        .is_ok());
    }
}
