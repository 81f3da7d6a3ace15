//! The start-of-session safety check for a remote session (SAFE-1, SAFE-2, SAFE-3, CONN-2,
//! THER-2, F2F-1), and what to do when the connection drops.
//!
//! Pure functions of the check, the subject's safety protocol and preference plan: no I/O.

use super::plan::{BackupMethod, Plan};
use super::protocol::{SafetyProtocol, UsualLocation};
pub use super::rules::ActionCode;
use super::rules::{self, Reason, RecommendationRequest, RuleId};
use super::types::{Address, AppointmentType, Modality, Name, PhoneNumber, RiskLevel, SubjectRef};
use super::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the clinician records at the start of a remote session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionCheckInput {
    pub subject: SubjectRef,
    /// The session's modality; must be remote (`video`, `telephone` or `text`).
    #[schema(schema_with = remote_modality_schema)]
    pub modality: Modality,
    pub appointment_type: AppointmentType,
    /// Where the service user says they are now (SAFE-1); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub service_user_location: Option<ServiceUserLocation>,
    /// The number to call the service user back on, confirmed with them at the start of this
    /// session (SAFE-2); absent when not confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_back_number: Option<PhoneNumber>,
    /// Whether the clinician is in a private space (SAFE-3).
    pub clinician_in_private_space: bool,
    /// Who else is with the clinician, as disclosed to the service user (SAFE-3); at most 20
    /// entries. Empty means nobody has been disclosed.
    #[serde(default)]
    #[schema(max_items = 20, example = json!(["trainee psychologist"]))]
    pub others_present: Vec<Name>,
    /// Whether the clinician uses headphones (SAFE-3).
    #[serde(default)]
    pub headphones: bool,
    /// Whether the service user is in a private space; absent when not asked (SAFE-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_user_private: Option<bool>,
    /// Whether sensitive topics are expected in this session (SAFE-2).
    #[serde(default)]
    pub sensitive_topics: bool,
    /// Whether this is the first remote appointment with the service user (THER-2).
    #[serde(default)]
    pub first_remote_appointment: bool,
    /// The clinician's newer risk assessment, if any. The check uses the higher of this and
    /// the safety protocol's risk level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_level: Option<RiskLevel>,
}

/// Where the service user is for this session (SAFE-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceUserLocation {
    /// A short description such as `home` or `work`.
    pub description: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

impl SessionCheckInput {
    /// Checks what the types alone cannot; returns every problem found, each named by its
    /// JSON path.
    pub fn check(self) -> Result<SessionCheck, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !self.modality.is_remote() {
            errors.push(FieldError::new(
                "modality",
                "must be a remote modality (video, telephone or text); in_person sessions need no session check",
            ));
        }
        super::plan::check_max(
            &mut errors,
            "others_present",
            self.others_present.len(),
            "people",
        );
        if errors.is_empty() {
            Ok(SessionCheck(self))
        } else {
            Err(errors)
        }
    }
}

/// A session check whose content has been checked, or was when it was recorded. Reads like
/// its content.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionCheck(SessionCheckInput);

impl std::ops::Deref for SessionCheck {
    type Target = SessionCheckInput;
    fn deref(&self) -> &SessionCheckInput {
        &self.0
    }
}

impl SessionCheck {
    /// A check read back from storage, as it was written.
    pub fn recorded(content: SessionCheckInput) -> SessionCheck {
        SessionCheck(content)
    }

    pub fn content(&self) -> &SessionCheckInput {
        &self.0
    }

    pub fn into_content(self) -> SessionCheckInput {
        self.0
    }
}

fn remote_modality_schema() -> impl Into<utoipa::openapi::RefOr<utoipa::openapi::Schema>> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let remote: Vec<&str> = Modality::ALL
        .iter()
        .filter(|m| m.is_remote())
        .map(|m| m.as_str())
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(remote))
        .description(Some("A remote modality"))
}

/// One thing to do, with the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Action {
    pub code: ActionCode,
    pub rule: RuleId,
    /// A short clinician-facing sentence.
    pub text: String,
    /// Whether the session must not proceed remotely until this is resolved.
    pub blocking: bool,
}

impl Action {
    fn new(code: ActionCode, rule: RuleId, blocking: bool, text: impl Into<String>) -> Self {
        Action {
            code,
            rule,
            text: text.into(),
            blocking,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to do: the session may proceed.
    Proceed,
    /// The session may proceed once the listed actions are done.
    ProceedWithActions,
    /// The session must not proceed remotely; a face-to-face alternative is offered (F2F-1).
    DoNotProceed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Proceed => "proceed",
            Outcome::ProceedWithActions => "proceed_with_actions",
            Outcome::DoNotProceed => "do_not_proceed",
        }
    }
}

/// Where the reconnection route comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDisconnectSource {
    /// The back-up contact agreed in the preference plan (CONN-2).
    PlanBackupContact,
    /// The call-back number confirmed in this session check (SAFE-2).
    SessionCallBackNumber,
    /// The safety protocol's first call-back number (SAFE-2).
    ProtocolCallBackNumber,
}

/// How to reconnect after a disconnection (CONN-2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OnDisconnect {
    pub method: BackupMethod,
    pub number: PhoneNumber,
    pub source: OnDisconnectSource,
}

/// The result of a session check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionCheckOutcome {
    pub outcome: Outcome,
    /// Blocking actions first, then the others, in a stable order.
    pub actions: Vec<Action>,
    /// How to reconnect on disconnection: the plan's back-up contact, else the call-back number
    /// confirmed in this check, else the protocol's first call-back number. Absent when none
    /// is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disconnect: Option<OnDisconnect>,
    /// True exactly when the outcome is `do_not_proceed` (F2F-1).
    pub face_to_face_alternative_required: bool,
    /// The higher of the check's and the protocol's risk level; absent when neither is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_risk_level: Option<RiskLevel>,
}

/// What to do after a disconnection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DisconnectionAdvice {
    /// How to reconnect (CONN-2); absent when no route is on record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<OnDisconnect>,
    /// For `high` risk with sensitive topics: if the call-back fails, the safety protocol's
    /// emergency steps apply (SAFE-2).
    pub emergency_protocol_applies_if_call_back_fails: bool,
    /// Two or more disconnections in this session: offer an alternative (F2F-1).
    pub offer_alternative: bool,
    /// The alternatives to offer: `in_person` always, then `telephone` and `text` (other than
    /// the session's own modality) in the service user's order, each only when the rules
    /// leave it suitable for them (e.g. never `telephone` with a hearing or speech barrier, or
    /// discomfort with calls: FLEX-5; nothing remote without a plan: FLEX-1). Empty unless
    /// `offer_alternative`.
    pub alternatives: Vec<Modality>,
    /// The disconnections in this session so far, this one included.
    pub disconnections: u32,
    /// What to do, each with its rule.
    pub actions: Vec<Action>,
}

/// Lower-cases, trims and collapses runs of whitespace.
fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether the given location is one of the protocol's usual locations. Descriptions and
/// addresses are compared with labels and addresses after `normalise`; but when both sides
/// carry an address, the addresses must match (a `home` at another address is not usual).
fn is_usual_location(loc: &ServiceUserLocation, usual: &[UsualLocation]) -> bool {
    let given_address = loc.address.as_deref().map(normalise);
    let given: Vec<String> = std::iter::once(normalise(&loc.description))
        .chain(given_address.clone())
        .collect();
    usual.iter().any(|u| {
        let usual_address = u.address.as_deref().map(normalise);
        if let (Some(g), Some(a)) = (&given_address, &usual_address) {
            return g == a;
        }
        let label = normalise(&u.label);
        given
            .iter()
            .any(|g| *g == label || usual_address.as_ref() == Some(g))
    })
}

/// The reconnection route: plan back-up contact, else the check's call-back number, else the
/// protocol's first call-back number.
fn reconnection_route(
    input: &SessionCheckInput,
    protocol: Option<&SafetyProtocol>,
    plan: Option<&Plan>,
) -> Option<OnDisconnect> {
    if let Some(b) = plan.and_then(|p| p.backup_contact.as_ref()) {
        return Some(OnDisconnect {
            method: b.method,
            number: b.number.clone(),
            source: OnDisconnectSource::PlanBackupContact,
        });
    }
    if let Some(n) = &input.call_back_number {
        return Some(OnDisconnect {
            method: BackupMethod::Telephone,
            number: n.clone(),
            source: OnDisconnectSource::SessionCallBackNumber,
        });
    }
    protocol
        .and_then(|p| p.call_back_numbers.first())
        .map(|n| OnDisconnect {
            method: BackupMethod::Telephone,
            number: n.clone(),
            source: OnDisconnectSource::ProtocolCallBackNumber,
        })
}

/// The start-of-session check. `protocol` and `plan` are the subject's current safety protocol
/// and preference plan, when they exist; all three are checked ones (by their `check`, or
/// when they were recorded).
pub fn evaluate(
    input: &SessionCheck,
    protocol: Option<&SafetyProtocol>,
    plan: Option<&Plan>,
) -> SessionCheckOutcome {
    use ActionCode as C;
    use RuleId as R;
    let risk = input.risk_level.max(protocol.map(|p| p.risk_level));
    let high = risk == Some(RiskLevel::High);
    let above_low = risk.is_some_and(|r| r > RiskLevel::Low);
    let mut actions = Vec::new();

    // SAFE-1, SAFE-2: no remote session without a safety protocol.
    match protocol {
        None => actions.push(Action::new(
            C::AgreeSafetyProtocol,
            R::Safe2,
            true,
            "There is no safety protocol: agree one with the service user before any remote session.",
        )),
        Some(p) if high && !p.has_in_person_crisis_response() => actions.push(Action::new(
            C::AgreeSafetyProtocol,
            R::Safe1,
            true,
            "Risk is high and the safety protocol has no in-person crisis response: update the protocol first.",
        )),
        Some(_) => {}
    }

    // SAFE-1: where is the service user?
    match &input.service_user_location {
        None => actions.push(Action::new(
            C::ConfirmLocation,
            R::Safe1,
            high,
            "Ask the service user where they are now.",
        )),
        Some(loc) => {
            let usual = protocol.map_or(&[][..], |p| &p.usual_locations[..]);
            if above_low && !is_usual_location(loc, usual) {
                actions.push(Action::new(
                    C::IdentifyLocalCrisisResponse,
                    R::Safe1,
                    false,
                    "The service user is not at a usual location: identify how a fast in-person crisis response is mobilised there.",
                ));
            }
        }
    }

    // SAFE-2: a call-back number confirmed for this session.
    if input.call_back_number.is_none() {
        let blocking = input.sensitive_topics || above_low;
        actions.push(Action::new(
            C::ConfirmCallBackNumber,
            R::Safe2,
            blocking,
            "Confirm the number to call the service user back on if the connection drops.",
        ));
    }

    // SAFE-3: the clinician's privacy. Headphones do not apply to text sessions.
    if !input.clinician_in_private_space {
        let disclosed = !input.others_present.is_empty();
        let headphones = input.headphones || input.modality == Modality::Text;
        let blocking = !disclosed && !headphones;
        if !disclosed {
            actions.push(Action::new(
                C::DiscloseOthersPresent,
                R::Safe3,
                blocking,
                "You are not in a private space: tell the service user who else is present.",
            ));
        }
        if !headphones {
            actions.push(Action::new(
                C::UseHeadphones,
                R::Safe3,
                blocking,
                "You are not in a private space: use headphones so the service user is not overheard.",
            ));
        }
    }

    // SAFE-3: the service user's privacy.
    match input.service_user_private {
        Some(true) => {}
        Some(false) => actions.push(Action::new(
            C::ConfirmServiceUserPrivacy,
            R::Safe3,
            false,
            "The service user is not in a private space: agree whether to continue, switch modality or rebook.",
        )),
        None => actions.push(Action::new(
            C::ConfirmServiceUserPrivacy,
            R::Safe3,
            false,
            "Check that the service user can talk freely where they are.",
        )),
    }

    // CONN-2: a back-up way of reconnecting agreed ahead of time, that the service user can
    // use.
    match plan.and_then(|p| p.backup_contact.as_ref().map(|b| (p, b.method))) {
        None => actions.push(Action::new(
            C::AgreeBackupContact,
            R::Conn2,
            false,
            "No back-up way of reconnecting is agreed: agree one now and record it in the plan.",
        )),
        Some((plan, method)) => {
            if let Some(why) = unusable_route(plan, method) {
                actions.push(Action::new(
                    C::AgreeBackupContact,
                    R::Conn2,
                    false,
                    format!(
                        "The agreed back-up way of reconnecting ({}) is not one the service user \
                         can use ({why}): agree one they can use and record it in the plan.",
                        modality_of(method)
                    ),
                ));
            }
        }
    }

    // THER-2: more time for rapport in the first remote appointment.
    if input.first_remote_appointment {
        actions.push(Action::new(
            C::AllowRapportTime,
            R::Ther2,
            false,
            "First remote appointment: allow extra time to chat informally and build rapport.",
        ));
    }

    let outcome = if actions.iter().any(|a| a.blocking) {
        Outcome::DoNotProceed
    } else if actions.is_empty() {
        Outcome::Proceed
    } else {
        Outcome::ProceedWithActions
    };
    // Stable: blocking actions first, each group in the order above.
    actions.sort_by_key(|a| !a.blocking);
    let face_to_face = outcome == Outcome::DoNotProceed;
    if face_to_face {
        actions.push(Action::new(
            C::OfferFaceToFace,
            R::F2f1,
            false,
            "Offer a face-to-face appointment without delay.",
        ));
    }
    SessionCheckOutcome {
        outcome,
        actions,
        on_disconnect: reconnection_route(input, protocol, plan),
        face_to_face_alternative_required: face_to_face,
        effective_risk_level: risk,
    }
}

/// The modality a back-up route relies on.
fn modality_of(method: BackupMethod) -> Modality {
    match method {
        BackupMethod::Telephone => Modality::Telephone,
        BackupMethod::Text => Modality::Text,
    }
}

/// Why the service user cannot use a route by this method, by the accessibility rules alone
/// (CONN-1, EXCL-1, FLEX-5: barriers and discomfort): a call-back is a safety measure, so
/// the risk level does not close it. `None` when they can.
fn unusable_route(plan: &Plan, method: BackupMethod) -> Option<String> {
    let reasons = rules::accessibility(plan).reasons_against(modality_of(method));
    (!reasons.is_empty()).then(|| cited(&reasons))
}

/// Reasons as one clause, each after its rule: `FLEX-5: Hearing barrier: …; CONN-1: …`.
fn cited(reasons: &[Reason]) -> String {
    let parts: Vec<String> = reasons
        .iter()
        .map(|r| format!("{}: {}", r.rule, r.text.trim_end_matches('.')))
        .collect();
    parts.join("; ")
}

/// Advice after a disconnection. `protocol` and `plan` are the subject's current safety
/// protocol and preference plan: the protocol supplies a route when the check had none, and
/// its risk level counts if it has risen since; the plan and the rules decide which remote
/// alternatives may be offered, and whether the route is one the service user can use.
/// A count of 0 is treated as 1.
pub fn on_disconnection(
    check: &SessionCheck,
    outcome: &SessionCheckOutcome,
    protocol: Option<&SafetyProtocol>,
    plan: Option<&Plan>,
    disconnections_so_far_including_this_one: u32,
) -> DisconnectionAdvice {
    use ActionCode as C;
    use RuleId as R;
    let n = disconnections_so_far_including_this_one.max(1);
    let risk = outcome
        .effective_risk_level
        .max(protocol.map(|p| p.risk_level));
    let reconnect = outcome.on_disconnect.clone().or_else(|| {
        protocol
            .and_then(|p| p.call_back_numbers.first())
            .map(|n| OnDisconnect {
                method: BackupMethod::Telephone,
                number: n.clone(),
                source: OnDisconnectSource::ProtocolCallBackNumber,
            })
    });
    let mut actions = Vec::new();
    let unusable = reconnect
        .as_ref()
        .zip(plan)
        .and_then(|(r, plan)| unusable_route(plan, r.method));
    actions.push(match (&reconnect, unusable) {
        (Some(r), Some(why)) => Action::new(
            C::Reconnect,
            R::Conn2,
            false,
            format!(
                "The back-up route on record is by {}, which the service user cannot use \
                 ({why}): reconnect another way they can use, and agree a back-up they can use \
                 in the plan.",
                modality_of(r.method)
            ),
        ),
        (Some(r), None) if r.method == BackupMethod::Text => Action::new(
            C::Reconnect,
            R::Conn2,
            false,
            "Reconnect by the agreed back-up route: send a text message to the back-up number.",
        ),
        (Some(_), None) => Action::new(
            C::Reconnect,
            R::Conn2,
            false,
            "Reconnect by the agreed back-up route: call the service user on the back-up number.",
        ),
        (None, _) => Action::new(
            C::Reconnect,
            R::Conn2,
            true,
            "No way to reconnect is on record: follow the safety protocol.",
        ),
    });
    let emergency = risk == Some(RiskLevel::High) && check.sensitive_topics;
    if emergency {
        actions.push(Action::new(
            C::FollowEmergencyProtocol,
            R::Safe2,
            false,
            "If the call-back fails, follow the safety protocol's emergency steps straight away.",
        ));
    }
    let offer_alternative = n >= 2;
    let mut alternatives = Vec::new();
    if offer_alternative {
        let (alts, text) = alternatives_to_offer(check, risk, protocol, plan);
        alternatives = alts;
        actions.push(Action::new(C::OfferAlternative, R::F2f1, false, text));
    }
    DisconnectionAdvice {
        reconnect,
        emergency_protocol_applies_if_call_back_fails: emergency,
        offer_alternative,
        alternatives,
        disconnections: n,
        actions,
    }
}

/// After repeated disconnections (F2F-1): `in_person` always; `telephone` and `text`, other
/// than the session's own modality, when the rules leave them suitable for this service user
/// at this risk, in the order they ranked them for the appointment type. Returns them with
/// the clinician's sentence, which names what is not offered and why.
fn alternatives_to_offer(
    check: &SessionCheckInput,
    risk: Option<RiskLevel>,
    protocol: Option<&SafetyProtocol>,
    plan: Option<&Plan>,
) -> (Vec<Modality>, String) {
    let req = RecommendationRequest {
        subject: check.subject.clone(),
        appointment_type: check.appointment_type,
        first_appointment: false,
        sensitive_topics: check.sensitive_topics,
        risk_level: risk,
    };
    let open = rules::suitability(&req, plan, protocol);
    let ranking = plan.map_or(&[][..], |p| {
        p.preferences.ranking_for(check.appointment_type)
    });
    let mut remote = vec![Modality::Telephone, Modality::Text];
    remote.retain(|&m| m != check.modality);
    // A stable sort: ranked ones in their order, then telephone before text.
    remote.sort_by_key(|m| ranking.iter().position(|r| r == m).unwrap_or(usize::MAX));
    let (offered, closed): (Vec<Modality>, Vec<Modality>) =
        remote.into_iter().partition(|&m| open.suitable(m));

    let mut text = String::from("The connection has dropped more than once: offer a ");
    text.push_str(&match offered.as_slice() {
        [] => "face-to-face alternative".to_string(),
        [m] => format!("face-to-face or {m} alternative"),
        ms => {
            let names: Vec<String> = ms.iter().map(ToString::to_string).collect();
            format!("face-to-face, {} alternative", names.join(" or "))
        }
    });
    text.push('.');
    // What is left out and why, one sentence per distinct reason ("Not telephone or text
    // (FLEX-1: …)" without a plan).
    let mut left_out: Vec<(Vec<String>, String)> = Vec::new();
    for m in closed {
        let why = cited(&open.reasons_against(m));
        match left_out.iter_mut().find(|(_, w)| *w == why) {
            Some((ms, _)) => ms.push(m.to_string()),
            None => left_out.push((vec![m.to_string()], why)),
        }
    }
    for (ms, why) in left_out {
        text.push_str(&format!(" Not {} ({why}).", ms.join(" or ")));
    }
    let mut alternatives = vec![Modality::InPerson];
    alternatives.extend(offered);
    (alternatives, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::plan::PlanInput;
    use crate::domain::protocol::SafetyProtocolInput;
    use chrono::NaiveDate;
    use serde_json::json;
    use ActionCode as C;
    use RuleId as R;

    const CHECK_NUMBER: &str = "+447700900123";
    const PROTOCOL_NUMBER: &str = "+447700900111";
    const PLAN_NUMBER: &str = "+447700900222";

    /// A check that proceeds with nothing to do.
    fn check_json() -> serde_json::Value {
        json!({
            "subject": "Patient/123", "modality": "video", "appointment_type": "therapy",
            "service_user_location": {"description": "home", "address": "1 High St, Leeds"},
            "call_back_number": CHECK_NUMBER, "clinician_in_private_space": true,
            "others_present": [], "headphones": false,
            "service_user_private": true, "sensitive_topics": false
        })
    }

    fn protocol_json() -> serde_json::Value {
        json!({
            "subject": "Patient/123", "risk_level": "low",
            "call_back_numbers": [PROTOCOL_NUMBER, "+447700900333"],
            "usual_locations": [
                {"label": "home", "address": "1 High St, Leeds"},
                {"label": "Work"}
            ],
            "crisis_response": {"team": "Leeds crisis team", "in_person_plan": "Visit within 4 hours"},
            "agreed_with_service_user_on": "2026-11-20"
        })
    }

    fn plan_json() -> serde_json::Value {
        json!({
            "subject": "Patient/123",
            "preferences": {"default": ["video", "in_person"]},
            "resources": {"devices": ["smartphone"], "connectivity": "reliable", "digital_skills": "basic"},
            "backup_contact": {"method": "telephone", "number": PLAN_NUMBER}
        })
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
    }

    /// The inputs, edited by each case; checked when they are run.
    #[derive(Clone)]
    struct Case {
        check: SessionCheckInput,
        protocol: Option<SafetyProtocolInput>,
        plan: Option<PlanInput>,
        /// The protocol is one only a row recorded under older checks can hold (high risk
        /// without an in-person crisis response): given as recorded, not checked.
        recorded_protocol: bool,
    }

    impl Case {
        fn base() -> Self {
            Case {
                check: serde_json::from_value(check_json()).unwrap(),
                protocol: Some(serde_json::from_value(protocol_json()).unwrap()),
                plan: Some(serde_json::from_value(plan_json()).unwrap()),
                recorded_protocol: false,
            }
        }
        fn checked(&self) -> SessionCheck {
            self.check.clone().check().expect("a valid check")
        }
        fn checked_protocol(&self) -> Option<SafetyProtocol> {
            self.protocol.clone().map(|p| {
                if self.recorded_protocol {
                    SafetyProtocol::recorded(p)
                } else {
                    p.check(today()).expect("a valid protocol")
                }
            })
        }
        fn checked_plan(&self) -> Option<Plan> {
            self.plan
                .clone()
                .map(|p| p.check(today()).expect("a valid plan"))
        }
        fn run(&self) -> SessionCheckOutcome {
            evaluate(
                &self.checked(),
                self.checked_protocol().as_ref(),
                self.checked_plan().as_ref(),
            )
        }
        /// The advice on the `n`th disconnection after a check with this outcome.
        fn disconnect(&self, outcome: &SessionCheckOutcome, n: u32) -> DisconnectionAdvice {
            on_disconnection(
                &self.checked(),
                outcome,
                self.checked_protocol().as_ref(),
                self.checked_plan().as_ref(),
                n,
            )
        }
        fn risk(&mut self, r: RiskLevel) {
            self.protocol.as_mut().unwrap().risk_level = r;
        }
        fn location(&mut self, description: &str, address: Option<&str>) {
            self.check.service_user_location = Some(ServiceUserLocation {
                description: Name::parse(description).unwrap(),
                address: address.map(|a| Address::parse(a).unwrap()),
            });
        }
    }

    fn phone(s: &str) -> PhoneNumber {
        PhoneNumber::parse(s).unwrap()
    }

    fn codes(o: &SessionCheckOutcome) -> Vec<(ActionCode, RuleId, bool)> {
        o.actions
            .iter()
            .map(|a| (a.code, a.rule, a.blocking))
            .collect()
    }

    const OFFER_F2F: (ActionCode, RuleId, bool) = (C::OfferFaceToFace, R::F2f1, false);

    type Expect = (Outcome, &'static [(ActionCode, RuleId, bool)]);
    type Setup = fn(&mut Case);
    type Route = Option<(BackupMethod, &'static str, OnDisconnectSource)>;
    /// (modality, risk, sensitive, disconnections, emergency, alternatives)
    type DisconnectionCase = (Modality, RiskLevel, bool, u32, bool, &'static [Modality]);

    #[test]
    fn each_rule_branch_alone_and_combined() {
        use Outcome::*;
        let cases: &[(&str, Setup, Expect)] = &[
            ("nothing to do", |_| {}, (Proceed, &[])),
            // do_not_proceed causes, each alone.
            (
                "no safety protocol",
                |c| c.protocol = None,
                (
                    DoNotProceed,
                    &[(C::AgreeSafetyProtocol, R::Safe2, true), OFFER_F2F],
                ),
            ),
            (
                "high risk, location unknown",
                |c| {
                    c.risk(RiskLevel::High);
                    c.check.service_user_location = None;
                },
                (
                    DoNotProceed,
                    &[(C::ConfirmLocation, R::Safe1, true), OFFER_F2F],
                ),
            ),
            (
                "no call-back number, sensitive topics, low risk",
                |c| {
                    c.check.call_back_number = None;
                    c.check.sensitive_topics = true;
                },
                (
                    DoNotProceed,
                    &[(C::ConfirmCallBackNumber, R::Safe2, true), OFFER_F2F],
                ),
            ),
            (
                "no call-back number, moderate risk",
                |c| {
                    c.check.call_back_number = None;
                    c.risk(RiskLevel::Moderate);
                },
                (
                    DoNotProceed,
                    &[(C::ConfirmCallBackNumber, R::Safe2, true), OFFER_F2F],
                ),
            ),
            (
                "no call-back number, risk raised in the check",
                |c| {
                    c.check.call_back_number = None;
                    c.check.risk_level = Some(RiskLevel::Moderate);
                },
                (
                    DoNotProceed,
                    &[(C::ConfirmCallBackNumber, R::Safe2, true), OFFER_F2F],
                ),
            ),
            (
                "clinician not private, neither disclosed nor headphones",
                |c| c.check.clinician_in_private_space = false,
                (
                    DoNotProceed,
                    &[
                        (C::DiscloseOthersPresent, R::Safe3, true),
                        (C::UseHeadphones, R::Safe3, true),
                        OFFER_F2F,
                    ],
                ),
            ),
            (
                "high risk, protocol without in-person crisis response",
                |c| {
                    c.check.risk_level = Some(RiskLevel::High);
                    c.protocol.as_mut().unwrap().crisis_response = None;
                },
                (
                    DoNotProceed,
                    &[(C::AgreeSafetyProtocol, R::Safe1, true), OFFER_F2F],
                ),
            ),
            // do_not_proceed causes, combined; non-blocking actions follow the blocking ones.
            (
                "all causes together",
                |c| {
                    c.protocol = None;
                    c.check.risk_level = Some(RiskLevel::High);
                    c.check.service_user_location = None;
                    c.check.call_back_number = None;
                    c.check.clinician_in_private_space = false;
                    c.check.first_remote_appointment = true;
                },
                (
                    DoNotProceed,
                    &[
                        (C::AgreeSafetyProtocol, R::Safe2, true),
                        (C::ConfirmLocation, R::Safe1, true),
                        (C::ConfirmCallBackNumber, R::Safe2, true),
                        (C::DiscloseOthersPresent, R::Safe3, true),
                        (C::UseHeadphones, R::Safe3, true),
                        (C::AllowRapportTime, R::Ther2, false),
                        OFFER_F2F,
                    ],
                ),
            ),
            (
                "blocking call-back with non-blocking headphones",
                |c| {
                    c.check.call_back_number = None;
                    c.check.sensitive_topics = true;
                    c.check.clinician_in_private_space = false;
                    c.check.others_present = vec![Name::parse("trainee").unwrap()];
                },
                (
                    DoNotProceed,
                    &[
                        (C::ConfirmCallBackNumber, R::Safe2, true),
                        (C::UseHeadphones, R::Safe3, false),
                        OFFER_F2F,
                    ],
                ),
            ),
            // proceed_with_actions causes, each alone.
            (
                "location unknown at low risk",
                |c| c.check.service_user_location = None,
                (ProceedWithActions, &[(C::ConfirmLocation, R::Safe1, false)]),
            ),
            (
                "location unknown at moderate risk",
                |c| {
                    c.risk(RiskLevel::Moderate);
                    c.check.service_user_location = None;
                },
                (ProceedWithActions, &[(C::ConfirmLocation, R::Safe1, false)]),
            ),
            (
                "no call-back number, low risk, not sensitive",
                |c| c.check.call_back_number = None,
                (
                    ProceedWithActions,
                    &[(C::ConfirmCallBackNumber, R::Safe2, false)],
                ),
            ),
            (
                "not private, headphones but nobody disclosed",
                |c| {
                    c.check.clinician_in_private_space = false;
                    c.check.headphones = true;
                },
                (
                    ProceedWithActions,
                    &[(C::DiscloseOthersPresent, R::Safe3, false)],
                ),
            ),
            (
                "not private, disclosed but no headphones",
                |c| {
                    c.check.clinician_in_private_space = false;
                    c.check.others_present = vec![Name::parse("trainee").unwrap()];
                },
                (ProceedWithActions, &[(C::UseHeadphones, R::Safe3, false)]),
            ),
            (
                "not private, disclosed and headphones",
                |c| {
                    c.check.clinician_in_private_space = false;
                    c.check.others_present = vec![Name::parse("trainee").unwrap()];
                    c.check.headphones = true;
                },
                (Proceed, &[]),
            ),
            (
                "text session, not private, nothing disclosed: headphones do not apply",
                |c| {
                    c.check.modality = Modality::Text;
                    c.check.clinician_in_private_space = false;
                },
                (
                    ProceedWithActions,
                    &[(C::DiscloseOthersPresent, R::Safe3, false)],
                ),
            ),
            (
                "service user not private",
                |c| c.check.service_user_private = Some(false),
                (
                    ProceedWithActions,
                    &[(C::ConfirmServiceUserPrivacy, R::Safe3, false)],
                ),
            ),
            (
                "service user privacy not asked",
                |c| c.check.service_user_private = None,
                (
                    ProceedWithActions,
                    &[(C::ConfirmServiceUserPrivacy, R::Safe3, false)],
                ),
            ),
            (
                "first remote appointment",
                |c| c.check.first_remote_appointment = true,
                (
                    ProceedWithActions,
                    &[(C::AllowRapportTime, R::Ther2, false)],
                ),
            ),
            (
                "no plan",
                |c| c.plan = None,
                (
                    ProceedWithActions,
                    &[(C::AgreeBackupContact, R::Conn2, false)],
                ),
            ),
            (
                "plan without back-up contact",
                |c| c.plan.as_mut().unwrap().backup_contact = None,
                (
                    ProceedWithActions,
                    &[(C::AgreeBackupContact, R::Conn2, false)],
                ),
            ),
            (
                "unusual location at moderate risk",
                |c| {
                    c.risk(RiskLevel::Moderate);
                    c.location("friend's flat", Some("9 Low Rd, York"));
                },
                (
                    ProceedWithActions,
                    &[(C::IdentifyLocalCrisisResponse, R::Safe1, false)],
                ),
            ),
            // proceed_with_actions causes, combined.
            (
                "several actions",
                |c| {
                    c.check.first_remote_appointment = true;
                    c.check.service_user_private = None;
                    c.check.clinician_in_private_space = false;
                    c.check.headphones = true;
                },
                (
                    ProceedWithActions,
                    &[
                        (C::DiscloseOthersPresent, R::Safe3, false),
                        (C::ConfirmServiceUserPrivacy, R::Safe3, false),
                        (C::AllowRapportTime, R::Ther2, false),
                    ],
                ),
            ),
            (
                "high risk, usual location, everything in place",
                |c| c.risk(RiskLevel::High),
                (Proceed, &[]),
            ),
        ];
        for (name, setup, (outcome, expected)) in cases {
            let mut case = Case::base();
            setup(&mut case);
            let got = case.run();
            assert_eq!(got.outcome, *outcome, "{name}");
            assert_eq!(codes(&got), expected.to_vec(), "{name}");
            assert_eq!(
                got.face_to_face_alternative_required,
                *outcome == DoNotProceed,
                "{name}"
            );
            assert!(got.actions.iter().all(|a| !a.text.is_empty()), "{name}");
        }
    }

    #[test]
    fn usual_and_unusual_locations_by_risk() {
        let usual: &[(&str, Option<&str>)] = &[
            ("home", Some("1 High St, Leeds")),
            ("  HOME ", None),
            ("at my place", Some("1  high st,   LEEDS")),
            ("work", None),
            ("WORK", Some("2 Park Sq, Leeds")), // the usual `Work` has no address
            ("1 High St, Leeds", None),
        ];
        let unusual: &[(&str, Option<&str>)] = &[
            ("friend's flat", None),
            ("home", Some("5 New Rd, Hull")), // a different home
            ("homes", None),
        ];
        for risk in [RiskLevel::Low, RiskLevel::Moderate, RiskLevel::High] {
            for (is_usual, locs) in [(true, usual), (false, unusual)] {
                for (d, a) in locs {
                    let mut c = Case::base();
                    c.risk(risk);
                    c.location(d, *a);
                    let got = c.run();
                    let flagged = got
                        .actions
                        .iter()
                        .any(|x| x.code == C::IdentifyLocalCrisisResponse);
                    let want = !is_usual && risk > RiskLevel::Low;
                    assert_eq!(flagged, want, "{risk:?} {d:?} {a:?}");
                    let want_outcome = if want {
                        Outcome::ProceedWithActions
                    } else {
                        Outcome::Proceed
                    };
                    assert_eq!(got.outcome, want_outcome, "{risk:?} {d:?} {a:?}");
                }
            }
        }
        // A protocol without usual locations makes every location unusual.
        let mut c = Case::base();
        c.risk(RiskLevel::Moderate);
        c.protocol.as_mut().unwrap().usual_locations.clear();
        assert_eq!(
            codes(&c.run()),
            vec![(C::IdentifyLocalCrisisResponse, R::Safe1, false)]
        );
    }

    #[test]
    fn effective_risk_is_the_higher_of_check_and_protocol() {
        let l = Some(RiskLevel::Low);
        let m = Some(RiskLevel::Moderate);
        let h = Some(RiskLevel::High);
        for (check, protocol, want) in [
            (None, Some(RiskLevel::Low), l),
            (h, Some(RiskLevel::Moderate), h),
            (l, Some(RiskLevel::Moderate), m),
            (m, None, m),
            (None, None, None),
        ] {
            let mut c = Case::base();
            c.check.risk_level = check;
            match protocol {
                Some(r) => c.risk(r),
                None => c.protocol = None,
            }
            assert_eq!(c.run().effective_risk_level, want, "{check:?} {protocol:?}");
        }
    }

    #[test]
    fn on_disconnect_prefers_plan_then_check_then_protocol() {
        use OnDisconnectSource as S;
        let text_plan = |c: &mut Case| {
            c.plan.as_mut().unwrap().backup_contact = Some(crate::domain::plan::BackupContact {
                method: BackupMethod::Text,
                number: phone(PLAN_NUMBER),
            })
        };
        let cases: &[(&str, Setup, Route)] = &[
            (
                "plan back-up contact",
                |_| {},
                Some((BackupMethod::Telephone, PLAN_NUMBER, S::PlanBackupContact)),
            ),
            (
                "plan back-up by text",
                text_plan,
                Some((BackupMethod::Text, PLAN_NUMBER, S::PlanBackupContact)),
            ),
            (
                "no plan: the check's number",
                |c| c.plan = None,
                Some((
                    BackupMethod::Telephone,
                    CHECK_NUMBER,
                    S::SessionCallBackNumber,
                )),
            ),
            (
                "no plan, no check number: the protocol's first number",
                |c| {
                    c.plan = None;
                    c.check.call_back_number = None;
                },
                Some((
                    BackupMethod::Telephone,
                    PROTOCOL_NUMBER,
                    S::ProtocolCallBackNumber,
                )),
            ),
            (
                "nothing known",
                |c| {
                    c.plan = None;
                    c.check.call_back_number = None;
                    c.protocol = None;
                },
                None,
            ),
        ];
        for (name, setup, want) in cases {
            let mut c = Case::base();
            setup(&mut c);
            let got = c
                .run()
                .on_disconnect
                .map(|o| (o.method, o.number, o.source));
            let want = want.map(|(m, n, s)| (m, phone(n), s));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn disconnection_advice() {
        // (modality, risk, sensitive, disconnections) → (emergency, alternatives)
        let cases: &[DisconnectionCase] = &[
            (Modality::Video, RiskLevel::Low, false, 1, false, &[]),
            (Modality::Video, RiskLevel::High, true, 1, true, &[]),
            (Modality::Video, RiskLevel::High, false, 1, false, &[]),
            (Modality::Video, RiskLevel::Moderate, true, 1, false, &[]),
            (
                Modality::Video,
                RiskLevel::Low,
                false,
                2,
                false,
                &[Modality::InPerson, Modality::Telephone, Modality::Text],
            ),
            (
                Modality::Text,
                RiskLevel::High,
                true,
                3,
                true,
                &[Modality::InPerson, Modality::Telephone],
            ),
            (
                Modality::Telephone,
                RiskLevel::Low,
                false,
                2,
                false,
                &[Modality::InPerson, Modality::Text],
            ),
            (Modality::Telephone, RiskLevel::Low, false, 0, false, &[]),
        ];
        for &(modality, risk, sensitive, n, emergency, alternatives) in cases {
            let mut c = Case::base();
            c.check.modality = modality;
            c.check.sensitive_topics = sensitive;
            c.risk(risk);
            let outcome = c.run();
            let advice = c.disconnect(&outcome, n);
            let label = format!("{modality:?} {risk:?} sensitive={sensitive} n={n}");
            assert_eq!(
                advice.emergency_protocol_applies_if_call_back_fails, emergency,
                "{label}"
            );
            assert_eq!(advice.alternatives, alternatives.to_vec(), "{label}");
            assert_eq!(advice.offer_alternative, n >= 2, "{label}");
            assert_eq!(advice.disconnections, n.max(1), "{label}");
            assert_eq!(advice.reconnect, outcome.on_disconnect, "{label}");
            let mut want = vec![(C::Reconnect, R::Conn2)];
            if emergency {
                want.push((C::FollowEmergencyProtocol, R::Safe2));
            }
            if n >= 2 {
                want.push((C::OfferAlternative, R::F2f1));
            }
            let got: Vec<_> = advice.actions.iter().map(|a| (a.code, a.rule)).collect();
            assert_eq!(got, want, "{label}");
        }
    }

    /// The alternatives after a second disconnection, and what the clinician reads about
    /// those left out.
    #[test]
    fn disconnection_alternatives_are_only_what_the_rules_leave_suitable() {
        use Modality::{InPerson as IP, Telephone as T, Text as TX, Video as V};
        fn barrier(c: &mut Case, kind: &str) {
            c.plan.as_mut().unwrap().barriers =
                serde_json::from_value(json!([{ "kind": kind }])).unwrap();
        }
        fn uncomfortable(c: &mut Case, ms: &[Modality]) {
            c.plan.as_mut().unwrap().preferences.uncomfortable_with = ms.to_vec();
        }
        // (name, setup, session modality, alternatives, what the action text must say)
        type AltCase = (
            &'static str,
            Setup,
            Modality,
            &'static [Modality],
            &'static [&'static str],
        );
        let cases: &[AltCase] = &[
            (
                "nothing in the way",
                |_| {},
                V,
                &[IP, T, TX],
                &["face-to-face, telephone or text"],
            ),
            (
                "the session's own modality is not an alternative",
                |_| {},
                TX,
                &[IP, T],
                &[],
            ),
            (
                "hearing barrier: no call",
                |c| barrier(c, "hearing"),
                V,
                &[IP, TX],
                &[
                    "face-to-face or text",
                    "Not telephone (FLEX-5: Hearing barrier",
                ],
            ),
            (
                "speech barrier: no call",
                |c| barrier(c, "speech"),
                V,
                &[IP, TX],
                &["Not telephone (FLEX-5: Speech barrier"],
            ),
            (
                "uncomfortable with calls",
                |c| uncomfortable(c, &[T]),
                V,
                &[IP, TX],
                &["Not telephone (FLEX-5: The service user is uncomfortable"],
            ),
            (
                "hearing barrier in a text session: only face-to-face",
                |c| barrier(c, "hearing"),
                TX,
                &[IP],
                &["offer a face-to-face alternative.", "Not telephone (FLEX-5"],
            ),
            (
                "hearing barrier and uncomfortable with text",
                |c| {
                    barrier(c, "hearing");
                    uncomfortable(c, &[TX]);
                },
                V,
                &[IP],
                &["Not telephone (FLEX-5", "Not text (FLEX-5"],
            ),
            (
                "a landline only: no text",
                |c| {
                    c.plan.as_mut().unwrap().resources.devices =
                        vec![crate::domain::plan::Device::Landline];
                },
                V,
                &[IP, T],
                &["Not text (CONN-1"],
            ),
            (
                "the service user's order: text before telephone",
                |c| c.plan.as_mut().unwrap().preferences.default = vec![TX, IP, T],
                V,
                &[IP, TX, T],
                &["face-to-face, text or telephone"],
            ),
            (
                "no plan: nothing remote is known to suit them",
                |c| c.plan = None,
                V,
                &[IP],
                &["Not telephone or text (FLEX-1: No telemental health plan"],
            ),
            (
                "high risk without an in-person crisis response: nothing remote",
                |c| {
                    c.risk(RiskLevel::High);
                    c.protocol.as_mut().unwrap().crisis_response = None;
                    c.recorded_protocol = true;
                },
                V,
                &[IP],
                &["Not telephone or text (SAFE-1: High risk"],
            ),
        ];
        for (name, setup, modality, want, says) in cases {
            let mut c = Case::base();
            c.check.modality = *modality;
            setup(&mut c);
            let outcome = c.run();
            let advice = c.disconnect(&outcome, 2);
            assert_eq!(advice.alternatives, want.to_vec(), "{name}");
            let offer = advice
                .actions
                .iter()
                .find(|a| a.code == C::OfferAlternative)
                .expect("an offer");
            for s in *says {
                assert!(
                    offer.text.contains(s),
                    "{name}: {:?} lacks {s:?}",
                    offer.text
                );
            }
            // The first disconnection offers nothing, whatever the plan.
            let first = c.disconnect(&outcome, 1);
            assert!(first.alternatives.is_empty(), "{name}");
        }
    }

    /// CONN-2: a back-up route the service user cannot use (a call with a hearing barrier) is
    /// flagged at the start of the session and on disconnection; the route on record is kept.
    #[test]
    fn a_back_up_route_the_service_user_cannot_use_is_flagged() {
        let mut c = Case::base();
        c.plan.as_mut().unwrap().barriers =
            serde_json::from_value(json!([{"kind": "hearing"}])).unwrap();
        let outcome = c.run();
        assert_eq!(outcome.outcome, Outcome::ProceedWithActions);
        assert_eq!(
            codes(&outcome),
            vec![(C::AgreeBackupContact, R::Conn2, false)]
        );
        assert!(
            outcome.actions[0].text.contains("(telephone)")
                && outcome.actions[0].text.contains("FLEX-5: Hearing barrier"),
            "{}",
            outcome.actions[0].text
        );
        let route = outcome.on_disconnect.clone().expect("a route");
        assert_eq!(
            (route.method, route.source),
            (
                BackupMethod::Telephone,
                OnDisconnectSource::PlanBackupContact
            )
        );
        let advice = c.disconnect(&outcome, 1);
        assert_eq!(advice.reconnect, Some(route));
        let reconnect = &advice.actions[0];
        assert_eq!((reconnect.code, reconnect.blocking), (C::Reconnect, false));
        assert!(
            reconnect.text.contains("cannot use") && reconnect.text.contains("FLEX-5"),
            "{}",
            reconnect.text
        );

        // A call-back number from the check, for a plan without a back-up contact: the
        // existing `agree_backup_contact` covers the check; the disconnection flags the call.
        c.plan.as_mut().unwrap().backup_contact = None;
        let outcome = c.run();
        assert_eq!(
            codes(&outcome),
            vec![(C::AgreeBackupContact, R::Conn2, false)]
        );
        let advice = c.disconnect(&outcome, 1);
        assert!(advice.actions[0].text.contains("cannot use"));

        // A text back-up for someone uncomfortable with text is flagged too.
        let mut c = Case::base();
        let plan = c.plan.as_mut().unwrap();
        plan.backup_contact.as_mut().unwrap().method = BackupMethod::Text;
        plan.preferences.uncomfortable_with = vec![Modality::Text];
        let outcome = c.run();
        assert!(
            outcome.actions[0].text.contains("(text)"),
            "{:?}",
            outcome.actions
        );

        // Safety does not close a call-back: high risk without an in-person crisis response
        // rules remote care out, not the route back to the service user.
        let mut c = Case::base();
        c.risk(RiskLevel::High);
        c.protocol.as_mut().unwrap().crisis_response = None;
        c.recorded_protocol = true;
        let outcome = c.run();
        assert!(!outcome
            .actions
            .iter()
            .any(|a| a.code == C::AgreeBackupContact));
        let advice = c.disconnect(&outcome, 1);
        assert!(advice.actions[0]
            .text
            .contains("call the service user on the back-up number"));
    }

    #[test]
    fn disconnection_uses_the_current_protocol_when_the_check_had_no_route() {
        let mut c = Case::base();
        c.plan = None;
        c.check.call_back_number = None;
        let protocol = c.protocol.take();
        let outcome = c.run();
        assert_eq!(outcome.on_disconnect, None);
        // No route at all: reconnecting is flagged as blocking.
        let advice = c.disconnect(&outcome, 1);
        assert_eq!(advice.reconnect, None);
        assert!(advice.actions[0].blocking);
        // The protocol now on record supplies the number, and its high risk counts.
        c.protocol = protocol;
        c.risk(RiskLevel::High);
        c.check.sensitive_topics = true;
        let advice = c.disconnect(&outcome, 1);
        assert_eq!(
            advice.reconnect.map(|r| (r.number, r.source)),
            Some((
                phone(PROTOCOL_NUMBER),
                OnDisconnectSource::ProtocolCallBackNumber
            ))
        );
        assert!(advice.emergency_protocol_applies_if_call_back_fails);
    }

    #[test]
    fn validation_names_each_field() {
        assert!(Case::base().check.check().is_ok());
        let mut v = check_json();
        v["modality"] = json!("in_person");
        let check: SessionCheckInput = serde_json::from_value(v).unwrap();
        let errs = check.check().unwrap_err();
        assert_eq!(errs[0].field, "modality");
        let mut v = check_json();
        v["others_present"] = json!(vec!["someone"; crate::domain::types::MAX_LIST + 1]);
        let check: SessionCheckInput = serde_json::from_value(v).unwrap();
        let errs = check.check().unwrap_err();
        assert_eq!(errs[0].field, "others_present");
        // Blank, multi-line or over-long text does not even parse.
        for (field, bad) in [
            ("service_user_location", json!({"description": "  "})),
            (
                "service_user_location",
                json!({"description": "home", "address": ""}),
            ),
            ("others_present", json!(["trainee", " "])),
            ("others_present", json!(["x".repeat(201)])),
        ] {
            let mut v = check_json();
            v[field] = bad;
            assert!(serde_json::from_value::<SessionCheckInput>(v).is_err());
        }
    }

    #[test]
    fn wire_forms() {
        // The example parses; unknown fields are refused; defaults apply.
        let example = json!({"subject": "Patient/123", "modality": "video", "appointment_type": "therapy",
            "service_user_location": {"description": "home", "address": "1 High St, Leeds"},
            "call_back_number": "+447700900123", "clinician_in_private_space": false,
            "others_present": ["trainee psychologist"], "headphones": true,
            "service_user_private": true, "sensitive_topics": true});
        let check: SessionCheckInput = serde_json::from_value(example.clone()).unwrap();
        assert!(!check.first_remote_appointment && check.risk_level.is_none());
        let mut bad = example;
        bad["colour"] = json!("blue");
        assert!(serde_json::from_value::<SessionCheckInput>(bad).is_err());

        let mut c = Case::base();
        c.check = check;
        c.check.risk_level = Some(RiskLevel::High);
        c.check.service_user_location = None;
        let out = serde_json::to_value(c.run()).unwrap();
        assert_eq!(out["outcome"], "do_not_proceed");
        assert_eq!(out["effective_risk_level"], "high");
        assert_eq!(out["face_to_face_alternative_required"], true);
        assert_eq!(out["actions"][0]["code"], "confirm_location");
        assert_eq!(out["actions"][0]["rule"], "SAFE-1");
        assert_eq!(out["actions"][1]["code"], "offer_face_to_face");
        assert_eq!(out["actions"][1]["rule"], "F2F-1");
        assert_eq!(
            out["on_disconnect"],
            json!({"method": "telephone", "number": PLAN_NUMBER, "source": "plan_backup_contact"})
        );
        for (rule, id) in [
            (R::Safe1, "SAFE-1"),
            (R::Safe2, "SAFE-2"),
            (R::Safe3, "SAFE-3"),
            (R::Conn2, "CONN-2"),
            (R::Ther2, "THER-2"),
            (R::F2f1, "F2F-1"),
        ] {
            assert_eq!(serde_json::to_value(rule).unwrap(), id);
        }
    }
}
