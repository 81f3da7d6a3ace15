//! The stored form of a safety protocol.
//!
//! - format 0: rows written before stored forms existed (the API body as it was then);
//! - format 1: the same fields, with `format: 1`;
//! - format 2: the same fields, the personal ones sealed (`SEALED`).

use super::{has_format, StoredForm};
use crate::crypto::{CryptoError, Opener};
use crate::domain::protocol::{
    CrisisResponse, EmergencyContact, SafetyProtocol, SafetyProtocolInput, UsualLocation,
};
use crate::domain::types::{
    Address, CalendarDate, Label, Name, Notes, PhoneNumber, PlanText, ReviewInterval, RiskLevel,
    SubjectRef,
};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct ProtocolForm {
    #[serde(default)]
    pub format: u32,
    pub subject: String,
    pub risk_level: RiskLevel,
    #[serde(default)]
    pub call_back_numbers: Vec<String>,
    #[serde(default)]
    pub usual_locations: Vec<LocationForm>,
    #[serde(default)]
    pub emergency_contacts: Vec<ContactForm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crisis_response: Option<CrisisForm>,
    pub agreed_with_service_user_on: NaiveDate,
    #[serde(default = "default_interval")]
    pub review_interval_days: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}
has_format!(ProtocolForm);

fn default_interval() -> i64 {
    ReviewInterval::DEFAULT.days()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LocationForm {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ContactForm {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    pub phone: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CrisisForm {
    pub team: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_person_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
}

impl StoredForm for SafetyProtocol {
    const KIND: &'static str = "safety protocol";
    const FORMAT: u32 = 2;
    const SEALED: &'static [&'static str] = &[
        "call_back_numbers.*",
        "usual_locations.*.label",
        "usual_locations.*.address",
        "emergency_contacts.*.name",
        "emergency_contacts.*.relationship",
        "emergency_contacts.*.phone",
        "crisis_response.phone",
        "crisis_response.in_person_plan",
        "notes",
    ];
    type Read = ProtocolForm;

    fn upgrade(f: ProtocolForm) -> SafetyProtocol {
        SafetyProtocol::recorded(SafetyProtocolInput {
            subject: SubjectRef::recorded(f.subject),
            risk_level: f.risk_level,
            call_back_numbers: f
                .call_back_numbers
                .into_iter()
                .map(PhoneNumber::recorded)
                .collect(),
            usual_locations: f
                .usual_locations
                .into_iter()
                .map(|l| UsualLocation {
                    label: Label::recorded(l.label),
                    address: l.address.map(Address::recorded),
                })
                .collect(),
            emergency_contacts: f
                .emergency_contacts
                .into_iter()
                .map(|c| EmergencyContact {
                    name: Name::recorded(c.name),
                    relationship: c.relationship.map(Label::recorded),
                    phone: PhoneNumber::recorded(c.phone),
                })
                .collect(),
            crisis_response: f.crisis_response.map(|c| CrisisResponse {
                team: Name::recorded(c.team),
                phone: c.phone.map(PhoneNumber::recorded),
                // Format 0 could hold a blank plan; it never counted as one (SAFE-1).
                in_person_plan: c
                    .in_person_plan
                    .filter(|p| !p.trim().is_empty())
                    .map(PlanText::recorded),
                hours: c.hours.map(Label::recorded),
            }),
            agreed_with_service_user_on: CalendarDate::recorded(f.agreed_with_service_user_on),
            review_interval_days: ReviewInterval::recorded(f.review_interval_days),
            notes: f.notes.map(Notes::recorded),
        })
    }

    fn open(f: &mut ProtocolForm, o: &mut Opener<'_>) -> Result<(), CryptoError> {
        for (i, n) in f.call_back_numbers.iter_mut().enumerate() {
            o.field(n, format_args!("call_back_numbers.{i}"))?;
        }
        for (i, l) in f.usual_locations.iter_mut().enumerate() {
            o.field(&mut l.label, format_args!("usual_locations.{i}.label"))?;
            o.opt(&mut l.address, format_args!("usual_locations.{i}.address"))?;
        }
        for (i, c) in f.emergency_contacts.iter_mut().enumerate() {
            o.field(&mut c.name, format_args!("emergency_contacts.{i}.name"))?;
            o.opt(
                &mut c.relationship,
                format_args!("emergency_contacts.{i}.relationship"),
            )?;
            o.field(&mut c.phone, format_args!("emergency_contacts.{i}.phone"))?;
        }
        if let Some(c) = &mut f.crisis_response {
            o.opt(&mut c.phone, format_args!("crisis_response.phone"))?;
            o.opt(
                &mut c.in_person_plan,
                format_args!("crisis_response.in_person_plan"),
            )?;
        }
        o.opt(&mut f.notes, format_args!("notes"))
    }

    fn clear_form(&self) -> serde_json::Value {
        let form = ProtocolForm {
            format: Self::FORMAT,
            subject: self.subject.as_str().to_string(),
            risk_level: self.risk_level,
            call_back_numbers: self
                .call_back_numbers
                .iter()
                .map(|n| n.as_str().to_string())
                .collect(),
            usual_locations: self
                .usual_locations
                .iter()
                .map(|l| LocationForm {
                    label: l.label.to_string(),
                    address: l.address.as_ref().map(ToString::to_string),
                })
                .collect(),
            emergency_contacts: self
                .emergency_contacts
                .iter()
                .map(|c| ContactForm {
                    name: c.name.to_string(),
                    relationship: c.relationship.as_ref().map(ToString::to_string),
                    phone: c.phone.as_str().to_string(),
                })
                .collect(),
            crisis_response: self.crisis_response.as_ref().map(|c| CrisisForm {
                team: c.team.to_string(),
                phone: c.phone.as_ref().map(|p| p.as_str().to_string()),
                in_person_plan: c.in_person_plan.as_ref().map(ToString::to_string),
                hours: c.hours.as_ref().map(ToString::to_string),
            }),
            agreed_with_service_user_on: self.agreed_with_service_user_on.get(),
            review_interval_days: self.review_interval_days.days(),
            notes: self.notes.as_ref().map(ToString::to_string),
        };
        serde_json::to_value(form).unwrap_or_default()
    }
}
