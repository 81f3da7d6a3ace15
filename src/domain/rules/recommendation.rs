//! What a recommendation is asked for and what it answers (`POST /v1/recommendations`).
//! Plan and protocol versions are added by the HTTP layer.

use super::codes::{Prerequisite, Reason, SessionAction};
use crate::domain::plan::DigitalExclusion;
use crate::domain::referral::ReferralReason;
use crate::domain::types::{AppointmentType, Modality, RiskLevel, SubjectRef};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecommendationRequest {
    pub subject: SubjectRef,
    pub appointment_type: AppointmentType,
    /// The first appointment with this service user (THER-1, THER-2).
    #[serde(default)]
    pub first_appointment: bool,
    /// Distressing or sensitive topics are planned (SAFE-2).
    #[serde(default)]
    pub sensitive_topics: bool,
    /// The caller's current risk assessment. When it is lower than the safety protocol's, the
    /// protocol's applies: a request never makes remote care more suitable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_level: Option<RiskLevel>,
}

/// The modality to use, every alternative with the rules behind it, and what to put in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Recommendation {
    /// Always one of the offered options.
    pub recommended_modality: Modality,
    /// One entry per modality, all four: the service user's ranked options by rank, then
    /// other offered options, then those not offered.
    pub options: Vec<ModalityOption>,
    pub prerequisites: Vec<Prerequisite>,
    /// Listed whenever a remote option is offered, whatever is recommended.
    pub session_actions: Vec<SessionAction>,
    /// Video platforms the service user knows; empty unless video is suitable (CONN-1).
    pub suggested_platforms: Vec<String>,
    pub fallback_referral: FallbackSuggestion,
    /// The plan's digital exclusion (EXCL-1); null without a plan.
    pub digital_exclusion: Option<DigitalExclusion>,
    /// The risk level the rules were applied at: the higher of the request's and the safety
    /// protocol's; null when neither is known.
    pub effective_risk_level: Option<RiskLevel>,
}

/// One modality, whether it suits the service user, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ModalityOption {
    pub modality: Modality,
    /// False when a rule rules it out; its reasons then name that rule. `in_person` is always
    /// suitable (F2F-1).
    pub suitable: bool,
    /// Suitable options are offered.
    pub offered: bool,
    /// Position among the offered modalities the service user ranked, after the guideline's
    /// re-ranking (1 = first); null when not ranked or not offered.
    pub rank: Option<u32>,
    /// At least one, each naming its rule.
    pub reasons: Vec<Reason>,
}

/// Whether to refer for face-to-face care (F2F-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FallbackSuggestion {
    pub suggested: bool,
    /// Set exactly when `suggested` is.
    pub reason: Option<ReferralReason>,
}
