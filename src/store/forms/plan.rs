//! The stored form of a preference plan.
//!
//! - format 0: rows written before stored forms existed (the API body as it was then);
//! - format 1: the same fields, with `format: 1`;
//! - format 2: the same fields, the personal ones sealed (`SEALED`).

use super::{has_format, StoredForm};
use crate::crypto::{CryptoError, Opener};
use crate::domain::plan::{
    BackupContact, BackupMethod, Barrier, BarrierKind, Connectivity, ContactPattern, Device,
    DigitalSkills, InitialConversation, Participant, ParticipantRole, Personalisation, Plan,
    PlanInput, Preferences, PrivateSpace, Resources,
};
use crate::domain::types::{
    AppointmentType, CalendarDate, Label, Modality, Name, Notes, PhoneNumber, Reference,
    ReviewInterval, ShortNote, SubjectRef,
};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Serialize, Deserialize)]
pub struct PlanForm {
    #[serde(default)]
    pub format: u32,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_conversation: Option<ConversationForm>,
    pub preferences: PreferencesForm,
    pub resources: ResourcesForm,
    #[serde(default)]
    pub barriers: Vec<BarrierForm>,
    #[serde(default)]
    pub personalisation: PersonalisationForm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_contact: Option<BackupForm>,
    #[serde(default = "default_interval")]
    pub review_interval_days: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reviewed_on: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}
has_format!(PlanForm);

fn default_interval() -> i64 {
    ReviewInterval::DEFAULT.days()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConversationForm {
    pub held_on: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PreferencesForm {
    #[serde(default)]
    pub default: Vec<Modality>,
    #[serde(default)]
    pub by_appointment_type: BTreeMap<AppointmentType, Vec<Modality>>,
    #[serde(default)]
    pub uncomfortable_with: Vec<Modality>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResourcesForm {
    #[serde(default)]
    pub devices: Vec<Device>,
    pub connectivity: Connectivity,
    pub digital_skills: DigitalSkills,
    #[serde(default)]
    pub familiar_platforms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_space: Option<PrivateSpace>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BarrierForm {
    pub kind: BarrierKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PersonalisationForm {
    #[serde(default)]
    pub participants: Vec<ParticipantForm>,
    #[serde(default)]
    pub contact_pattern: ContactPattern,
    #[serde(default)]
    pub reluctant_to_attend_in_person: bool,
    #[serde(default)]
    pub cannot_attend_in_person: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ParticipantForm {
    pub role: ParticipantRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub joins_remotely: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BackupForm {
    pub method: BackupMethod,
    pub number: String,
}

impl StoredForm for Plan {
    const KIND: &'static str = "plan";
    const FORMAT: u32 = 2;
    const SEALED: &'static [&'static str] = &[
        "barriers.*.note",
        "personalisation.participants.*.name",
        "backup_contact.number",
        "notes",
    ];
    type Read = PlanForm;

    fn upgrade(f: PlanForm) -> Plan {
        // Formats 0 and 1 have the same fields.
        let p = f.personalisation;
        Plan::recorded(PlanInput {
            subject: SubjectRef::recorded(f.subject),
            initial_conversation: f.initial_conversation.map(|c| InitialConversation {
                held_on: CalendarDate::recorded(c.held_on),
                held_by: c.held_by.map(Reference::recorded),
            }),
            preferences: Preferences {
                default: f.preferences.default,
                by_appointment_type: f.preferences.by_appointment_type,
                uncomfortable_with: f.preferences.uncomfortable_with,
            },
            resources: Resources {
                devices: f.resources.devices,
                connectivity: f.resources.connectivity,
                digital_skills: f.resources.digital_skills,
                familiar_platforms: f
                    .resources
                    .familiar_platforms
                    .into_iter()
                    .map(Label::recorded)
                    .collect(),
                private_space: f.resources.private_space,
            },
            barriers: f
                .barriers
                .into_iter()
                .map(|b| Barrier {
                    kind: b.kind,
                    note: b.note.map(ShortNote::recorded),
                })
                .collect(),
            personalisation: Personalisation {
                participants: p
                    .participants
                    .into_iter()
                    .map(|x| Participant {
                        role: x.role,
                        name: x.name.map(Name::recorded),
                        joins_remotely: x.joins_remotely,
                    })
                    .collect(),
                contact_pattern: p.contact_pattern,
                reluctant_to_attend_in_person: p.reluctant_to_attend_in_person,
                cannot_attend_in_person: p.cannot_attend_in_person,
            },
            backup_contact: f.backup_contact.map(|b| BackupContact {
                method: b.method,
                number: PhoneNumber::recorded(b.number),
            }),
            review_interval_days: ReviewInterval::recorded(f.review_interval_days),
            last_reviewed_on: f.last_reviewed_on.map(CalendarDate::recorded),
            notes: f.notes.map(Notes::recorded),
        })
    }

    fn open(f: &mut PlanForm, o: &mut Opener<'_>) -> Result<(), CryptoError> {
        for (i, b) in f.barriers.iter_mut().enumerate() {
            o.opt(&mut b.note, format_args!("barriers.{i}.note"))?;
        }
        for (i, p) in f.personalisation.participants.iter_mut().enumerate() {
            o.opt(
                &mut p.name,
                format_args!("personalisation.participants.{i}.name"),
            )?;
        }
        if let Some(b) = &mut f.backup_contact {
            o.field(&mut b.number, format_args!("backup_contact.number"))?;
        }
        o.opt(&mut f.notes, format_args!("notes"))
    }

    fn clear_form(&self) -> serde_json::Value {
        let p = &self.personalisation;
        let form = PlanForm {
            format: Self::FORMAT,
            subject: self.subject.as_str().to_string(),
            initial_conversation: self
                .initial_conversation
                .as_ref()
                .map(|c| ConversationForm {
                    held_on: c.held_on.get(),
                    held_by: c.held_by.as_ref().map(ToString::to_string),
                }),
            preferences: PreferencesForm {
                default: self.preferences.default.clone(),
                by_appointment_type: self.preferences.by_appointment_type.clone(),
                uncomfortable_with: self.preferences.uncomfortable_with.clone(),
            },
            resources: ResourcesForm {
                devices: self.resources.devices.clone(),
                connectivity: self.resources.connectivity,
                digital_skills: self.resources.digital_skills,
                familiar_platforms: self
                    .resources
                    .familiar_platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                private_space: self.resources.private_space,
            },
            barriers: self
                .barriers
                .iter()
                .map(|b| BarrierForm {
                    kind: b.kind,
                    note: b.note.as_ref().map(ToString::to_string),
                })
                .collect(),
            personalisation: PersonalisationForm {
                participants: p
                    .participants
                    .iter()
                    .map(|x| ParticipantForm {
                        role: x.role,
                        name: x.name.as_ref().map(ToString::to_string),
                        joins_remotely: x.joins_remotely,
                    })
                    .collect(),
                contact_pattern: p.contact_pattern,
                reluctant_to_attend_in_person: p.reluctant_to_attend_in_person,
                cannot_attend_in_person: p.cannot_attend_in_person,
            },
            backup_contact: self.backup_contact.as_ref().map(|b| BackupForm {
                method: b.method,
                number: b.number.as_str().to_string(),
            }),
            review_interval_days: self.review_interval_days.days(),
            last_reviewed_on: Some(self.last_reviewed_on()),
            notes: self.notes.as_ref().map(ToString::to_string),
        };
        serde_json::to_value(form).unwrap_or_default()
    }
}
