//! Face-to-face fallback referrals (F2F-1): reasons, urgency, due times and the state machine.

use super::types::{AppointmentType, Detail, Reference, SubjectRef, Timestamp};
use super::FieldError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// Why remote care gave way to face-to-face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferralReason {
    NotPreferred,
    NotAppropriate,
    NotAccessible,
    TechnologyFailure,
    ClinicalRisk,
    FirstAppointment,
}

impl ReferralReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferralReason::NotPreferred => "not_preferred",
            ReferralReason::NotAppropriate => "not_appropriate",
            ReferralReason::NotAccessible => "not_accessible",
            ReferralReason::TechnologyFailure => "technology_failure",
            ReferralReason::ClinicalRisk => "clinical_risk",
            ReferralReason::FirstAppointment => "first_appointment",
        }
    }
}

/// How soon the face-to-face appointment is due (durations configurable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Routine,
    Urgent,
    Emergency,
}

/// Where a referral is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    Requested,
    Accepted,
    Scheduled,
    Completed,
    Cancelled,
}

impl ReferralStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReferralStatus::Requested => "requested",
            ReferralStatus::Accepted => "accepted",
            ReferralStatus::Scheduled => "scheduled",
            ReferralStatus::Completed => "completed",
            ReferralStatus::Cancelled => "cancelled",
        }
    }

    /// The states reachable from this one.
    pub fn allowed_next(self) -> &'static [ReferralStatus] {
        use ReferralStatus::*;
        match self {
            Requested => &[Accepted, Scheduled, Cancelled],
            Accepted => &[Scheduled, Cancelled],
            // scheduled → scheduled is a reschedule.
            Scheduled => &[Scheduled, Completed, Cancelled],
            Completed | Cancelled => &[],
        }
    }

    /// Still waiting for an appointment: the only states that can become overdue.
    pub fn awaiting_appointment(self) -> bool {
        matches!(self, ReferralStatus::Requested | ReferralStatus::Accepted)
    }
}

/// A new referral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralInput {
    pub subject: SubjectRef,
    pub reason: ReferralReason,
    pub urgency: Urgency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_type: Option<AppointmentType>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
    /// Who asked for it, e.g. `Practitioner/9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Reference>,
}

/// A requested change of status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: ReferralStatus,
    /// Required for `scheduled`, refused otherwise: when the face-to-face appointment is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Detail>,
}

/// One step of a referral's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    pub status: ReferralStatus,
    pub at: DateTime<Utc>,
    /// The token's `sub`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// Not a transition of the state machine; carries what is allowed from here.
    NotAllowed {
        from: ReferralStatus,
        to: ReferralStatus,
        allowed: &'static [ReferralStatus],
    },
    /// The change itself is invalid (e.g. `scheduled` without `appointment_at`).
    Invalid(Vec<FieldError>),
}

/// Checks a status change against the state machine.
pub fn transition(current: ReferralStatus, change: &StatusChange) -> Result<(), TransitionError> {
    let allowed = current.allowed_next();
    if !allowed.contains(&change.status) {
        return Err(TransitionError::NotAllowed {
            from: current,
            to: change.status,
            allowed,
        });
    }
    check_change(change).map_err(TransitionError::Invalid)
}

/// What a status change must hold whatever the referral's state: `appointment_at` exactly
/// when the new status is `scheduled`. Checked with the body, before any state.
pub fn check_change(change: &StatusChange) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    match (change.status, change.appointment_at) {
        (ReferralStatus::Scheduled, None) => errors.push(FieldError::new(
            "appointment_at",
            "is required when the status is scheduled",
        )),
        (s, Some(_)) if s != ReferralStatus::Scheduled => errors.push(FieldError::new(
            "appointment_at",
            "is only given with the status scheduled",
        )),
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// How long each urgency has before a referral is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueDurations {
    pub routine: Duration,
    pub urgent: Duration,
    pub emergency: Duration,
}

impl Default for DueDurations {
    fn default() -> Self {
        DueDurations {
            routine: Duration::from_secs(7 * 86_400),
            urgent: Duration::from_secs(24 * 3600),
            emergency: Duration::from_secs(4 * 3600),
        }
    }
}

impl DueDurations {
    pub fn due_by(&self, urgency: Urgency, requested_at: DateTime<Utc>) -> DateTime<Utc> {
        let d = match urgency {
            Urgency::Routine => self.routine,
            Urgency::Urgent => self.urgent,
            Urgency::Emergency => self.emergency,
        };
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| requested_at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Overdue: past its due time while still waiting for an appointment.
pub fn is_overdue(status: ReferralStatus, due_by: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    status.awaiting_appointment() && now > due_by
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReferralStatus::*;

    fn change(status: ReferralStatus, at: bool) -> StatusChange {
        StatusChange {
            status,
            appointment_at: at.then(|| Timestamp::new(Utc::now()).unwrap()),
            note: None,
        }
    }

    #[test]
    fn the_state_machine_allows_exactly_the_listed_transitions() {
        let all = [Requested, Accepted, Scheduled, Completed, Cancelled];
        let allowed = [
            (Requested, Accepted),
            (Requested, Scheduled),
            (Requested, Cancelled),
            (Accepted, Scheduled),
            (Accepted, Cancelled),
            (Scheduled, Scheduled),
            (Scheduled, Completed),
            (Scheduled, Cancelled),
        ];
        for from in all {
            for to in all {
                let ok = transition(from, &change(to, to == Scheduled)).is_ok();
                assert_eq!(ok, allowed.contains(&(from, to)), "{from:?} -> {to:?}");
            }
        }
        match transition(Completed, &change(Cancelled, false)) {
            Err(TransitionError::NotAllowed { allowed, .. }) => assert!(allowed.is_empty()),
            other => panic!("{other:?}"),
        }
        match transition(Accepted, &change(Requested, false)) {
            Err(TransitionError::NotAllowed { allowed, .. }) => {
                assert_eq!(allowed, &[Scheduled, Cancelled])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scheduling_needs_an_appointment_time_and_only_scheduling_takes_one() {
        match transition(Requested, &change(Scheduled, false)) {
            Err(TransitionError::Invalid(e)) => assert_eq!(e[0].field, "appointment_at"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            transition(Requested, &change(Accepted, true)),
            Err(TransitionError::Invalid(_))
        ));
    }

    #[test]
    fn due_times_follow_urgency_and_overdue_only_while_waiting() {
        let d = DueDurations::default();
        let t0 = DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            d.due_by(Urgency::Emergency, t0).to_rfc3339(),
            "2026-11-28T14:00:00+00:00"
        );
        assert_eq!(
            d.due_by(Urgency::Urgent, t0).to_rfc3339(),
            "2026-11-29T10:00:00+00:00"
        );
        assert_eq!(
            d.due_by(Urgency::Routine, t0).to_rfc3339(),
            "2026-12-05T10:00:00+00:00"
        );
        let due = d.due_by(Urgency::Emergency, t0);
        let later = due + chrono::Duration::seconds(1);
        assert!(!is_overdue(Requested, due, due));
        assert!(is_overdue(Requested, due, later));
        assert!(is_overdue(Accepted, due, later));
        for s in [Scheduled, Completed, Cancelled] {
            assert!(!is_overdue(s, due, later), "{s:?}");
        }
    }
}

/// What is stored of a referral: the request and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferralState {
    pub request: ReferralInput,
    pub status: ReferralStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_at: Option<DateTime<Utc>>,
    pub due_by: DateTime<Utc>,
    pub history: Vec<Transition>,
}

impl ReferralState {
    /// A new referral, due by its urgency's deadline.
    pub fn new(
        request: ReferralInput,
        due: &DueDurations,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Self {
        ReferralState {
            due_by: due.due_by(request.urgency, now),
            request,
            status: ReferralStatus::Requested,
            appointment_at: None,
            history: vec![Transition {
                status: ReferralStatus::Requested,
                at: now,
                actor: actor.to_string(),
                appointment_at: None,
                note: None,
            }],
        }
    }

    /// Applies a change allowed by [`transition`], keeping it in the history.
    pub fn apply(
        mut self,
        change: StatusChange,
        now: DateTime<Utc>,
        actor: &str,
    ) -> Result<Self, TransitionError> {
        transition(self.status, &change)?;
        self.status = change.status;
        let appointment_at = change.appointment_at.map(Timestamp::get);
        if appointment_at.is_some() {
            self.appointment_at = appointment_at;
        }
        self.history.push(Transition {
            status: change.status,
            at: now,
            actor: actor.to_string(),
            appointment_at,
            note: change.note.map(String::from),
        });
        Ok(self)
    }
}
