//! Codes and small items shared by every decision that applies the guideline: recommendations,
//! session checks and fallback referrals.

use super::catalog::RuleId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why a decision went the way it did, naming the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Reason {
    pub rule: RuleId,
    pub text: String,
}

impl Reason {
    pub fn new(rule: RuleId, text: impl Into<String>) -> Self {
        Reason {
            rule,
            text: text.into(),
        }
    }
}

/// Something to put in place before remote care (FLEX-1, FLEX-4, CONN-2, SAFE-2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PrerequisiteCode {
    /// FLEX-1: hold the initial conversation about telemental health.
    InitialConversation,
    /// FLEX-4: the plan's review is overdue.
    PlanReview,
    /// CONN-2: agree a back-up way of connecting.
    BackupContact,
    /// SAFE-2: co-develop a safety protocol with a call-back number.
    SafetyProtocol,
}

impl PrerequisiteCode {
    /// The rule that asks for it.
    pub fn rule(self) -> RuleId {
        match self {
            PrerequisiteCode::InitialConversation => RuleId::Flex1,
            PrerequisiteCode::PlanReview => RuleId::Flex4,
            PrerequisiteCode::BackupContact => RuleId::Conn2,
            PrerequisiteCode::SafetyProtocol => RuleId::Safe2,
        }
    }
}

/// Something to do before, at the start of or during a remote session: one vocabulary for
/// recommendations (`session_actions`) and session checks (`actions`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ActionCode {
    /// Ask the service user where they are now (SAFE-1).
    ConfirmLocation,
    /// Confirm the number to call the service user back on after a disconnection (SAFE-2).
    ConfirmCallBackNumber,
    /// Allow extra time to chat informally and build rapport in the first remote appointment
    /// (THER-2).
    AllowRapportTime,
    /// The clinician is not in a private space: tell the service user who else is present
    /// (SAFE-3).
    DiscloseOthersPresent,
    /// The clinician is not in a private space: use headphones (SAFE-3).
    UseHeadphones,
    /// Check that the service user can talk freely where they are (SAFE-3).
    ConfirmServiceUserPrivacy,
    /// The service user is not at a usual location: identify how a fast in-person crisis
    /// response is mobilised where they are (SAFE-1).
    IdentifyLocalCrisisResponse,
    /// Agree (or update) a safety protocol with the service user before a remote session
    /// (SAFE-2; SAFE-1 when risk is high and it has no in-person crisis response).
    AgreeSafetyProtocol,
    /// Agree a back-up way of reconnecting and record it in the plan (CONN-2).
    AgreeBackupContact,
    /// Offer a face-to-face appointment, without delay (F2F-1).
    OfferFaceToFace,
    /// After a disconnection: reconnect by the agreed back-up route (CONN-2).
    Reconnect,
    /// After a disconnection, if the call-back fails: follow the safety protocol's emergency
    /// steps (SAFE-2).
    FollowEmergencyProtocol,
    /// After repeated disconnections: offer an alternative the service user can use (F2F-1).
    OfferAlternative,
}

impl ActionCode {
    /// The rule that usually asks for it (a session check may name a more specific one).
    pub fn rule(self) -> RuleId {
        use ActionCode::*;
        match self {
            ConfirmLocation | IdentifyLocalCrisisResponse => RuleId::Safe1,
            ConfirmCallBackNumber | AgreeSafetyProtocol | FollowEmergencyProtocol => RuleId::Safe2,
            DiscloseOthersPresent | UseHeadphones | ConfirmServiceUserPrivacy => RuleId::Safe3,
            AllowRapportTime => RuleId::Ther2,
            AgreeBackupContact | Reconnect => RuleId::Conn2,
            OfferFaceToFace | OfferAlternative => RuleId::F2f1,
        }
    }
}

/// A prerequisite with the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Prerequisite {
    pub code: PrerequisiteCode,
    pub rule: RuleId,
    pub text: String,
}

impl Prerequisite {
    pub fn new(code: PrerequisiteCode, text: impl Into<String>) -> Self {
        Prerequisite {
            code,
            rule: code.rule(),
            text: text.into(),
        }
    }
}

/// A session action with the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SessionAction {
    pub code: ActionCode,
    pub rule: RuleId,
    pub text: String,
}

impl SessionAction {
    pub fn new(code: ActionCode, text: impl Into<String>) -> Self {
        SessionAction {
            code,
            rule: code.rule(),
            text: text.into(),
        }
    }
}
