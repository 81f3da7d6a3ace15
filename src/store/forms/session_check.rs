//! The stored forms of a session check (what the clinician confirmed, and the outcome the
//! service gave at the time) and of a disconnection.
//!
//! - format 0: rows written before stored forms existed;
//! - format 1: the same fields, with `format: 1`;
//! - format 2: the same fields, the personal ones sealed (`SEALED`).

use super::{has_format, StoredForm};
use crate::crypto::{CryptoError, Opener, Place};
use crate::domain::plan::BackupMethod;
use crate::domain::rules::RuleId;
use crate::domain::session_check::{
    Action, ActionCode, OnDisconnect, OnDisconnectSource, Outcome, ServiceUserLocation,
    SessionCheck, SessionCheckInput, SessionCheckOutcome,
};
use crate::domain::types::{
    Address, AppointmentType, Modality, Name, PhoneNumber, RiskLevel, ShortNote, SubjectRef,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct CheckForm {
    #[serde(default)]
    pub format: u32,
    pub subject: String,
    pub modality: Modality,
    pub appointment_type: AppointmentType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_user_location: Option<LocationForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_back_number: Option<String>,
    #[serde(default)]
    pub clinician_in_private_space: bool,
    #[serde(default)]
    pub others_present: Vec<String>,
    #[serde(default)]
    pub headphones: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_user_private: Option<bool>,
    #[serde(default)]
    pub sensitive_topics: bool,
    #[serde(default)]
    pub first_remote_appointment: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_level: Option<RiskLevel>,
}
has_format!(CheckForm);

#[derive(Debug, Serialize, Deserialize)]
pub struct LocationForm {
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OutcomeForm {
    #[serde(default)]
    pub format: u32,
    pub outcome: Outcome,
    #[serde(default)]
    pub actions: Vec<ActionForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disconnect: Option<RouteForm>,
    #[serde(default)]
    pub face_to_face_alternative_required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_risk_level: Option<RiskLevel>,
}
has_format!(OutcomeForm);

#[derive(Debug, Serialize, Deserialize)]
pub struct ActionForm {
    pub code: ActionCode,
    pub rule: RuleId,
    pub text: String,
    #[serde(default)]
    pub blocking: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RouteForm {
    pub method: BackupMethod,
    pub number: String,
    pub source: OnDisconnectSource,
}

impl StoredForm for SessionCheck {
    const KIND: &'static str = "session check";
    const FORMAT: u32 = 2;
    const SEALED: &'static [&'static str] = &[
        "service_user_location.description",
        "service_user_location.address",
        "call_back_number",
        "others_present.*",
    ];
    type Read = CheckForm;

    fn upgrade(f: CheckForm) -> SessionCheck {
        SessionCheck::recorded(SessionCheckInput {
            subject: SubjectRef::recorded(f.subject),
            modality: f.modality,
            appointment_type: f.appointment_type,
            service_user_location: f.service_user_location.map(|l| ServiceUserLocation {
                description: Name::recorded(l.description),
                address: l.address.map(Address::recorded),
            }),
            call_back_number: f.call_back_number.map(PhoneNumber::recorded),
            clinician_in_private_space: f.clinician_in_private_space,
            others_present: f.others_present.into_iter().map(Name::recorded).collect(),
            headphones: f.headphones,
            service_user_private: f.service_user_private,
            sensitive_topics: f.sensitive_topics,
            first_remote_appointment: f.first_remote_appointment,
            risk_level: f.risk_level,
        })
    }

    fn open(f: &mut CheckForm, o: &mut Opener<'_>) -> Result<(), CryptoError> {
        if let Some(l) = &mut f.service_user_location {
            o.field(
                &mut l.description,
                format_args!("service_user_location.description"),
            )?;
            o.opt(
                &mut l.address,
                format_args!("service_user_location.address"),
            )?;
        }
        o.opt(&mut f.call_back_number, format_args!("call_back_number"))?;
        for (i, n) in f.others_present.iter_mut().enumerate() {
            o.field(n, format_args!("others_present.{i}"))?;
        }
        Ok(())
    }

    fn clear_form(&self) -> serde_json::Value {
        let form = CheckForm {
            format: Self::FORMAT,
            subject: self.subject.as_str().to_string(),
            modality: self.modality,
            appointment_type: self.appointment_type,
            service_user_location: self.service_user_location.as_ref().map(|l| LocationForm {
                description: l.description.to_string(),
                address: l.address.as_ref().map(ToString::to_string),
            }),
            call_back_number: self
                .call_back_number
                .as_ref()
                .map(|n| n.as_str().to_string()),
            clinician_in_private_space: self.clinician_in_private_space,
            others_present: self
                .others_present
                .iter()
                .map(ToString::to_string)
                .collect(),
            headphones: self.headphones,
            service_user_private: self.service_user_private,
            sensitive_topics: self.sensitive_topics,
            first_remote_appointment: self.first_remote_appointment,
            risk_level: self.risk_level,
        };
        serde_json::to_value(form).unwrap_or_default()
    }
}

impl StoredForm for SessionCheckOutcome {
    const KIND: &'static str = "session check outcome";
    const FORMAT: u32 = 2;
    const SEALED: &'static [&'static str] = &["on_disconnect.number"];
    type Read = OutcomeForm;

    fn upgrade(f: OutcomeForm) -> SessionCheckOutcome {
        SessionCheckOutcome {
            outcome: f.outcome,
            actions: f
                .actions
                .into_iter()
                .map(|a| Action {
                    code: a.code,
                    rule: a.rule,
                    text: a.text,
                    blocking: a.blocking,
                })
                .collect(),
            on_disconnect: f.on_disconnect.map(|r| OnDisconnect {
                method: r.method,
                number: PhoneNumber::recorded(r.number),
                source: r.source,
            }),
            face_to_face_alternative_required: f.face_to_face_alternative_required,
            effective_risk_level: f.effective_risk_level,
        }
    }

    fn open(f: &mut OutcomeForm, o: &mut Opener<'_>) -> Result<(), CryptoError> {
        if let Some(r) = &mut f.on_disconnect {
            o.field(&mut r.number, format_args!("on_disconnect.number"))?;
        }
        Ok(())
    }

    fn clear_form(&self) -> serde_json::Value {
        let form = OutcomeForm {
            format: Self::FORMAT,
            outcome: self.outcome,
            actions: self
                .actions
                .iter()
                .map(|a| ActionForm {
                    code: a.code,
                    rule: a.rule,
                    text: a.text.clone(),
                    blocking: a.blocking,
                })
                .collect(),
            on_disconnect: self.on_disconnect.as_ref().map(|r| RouteForm {
                method: r.method,
                number: r.number.as_str().to_string(),
                source: r.source,
            }),
            face_to_face_alternative_required: self.face_to_face_alternative_required,
            effective_risk_level: self.effective_risk_level,
        };
        serde_json::to_value(form).unwrap_or_default()
    }
}

/// The stored form of a disconnection's note (written, never read back by the service).
#[derive(Debug, Serialize, Deserialize)]
pub struct DisconnectionForm {
    pub format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl DisconnectionForm {
    pub const FORMAT: u32 = 2;
    /// Sealed from format 2 on (format 1 was clear).
    pub const SEALED: &'static [&'static str] = &["note"];

    pub fn encode(
        note: Option<&ShortNote>,
        place: &Place<'_>,
    ) -> Result<serde_json::Value, CryptoError> {
        let mut v = serde_json::to_value(DisconnectionForm {
            format: Self::FORMAT,
            note: note.map(ToString::to_string),
        })
        .unwrap_or_default();
        place.seal_fields(&mut v, Self::SEALED)?;
        Ok(v)
    }
}
