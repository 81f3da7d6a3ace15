//! Step 2: rule out what is not appropriate for the risk level (SAFE-1, SAFE-2).

use super::wording::{capitalised, code};
use super::{Assessments, Context, RuledOut};
use crate::domain::protocol::SafetyProtocolInput;
use crate::domain::rules::RuleId;
use crate::domain::types::RiskLevel;

/// SAFE-1: at high risk, remote care needs a fast in-person crisis response on record.
pub(super) fn safe_1(ctx: &Context, opts: &mut Assessments) {
    if ctx.risk != Some(RiskLevel::High) {
        return;
    }
    let crisis_response = ctx
        .protocol
        .is_some_and(SafetyProtocolInput::has_in_person_crisis_response);
    for a in opts.remote_mut() {
        if crisis_response {
            a.note(
                RuleId::Safe1,
                "High risk: the safety protocol holds an in-person crisis response.",
            );
        } else {
            a.rule_out(
                RuleId::Safe1,
                RuledOut::Appropriateness,
                "High risk and no in-person crisis response in a safety protocol.",
            );
        }
    }
}

/// SAFE-2: above low risk, remote care needs a co-developed protocol with a call-back number.
/// No known risk is treated as low: remote care stays suitable, and the prerequisite
/// `safety_protocol` asks for the protocol that will record it.
pub(super) fn safe_2(ctx: &Context, opts: &mut Assessments) {
    let lowered = match (ctx.req.risk_level, ctx.protocol) {
        (Some(asked), Some(p)) if asked < p.risk_level => Some((asked, p.risk_level)),
        _ => None,
    };
    for a in opts.remote_mut() {
        if let Some((asked, held)) = lowered {
            a.note(
                RuleId::Safe2,
                format!(
                    "The request's risk level ({}) is below the safety protocol's ({}); the \
                     higher applies until the protocol is reviewed.",
                    code(asked),
                    code(held)
                ),
            );
        }
        match ctx.risk {
            None => a.note(
                RuleId::Safe2,
                "No risk level known (no safety protocol, none in the request): treated as \
                 low until a safety protocol is agreed.",
            ),
            Some(RiskLevel::Low) => {}
            Some(risk) if ctx.has_call_back => a.note(
                RuleId::Safe2,
                format!(
                    "{} risk: the safety protocol holds a call-back number.",
                    capitalised(&code(risk))
                ),
            ),
            Some(risk) => a.rule_out(
                RuleId::Safe2,
                RuledOut::Appropriateness,
                format!(
                    "{} risk and no co-developed safety protocol with a call-back number.",
                    capitalised(&code(risk))
                ),
            ),
        }
    }
}
