//! Step 1: rule out what is not accessible (FLEX-1 without a plan, CONN-1, EXCL-1, FLEX-5).

use super::wording::code;
use super::{Assessments, RuledOut};
use crate::domain::plan::{
    BarrierKind, Connectivity, Device, DigitalSkills, ExclusionFactor, ExclusionLevel, PlanInput,
    Resources,
};
use crate::domain::rules::RuleId;
use crate::domain::types::Modality;

/// FLEX-1, without a plan: nothing about the service user's technology or preferences is known.
pub(super) fn flex_1_no_plan(opts: &mut Assessments) {
    for a in opts.remote_mut() {
        a.rule_out(
            RuleId::Flex1,
            RuledOut::Unestablished,
            "No telemental health plan yet: the service user's preferences, technology access \
             and skills have not been established.",
        );
    }
}

/// CONN-1: device, connection and skills for each remote modality.
pub(super) fn conn_1(plan: &PlanInput, opts: &mut Assessments) {
    let res = &plan.resources;
    let has = |pred: fn(Device) -> bool| res.devices.iter().any(|&d| pred(d));
    let skills_missing = res.digital_skills == DigitalSkills::None;

    let mut missing = Vec::new();
    if !has(Device::has_camera) {
        missing.push("no device with a camera (smartphone, tablet or computer)");
    }
    match res.connectivity {
        Connectivity::None => missing.push("no internet connection"),
        Connectivity::Limited => {
            missing.push("only a limited internet connection (telephone needs none)")
        }
        Connectivity::Reliable => {}
    }
    if skills_missing {
        missing.push("no digital skills to use it");
    }
    let video = opts.get_mut(Modality::Video);
    if missing.is_empty() {
        video.note(
            RuleId::Conn1,
            "A camera device, a reliable connection and the digital skills for video.",
        );
    } else {
        video.rule_out(
            RuleId::Conn1,
            RuledOut::Accessibility,
            format!("Video is not accessible: {}.", missing.join("; ")),
        );
    }

    let telephone = opts.get_mut(Modality::Telephone);
    if has(Device::can_call) {
        telephone.note(
            RuleId::Conn1,
            "A phone to take the call (a telephone call needs no internet connection).",
        );
    } else {
        telephone.rule_out(
            RuleId::Conn1,
            RuledOut::Accessibility,
            "Telephone is not accessible: no smartphone, mobile or landline.",
        );
    }

    let mut missing = Vec::new();
    if !res
        .devices
        .iter()
        .any(|&d| can_message_here(d, res.connectivity))
    {
        missing.push("no smartphone, mobile or connected computer to message on");
    }
    if skills_missing {
        missing.push("no digital skills to use secure messaging");
    }
    let text = opts.get_mut(Modality::Text);
    if missing.is_empty() {
        text.note(
            RuleId::Conn1,
            "A device for secure messaging and the digital skills to use it.",
        );
    } else {
        text.rule_out(
            RuleId::Conn1,
            RuledOut::Accessibility,
            format!("Text is not accessible: {}.", missing.join("; ")),
        );
    }
}

/// A phone messages over the mobile network; a computer needs an internet connection.
fn can_message_here(d: Device, connectivity: Connectivity) -> bool {
    d.can_message() && (d != Device::Computer || connectivity != Connectivity::None)
}

/// EXCL-1: an excluded service user cannot use a remote modality that needs what is missing.
pub(super) fn excl_1(plan: &PlanInput, opts: &mut Assessments) {
    let exclusion = plan.digital_exclusion();
    let res = &plan.resources;
    let names: Vec<String> = exclusion.factors.iter().map(|&f| code(f)).collect();
    let names = names.join(", ");
    match exclusion.level {
        ExclusionLevel::None => {}
        ExclusionLevel::AtRisk => {
            for m in [Modality::Video, Modality::Text] {
                opts.get_mut(m).note(
                    RuleId::Excl1,
                    format!("At risk of digital exclusion ({names})."),
                );
            }
        }
        ExclusionLevel::Excluded => {
            for a in opts.remote_mut() {
                let needed: Vec<String> = exclusion
                    .factors
                    .iter()
                    .filter(|&&f| needs(a.modality, f, res))
                    .map(|&f| code(f))
                    .collect();
                if needed.is_empty() {
                    a.note(
                        RuleId::Excl1,
                        format!(
                            "Digitally excluded ({names}), but {} does not need what is missing.",
                            a.modality
                        ),
                    );
                } else {
                    a.rule_out(
                        RuleId::Excl1,
                        RuledOut::Accessibility,
                        format!(
                            "Digitally excluded: {} needs what is missing ({}).",
                            a.modality,
                            needed.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

/// Whether a remote modality needs the resource an exclusion factor says is missing.
fn needs(m: Modality, factor: ExclusionFactor, res: &Resources) -> bool {
    let has_phone_for_text = res
        .devices
        .iter()
        .any(|&d| d.can_message() && d != Device::Computer);
    match (m, factor) {
        (_, ExclusionFactor::LimitedConnectivity) => false,
        (Modality::Video, _) => true,
        // A landline or mobile still carries a telephone call.
        (Modality::Telephone | Modality::InPerson, _) => false,
        (Modality::Text, ExclusionFactor::NoDigitalSkills) => true,
        // A mobile messages without a smartphone, tablet, computer or internet connection.
        (Modality::Text, ExclusionFactor::NoDevice | ExclusionFactor::NoConnectivity) => {
            !has_phone_for_text
        }
    }
}

/// FLEX-5: sensory barriers and discomfort. (The vision re-rank is in step 3.)
pub(super) fn flex_5(plan: &PlanInput, opts: &mut Assessments) {
    let has_barrier = |k: BarrierKind| plan.barriers.iter().any(|b| b.kind == k);
    if has_barrier(BarrierKind::Hearing) {
        opts.get_mut(Modality::Telephone).rule_out(
            RuleId::Flex5,
            RuledOut::Accessibility,
            "Hearing barrier: a telephone call is not accessible (video with captions, text \
             or in person instead).",
        );
        opts.get_mut(Modality::Video)
            .note(RuleId::Flex5, "Hearing barrier: use captions.");
    }
    if has_barrier(BarrierKind::Speech) {
        opts.get_mut(Modality::Telephone).rule_out(
            RuleId::Flex5,
            RuledOut::Accessibility,
            "Speech barrier: a telephone call relies on speech alone.",
        );
    }
    for kind in [
        BarrierKind::Cognitive,
        BarrierKind::Psychological,
        BarrierKind::Language,
        BarrierKind::Other,
    ] {
        if has_barrier(kind) {
            for a in opts.remote_mut() {
                a.note(
                    RuleId::Flex5,
                    format!(
                        "A {} barrier is recorded: ask how the service user experiences {} \
                         and adapt.",
                        code(kind),
                        a.modality
                    ),
                );
            }
        }
    }
    for &m in &plan.preferences.uncomfortable_with {
        if m.is_remote() {
            opts.get_mut(m).rule_out(
                RuleId::Flex5,
                RuledOut::Preference,
                format!("The service user is uncomfortable communicating by {m}."),
            );
        } else {
            opts.get_mut(m).note(
                RuleId::Flex5,
                "Recorded as uncomfortable, but face-to-face care is always offered (F2F-1).",
            );
        }
    }
}
