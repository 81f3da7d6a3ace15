//! Properties of every recommendation, over arbitrary plans, protocols and requests.

use super::tests::{check_invariants, today};
use super::*;
use crate::domain::plan::{
    BackupContact, BackupMethod, Barrier, BarrierKind, Connectivity, ContactPattern, Device,
    DigitalSkills, InitialConversation, Participant, ParticipantRole, Personalisation, Plan,
    PlanInput, Preferences, PrivateSpace, Resources,
};
use crate::domain::protocol::{CrisisResponse, SafetyProtocol, SafetyProtocolInput};
use crate::domain::types::{
    AppointmentType, CalendarDate, Label, Modality, Name, PhoneNumber, PlanText, ReviewInterval,
    RiskLevel, SubjectRef,
};
use chrono::Days;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use std::collections::BTreeMap;

fn subject() -> SubjectRef {
    SubjectRef::parse("Patient/123").expect("a subject")
}

fn phone(n: u32) -> PhoneNumber {
    PhoneNumber::parse(&format!("+4477009{n:05}")).expect("a phone number")
}

fn appointment_type() -> impl Strategy<Value = AppointmentType> {
    select(vec![
        AppointmentType::Assessment,
        AppointmentType::Therapy,
        AppointmentType::MedicationReview,
        AppointmentType::CareReview,
        AppointmentType::CrisisFollowUp,
        AppointmentType::Group,
        AppointmentType::Other,
    ])
}

fn risk() -> impl Strategy<Value = Option<RiskLevel>> {
    prop::option::of(select(vec![
        RiskLevel::Low,
        RiskLevel::Moderate,
        RiskLevel::High,
    ]))
}

fn ranking() -> impl Strategy<Value = Vec<Modality>> {
    subsequence(Modality::ALL.to_vec(), 1..=4).prop_shuffle()
}

fn resources() -> impl Strategy<Value = Resources> {
    (
        subsequence(
            vec![
                Device::Smartphone,
                Device::Mobile,
                Device::Landline,
                Device::Tablet,
                Device::Computer,
            ],
            0..=5,
        ),
        select(vec![
            Connectivity::None,
            Connectivity::Limited,
            Connectivity::Reliable,
        ]),
        select(vec![
            DigitalSkills::None,
            DigitalSkills::Basic,
            DigitalSkills::Confident,
        ]),
        any::<bool>(),
        prop::option::of(select(vec![
            PrivateSpace::Yes,
            PrivateSpace::No,
            PrivateSpace::Sometimes,
        ])),
    )
        .prop_map(
            |(devices, connectivity, digital_skills, zoom, private_space)| Resources {
                devices,
                connectivity,
                digital_skills,
                familiar_platforms: if zoom {
                    vec![Label::parse("Zoom").unwrap()]
                } else {
                    vec![]
                },
                private_space,
            },
        )
}

fn personalisation() -> impl Strategy<Value = Personalisation> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(remote_family, shorter, reluctant, cannot)| Personalisation {
            participants: vec![Participant {
                role: ParticipantRole::Family,
                name: None,
                joins_remotely: remote_family,
            }],
            contact_pattern: if shorter {
                ContactPattern::ShorterMoreFrequent
            } else {
                ContactPattern::Standard
            },
            reluctant_to_attend_in_person: reluctant,
            cannot_attend_in_person: cannot,
        },
    )
}

fn plan() -> impl Strategy<Value = PlanInput> {
    (
        any::<bool>(),
        ranking(),
        prop::option::of((appointment_type(), ranking())),
        // Validation refuses in_person here, but the engine must cope with it anyway (a
        // recorded plan may hold it: `given_plan`).
        subsequence(Modality::ALL.to_vec(), 0..=4),
        resources(),
        subsequence(
            vec![
                BarrierKind::Hearing,
                BarrierKind::Vision,
                BarrierKind::Speech,
                BarrierKind::Psychological,
            ],
            0..=4,
        ),
        personalisation(),
        any::<bool>(),
        0u64..400,
    )
        .prop_map(
            |(ic, default, by_type, uncomfortable_with, resources, barriers, p, backup, ago)| {
                let reviewed = today().checked_sub_days(Days::new(ago));
                PlanInput {
                    subject: subject(),
                    initial_conversation: ic.then(|| InitialConversation {
                        held_on: CalendarDate::recorded(today()),
                        held_by: None,
                    }),
                    preferences: Preferences {
                        default,
                        by_appointment_type: by_type.into_iter().collect::<BTreeMap<_, _>>(),
                        uncomfortable_with,
                    },
                    resources,
                    barriers: barriers
                        .into_iter()
                        .map(|kind| Barrier { kind, note: None })
                        .collect(),
                    personalisation: p,
                    backup_contact: backup.then(|| BackupContact {
                        method: BackupMethod::Telephone,
                        number: phone(1),
                    }),
                    review_interval_days: ReviewInterval::DEFAULT,
                    last_reviewed_on: reviewed.map(CalendarDate::recorded),
                    notes: None,
                }
            },
        )
}

/// The plan as the engine is given it: checked when today's checks accept it, else as a row
/// recorded under older checks may hold it (`in_person` among `uncomfortable_with`), which
/// the engine must cope with too.
fn given_plan(plan: PlanInput) -> Plan {
    plan.clone()
        .check(today())
        .unwrap_or_else(|_| Plan::recorded(plan))
}

/// The protocol as the engine is given it: checked when today's checks accept it, else as a
/// row recorded under older checks may hold it (no call-back number; high risk without an
/// in-person crisis response).
fn given_protocol(protocol: SafetyProtocolInput) -> SafetyProtocol {
    protocol
        .clone()
        .check(today())
        .unwrap_or_else(|_| SafetyProtocol::recorded(protocol))
}

/// A protocol at a given risk; `crisis` 0 = none, 1 = a team only, 2 = an in-person plan.
fn protocol_at(risk: RiskLevel, numbers: u32, crisis: u8) -> SafetyProtocol {
    given_protocol(SafetyProtocolInput {
        subject: subject(),
        risk_level: risk,
        call_back_numbers: (0..numbers).map(phone).collect(),
        usual_locations: vec![],
        emergency_contacts: vec![],
        crisis_response: (crisis > 0).then(|| CrisisResponse {
            team: Name::parse("Crisis team").unwrap(),
            phone: None,
            in_person_plan: (crisis > 1).then(|| PlanText::parse("Visit within 4 hours").unwrap()),
            hours: None,
        }),
        agreed_with_service_user_on: CalendarDate::recorded(today()),
        review_interval_days: ReviewInterval::DEFAULT,
        notes: None,
    })
}

type ProtocolShape = Option<(RiskLevel, u32, u8)>;

fn protocol_shape() -> impl Strategy<Value = ProtocolShape> {
    prop::option::of((
        select(vec![RiskLevel::Low, RiskLevel::Moderate, RiskLevel::High]),
        0u32..=2,
        0u8..=2,
    ))
}

fn request() -> impl Strategy<Value = RecommendationRequest> {
    (appointment_type(), any::<bool>(), any::<bool>(), risk()).prop_map(
        |(appointment_type, first_appointment, sensitive_topics, risk_level)| {
            RecommendationRequest {
                subject: subject(),
                appointment_type,
                first_appointment,
                sensitive_topics,
                risk_level,
            }
        },
    )
}

fn suitable(rec: &Recommendation) -> Vec<Modality> {
    let mut out: Vec<Modality> = rec
        .options
        .iter()
        .filter(|o| o.suitable)
        .map(|o| o.modality)
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_answer_keeps_the_invariants(
        plan in prop::option::of(plan()),
        protocol in protocol_shape(),
        req in request(),
    ) {
        let plan = plan.map(given_plan);
        let protocol = protocol.map(|(r, n, c)| protocol_at(r, n, c));
        let rec = recommend(&req, plan.as_ref(), protocol.as_ref(), today());
        check_invariants(&rec, plan.as_deref());
    }

    #[test]
    fn in_person_is_always_offered_and_the_recommendation_is_suitable(
        plan in prop::option::of(plan()),
        protocol in protocol_shape(),
        req in request(),
    ) {
        let plan = plan.map(given_plan);
        let protocol = protocol.map(|(r, n, c)| protocol_at(r, n, c));
        let rec = recommend(&req, plan.as_ref(), protocol.as_ref(), today());
        let in_person = rec.options.iter().find(|o| o.modality == Modality::InPerson);
        prop_assert!(in_person.is_some_and(|o| o.suitable && o.offered));
        let chosen = rec.options.iter().find(|o| o.modality == rec.recommended_modality);
        prop_assert!(chosen.is_some_and(|o| o.suitable && o.offered));
    }

    #[test]
    fn a_higher_request_risk_never_makes_remote_care_more_suitable(
        plan in prop::option::of(plan()),
        protocol in protocol_shape(),
        mut req in request(),
        a in risk(),
        b in risk(),
    ) {
        let plan = plan.map(given_plan);
        let protocol = protocol.map(|(r, n, c)| protocol_at(r, n, c));
        req.risk_level = a.min(b);
        let lower = recommend(&req, plan.as_ref(), protocol.as_ref(), today());
        req.risk_level = a.max(b);
        let higher = recommend(&req, plan.as_ref(), protocol.as_ref(), today());
        let was = suitable(&lower);
        for m in suitable(&higher) {
            prop_assert!(was.contains(&m), "{m} became suitable at a higher risk");
        }
    }

    #[test]
    fn a_higher_protocol_risk_never_makes_remote_care_more_suitable(
        plan in prop::option::of(plan()),
        numbers in 0u32..=2,
        crisis in 0u8..=2,
        req in request(),
        a in select(vec![RiskLevel::Low, RiskLevel::Moderate, RiskLevel::High]),
        b in select(vec![RiskLevel::Low, RiskLevel::Moderate, RiskLevel::High]),
    ) {
        let plan = plan.map(given_plan);
        let lower = protocol_at(a.min(b), numbers, crisis);
        let higher = protocol_at(a.max(b), numbers, crisis);
        let was = suitable(&recommend(&req, plan.as_ref(), Some(&lower), today()));
        let now = suitable(&recommend(&req, plan.as_ref(), Some(&higher), today()));
        for m in now {
            prop_assert!(was.contains(&m), "{m} became suitable at a higher risk");
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_answer(
        plan in prop::option::of(plan()),
        protocol in protocol_shape(),
        req in request(),
    ) {
        let plan = plan.map(given_plan);
        let protocol = protocol.map(|(r, n, c)| protocol_at(r, n, c));
        let first = recommend(&req, plan.as_ref(), protocol.as_ref(), today());
        let again = recommend(&req, plan.clone().as_ref(), protocol.clone().as_ref(), today());
        prop_assert_eq!(&first, &again);
        let json = |r: &Recommendation| serde_json::to_string(r).unwrap_or_default();
        prop_assert_eq!(json(&first), json(&again));
    }
}

// ---------------------------------------------------------------------------------------------
// Step 4 of "How rules combine" (changed 2026-11-29): the recommendation is the service user's
// highest-ranked option that remains suitable; it never jumps to in_person while a remote
// option they ranked above in_person is suitable.

fn is_suitable(rec: &Recommendation, m: Modality) -> bool {
    rec.options.iter().any(|o| o.modality == m && o.suitable)
}

/// The remote modalities the service user ranked above in_person (all they ranked when they
/// did not rank in_person).
fn ranked_above_in_person(ranking: &[Modality]) -> Vec<Modality> {
    ranking
        .iter()
        .copied()
        .take_while(|&m| m != Modality::InPerson)
        .collect()
}

fn held_conversation(plan: &mut PlanInput) {
    plan.initial_conversation
        .get_or_insert(InitialConversation {
            held_on: CalendarDate::recorded(today()),
            held_by: None,
        });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Without the re-rankings (no vision barrier, a private space) and the rules that
    /// recommend in_person whatever the ranking (FLEX-1, THER-1), or a service user who cannot
    /// attend: exactly their highest-ranked option that remains suitable, else in_person.
    #[test]
    fn the_recommendation_is_their_highest_ranked_option_that_remains_suitable(
        mut plan in plan(),
        protocol in protocol_shape(),
        mut req in request(),
    ) {
        held_conversation(&mut plan);
        plan.barriers.retain(|b| b.kind != BarrierKind::Vision);
        if plan.resources.private_space == Some(PrivateSpace::No) {
            plan.resources.private_space = Some(PrivateSpace::Yes);
        }
        plan.personalisation.cannot_attend_in_person = false;
        req.first_appointment = false;
        let protocol = protocol.map(|(r, n, c)| protocol_at(r, n, c));
        let plan = given_plan(plan);
        let rec = recommend(&req, Some(&plan), protocol.as_ref(), today());
        let ranking = plan.preferences.ranking_for(req.appointment_type);
        let want = ranking
            .iter()
            .copied()
            .find(|&m| is_suitable(&rec, m))
            .unwrap_or(Modality::InPerson);
        prop_assert_eq!(rec.recommended_modality, want, "ranking {:?}", ranking);
    }

    /// With every re-ranking in play: when a remote option the service user ranked above
    /// in_person is suitable and no re-ranking lowers it (SAFE-3 lowers video and telephone,
    /// a vision barrier video and text), the recommendation is not in_person.
    #[test]
    fn never_in_person_while_a_remote_option_ranked_above_it_is_suitable(
        mut plan in plan(),
        protocol in protocol_shape(),
        mut req in request(),
    ) {
        held_conversation(&mut plan);
        if !plan.personalisation.cannot_attend_in_person {
            req.first_appointment = false; // THER-1
        }
        let protocol = protocol.map(|(r, n, c)| protocol_at(r, n, c));
        let plan = given_plan(plan);
        let rec = recommend(&req, Some(&plan), protocol.as_ref(), today());
        let ranking = plan.preferences.ranking_for(req.appointment_type);
        let no_private = plan.resources.private_space == Some(PrivateSpace::No);
        let vision = plan.barriers.iter().any(|b| b.kind == BarrierKind::Vision);
        let kept = ranked_above_in_person(ranking).into_iter().find(|&m| {
            is_suitable(&rec, m)
                && !(no_private && matches!(m, Modality::Video | Modality::Telephone))
                && !(vision && matches!(m, Modality::Video | Modality::Text))
        });
        if let Some(m) = kept {
            prop_assert_ne!(
                rec.recommended_modality,
                Modality::InPerson,
                "{} is suitable and ranked above in person in {:?}",
                m,
                ranking
            );
        }
    }

    /// F2F-1: a fallback referral exactly when the recommendation is in_person because nothing
    /// remote ranked above it remains suitable or because in_person was ranked first; without
    /// a plan, only when remote care was ruled out for safety.
    #[test]
    fn a_fallback_referral_exactly_when_in_person_is_a_fallback(
        plan in prop::option::of(plan()),
        protocol in protocol_shape(),
        req in request(),
    ) {
        let plan = plan.map(given_plan);
        let protocol = protocol.map(|(r, n, c)| protocol_at(r, n, c));
        let rec = recommend(&req, plan.as_ref(), protocol.as_ref(), today());
        let f = &rec.fallback_referral;
        match &plan {
            Some(plan) => {
                let ranking = plan.preferences.ranking_for(req.appointment_type);
                let in_person_first = ranking.first() == Some(&Modality::InPerson);
                let nothing_left = ranked_above_in_person(ranking)
                    .into_iter()
                    .all(|m| !is_suitable(&rec, m));
                let fallback = rec.recommended_modality == Modality::InPerson
                    && (in_person_first || nothing_left);
                prop_assert_eq!(f.suggested, fallback, "ranking {:?}", ranking);
            }
            None => {
                prop_assert_eq!(rec.recommended_modality, Modality::InPerson);
                let not_appropriate = Some(ReferralReason::NotAppropriate);
                prop_assert!(f.reason.is_none() || f.reason == not_appropriate);
            }
        }
    }
}
