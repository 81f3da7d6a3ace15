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

impl AppointmentType {
    pub const ALL: [AppointmentType; 7] = [
        AppointmentType::Assessment,
        AppointmentType::Therapy,
        AppointmentType::MedicationReview,
        AppointmentType::CareReview,
        AppointmentType::CrisisFollowUp,
        AppointmentType::Group,
        AppointmentType::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentType::Assessment => "assessment",
            AppointmentType::Therapy => "therapy",
            AppointmentType::MedicationReview => "medication_review",
            AppointmentType::CareReview => "care_review",
            AppointmentType::CrisisFollowUp => "crisis_follow_up",
            AppointmentType::Group => "group",
            AppointmentType::Other => "other",
        }
    }
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

    /// A number that was checked when it was recorded.
    pub fn recorded(s: String) -> Self {
        PhoneNumber(s)
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
            .pattern(Some(pattern::NO_SPACE))
            .description(Some(
                "The EHR's reference to the service user: 1 to 256 characters without spaces or \
                 control characters",
            ))
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
        if !s.chars().all(is_visible) {
            return Err("must not contain spaces or control characters".into());
        }
        Ok(SubjectRef(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A subject that was checked when it was recorded.
    pub fn recorded(s: String) -> Self {
        SubjectRef(s)
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

    /// An interval that was checked when it was recorded (kept within what a `u16` holds).
    pub fn recorded(days: i64) -> Self {
        ReviewInterval(days.clamp(1, u16::MAX as i64) as u16)
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

/// Characters that make text "blank" when nothing else is there: Unicode white space that is
/// not a control character. Kept identical to the JSON Schema patterns below, so that clients
/// validating with the published document and the service agree on every string.
fn is_visible(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}

/// JSON Schema patterns (ECMA-262 and Python agree on these explicit classes).
mod pattern {
    /// One line: no control characters, at least one visible character.
    pub const LINE: &str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$";
    /// No white space and no control characters.
    pub const NO_SPACE: &str =
        r"^[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$";
    /// Several lines (tab, line feed and carriage return allowed), possibly empty.
    pub const MULTILINE: &str = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$";
    /// Several lines, at least one visible character.
    pub const MULTILINE_NOT_BLANK: &str = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$";
}

/// Whether text is one line or may hold several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    One,
    Many,
}

/// Checks a string against a text type's bounds; the message names what is expected.
fn check_text(s: &str, lines: Lines, min: usize, max: usize) -> Result<(), String> {
    let n = s.chars().count();
    if n > max {
        return Err(format!("must be at most {max} characters"));
    }
    let bad_control = s
        .chars()
        .any(|c| c.is_control() && (lines == Lines::One || !matches!(c, '\t' | '\n' | '\r')));
    if bad_control {
        return Err(match lines {
            Lines::One => "must be one line without control characters".into(),
            Lines::Many => {
                "must not contain control characters other than tab and line breaks".into()
            }
        });
    }
    if min > 0 && !s.chars().any(is_visible) {
        return Err("must not be blank".into());
    }
    if n < min {
        return Err(format!("must be at least {min} characters"));
    }
    Ok(())
}

/// Declares a text newtype with its bounds, named once: the parser enforces them and the
/// OpenAPI schema states them (`minLength`, `maxLength`, `pattern`).
macro_rules! text_type {
    ($name:ident, lines = $lines:ident, min = $min:literal, max = $max:literal, doc = $doc:literal, example = $ex:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MIN: usize = $min;
            pub const MAX: usize = $max;

            pub fn parse(s: &str) -> Result<Self, String> {
                check_text(s, Lines::$lines, $min, $max).map(|()| $name(s.to_string()))
            }

            /// A value that was checked when it was recorded: stored history is read back as
            /// written, even where today's bounds are stricter.
            pub fn recorded(s: String) -> Self {
                $name(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                check_text(&s, Lines::$lines, $min, $max).map(|()| $name(s))
            }
        }

        impl From<$name> for String {
            fn from(t: $name) -> String {
                t.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let pattern = match (Lines::$lines, $min) {
                    (Lines::One, _) => pattern::LINE,
                    (Lines::Many, 0) => pattern::MULTILINE,
                    (Lines::Many, _) => pattern::MULTILINE_NOT_BLANK,
                };
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(($min > 0).then_some($min))
                    .max_length(Some($max))
                    .pattern(Some(pattern))
                    .description(Some($doc))
                    .examples([$ex])
                    .into()
            }
        }
        impl ToSchema for $name {}
    };
}

text_type!(
    Notes,
    lines = Many,
    min = 0,
    max = 10000,
    doc = "Free text of up to 10 000 characters (line breaks allowed). Never logged.",
    example = "Prefers morning appointments."
);
text_type!(
    Detail,
    lines = Many,
    min = 0,
    max = 2000,
    doc = "Free text of up to 2 000 characters (line breaks allowed). Never logged.",
    example = "no private space at home"
);
text_type!(
    ShortNote,
    lines = Many,
    min = 0,
    max = 1000,
    doc = "Free text of up to 1 000 characters (line breaks allowed). Never logged.",
    example = "uses captions"
);
text_type!(
    PlanText,
    lines = Many,
    min = 1,
    max = 2000,
    doc = "A plan in words, 1 to 2 000 characters (line breaks allowed), not blank.",
    example = "Crisis team attends within 4 hours"
);
text_type!(
    Address,
    lines = Many,
    min = 1,
    max = 500,
    doc = "A postal address or place, 1 to 500 characters (line breaks allowed), not blank.",
    example = "1 High St, Leeds"
);
text_type!(
    Label,
    lines = One,
    min = 1,
    max = 100,
    doc = "A short label, one line of 1 to 100 characters, not blank.",
    example = "home"
);
text_type!(
    Name,
    lines = One,
    min = 1,
    max = 200,
    doc = "A name or short description, one line of 1 to 200 characters, not blank.",
    example = "A. Carer"
);
text_type!(
    Reference, lines = One, min = 1, max = 256, doc = "A reference to a person or system in the EHR, e.g. `Practitioner/9`: one line of 1 to 256 characters.", example = "Practitioner/9"
);

/// Most entries of a list in a record (participants, barriers, locations, contacts, …).
pub const MAX_LIST: usize = 20;
/// Most call-back numbers in a safety protocol.
pub const MAX_CALL_BACK_NUMBERS: usize = 10;

/// The calendar dates the service accepts: years 1900 to 9999.
const FIRST_YEAR: i32 = 1900;
const LAST_YEAR: i32 = 9999;

/// A calendar date, `YYYY-MM-DD` (RFC 3339 full-date), in the years 1900–9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CalendarDate(chrono::NaiveDate);

impl CalendarDate {
    pub fn parse(s: &str) -> Result<Self, String> {
        let shape_ok = s.len() == 10
            && s.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            });
        let date = shape_ok
            .then(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .flatten()
            .ok_or_else(|| format!("must be a date YYYY-MM-DD, not {s:?}"))?;
        CalendarDate::new(date)
    }

    pub fn new(date: chrono::NaiveDate) -> Result<Self, String> {
        use chrono::Datelike;
        if (FIRST_YEAR..=LAST_YEAR).contains(&date.year()) {
            Ok(CalendarDate(date))
        } else {
            Err(format!("must lie in the years {FIRST_YEAR} to {LAST_YEAR}"))
        }
    }

    /// A date that was checked when it was recorded.
    pub fn recorded(date: chrono::NaiveDate) -> Self {
        CalendarDate(date)
    }

    pub fn get(self) -> chrono::NaiveDate {
        self.0
    }
}

impl TryFrom<String> for CalendarDate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        CalendarDate::parse(&s)
    }
}

impl From<CalendarDate> for String {
    fn from(d: CalendarDate) -> String {
        d.0.format("%Y-%m-%d").to_string()
    }
}

impl fmt::Display for CalendarDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl utoipa::PartialSchema for CalendarDate {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Date,
            )))
            .pattern(Some(
                r"^(19|[2-9][0-9])[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
            ))
            .description(Some(
                "A calendar date, YYYY-MM-DD, in the years 1900 to 9999",
            ))
            .examples(["2026-11-20"])
            .into()
    }
}
impl ToSchema for CalendarDate {}

/// An instant in RFC 3339 form with a time zone (`2026-12-01T09:30:00Z`), in the years
/// 1900–9999; kept in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(chrono::DateTime<chrono::Utc>);

impl Timestamp {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|_| {
                format!("must be an RFC 3339 date-time such as 2026-12-01T09:30:00Z, not {s:?}")
            })?
            .with_timezone(&chrono::Utc);
        Timestamp::new(t)
    }

    pub fn new(t: chrono::DateTime<chrono::Utc>) -> Result<Self, String> {
        use chrono::Datelike;
        if (FIRST_YEAR..=LAST_YEAR).contains(&t.year()) {
            Ok(Timestamp(t))
        } else {
            Err(format!("must lie in the years {FIRST_YEAR} to {LAST_YEAR}"))
        }
    }

    /// An instant that was checked when it was recorded.
    pub fn recorded(t: chrono::DateTime<chrono::Utc>) -> Self {
        Timestamp(t)
    }

    pub fn get(self) -> chrono::DateTime<chrono::Utc> {
        self.0
    }
}

impl TryFrom<String> for Timestamp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Timestamp::parse(&s)
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .pattern(Some(r"^(19|[2-9][0-9])[0-9]{2}-"))
            .description(Some(
                "An RFC 3339 date-time with a time zone, in the years 1900 to 9999",
            ))
            .examples(["2026-12-01T09:30:00Z"])
            .into()
    }
}
impl ToSchema for Timestamp {}

/// Whether a calendar date lies in the future. `today` is the UTC date; one day of slack
/// covers clinics in time zones ahead of UTC, whose local date may already be tomorrow's.
pub fn is_future(date: chrono::NaiveDate, today: chrono::NaiveDate) -> bool {
    today.succ_opt().is_some_and(|tomorrow| date > tomorrow)
}

/// The schema of a list: `minItems`, `maxItems` and `uniqueItems` as the checks enforce them.
pub fn list_schema<T: ToSchema>(
    min: usize,
    max: Option<usize>,
    unique: bool,
) -> utoipa::openapi::schema::Array {
    let mut b = utoipa::openapi::schema::ArrayBuilder::new()
        .items(RefOr::Ref(
            utoipa::openapi::Ref::from_schema_name(T::name()),
        ))
        .max_items(max)
        .unique_items(unique);
    if min > 0 {
        b = b.min_items(Some(min));
    }
    b.build()
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
