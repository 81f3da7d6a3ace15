//! The records as FHIR R4 resources: pure functions from the domain types and the record's
//! metadata to JSON. Core elements where FHIR R4 has one; extensions under [`CANONICAL`]
//! otherwise. Every output goes through [`prune`], so no `null`, `""`, `[]` or `{}` leaves.

use super::search::{self, ParamDef};
use crate::domain::plan::PlanInput;
use crate::domain::protocol::SafetyProtocolInput;
use crate::domain::referral::{is_overdue, ReferralState, ReferralStatus, Urgency};
use crate::domain::types::{Modality, PhoneNumber};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The URL space this service owns for its FHIR extensions and code systems. Canonical URLs
/// name definitions, not deployments: the same in every installation.
pub const CANONICAL: &str = "https://telemental.org/fhir";
pub const SNOMED: &str = "http://snomed.info/sct";
pub const PARTICIPATION_MODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode";
pub const FHIR_VERSION: &str = "4.0.1";
/// When the CapabilityStatement last changed (its required `date`).
pub const CAPABILITY_DATE: &str = "2026-12-07";

/// The URL of one of this service's extensions.
pub fn ext_url(name: &str) -> String {
    format!("{CANONICAL}/StructureDefinition/{name}")
}

/// The URL of one of this service's code systems.
pub fn code_system(name: &str) -> String {
    format!("{CANONICAL}/CodeSystem/{name}")
}

/// What FHIR needs of a stored record besides its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub id: Uuid,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The two kinds of record shown as a CarePlan, each with its own category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarePlanKind {
    PreferencePlan,
    SafetyProtocol,
}

impl CarePlanKind {
    pub fn code(self) -> &'static str {
        match self {
            CarePlanKind::PreferencePlan => "telemental-preference-plan",
            CarePlanKind::SafetyProtocol => "telemental-safety-protocol",
        }
    }

    pub fn display(self) -> &'static str {
        match self {
            CarePlanKind::PreferencePlan => "Telemental health preference plan",
            CarePlanKind::SafetyProtocol => "Telemental health safety protocol",
        }
    }
}

/// A FHIR `instant`: RFC 3339 in UTC with milliseconds.
pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The serde (wire) name of a unit enum variant, e.g. `in_person`.
fn code<T: Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// `medication_review` → `Medication review`.
fn display_of(code: &str) -> String {
    let mut s = code.replace('_', " ");
    if let Some(first) = s.get(..1) {
        let upper = first.to_ascii_uppercase();
        s.replace_range(..1, &upper);
    }
    s
}

/// The v3 ParticipationMode coding of a modality (secure messaging is online written).
pub fn modality_coding(m: Modality) -> Value {
    let (code, display) = match m {
        Modality::InPerson => ("FACE", "face-to-face"),
        Modality::Video => ("VIDEOCONF", "videoconferencing"),
        Modality::Telephone => ("PHONE", "telephone"),
        Modality::Text => ("ONLINEWRIT", "online written"),
    };
    json!({"system": PARTICIPATION_MODE, "code": code, "display": display})
}

fn own_coding(system: &str, code: &str) -> Value {
    json!({"system": code_system(system), "code": code, "display": display_of(code)})
}

fn phone(p: &PhoneNumber, system: &str) -> Value {
    json!({"system": system, "value": p.as_str()})
}

fn ext(name: &str, value_key: &str, value: Value) -> Value {
    json!({"url": ext_url(name), value_key: value})
}

/// A complex extension: `parts` are (relative url, value key, value).
fn complex(name: &str, parts: Vec<(&str, &str, Value)>) -> Value {
    let parts: Vec<Value> = parts
        .into_iter()
        .map(|(url, key, v)| json!({"url": url, key: v}))
        .collect();
    json!({"url": ext_url(name), "extension": parts})
}

fn review_interval(days: i64) -> Value {
    ext(
        "review-interval",
        "valueDuration",
        json!({"value": days, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}),
    )
}

fn meta(m: &RecordMeta) -> Value {
    json!({"versionId": m.version.to_string(), "lastUpdated": instant(m.updated_at)})
}

fn categories(kind: CarePlanKind) -> Value {
    json!([
        {"coding": [{"system": SNOMED, "code": "718347000", "display": "Mental health care plan"}]},
        {"coding": [{"system": code_system("care-plan-kind"), "code": kind.code(), "display": kind.display()}],
         "text": kind.display()}
    ])
}

fn note(text: Option<&str>) -> Value {
    match text {
        Some(t) if !t.trim().is_empty() => json!([{ "text": t }]),
        _ => Value::Null,
    }
}

/// A preference plan as a CarePlan (category `telemental-preference-plan`).
pub fn plan_care_plan(plan: &PlanInput, m: &RecordMeta) -> Value {
    let mut exts = Vec::new();
    // FLEX-2, FLEX-4: the default ranking, then one per appointment type, most preferred first.
    let rankings = std::iter::once((None, &plan.preferences.default)).chain(
        plan.preferences
            .by_appointment_type
            .iter()
            .map(|(t, r)| (Some(t), r)),
    );
    for (appointment_type, ranking) in rankings {
        let mut parts = Vec::new();
        if let Some(t) = appointment_type {
            parts.push((
                "appointmentType",
                "valueCoding",
                own_coding("appointment-type", &code(t)),
            ));
        }
        for &modality in ranking {
            parts.push(("modality", "valueCoding", modality_coding(modality)));
        }
        exts.push(complex("modality-preference", parts));
    }
    for &modality in &plan.preferences.uncomfortable_with {
        exts.push(ext(
            "uncomfortable-with",
            "valueCoding",
            modality_coding(modality),
        ));
    }
    // CONN-1: technology access and skills.
    let r = &plan.resources;
    let mut tech = Vec::new();
    for d in &r.devices {
        tech.push(("device", "valueCode", json!(code(d))));
    }
    tech.push(("connectivity", "valueCode", json!(code(&r.connectivity))));
    tech.push(("digitalSkills", "valueCode", json!(code(&r.digital_skills))));
    for p in &r.familiar_platforms {
        tech.push(("familiarPlatform", "valueString", json!(p)));
    }
    if let Some(ps) = &r.private_space {
        tech.push(("privateSpace", "valueCode", json!(code(ps))));
    }
    exts.push(complex("technology", tech));
    // EXCL-1, computed.
    let exclusion = plan.digital_exclusion();
    let mut excl = vec![("level", "valueCode", json!(code(&exclusion.level)))];
    for f in &exclusion.factors {
        excl.push(("factor", "valueCode", json!(code(f))));
    }
    exts.push(complex("digital-exclusion", excl));
    // FLEX-5
    for b in &plan.barriers {
        let mut parts = vec![("kind", "valueCode", json!(code(&b.kind)))];
        if let Some(n) = &b.note {
            parts.push(("note", "valueString", json!(n)));
        }
        exts.push(complex("barrier", parts));
    }
    // FLEX-3
    let p = &plan.personalisation;
    for participant in &p.participants {
        let mut parts = vec![("role", "valueCode", json!(code(&participant.role)))];
        if let Some(n) = &participant.name {
            parts.push(("name", "valueString", json!(n)));
        }
        parts.push((
            "joinsRemotely",
            "valueBoolean",
            json!(participant.joins_remotely),
        ));
        exts.push(complex("participant", parts));
    }
    exts.push(ext(
        "contact-pattern",
        "valueCode",
        json!(code(&p.contact_pattern)),
    ));
    exts.push(ext(
        "reluctant-to-attend-in-person",
        "valueBoolean",
        json!(p.reluctant_to_attend_in_person),
    ));
    exts.push(ext(
        "cannot-attend-in-person",
        "valueBoolean",
        json!(p.cannot_attend_in_person),
    ));
    // CONN-2
    if let Some(b) = &plan.backup_contact {
        let system = match b.method {
            crate::domain::plan::BackupMethod::Telephone => "phone",
            crate::domain::plan::BackupMethod::Text => "sms",
        };
        exts.push(ext(
            "backup-contact",
            "valueContactPoint",
            phone(&b.number, system),
        ));
    }
    exts.push(review_interval(plan.review_interval_days.days()));
    // FLEX-1
    if let Some(ic) = &plan.initial_conversation {
        let mut parts = vec![("heldOn", "valueDate", json!(ic.held_on.to_string()))];
        if let Some(by) = &ic.held_by {
            parts.push(("heldBy", "valueReference", json!({ "reference": by })));
        }
        exts.push(complex("initial-conversation", parts));
    }

    let ranking: Vec<String> = plan
        .preferences
        .default
        .iter()
        .map(|m| m.as_str().replace('_', " "))
        .collect();
    let next_review = plan.next_review_due();
    let description = format!(
        "Preferred ways of receiving care, most preferred first: {}. Next review due {}.",
        ranking.join(", "),
        next_review
    );
    let kind = CarePlanKind::PreferencePlan;
    prune(json!({
        "resourceType": "CarePlan",
        "id": m.id.to_string(),
        "meta": meta(m),
        "extension": exts,
        "status": "active",
        "intent": "plan",
        "category": categories(kind),
        "title": kind.display(),
        "description": description,
        "subject": {"reference": plan.subject.as_str()},
        "period": {
            "start": plan.last_reviewed_on.map(|d| d.to_string()),
            "end": next_review.to_string()
        },
        "created": instant(m.created_at),
        "note": note(plan.notes.as_deref()),
    }))
}

/// A safety protocol as a CarePlan (category `telemental-safety-protocol`): the in-person
/// crisis response is its activity; risk, call-back numbers, usual locations and emergency
/// contacts are extensions.
pub fn protocol_care_plan(p: &SafetyProtocolInput, m: &RecordMeta) -> Value {
    let mut exts = vec![ext(
        "risk-level",
        "valueCoding",
        own_coding("risk-level", &code(&p.risk_level)),
    )];
    for (i, n) in p.call_back_numbers.iter().enumerate() {
        let mut cp = phone(n, "phone");
        cp["rank"] = json!(i + 1);
        exts.push(ext("call-back-number", "valueContactPoint", cp));
    }
    for l in &p.usual_locations {
        let mut parts = vec![("label", "valueString", json!(l.label))];
        if let Some(a) = &l.address {
            parts.push(("address", "valueAddress", json!({ "text": a })));
        }
        exts.push(complex("usual-location", parts));
    }
    for c in &p.emergency_contacts {
        let mut parts = vec![("name", "valueString", json!(c.name))];
        if let Some(r) = &c.relationship {
            parts.push(("relationship", "valueString", json!(r)));
        }
        parts.push(("phone", "valueContactPoint", phone(&c.phone, "phone")));
        exts.push(complex("emergency-contact", parts));
    }
    exts.push(review_interval(p.review_interval_days.days()));

    let activity = p.crisis_response.as_ref().map(|cr| {
        let mut contact = Vec::new();
        if let Some(ph) = &cr.phone {
            contact.push(("phone", "valueContactPoint", phone(ph, "phone")));
        }
        if let Some(h) = &cr.hours {
            contact.push(("hours", "valueString", json!(h)));
        }
        let detail_ext = if contact.is_empty() {
            Value::Null
        } else {
            json!([complex("crisis-response-contact", contact)])
        };
        json!([{
            "detail": {
                "extension": detail_ext,
                "code": {"text": "In-person crisis response"},
                // A contingency: it starts only if a crisis arises.
                "status": "not-started",
                "performer": [{"display": cr.team}],
                "description": cr.in_person_plan.as_ref().map(ToString::to_string)
                    .unwrap_or_else(|| format!("Crisis response by {}", cr.team)),
            }
        }])
    });
    let next_review = p.next_review_due();
    let description = format!(
        "Risk level {}; {} call-back number(s); {}. Next review due {}.",
        code(&p.risk_level),
        p.call_back_numbers.len(),
        if p.has_in_person_crisis_response() {
            "an in-person crisis response is agreed"
        } else {
            "no in-person crisis response is recorded"
        },
        next_review
    );
    let kind = CarePlanKind::SafetyProtocol;
    prune(json!({
        "resourceType": "CarePlan",
        "id": m.id.to_string(),
        "meta": meta(m),
        "extension": exts,
        "status": "active",
        "intent": "plan",
        "category": categories(kind),
        "title": kind.display(),
        "description": description,
        "subject": {"reference": p.subject.as_str()},
        "period": {
            "start": p.agreed_with_service_user_on.to_string(),
            "end": next_review.to_string()
        },
        "created": instant(m.created_at),
        "activity": activity,
        "note": note(p.notes.as_deref()),
    }))
}

/// FHIR request status of a referral's status.
pub fn request_status(s: ReferralStatus) -> &'static str {
    match s {
        ReferralStatus::Requested | ReferralStatus::Accepted | ReferralStatus::Scheduled => {
            "active"
        }
        ReferralStatus::Completed => "completed",
        ReferralStatus::Cancelled => "revoked",
    }
}

/// FHIR request priority of an urgency.
pub fn request_priority(u: Urgency) -> &'static str {
    match u {
        Urgency::Routine => "routine",
        Urgency::Urgent => "urgent",
        Urgency::Emergency => "stat",
    }
}

/// SNOMED CT "Patient referral".
pub fn referral_code() -> Value {
    json!({"coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}],
           "text": "Face-to-face fallback referral"})
}

/// Face-to-face as the requested modality.
pub fn face_to_face_detail() -> Value {
    json!([{"coding": [modality_coding(Modality::InPerson)], "text": "Face-to-face"}])
}

/// A referral as a ServiceRequest. `now` decides `overdue`.
pub fn referral_service_request(r: &ReferralState, m: &RecordMeta, now: DateTime<Utc>) -> Value {
    let req = &r.request;
    let mut exts = vec![
        ext(
            "referral-status",
            "valueCoding",
            own_coding("referral-status", r.status.as_str()),
        ),
        ext("due-by", "valueDateTime", json!(instant(r.due_by))),
        ext(
            "overdue",
            "valueBoolean",
            json!(is_overdue(r.status, r.due_by, now)),
        ),
    ];
    if let Some(t) = &req.appointment_type {
        exts.push(ext(
            "appointment-type",
            "valueCoding",
            own_coding("appointment-type", &code(t)),
        ));
    }
    let reason = code(&req.reason);
    let mut notes = Vec::new();
    if let Some(d) = &req.detail {
        notes.push(json!({"text": d}));
    }
    for t in &r.history {
        if let Some(n) = &t.note {
            notes.push(json!({"authorString": t.actor, "time": instant(t.at), "text": n}));
        }
    }
    let authored = r.history.first().map(|t| t.at).unwrap_or(m.created_at);
    let (occurrence_key, occurrence) = match r.appointment_at {
        Some(at) => ("occurrenceDateTime", json!(instant(at))),
        None => ("occurrencePeriod", json!({ "end": instant(r.due_by) })),
    };
    let mut out = json!({
        "resourceType": "ServiceRequest",
        "id": m.id.to_string(),
        "meta": meta(m),
        "extension": exts,
        "status": request_status(r.status),
        "intent": "order",
        "code": referral_code(),
        "orderDetail": face_to_face_detail(),
        "priority": request_priority(req.urgency),
        "subject": {"reference": req.subject.as_str()},
        "authoredOn": instant(authored),
        "requester": req.requested_by.as_ref().map(|by| json!({"reference": by})),
        "reasonCode": [{"coding": [own_coding("referral-reason", &reason)], "text": display_of(&reason)}],
        "note": notes,
    });
    out[occurrence_key] = occurrence;
    prune(out)
}

/// What the server supports, exactly.
pub fn capability_statement(base: Option<&str>, cors: bool) -> Value {
    let reference = |name: &str, definition: &str, doc: &str| json!({"name": name, "definition": definition, "type": "reference", "documentation": doc});
    // `history`: every version kept and readable (vread, history-instance); `defs`: the
    // search parameters besides the subject.
    let resource = |ty: &str, profile_doc: &str, history: bool, defs: &[ParamDef]| {
        let mut params = vec![
            reference(
                "subject",
                &format!("http://hl7.org/fhir/SearchParameter/{ty}-subject"),
                "The service user, e.g. Patient/123 (a bare id means Patient/<id>). Required.",
            ),
            reference(
                "patient",
                "http://hl7.org/fhir/SearchParameter/clinical-patient",
                "The same as subject=Patient/<id>.",
            ),
        ];
        params.extend(defs.iter().map(|d| {
            json!({"name": d.name, "definition": d.definition, "type": d.kind.as_str(),
                   "documentation": d.documentation})
        }));
        let interaction = if history {
            json!([{"code": "read"}, {"code": "vread"}, {"code": "history-instance"}, {"code": "search-type"}])
        } else {
            json!([{"code": "read"}, {"code": "search-type"}])
        };
        json!({
            "type": ty,
            "documentation": profile_doc,
            "interaction": interaction,
            "versioning": "versioned",
            "readHistory": history,
            "conditionalRead": "not-match",
            "updateCreate": false,
            "searchParam": params,
        })
    };
    prune(json!({
        "resourceType": "CapabilityStatement",
        "id": "telemental",
        "url": base.map(|b| format!("{b}/fhir/R4/metadata")),
        "version": env!("CARGO_PKG_VERSION"),
        "name": "Telemental",
        "title": "telemental FHIR R4 read views",
        "status": "active",
        "experimental": false,
        "date": CAPABILITY_DATE,
        "publisher": "telemental",
        "description": "Read-only FHIR R4 views of telemental health preference plans and safety protocols (CarePlan) and face-to-face fallback referrals (ServiceRequest). Every call needs a bearer JWT; records are scoped to the token's tenant.",
        "kind": "instance",
        "software": {"name": "telemental", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": "telemental",
            "url": base.map(|b| format!("{b}/fhir/R4")),
        },
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search by GET [type]?params or POST [type]/_search with the parameters as application/x-www-form-urlencoded (in the body, the URL or both). Besides the subject (required), each resource type lists the parameters it takes: a parameter repeated is an AND, comma-separated values an OR; no modifiers. Parameters this server does not know are ignored and left out of the Bundle's self link, or refused (400) with Prefer: handling=strict. Order: oldest first, or _sort by _id or a date parameter (a '-' before a key for descending). Paging: _count (0 to 200, default 50) and the Bundle's next link; _summary=count gives the total alone; the total is always exact (_total is accepted). _format=json and Accept: application/fhir+json or application/json; XML is not supported (406).",
            "security": {
                "cors": cors,
                "description": "Authorization: Bearer <JWT> with the claims sub, tenant, scope, aud, exp. CarePlan needs plans:read (preference plans) and/or protocols:read (safety protocols); ServiceRequest needs referrals:read. SMART scopes are honoured too: system/ or user/, v1 (CarePlan.read) or v2 (CarePlan.rs: r to read, s to search), a resource type or *; not patient/ scopes or v2 scopes narrowed by a query.",
            },
            "resource": [
                resource("CarePlan", &format!(
                    "Preference plans (category {}) and safety protocols (category {}); extensions under {CANONICAL}/StructureDefinition/. Every version is kept: vread (CarePlan/[id]/_history/[vid]) and the history of one CarePlan (CarePlan/[id]/_history, newest first, paged by _count; _since for the versions recorded since an instant).",
                    CarePlanKind::PreferencePlan.code(), CarePlanKind::SafetyProtocol.code()), true, search::CARE_PLAN),
                resource("ServiceRequest", "Face-to-face fallback referrals (SNOMED CT 3457005 Patient referral). Each status change is a version, all kept: vread and the history of one ServiceRequest (_since as for CarePlan).", true, search::SERVICE_REQUEST),
            ],
        }],
    }))
}

/// One version of a resource in a `history` Bundle.
pub struct HistoryEntry {
    /// The resource's absolute URL (without the version).
    pub full_url: String,
    /// The resource as it was at this version (its `meta.versionId` is the version).
    pub resource: Value,
    pub version: i64,
    /// When this version was recorded.
    pub recorded: DateTime<Utc>,
}

/// A `history` Bundle of one resource's versions, newest first: each entry with the request
/// that made the version (`POST` for the first, `PUT` after) and its response (status, `ETag`,
/// `Last-Modified`), as FHIR requires of a history.
pub fn history(
    total: usize,
    entries: Vec<HistoryEntry>,
    self_link: &str,
    next_link: Option<&str>,
    now: DateTime<Utc>,
) -> Value {
    let entries = entries
        .into_iter()
        .map(|e| {
            let (method, status) = if e.version == 1 {
                ("POST", "201")
            } else {
                ("PUT", "200")
            };
            let url = format!(
                "{}/{}",
                e.resource["resourceType"].as_str().unwrap_or_default(),
                e.resource["id"].as_str().unwrap_or_default()
            );
            json!({
                "fullUrl": e.full_url,
                "resource": e.resource,
                "request": {"method": method, "url": url},
                "response": {"status": status, "etag": format!("W/\"{}\"", e.version),
                             "lastModified": instant(e.recorded)},
            })
        })
        .collect();
    paged_bundle("history", total, entries, self_link, next_link, now)
}

/// A `searchset` Bundle. `entries` are (fullUrl, resource).
pub fn searchset(
    total: usize,
    entries: Vec<(String, Value)>,
    self_link: &str,
    next_link: Option<&str>,
    now: DateTime<Utc>,
) -> Value {
    let entries = entries
        .into_iter()
        .map(|(full_url, resource)| {
            json!({"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}})
        })
        .collect();
    paged_bundle("searchset", total, entries, self_link, next_link, now)
}

/// A Bundle of one page (`searchset` or `history`): `total`, the `self` link and the `next`
/// link while more remain, and the page's entries.
fn paged_bundle(
    kind: &str,
    total: usize,
    entries: Vec<Value>,
    self_link: &str,
    next_link: Option<&str>,
    now: DateTime<Utc>,
) -> Value {
    let mut links = vec![json!({"relation": "self", "url": self_link})];
    if let Some(n) = next_link {
        links.push(json!({"relation": "next", "url": n}));
    }
    prune(json!({
        "resourceType": "Bundle",
        "id": Uuid::new_v4().to_string(),
        "meta": {"lastUpdated": instant(now)},
        "type": kind,
        "total": total,
        "link": links,
        "entry": entries,
    }))
}

/// One-issue OperationOutcome.
pub fn operation_outcome(severity: &str, code: &str, diagnostics: &str) -> Value {
    prune(json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }))
}

/// Removes `null`, empty strings, empty arrays and empty objects, recursively (FHIR JSON
/// allows none of them).
pub fn prune(v: Value) -> Value {
    fn keep(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }
    }
    match v {
        Value::Object(o) => {
            let mut out = Map::new();
            for (k, v) in o {
                let v = prune(v);
                if keep(&v) {
                    out.insert(k, v);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(prune).filter(keep).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::referral::{DueDurations, ReferralInput, StatusChange};
    use chrono::NaiveDate;

    fn meta_fixture() -> RecordMeta {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        RecordMeta {
            id: Uuid::parse_str("01936c1e-8f5a-7cc0-b4a7-0a1f2f3e4d5c").unwrap(),
            version: 3,
            created_at: t("2026-11-20T09:00:00Z"),
            updated_at: t("2026-11-21T10:30:00.250Z"),
        }
    }

    fn plan_fixture() -> PlanInput {
        let v = json!({
            "subject": "Patient/123",
            "initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
            "preferences": {
                "default": ["video", "telephone", "in_person"],
                "by_appointment_type": {"medication_review": ["telephone", "in_person"]},
                "uncomfortable_with": ["text"]
            },
            "resources": {"devices": ["smartphone", "computer"], "connectivity": "reliable",
                "digital_skills": "basic", "familiar_platforms": ["WhatsApp"], "private_space": "yes"},
            "barriers": [{"kind": "hearing", "note": "uses captions"}],
            "personalisation": {"participants": [{"role": "family", "name": "sister", "joins_remotely": true}],
                "contact_pattern": "shorter_more_frequent"},
            "backup_contact": {"method": "text", "number": "+447700900123"},
            "review_interval_days": 90,
            "last_reviewed_on": "2026-11-20",
            "notes": "free text"
        });
        serde_json::from_value(v).unwrap()
    }

    fn protocol_fixture(risk: &str) -> SafetyProtocolInput {
        serde_json::from_value(json!({
            "subject": "Patient/123",
            "risk_level": risk,
            "call_back_numbers": ["+447700900123", "+447700900999"],
            "usual_locations": [{"label": "home", "address": "1 High St, Leeds"}, {"label": "work"}],
            "emergency_contacts": [{"name": "A. Carer", "relationship": "mother", "phone": "+447700900456"}],
            "crisis_response": {"team": "Leeds crisis team", "phone": "+441130000000",
                "in_person_plan": "Crisis team attends within 4 hours", "hours": "24/7"},
            "agreed_with_service_user_on": "2026-11-20",
            "review_interval_days": 30
        }))
        .unwrap()
    }

    fn referral_fixture() -> ReferralState {
        let input: ReferralInput = serde_json::from_value(json!({
            "subject": "Patient/123", "reason": "not_accessible", "urgency": "emergency",
            "appointment_type": "therapy", "detail": "no private space at home",
            "requested_by": "Practitioner/9"
        }))
        .unwrap();
        ReferralState::new(
            input,
            &DueDurations::default(),
            meta_fixture().created_at,
            "ehr-client",
        )
    }

    /// The extensions with this name.
    fn exts<'a>(r: &'a Value, name: &str) -> Vec<&'a Value> {
        let url = ext_url(name);
        r["extension"]
            .as_array()
            .map(|a| a.iter().filter(|e| e["url"] == url.as_str()).collect())
            .unwrap_or_default()
    }

    fn part<'a>(e: &'a Value, url: &str) -> Vec<&'a Value> {
        e["extension"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["url"] == url)
            .collect()
    }

    fn assert_clean(v: &Value) {
        match v {
            Value::Null => panic!("null in FHIR JSON"),
            Value::String(s) => assert!(!s.is_empty(), "empty string"),
            Value::Array(a) => {
                assert!(!a.is_empty(), "empty array");
                a.iter().for_each(assert_clean);
            }
            Value::Object(o) => {
                assert!(!o.is_empty(), "empty object");
                o.values().for_each(assert_clean);
            }
            _ => {}
        }
    }

    #[test]
    fn a_plan_maps_to_a_care_plan_with_core_elements_and_extensions() {
        let cp = plan_care_plan(&plan_fixture(), &meta_fixture());
        assert_clean(&cp);
        assert_eq!(cp["resourceType"], "CarePlan");
        assert_eq!(cp["id"], "01936c1e-8f5a-7cc0-b4a7-0a1f2f3e4d5c");
        assert_eq!(
            cp["meta"],
            json!({"versionId": "3", "lastUpdated": "2026-11-21T10:30:00.250Z"})
        );
        assert_eq!(cp["status"], "active");
        assert_eq!(cp["intent"], "plan");
        assert_eq!(cp["subject"], json!({"reference": "Patient/123"}));
        assert_eq!(cp["category"][0]["coding"][0]["code"], "718347000");
        assert_eq!(
            cp["category"][1]["coding"][0]["code"],
            "telemental-preference-plan"
        );
        assert_eq!(
            cp["period"],
            json!({"start": "2026-11-20", "end": "2027-02-18"})
        );
        assert_eq!(cp["created"], "2026-11-20T09:00:00.000Z");
        assert_eq!(cp["note"], json!([{"text": "free text"}]));
        // Rankings keep their order; the default first, then per appointment type.
        let prefs = exts(&cp, "modality-preference");
        assert_eq!(prefs.len(), 2);
        let codes = |e: &Value| -> Vec<String> {
            part(e, "modality")
                .iter()
                .map(|p| p["valueCoding"]["code"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(codes(prefs[0]), ["VIDEOCONF", "PHONE", "FACE"]);
        assert!(part(prefs[0], "appointmentType").is_empty());
        assert_eq!(codes(prefs[1]), ["PHONE", "FACE"]);
        assert_eq!(
            part(prefs[1], "appointmentType")[0]["valueCoding"]["code"],
            "medication_review"
        );
        assert_eq!(
            exts(&cp, "uncomfortable-with")[0]["valueCoding"]["code"],
            "ONLINEWRIT"
        );
        assert_eq!(
            exts(&cp, "backup-contact")[0]["valueContactPoint"],
            json!({"system": "sms", "value": "+447700900123"})
        );
        assert_eq!(
            exts(&cp, "review-interval")[0]["valueDuration"]["value"],
            90
        );
        let tech = exts(&cp, "technology")[0];
        assert_eq!(part(tech, "device").len(), 2);
        assert_eq!(part(tech, "connectivity")[0]["valueCode"], "reliable");
        assert_eq!(part(tech, "familiarPlatform")[0]["valueString"], "WhatsApp");
        let excl = exts(&cp, "digital-exclusion")[0];
        assert_eq!(part(excl, "level")[0]["valueCode"], "none");
        assert!(part(excl, "factor").is_empty());
        assert_eq!(
            part(exts(&cp, "barrier")[0], "kind")[0]["valueCode"],
            "hearing"
        );
        assert_eq!(
            part(exts(&cp, "participant")[0], "joinsRemotely")[0]["valueBoolean"],
            true
        );
        assert_eq!(
            exts(&cp, "contact-pattern")[0]["valueCode"],
            "shorter_more_frequent"
        );
        assert_eq!(
            part(exts(&cp, "initial-conversation")[0], "heldBy")[0]["valueReference"],
            json!({"reference": "Practitioner/9"})
        );
    }

    #[test]
    fn a_minimal_plan_has_no_empty_elements() {
        let plan: PlanInput = serde_json::from_value(json!({
            "subject": "Patient/9",
            "preferences": {"default": ["in_person"]},
            "resources": {"connectivity": "none", "digital_skills": "none"}
        }))
        .unwrap();
        let cp = plan_care_plan(&plan, &meta_fixture());
        assert_clean(&cp);
        assert!(cp.get("note").is_none());
        assert!(exts(&cp, "backup-contact").is_empty());
        assert!(exts(&cp, "initial-conversation").is_empty());
        // Without last_reviewed_on the period has only its end.
        assert!(cp["period"].get("start").is_none());
        let excl = exts(&cp, "digital-exclusion")[0];
        assert_eq!(part(excl, "level")[0]["valueCode"], "excluded");
    }

    #[test]
    fn a_safety_protocol_maps_risk_crisis_response_and_contacts() {
        let cp = protocol_care_plan(&protocol_fixture("high"), &meta_fixture());
        assert_clean(&cp);
        assert_eq!(
            cp["category"][1]["coding"][0]["code"],
            "telemental-safety-protocol"
        );
        assert_eq!(cp["title"], "Telemental health safety protocol");
        assert_eq!(exts(&cp, "risk-level")[0]["valueCoding"]["code"], "high");
        let numbers = exts(&cp, "call-back-number");
        assert_eq!(numbers.len(), 2);
        assert_eq!(numbers[1]["valueContactPoint"]["rank"], 2);
        let locations = exts(&cp, "usual-location");
        assert_eq!(
            part(locations[0], "address")[0]["valueAddress"]["text"],
            "1 High St, Leeds"
        );
        assert!(part(locations[1], "address").is_empty());
        assert_eq!(
            part(exts(&cp, "emergency-contact")[0], "phone")[0]["valueContactPoint"]["value"],
            "+447700900456"
        );
        let detail = &cp["activity"][0]["detail"];
        assert_eq!(detail["status"], "not-started");
        assert_eq!(detail["description"], "Crisis team attends within 4 hours");
        assert_eq!(detail["performer"][0]["display"], "Leeds crisis team");
        assert_eq!(
            cp["period"],
            json!({"start": "2026-11-20", "end": "2026-12-20"})
        );
    }

    #[test]
    fn a_protocol_without_crisis_response_has_no_activity() {
        let mut p = protocol_fixture("low");
        p.crisis_response = None;
        p.usual_locations.clear();
        p.emergency_contacts.clear();
        let cp = protocol_care_plan(&p, &meta_fixture());
        assert_clean(&cp);
        assert!(cp.get("activity").is_none());
        assert!(exts(&cp, "usual-location").is_empty());
    }

    #[test]
    fn a_referral_maps_to_a_service_request() {
        let r = referral_fixture();
        let m = meta_fixture();
        let sr = referral_service_request(&r, &m, m.created_at);
        assert_clean(&sr);
        assert_eq!(sr["resourceType"], "ServiceRequest");
        assert_eq!(sr["status"], "active");
        assert_eq!(sr["intent"], "order");
        assert_eq!(sr["priority"], "stat");
        assert_eq!(sr["code"]["coding"][0]["code"], "3457005");
        assert_eq!(sr["orderDetail"][0]["coding"][0]["code"], "FACE");
        assert_eq!(sr["reasonCode"][0]["coding"][0]["code"], "not_accessible");
        assert_eq!(sr["requester"], json!({"reference": "Practitioner/9"}));
        assert_eq!(sr["authoredOn"], "2026-11-20T09:00:00.000Z");
        // Due 4 h after the request (emergency), as the occurrence until scheduled.
        assert_eq!(
            sr["occurrencePeriod"],
            json!({"end": "2026-11-20T13:00:00.000Z"})
        );
        assert!(sr.get("occurrenceDateTime").is_none());
        assert_eq!(sr["note"], json!([{"text": "no private space at home"}]));
        assert_eq!(exts(&sr, "overdue")[0]["valueBoolean"], false);
        let later = m.created_at + chrono::Duration::hours(5);
        let sr = referral_service_request(&r, &m, later);
        assert_eq!(exts(&sr, "overdue")[0]["valueBoolean"], true);
    }

    #[test]
    fn referral_statuses_and_urgencies_map_to_fhir_codes() {
        use ReferralStatus::*;
        let expected = [
            (Requested, "active"),
            (Accepted, "active"),
            (Scheduled, "active"),
            (Completed, "completed"),
            (Cancelled, "revoked"),
        ];
        for (s, code) in expected {
            assert_eq!(request_status(s), code);
        }
        assert_eq!(request_priority(Urgency::Routine), "routine");
        assert_eq!(request_priority(Urgency::Urgent), "urgent");
        assert_eq!(request_priority(Urgency::Emergency), "stat");
    }

    #[test]
    fn a_scheduled_referral_occurs_at_its_appointment_and_keeps_notes() {
        let m = meta_fixture();
        let at = m.created_at + chrono::Duration::days(2);
        let r = referral_fixture()
            .apply(
                StatusChange {
                    status: ReferralStatus::Scheduled,
                    appointment_at: Some(crate::domain::types::Timestamp::new(at).unwrap()),
                    note: Some(crate::domain::types::Detail::parse("clinic room 4").unwrap()),
                },
                m.updated_at,
                "scheduler",
            )
            .unwrap();
        let sr = referral_service_request(&r, &m, m.updated_at);
        assert_eq!(sr["occurrenceDateTime"], "2026-11-22T09:00:00.000Z");
        assert!(sr.get("occurrencePeriod").is_none());
        assert_eq!(
            exts(&sr, "referral-status")[0]["valueCoding"]["code"],
            "scheduled"
        );
        assert_eq!(sr["note"][1]["text"], "clinic room 4");
        assert_eq!(sr["note"][1]["authorString"], "scheduler");
    }

    #[test]
    fn the_capability_statement_lists_exactly_two_read_and_search_resources() {
        let cs = capability_statement(Some("https://tm.example.org"), false);
        assert_clean(&cs);
        assert_eq!(cs["fhirVersion"], "4.0.1");
        assert_eq!(cs["kind"], "instance");
        assert_eq!(
            cs["implementation"]["url"],
            "https://tm.example.org/fhir/R4"
        );
        let resources = cs["rest"][0]["resource"].as_array().unwrap();
        let types: Vec<&str> = resources
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["CarePlan", "ServiceRequest"]);
        assert_eq!(
            resources[0]["interaction"],
            json!([{"code": "read"}, {"code": "vread"}, {"code": "history-instance"}, {"code": "search-type"}])
        );
        assert_eq!(resources[0]["readHistory"], true);
        assert_eq!(resources[1]["interaction"], resources[0]["interaction"]);
        assert_eq!(resources[1]["readHistory"], true);
        assert!(capability_statement(None, false).get("url").is_none());
        assert_eq!(cs["rest"][0]["security"]["cors"], false);
        assert_eq!(
            capability_statement(None, true)["rest"][0]["security"]["cors"],
            true
        );
    }

    #[test]
    fn a_searchset_has_total_links_and_match_entries() {
        let now = meta_fixture().updated_at;
        let b = searchset(
            3,
            vec![(
                "https://x/fhir/R4/CarePlan/1".into(),
                json!({"resourceType": "CarePlan"}),
            )],
            "https://x/fhir/R4/CarePlan?subject=Patient/1&_count=1",
            Some("https://x/fhir/R4/CarePlan?subject=Patient/1&_count=1&_offset=1"),
            now,
        );
        assert_clean(&b);
        assert_eq!(b["type"], "searchset");
        assert_eq!(b["total"], 3);
        assert_eq!(b["link"][1]["relation"], "next");
        assert_eq!(b["entry"][0]["search"]["mode"], "match");
        let empty = searchset(0, vec![], "https://x/s", None, now);
        assert_clean(&empty);
        assert!(empty.get("entry").is_none());
        assert_eq!(empty["total"], 0);
    }

    #[test]
    fn a_history_has_each_versions_request_and_response() {
        let now = meta_fixture().updated_at;
        let entry = |version: i64| HistoryEntry {
            full_url: "https://x/fhir/R4/CarePlan/p1".into(),
            resource: json!({"resourceType": "CarePlan", "id": "p1",
                "meta": {"versionId": version.to_string()}}),
            version,
            recorded: now,
        };
        let b = history(
            3,
            vec![entry(3), entry(2)],
            "https://x/fhir/R4/CarePlan/p1/_history?_count=2",
            Some("https://x/fhir/R4/CarePlan/p1/_history?_count=2&_offset=2"),
            now,
        );
        assert_clean(&b);
        assert_eq!(b["type"], "history");
        assert_eq!(b["total"], 3);
        assert_eq!(
            b["entry"][0]["request"],
            json!({"method": "PUT", "url": "CarePlan/p1"})
        );
        assert_eq!(b["entry"][0]["response"]["status"], "200");
        assert_eq!(b["entry"][0]["response"]["etag"], "W/\"3\"");
        assert_eq!(b["entry"][0]["response"]["lastModified"], instant(now));
        assert!(b["entry"][0].get("search").is_none());
        let first = history(1, vec![entry(1)], "https://x/h", None, now);
        assert_eq!(first["entry"][0]["request"]["method"], "POST");
        assert_eq!(first["entry"][0]["response"]["status"], "201");
        assert_eq!(first["link"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn prune_drops_every_kind_of_emptiness() {
        let v = prune(
            json!({"a": null, "b": "", "c": [], "d": {}, "e": [null, {}, 1],
            "f": {"g": {"h": []}}, "i": false, "j": 0}),
        );
        assert_eq!(v, json!({"e": [1], "i": false, "j": 0}));
    }

    #[test]
    fn today_fixture_dates_are_plain_dates() {
        // Dates (not instants) where FHIR has `date`: the review period.
        let cp = plan_care_plan(&plan_fixture(), &meta_fixture());
        let start = cp["period"]["start"].as_str().unwrap();
        assert!(NaiveDate::parse_from_str(start, "%Y-%m-%d").is_ok());
    }
}
