//! Step 5: prerequisites and session actions, whatever is recommended (FLEX-1, FLEX-4, CONN-2,
//! SAFE-1, SAFE-2, THER-2).

use super::{Assessment, Assessments, Context};
use crate::domain::rules::{ActionCode, Prerequisite, PrerequisiteCode, SessionAction};
use crate::domain::types::RiskLevel;
use chrono::NaiveDate;

pub(super) fn prerequisites(ctx: &Context, today: NaiveDate) -> Vec<Prerequisite> {
    let mut out = Vec::new();
    // FLEX-1
    match ctx.plan {
        None => out.push(Prerequisite::new(
            PrerequisiteCode::InitialConversation,
            "No telemental health plan: hold an initial conversation to establish preferences, \
             resources, technology access and skills.",
        )),
        Some(p) if p.initial_conversation.is_none() => out.push(Prerequisite::new(
            PrerequisiteCode::InitialConversation,
            "The plan records no initial conversation about telemental health: hold one to \
             confirm preferences, resources, technology access and skills.",
        )),
        Some(_) => {}
    }
    // FLEX-4
    if let Some(p) = ctx.plan {
        let due = p.next_review_due();
        if due < today {
            out.push(Prerequisite::new(
                PrerequisiteCode::PlanReview,
                format!("The plan's review was due on {due}: revisit it with the service user."),
            ));
        }
    }
    // CONN-2
    if ctx.plan.is_none_or(|p| p.backup_contact.is_none()) {
        out.push(Prerequisite::new(
            PrerequisiteCode::BackupContact,
            "Agree a back-up way of connecting (e.g. a phone call) before any remote session.",
        ));
    }
    // SAFE-2
    if !ctx.has_call_back {
        let text = match ctx.risk {
            Some(RiskLevel::Moderate | RiskLevel::High) => {
                "Co-develop a safety protocol with a call-back number: remote care is not \
                 suitable at this risk level until it exists."
            }
            _ => "Co-develop a safety protocol with a call-back number before remote sessions.",
        };
        out.push(Prerequisite::new(PrerequisiteCode::SafetyProtocol, text));
    }
    out
}

/// Listed when any remote option is offered, so they hold whichever offered option is used.
pub(super) fn session_actions(ctx: &Context, opts: &Assessments) -> Vec<SessionAction> {
    if !opts.remote().any(Assessment::suitable) {
        return Vec::new();
    }
    let mut out = Vec::new();
    // SAFE-1
    out.push(SessionAction::new(
        ActionCode::ConfirmLocation,
        if ctx.risk == Some(RiskLevel::High) {
            "In a remote session, confirm at the start where the service user is, and how the \
             in-person crisis response would reach them."
        } else {
            "In a remote session, confirm at the start where the service user is."
        },
    ));
    // SAFE-2
    out.push(SessionAction::new(
        ActionCode::ConfirmCallBackNumber,
        if ctx.req.sensitive_topics {
            "Confirm the call-back number before the session: sensitive topics are planned."
        } else {
            "Confirm the call-back number before the session, in case of disconnection."
        },
    ));
    // THER-2
    if ctx.req.first_appointment {
        out.push(SessionAction::new(
            ActionCode::AllowRapportTime,
            "If this first appointment is remote, book a longer slot to chat informally and \
             get to know the service user.",
        ));
    }
    out
}
