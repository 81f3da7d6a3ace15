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

/// Something to do in (or at the start of) a remote session (SAFE-1, SAFE-2, SAFE-3, THER-2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SessionActionCode {
    /// SAFE-1: confirm where the service user is.
    ConfirmLocation,
    /// SAFE-2: confirm the number to call back on after a disconnection.
    ConfirmCallBackNumber,
    /// THER-2: a longer first remote appointment, with time to get to know each other.
    AllowRapportTime,
    /// SAFE-3: the clinician is not in a private space: say who else is present.
    DiscloseOthersPresent,
    /// SAFE-3: the clinician is not in a private space: use headphones.
    UseHeadphones,
}

impl SessionActionCode {
    /// The rule that asks for it.
    pub fn rule(self) -> RuleId {
        match self {
            SessionActionCode::ConfirmLocation => RuleId::Safe1,
            SessionActionCode::ConfirmCallBackNumber => RuleId::Safe2,
            SessionActionCode::AllowRapportTime => RuleId::Ther2,
            SessionActionCode::DiscloseOthersPresent | SessionActionCode::UseHeadphones => {
                RuleId::Safe3
            }
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
    pub code: SessionActionCode,
    pub rule: RuleId,
    pub text: String,
}

impl SessionAction {
    pub fn new(code: SessionActionCode, text: impl Into<String>) -> Self {
        SessionAction {
            code,
            rule: code.rule(),
            text: text.into(),
        }
    }
}

/// Why face-to-face care is suggested instead of telemental health (F2F-1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FallbackReason {
    NotPreferred,
    NotAppropriate,
    NotAccessible,
}
