//! The stored form of a referral: the request and where it stands, with its history.
//!
//! - format 0: rows written before stored forms existed;
//! - format 1: the same fields, with `format: 1`;
//! - format 2: the same fields, the free text sealed (`SEALED`).

use super::{has_format, StoredForm};
use crate::crypto::{CryptoError, Opener};
use crate::domain::referral::{
    ReferralInput, ReferralReason, ReferralState, ReferralStatus, Transition, Urgency,
};
use crate::domain::types::{AppointmentType, Detail, Reference, SubjectRef};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct ReferralForm {
    #[serde(default)]
    pub format: u32,
    pub request: RequestForm,
    pub status: ReferralStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_at: Option<DateTime<Utc>>,
    pub due_by: DateTime<Utc>,
    #[serde(default)]
    pub history: Vec<TransitionForm>,
}
has_format!(ReferralForm);

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestForm {
    pub subject: String,
    pub reason: ReferralReason,
    pub urgency: Urgency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_type: Option<AppointmentType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TransitionForm {
    pub status: ReferralStatus,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl StoredForm for ReferralState {
    const KIND: &'static str = "referral";
    const FORMAT: u32 = 2;
    const SEALED: &'static [&'static str] = &["request.detail", "history.*.note"];
    type Read = ReferralForm;

    fn upgrade(f: ReferralForm) -> ReferralState {
        let r = f.request;
        ReferralState {
            request: ReferralInput {
                subject: SubjectRef::recorded(r.subject),
                reason: r.reason,
                urgency: r.urgency,
                appointment_type: r.appointment_type,
                detail: r.detail.map(Detail::recorded),
                requested_by: r.requested_by.map(Reference::recorded),
            },
            status: f.status,
            appointment_at: f.appointment_at,
            due_by: f.due_by,
            history: f
                .history
                .into_iter()
                .map(|t| Transition {
                    status: t.status,
                    at: t.at,
                    actor: t.actor,
                    appointment_at: t.appointment_at,
                    note: t.note,
                })
                .collect(),
        }
    }

    fn open(f: &mut ReferralForm, o: &mut Opener<'_>) -> Result<(), CryptoError> {
        o.opt(&mut f.request.detail, format_args!("request.detail"))?;
        for (i, t) in f.history.iter_mut().enumerate() {
            o.opt(&mut t.note, format_args!("history.{i}.note"))?;
        }
        Ok(())
    }

    fn clear_form(&self) -> serde_json::Value {
        let r = &self.request;
        let form = ReferralForm {
            format: Self::FORMAT,
            request: RequestForm {
                subject: r.subject.as_str().to_string(),
                reason: r.reason,
                urgency: r.urgency,
                appointment_type: r.appointment_type,
                detail: r.detail.as_ref().map(ToString::to_string),
                requested_by: r.requested_by.as_ref().map(ToString::to_string),
            },
            status: self.status,
            appointment_at: self.appointment_at,
            due_by: self.due_by,
            history: self
                .history
                .iter()
                .map(|t| TransitionForm {
                    status: t.status,
                    at: t.at,
                    actor: t.actor.clone(),
                    appointment_at: t.appointment_at,
                    note: t.note.clone(),
                })
                .collect(),
        };
        serde_json::to_value(form).unwrap_or_default()
    }
}
