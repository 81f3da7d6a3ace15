//! The `appointment-book` hook as pure functions: the proposed appointments out of the hook's
//! context, their modality out of the codings an EHR may use, and CDS Hooks cards out of the
//! recommendation engine's answer.

use crate::domain::protocol::SafetyProtocol;
use crate::domain::rules::{
    Prerequisite, PrerequisiteCode, Reason, Recommendation, ReferralReason, RuleId,
};
use crate::domain::types::{AppointmentType, Modality, RiskLevel};
use crate::fhir::mapping::{
    code_system, face_to_face_detail, modality_coding, prune, referral_code, PARTICIPATION_MODE,
    SNOMED,
};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use uuid::Uuid;

pub const HOOK: &str = "appointment-book";
pub const SERVICE_ID: &str = "telemental-modality";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const R5_CLASS: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.class";
const R5_VIRTUAL_SERVICE: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService";
/// The key of the card extension that lists the guideline rules behind a card.
pub const RULES_EXTENSION: &str = "org.telemental.guideline-rules";
/// CDS Hooks limits `summary` to fewer than 140 characters.
const SUMMARY_MAX: usize = 139;

/// One proposed appointment from the hook's context.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedAppointment {
    pub resource: Value,
    /// `None` when no coding names a modality this service knows.
    pub modality: Option<Modality>,
    pub appointment_type: AppointmentType,
}

/// What the hook needs from its context, or why it cannot run (412).
#[derive(Debug, Clone, PartialEq)]
pub struct HookContext {
    /// `Patient/<patientId>`.
    pub subject: String,
    /// The clinician booking (`userId`, e.g. `PractitionerRole/123`), when given.
    pub user: Option<String>,
    pub appointments: Vec<ProposedAppointment>,
}

/// Reads `patientId`, `userId` and `appointments` (a Bundle, or a plain array) from the context.
pub fn read_context(context: &Value) -> Result<HookContext, String> {
    let Some(ctx) = context.as_object() else {
        return Err("the request has no context".into());
    };
    let patient = match ctx.get("patientId") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.trim(),
        _ => return Err("context.patientId (the patient's id) is missing".into()),
    };
    let subject = if patient.starts_with("Patient/") {
        patient.to_string()
    } else {
        format!("Patient/{patient}")
    };
    if crate::domain::types::SubjectRef::parse(&subject).is_err() {
        return Err("context.patientId is not a usable patient id".into());
    }
    let resources: Vec<&Value> = match ctx.get("appointments") {
        Some(b @ Value::Object(_)) if b["resourceType"] == "Bundle" => b["entry"]
            .as_array()
            .map(|es| es.iter().map(|e| &e["resource"]).collect())
            .unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().collect(),
        _ => {
            return Err(
                "context.appointments (a Bundle of proposed Appointments) is missing".into(),
            )
        }
    };
    let appointments: Vec<ProposedAppointment> = resources
        .into_iter()
        .filter(|r| r["resourceType"] == "Appointment")
        .map(|r| ProposedAppointment {
            modality: read_modality(r),
            appointment_type: read_appointment_type(r),
            resource: r.clone(),
        })
        .collect();
    if appointments.is_empty() {
        return Err("context.appointments holds no Appointment".into());
    }
    let user = ctx
        .get("userId")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    Ok(HookContext {
        subject,
        user,
        appointments,
    })
}

/// Every coding of an element that is a CodeableConcept, a Coding, or an array of either.
fn codings(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().flat_map(codings).collect(),
        Value::Object(o) if o.contains_key("coding") => o["coding"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        Value::Object(o) if o.contains_key("code") => vec![v],
        _ => Vec::new(),
    }
}

fn extensions<'a>(r: &'a Value, url: &str) -> Vec<&'a Value> {
    r["extension"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["url"] == url).collect())
        .unwrap_or_default()
}

/// The modality of a proposed appointment, from the most explicit coding found:
/// 1. v3 ParticipationMode (`FACE`, `VIDEOCONF`, `PHONE`, written/messaging codes) in
///    `serviceType`, `appointmentType` or the R5 `class` extension;
/// 2. the R5 `virtualService` extension (a video platform: `zoom`, `ms-teams`, `whatsapp`);
/// 3. SNOMED CT 448337001 "Telemedicine consultation" (video), 185317003 "Telephone encounter";
/// 4. v3 ActCode `AMB` (in person) or `VR` (virtual: taken as video).
///
/// Codings it does not know are ignored.
pub fn read_modality(appointment: &Value) -> Option<Modality> {
    let mut all: Vec<&Value> = codings(&appointment["serviceType"]);
    all.extend(codings(&appointment["appointmentType"]));
    for e in extensions(appointment, R5_CLASS) {
        all.extend(codings(&e["valueCodeableConcept"]));
        all.extend(codings(&e["valueCoding"]));
    }
    let find = |system: &str, map: &dyn Fn(&str) -> Option<Modality>| {
        all.iter()
            .filter(|c| c["system"] == system)
            .find_map(|c| c["code"].as_str().and_then(map))
    };
    let participation = |code: &str| match code {
        "FACE" | "PHYSICAL" => Some(Modality::InPerson),
        "VIDEOCONF" => Some(Modality::Video),
        "PHONE" => Some(Modality::Telephone),
        "WRITTEN" | "ONLINEWRIT" | "EMAILWRIT" | "MSGWRIT" | "SMSWRIT" | "MMSWRIT" | "APPWRIT"
        | "TYPEWRIT" => Some(Modality::Text),
        _ => None,
    };
    if let Some(m) = find(PARTICIPATION_MODE, &participation) {
        return Some(m);
    }
    let virtual_video = extensions(appointment, R5_VIRTUAL_SERVICE).iter().any(|e| {
        extensions(e, "channelType")
            .iter()
            .flat_map(|c| codings(&c["valueCoding"]))
            .any(|c| matches!(c["code"].as_str(), Some("zoom" | "ms-teams" | "whatsapp")))
    });
    if virtual_video {
        return Some(Modality::Video);
    }
    let snomed = |code: &str| match code {
        "448337001" => Some(Modality::Video),
        "185317003" => Some(Modality::Telephone),
        _ => None,
    };
    if let Some(m) = find(SNOMED, &snomed) {
        return Some(m);
    }
    let act = |code: &str| match code {
        "AMB" => Some(Modality::InPerson),
        "VR" => Some(Modality::Video),
        _ => None,
    };
    if let Some(m) = find(ACT_CODE, &act) {
        return Some(m);
    }
    // REMOTE says only "not in person": taken as video, like VR.
    find(PARTICIPATION_MODE, &|c| {
        (c == "REMOTE").then_some(Modality::Video)
    })
}

/// The appointment type from a coding of this service's `appointment-type` code system in
/// `serviceType` or `appointmentType`; `other` (the default ranking) otherwise.
pub fn read_appointment_type(appointment: &Value) -> AppointmentType {
    let system = code_system("appointment-type");
    let mut all = codings(&appointment["serviceType"]);
    all.extend(codings(&appointment["appointmentType"]));
    all.iter()
        .filter(|c| c["system"] == system.as_str())
        .find_map(|c| {
            c["code"]
                .as_str()
                .and_then(|s| serde_json::from_value(json!(s)).ok())
        })
        .unwrap_or(AppointmentType::Other)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CdsIndicator)]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = CdsSource)]
pub struct Source {
    pub label: String,
    #[schema(value_type = Object)]
    pub topic: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = CdsAction)]
pub struct Action {
    /// `create` or `update`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub description: String,
    /// The FHIR R4 resource to create or update.
    #[schema(value_type = Object)]
    pub resource: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CdsSuggestion)]
pub struct Suggestion {
    pub label: String,
    pub uuid: Uuid,
    pub is_recommended: bool,
    pub actions: Vec<Action>,
}

/// A CDS Hooks 2.0 card. Optional fields are omitted, never null or empty.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CdsCard)]
pub struct Card {
    pub uuid: Uuid,
    /// Fewer than 140 characters.
    pub summary: String,
    /// Markdown; names the guideline rules behind the card.
    pub detail: String,
    pub indicator: Indicator,
    pub source: Source,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<Suggestion>,
    /// `at-most-one` whenever there are suggestions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection_behavior: Option<&'static str>,
    /// Codings, each with a display.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub override_reasons: Vec<Value>,
    /// `{"org.telemental.guideline-rules": ["SAFE-2", …]}`.
    #[schema(value_type = Object)]
    pub extension: Value,
}

/// The response of a hook call.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CdsResponse {
    pub cards: Vec<Card>,
}

/// One proposed appointment with the recommendation for its appointment type.
pub struct Assessed<'a> {
    pub appointment: &'a ProposedAppointment,
    pub recommendation: &'a Recommendation,
}

/// What the cards need besides the recommendations.
pub struct CardInputs<'a> {
    pub context: &'a HookContext,
    pub protocol: Option<&'a SafetyProtocol>,
    pub today: NaiveDate,
}

/// A safety protocol that can be relied on: a call-back number, an in-person crisis response
/// when risk is high, and not past its review date.
pub fn protocol_usable(p: Option<&SafetyProtocol>, today: NaiveDate) -> bool {
    p.is_some_and(|p| {
        !p.call_back_numbers.is_empty()
            && (p.risk_level != RiskLevel::High || p.has_in_person_crisis_response())
            && p.next_review_due() >= today
    })
}

fn words(m: Modality) -> &'static str {
    match m {
        Modality::InPerson => "in person",
        Modality::Video => "video",
        Modality::Telephone => "telephone",
        Modality::Text => "secure messaging",
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn summary(s: String) -> String {
    if s.chars().count() <= SUMMARY_MAX {
        return s;
    }
    let cut: String = s.chars().take(SUMMARY_MAX - 1).collect();
    format!("{}…", cut.trim_end())
}

fn rule_ids<'a>(reasons: impl IntoIterator<Item = &'a RuleId>) -> Vec<RuleId> {
    let mut out: Vec<RuleId> = Vec::new();
    for r in reasons {
        if !out.contains(r) {
            out.push(*r);
        }
    }
    out
}

fn rules_text(rules: &[RuleId]) -> String {
    rules
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn rules_extension(rules: &[RuleId]) -> Value {
    json!({ RULES_EXTENSION: rules.iter().map(|r| r.as_str()).collect::<Vec<_>>() })
}

fn source() -> Source {
    Source {
        label: "telemental: Telemental Health Top Tips guideline".into(),
        topic: json!({"system": code_system("cds-topic"), "code": "modality",
                      "display": "Telemental health modality"}),
    }
}

/// Why a clinician may keep the proposed modality.
pub fn override_reasons() -> Vec<Value> {
    let system = code_system("cds-override-reason");
    [
        (
            "service-user-choice",
            "The service user chose this after discussion",
        ),
        ("clinical-judgement", "Clinical judgement"),
        (
            "plan-out-of-date",
            "The plan is out of date and will be reviewed",
        ),
        ("no-alternative", "No alternative can be arranged in time"),
    ]
    .iter()
    .map(|(code, display)| json!({"system": system, "code": code, "display": display}))
    .collect()
}

fn bullet_list(reasons: &[Reason]) -> String {
    reasons
        .iter()
        .map(|r| format!("- **{}**: {}", r.rule, r.text))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The Appointment with its modality codings replaced by the recommended one.
fn rebooked(appointment: &Value, m: Modality) -> Value {
    let mut a = appointment.clone();
    let known = |c: &Value| {
        c["system"] == PARTICIPATION_MODE
            || c["system"] == ACT_CODE
            || (c["system"] == SNOMED
                && matches!(c["code"].as_str(), Some("448337001" | "185317003")))
    };
    if let Some(types) = a["serviceType"].as_array_mut() {
        for t in types.iter_mut() {
            if let Some(cs) = t["coding"].as_array_mut() {
                cs.retain(|c| !known(c));
            }
        }
    }
    if let Some(exts) = a["extension"].as_array_mut() {
        exts.retain(|e| e["url"] != R5_CLASS && e["url"] != R5_VIRTUAL_SERVICE);
    }
    let entry = json!({"coding": [modality_coding(m)], "text": capitalised(words(m))});
    match a["serviceType"].as_array_mut() {
        Some(types) => types.push(entry),
        None => a["serviceType"] = json!([entry]),
    }
    // Empty codings left behind (a text-less serviceType) are dropped by prune.
    prune(a)
}

/// A draft face-to-face referral (SNOMED CT 3457005) for the EHR to create.
fn referral(ctx: &HookContext, reason: ReferralReason, urgent: bool) -> Value {
    let reason_code = match reason {
        ReferralReason::NotPreferred => "not_preferred",
        ReferralReason::NotAppropriate => "not_appropriate",
        ReferralReason::NotAccessible => "not_accessible",
        other => other.as_str(),
    };
    let reason_text = match reason {
        ReferralReason::NotPreferred => "Remote care is not preferred",
        ReferralReason::NotAppropriate => "Remote care is not appropriate",
        ReferralReason::NotAccessible => "Remote care is not accessible",
        _ => "Remote care is not suitable",
    };
    prune(json!({
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "code": referral_code(),
        "orderDetail": face_to_face_detail(),
        "priority": if urgent { "urgent" } else { "routine" },
        "subject": {"reference": ctx.subject},
        "requester": ctx.user.as_ref().map(|u| json!({"reference": u})),
        "reasonCode": [{"coding": [{"system": code_system("referral-reason"), "code": reason_code,
                                    "display": reason_text}], "text": reason_text}],
    }))
}

/// The cards for a hook call: a warning (or critical) card for each proposed appointment whose
/// modality is unsuitable or not the recommended one, and an info card for each prerequisite
/// of remote care when a remote appointment is proposed. An appointment that fits gets none.
pub fn cards(
    inputs: &CardInputs,
    assessed: &[Assessed],
    mut new_uuid: impl FnMut() -> Uuid,
) -> Vec<Card> {
    let usable = protocol_usable(inputs.protocol, inputs.today);
    let mut out = Vec::new();
    for a in assessed {
        let Some(proposed) = a.appointment.modality else {
            continue;
        };
        let rec = a.recommendation;
        let recommended = rec.recommended_modality;
        if proposed == recommended {
            continue;
        }
        let option_of = |m: Modality| rec.options.iter().find(|o| o.modality == m);
        let Some(opt) = option_of(proposed) else {
            continue;
        };
        let chosen = option_of(recommended);
        let why_not = opt.reasons.clone();
        let why = chosen.map(|o| o.reasons.clone()).unwrap_or_default();
        let rules = rule_ids(why_not.iter().chain(&why).map(|r| &r.rule));
        let critical =
            proposed.is_remote() && rec.effective_risk_level == Some(RiskLevel::High) && !usable;
        let headline = if !opt.suitable {
            format!(
                "{} is not suitable for this service user: {} is recommended",
                capitalised(words(proposed)),
                words(recommended)
            )
        } else {
            format!(
                "{} goes against the service user's plan: {} is recommended",
                capitalised(words(proposed)),
                words(recommended)
            )
        };
        let mut detail = format!(
            "**Proposed:** {}. **Recommended:** {}.\n\n",
            words(proposed),
            words(recommended)
        );
        if critical {
            detail.push_str(
                "**High risk without a usable safety protocol** (past its review date, or \
                 without a call-back number or an in-person crisis response): do not book \
                 remote care until it is agreed.\n\n",
            );
        }
        if !why_not.is_empty() {
            detail.push_str(&format!(
                "{} ({}):\n{}\n\n",
                capitalised(words(proposed)),
                if opt.suitable {
                    "proposed"
                } else {
                    "proposed, not suitable"
                },
                bullet_list(&why_not)
            ));
        }
        if !why.is_empty() {
            detail.push_str(&format!(
                "{} (recommended):\n{}\n\n",
                capitalised(words(recommended)),
                bullet_list(&why)
            ));
        }
        detail.push_str(&format!("Guideline rules: {}.", rules_text(&rules)));

        let mut suggestions = vec![Suggestion {
            label: format!("Book {} instead", words(recommended)),
            uuid: new_uuid(),
            is_recommended: true,
            actions: vec![Action {
                type_: if a.appointment.resource["id"].is_string() {
                    "update"
                } else {
                    "create"
                },
                description: format!(
                    "Change the appointment's modality to {}",
                    words(recommended)
                ),
                resource: rebooked(&a.appointment.resource, recommended),
            }],
        }];
        if proposed.is_remote() {
            let reason = rec.fallback_referral.reason.unwrap_or(if critical {
                ReferralReason::NotAppropriate
            } else {
                ReferralReason::NotPreferred
            });
            suggestions.push(Suggestion {
                label: "Refer for face-to-face care".into(),
                uuid: new_uuid(),
                is_recommended: recommended == Modality::InPerson
                    && rec.fallback_referral.suggested,
                actions: vec![Action {
                    type_: "create",
                    description: "Create a face-to-face fallback referral (F2F-1)".into(),
                    resource: referral(inputs.context, reason, critical),
                }],
            });
        }
        // Only one suggestion is recommended: rebooking, unless the referral is.
        if suggestions.iter().filter(|s| s.is_recommended).count() > 1 {
            suggestions[0].is_recommended = false;
        }
        out.push(Card {
            uuid: new_uuid(),
            summary: summary(format!("{headline} ({})", rules_text(&rules))),
            detail,
            indicator: if critical {
                Indicator::Critical
            } else {
                Indicator::Warning
            },
            source: source(),
            suggestions,
            selection_behavior: Some("at-most-one"),
            override_reasons: override_reasons(),
            extension: rules_extension(&rules),
        });
    }
    // Prerequisites concern remote care: only when a remote appointment is proposed.
    let remote = assessed
        .iter()
        .find(|a| a.appointment.modality.is_some_and(Modality::is_remote));
    if let Some(a) = remote {
        for p in &a.recommendation.prerequisites {
            out.push(prerequisite_card(p, new_uuid()));
        }
    }
    out
}

fn prerequisite_card(p: &Prerequisite, uuid: Uuid) -> Card {
    let headline = match p.code {
        PrerequisiteCode::InitialConversation => {
            "Hold an initial conversation about telemental health before remote care"
        }
        PrerequisiteCode::PlanReview => {
            "The service user's telemental health plan is due for review"
        }
        PrerequisiteCode::BackupContact => {
            "Agree a back-up way to reconnect before remote sessions"
        }
        PrerequisiteCode::SafetyProtocol => {
            "Co-develop a safety protocol with a call-back number before remote sessions"
        }
    };
    let rules = [p.rule];
    Card {
        uuid,
        summary: summary(format!("{headline} ({})", p.rule)),
        detail: format!("{}\n\nGuideline rule: {}.", p.text, p.rule),
        indicator: Indicator::Info,
        source: source(),
        suggestions: Vec::new(),
        selection_behavior: None,
        override_reasons: Vec::new(),
        extension: rules_extension(&rules),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::{Plan, PlanInput};
    use crate::domain::protocol::SafetyProtocolInput;
    use crate::domain::rules::{recommend, RecommendationRequest};
    use crate::domain::types::SubjectRef;

    fn appointment(service_type: Value) -> Value {
        json!({"resourceType": "Appointment", "id": "apt-1", "status": "proposed",
               "serviceType": service_type,
               "participant": [{"actor": {"reference": "Patient/123"}, "status": "needs-action"}]})
    }

    fn pm(code: &str) -> Value {
        json!([{"coding": [{"system": PARTICIPATION_MODE, "code": code}]}])
    }

    fn context(appointments: Vec<Value>) -> Value {
        json!({"userId": "PractitionerRole/9", "patientId": "123",
               "appointments": {"resourceType": "Bundle", "type": "collection",
                                "entry": appointments.into_iter().map(|a| json!({"resource": a})).collect::<Vec<_>>()}})
    }

    #[test]
    fn the_modality_is_read_from_every_listed_coding() {
        let cases: Vec<(Value, Option<Modality>)> = vec![
            (appointment(pm("FACE")), Some(Modality::InPerson)),
            (appointment(pm("VIDEOCONF")), Some(Modality::Video)),
            (appointment(pm("PHONE")), Some(Modality::Telephone)),
            (appointment(pm("ONLINEWRIT")), Some(Modality::Text)),
            (appointment(pm("SMSWRIT")), Some(Modality::Text)),
            (
                json!({"resourceType": "Appointment", "appointmentType": {"coding": [{"system": PARTICIPATION_MODE, "code": "PHONE"}]}}),
                Some(Modality::Telephone),
            ),
            (
                json!({"resourceType": "Appointment", "extension": [{"url": R5_CLASS,
                    "valueCodeableConcept": {"coding": [{"system": ACT_CODE, "code": "VR"}]}}]}),
                Some(Modality::Video),
            ),
            (
                json!({"resourceType": "Appointment", "extension": [{"url": R5_CLASS,
                    "valueCoding": {"system": ACT_CODE, "code": "AMB"}}]}),
                Some(Modality::InPerson),
            ),
            (
                json!({"resourceType": "Appointment", "extension": [{"url": R5_VIRTUAL_SERVICE,
                    "extension": [{"url": "channelType", "valueCoding": {"system": "http://hl7.org/fhir/virtual-service-type", "code": "ms-teams"}},
                                  {"url": "addressUrl", "valueUrl": "https://teams.example/x"}]}]}),
                Some(Modality::Video),
            ),
            (
                appointment(json!([{"coding": [{"system": SNOMED, "code": "185317003"}]}])),
                Some(Modality::Telephone),
            ),
            (
                appointment(json!([{"coding": [{"system": "http://other", "code": "VIDEOCONF"}]}])),
                None,
            ),
            (appointment(pm("NOT-A-MODE")), None),
            (json!({"resourceType": "Appointment"}), None),
        ];
        for (a, expected) in cases {
            assert_eq!(read_modality(&a), expected, "{a}");
        }
    }

    #[test]
    fn participation_mode_wins_over_vaguer_codings() {
        let a = json!({"resourceType": "Appointment",
            "serviceType": [{"coding": [{"system": ACT_CODE, "code": "VR"}]},
                            {"coding": [{"system": PARTICIPATION_MODE, "code": "PHONE"}]}]});
        assert_eq!(read_modality(&a), Some(Modality::Telephone));
    }

    #[test]
    fn appointment_types_come_from_the_service_code_system() {
        let a = appointment(
            json!([{"coding": [{"system": code_system("appointment-type"), "code": "medication_review"}]}]),
        );
        assert_eq!(read_appointment_type(&a), AppointmentType::MedicationReview);
        assert_eq!(
            read_appointment_type(&appointment(pm("FACE"))),
            AppointmentType::Other
        );
    }

    #[test]
    fn a_context_without_what_is_needed_is_refused() {
        for bad in [
            json!(null),
            json!({"appointments": {"resourceType": "Bundle", "entry": []}}),
            json!({"patientId": "", "appointments": []}),
            json!({"patientId": "123"}),
            json!({"patientId": "123", "appointments": {"resourceType": "Bundle"}}),
            json!({"patientId": "123", "appointments": [{"resourceType": "Patient"}]}),
            json!({"patientId": "has space", "appointments": [{"resourceType": "Appointment"}]}),
        ] {
            assert!(read_context(&bad).is_err(), "{bad}");
        }
        let ok = read_context(&context(vec![appointment(pm("FACE"))])).unwrap();
        assert_eq!(ok.subject, "Patient/123");
        assert_eq!(ok.user.as_deref(), Some("PractitionerRole/9"));
        assert_eq!(ok.appointments.len(), 1);
        // A plain array is accepted too.
        let arr = json!({"patientId": "Patient/7", "appointments": [appointment(pm("PHONE"))]});
        assert_eq!(read_context(&arr).unwrap().subject, "Patient/7");
    }

    fn plan(v: Value) -> Plan {
        serde_json::from_value::<PlanInput>(v)
            .unwrap()
            .check(today())
            .unwrap()
    }

    fn video_first_plan() -> Plan {
        plan(json!({
            "subject": "Patient/123",
            "initial_conversation": {"held_on": "2026-11-20"},
            "preferences": {"default": ["video", "telephone", "in_person"]},
            "resources": {"devices": ["smartphone", "computer"], "connectivity": "reliable",
                          "digital_skills": "confident", "private_space": "yes"},
            "barriers": [{"kind": "hearing"}],
            "backup_contact": {"method": "telephone", "number": "+447700900123"},
            "last_reviewed_on": "2026-11-20"
        }))
    }

    fn protocol(risk: &str, agreed: &str) -> SafetyProtocol {
        serde_json::from_value::<SafetyProtocolInput>(json!({
            "subject": "Patient/123", "risk_level": risk, "call_back_numbers": ["+447700900123"],
            "crisis_response": {"team": "Leeds crisis team", "in_person_plan": "attends within 4 h"},
            "agreed_with_service_user_on": agreed, "review_interval_days": 30
        }))
        .unwrap()
        .check(today())
        .unwrap()
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
    }

    fn run(
        plan: Option<&Plan>,
        protocol: Option<&SafetyProtocol>,
        appointments: Vec<Value>,
    ) -> Vec<Card> {
        let ctx = read_context(&context(appointments)).unwrap();
        let recs: Vec<Recommendation> = ctx
            .appointments
            .iter()
            .map(|a| {
                recommend(
                    &RecommendationRequest {
                        subject: SubjectRef::parse(&ctx.subject).unwrap(),
                        appointment_type: a.appointment_type,
                        first_appointment: false,
                        sensitive_topics: false,
                        risk_level: None,
                    },
                    plan,
                    protocol,
                    today(),
                )
            })
            .collect();
        let assessed: Vec<Assessed> = ctx
            .appointments
            .iter()
            .zip(&recs)
            .map(|(appointment, recommendation)| Assessed {
                appointment,
                recommendation,
            })
            .collect();
        let inputs = CardInputs {
            context: &ctx,
            protocol,
            today: today(),
        };
        cards(&inputs, &assessed, Uuid::new_v4)
    }

    fn assert_card_shape(c: &Card) {
        assert!(c.summary.chars().count() < 140, "{}", c.summary);
        assert!(!c.source.label.is_empty());
        let rules = c.extension[RULES_EXTENSION].as_array().unwrap();
        assert!(!rules.is_empty());
        for r in rules {
            assert!(c.detail.contains(r.as_str().unwrap()), "{r} not in detail");
        }
        if !c.suggestions.is_empty() {
            assert_eq!(c.selection_behavior, Some("at-most-one"));
            assert!(c.suggestions.iter().filter(|s| s.is_recommended).count() <= 1);
        }
        for o in &c.override_reasons {
            assert!(o["display"].is_string());
        }
        let v = serde_json::to_value(c).unwrap();
        assert_eq!(prune(v.clone()), v, "no null or empty field");
    }

    #[test]
    fn an_appointment_that_fits_gets_no_warning() {
        let p = video_first_plan();
        let cards = run(
            Some(&p),
            Some(&protocol("low", "2026-11-20")),
            vec![appointment(pm("VIDEOCONF"))],
        );
        assert!(cards.is_empty(), "{cards:?}");
        // In person against a video-first plan is a warning, without a referral suggestion.
        let cards = run(
            Some(&p),
            Some(&protocol("low", "2026-11-20")),
            vec![appointment(pm("FACE"))],
        );
        assert_eq!(cards.len(), 1);
        assert_eq!(cards[0].indicator, Indicator::Warning);
        assert_eq!(cards[0].suggestions.len(), 1);
        assert!(cards[0].summary.contains("goes against"));
        assert_card_shape(&cards[0]);
    }

    #[test]
    fn an_unsuitable_modality_warns_and_suggests_the_recommended_one_and_a_referral() {
        let p = video_first_plan();
        // Telephone with a hearing barrier is unsuitable (FLEX-5).
        let cards = run(
            Some(&p),
            Some(&protocol("low", "2026-11-20")),
            vec![appointment(pm("PHONE"))],
        );
        assert_eq!(cards.len(), 1, "{cards:?}");
        let c = &cards[0];
        assert_card_shape(c);
        assert_eq!(c.indicator, Indicator::Warning);
        assert!(c.summary.starts_with("Telephone is not suitable"));
        assert!(c.extension[RULES_EXTENSION]
            .as_array()
            .unwrap()
            .contains(&json!("FLEX-5")));
        assert_eq!(c.suggestions.len(), 2);
        let rebook = &c.suggestions[0].actions[0];
        assert_eq!(rebook.type_, "update");
        assert_eq!(rebook.resource["id"], "apt-1");
        assert_eq!(read_modality(&rebook.resource), Some(Modality::Video));
        let referral = &c.suggestions[1].actions[0];
        assert_eq!(referral.type_, "create");
        assert_eq!(referral.resource["resourceType"], "ServiceRequest");
        assert_eq!(referral.resource["code"]["coding"][0]["code"], "3457005");
        assert_eq!(referral.resource["subject"]["reference"], "Patient/123");
        assert_eq!(
            referral.resource["requester"]["reference"],
            "PractitionerRole/9"
        );
        assert_eq!(c.override_reasons.len(), 4);
    }

    #[test]
    fn no_plan_warns_remote_bookings_and_lists_prerequisites() {
        let cards = run(None, None, vec![appointment(pm("VIDEOCONF"))]);
        let warning = &cards[0];
        assert_eq!(warning.indicator, Indicator::Warning);
        assert!(warning.detail.contains("FLEX-1"));
        let info: Vec<&Card> = cards
            .iter()
            .filter(|c| c.indicator == Indicator::Info)
            .collect();
        let rules: Vec<&str> = info
            .iter()
            .map(|c| c.extension[RULES_EXTENSION][0].as_str().unwrap())
            .collect();
        assert_eq!(rules, ["FLEX-1", "CONN-2", "SAFE-2"]);
        for c in &cards {
            assert_card_shape(c);
        }
        // An in-person booking without a plan fits (FLEX-1 recommends in person): no cards.
        assert!(run(None, None, vec![appointment(pm("FACE"))]).is_empty());
    }

    #[test]
    fn high_risk_with_a_stale_protocol_is_critical() {
        let p = video_first_plan();
        // Agreed in August with a 30-day review: past its review on 2026-11-29.
        let stale = protocol("high", "2026-08-01");
        let fresh = protocol("high", "2026-11-20");
        assert!(!protocol_usable(Some(&stale), today()));
        assert!(protocol_usable(Some(&fresh), today()));
        // Telephone is unsuitable (hearing barrier): critical at high risk with a stale protocol…
        let cards = run(Some(&p), Some(&stale), vec![appointment(pm("PHONE"))]);
        assert_eq!(cards[0].indicator, Indicator::Critical, "{cards:?}");
        assert!(cards[0]
            .detail
            .contains("High risk without a usable safety protocol"));
        assert_card_shape(&cards[0]);
        // …the referral it suggests is urgent; a warning with an up-to-date protocol.
        let referral = &cards[0].suggestions[1].actions[0].resource;
        assert_eq!(referral["priority"], "urgent");
        let cards = run(Some(&p), Some(&fresh), vec![appointment(pm("PHONE"))]);
        assert_eq!(cards[0].indicator, Indicator::Warning);
        // In person is never critical.
        let cards = run(Some(&p), Some(&stale), vec![appointment(pm("FACE"))]);
        assert!(cards.iter().all(|c| c.indicator != Indicator::Critical));
    }

    #[test]
    fn summaries_stay_under_140_characters() {
        let long = summary("x".repeat(300));
        assert_eq!(long.chars().count(), SUMMARY_MAX);
        assert!(long.ends_with('…'));
        assert_eq!(summary("short".into()), "short");
    }
}
