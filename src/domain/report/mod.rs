//! The equity report (EXCL-1, F2F-1): who is digitally excluded, which modalities people are
//! recommended, how session checks end and whether fallback referrals are met on time, per
//! tenant and period, with small numbers suppressed. Plain types and functions: the store
//! fills [`RawCounts`], [`assemble`] turns them into the protected [`EquityReport`].

pub mod suppression;

use super::plan::Plan;
use super::plan::{
    Connectivity, Device, DigitalExclusion, DigitalSkills, ExclusionLevel, Resources,
};
use super::referral::{ReferralReason, Urgency};
use super::rules::{Recommendation, RecommendationRequest};
use super::session_check::Outcome;
use super::types::{CalendarDate, Modality};
use super::FieldError;
use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use suppression::{Shown, Table};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// The length of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// ISO weeks, Monday to Sunday (UTC).
    Week,
    /// Calendar months (UTC).
    Month,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }

    /// The first day of the period holding `d`.
    pub fn start_of(self, d: NaiveDate) -> NaiveDate {
        match self {
            Granularity::Week => d - Days::new(d.weekday().num_days_from_monday() as u64),
            Granularity::Month => d.with_day(1).expect("every month has a first day"),
        }
    }

    /// The first day of the next period.
    fn next(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            Granularity::Week => start.checked_add_days(Days::new(7)),
            Granularity::Month => start.checked_add_months(Months::new(1)),
        }
    }

    fn previous(self, start: NaiveDate, n: u32) -> Option<NaiveDate> {
        match self {
            Granularity::Week => start.checked_sub_days(Days::new(7 * n as u64)),
            Granularity::Month => start.checked_sub_months(Months::new(n)),
        }
    }

    /// The most periods one report may span.
    pub fn max_periods(self) -> usize {
        match self {
            Granularity::Week => 53,
            Granularity::Month => 36,
        }
    }
}

/// Periods shown when the client gives no `from`.
pub const DEFAULT_PERIODS: u32 = 12;

/// One period: its first and last day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

/// What a report covers: whole periods, so that two reports over overlapping ranges differ
/// by whole periods only (each protected on its own), never by a few days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRange {
    pub from: NaiveDate,
    /// The last day, inclusive.
    pub to: NaiveDate,
    pub granularity: Granularity,
    pub periods: Vec<Period>,
}

impl ReportRange {
    /// Parses the query's `from`, `to` (dates, inclusive) and `granularity`, widens the range
    /// to whole periods and checks its length. Every bad parameter is named.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        granularity: Option<&str>,
        today: NaiveDate,
    ) -> Result<ReportRange, Vec<FieldError>> {
        let mut errors = Vec::new();
        let granularity = match granularity {
            None | Some("month") => Some(Granularity::Month),
            Some("week") => Some(Granularity::Week),
            Some(other) => {
                errors.push(FieldError::new(
                    "granularity",
                    format!("must be week or month, not {other:?}"),
                ));
                None
            }
        };
        let mut date = |name: &str, v: Option<&str>| match v.map(CalendarDate::parse) {
            None => Ok(None),
            Some(Ok(d)) => Ok(Some(d.get())),
            Some(Err(e)) => {
                errors.push(FieldError::new(name, e));
                Err(())
            }
        };
        let (from, to) = (date("from", from), date("to", to));
        let (Some(g), Ok(from), Ok(to)) = (granularity, from, to) else {
            return Err(errors);
        };
        let to = g.start_of(to.unwrap_or(today));
        let from = match from {
            Some(f) => g.start_of(f),
            None => g.previous(to, DEFAULT_PERIODS - 1).unwrap_or(to),
        };
        if from > to {
            return Err(vec![FieldError::new("from", "must not be after to")]);
        }
        let mut periods = Vec::new();
        let mut start = from;
        while start <= to {
            let Some(next) = g.next(start) else { break };
            if periods.len() == g.max_periods() {
                return Err(vec![FieldError::new(
                    "from",
                    format!(
                        "the range spans more than {} {}s; ask for a shorter one",
                        g.max_periods(),
                        g.as_str()
                    ),
                )]);
            }
            periods.push(Period {
                start,
                end: next.pred_opt().unwrap_or(next),
            });
            start = next;
        }
        let to = periods.last().map_or(to, |p| p.end);
        Ok(ReportRange {
            from,
            to,
            granularity: g,
            periods,
        })
    }

    /// The index of the period starting on `start`.
    pub fn index_of(&self, start: NaiveDate) -> Option<usize> {
        self.periods.iter().position(|p| p.start == start)
    }

    /// The day after the range.
    pub fn end_exclusive(&self) -> NaiveDate {
        self.to.succ_opt().unwrap_or(self.to)
    }
}

// The categories of each group, in the order the report lists them. Each list's mapping from
// the domain's enum is an exhaustive match, so a new variant fails to compile until counted.

pub const LEVELS: [&str; 3] = ["none", "at_risk", "excluded"];
pub const FACTORS: [&str; 4] = [
    "no_device",
    "no_connectivity",
    "limited_connectivity",
    "no_digital_skills",
];
pub const MODALITIES: [&str; 4] = ["in_person", "video", "telephone", "text"];
/// A recommendation's plan exclusion level; `no_plan` when there was no plan.
pub const REC_LEVELS: [&str; 4] = ["none", "at_risk", "excluded", "no_plan"];
/// Whether the recommendation was the first modality of the plan's ranking.
pub const FIRST_PREFERENCE: [&str; 3] = ["yes", "no", "no_plan"];
pub const OUTCOMES: [&str; 3] = ["proceed", "proceed_with_actions", "do_not_proceed"];
pub const REASONS: [&str; 6] = [
    "not_preferred",
    "not_appropriate",
    "not_accessible",
    "technology_failure",
    "clinical_risk",
    "first_appointment",
];
pub const URGENCIES: [&str; 3] = ["routine", "urgent", "emergency"];

pub fn level_index(l: ExclusionLevel) -> usize {
    match l {
        ExclusionLevel::None => 0,
        ExclusionLevel::AtRisk => 1,
        ExclusionLevel::Excluded => 2,
    }
}

pub fn modality_index(m: Modality) -> usize {
    match m {
        Modality::InPerson => 0,
        Modality::Video => 1,
        Modality::Telephone => 2,
        Modality::Text => 3,
    }
}

pub fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Proceed => 0,
        Outcome::ProceedWithActions => 1,
        Outcome::DoNotProceed => 2,
    }
}

pub fn reason_index(r: ReferralReason) -> usize {
    match r {
        ReferralReason::NotPreferred => 0,
        ReferralReason::NotAppropriate => 1,
        ReferralReason::NotAccessible => 2,
        ReferralReason::TechnologyFailure => 3,
        ReferralReason::ClinicalRisk => 4,
        ReferralReason::FirstAppointment => 5,
    }
}

pub fn urgency_index(u: Urgency) -> usize {
    match u {
        Urgency::Routine => 0,
        Urgency::Urgent => 1,
        Urgency::Emergency => 2,
    }
}

/// The position of a stored category name in `list`.
pub fn position(list: &[&str], name: &str) -> Option<usize> {
    list.iter().position(|c| *c == name)
}

/// Digital exclusion factors as the bit mask the database computes (migration 0040):
/// 1 no_device, 2 no_connectivity, 4 limited_connectivity, 8 no_digital_skills.
pub const MASKS: usize = 16;

/// Resources with exactly the factors of `mask`; `None` for an impossible mask (no and limited
/// connectivity together).
fn resources_of_mask(mask: usize) -> Option<Resources> {
    let connectivity = match mask & 6 {
        0 => Connectivity::Reliable,
        2 => Connectivity::None,
        4 => Connectivity::Limited,
        _ => return None,
    };
    Some(Resources {
        devices: if mask & 1 == 1 {
            vec![]
        } else {
            vec![Device::Computer]
        },
        connectivity,
        digital_skills: if mask & 8 == 8 {
            DigitalSkills::None
        } else {
            DigitalSkills::Basic
        },
        familiar_platforms: vec![],
        private_space: None,
    })
}

/// The mask of a plan's resources, as the database computes it.
pub fn mask_of(resources: &Resources) -> usize {
    use super::plan::ExclusionFactor as F;
    DigitalExclusion::of(resources)
        .factors
        .iter()
        .map(|f| match f {
            F::NoDevice => 1,
            F::NoConnectivity => 2,
            F::LimitedConnectivity => 4,
            F::NoDigitalSkills => 8,
        })
        .sum()
}

/// The level (index into [`LEVELS`]) of every possible mask, by the domain's own rule.
fn mask_level(mask: usize) -> Option<usize> {
    resources_of_mask(mask).map(|r| level_index(DigitalExclusion::of(&r).level))
}

/// What one recommendation adds to the counts: no payload, no subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecommendationTally {
    pub day: NaiveDate,
    pub modality: &'static str,
    pub exclusion_level: &'static str,
    pub first_preference: &'static str,
}

impl RecommendationTally {
    pub fn of(
        req: &RecommendationRequest,
        plan: Option<&Plan>,
        rec: &Recommendation,
        day: NaiveDate,
    ) -> RecommendationTally {
        let modality = MODALITIES[modality_index(rec.recommended_modality)];
        let (exclusion_level, first_preference) = match plan {
            None => ("no_plan", "no_plan"),
            Some(p) => {
                let first = p.preferences.ranking_for(req.appointment_type).first();
                (
                    LEVELS[level_index(p.digital_exclusion().level)],
                    if first == Some(&rec.recommended_modality) {
                        "yes"
                    } else {
                        "no"
                    },
                )
            }
        };
        RecommendationTally {
            day,
            modality,
            exclusion_level,
            first_preference,
        }
    }
}

/// Referral timeliness in one period (or the whole range).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timeliness {
    /// Referrals scheduled, or past their due time unscheduled (cancelled ones aside).
    pub eligible: u64,
    /// Of those, first scheduled at or before their due time.
    pub on_time: u64,
    /// Referrals scheduled: the number the percentiles rest on.
    pub scheduled: u64,
    /// Hours from request to first scheduled: median and 90th percentile (nearest rank).
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

/// One period's counts, unprotected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawPeriod {
    /// Plans created or revised in the period, by the mask of their last version in it.
    pub plans_changed: [u64; MASKS],
    /// Current plans whose review fell due in the period and has not been done.
    pub plans_review_overdue: u64,
    /// Recommendations by modality × exclusion level × first preference.
    pub recommendations: [[[u64; 3]; 4]; 4],
    pub session_checks: [u64; 3],
    /// Referrals requested in the period, by reason × urgency.
    pub referrals: [[u64; 3]; 6],
    /// Of those, overdue now.
    pub referrals_overdue: u64,
    pub timeliness: Timeliness,
}

/// Everything the report counts, unprotected. Never leaves the service as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawCounts {
    /// The tenant's current plans by mask.
    pub plans_now: [u64; MASKS],
    /// Current plans whose review date has passed.
    pub plans_review_overdue_now: u64,
    /// Referrals overdue now, whenever requested.
    pub referrals_overdue_now: u64,
    pub periods: Vec<RawPeriod>,
    /// Timeliness over the whole range (percentiles do not add up from periods).
    pub timeliness: Timeliness,
}

/// A count as shown: an integer, `"<k"` (between 1 and k − 1), or `null` (withheld).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Value(u64),
    /// From 1 to threshold − 1; carries the threshold.
    Below(u64),
    Withheld,
}

impl Count {
    fn from_shown(s: Shown, threshold: u64) -> Count {
        match s {
            Shown::Count(v) => Count::Value(v),
            Shown::Below => Count::Below(threshold),
            Shown::Withheld => Count::Withheld,
        }
    }
}

impl Serialize for Count {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Count::Value(v) => s.serialize_u64(*v),
            Count::Below(k) => s.serialize_str(&format!("<{k}")),
            Count::Withheld => s.serialize_none(),
        }
    }
}

impl utoipa::PartialSchema for Count {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .description(Some("The exact count (0, or at least the threshold)")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^<[0-9]+$"))
                    .description(Some(
                        "Suppressed: from 1 to threshold − 1, e.g. \"<5\" for the threshold 5",
                    )),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Null)
                    .description(Some(
                        "Withheld (secondary suppression) so that a suppressed count elsewhere \
                         cannot be worked out by subtraction; says nothing of its value",
                    )),
            )
            .description(Some(
                "A count after small-number suppression: an integer, \"<k\" or null",
            ))
            .examples([serde_json::json!(12), serde_json::json!("<5")])
            .into()
    }
}

impl ToSchema for Count {}

/// Defines a group's counts: one field per category, every category always present.
macro_rules! counts {
    ($(#[$m:meta])* $name:ident [$list:expr] { $($(#[$fm:meta])* $field:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
        pub struct $name {
            $($(#[$fm])* pub $field: Count),+
        }

        impl $name {
            fn from_cells(cells: &[Count]) -> Self {
                let mut it = cells.iter().copied();
                let v = $name { $($field: it.next().expect("one count per category")),+ };
                debug_assert!(it.next().is_none());
                v
            }

            #[cfg(test)]
            fn names() -> Vec<&'static str> {
                vec![$(stringify!($field)),+]
            }

            #[cfg(test)]
            fn list() -> &'static [&'static str] {
                &$list
            }
        }
    };
}

counts!(
    /// Plans by digital exclusion level (EXCL-1).
    ExclusionLevels [LEVELS] { none, at_risk, excluded }
);
counts!(
    /// Plans by exclusion factor; a plan can have several factors, or none.
    ExclusionFactors [FACTORS] {
        /// No smartphone, tablet or computer.
        no_device, no_connectivity, limited_connectivity, no_digital_skills
    }
);
counts!(
    /// Recommendations by the modality recommended.
    Modalities [MODALITIES] { in_person, video, telephone, text }
);
counts!(
    /// Recommendations by the plan's exclusion level when it was made.
    RecommendationLevels [REC_LEVELS] {
        none, at_risk, excluded,
        /// No plan on record.
        no_plan
    }
);
counts!(
    /// Whether the recommendation was the first modality of the service user's ranking for
    /// the appointment type (FLEX-2).
    FirstPreference [FIRST_PREFERENCE] {
        yes, no,
        /// No plan on record: no ranking to honour.
        no_plan
    }
);
counts!(
    /// Session checks by outcome.
    Outcomes [OUTCOMES] { proceed, proceed_with_actions, do_not_proceed }
);
counts!(
    /// Fallback referrals by reason.
    Reasons [REASONS] {
        not_preferred, not_appropriate, not_accessible, technology_failure, clinical_risk,
        first_appointment
    }
);
counts!(
    /// Fallback referrals by urgency.
    Urgencies [URGENCIES] { routine, urgent, emergency }
);

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlanGroups {
    pub by_exclusion_level: ExclusionLevels,
    pub by_factor: ExclusionFactors,
    /// Totals: current plans whose review date has passed. A period: current plans whose
    /// review fell due in it and has not been done.
    pub review_overdue: Count,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RecommendationGroups {
    pub by_modality: Modalities,
    pub by_exclusion_level: RecommendationLevels,
    pub first_preference_honoured: FirstPreference,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SessionCheckGroups {
    pub by_outcome: Outcomes,
}

/// Hours from a referral's request to its first scheduling (nearest-rank percentiles).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HoursToScheduled {
    /// `null` when fewer than the threshold were scheduled.
    pub p50: Option<f64>,
    /// `null` when fewer than the threshold were scheduled.
    pub p90: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReferralGroups {
    pub by_reason: Reasons,
    pub by_urgency: Urgencies,
    /// Totals: every referral overdue now (past its due time while requested or accepted),
    /// whenever it was requested. A period: those requested in it that are overdue now.
    pub overdue: Count,
    /// Of the referrals scheduled or past their due time (cancelled ones aside), the share
    /// first scheduled by their due time, 0–1; `null` when fewer than the threshold.
    #[schema(minimum = 0, maximum = 1)]
    pub scheduled_before_due_share: Option<f64>,
    pub hours_to_scheduled: HoursToScheduled,
}

/// The report's groups, for the whole range (`totals`) or one period.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportGroups {
    /// Totals: a snapshot of the tenant's current plans. A period: plans created or revised
    /// in it, by their level at the end of it (a plan revised twice counts once).
    pub plans: PlanGroups,
    /// Recommendations made, counted as they were made.
    pub recommendations: RecommendationGroups,
    /// Start-of-session safety checks run.
    pub session_checks: SessionCheckGroups,
    /// Fallback referrals requested (F2F-1).
    pub referrals: ReferralGroups,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReportPeriod {
    /// The period's first day.
    pub start: NaiveDate,
    /// The period's last day.
    pub end: NaiveDate,
    #[serde(flatten)]
    pub groups: ReportGroups,
}

/// Aggregate counts for one tenant: no record, subject or free text, and every count from 1
/// to `suppression_threshold − 1` suppressed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EquityReport {
    /// The first day covered: the start of the period holding the `from` asked for.
    pub from: NaiveDate,
    /// The last day covered: the end of the period holding the `to` asked for.
    pub to: NaiveDate,
    pub granularity: Granularity,
    /// Counts from 1 to this − 1 read `"<k"`; shares and percentiles resting on fewer
    /// records are `null`.
    pub suppression_threshold: u64,
    /// The instant of "now" for the snapshots (current plans, overdue counts).
    pub generated_at: DateTime<Utc>,
    /// The whole range (plans: the current snapshot).
    pub totals: ReportGroups,
    /// Every period of the range, oldest first.
    pub periods: Vec<ReportPeriod>,
}

/// Cell ids of one row of a group table.
struct Row(Vec<usize>);

fn sum3<const A: usize, const B: usize, const C: usize>(
    a: &[[[u64; C]; B]; A],
    pick: impl Fn(usize, usize, usize) -> usize,
    n: usize,
) -> Vec<u64> {
    let mut out = vec![0; n];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in x.iter().enumerate() {
            for (k, v) in y.iter().enumerate() {
                out[pick(i, j, k)] += v;
            }
        }
    }
    out
}

/// A group table: one row per period and (when `range_row`) a row of totals over the range,
/// with an equation per category joining them.
struct Group {
    rows: Vec<Row>,
    total: Option<Row>,
}

impl Group {
    fn build(t: &mut Table, per_period: &[Vec<u64>], range_row: bool) -> Group {
        let rows: Vec<Row> = per_period
            .iter()
            .map(|vals| Row(vals.iter().map(|&v| t.cell(v)).collect()))
            .collect();
        let total = range_row.then(|| {
            let n = per_period.first().map_or(0, Vec::len);
            let cells: Vec<usize> = (0..n)
                .map(|c| {
                    let sum: u64 = per_period.iter().map(|r| r[c]).sum();
                    let tot = t.total(sum);
                    let parts: Vec<usize> = rows.iter().map(|r| r.0[c]).collect();
                    t.sum(tot, &parts);
                    tot
                })
                .collect();
            Row(cells)
        });
        Group { rows, total }
    }

    fn all_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().chain(self.total.iter())
    }
}

/// Shown counts of a row.
fn shown(s: &[Shown], row: &Row, k: u64) -> Vec<Count> {
    row.0.iter().map(|&c| Count::from_shown(s[c], k)).collect()
}

fn share(t: &Timeliness, k: u64) -> Option<f64> {
    (t.eligible >= k && t.eligible > 0).then(|| round(t.on_time as f64 / t.eligible as f64, 3))
}

fn hours(t: &Timeliness, k: u64) -> HoursToScheduled {
    let ok = t.scheduled >= k;
    HoursToScheduled {
        p50: t.p50.filter(|_| ok).map(|h| round(h, 1)),
        p90: t.p90.filter(|_| ok).map(|h| round(h, 1)),
    }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Protects the raw counts with `threshold` and lays them out as the report.
pub fn assemble(
    range: &ReportRange,
    raw: &RawCounts,
    threshold: u64,
    now: DateTime<Utc>,
) -> EquityReport {
    let k = threshold;
    let n = range.periods.len();
    debug_assert_eq!(raw.periods.len(), n);

    // Plans: the snapshot row and one row per period, each with its mask counts hidden.
    let mut pt = Table::new();
    let plan_row = |t: &mut Table, masks: &[u64; MASKS]| -> (Row, Row) {
        let mut levels = [0u64; 3];
        let mut factors = [0u64; 4];
        for (m, &v) in masks.iter().enumerate() {
            let Some(l) = mask_level(m) else { continue };
            levels[l] += v;
            for (f, bit) in [1, 2, 4, 8].iter().enumerate() {
                if m & bit != 0 {
                    factors[f] += v;
                }
            }
        }
        let lv = Row(levels.iter().map(|&v| t.cell(v)).collect());
        let fv = Row(factors.iter().map(|&v| t.cell(v)).collect());
        let atoms: Vec<(usize, usize)> = (0..MASKS)
            .filter_map(|m| mask_level(m).map(|_| (m, t.hidden(masks[m]))))
            .collect();
        for (l, &cell) in lv.0.iter().enumerate() {
            let parts: Vec<usize> = atoms
                .iter()
                .filter(|(m, _)| mask_level(*m) == Some(l))
                .map(|a| a.1)
                .collect();
            t.sum(cell, &parts);
        }
        for (f, &cell) in fv.0.iter().enumerate() {
            let bit = 1 << f;
            let parts: Vec<usize> = atoms
                .iter()
                .filter(|(m, _)| m & bit != 0)
                .map(|a| a.1)
                .collect();
            t.sum(cell, &parts);
        }
        (lv, fv)
    };
    let (now_levels, now_factors) = plan_row(&mut pt, &raw.plans_now);
    let current: u64 = raw.plans_now.iter().sum();
    let review_now = pt.total(raw.plans_review_overdue_now);
    let reviewed_or_not_due = pt.hidden(current.saturating_sub(raw.plans_review_overdue_now));
    pt.same_sum(&now_levels.0, &[review_now, reviewed_or_not_due]);
    let period_plans: Vec<(Row, Row, usize)> = raw
        .periods
        .iter()
        .map(|p| {
            let (l, f) = plan_row(&mut pt, &p.plans_changed);
            let r = pt.cell(p.plans_review_overdue);
            (l, f, r)
        })
        .collect();
    let in_range: u64 = raw.periods.iter().map(|p| p.plans_review_overdue).sum();
    let due_outside = pt.hidden(raw.plans_review_overdue_now.saturating_sub(in_range));
    let mut parts: Vec<usize> = period_plans.iter().map(|p| p.2).collect();
    parts.push(due_outside);
    pt.sum(review_now, &parts);
    let ps = pt.protect(k);

    // Recommendations: three partitions of each period's recommendations.
    let mut rt = Table::new();
    let by = |pick: fn(usize, usize, usize) -> usize, len: usize| -> Vec<Vec<u64>> {
        raw.periods
            .iter()
            .map(|p| sum3(&p.recommendations, pick, len))
            .collect()
    };
    let modality = Group::build(&mut rt, &by(|m, _, _| m, 4), true);
    let level = Group::build(&mut rt, &by(|_, l, _| l, 4), true);
    let first = Group::build(&mut rt, &by(|_, _, f| f, 3), true);
    for ((m, l), f) in modality
        .all_rows()
        .zip(level.all_rows())
        .zip(first.all_rows())
    {
        rt.same_sum(&m.0, &l.0);
        rt.same_sum(&l.0, &f.0);
        // No plan: counted in both groups alike.
        rt.same_sum(&[l.0[3]], &[f.0[2]]);
    }
    let rs = rt.protect(k);

    // Session checks: one partition.
    let mut st = Table::new();
    let checks: Vec<Vec<u64>> = raw
        .periods
        .iter()
        .map(|p| p.session_checks.to_vec())
        .collect();
    let outcome = Group::build(&mut st, &checks, true);
    let ss = st.protect(k);

    // Referrals: reasons and urgencies partition each period's referrals; overdue is a part.
    let mut ft = Table::new();
    let reasons: Vec<Vec<u64>> = raw
        .periods
        .iter()
        .map(|p| p.referrals.iter().map(|r| r.iter().sum()).collect())
        .collect();
    let urgencies: Vec<Vec<u64>> = raw
        .periods
        .iter()
        .map(|p| {
            (0..3)
                .map(|u| p.referrals.iter().map(|r| r[u]).sum())
                .collect()
        })
        .collect();
    let reason = Group::build(&mut ft, &reasons, true);
    let urgency = Group::build(&mut ft, &urgencies, true);
    for (r, u) in reason.all_rows().zip(urgency.all_rows()) {
        ft.same_sum(&r.0, &u.0);
    }
    let overdue_now = ft.total(raw.referrals_overdue_now);
    let mut overdue_cells = Vec::new();
    for (i, p) in raw.periods.iter().enumerate() {
        let od = ft.cell(p.referrals_overdue);
        let total: u64 = reasons[i].iter().sum();
        let not_overdue = ft.hidden(total.saturating_sub(p.referrals_overdue));
        ft.same_sum(&reason.rows[i].0, &[od, not_overdue]);
        overdue_cells.push(od);
    }
    let in_range: u64 = raw.periods.iter().map(|p| p.referrals_overdue).sum();
    let older = ft.hidden(raw.referrals_overdue_now.saturating_sub(in_range));
    let mut parts = overdue_cells.clone();
    parts.push(older);
    ft.sum(overdue_now, &parts);
    let fs = ft.protect(k);

    let groups = |i: Option<usize>| -> ReportGroups {
        let (pl, pf, pr) = match i {
            Some(i) => (&period_plans[i].0, &period_plans[i].1, period_plans[i].2),
            None => (&now_levels, &now_factors, review_now),
        };
        let pick = |g: &'_ Group| -> Vec<usize> {
            match i {
                Some(i) => g.rows[i].0.clone(),
                None => g.total.as_ref().expect("a row of totals").0.clone(),
            }
        };
        let (timeliness, overdue) = match i {
            Some(i) => (&raw.periods[i].timeliness, overdue_cells[i]),
            None => (&raw.timeliness, overdue_now),
        };
        ReportGroups {
            plans: PlanGroups {
                by_exclusion_level: ExclusionLevels::from_cells(&shown(&ps, pl, k)),
                by_factor: ExclusionFactors::from_cells(&shown(&ps, pf, k)),
                review_overdue: Count::from_shown(ps[pr], k),
            },
            recommendations: RecommendationGroups {
                by_modality: Modalities::from_cells(&shown(&rs, &Row(pick(&modality)), k)),
                by_exclusion_level: RecommendationLevels::from_cells(&shown(
                    &rs,
                    &Row(pick(&level)),
                    k,
                )),
                first_preference_honoured: FirstPreference::from_cells(&shown(
                    &rs,
                    &Row(pick(&first)),
                    k,
                )),
            },
            session_checks: SessionCheckGroups {
                by_outcome: Outcomes::from_cells(&shown(&ss, &Row(pick(&outcome)), k)),
            },
            referrals: ReferralGroups {
                by_reason: Reasons::from_cells(&shown(&fs, &Row(pick(&reason)), k)),
                by_urgency: Urgencies::from_cells(&shown(&fs, &Row(pick(&urgency)), k)),
                overdue: Count::from_shown(fs[overdue], k),
                scheduled_before_due_share: share(timeliness, k),
                hours_to_scheduled: hours(timeliness, k),
            },
        }
    };
    EquityReport {
        from: range.from,
        to: range.to,
        granularity: range.granularity,
        suppression_threshold: k,
        generated_at: now,
        totals: groups(None),
        periods: range
            .periods
            .iter()
            .enumerate()
            .map(|(i, p)| ReportPeriod {
                start: p.start,
                end: p.end,
                groups: groups(Some(i)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
