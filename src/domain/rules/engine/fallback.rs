//! Step 4: the recommendation (FLEX-1, FLEX-2, FLEX-3, THER-1, F2F-1).
//!
//! The recommendation is the service user's highest-ranked option that remains suitable, in
//! the order step 3 left them: a ruled-out choice moves it down their own ranking, never
//! straight to `in_person` while a remote option they ranked above `in_person` is still
//! suitable. A fallback referral (F2F-1) is suggested when it is `in_person` because nothing
//! remote that they ranked above it remains suitable, or because they ranked `in_person` first.

use super::{Assessment, Assessments, Context, RuledOut};
use crate::domain::rules::{ReferralReason, RuleId};
use crate::domain::types::Modality;

const IN_PERSON: Modality = Modality::InPerson;

/// Picks the recommended modality and, when a fallback referral is suggested, its reason.
/// `ranked` is the service user's ranking of what remains suitable, after the guideline's
/// re-ranking; `order` is every option in response order.
pub(super) fn choose(
    ctx: &Context,
    opts: &mut Assessments,
    ranked: &[Modality],
    order: &[Modality],
) -> (Modality, Option<ReferralReason>) {
    // FLEX-1 without a plan: access and preferences are unknown, not failed; only safety can
    // already say that remote care is not appropriate.
    let Some(plan) = ctx.plan else {
        flex_1(opts);
        let fallback = opts
            .remote()
            .any(|a| a.ruled_out() == Some(RuledOut::Appropriateness))
            .then_some(Fallback {
                trigger: Trigger::NoPlan,
                reason: ReferralReason::NotAppropriate,
            });
        return (IN_PERSON, fallback.map(|f| f.note(ctx, opts)));
    };

    // FLEX-2: the highest-ranked option that remains suitable (in_person when none does).
    let preferred = ranked.first().copied().unwrap_or(IN_PERSON);
    let fallback = if preferred == IN_PERSON {
        f2f_1_fallback(ctx, opts)
    } else {
        None
    };

    // FLEX-1: without an initial conversation, meet in person first; a fallback referral
    // still goes with it when remote care would not have been recommended anyway.
    if plan.initial_conversation.is_none() {
        flex_1(opts);
        return (IN_PERSON, fallback.map(|f| f.note(ctx, opts)));
    }

    let can_attend = !ctx.cannot_attend_in_person();
    if preferred == IN_PERSON {
        // FLEX-3: they cannot attend in person, so the best remote option that remains
        // suitable, ranked or not, goes first.
        if !can_attend {
            let best_remote = order
                .iter()
                .copied()
                .find(|&m| m.is_remote() && opts.get(m).suitable());
            if let Some(m) = best_remote {
                opts.get_mut(m).note(
                    RuleId::Flex3,
                    "Recommended: the service user cannot attend in person, and this is the \
                     best remote option that remains suitable.",
                );
                return (m, None);
            }
        }
        if ctx.req.first_appointment && can_attend {
            ther_1(opts);
        }
        if let Some(f) = fallback {
            return (IN_PERSON, Some(f.note(ctx, opts)));
        }
        // Only the guideline's re-ranking (FLEX-5 vision, SAFE-3) put in_person first: a
        // remote option they ranked above it remains suitable, so remote care has not failed.
        if let Some(m) = remote_ranked_above_in_person(ctx)
            .into_iter()
            .find(|&m| opts.get(m).suitable())
        {
            opts.get_mut(IN_PERSON).note(
                RuleId::Flex2,
                format!(
                    "Recommended: first of the service user's choices once the guideline has \
                     re-ranked them; {m}, which they ranked above in person, remains suitable, \
                     so no fallback referral is suggested."
                ),
            );
        }
        return (IN_PERSON, None);
    }

    // THER-1: a first appointment in person, where possible (a clinical preference, not a
    // failure of remote care: no fallback referral).
    if ctx.req.first_appointment && can_attend {
        ther_1(opts);
        return (IN_PERSON, None);
    }

    // A ruled-out first choice: say on the recommendation that it moved down their ranking.
    if let Some(&first) = ctx.ranking.first() {
        if first != preferred && !opts.get(first).suitable() {
            opts.get_mut(preferred).note(
                RuleId::Flex2,
                format!(
                    "Recommended: the service user's first choice ({first}) is ruled out, so \
                     their next choice that remains suitable."
                ),
            );
        }
    }
    (preferred, None)
}

fn flex_1(opts: &mut Assessments) {
    opts.get_mut(IN_PERSON).note(
        RuleId::Flex1,
        "Recommended until the initial conversation about telemental health is held.",
    );
}

fn ther_1(opts: &mut Assessments) {
    opts.get_mut(IN_PERSON).note(
        RuleId::Ther1,
        "First appointment: in person where possible, to build the therapeutic relationship.",
    );
}

/// The remote modalities the service user ranked above `in_person`: all they ranked when
/// they did not rank `in_person` at all.
fn remote_ranked_above_in_person(ctx: &Context) -> Vec<Modality> {
    ctx.ranking
        .iter()
        .copied()
        .take_while(|&m| m != IN_PERSON)
        .collect()
}

#[derive(Clone, Copy)]
enum Trigger {
    NoPlan,
    InPersonFirst,
    NothingRankedRemains { in_person_ranked: bool },
}

#[derive(Clone, Copy)]
struct Fallback {
    trigger: Trigger,
    reason: ReferralReason,
}

impl Fallback {
    /// Says on `in_person` why it is recommended, and what remote option, unranked, remains
    /// for the clinician to raise; returns the reason.
    fn note(self, ctx: &Context, opts: &mut Assessments) -> ReferralReason {
        let why = match self.reason {
            ReferralReason::NotPreferred => "not preferred",
            ReferralReason::NotAppropriate => "not appropriate",
            ReferralReason::NotAccessible => "not accessible",
            // The engine suggests only the three reasons above (F2F-1).
            ReferralReason::TechnologyFailure
            | ReferralReason::ClinicalRisk
            | ReferralReason::FirstAppointment => "not suitable",
        };
        let what = match self.trigger {
            Trigger::NoPlan => "There is no plan yet",
            Trigger::InPersonFirst => "The service user ranks in person first",
            Trigger::NothingRankedRemains {
                in_person_ranked: true,
            } => "Nothing remote that the service user ranked above in person remains suitable",
            Trigger::NothingRankedRemains {
                in_person_ranked: false,
            } => "None of the modalities the service user ranked remains suitable",
        };
        let unranked: Vec<String> = opts
            .remote()
            .filter(|a| a.suitable() && !ctx.ranking.contains(&a.modality))
            .map(|a| a.modality.to_string())
            .collect();
        let unranked = match (self.trigger, unranked.as_slice()) {
            (Trigger::NoPlan, _) | (_, []) => String::new(),
            (_, [m]) => format!(
                " {m}, which they did not rank, remains suitable: ask whether they would use it."
            ),
            (_, ms) => format!(
                " {}, which they did not rank, remain suitable: ask whether they would use one.",
                ms.join(" and ")
            ),
        };
        opts.get_mut(IN_PERSON).note(
            RuleId::F2f1,
            format!(
                "{what}: face-to-face care without delay, and a fallback referral is suggested \
                 (telemental health {why}).{unranked}"
            ),
        );
        self.reason
    }
}

/// F2F-1, with a plan, once step 4 has come to `in_person`: whether that is a fallback, and
/// why. `not_appropriate` when any remote option was ruled out for safety (SAFE-1 and SAFE-2
/// hold whatever the service user ranked), else the most binding reason among the remote
/// options they ranked above `in_person`, else `not_preferred`.
fn f2f_1_fallback(ctx: &Context, opts: &Assessments) -> Option<Fallback> {
    let above = remote_ranked_above_in_person(ctx);
    let trigger = if ctx.ranking.first() == Some(&IN_PERSON) {
        Trigger::InPersonFirst
    } else if above.iter().all(|&m| !opts.get(m).suitable()) {
        Trigger::NothingRankedRemains {
            in_person_ranked: ctx.ranking.contains(&IN_PERSON),
        }
    } else {
        // The guideline's re-ranking, not a failure of remote care, put in_person first.
        return None;
    };
    let worst = opts
        .remote()
        .filter_map(|a: &Assessment| {
            a.ruled_out()
                .filter(|&r| r == RuledOut::Appropriateness || above.contains(&a.modality))
        })
        .max();
    let reason = worst
        .and_then(RuledOut::fallback_reason)
        .unwrap_or(ReferralReason::NotPreferred);
    Some(Fallback { trigger, reason })
}
