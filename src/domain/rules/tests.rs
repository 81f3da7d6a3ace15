//! The rules, case by case: the worked examples, then one table row per rule and per
//! combination named in the catalog. Every row also checks the invariants of any answer.

use super::*;
use crate::domain::plan::{ExclusionFactor, ExclusionLevel, Plan, PlanInput};
use crate::domain::protocol::{SafetyProtocol, SafetyProtocolInput};
use crate::domain::types::{Modality, RiskLevel};
use chrono::NaiveDate;
use serde_json::{json, Value};

use ActionCode as A;
use Modality::{InPerson as IP, Telephone as T, Text as TX, Video as V};
use PrerequisiteCode as P;
use ReferralReason as FR;
use RuleId as R;

pub(super) fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 28).expect("a date")
}

/// Worked example 1: a confident video user, low risk, everything agreed.
fn plan_json() -> Value {
    json!({
        "subject": "Patient/123",
        "initial_conversation": {"held_on": "2026-10-20", "held_by": "Practitioner/9"},
        "preferences": {"default": ["video", "telephone", "in_person"]},
        "resources": {
            "devices": ["smartphone", "computer"],
            "connectivity": "reliable",
            "digital_skills": "confident",
            "familiar_platforms": ["Zoom"],
            "private_space": "yes"
        },
        "backup_contact": {"method": "telephone", "number": "+447700900123"},
        "review_interval_days": 90,
        "last_reviewed_on": "2026-10-28"
    })
}

fn protocol_json() -> Value {
    json!({
        "subject": "Patient/123",
        "risk_level": "low",
        "call_back_numbers": ["+447700900123"],
        "agreed_with_service_user_on": "2026-10-28"
    })
}

fn request_json() -> Value {
    json!({"subject": "Patient/123", "appointment_type": "therapy"})
}

struct Inputs {
    plan: Option<Value>,
    protocol: Option<Value>,
    /// The protocol holds what only a row recorded under older checks can: it is given to the
    /// engine as recorded, not checked.
    recorded_protocol: bool,
    request: Value,
}

impl Inputs {
    fn example_1() -> Self {
        Inputs {
            plan: Some(plan_json()),
            protocol: Some(protocol_json()),
            recorded_protocol: false,
            request: request_json(),
        }
    }

    /// Sets a field of the plan by its JSON pointer, e.g. `/resources/connectivity`.
    fn plan(&mut self, pointer: &str, value: Value) {
        set(self.plan.as_mut().expect("a plan"), pointer, value);
    }

    fn protocol(&mut self, pointer: &str, value: Value) {
        set(self.protocol.as_mut().expect("a protocol"), pointer, value);
    }

    /// Sets a field of the protocol to what today's checks refuse but an older stored row can
    /// hold (no call-back number).
    fn recorded_protocol(&mut self, pointer: &str, value: Value) {
        self.protocol(pointer, value);
        self.recorded_protocol = true;
    }

    fn run(&self) -> Recommendation {
        let plan: Option<Plan> = self.plan.clone().map(|v| {
            serde_json::from_value::<PlanInput>(v)
                .expect("a plan")
                .check(today())
                .expect("a valid plan")
        });
        let protocol: Option<SafetyProtocol> = self.protocol.clone().map(|v| {
            let content = serde_json::from_value::<SafetyProtocolInput>(v).expect("a protocol");
            if self.recorded_protocol {
                SafetyProtocol::recorded(content)
            } else {
                content.check(today()).expect("a valid protocol")
            }
        });
        let req: RecommendationRequest =
            serde_json::from_value(self.request.clone()).expect("a request");
        let rec = recommend(&req, plan.as_ref(), protocol.as_ref(), today());
        check_invariants(&rec, plan.as_deref());
        rec
    }
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    let parent = if parent.is_empty() {
        doc
    } else {
        doc.pointer_mut(parent).expect("an existing parent")
    };
    match value {
        Value::Null => {
            parent.as_object_mut().expect("an object").remove(key);
        }
        v => parent[key] = v,
    }
}

/// What holds of every recommendation, whatever the inputs.
pub(super) fn check_invariants(rec: &Recommendation, plan: Option<&PlanInput>) {
    let mut modalities: Vec<Modality> = rec.options.iter().map(|o| o.modality).collect();
    modalities.sort();
    assert_eq!(
        modalities,
        Modality::ALL.to_vec(),
        "one option per modality"
    );
    for o in &rec.options {
        assert_eq!(
            o.offered, o.suitable,
            "{}: offered iff suitable",
            o.modality
        );
        assert!(!o.reasons.is_empty(), "{} has no reason", o.modality);
        assert!(
            o.rank.is_none() || o.offered,
            "{} ranked but not offered",
            o.modality
        );
    }
    let in_person = option(rec, IP);
    assert!(in_person.suitable && in_person.offered, "F2F-1");
    assert!(option(rec, rec.recommended_modality).offered);
    // Ranked options first, 1..n; then offered ones; then the rest.
    let ranks: Vec<Option<u32>> = rec.options.iter().map(|o| o.rank).collect();
    let n = ranks.iter().filter(|r| r.is_some()).count();
    for (i, r) in ranks.iter().enumerate() {
        if i < n {
            assert_eq!(*r, u32::try_from(i + 1).ok());
        } else {
            assert_eq!(*r, None);
        }
    }
    let offered: Vec<bool> = rec.options.iter().map(|o| o.offered).collect();
    assert!(offered.windows(2).all(|w| w[0] || !w[1]), "offered first");
    let f = &rec.fallback_referral;
    assert_eq!(f.suggested, f.reason.is_some());
    if f.suggested {
        assert_eq!(rec.recommended_modality, IP);
    }
    match plan {
        Some(p) if option(rec, V).suitable => {
            assert!(rec.suggested_platforms.iter().map(String::as_str).eq(p
                .resources
                .familiar_platforms
                .iter()
                .map(|l| l.as_str())))
        }
        _ => assert!(rec.suggested_platforms.is_empty()),
    }
    assert_eq!(
        rec.digital_exclusion,
        plan.map(PlanInput::digital_exclusion)
    );
    let remote_offered = rec.options.iter().any(|o| o.offered && o.modality != IP);
    assert_eq!(!rec.session_actions.is_empty(), remote_offered);
    for p in &rec.prerequisites {
        assert_eq!(p.rule, p.code.rule());
    }
    for a in &rec.session_actions {
        assert_eq!(a.rule, a.code.rule());
    }
}

fn option(rec: &Recommendation, m: Modality) -> &ModalityOption {
    rec.options
        .iter()
        .find(|o| o.modality == m)
        .expect("every modality has an option")
}

fn rules_of(rec: &Recommendation, m: Modality) -> Vec<RuleId> {
    option(rec, m).reasons.iter().map(|r| r.rule).collect()
}

fn order(rec: &Recommendation) -> Vec<Modality> {
    rec.options.iter().map(|o| o.modality).collect()
}

fn ranked(rec: &Recommendation) -> Vec<Modality> {
    rec.options
        .iter()
        .filter(|o| o.rank.is_some())
        .map(|o| o.modality)
        .collect()
}

fn unsuitable(rec: &Recommendation) -> Vec<Modality> {
    rec.options
        .iter()
        .filter(|o| !o.suitable)
        .map(|o| o.modality)
        .collect()
}

fn prerequisite_codes(rec: &Recommendation) -> Vec<PrerequisiteCode> {
    rec.prerequisites.iter().map(|p| p.code).collect()
}

fn action_codes(rec: &Recommendation) -> Vec<ActionCode> {
    rec.session_actions.iter().map(|a| a.code).collect()
}

// ---------------------------------------------------------------------------------------------
// The worked examples, exactly.

#[test]
fn worked_example_1_confident_video_user_low_risk() {
    let rec = Inputs::example_1().run();
    assert_eq!(rec.recommended_modality, V);
    assert_eq!(order(&rec), vec![V, T, IP, TX]);
    let video = option(&rec, V);
    assert!(video.suitable && video.rank == Some(1));
    assert_eq!(rules_of(&rec, V), vec![R::Flex2, R::Conn1]);
    assert!(video.reasons[0].text.contains("1st choice"));
    let telephone = option(&rec, T);
    assert!(telephone.suitable && telephone.rank == Some(2));
    let text = option(&rec, TX);
    assert!(text.suitable && text.offered && text.rank.is_none());
    let in_person = option(&rec, IP);
    assert!(in_person.suitable && in_person.offered);
    assert!(rules_of(&rec, IP).contains(&R::F2f1));
    assert_eq!(rec.suggested_platforms, vec!["Zoom".to_string()]);
    assert!(rec.prerequisites.is_empty());
    assert_eq!(
        action_codes(&rec),
        vec![A::ConfirmLocation, A::ConfirmCallBackNumber]
    );
    assert_eq!(rules_of_actions(&rec), vec![R::Safe1, R::Safe2]);
    assert_eq!(
        rec.fallback_referral,
        FallbackSuggestion {
            suggested: false,
            reason: None
        }
    );
    assert_eq!(rec.effective_risk_level, Some(RiskLevel::Low));
    let excl = rec.digital_exclusion.as_ref().expect("a plan");
    assert_eq!(excl.level, ExclusionLevel::None);
}

fn rules_of_actions(rec: &Recommendation) -> Vec<RuleId> {
    rec.session_actions.iter().map(|a| a.rule).collect()
}

#[test]
fn worked_example_2_vision_barrier_re_ranks_video_below_telephone() {
    let mut i = Inputs::example_1();
    i.plan("/barriers", json!([{"kind": "vision"}]));
    i.plan("/preferences/default", json!(["video", "telephone"]));
    let rec = i.run();
    assert_eq!(rec.recommended_modality, T);
    assert_eq!(ranked(&rec), vec![T, V]);
    let video = option(&rec, V);
    assert!(video.suitable && video.offered && video.rank == Some(2));
    assert!(rules_of(&rec, V).contains(&R::Flex5));
    assert!(!rec.fallback_referral.suggested);
}

#[test]
fn worked_example_3_moderate_risk_without_a_safety_protocol() {
    let mut i = Inputs::example_1();
    i.protocol = None;
    i.request["risk_level"] = json!("moderate");
    let rec = i.run();
    assert_eq!(unsuitable(&rec), vec![V, T, TX]);
    for m in [V, T, TX] {
        assert!(rules_of(&rec, m).contains(&R::Safe2), "{m}");
    }
    assert_eq!(rec.recommended_modality, IP);
    assert_eq!(prerequisite_codes(&rec), vec![P::SafetyProtocol]);
    assert_eq!(rec.prerequisites[0].rule, R::Safe2);
    assert_eq!(
        rec.fallback_referral,
        FallbackSuggestion {
            suggested: true,
            reason: Some(FR::NotAppropriate)
        }
    );
    assert!(rules_of(&rec, IP).contains(&R::F2f1));
    assert_eq!(rec.effective_risk_level, Some(RiskLevel::Moderate));
}

#[test]
fn worked_example_4_a_tablet_but_no_skills() {
    let mut i = Inputs::example_1();
    i.plan("/resources/devices", json!(["tablet"]));
    i.plan("/resources/digital_skills", json!("none"));
    i.plan("/preferences/default", json!(["video", "text"]));
    let rec = i.run();
    assert_eq!(unsuitable(&rec), vec![V, T, TX]);
    let conn_1 = |m| {
        option(&rec, m)
            .reasons
            .iter()
            .find(|r| r.rule == R::Conn1)
            .map(|r| r.text.clone())
            .unwrap_or_default()
    };
    assert!(conn_1(V).contains("no digital skills"), "{}", conn_1(V));
    assert!(conn_1(TX).contains("no digital skills"), "{}", conn_1(TX));
    assert!(conn_1(T).contains("no smartphone, mobile or landline"));
    let excl = rec.digital_exclusion.as_ref().expect("a plan");
    assert_eq!(excl.level, ExclusionLevel::Excluded);
    assert_eq!(excl.factors, vec![ExclusionFactor::NoDigitalSkills]);
    assert!(rules_of(&rec, V).contains(&R::Excl1));
    assert_eq!(rec.recommended_modality, IP);
    assert_eq!(rec.fallback_referral.reason, Some(FR::NotAccessible));
}

#[test]
fn worked_example_5_deaf_ranked_the_telephone_first() {
    let mut i = Inputs::example_1();
    i.plan("/barriers", json!([{"kind": "hearing"}]));
    i.plan(
        "/preferences/default",
        json!(["telephone", "text", "in_person"]),
    );
    let rec = i.run();
    let telephone = option(&rec, T);
    assert!(!telephone.suitable && !telephone.offered && telephone.rank.is_none());
    let flex_5 = telephone
        .reasons
        .iter()
        .find(|r| r.rule == R::Flex5)
        .expect("FLEX-5 rules the call out");
    assert!(
        flex_5
            .text
            .contains("video with captions, text or in person instead"),
        "{}",
        flex_5.text
    );
    let text = option(&rec, TX);
    assert!(text.suitable && text.offered && text.rank == Some(1));
    assert!(text.reasons[0].text.contains("2nd choice"));
    assert!(rules_of(&rec, TX).contains(&R::Conn1));
    let in_person = option(&rec, IP);
    assert!(in_person.suitable && in_person.offered && in_person.rank == Some(2));
    assert!(in_person.reasons[0].text.contains("3rd choice"));
    assert!(rules_of(&rec, IP).contains(&R::F2f1));
    assert_eq!(rec.recommended_modality, TX);
    assert_eq!(order(&rec), vec![TX, IP, V, T]);
    assert_eq!(
        rec.fallback_referral,
        FallbackSuggestion {
            suggested: false,
            reason: None
        }
    );
}

/// What a clinician reads on each option when the recommendation moved down the ranking, and
/// when it came to in person.
#[test]
fn the_reasons_say_where_the_recommendation_went_and_why() {
    let text_of = |rec: &Recommendation, m: Modality, rule: RuleId| -> Vec<String> {
        option(rec, m)
            .reasons
            .iter()
            .filter(|r| r.rule == rule)
            .map(|r| r.text.clone())
            .collect()
    };
    // Example 5: text says it is recommended because telephone was ruled out; in person
    // says nothing of a fallback.
    let mut i = Inputs::example_1();
    i.plan("/barriers", json!([{"kind": "hearing"}]));
    i.plan(
        "/preferences/default",
        json!(["telephone", "text", "in_person"]),
    );
    let rec = i.run();
    let moved = text_of(&rec, TX, R::Flex2);
    assert!(
        moved
            .iter()
            .any(|t| t.contains("first choice (telephone) is ruled out")),
        "{moved:?}"
    );
    assert!(text_of(&rec, IP, R::F2f1)
        .iter()
        .all(|t| !t.contains("fallback")));

    // Nothing remote ranked above in person is left: in person says so, why, and which
    // remote options the service user did not rank remain to be asked about.
    i.plan("/preferences/default", json!(["telephone", "in_person"]));
    let rec = i.run();
    let why = text_of(&rec, IP, R::F2f1).join(" ");
    assert!(
        why.contains("Nothing remote that the service user ranked above in person")
            && why.contains("not accessible")
            && why.contains("fallback referral is suggested")
            && why.contains("video and text, which they did not rank, remain suitable"),
        "{why}"
    );

    // They ranked in person first.
    i.plan("/barriers", json!([]));
    i.plan("/preferences/default", json!(["in_person", "video"]));
    let why = text_of(&i.run(), IP, R::F2f1).join(" ");
    assert!(
        why.contains("ranks in person first") && why.contains("not preferred"),
        "{why}"
    );

    // A re-ranking, not a failure of remote care: in person names the remote option left.
    i.plan("/resources/private_space", json!("no"));
    i.plan("/preferences/default", json!(["video", "in_person"]));
    let rec = i.run();
    assert_eq!(rec.recommended_modality, IP);
    let why = text_of(&rec, IP, R::Flex2).join(" ");
    assert!(
        why.contains("video, which they ranked above in person, remains suitable"),
        "{why}"
    );
}

// ---------------------------------------------------------------------------------------------
// One row per rule and combination.

struct Case {
    name: &'static str,
    setup: fn(&mut Inputs),
    recommended: Modality,
    fallback: Option<ReferralReason>,
    /// Exactly the unsuitable modalities, each with a rule its reasons name (a modality may
    /// appear more than once).
    unsuitable: &'static [(Modality, RuleId)],
    /// The offered modalities the service user ranked, by rank.
    ranked: &'static [Modality],
    /// All four options in response order, when the case is about order.
    order: Option<&'static [Modality]>,
    /// Rules that some option's reasons must name, suitable or not.
    mentions: &'static [(Modality, RuleId)],
    prerequisites: &'static [PrerequisiteCode],
    actions: &'static [ActionCode],
    risk: Option<RiskLevel>,
}

const BASE: Case = Case {
    name: "example 1",
    setup: |_| {},
    recommended: V,
    fallback: None,
    unsuitable: &[],
    ranked: &[V, T, IP],
    order: Some(&[V, T, IP, TX]),
    mentions: &[(V, R::Flex2), (V, R::Conn1), (IP, R::F2f1)],
    prerequisites: &[],
    actions: &[A::ConfirmLocation, A::ConfirmCallBackNumber],
    risk: Some(RiskLevel::Low),
};

const NO_REMOTE: &[ActionCode] = &[];

const CASES: &[Case] = &[
    BASE,
    // FLEX-1
    Case {
        name: "FLEX-1: no plan recommends in person after an initial conversation",
        setup: |i| i.plan = None,
        recommended: IP,
        unsuitable: &[(V, R::Flex1), (T, R::Flex1), (TX, R::Flex1)],
        ranked: &[],
        order: Some(&[IP, V, T, TX]),
        mentions: &[(IP, R::Flex1)],
        prerequisites: &[P::InitialConversation, P::BackupContact],
        actions: NO_REMOTE,
        ..BASE
    },
    Case {
        name: "FLEX-1: no plan and moderate risk without a protocol falls back as not appropriate",
        setup: |i| {
            i.plan = None;
            i.protocol = None;
            i.request["risk_level"] = json!("moderate");
        },
        recommended: IP,
        fallback: Some(FR::NotAppropriate),
        unsuitable: &[(V, R::Flex1), (V, R::Safe2), (T, R::Safe2), (TX, R::Safe2)],
        ranked: &[],
        order: None,
        mentions: &[(IP, R::F2f1)],
        prerequisites: &[P::InitialConversation, P::BackupContact, P::SafetyProtocol],
        actions: NO_REMOTE,
        risk: Some(RiskLevel::Moderate),
    },
    Case {
        name: "FLEX-1: a plan without an initial conversation recommends in person",
        setup: |i| i.plan("/initial_conversation", Value::Null),
        recommended: IP,
        mentions: &[(IP, R::Flex1)],
        prerequisites: &[P::InitialConversation],
        ..BASE
    },
    Case {
        name: "FLEX-1/F2F-1: without an initial conversation, and nothing remote ranked above \
               in person left, the fallback referral goes with in person",
        setup: |i| {
            i.plan("/initial_conversation", Value::Null);
            i.plan("/barriers", json!([{"kind": "hearing"}]));
            i.plan("/preferences/default", json!(["telephone", "in_person"]));
        },
        recommended: IP,
        fallback: Some(FR::NotAccessible),
        unsuitable: &[(T, R::Flex5)],
        ranked: &[IP],
        order: None,
        mentions: &[(IP, R::Flex1), (IP, R::F2f1)],
        prerequisites: &[P::InitialConversation],
        ..BASE
    },
    // FLEX-2
    Case {
        name: "FLEX-2: the appointment type's own ranking applies",
        setup: |i| {
            i.plan(
                "/preferences/by_appointment_type",
                json!({"medication_review": ["telephone", "in_person"]}),
            );
            i.request["appointment_type"] = json!("medication_review");
        },
        recommended: T,
        ranked: &[T, IP],
        order: Some(&[T, IP, V, TX]),
        ..BASE
    },
    Case {
        name: "FLEX-2: other appointment types use the default ranking",
        setup: |i| {
            i.plan(
                "/preferences/by_appointment_type",
                json!({"medication_review": ["telephone", "in_person"]}),
            );
        },
        ..BASE
    },
    Case {
        name: "FLEX-2: a ruled-out first choice moves down to their second choice, not in person",
        setup: |i| {
            i.plan(
                "/preferences/default",
                json!(["telephone", "video", "in_person"]),
            );
            i.plan("/barriers", json!([{"kind": "hearing"}]));
        },
        recommended: V,
        unsuitable: &[(T, R::Flex5)],
        ranked: &[V, IP],
        order: Some(&[V, IP, TX, T]),
        mentions: &[(V, R::Flex5), (V, R::Flex2), (IP, R::F2f1)],
        ..BASE
    },
    Case {
        name: "FLEX-2: a ranking without in person moves down to their next remote choice",
        setup: |i| {
            i.plan("/preferences/default", json!(["telephone", "text"]));
            i.plan("/barriers", json!([{"kind": "hearing"}]));
        },
        recommended: TX,
        unsuitable: &[(T, R::Flex5)],
        ranked: &[TX],
        order: Some(&[TX, IP, V, T]),
        mentions: &[(TX, R::Flex2)],
        ..BASE
    },
    Case {
        name: "F2F-1: nothing they ranked remains: in person, although an unranked remote \
               option is suitable",
        setup: |i| {
            i.plan("/preferences/default", json!(["telephone"]));
            i.plan("/barriers", json!([{"kind": "hearing"}]));
        },
        recommended: IP,
        fallback: Some(FR::NotAccessible),
        unsuitable: &[(T, R::Flex5)],
        ranked: &[],
        order: Some(&[IP, V, TX, T]),
        mentions: &[(IP, R::F2f1)],
        ..BASE
    },
    Case {
        name: "F2F-1: in person ranked first is a fallback as not preferred",
        setup: |i| i.plan("/preferences/default", json!(["in_person", "video"])),
        recommended: IP,
        fallback: Some(FR::NotPreferred),
        ranked: &[IP, V],
        order: Some(&[IP, V, T, TX]),
        mentions: &[(IP, R::F2f1)],
        ..BASE
    },
    Case {
        name: "F2F-1: in person ranked first with remote care ruled out for safety is not \
               appropriate",
        setup: |i| {
            i.plan("/preferences/default", json!(["in_person", "video"]));
            i.request["risk_level"] = json!("high");
        },
        recommended: IP,
        fallback: Some(FR::NotAppropriate),
        unsuitable: &[(V, R::Safe1), (T, R::Safe1), (TX, R::Safe1)],
        ranked: &[IP],
        order: None,
        actions: NO_REMOTE,
        risk: Some(RiskLevel::High),
        ..BASE
    },
    Case {
        name: "F2F-1: an unranked option ruled out for access does not make it not accessible",
        setup: |i| {
            i.plan("/preferences/default", json!(["in_person", "video"]));
            i.plan("/barriers", json!([{"kind": "hearing"}]));
        },
        recommended: IP,
        fallback: Some(FR::NotPreferred),
        unsuitable: &[(T, R::Flex5)],
        ranked: &[IP, V],
        order: None,
        ..BASE
    },
    Case {
        name: "FLEX-3/F2F-1: nothing remote ranked above in person remains, but they cannot \
               attend: the best remote option",
        setup: |i| {
            i.plan(
                "/preferences/default",
                json!(["telephone", "in_person", "video"]),
            );
            i.plan("/barriers", json!([{"kind": "hearing"}]));
            i.plan("/personalisation", json!({"cannot_attend_in_person": true}));
        },
        recommended: V,
        unsuitable: &[(T, R::Flex5)],
        ranked: &[IP, V],
        mentions: &[(V, R::Flex3), (IP, R::Flex3)],
        order: None,
        ..BASE
    },
    Case {
        name: "FLEX-3: in person ranked first but they cannot attend: the best remote option",
        setup: |i| {
            i.plan("/preferences/default", json!(["in_person", "telephone"]));
            i.plan("/personalisation", json!({"cannot_attend_in_person": true}));
        },
        recommended: T,
        ranked: &[IP, T],
        order: Some(&[IP, T, V, TX]),
        mentions: &[(T, R::Flex3)],
        ..BASE
    },
    // FLEX-3
    Case {
        name: "FLEX-3: remote participants are noted on video and telephone",
        setup: |i| {
            i.plan(
                "/personalisation",
                json!({"participants": [{"role": "family", "joins_remotely": true}]}),
            )
        },
        mentions: &[(V, R::Flex3), (T, R::Flex3)],
        ..BASE
    },
    Case {
        name: "FLEX-3: without a reason to raise remote, unranked options keep the stable order",
        setup: |i| i.plan("/preferences/default", json!(["telephone"])),
        recommended: T,
        ranked: &[T],
        order: Some(&[T, IP, V, TX]),
        ..BASE
    },
    Case {
        name: "FLEX-3: shorter, more frequent contacts place remote before in person",
        setup: |i| {
            i.plan("/preferences/default", json!(["telephone"]));
            i.plan(
                "/personalisation",
                json!({"contact_pattern": "shorter_more_frequent"}),
            );
        },
        recommended: T,
        ranked: &[T],
        order: Some(&[T, V, TX, IP]),
        mentions: &[(V, R::Flex3), (TX, R::Flex3)],
        ..BASE
    },
    Case {
        name: "FLEX-3: reluctance to attend in person places remote before in person",
        setup: |i| {
            i.plan("/preferences/default", json!(["telephone"]));
            i.plan(
                "/personalisation",
                json!({"reluctant_to_attend_in_person": true}),
            );
        },
        recommended: T,
        ranked: &[T],
        order: Some(&[T, V, TX, IP]),
        mentions: &[(IP, R::Flex3)],
        ..BASE
    },
    // FLEX-4
    Case {
        name: "FLEX-4: an overdue plan review is a prerequisite",
        setup: |i| i.plan("/last_reviewed_on", json!("2026-06-01")),
        prerequisites: &[P::PlanReview],
        ..BASE
    },
    Case {
        name: "FLEX-4: a review due today is not yet overdue",
        setup: |i| {
            i.plan("/last_reviewed_on", json!("2026-10-29"));
            i.plan("/review_interval_days", json!(30));
        },
        ..BASE
    },
    // FLEX-5
    Case {
        name: "FLEX-5: a hearing barrier rules out telephone; video with captions",
        setup: |i| i.plan("/barriers", json!([{"kind": "hearing"}])),
        unsuitable: &[(T, R::Flex5)],
        ranked: &[V, IP],
        mentions: &[(V, R::Flex5)],
        order: Some(&[V, IP, TX, T]),
        ..BASE
    },
    Case {
        name: "FLEX-5: a speech barrier rules out telephone",
        setup: |i| i.plan("/barriers", json!([{"kind": "speech"}])),
        unsuitable: &[(T, R::Flex5)],
        ranked: &[V, IP],
        order: Some(&[V, IP, TX, T]),
        ..BASE
    },
    Case {
        name: "FLEX-5: a vision barrier moves video below telephone, not below in person",
        setup: |i| i.plan("/barriers", json!([{"kind": "vision"}])),
        recommended: T,
        ranked: &[T, V, IP],
        order: Some(&[T, V, IP, TX]),
        mentions: &[(V, R::Flex5), (TX, R::Flex5)],
        ..BASE
    },
    Case {
        name: "FLEX-5: a vision barrier leaves in person where the service user put it, \
               without a fallback referral",
        setup: |i| {
            i.plan("/barriers", json!([{"kind": "vision"}]));
            i.plan(
                "/preferences/default",
                json!(["video", "in_person", "telephone"]),
            );
        },
        recommended: IP,
        ranked: &[IP, T, V],
        order: None,
        mentions: &[(IP, R::Flex2), (V, R::Flex5)],
        ..BASE
    },
    Case {
        name: "FLEX-5: a speech barrier moves a first choice of telephone down to text",
        setup: |i| {
            i.plan("/barriers", json!([{"kind": "speech"}]));
            i.plan(
                "/preferences/default",
                json!(["telephone", "text", "in_person"]),
            );
        },
        recommended: TX,
        unsuitable: &[(T, R::Flex5)],
        ranked: &[TX, IP],
        order: Some(&[TX, IP, V, T]),
        ..BASE
    },
    Case {
        name: "FLEX-5: a psychological barrier asks to adapt, without ruling anything out",
        setup: |i| i.plan("/barriers", json!([{"kind": "psychological"}])),
        mentions: &[(V, R::Flex5), (T, R::Flex5), (TX, R::Flex5)],
        ..BASE
    },
    Case {
        name: "FLEX-5: discomfort with the first choice moves down to their second choice",
        setup: |i| i.plan("/preferences/uncomfortable_with", json!(["video"])),
        recommended: T,
        unsuitable: &[(V, R::Flex5)],
        ranked: &[T, IP],
        order: Some(&[T, IP, TX, V]),
        mentions: &[(T, R::Flex2)],
        ..BASE
    },
    Case {
        name: "FLEX-5/F2F-1: discomfort with every remote option ranked above in person falls \
               back as not preferred, although text is unranked and suitable",
        setup: |i| {
            i.plan(
                "/preferences/uncomfortable_with",
                json!(["video", "telephone"]),
            )
        },
        recommended: IP,
        fallback: Some(FR::NotPreferred),
        unsuitable: &[(V, R::Flex5), (T, R::Flex5)],
        ranked: &[IP],
        order: Some(&[IP, TX, V, T]),
        mentions: &[(IP, R::F2f1)],
        ..BASE
    },
    Case {
        name: "FLEX-5: discomfort with an unranked modality rules it out quietly",
        setup: |i| i.plan("/preferences/uncomfortable_with", json!(["text"])),
        unsuitable: &[(TX, R::Flex5)],
        ..BASE
    },
    Case {
        name: "FLEX-5/F2F-1: discomfort with everything remote falls back as not preferred",
        setup: |i| {
            i.plan(
                "/preferences/uncomfortable_with",
                json!(["video", "telephone", "text"]),
            )
        },
        recommended: IP,
        fallback: Some(FR::NotPreferred),
        unsuitable: &[(V, R::Flex5), (T, R::Flex5), (TX, R::Flex5)],
        ranked: &[IP],
        order: None,
        actions: NO_REMOTE,
        ..BASE
    },
    Case {
        name: "F2F-1: inaccessible outranks uncomfortable in the fallback reason",
        setup: |i| {
            i.plan("/preferences/uncomfortable_with", json!(["video", "text"]));
            i.plan("/resources/devices", json!(["computer"]));
        },
        recommended: IP,
        fallback: Some(FR::NotAccessible),
        unsuitable: &[(V, R::Flex5), (T, R::Conn1), (TX, R::Flex5)],
        ranked: &[IP],
        order: None,
        actions: NO_REMOTE,
        ..BASE
    },
    // CONN-1
    Case {
        name: "CONN-1: limited connectivity rules out video but leaves telephone",
        setup: |i| {
            i.plan("/resources/connectivity", json!("limited"));
            i.plan(
                "/preferences/default",
                json!(["telephone", "video", "in_person"]),
            );
        },
        recommended: T,
        unsuitable: &[(V, R::Conn1)],
        ranked: &[T, IP],
        mentions: &[(TX, R::Excl1)],
        order: Some(&[T, IP, TX, V]),
        ..BASE
    },
    Case {
        name: "CONN-1/FLEX-2: limited connectivity moves a first choice of video down to \
               telephone",
        setup: |i| i.plan("/resources/connectivity", json!("limited")),
        recommended: T,
        unsuitable: &[(V, R::Conn1)],
        ranked: &[T, IP],
        order: None,
        mentions: &[(T, R::Flex2)],
        ..BASE
    },
    Case {
        name: "CONN-1/F2F-1: nothing ranked above in person is accessible: in person, not \
               accessible",
        setup: |i| {
            i.plan("/resources/devices", json!(["computer"]));
            i.plan("/resources/connectivity", json!("limited"));
        },
        recommended: IP,
        fallback: Some(FR::NotAccessible),
        unsuitable: &[(V, R::Conn1), (T, R::Conn1)],
        ranked: &[IP],
        order: Some(&[IP, TX, V, T]),
        mentions: &[(IP, R::F2f1)],
        ..BASE
    },
    Case {
        name: "CONN-1: no connectivity leaves a smartphone's telephone and text",
        setup: |i| {
            i.plan("/resources/connectivity", json!("none"));
            i.plan("/preferences/default", json!(["text", "telephone"]));
        },
        recommended: TX,
        unsuitable: &[(V, R::Conn1), (V, R::Excl1)],
        ranked: &[TX, T],
        mentions: &[(T, R::Excl1), (TX, R::Excl1)],
        order: None,
        ..BASE
    },
    Case {
        name: "CONN-1: an unconnected computer cannot message, and cannot call",
        setup: |i| {
            i.plan("/resources/connectivity", json!("none"));
            i.plan("/resources/devices", json!(["computer"]));
        },
        recommended: IP,
        fallback: Some(FR::NotAccessible),
        unsuitable: &[(V, R::Conn1), (T, R::Conn1), (TX, R::Conn1), (TX, R::Excl1)],
        ranked: &[IP],
        order: None,
        actions: NO_REMOTE,
        ..BASE
    },
    Case {
        name: "CONN-1: basic skills are enough for video",
        setup: |i| i.plan("/resources/digital_skills", json!("basic")),
        ..BASE
    },
    Case {
        name: "CONN-1: a landline carries a call for a digitally excluded service user",
        setup: |i| {
            i.plan("/resources/devices", json!(["landline"]));
            i.plan("/resources/connectivity", json!("none"));
            i.plan("/resources/digital_skills", json!("none"));
            i.plan("/preferences/default", json!(["telephone", "in_person"]));
        },
        recommended: T,
        unsuitable: &[(V, R::Conn1), (V, R::Excl1), (TX, R::Conn1), (TX, R::Excl1)],
        ranked: &[T, IP],
        mentions: &[(T, R::Excl1)],
        order: Some(&[T, IP, V, TX]),
        ..BASE
    },
    Case {
        name: "EXCL-1: a mobile still messages without a smartphone or connection",
        setup: |i| {
            i.plan("/resources/devices", json!(["mobile"]));
            i.plan("/resources/connectivity", json!("none"));
            i.plan("/preferences/default", json!(["text", "in_person"]));
        },
        recommended: TX,
        unsuitable: &[(V, R::Excl1)],
        ranked: &[TX, IP],
        mentions: &[(TX, R::Excl1), (T, R::Excl1)],
        order: None,
        ..BASE
    },
    // CONN-2
    Case {
        name: "CONN-2: a missing back-up contact is a prerequisite",
        setup: |i| i.plan("/backup_contact", Value::Null),
        prerequisites: &[P::BackupContact],
        ..BASE
    },
    // SAFE-1
    Case {
        name: "SAFE-1: high risk with an in-person crisis response keeps remote care",
        setup: |i| {
            i.protocol("/risk_level", json!("high"));
            i.protocol(
                "/crisis_response",
                json!({"team": "Leeds crisis team", "in_person_plan": "Visit within 4 hours"}),
            );
        },
        mentions: &[(V, R::Safe1), (T, R::Safe1), (TX, R::Safe1)],
        risk: Some(RiskLevel::High),
        ..BASE
    },
    Case {
        name: "SAFE-1: high risk in the request, no crisis response: not appropriate",
        setup: |i| i.request["risk_level"] = json!("high"),
        recommended: IP,
        fallback: Some(FR::NotAppropriate),
        unsuitable: &[(V, R::Safe1), (T, R::Safe1), (TX, R::Safe1)],
        ranked: &[IP],
        order: None,
        actions: NO_REMOTE,
        risk: Some(RiskLevel::High),
        ..BASE
    },
    Case {
        name: "SAFE-1: a crisis team without an in-person plan is not enough at high risk",
        setup: |i| {
            i.request["risk_level"] = json!("high");
            i.protocol("/crisis_response", json!({"team": "Leeds crisis team"}));
        },
        recommended: IP,
        fallback: Some(FR::NotAppropriate),
        unsuitable: &[(V, R::Safe1), (T, R::Safe1), (TX, R::Safe1)],
        ranked: &[IP],
        order: None,
        actions: NO_REMOTE,
        risk: Some(RiskLevel::High),
        ..BASE
    },
    Case {
        name: "SAFE-1/SAFE-2: high risk without any protocol fails both",
        setup: |i| {
            i.protocol = None;
            i.request["risk_level"] = json!("high");
        },
        recommended: IP,
        fallback: Some(FR::NotAppropriate),
        unsuitable: &[(V, R::Safe1), (V, R::Safe2), (T, R::Safe2), (TX, R::Safe1)],
        ranked: &[IP],
        order: None,
        prerequisites: &[P::SafetyProtocol],
        actions: NO_REMOTE,
        risk: Some(RiskLevel::High),
        ..BASE
    },
    // SAFE-2
    Case {
        name: "SAFE-2: moderate risk with a call-back number keeps remote care",
        setup: |i| i.protocol("/risk_level", json!("moderate")),
        mentions: &[(V, R::Safe2)],
        risk: Some(RiskLevel::Moderate),
        ..BASE
    },
    Case {
        name: "SAFE-2: a protocol without call-back numbers is no protocol at moderate risk",
        setup: |i| {
            i.protocol("/risk_level", json!("moderate"));
            i.recorded_protocol("/call_back_numbers", json!([]));
        },
        recommended: IP,
        fallback: Some(FR::NotAppropriate),
        unsuitable: &[(V, R::Safe2), (T, R::Safe2), (TX, R::Safe2)],
        ranked: &[IP],
        order: None,
        prerequisites: &[P::SafetyProtocol],
        actions: NO_REMOTE,
        risk: Some(RiskLevel::Moderate),
        ..BASE
    },
    Case {
        name: "SAFE-2: low risk in the request without a protocol keeps remote care",
        setup: |i| {
            i.protocol = None;
            i.request["risk_level"] = json!("low");
        },
        prerequisites: &[P::SafetyProtocol],
        ..BASE
    },
    Case {
        name: "SAFE-2: no risk known is treated as low, and asks for a protocol",
        setup: |i| i.protocol = None,
        mentions: &[(V, R::Safe2), (T, R::Safe2), (TX, R::Safe2)],
        prerequisites: &[P::SafetyProtocol],
        risk: None,
        ..BASE
    },
    Case {
        name: "SAFE-2: a request risk below the protocol's does not lower it",
        setup: |i| {
            i.protocol("/risk_level", json!("moderate"));
            i.recorded_protocol("/call_back_numbers", json!([]));
            i.request["risk_level"] = json!("low");
        },
        recommended: IP,
        fallback: Some(FR::NotAppropriate),
        unsuitable: &[(V, R::Safe2), (T, R::Safe2), (TX, R::Safe2)],
        ranked: &[IP],
        order: None,
        prerequisites: &[P::SafetyProtocol],
        actions: NO_REMOTE,
        risk: Some(RiskLevel::Moderate),
        ..BASE
    },
    Case {
        name: "SAFE-2: a request risk above the protocol's applies",
        setup: |i| i.request["risk_level"] = json!("moderate"),
        mentions: &[(V, R::Safe2)],
        risk: Some(RiskLevel::Moderate),
        ..BASE
    },
    Case {
        name: "SAFE-2/F2F-1: not appropriate outranks not accessible",
        setup: |i| {
            i.protocol = None;
            i.request["risk_level"] = json!("moderate");
            i.plan("/resources/connectivity", json!("limited"));
        },
        recommended: IP,
        fallback: Some(FR::NotAppropriate),
        unsuitable: &[(V, R::Conn1), (V, R::Safe2), (T, R::Safe2), (TX, R::Safe2)],
        ranked: &[IP],
        order: None,
        prerequisites: &[P::SafetyProtocol],
        actions: NO_REMOTE,
        risk: Some(RiskLevel::Moderate),
        ..BASE
    },
    // SAFE-3
    Case {
        name: "SAFE-3: no private space ranks text and in person above video and telephone",
        setup: |i| {
            i.plan("/resources/private_space", json!("no"));
            i.plan(
                "/preferences/default",
                json!(["video", "telephone", "text", "in_person"]),
            );
        },
        recommended: TX,
        ranked: &[TX, IP, V, T],
        order: None,
        mentions: &[(V, R::Safe3), (T, R::Safe3), (TX, R::Safe3), (IP, R::Safe3)],
        ..BASE
    },
    Case {
        name: "SAFE-3: no private space with example 1's ranking puts in person first, \
               without a fallback referral",
        setup: |i| i.plan("/resources/private_space", json!("no")),
        recommended: IP,
        ranked: &[IP, V, T],
        order: Some(&[IP, V, T, TX]),
        mentions: &[(IP, R::Safe3), (IP, R::Flex2)],
        ..BASE
    },
    Case {
        name: "SAFE-3 over FLEX-5: privacy has the last word on a vision barrier",
        setup: |i| {
            i.plan("/resources/private_space", json!("no"));
            i.plan("/barriers", json!([{"kind": "vision"}]));
            i.plan(
                "/preferences/default",
                json!(["video", "telephone", "text", "in_person"]),
            );
        },
        recommended: TX,
        ranked: &[TX, IP, T, V],
        order: None,
        ..BASE
    },
    Case {
        name: "SAFE-3: a private space only sometimes is noted, not re-ranked",
        setup: |i| i.plan("/resources/private_space", json!("sometimes")),
        mentions: &[(V, R::Safe3), (T, R::Safe3)],
        ..BASE
    },
    // THER-1, THER-2
    Case {
        name: "THER-1: a first appointment is in person, without a fallback referral",
        setup: |i| i.request["first_appointment"] = json!(true),
        recommended: IP,
        mentions: &[(IP, R::Ther1)],
        actions: &[
            A::ConfirmLocation,
            A::ConfirmCallBackNumber,
            A::AllowRapportTime,
        ],
        ..BASE
    },
    Case {
        name: "THER-1/THER-2: cannot attend in person: a remote first appointment with time",
        setup: |i| {
            i.request["first_appointment"] = json!(true);
            i.plan("/personalisation", json!({"cannot_attend_in_person": true}));
        },
        mentions: &[(IP, R::Flex3)],
        actions: &[
            A::ConfirmLocation,
            A::ConfirmCallBackNumber,
            A::AllowRapportTime,
        ],
        ..BASE
    },
    Case {
        name: "THER-1: a first appointment whose first choice is ruled out, with a remote \
               second choice left, is in person without a fallback referral",
        setup: |i| {
            i.request["first_appointment"] = json!(true);
            i.plan("/resources/connectivity", json!("limited"));
        },
        recommended: IP,
        unsuitable: &[(V, R::Conn1)],
        ranked: &[T, IP],
        order: None,
        mentions: &[(IP, R::Ther1)],
        actions: &[
            A::ConfirmLocation,
            A::ConfirmCallBackNumber,
            A::AllowRapportTime,
        ],
        ..BASE
    },
    Case {
        name: "THER-1/F2F-1: a first appointment with nothing remote ranked above in person \
               left is a fallback",
        setup: |i| {
            i.request["first_appointment"] = json!(true);
            i.plan("/barriers", json!([{"kind": "hearing"}]));
            i.plan("/preferences/default", json!(["telephone", "in_person"]));
        },
        recommended: IP,
        fallback: Some(FR::NotAccessible),
        unsuitable: &[(T, R::Flex5)],
        ranked: &[IP],
        order: None,
        mentions: &[(IP, R::Ther1), (IP, R::F2f1)],
        actions: &[
            A::ConfirmLocation,
            A::ConfirmCallBackNumber,
            A::AllowRapportTime,
        ],
        ..BASE
    },
    // THER-3
    Case {
        name: "THER-3: an assessment places telephone and text after video, and says why",
        setup: |i| {
            i.request["appointment_type"] = json!("assessment");
            i.plan(
                "/preferences/by_appointment_type",
                json!({"assessment": ["in_person"]}),
            );
        },
        recommended: IP,
        fallback: Some(FR::NotPreferred),
        ranked: &[IP],
        order: Some(&[IP, V, T, TX]),
        mentions: &[(T, R::Ther3), (TX, R::Ther3)],
        ..BASE
    },
    Case {
        name: "THER-3 after SAFE-3: no private space lowers video and telephone first",
        setup: |i| {
            i.request["appointment_type"] = json!("assessment");
            i.plan("/resources/private_space", json!("no"));
            i.plan("/preferences/default", json!(["in_person"]));
        },
        recommended: IP,
        fallback: Some(FR::NotPreferred),
        ranked: &[IP],
        order: Some(&[IP, TX, V, T]),
        ..BASE
    },
    Case {
        name: "THER-3 does not override the service user's own order",
        setup: |i| {
            i.request["appointment_type"] = json!("assessment");
            i.plan("/preferences/default", json!(["telephone", "video"]));
        },
        recommended: T,
        ranked: &[T, V],
        order: Some(&[T, V, IP, TX]),
        mentions: &[(T, R::Ther3)],
        ..BASE
    },
];

#[test]
fn every_rule_case_holds() {
    for case in CASES {
        let mut inputs = Inputs::example_1();
        (case.setup)(&mut inputs);
        let rec = inputs.run();
        let name = case.name;
        assert_eq!(rec.recommended_modality, case.recommended, "{name}");
        assert_eq!(rec.fallback_referral.reason, case.fallback, "{name}");
        let mut expected: Vec<Modality> = case.unsuitable.iter().map(|(m, _)| *m).collect();
        expected.sort();
        expected.dedup();
        let mut got = unsuitable(&rec);
        got.sort();
        assert_eq!(got, expected, "{name}: unsuitable");
        for (m, rule) in case.unsuitable.iter().chain(case.mentions) {
            assert!(
                rules_of(&rec, *m).contains(rule),
                "{name}: {m} should name {rule}: {:?}",
                option(&rec, *m).reasons
            );
        }
        assert_eq!(ranked(&rec), case.ranked, "{name}: ranked");
        if let Some(order_) = case.order {
            assert_eq!(order(&rec), order_, "{name}: order");
        }
        assert_eq!(prerequisite_codes(&rec), case.prerequisites, "{name}");
        assert_eq!(action_codes(&rec), case.actions, "{name}");
        assert_eq!(rec.effective_risk_level, case.risk, "{name}");
    }
}

#[test]
fn every_rule_of_the_catalog_has_a_case() {
    let named = |rule: RuleId| {
        CASES
            .iter()
            .any(|c| c.name.contains(rule.as_str()) || c.mentions.iter().any(|(_, r)| *r == rule))
    };
    for rule in catalog() {
        assert!(named(rule.id), "no case for {}", rule.id);
    }
}

#[test]
fn the_request_has_defaults_and_refuses_unknown_fields() {
    let req: RecommendationRequest = serde_json::from_value(request_json()).expect("parses");
    assert!(!req.first_appointment && !req.sensitive_topics && req.risk_level.is_none());
    let mut v = request_json();
    v["risk"] = json!("low");
    assert!(serde_json::from_value::<RecommendationRequest>(v).is_err());
    let mut v = request_json();
    v["appointment_type"] = json!("chat");
    assert!(serde_json::from_value::<RecommendationRequest>(v).is_err());
}

#[test]
fn sensitive_topics_are_named_in_the_call_back_action() {
    let mut i = Inputs::example_1();
    i.request["sensitive_topics"] = json!(true);
    let rec = i.run();
    let call_back = rec
        .session_actions
        .iter()
        .find(|a| a.code == A::ConfirmCallBackNumber)
        .expect("a call-back action");
    assert!(call_back.text.contains("sensitive"));
}

#[test]
fn the_response_has_the_outlined_wire_shape() {
    let rec = Inputs::example_1().run();
    let v = serde_json::to_value(&rec).expect("serialises");
    assert_eq!(v["recommended_modality"], "video");
    assert_eq!(v["options"][0]["modality"], "video");
    assert_eq!(v["options"][0]["rank"], 1);
    assert_eq!(v["options"][0]["reasons"][0]["rule"], "FLEX-2");
    assert_eq!(v["options"][3]["rank"], Value::Null);
    assert_eq!(v["session_actions"][0]["code"], "confirm_location");
    assert_eq!(v["session_actions"][0]["rule"], "SAFE-1");
    assert_eq!(v["suggested_platforms"], json!(["Zoom"]));
    assert_eq!(
        v["fallback_referral"],
        json!({"suggested": false, "reason": null})
    );
    assert_eq!(
        v["digital_exclusion"],
        json!({"level": "none", "factors": []})
    );
    assert_eq!(v["effective_risk_level"], "low");

    let mut i = Inputs::example_1();
    i.plan = None;
    let v = serde_json::to_value(i.run()).expect("serialises");
    assert_eq!(v["digital_exclusion"], Value::Null);
    assert_eq!(v["prerequisites"][0]["code"], "initial_conversation");
    assert_eq!(v["prerequisites"][0]["rule"], "FLEX-1");
}

#[test]
fn wire_codes_are_snake_case() {
    let codes = serde_json::to_value((
        P::InitialConversation,
        P::PlanReview,
        P::BackupContact,
        P::SafetyProtocol,
        A::ConfirmLocation,
        A::ConfirmCallBackNumber,
        A::AllowRapportTime,
        A::DiscloseOthersPresent,
        A::UseHeadphones,
        FR::NotPreferred,
        FR::NotAppropriate,
        FR::NotAccessible,
    ))
    .expect("serialises");
    assert_eq!(
        codes,
        json!([
            "initial_conversation",
            "plan_review",
            "backup_contact",
            "safety_protocol",
            "confirm_location",
            "confirm_call_back_number",
            "allow_rapport_time",
            "disclose_others_present",
            "use_headphones",
            "not_preferred",
            "not_appropriate",
            "not_accessible"
        ])
    );
    assert_eq!(A::UseHeadphones.rule(), R::Safe3);
    assert_eq!(A::DiscloseOthersPresent.rule(), R::Safe3);
}
