//! Telemental health preference plans (FLEX-1, FLEX-2, FLEX-4, FLEX-5, CONN-1, CONN-2, EXCL-1).

use super::types::{
    check_unique, is_future, list_schema, AppointmentType, CalendarDate, Label, Modality, Name,
    Notes, PhoneNumber, Reference, ReviewInterval, ShortNote, SubjectRef, MAX_LIST,
};
use super::FieldError;
use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

/// The content of a preference plan as agreed with the service user, not yet checked:
/// [`PlanInput::check`] makes a [`Plan`] of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    pub subject: SubjectRef,
    /// The initial conversation about telemental health (FLEX-1). Without it, recommendations
    /// ask for one and suggest in-person care.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_conversation: Option<InitialConversation>,
    pub preferences: Preferences,
    pub resources: Resources,
    /// Sensory, psychological or other barriers to telemental health (FLEX-5).
    #[serde(default)]
    pub barriers: Vec<Barrier>,
    #[serde(default)]
    pub personalisation: Personalisation,
    /// The agreed back-up way to reconnect after a disconnection (CONN-2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_contact: Option<BackupContact>,
    /// Days between reviews of the plan (7–365, default 90) (FLEX-4).
    #[serde(default)]
    pub review_interval_days: ReviewInterval,
    /// When the plan was last reviewed with the service user; defaults to the day of the write
    /// and may not lie in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reviewed_on: Option<CalendarDate>,
    /// Free text, at most 10 000 characters. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<Notes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitialConversation {
    /// When it was held; not in the future.
    pub held_on: CalendarDate,
    /// Who held it, e.g. `Practitioner/9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<Reference>,
}

/// Ranked modalities, most preferred first (FLEX-2, FLEX-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// The ranking used when no appointment-type ranking applies: one to four modalities,
    /// each once.
    #[schema(schema_with = ranking_schema)]
    pub default: Vec<Modality>,
    /// Rankings that differ by appointment type (keys are appointment types).
    #[serde(default)]
    #[schema(schema_with = rankings_by_type_schema)]
    pub by_appointment_type: BTreeMap<AppointmentType, Vec<Modality>>,
    /// Remote modalities the service user is uncomfortable with: never suitable for them
    /// (FLEX-5). `in_person` cannot be listed: it is always offered (F2F-1).
    #[serde(default)]
    #[schema(schema_with = uncomfortable_schema)]
    pub uncomfortable_with: Vec<Modality>,
}

impl Preferences {
    /// The ranking for an appointment type, else the default ranking.
    pub fn ranking_for(&self, appointment_type: AppointmentType) -> &[Modality] {
        self.by_appointment_type
            .get(&appointment_type)
            .map(Vec::as_slice)
            .unwrap_or(&self.default)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Smartphone,
    Mobile,
    Landline,
    Tablet,
    Computer,
}

impl Device {
    /// Has a camera and a screen: can carry video (CONN-1).
    pub fn has_camera(self) -> bool {
        matches!(self, Device::Smartphone | Device::Tablet | Device::Computer)
    }
    /// Can carry a telephone call (CONN-1).
    pub fn can_call(self) -> bool {
        matches!(self, Device::Smartphone | Device::Mobile | Device::Landline)
    }
    /// Can carry secure messaging (CONN-1).
    pub fn can_message(self) -> bool {
        matches!(self, Device::Smartphone | Device::Mobile | Device::Computer)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Connectivity {
    None,
    Limited,
    Reliable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DigitalSkills {
    None,
    Basic,
    Confident,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrivateSpace {
    Yes,
    No,
    Sometimes,
}

/// Technology access and skills (CONN-1, EXCL-1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Each device kind at most once.
    #[serde(default)]
    #[schema(schema_with = devices_schema)]
    pub devices: Vec<Device>,
    pub connectivity: Connectivity,
    pub digital_skills: DigitalSkills,
    /// Video platforms the service user knows, suggested for video (CONN-1).
    #[serde(default)]
    #[schema(max_items = 20, example = json!(["WhatsApp"]))]
    pub familiar_platforms: Vec<Label>,
    /// Whether the service user has a private space for remote sessions (SAFE-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_space: Option<PrivateSpace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BarrierKind {
    Hearing,
    Vision,
    Speech,
    Cognitive,
    Psychological,
    Language,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Barrier {
    pub kind: BarrierKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<ShortNote>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    Family,
    Carer,
    Specialist,
    Interpreter,
    Advocate,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    pub role: ParticipantRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default)]
    pub joins_remotely: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContactPattern {
    #[default]
    Standard,
    ShorterMoreFrequent,
}

/// Ways to personalise care (FLEX-3).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Personalisation {
    #[serde(default)]
    #[schema(max_items = 20)]
    pub participants: Vec<Participant>,
    #[serde(default)]
    pub contact_pattern: ContactPattern,
    #[serde(default)]
    pub reluctant_to_attend_in_person: bool,
    #[serde(default)]
    pub cannot_attend_in_person: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupMethod {
    Telephone,
    Text,
}

/// The agreed back-up way of connecting (CONN-2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupContact {
    pub method: BackupMethod,
    pub number: PhoneNumber,
}

/// EXCL-1 level of digital exclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionLevel {
    None,
    AtRisk,
    Excluded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExclusionFactor {
    /// No smartphone, tablet or computer.
    NoDevice,
    NoConnectivity,
    LimitedConnectivity,
    NoDigitalSkills,
}

/// Computed by the service from the plan's resources (EXCL-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DigitalExclusion {
    pub level: ExclusionLevel,
    pub factors: Vec<ExclusionFactor>,
}

impl DigitalExclusion {
    pub fn of(resources: &Resources) -> Self {
        let mut factors = Vec::new();
        if !resources.devices.iter().any(|d| d.has_camera()) {
            factors.push(ExclusionFactor::NoDevice);
        }
        match resources.connectivity {
            Connectivity::None => factors.push(ExclusionFactor::NoConnectivity),
            Connectivity::Limited => factors.push(ExclusionFactor::LimitedConnectivity),
            Connectivity::Reliable => {}
        }
        if resources.digital_skills == DigitalSkills::None {
            factors.push(ExclusionFactor::NoDigitalSkills);
        }
        let level = if factors
            .iter()
            .any(|f| *f != ExclusionFactor::LimitedConnectivity)
        {
            ExclusionLevel::Excluded
        } else if factors.is_empty() {
            ExclusionLevel::None
        } else {
            ExclusionLevel::AtRisk
        };
        DigitalExclusion { level, factors }
    }
}

impl PlanInput {
    /// Checks what the types alone cannot and fills in `last_reviewed_on` (the day of the
    /// write when absent). Returns every problem found, each named by its JSON path.
    pub fn check(mut self, today: NaiveDate) -> Result<Plan, Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(ic) = &self.initial_conversation {
            if is_future(ic.held_on.get(), today) {
                errors.push(FieldError::new(
                    "initial_conversation.held_on",
                    "must not lie in the future",
                ));
            }
        }
        let prefs = &self.preferences;
        check_ranking(&mut errors, "preferences.default", &prefs.default);
        for (kind, ranking) in &prefs.by_appointment_type {
            let field = format!("preferences.by_appointment_type.{}", kind.as_str());
            check_ranking(&mut errors, &field, ranking);
        }
        check_unique(
            &mut errors,
            "preferences.uncomfortable_with",
            &prefs.uncomfortable_with,
        );
        if let Some(i) = prefs
            .uncomfortable_with
            .iter()
            .position(|m| *m == Modality::InPerson)
        {
            // F2F-1: face-to-face is always offered, so it cannot be ruled out by discomfort.
            errors.push(FieldError::new(
                format!("preferences.uncomfortable_with[{i}]"),
                "in_person is always offered (F2F-1); record the reason in barriers or notes instead",
            ));
        }
        let res = &self.resources;
        check_unique(&mut errors, "resources.devices", &res.devices);
        check_max(
            &mut errors,
            "resources.familiar_platforms",
            res.familiar_platforms.len(),
            "platforms",
        );
        check_max(&mut errors, "barriers", self.barriers.len(), "barriers");
        check_max(
            &mut errors,
            "personalisation.participants",
            self.personalisation.participants.len(),
            "participants",
        );
        match self.last_reviewed_on {
            Some(d) if is_future(d.get(), today) => errors.push(FieldError::new(
                "last_reviewed_on",
                "must not lie in the future",
            )),
            Some(_) => {}
            None => self.last_reviewed_on = Some(CalendarDate::recorded(today)),
        }
        if errors.is_empty() {
            Ok(Plan(self))
        } else {
            Err(errors)
        }
    }
}

/// A ranking: at least one modality, each once.
fn check_ranking(errors: &mut Vec<FieldError>, field: &str, ranking: &[Modality]) {
    if ranking.is_empty() {
        errors.push(FieldError::new(field, "must rank at least one modality"));
    }
    check_unique(errors, field, ranking);
}

/// Lists in a record hold at most [`MAX_LIST`] entries.
pub(crate) fn check_max(errors: &mut Vec<FieldError>, field: &str, len: usize, what: &str) {
    if len > MAX_LIST {
        errors.push(FieldError::new(
            field,
            format!("must list at most {MAX_LIST} {what}"),
        ));
    }
}

fn ranking_schema() -> impl Into<RefOr<Schema>> {
    list_schema::<Modality>(1, Some(Modality::ALL.len()), true)
}

fn rankings_by_type_schema() -> impl Into<RefOr<Schema>> {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder};
    use utoipa::PartialSchema;
    ObjectBuilder::new()
        .property_names(Some(AppointmentType::schema()))
        .additional_properties(Some(AdditionalProperties::RefOr(ranking_schema().into())))
        .examples([serde_json::json!({"medication_review": ["telephone", "in_person"]})])
}

fn uncomfortable_schema() -> impl Into<RefOr<Schema>> {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    let remote: Vec<&str> = Modality::ALL
        .iter()
        .filter(|m| m.is_remote())
        .map(|m| m.as_str())
        .collect();
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(remote)),
        )
        .max_items(Some(3))
        .unique_items(true)
}

fn devices_schema() -> impl Into<RefOr<Schema>> {
    list_schema::<Device>(0, Some(5), true)
}

/// A preference plan whose content has been checked (by [`PlanInput::check`]), or was checked
/// when it was recorded ([`Plan::recorded`]). Reads like its content.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan(PlanInput);

impl std::ops::Deref for Plan {
    type Target = PlanInput;
    fn deref(&self) -> &PlanInput {
        &self.0
    }
}

impl Plan {
    /// A plan read back from storage: it was checked when it was written, and history is read
    /// as written even where today's checks are stricter.
    pub fn recorded(content: PlanInput) -> Plan {
        Plan(content)
    }

    pub fn content(&self) -> &PlanInput {
        &self.0
    }

    pub fn into_content(self) -> PlanInput {
        self.0
    }

    /// When the plan was last reviewed (the day of the write when the client gave none).
    pub fn last_reviewed_on(&self) -> NaiveDate {
        self.0
            .last_reviewed_on
            .map_or(NaiveDate::MIN, CalendarDate::get)
    }
}

impl PlanInput {
    /// `last_reviewed_on` + the review interval (FLEX-4); after `check`, `last_reviewed_on`
    /// is always set.
    pub fn next_review_due(&self) -> NaiveDate {
        self.last_reviewed_on
            .map_or(NaiveDate::MIN, CalendarDate::get)
            .checked_add_days(Days::new(self.review_interval_days.days() as u64))
            .unwrap_or(NaiveDate::MAX)
    }

    /// The plan's digital exclusion (EXCL-1); a property of the resources alone.
    pub fn digital_exclusion(&self) -> DigitalExclusion {
        DigitalExclusion::of(&self.resources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap()
    }

    fn example() -> serde_json::Value {
        json!({
            "subject": "Patient/123",
            "initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
            "preferences": {
                "default": ["video", "telephone", "in_person"],
                "by_appointment_type": {"medication_review": ["telephone", "in_person"]},
                "uncomfortable_with": ["text"]
            },
            "resources": {
                "devices": ["smartphone", "computer"],
                "connectivity": "reliable",
                "digital_skills": "basic",
                "familiar_platforms": ["WhatsApp"],
                "private_space": "yes"
            },
            "barriers": [{"kind": "hearing", "note": "uses captions"}],
            "personalisation": {
                "participants": [{"role": "family", "name": "sister", "joins_remotely": true}],
                "contact_pattern": "shorter_more_frequent",
                "reluctant_to_attend_in_person": false,
                "cannot_attend_in_person": false
            },
            "backup_contact": {"method": "telephone", "number": "+447700900123"},
            "review_interval_days": 90,
            "last_reviewed_on": "2026-11-20",
            "notes": "free text"
        })
    }

    fn parse(v: serde_json::Value) -> PlanInput {
        serde_json::from_value(v).expect("parses")
    }

    fn resources(devices: &[Device], c: Connectivity, s: DigitalSkills) -> Resources {
        Resources {
            devices: devices.to_vec(),
            connectivity: c,
            digital_skills: s,
            familiar_platforms: vec![],
            private_space: None,
        }
    }

    #[test]
    fn the_outline_example_is_a_valid_plan() {
        let plan = parse(example()).check(today()).expect("valid");
        assert_eq!(
            plan.next_review_due(),
            NaiveDate::from_ymd_opt(2027, 2, 18).unwrap()
        );
        assert_eq!(
            plan.preferences
                .ranking_for(AppointmentType::MedicationReview),
            &[Modality::Telephone, Modality::InPerson]
        );
        assert_eq!(
            plan.preferences.ranking_for(AppointmentType::Therapy),
            &[Modality::Video, Modality::Telephone, Modality::InPerson]
        );
        assert_eq!(plan.digital_exclusion().level, ExclusionLevel::None);
    }

    #[test]
    fn last_reviewed_on_defaults_to_today_and_may_not_be_in_the_future() {
        let mut v = example();
        v.as_object_mut().unwrap().remove("last_reviewed_on");
        let plan = parse(v).check(today()).unwrap();
        assert_eq!(plan.last_reviewed_on(), today());
        assert_eq!(
            plan.next_review_due(),
            NaiveDate::from_ymd_opt(2027, 2, 26).unwrap()
        );

        let mut v = example();
        v["last_reviewed_on"] = json!("2026-11-30");
        let errs = parse(v).check(today()).unwrap_err();
        assert_eq!(
            errs,
            vec![FieldError::new(
                "last_reviewed_on",
                "must not lie in the future"
            )]
        );
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_path() {
        let mut v = example();
        v["preferences"]["default"] = json!(["video", "video", "in_person", "in_person"]);
        v["preferences"]["by_appointment_type"] = json!({"therapy": []});
        v["preferences"]["uncomfortable_with"] = json!(["in_person"]);
        v["resources"]["devices"] = json!(["tablet", "tablet"]);
        v["initial_conversation"]["held_on"] = json!("2030-01-01");
        let errs = parse(v).check(today()).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "initial_conversation.held_on",
                "preferences.default[1]",
                "preferences.default[3]",
                "preferences.by_appointment_type.therapy",
                "preferences.uncomfortable_with[0]",
                "resources.devices[1]",
            ]
        );
        // Bounded text is refused as it is parsed.
        let mut v = example();
        v["notes"] = json!("x".repeat(10_001));
        assert!(serde_json::from_value::<PlanInput>(v).is_err());
    }

    #[test]
    fn unknown_fields_and_bad_enums_do_not_parse() {
        let mut v = example();
        v["resources"]["connectivty"] = json!("reliable");
        assert!(serde_json::from_value::<PlanInput>(v).is_err());
        let mut v = example();
        v["resources"]["connectivity"] = json!("great");
        assert!(serde_json::from_value::<PlanInput>(v).is_err());
        let mut v = example();
        v["review_interval_days"] = json!(400);
        assert!(serde_json::from_value::<PlanInput>(v).is_err());
        let mut v = example();
        v["backup_contact"]["number"] = json!("07700 900123");
        assert!(serde_json::from_value::<PlanInput>(v).is_err());
    }

    #[test]
    fn digital_exclusion_follows_excl_1() {
        use Connectivity as C;
        use Device as D;
        use DigitalSkills as S;
        use ExclusionFactor as F;
        use ExclusionLevel as L;
        type Case<'a> = (&'a [Device], C, S, L, &'a [F]);
        let cases: &[Case] = &[
            (&[D::Smartphone], C::Reliable, S::Basic, L::None, &[]),
            (&[D::Computer], C::Reliable, S::Confident, L::None, &[]),
            (
                &[D::Tablet],
                C::Limited,
                S::Basic,
                L::AtRisk,
                &[F::LimitedConnectivity],
            ),
            (
                &[D::Landline],
                C::Reliable,
                S::Basic,
                L::Excluded,
                &[F::NoDevice],
            ),
            (
                &[D::Mobile],
                C::Reliable,
                S::Confident,
                L::Excluded,
                &[F::NoDevice],
            ),
            (&[], C::Reliable, S::Basic, L::Excluded, &[F::NoDevice]),
            (
                &[D::Smartphone],
                C::None,
                S::Basic,
                L::Excluded,
                &[F::NoConnectivity],
            ),
            (
                &[D::Tablet],
                C::Reliable,
                S::None,
                L::Excluded,
                &[F::NoDigitalSkills],
            ),
            (
                &[D::Landline],
                C::Limited,
                S::None,
                L::Excluded,
                &[F::NoDevice, F::LimitedConnectivity, F::NoDigitalSkills],
            ),
        ];
        for (devices, c, s, level, factors) in cases {
            let got = DigitalExclusion::of(&resources(devices, *c, *s));
            assert_eq!(got.level, *level, "{devices:?} {c:?} {s:?}");
            assert_eq!(&got.factors, factors, "{devices:?} {c:?} {s:?}");
        }
    }

    #[test]
    fn device_capabilities_follow_conn_1() {
        assert!(Device::Smartphone.has_camera() && Device::Smartphone.can_call());
        assert!(!Device::Landline.has_camera() && Device::Landline.can_call());
        assert!(!Device::Landline.can_message());
        assert!(Device::Computer.can_message() && !Device::Computer.can_call());
        assert!(Device::Tablet.has_camera() && !Device::Tablet.can_message());
    }
}
