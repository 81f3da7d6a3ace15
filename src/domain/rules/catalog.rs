//! The guideline as a catalog of rules: the one place where each rule is named and described.
//!
//! Adding a rule means a `RuleId` variant (with its wire id) and one `Rule` entry in `CATALOG`,
//! in the same order; a test checks the two agree. The engine refers to rules only by `RuleId`.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

/// Stable rule ids, part of the public API (`GET /v1/guideline-rules`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum RuleId {
    #[serde(rename = "FLEX-1")]
    Flex1,
    #[serde(rename = "FLEX-2")]
    Flex2,
    #[serde(rename = "FLEX-3")]
    Flex3,
    #[serde(rename = "FLEX-4")]
    Flex4,
    #[serde(rename = "FLEX-5")]
    Flex5,
    #[serde(rename = "CONN-1")]
    Conn1,
    #[serde(rename = "CONN-2")]
    Conn2,
    #[serde(rename = "SAFE-1")]
    Safe1,
    #[serde(rename = "SAFE-2")]
    Safe2,
    #[serde(rename = "SAFE-3")]
    Safe3,
    #[serde(rename = "THER-1")]
    Ther1,
    #[serde(rename = "THER-2")]
    Ther2,
    #[serde(rename = "THER-3")]
    Ther3,
    #[serde(rename = "EXCL-1")]
    Excl1,
    #[serde(rename = "F2F-1")]
    F2f1,
}

impl RuleId {
    /// The wire form, e.g. `FLEX-1` (the same as the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::Flex1 => "FLEX-1",
            RuleId::Flex2 => "FLEX-2",
            RuleId::Flex3 => "FLEX-3",
            RuleId::Flex4 => "FLEX-4",
            RuleId::Flex5 => "FLEX-5",
            RuleId::Conn1 => "CONN-1",
            RuleId::Conn2 => "CONN-2",
            RuleId::Safe1 => "SAFE-1",
            RuleId::Safe2 => "SAFE-2",
            RuleId::Safe3 => "SAFE-3",
            RuleId::Ther1 => "THER-1",
            RuleId::Ther2 => "THER-2",
            RuleId::Ther3 => "THER-3",
            RuleId::Excl1 => "EXCL-1",
            RuleId::F2f1 => "F2F-1",
        }
    }

    /// This rule's catalog entry.
    pub fn rule(self) -> &'static Rule {
        // CATALOG is in enum order (checked by a test), so the discriminant is the index.
        &CATALOG[self as usize]
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The guideline's sections, as in `guideline-rules.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleSection {
    FlexibilityAndPersonalisation,
    ConnectingEffectively,
    SafetyAndPrivacy,
    TherapeuticQuality,
    DigitalExclusion,
    FaceToFace,
}

/// One guideline rule: what the guideline says and what the service does about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rule {
    pub id: RuleId,
    pub section: RuleSection,
    /// A short name for the rule.
    pub title: &'static str,
    /// What the clinicians' guideline says (Telemental Health Top Tips for Clinicians).
    pub guideline_text: &'static str,
    /// What the service does to apply it.
    pub service_behaviour: &'static str,
}

/// Every rule, in `RuleId` order.
pub fn catalog() -> &'static [Rule] {
    &CATALOG
}

use RuleSection::*;

static CATALOG: [Rule; 15] = [
    Rule {
        id: RuleId::Flex1,
        section: FlexibilityAndPersonalisation,
        title: "Initial conversation about telemental health",
        guideline_text: "An initial conversation about telemental health should be held at the \
            outset with service users to establish their preferences and resources, including \
            technology access and skills.",
        service_behaviour: "Without a plan, or with a plan that records no initial conversation, \
            a recommendation lists the prerequisite `initial_conversation` and recommends \
            `in_person`.",
    },
    Rule {
        id: RuleId::Flex2,
        section: FlexibilityAndPersonalisation,
        title: "Explore and prioritise preferences",
        guideline_text: "Service user preferences around telemental health should be explored \
            and prioritised.",
        service_behaviour: "Recommends the service user's highest-ranked modality that remains \
            suitable, in their ranking for the appointment type (else their default ranking): \
            a ruled-out choice moves the recommendation down their own ranking, never straight \
            to `in_person` while a remote option they ranked above `in_person` is suitable. A \
            ranked modality that is unsuitable is still listed, with the rule that rules it \
            out, and the recommendation says when it moved down.",
    },
    Rule {
        id: RuleId::Flex3,
        section: FlexibilityAndPersonalisation,
        title: "Personalise telemental health",
        guideline_text: "There are significant advantages to offering telemental health in \
            personalised ways: long-distance family members or specialists can be included, \
            shorter and more frequent contacts can be used, and some people are reluctant to \
            attend mental health services in person.",
        service_behaviour: "Remote participants are noted on video and telephone, which can host \
            them. Shorter, more frequent contacts or reluctance to attend in person place remote \
            options before in-person among otherwise equal options. When the plan says the \
            service user cannot attend in person, the best suitable remote option is \
            recommended instead of `in_person`.",
    },
    Rule {
        id: RuleId::Flex4,
        section: FlexibilityAndPersonalisation,
        title: "Revisit plans regularly",
        guideline_text: "Revisit collaborative telemental health plans regularly, as preferences \
            change or vary between different types of appointment.",
        service_behaviour: "Plans hold per-appointment-type rankings and a review date; a plan \
            whose review is overdue adds the prerequisite `plan_review`.",
    },
    Rule {
        id: RuleId::Flex5,
        section: FlexibilityAndPersonalisation,
        title: "Adapt to barriers and discomfort",
        guideline_text: "Service users may have sensory or psychological (invisible) barriers to \
            accessing telemental health, or simply feel uncomfortable communicating this way. \
            Ask how each service user experiences telemental health and adapt where needed, \
            e.g. offering telephone rather than video calls, or communicating via text.",
        service_behaviour: "A hearing or speech barrier makes telephone unsuitable; a vision \
            barrier ranks video and text below telephone; a modality the service user is \
            uncomfortable with is unsuitable for them.",
    },
    Rule {
        id: RuleId::Conn1,
        section: ConnectingEffectively,
        title: "Device, connection and confidence",
        guideline_text: "Telemental health, particularly video calls, requires an up-to-date \
            device and a good internet connection. Ensure service users have an appropriate \
            device, sufficient connection and the confidence and knowledge to take part, and \
            where possible work with platforms they are familiar with.",
        service_behaviour: "Video needs a camera device, reliable connectivity and at least basic \
            skills; telephone needs a phone (a landline will do); text needs a smartphone, \
            mobile or connected computer and at least basic skills. Familiar platforms are \
            suggested when video is suitable.",
    },
    Rule {
        id: RuleId::Conn2,
        section: ConnectingEffectively,
        title: "Back-up method of connecting",
        guideline_text: "Technological disruptions may occur during video-call sessions: agree \
            a back-up method of connecting ahead of time, e.g. a phone call.",
        service_behaviour: "Without an agreed back-up contact, a recommendation lists the \
            prerequisite `backup_contact`; a session check names the back-up method to use.",
    },
    Rule {
        id: RuleId::Safe1,
        section: SafetyAndPrivacy,
        title: "Location and in-person crisis response",
        guideline_text: "Managing risks and crisis situations may be more challenging. Identify \
            where the service user is located at the start of the session and consider how a \
            fast, in-person crisis response can be mobilised if needed for people at high risk.",
        service_behaviour: "Remote sessions get the action `confirm_location`. At high risk, \
            remote modalities are unsuitable unless the safety protocol holds an in-person \
            crisis response.",
    },
    Rule {
        id: RuleId::Safe2,
        section: SafetyAndPrivacy,
        title: "Call-back number and emergency protocol",
        guideline_text: "Establish a call-back number before the session in case of \
            disconnection when discussing distressing or sensitive topics, in line with your \
            co-developed emergency protocol.",
        service_behaviour: "Without a safety protocol holding a call-back number, a \
            recommendation lists the prerequisite `safety_protocol`, and remote modalities are \
            unsuitable at moderate or high risk. Remote sessions get the action \
            `confirm_call_back_number`.",
    },
    Rule {
        id: RuleId::Safe3,
        section: SafetyAndPrivacy,
        title: "Private space",
        guideline_text: "Deliver telemental health sessions in a private space. If this is not \
            possible, inform service users, explain who else is present in the room with you \
            and use headphones.",
        service_behaviour: "A session check from a non-private space requires disclosing who is \
            present and using headphones. A service user without a private space ranks text \
            and in-person above video and telephone.",
    },
    Rule {
        id: RuleId::Ther1,
        section: TherapeuticQuality,
        title: "First appointment in person",
        guideline_text: "Establishing a strong therapeutic relationship tends to be harder via \
            telemental health, especially by phone. Where possible, arrange for the first \
            appointment to be in person, not just when this is requested or preferred by \
            service users.",
        service_behaviour: "A first appointment recommends `in_person` unless the plan says the \
            service user cannot attend in person.",
    },
    Rule {
        id: RuleId::Ther2,
        section: TherapeuticQuality,
        title: "Time for rapport",
        guideline_text: "Take more time to informally chat and get to know service users when \
            delivering the initial telemental health appointment.",
        service_behaviour: "A first appointment that may be remote gets the action \
            `allow_rapport_time` (a longer slot).",
    },
    Rule {
        id: RuleId::Ther3,
        section: TherapeuticQuality,
        title: "Reduced non-verbal cues",
        guideline_text: "Reduced non-verbal cues may impact on the therapeutic relationship.",
        service_behaviour: "For assessments, telephone and text come after video among \
            otherwise equal options, and say why.",
    },
    Rule {
        id: RuleId::Excl1,
        section: DigitalExclusion,
        title: "Digital exclusion",
        guideline_text: "Individuals who have no or limited access to, and/or the capacity to \
            engage with, digital resources are digitally excluded. They are likely to also be \
            experiencing other disadvantages and inequalities, and telemental health may make \
            these inequalities worse.",
        service_behaviour: "Each plan carries a computed digital exclusion level and its \
            factors. Excluded service users find every remote modality that needs the missing \
            resource unsuitable (a landline still carries a telephone call).",
    },
    Rule {
        id: RuleId::F2f1,
        section: FaceToFace,
        title: "Face-to-face, always",
        guideline_text: "If telemental health is not preferred, appropriate or accessible for \
            any reason, face-to-face appointments should always be offered, without delay.",
        service_behaviour: "`in_person` is always suitable and offered. When the recommendation \
            is `in_person` because nothing remote that the service user ranked above it remains \
            suitable, or because they ranked `in_person` first, a fallback referral is \
            suggested: `not_appropriate` when a remote option was ruled out for safety, else \
            `not_accessible` when one they ranked above `in_person` was ruled out for access, \
            else `not_preferred`. Without a plan, only `not_appropriate` is known. After \
            repeated disconnections, the advice offers `in_person` and only those remote \
            alternatives that the rules leave suitable for the service user.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_holds_every_rule_once_in_id_order() {
        assert_eq!(catalog().len(), 15);
        for (i, rule) in catalog().iter().enumerate() {
            assert_eq!(rule.id as usize, i, "{} is out of order", rule.id);
            assert_eq!(rule.id.rule(), rule);
            assert!(!rule.title.is_empty() && !rule.guideline_text.is_empty());
            assert!(!rule.service_behaviour.is_empty());
        }
    }

    #[test]
    fn rule_ids_serialise_as_their_wire_form() {
        for rule in catalog() {
            let json = serde_json::to_value(rule.id).unwrap();
            assert_eq!(json, rule.id.as_str());
            let back: RuleId = serde_json::from_value(json).unwrap();
            assert_eq!(back, rule.id);
        }
        let schema = serde_json::to_value(<Rule as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["properties"]["title"]["type"], "string");
        let json = serde_json::to_value(RuleId::F2f1.rule()).unwrap();
        assert_eq!(json["id"], "F2F-1");
        assert_eq!(json["section"], "face_to_face");
    }
}
