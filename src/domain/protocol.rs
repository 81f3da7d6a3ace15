//! Co-developed safety protocols (SAFE-1, SAFE-2, SAFE-3).

use super::types::{
    check_len, check_unique, is_future, PhoneNumber, ReviewInterval, RiskLevel, SubjectRef,
};
use super::FieldError;
use chrono::{Days, NaiveDate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The content of a safety protocol as agreed with the service user. The service adds `id`,
/// `version`, timestamps and `next_review_due`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SafetyProtocolInput {
    pub subject: SubjectRef,
    /// The clinician's current assessment.
    pub risk_level: RiskLevel,
    /// Numbers to call the service user back on after a disconnection (SAFE-2); at least one.
    #[schema(example = json!(["+447700900123"]))]
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
    #[schema(value_type = String, format = Date, example = "2026-11-20")]
    pub agreed_with_service_user_on: NaiveDate,
    /// Days between reviews (7–365, default 90).
    #[serde(default)]
    pub review_interval_days: ReviewInterval,
    /// Free text, at most 10 000 characters. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsualLocation {
    /// A short label such as `home` or `work`.
    #[schema(example = "home")]
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "1 High St, Leeds")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmergencyContact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationship: Option<String>,
    pub phone: PhoneNumber,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrisisResponse {
    #[schema(example = "Leeds crisis team")]
    pub team: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PhoneNumber>,
    /// How an in-person response is mobilised; required when risk is `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_person_plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "24/7")]
    pub hours: Option<String>,
}

impl SafetyProtocolInput {
    /// Checks what the types alone cannot; returns every problem found.
    pub fn validate(self, today: NaiveDate) -> Result<SafetyProtocolInput, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.call_back_numbers.is_empty() {
            errors.push(FieldError::new(
                "call_back_numbers",
                "must hold at least one call-back number (SAFE-2)",
            ));
        }
        if self.call_back_numbers.len() > 10 {
            errors.push(FieldError::new(
                "call_back_numbers",
                "must hold at most 10 numbers",
            ));
        }
        check_unique(&mut errors, "call_back_numbers", &self.call_back_numbers);
        if self.usual_locations.len() > 20 {
            errors.push(FieldError::new(
                "usual_locations",
                "must list at most 20 locations",
            ));
        }
        for (i, l) in self.usual_locations.iter().enumerate() {
            non_blank(
                &mut errors,
                format!("usual_locations[{i}].label"),
                &l.label,
                100,
            );
            if let Some(a) = &l.address {
                check_len(&mut errors, format!("usual_locations[{i}].address"), a, 500);
            }
        }
        if self.emergency_contacts.len() > 20 {
            errors.push(FieldError::new(
                "emergency_contacts",
                "must list at most 20 contacts",
            ));
        }
        for (i, c) in self.emergency_contacts.iter().enumerate() {
            non_blank(
                &mut errors,
                format!("emergency_contacts[{i}].name"),
                &c.name,
                200,
            );
            if let Some(r) = &c.relationship {
                check_len(
                    &mut errors,
                    format!("emergency_contacts[{i}].relationship"),
                    r,
                    100,
                );
            }
        }
        match &self.crisis_response {
            Some(cr) => {
                non_blank(&mut errors, "crisis_response.team", &cr.team, 200);
                if let Some(h) = &cr.hours {
                    check_len(&mut errors, "crisis_response.hours", h, 100);
                }
                match &cr.in_person_plan {
                    Some(p) if !p.trim().is_empty() => {
                        check_len(&mut errors, "crisis_response.in_person_plan", p, 2000)
                    }
                    _ if self.risk_level == RiskLevel::High => errors.push(FieldError::new(
                        "crisis_response.in_person_plan",
                        "is required when risk_level is high (SAFE-1)",
                    )),
                    Some(_) => errors.push(FieldError::new(
                        "crisis_response.in_person_plan",
                        "must not be blank",
                    )),
                    None => {}
                }
            }
            None if self.risk_level == RiskLevel::High => errors.push(FieldError::new(
                "crisis_response",
                "is required, with an in_person_plan, when risk_level is high (SAFE-1)",
            )),
            None => {}
        }
        if is_future(self.agreed_with_service_user_on, today) {
            errors.push(FieldError::new(
                "agreed_with_service_user_on",
                "must not lie in the future",
            ));
        }
        if let Some(n) = &self.notes {
            check_len(&mut errors, "notes", n, 10_000);
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    /// The agreement date + the review interval.
    pub fn next_review_due(&self) -> NaiveDate {
        self.agreed_with_service_user_on
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

fn non_blank(errors: &mut Vec<FieldError>, field: impl Into<String>, s: &str, max: usize) {
    let field = field.into();
    if s.trim().is_empty() {
        errors.push(FieldError::new(field, "must not be blank"));
    } else {
        check_len(errors, field, s, max);
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
        let p = parse(example()).validate(today()).unwrap();
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
        let errs = parse(v).validate(today()).unwrap_err();
        assert_eq!(errs[0].field, "crisis_response");

        let mut v = example();
        v["crisis_response"]
            .as_object_mut()
            .unwrap()
            .remove("in_person_plan");
        let errs = parse(v).validate(today()).unwrap_err();
        assert_eq!(errs[0].field, "crisis_response.in_person_plan");

        let mut v = example();
        v["risk_level"] = json!("moderate");
        v.as_object_mut().unwrap().remove("crisis_response");
        let p = parse(v).validate(today()).unwrap();
        assert!(!p.has_in_person_crisis_response());
    }

    #[test]
    fn every_problem_is_listed() {
        let mut v = example();
        v["call_back_numbers"] = json!([]);
        v["agreed_with_service_user_on"] = json!("2027-01-01");
        v["usual_locations"] = json!([{"label": " "}]);
        let errs = parse(v).validate(today()).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "call_back_numbers",
                "usual_locations[0].label",
                "agreed_with_service_user_on"
            ]
        );
    }

    #[test]
    fn duplicate_call_back_numbers_are_refused() {
        let mut v = example();
        v["call_back_numbers"] = json!(["+447700900123", "+447700900123"]);
        let errs = parse(v).validate(today()).unwrap_err();
        assert_eq!(errs[0].field, "call_back_numbers[1]");
    }
}
