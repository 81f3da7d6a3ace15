//! Co-developed safety protocols (SAFE-1, SAFE-2, SAFE-3).

use super::plan::check_max;
use super::types::{
    check_unique, is_future, Address, CalendarDate, Label, Name, Notes, PhoneNumber, PlanText,
    ReviewInterval, RiskLevel, SubjectRef, MAX_CALL_BACK_NUMBERS,
};
use super::FieldError;
use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The content of a safety protocol as agreed with the service user, not yet checked:
/// [`SafetyProtocolInput::check`] makes a [`SafetyProtocol`] of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyProtocolInput {
    pub subject: SubjectRef,
    /// The clinician's current assessment.
    pub risk_level: RiskLevel,
    /// Numbers to call the service user back on after a disconnection (SAFE-2); 1 to 10.
    pub call_back_numbers: Vec<PhoneNumber>,
    /// Where the service user usually is during remote sessions (SAFE-1).
    #[serde(default)]
    pub usual_locations: Vec<UsualLocation>,
    #[serde(default)]
    pub emergency_contacts: Vec<EmergencyContact>,
    /// How a fast in-person crisis response is mobilised (SAFE-1). Required, with an
    /// `in_person_plan`, when `risk_level` is `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crisis_response: Option<CrisisResponse>,
    /// The day the protocol was agreed with the service user; not in the future.
    pub agreed_with_service_user_on: CalendarDate,
    /// Days between reviews (7–365, default 90).
    #[serde(default)]
    pub review_interval_days: ReviewInterval,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<Notes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsualLocation {
    /// A short label such as `home` or `work`.
    pub label: Label,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyContact {
    pub name: Name,
    /// e.g. `mother`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<Label>,
    pub phone: PhoneNumber,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrisisResponse {
    /// The team that responds, e.g. `Leeds crisis team`.
    pub team: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    /// How an in-person response is mobilised; required when risk is `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_person_plan: Option<PlanText>,
    /// When the team can be reached, e.g. `24/7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<Label>,
}

impl SafetyProtocolInput {
    /// Checks what the types alone cannot; returns every problem found.
    pub fn check(self, today: NaiveDate) -> Result<SafetyProtocol, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.call_back_numbers.is_empty() {
            errors.push(FieldError::new(
                "call_back_numbers",
                "must hold at least one call-back number (SAFE-2)",
            ));
        }
        if self.call_back_numbers.len() > MAX_CALL_BACK_NUMBERS {
            errors.push(FieldError::new(
                "call_back_numbers",
                format!("must hold at most {MAX_CALL_BACK_NUMBERS} numbers"),
            ));
        }
        check_unique(&mut errors, "call_back_numbers", &self.call_back_numbers);
        check_max(
            &mut errors,
            "usual_locations",
            self.usual_locations.len(),
            "locations",
        );
        check_max(
            &mut errors,
            "emergency_contacts",
            self.emergency_contacts.len(),
            "contacts",
        );
        let in_person_plan = self
            .crisis_response
            .as_ref()
            .map(|c| c.in_person_plan.is_some());
        if self.risk_level == RiskLevel::High {
            match in_person_plan {
                None => errors.push(FieldError::new(
                    "crisis_response",
                    "is required, with an in_person_plan, when risk_level is high (SAFE-1)",
                )),
                Some(false) => errors.push(FieldError::new(
                    "crisis_response.in_person_plan",
                    "is required when risk_level is high (SAFE-1)",
                )),
                Some(true) => {}
            }
        }
        if is_future(self.agreed_with_service_user_on.get(), today) {
            errors.push(FieldError::new(
                "agreed_with_service_user_on",
                "must not lie in the future",
            ));
        }
        if errors.is_empty() {
            Ok(SafetyProtocol(self))
        } else {
            Err(errors)
        }
    }
}

/// A safety protocol whose content has been checked (by [`SafetyProtocolInput::check`]), or
/// was checked when it was recorded ([`SafetyProtocol::recorded`]). Reads like its content.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyProtocol(SafetyProtocolInput);

impl std::ops::Deref for SafetyProtocol {
    type Target = SafetyProtocolInput;
    fn deref(&self) -> &SafetyProtocolInput {
        &self.0
    }
}

impl SafetyProtocol {
    /// A protocol read back from storage, as it was written.
    pub fn recorded(content: SafetyProtocolInput) -> SafetyProtocol {
        SafetyProtocol(content)
    }

    pub fn content(&self) -> &SafetyProtocolInput {
        &self.0
    }

    pub fn into_content(self) -> SafetyProtocolInput {
        self.0
    }
}

impl SafetyProtocolInput {
    /// The agreement date + the review interval.
    pub fn next_review_due(&self) -> NaiveDate {
        self.agreed_with_service_user_on
            .get()
            .checked_add_days(Days::new(self.review_interval_days.days() as u64))
            .unwrap_or(NaiveDate::MAX)
    }

    /// Whether a fast in-person crisis response is on record (SAFE-1).
    pub fn has_in_person_crisis_response(&self) -> bool {
        self.crisis_response
            .as_ref()
            .and_then(|c| c.in_person_plan.as_deref())
            .is_some_and(|p| !p.trim().is_empty())
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
            "risk_level": "high",
            "call_back_numbers": ["+447700900123"],
            "usual_locations": [{"label": "home", "address": "1 High St, Leeds"}],
            "emergency_contacts": [{"name": "A. Carer", "relationship": "mother", "phone": "+447700900456"}],
            "crisis_response": {"team": "Leeds crisis team", "phone": "+441130000000", "in_person_plan": "Crisis team visits within 4 hours", "hours": "24/7"},
            "agreed_with_service_user_on": "2026-11-20",
            "review_interval_days": 30
        })
    }

    fn parse(v: serde_json::Value) -> SafetyProtocolInput {
        serde_json::from_value(v).expect("parses")
    }

    #[test]
    fn the_outline_example_is_valid() {
        let p = parse(example()).check(today()).unwrap();
        assert!(p.has_in_person_crisis_response());
        assert_eq!(
            p.next_review_due(),
            NaiveDate::from_ymd_opt(2026, 12, 20).unwrap()
        );
    }

    #[test]
    fn high_risk_needs_an_in_person_crisis_plan() {
        let mut v = example();
        v.as_object_mut().unwrap().remove("crisis_response");
        let errs = parse(v).check(today()).unwrap_err();
        assert_eq!(errs[0].field, "crisis_response");

        let mut v = example();
        v["crisis_response"]
            .as_object_mut()
            .unwrap()
            .remove("in_person_plan");
        let errs = parse(v).check(today()).unwrap_err();
        assert_eq!(errs[0].field, "crisis_response.in_person_plan");

        let mut v = example();
        v["risk_level"] = json!("moderate");
        v.as_object_mut().unwrap().remove("crisis_response");
        let p = parse(v).check(today()).unwrap();
        assert!(!p.has_in_person_crisis_response());
    }

    #[test]
    fn every_problem_is_listed() {
        let mut v = example();
        v["call_back_numbers"] = json!([]);
        v["agreed_with_service_user_on"] = json!("2027-01-01");
        let errs = parse(v).check(today()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["call_back_numbers", "agreed_with_service_user_on"]
        );
    }

    #[test]
    fn blank_or_multi_line_labels_do_not_parse() {
        for bad in [json!(" "), json!("home\nwork"), json!("x".repeat(101))] {
            let mut v = example();
            v["usual_locations"] = json!([{"label": bad}]);
            assert!(serde_json::from_value::<SafetyProtocolInput>(v).is_err());
        }
    }

    #[test]
    fn duplicate_call_back_numbers_are_refused() {
        let mut v = example();
        v["call_back_numbers"] = json!(["+447700900123", "+447700900123"]);
        let errs = parse(v).check(today()).unwrap_err();
        assert_eq!(errs[0].field, "call_back_numbers[1]");
    }
}
