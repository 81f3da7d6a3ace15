//! The guideline rule engine: the clinicians' guideline as rules that software can apply and
//! explain. Pure functions over the domain types; no HTTP, no SQL, no I/O.
//!
//! - [`catalog`]: the 15 rules, their ids and wording (`GET /v1/guideline-rules`);
//! - [`codes`]: prerequisite, session-action and fallback codes shared with session checks and
//!   referrals;
//! - [`recommend`]: a modality recommendation for one appointment (`POST /v1/recommendations`);
//! - [`suitability`] and [`accessibility`]: steps 1–2, or step 1 alone, for advice given
//!   outside a recommendation (which alternatives a disconnected session may offer).

pub mod catalog;
pub mod codes;
mod engine;
mod recommendation;

pub use crate::domain::referral::ReferralReason;
pub use catalog::{catalog, Rule, RuleId, RuleSection};
pub use codes::{ActionCode, Prerequisite, PrerequisiteCode, Reason, SessionAction};
pub use engine::{accessibility, recommend, suitability, Suitability};
pub use recommendation::{
    FallbackSuggestion, ModalityOption, Recommendation, RecommendationRequest,
};

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
