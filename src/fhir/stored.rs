//! Stored bodies into domain types: one small function per record kind, the only place the
//! interoperability views read the stored form (so a change of stored form is made here).

use crate::domain::plan::PlanInput;
use crate::domain::protocol::SafetyProtocolInput;
use crate::domain::referral::ReferralState;
use crate::error::ApiError;
use crate::store::referrals::ReferralRow;
use crate::store::Record;
use serde::de::DeserializeOwned;

fn parse<T: DeserializeOwned>(body: &serde_json::Value, kind: &'static str) -> Result<T, ApiError> {
    T::deserialize(body).map_err(|e| {
        tracing::error!(error = %e, kind, "stored record does not parse");
        ApiError::Internal
    })
}

fn parse_text<T: DeserializeOwned>(body: &str, kind: &'static str) -> Result<T, ApiError> {
    serde_json::from_str(body).map_err(|e| {
        tracing::error!(error = %e, kind, "stored record does not parse");
        ApiError::Internal
    })
}

/// A stored preference plan.
pub fn plan(rec: &Record) -> Result<PlanInput, ApiError> {
    parse(&rec.body.0, "plan")
}

/// A stored safety protocol.
pub fn protocol(rec: &Record) -> Result<SafetyProtocolInput, ApiError> {
    parse(&rec.body.0, "safety_protocol")
}

/// A stored referral.
pub fn referral(row: &ReferralRow) -> Result<ReferralState, ApiError> {
    parse(&row.body.0, "referral")
}

/// The bodies and versions `Store::plan_and_protocol` returns.
pub type PlanAndProtocolRows = (Option<(String, i64)>, Option<(String, i64)>);

/// A subject's current plan and protocol, each with its version.
pub type PlanAndProtocol = (Option<(PlanInput, i64)>, Option<(SafetyProtocolInput, i64)>);

/// The subject's plan and protocol as `Store::plan_and_protocol` returns them.
pub fn plan_and_protocol(rows: PlanAndProtocolRows) -> Result<PlanAndProtocol, ApiError> {
    let (plan, protocol) = rows;
    let plan = plan
        .map(|(b, v)| parse_text(&b, "plan").map(|p| (p, v)))
        .transpose()?;
    let protocol = protocol
        .map(|(b, v)| parse_text(&b, "safety_protocol").map(|p| (p, v)))
        .transpose()?;
    Ok((plan, protocol))
}
