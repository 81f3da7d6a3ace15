//! Step 3: rank what remains (FLEX-2; re-ranked by FLEX-5 vision, then SAFE-3; tie-broken by
//! THER-3, then FLEX-3), and the order of the options in the response.

use super::wording::{code, ordinal, prose};
use super::{Assessment, Assessments, Context};
use crate::domain::plan::{BarrierKind, ContactPattern, PlanInput, PrivateSpace};
use crate::domain::rules::RuleId;
use crate::domain::types::{AppointmentType, Modality};

/// FLEX-2: each option says where the service user ranks it.
pub(super) fn flex_2(ctx: &Context, a: &mut Assessment) {
    let Some(plan) = ctx.plan else { return };
    let ranking = if plan
        .preferences
        .by_appointment_type
        .contains_key(&ctx.req.appointment_type)
    {
        format!(
            "their ranking for {} appointments",
            prose(ctx.req.appointment_type)
        )
    } else {
        "their default ranking".to_string()
    };
    let text = match ctx.preference_position(a.modality) {
        Some(i) => format!("The service user's {} choice in {ranking}.", ordinal(i + 1)),
        None => format!("Not in {ranking}."),
    };
    a.note(RuleId::Flex2, text);
}

/// FLEX-3: remote participants, shorter and more frequent contacts, reluctance to attend.
pub(super) fn flex_3(ctx: &Context, plan: &PlanInput, opts: &mut Assessments) {
    let p = &plan.personalisation;
    let remote_participants: Vec<String> = p
        .participants
        .iter()
        .filter(|x| x.joins_remotely)
        .map(|x| code(x.role))
        .collect();
    if !remote_participants.is_empty() {
        for m in [Modality::Video, Modality::Telephone] {
            opts.get_mut(m).note(
                RuleId::Flex3,
                format!(
                    "Can include the participants joining remotely ({}).",
                    remote_participants.join(", ")
                ),
            );
        }
    }
    if raises_remote(ctx) {
        let why = match (
            p.contact_pattern == ContactPattern::ShorterMoreFrequent,
            p.reluctant_to_attend_in_person,
        ) {
            (true, true) => "Shorter, more frequent contacts and reluctance to attend in person",
            (true, false) => "Shorter, more frequent contacts",
            _ => "Reluctance to attend in person",
        };
        for a in opts.remote_mut() {
            a.note(
                RuleId::Flex3,
                format!("{why}: placed before in person among otherwise equal options."),
            );
        }
    }
    if p.reluctant_to_attend_in_person {
        opts.get_mut(Modality::InPerson).note(
            RuleId::Flex3,
            "The service user is reluctant to attend in person.",
        );
    }
    if p.cannot_attend_in_person {
        opts.get_mut(Modality::InPerson).note(
            RuleId::Flex3,
            "The plan says the service user cannot attend in person: still offered, but a \
             suitable remote option is preferred.",
        );
    }
}

fn raises_remote(ctx: &Context) -> bool {
    ctx.plan.is_some_and(|p| {
        p.personalisation.contact_pattern == ContactPattern::ShorterMoreFrequent
            || p.personalisation.reluctant_to_attend_in_person
    })
}

/// THER-3: fewer non-verbal cues by telephone and text matter most in an assessment.
pub(super) fn ther_3(ctx: &Context, opts: &mut Assessments) {
    if ctx.req.appointment_type != AppointmentType::Assessment {
        return;
    }
    for m in [Modality::Telephone, Modality::Text] {
        opts.get_mut(m).note(
            RuleId::Ther3,
            format!(
                "Assessment: {m} carries fewer non-verbal cues than video, so it comes after \
                 video among otherwise equal options."
            ),
        );
    }
}

fn ther_3_lowers(ctx: &Context, m: Modality) -> bool {
    ctx.req.appointment_type == AppointmentType::Assessment
        && matches!(m, Modality::Telephone | Modality::Text)
}

/// FLEX-5, vision: video and text rely on sight, so they rank below telephone.
pub(super) fn flex_5_vision(plan: &PlanInput, opts: &mut Assessments) {
    if has_vision_barrier(plan) {
        for m in [Modality::Video, Modality::Text] {
            opts.get_mut(m).note(
                RuleId::Flex5,
                format!("Vision barrier: {m} relies on sight, so it ranks below telephone."),
            );
        }
    }
}

fn has_vision_barrier(plan: &PlanInput) -> bool {
    plan.barriers.iter().any(|b| b.kind == BarrierKind::Vision)
}

fn vision_lowers(m: Modality) -> bool {
    matches!(m, Modality::Video | Modality::Text)
}

/// SAFE-3: without a private space, video and telephone may be overheard.
pub(super) fn safe_3(plan: &PlanInput, opts: &mut Assessments) {
    match plan.resources.private_space {
        Some(PrivateSpace::No) => {
            for m in Modality::ALL {
                let text = if safe_3_lowers(m) {
                    format!(
                        "No private space: a {m} session may be overheard, so it ranks below \
                         text and in person."
                    )
                } else {
                    format!(
                        "No private space: {m} keeps the conversation private, so it ranks \
                         above video and telephone."
                    )
                };
                opts.get_mut(m).note(RuleId::Safe3, text);
            }
        }
        Some(PrivateSpace::Sometimes) => {
            for m in [Modality::Video, Modality::Telephone] {
                opts.get_mut(m).note(
                    RuleId::Safe3,
                    "A private space is only sometimes available: check at the start of the \
                     session.",
                );
            }
        }
        Some(PrivateSpace::Yes) | None => {}
    }
}

fn no_private_space(ctx: &Context) -> bool {
    ctx.plan
        .is_some_and(|p| p.resources.private_space == Some(PrivateSpace::No))
}

fn safe_3_lowers(m: Modality) -> bool {
    matches!(m, Modality::Video | Modality::Telephone)
}

/// The offered modalities the service user ranked, in the guideline's order: their ranking
/// (FLEX-2), then video and text moved below telephone for a vision barrier (FLEX-5), then
/// text and in person before video and telephone without a private space (SAFE-3, applied last
/// so privacy has the last word).
pub(super) fn ranked_offered(ctx: &Context, opts: &Assessments) -> Vec<Modality> {
    let mut ranked: Vec<Modality> = Vec::new();
    for &m in ctx.ranking {
        if opts.get(m).suitable() && !ranked.contains(&m) {
            ranked.push(m);
        }
    }
    if ctx.plan.is_some_and(has_vision_barrier) {
        if let Some(t) = ranked.iter().position(|&m| m == Modality::Telephone) {
            // What was above telephone stays there unless vision lowers it to just below.
            let (lowered, kept): (Vec<Modality>, Vec<Modality>) =
                ranked[..t].iter().copied().partition(|&m| vision_lowers(m));
            let mut reordered = kept;
            reordered.push(Modality::Telephone);
            reordered.extend(lowered);
            reordered.extend_from_slice(&ranked[t + 1..]);
            ranked = reordered;
        }
    }
    if no_private_space(ctx) {
        // A stable sort keeps the service user's order within each group.
        ranked.sort_by_key(|&m| safe_3_lowers(m));
    }
    ranked
}

/// All four modalities: ranked offered ones by rank; then the other offered ones, ordered by
/// SAFE-3, FLEX-5 vision, THER-3 and FLEX-3 (in that precedence) and then `Modality::ALL`;
/// then those not offered, in `Modality::ALL` order.
pub(super) fn option_order(
    ctx: &Context,
    opts: &Assessments,
    ranked: &[Modality],
) -> Vec<Modality> {
    let unranked = |m: &Modality| !ranked.contains(m);
    let mut others: Vec<Modality> = Modality::ALL
        .into_iter()
        .filter(|m| unranked(m) && opts.get(*m).suitable())
        .collect();
    let telephone_among_others = others.contains(&Modality::Telephone);
    let vision = ctx.plan.is_some_and(has_vision_barrier);
    let private = no_private_space(ctx);
    others.sort_by_key(|&m| {
        (
            private && safe_3_lowers(m),
            vision && telephone_among_others && vision_lowers(m),
            ther_3_lowers(ctx, m),
            raises_remote(ctx) && m == Modality::InPerson,
            Assessments::index(m),
        )
    });
    let not_offered = Modality::ALL
        .into_iter()
        .filter(|m| unranked(m) && !opts.get(*m).suitable());
    ranked
        .iter()
        .copied()
        .chain(others)
        .chain(not_offered)
        .collect()
}
