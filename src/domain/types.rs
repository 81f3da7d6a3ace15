//! Value types built once at the boundary and trusted inside the domain.
//!
//! Each newtype has a private field and can only be made through its parser, so a value that
//! exists is valid ("parse, don't validate").

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// A way of delivering care.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    InPerson,
    Video,
    Telephone,
    /// Secure asynchronous messaging.
    Text,
}

impl Modality {
    /// All four, in the stable order used in responses.
    pub const ALL: [Modality; 4] = [
        Modality::InPerson,
        Modality::Video,
        Modality::Telephone,
        Modality::Text,
    ];

    pub fn is_remote(self) -> bool {
        self != Modality::InPerson
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Modality::InPerson => "in_person",
            Modality::Video => "video",
            Modality::Telephone => "telephone",
            Modality::Text => "text",
        }
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of appointment a ranking or a request is about.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentType {
    Assessment,
    Therapy,
    MedicationReview,
    CareReview,
    CrisisFollowUp,
    Group,
    Other,
}

/// Clinician-assessed risk, ordered from lowest to highest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Moderate,
    High,
}

/// A phone number in E.164 form: `+`, a country code and at most 15 digits in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "+447700900123", pattern = r"^\+[1-9][0-9]{6,14}$")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix('+').ok_or_else(|| {
            "must be an E.164 phone number starting with '+', e.g. +447700900123".to_string()
        })?;
        let ok = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(PhoneNumber(s.to_string()))
        } else {
            Err("must be an E.164 phone number: '+' then 7 to 15 digits, no spaces, e.g. +447700900123".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        PhoneNumber::parse(&s)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

/// The EHR's reference to the service user, e.g. `Patient/123`: 1–256 visible characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubjectRef(String);

impl utoipa::PartialSchema for SubjectRef {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(256))
            .description(Some("The EHR's reference to the service user"))
            .examples(["Patient/123"])
            .into()
    }
}
impl ToSchema for SubjectRef {}

impl SubjectRef {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.chars().count() > 256 {
            return Err("must be 1 to 256 characters, e.g. Patient/123".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        Ok(SubjectRef(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SubjectRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SubjectRef::parse(&s)
    }
}

impl From<SubjectRef> for String {
    fn from(s: SubjectRef) -> String {
        s.0
    }
}

/// How often a record is revisited, in days (7–365).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct ReviewInterval(u16);

impl utoipa::PartialSchema for ReviewInterval {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(7))
            .maximum(Some(365))
            .description(Some("Days between reviews"))
            .examples([90])
            .into()
    }
}
impl ToSchema for ReviewInterval {}

impl ReviewInterval {
    pub const DEFAULT: ReviewInterval = ReviewInterval(90);

    pub fn days(self) -> i64 {
        self.0 as i64
    }
}

impl Default for ReviewInterval {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<i64> for ReviewInterval {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if (7..=365).contains(&v) {
            Ok(ReviewInterval(v as u16))
        } else {
            Err("must be between 7 and 365 days".into())
        }
    }
}

impl From<ReviewInterval> for i64 {
    fn from(r: ReviewInterval) -> i64 {
        r.0 as i64
    }
}

/// Whether a calendar date lies in the future. `today` is the UTC date; one day of slack
/// covers clinics in time zones ahead of UTC, whose local date may already be tomorrow's.
pub fn is_future(date: chrono::NaiveDate, today: chrono::NaiveDate) -> bool {
    today.succ_opt().is_some_and(|tomorrow| date > tomorrow)
}

/// Free text with a bounded length, so a record cannot grow without limit.
/// The bound is enforced by `check_len` during validation.
pub fn check_len(
    errors: &mut Vec<super::FieldError>,
    field: impl Into<String>,
    s: &str,
    max: usize,
) {
    if s.chars().count() > max {
        errors.push(super::FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
}

/// Pushes an error for each repeated entry of a list.
pub fn check_unique<T: PartialEq + fmt::Debug + Serialize>(
    errors: &mut Vec<super::FieldError>,
    field: &str,
    items: &[T],
) {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            let shown = serde_json::to_string(item).unwrap_or_default();
            errors.push(super::FieldError::new(
                format!("{field}[{i}]"),
                format!("{shown} appears more than once"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_must_be_e164() {
        assert!(PhoneNumber::parse("+447700900123").is_ok());
        assert!(PhoneNumber::parse("+15551234567").is_ok());
        for bad in [
            "",
            "447700900123",
            "+44 7700 900123",
            "+0447700900",
            "+12345",
            "+1234567890123456",
            "+44770090012a",
            "++447700900123",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn subjects_are_bounded_and_have_no_spaces() {
        assert!(SubjectRef::parse("Patient/123").is_ok());
        assert!(SubjectRef::parse(&"x".repeat(256)).is_ok());
        assert!(SubjectRef::parse(&"x".repeat(257)).is_err());
        assert!(SubjectRef::parse("").is_err());
        assert!(SubjectRef::parse("Patient/1 2").is_err());
        assert!(SubjectRef::parse("Patient/1\n").is_err());
    }

    #[test]
    fn review_interval_is_7_to_365() {
        assert!(ReviewInterval::try_from(6).is_err());
        assert_eq!(ReviewInterval::try_from(7).unwrap().days(), 7);
        assert_eq!(ReviewInterval::try_from(365).unwrap().days(), 365);
        assert!(ReviewInterval::try_from(366).is_err());
        assert!(ReviewInterval::try_from(-1).is_err());
    }

    #[test]
    fn wire_forms_round_trip() {
        let m: Modality = serde_json::from_str("\"in_person\"").unwrap();
        assert_eq!(m, Modality::InPerson);
        assert_eq!(serde_json::to_string(&Modality::Text).unwrap(), "\"text\"");
        assert!(serde_json::from_str::<Modality>("\"carrier_pigeon\"").is_err());
        let p: PhoneNumber = serde_json::from_str("\"+447700900123\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"+447700900123\"");
        assert!(serde_json::from_str::<PhoneNumber>("\"07700900123\"").is_err());
        assert!(RiskLevel::High > RiskLevel::Moderate && RiskLevel::Moderate > RiskLevel::Low);
    }
}
