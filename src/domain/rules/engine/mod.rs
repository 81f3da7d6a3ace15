//! The recommendation engine: the guideline's rules applied in the order of "How rules combine".
//!
//! 1. accessibility rules out remote options (CONN-1, EXCL-1, FLEX-5);
//! 2. appropriateness rules them out for the risk level (SAFE-1, SAFE-2);
//! 3. what remains is ranked (FLEX-2, re-ranked by FLEX-5 vision and SAFE-3, tie-broken by
//!    THER-3 and FLEX-3);
//! 4. the recommendation: the highest-ranked option that remains suitable, face-to-face with a
//!    fallback referral when nothing remote ranked above it does (FLEX-1, FLEX-2, THER-1,
//!    F2F-1);
//! 5. prerequisites and session actions (FLEX-1, FLEX-4, CONN-2, SAFE-1, SAFE-2, THER-2).
//!
//! Each step is a module and each rule one function named after it (`access::conn_1`). Rules
//! only add findings to the options; an option is suitable while no finding rules it out, and
//! `in_person` is never ruled out (F2F-1).

mod access;
mod fallback;
mod ranking;
mod readiness;
mod safety;
mod wording;

use super::catalog::RuleId;
use super::codes::Reason;
use super::recommendation::{
    FallbackSuggestion, ModalityOption, Recommendation, RecommendationRequest,
};
use crate::domain::plan::{Plan, PlanInput};
use crate::domain::protocol::{SafetyProtocol, SafetyProtocolInput};
use crate::domain::referral::ReferralReason;
use crate::domain::types::{Modality, RiskLevel};
use chrono::NaiveDate;

/// Recommends a modality for one appointment, explaining every option by the rules behind it.
/// Pure and deterministic: the same inputs always give the same output. The plan and the
/// protocol are checked ones (by `check`, or when they were recorded).
pub fn recommend(
    req: &RecommendationRequest,
    plan: Option<&Plan>,
    protocol: Option<&SafetyProtocol>,
    today: NaiveDate,
) -> Recommendation {
    let (plan, protocol) = (
        plan.map(Plan::content),
        protocol.map(SafetyProtocol::content),
    );
    let ctx = Context::new(req, plan, protocol);
    let mut opts = Assessments::new(&ctx);
    // 1. Rule out what is not accessible.
    rule_out_inaccessible(plan, &mut opts);
    // 2. Rule out what is not appropriate.
    safety::safe_1(&ctx, &mut opts);
    safety::safe_2(&ctx, &mut opts);
    // 3. Rank what remains.
    if let Some(plan) = plan {
        ranking::flex_3(&ctx, plan, &mut opts);
        ranking::ther_3(&ctx, &mut opts);
        ranking::flex_5_vision(plan, &mut opts);
        ranking::safe_3(plan, &mut opts);
    }
    let ranked = ranking::ranked_offered(&ctx, &opts);
    let order = ranking::option_order(&ctx, &opts, &ranked);
    // 4. Recommend: their highest-ranked option that remains suitable.
    let (recommended_modality, fallback) = fallback::choose(&ctx, &mut opts, &ranked, &order);
    // 5. What to put in place, whatever is recommended.
    let prerequisites = readiness::prerequisites(&ctx, today);
    let session_actions = readiness::session_actions(&ctx, &opts);

    let suggested_platforms = match plan {
        Some(plan) if opts.get(Modality::Video).suitable() => plan
            .resources
            .familiar_platforms
            .iter()
            .map(|p| p.to_string())
            .collect(),
        _ => Vec::new(),
    };
    let options = order
        .iter()
        .map(|&m| {
            let a = opts.get(m);
            let rank = ranked
                .iter()
                .position(|&r| r == m)
                .and_then(|i| u32::try_from(i + 1).ok());
            ModalityOption {
                modality: m,
                suitable: a.suitable(),
                offered: a.suitable(),
                rank,
                reasons: a.findings.iter().map(|f| f.reason.clone()).collect(),
            }
        })
        .collect();
    Recommendation {
        recommended_modality,
        options,
        prerequisites,
        session_actions,
        suggested_platforms,
        fallback_referral: FallbackSuggestion {
            suggested: fallback.is_some(),
            reason: fallback,
        },
        digital_exclusion: plan.map(PlanInput::digital_exclusion),
        effective_risk_level: ctx.risk,
    }
}

/// Step 1: what is not accessible to the service user, or not wanted by them.
fn rule_out_inaccessible(plan: Option<&PlanInput>, opts: &mut Assessments) {
    match plan {
        None => access::flex_1_no_plan(opts),
        Some(plan) => {
            access::conn_1(plan, opts);
            access::excl_1(plan, opts);
            access::flex_5(plan, opts);
        }
    }
}

/// Which modalities the rules leave open to one service user, and why the others are closed:
/// for advice given outside a recommendation, such as the alternatives to offer after a
/// disconnection or whether an agreed back-up route is one the service user can use.
pub struct Suitability(Assessments);

impl Suitability {
    /// Whether no rule rules `m` out. `in_person` always is suitable (F2F-1).
    pub fn suitable(&self, m: Modality) -> bool {
        self.0.get(m).suitable()
    }

    /// The reasons that rule `m` out, each naming its rule, in the order the rules apply;
    /// empty when it is suitable.
    pub fn reasons_against(&self, m: Modality) -> Vec<Reason> {
        self.0
            .get(m)
            .findings
            .iter()
            .filter(|f| f.ruled_out.is_some())
            .map(|f| f.reason.clone())
            .collect()
    }
}

/// Steps 1 and 2 of "How rules combine" alone: what is accessible to the service user and
/// appropriate at the risk level (the higher of the request's and the protocol's).
pub fn suitability(
    req: &RecommendationRequest,
    plan: Option<&Plan>,
    protocol: Option<&SafetyProtocol>,
) -> Suitability {
    let (plan, protocol) = (
        plan.map(Plan::content),
        protocol.map(SafetyProtocol::content),
    );
    let ctx = Context::new(req, plan, protocol);
    let mut opts = Assessments::new(&ctx);
    rule_out_inaccessible(plan, &mut opts);
    safety::safe_1(&ctx, &mut opts);
    safety::safe_2(&ctx, &mut opts);
    Suitability(opts)
}

/// Step 1 alone: what the service user can use and is comfortable with (CONN-1, EXCL-1,
/// FLEX-5), whatever the appointment and the risk level.
pub fn accessibility(plan: &Plan) -> Suitability {
    let mut opts = Assessments(Modality::ALL.map(|modality| Assessment {
        modality,
        findings: Vec::new(),
    }));
    rule_out_inaccessible(Some(plan.content()), &mut opts);
    Suitability(opts)
}

// ---------------------------------------------------------------------------------------------
// The inputs every rule reads, and the findings they write.

struct Context<'a> {
    req: &'a RecommendationRequest,
    plan: Option<&'a PlanInput>,
    protocol: Option<&'a SafetyProtocolInput>,
    /// The service user's ranking for this appointment type (FLEX-2); empty without a plan.
    ranking: &'a [Modality],
    /// The higher of the request's and the protocol's risk level.
    risk: Option<RiskLevel>,
    /// A safety protocol with at least one call-back number exists (SAFE-2).
    has_call_back: bool,
}

impl<'a> Context<'a> {
    fn new(
        req: &'a RecommendationRequest,
        plan: Option<&'a PlanInput>,
        protocol: Option<&'a SafetyProtocolInput>,
    ) -> Self {
        let ranking = plan.map_or(&[][..], |p| p.preferences.ranking_for(req.appointment_type));
        let risk = req.risk_level.max(protocol.map(|p| p.risk_level));
        Context {
            req,
            plan,
            protocol,
            ranking,
            risk,
            has_call_back: protocol.is_some_and(|p| !p.call_back_numbers.is_empty()),
        }
    }

    fn preference_position(&self, m: Modality) -> Option<usize> {
        self.ranking.iter().position(|&r| r == m)
    }

    fn cannot_attend_in_person(&self) -> bool {
        self.plan
            .is_some_and(|p| p.personalisation.cannot_attend_in_person)
    }
}

/// Why a rule ruled an option out, in increasing precedence for the fallback reason: the most
/// binding wins (safety holds whatever the resources; a barrier holds whatever the preference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RuledOut {
    /// No plan yet (FLEX-1): accessibility is unknown, not failed, so no fallback reason.
    Unestablished,
    Preference,
    Accessibility,
    Appropriateness,
}

impl RuledOut {
    fn fallback_reason(self) -> Option<ReferralReason> {
        match self {
            RuledOut::Unestablished => None,
            RuledOut::Preference => Some(ReferralReason::NotPreferred),
            RuledOut::Accessibility => Some(ReferralReason::NotAccessible),
            RuledOut::Appropriateness => Some(ReferralReason::NotAppropriate),
        }
    }
}

struct Finding {
    reason: Reason,
    ruled_out: Option<RuledOut>,
}

struct Assessment {
    modality: Modality,
    findings: Vec<Finding>,
}

impl Assessment {
    fn suitable(&self) -> bool {
        self.findings.iter().all(|f| f.ruled_out.is_none())
    }

    /// The most binding reason it was ruled out for, if it was.
    fn ruled_out(&self) -> Option<RuledOut> {
        self.findings.iter().filter_map(|f| f.ruled_out).max()
    }

    fn note(&mut self, rule: RuleId, text: impl Into<String>) {
        self.findings.push(Finding {
            reason: Reason::new(rule, text),
            ruled_out: None,
        });
    }

    fn rule_out(&mut self, rule: RuleId, why: RuledOut, text: impl Into<String>) {
        // F2F-1: face-to-face is never ruled out; rules only call this for remote modalities.
        debug_assert!(self.modality.is_remote());
        if self.modality.is_remote() {
            self.findings.push(Finding {
                reason: Reason::new(rule, text),
                ruled_out: Some(why),
            });
        }
    }
}

/// One assessment per modality, indexed in `Modality::ALL` order.
struct Assessments([Assessment; 4]);

impl Assessments {
    /// Starts every option with the service user's preference for it (FLEX-2) and, for
    /// `in_person`, F2F-1.
    fn new(ctx: &Context) -> Self {
        let assessments = Modality::ALL.map(|m| {
            let mut a = Assessment {
                modality: m,
                findings: Vec::new(),
            };
            ranking::flex_2(ctx, &mut a);
            if m == Modality::InPerson {
                a.note(RuleId::F2f1, "Face-to-face care is always offered.");
            }
            a
        });
        Assessments(assessments)
    }

    fn index(m: Modality) -> usize {
        match m {
            Modality::InPerson => 0,
            Modality::Video => 1,
            Modality::Telephone => 2,
            Modality::Text => 3,
        }
    }

    fn get(&self, m: Modality) -> &Assessment {
        &self.0[Self::index(m)]
    }

    fn get_mut(&mut self, m: Modality) -> &mut Assessment {
        &mut self.0[Self::index(m)]
    }

    fn remote(&self) -> impl Iterator<Item = &Assessment> {
        self.0.iter().filter(|a| a.modality.is_remote())
    }

    fn remote_mut(&mut self) -> impl Iterator<Item = &mut Assessment> {
        self.0.iter_mut().filter(|a| a.modality.is_remote())
    }
}
