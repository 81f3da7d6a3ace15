//! Step 4: the recommendation, falling back to face-to-face (FLEX-1, THER-1, F2F-1).

use super::{Assessment, Assessments, Context};
use crate::domain::rules::{FallbackReason, RuleId};
use crate::domain::types::Modality;

/// Picks the recommended modality and, when it falls back to face-to-face, the reason.
pub(super) fn choose(
    ctx: &Context,
    opts: &mut Assessments,
    order: &[Modality],
) -> (Modality, Option<FallbackReason>) {
    let fallback = f2f_1_fallback(ctx, opts);
    let in_person = Modality::InPerson;

    // FLEX-1: without an initial conversation, meet in person first.
    let no_conversation = ctx.plan.is_none_or(|p| p.initial_conversation.is_none());
    if no_conversation {
        opts.get_mut(in_person).note(
            RuleId::Flex1,
            "Recommended until the initial conversation about telemental health is held.",
        );
        return (in_person, fallback.map(|f| f.note(opts)));
    }

    if let Some(f) = fallback {
        let first_remote = order
            .iter()
            .copied()
            .find(|&m| m.is_remote() && opts.get(m).suitable());
        if let (Trigger::FirstChoiceRuledOut(first), true, Some(m)) =
            (f.trigger, ctx.cannot_attend_in_person(), first_remote)
        {
            opts.get_mut(m).note(
                RuleId::F2f1,
                format!(
                    "The service user's first choice ({first}) is ruled out and they cannot \
                     attend in person: the best suitable remote option is recommended."
                ),
            );
            return (m, None);
        }
        return (in_person, Some(f.note(opts)));
    }

    // THER-1: a first appointment in person, where possible (a clinical preference, not a
    // failure of remote care: no fallback referral).
    if ctx.req.first_appointment && !ctx.cannot_attend_in_person() {
        opts.get_mut(in_person).note(
            RuleId::Ther1,
            "First appointment: in person where possible, to build the therapeutic \
             relationship.",
        );
        return (in_person, None);
    }

    // FLEX-2: the highest-ranked offered option (in_person is always offered, so one exists).
    (order.first().copied().unwrap_or(in_person), None)
}

#[derive(Clone, Copy)]
enum Trigger {
    NothingRemoteLeft,
    FirstChoiceRuledOut(Modality),
}

#[derive(Clone, Copy)]
struct Fallback {
    trigger: Trigger,
    reason: FallbackReason,
}

impl Fallback {
    /// Says on `in_person` why it is recommended instead, and returns the reason.
    fn note(self, opts: &mut Assessments) -> FallbackReason {
        let why = match self.reason {
            FallbackReason::NotPreferred => "not preferred",
            FallbackReason::NotAppropriate => "not appropriate",
            FallbackReason::NotAccessible => "not accessible",
        };
        let what = match self.trigger {
            Trigger::NothingRemoteLeft => "Telemental health is".to_string(),
            Trigger::FirstChoiceRuledOut(m) => format!("The service user's first choice ({m}) is"),
        };
        opts.get_mut(Modality::InPerson).note(
            RuleId::F2f1,
            format!(
                "{what} {why}: face-to-face care without delay; a fallback referral is suggested."
            ),
        );
        self.reason
    }
}

/// F2F-1: when nothing remote remains, or the service user's first choice was ruled out, the
/// most binding reason among what was ruled out (`RuledOut` order).
fn f2f_1_fallback(ctx: &Context, opts: &Assessments) -> Option<Fallback> {
    let (trigger, ruled_out) = if opts.remote().all(|a| !a.suitable()) {
        let worst = opts.remote().filter_map(Assessment::ruled_out).max();
        (Trigger::NothingRemoteLeft, worst)
    } else {
        let &first = ctx.ranking.first()?;
        (
            Trigger::FirstChoiceRuledOut(first),
            opts.get(first).ruled_out(),
        )
    };
    let reason = ruled_out?.fallback_reason()?;
    Some(Fallback { trigger, reason })
}
