//! The equity report's counts, aggregated in SQL on both engines (indexes: migration 0040),
//! and the recommendation counter.
//!
//! The SQL text is shared except for a few date expressions ([`Dialect`]); every query filters
//! by tenant first and reads an index range, never a record body.

use super::{on_db, Db, DbResult, Store, Ts};
use crate::domain::referral::{ReferralReason, Urgency};
use crate::domain::report::{
    modality_index, outcome_index, position, reason_index, urgency_index, Granularity, RawCounts,
    RawPeriod, ReportRange, Timeliness, FIRST_PREFERENCE, MASKS, REC_LEVELS,
};
use crate::domain::session_check::Outcome;
use crate::domain::types::Modality;
use chrono::{NaiveDate, NaiveTime};

/// The engine-specific expressions.
struct Dialect {
    postgres: bool,
}

impl Dialect {
    /// The first day of the period of an instant column (UTC), as a date.
    fn period_of_instant(&self, col: &str, g: Granularity) -> String {
        match (self.postgres, g) {
            (true, g) => format!(
                "CAST(date_trunc('{}', {col} AT TIME ZONE 'UTC') AS date)",
                g.as_str()
            ),
            // Instants are fixed-width RFC 3339 text on SQLite (see `Ts`).
            (false, Granularity::Month) => format!("substr({col}, 1, 7) || '-01'"),
            (false, Granularity::Week) => {
                format!("date(substr({col}, 1, 10), 'weekday 0', '-6 days')")
            }
        }
    }

    /// The first day of the period of a date column.
    fn period_of_date(&self, col: &str, g: Granularity) -> String {
        match (self.postgres, g) {
            (true, g) => format!(
                "CAST(date_trunc('{}', CAST({col} AS timestamp)) AS date)",
                g.as_str()
            ),
            (false, Granularity::Month) => format!("substr({col}, 1, 7) || '-01'"),
            (false, Granularity::Week) => format!("date({col}, 'weekday 0', '-6 days')"),
        }
    }

    /// The period of the whole range: a NULL date.
    fn no_period(&self) -> &'static str {
        if self.postgres {
            "CAST(NULL AS date)"
        } else {
            "NULL"
        }
    }

    /// Hours from instant `a` to instant `b`, as a float.
    fn hours_between(&self, a: &str, b: &str) -> String {
        if self.postgres {
            format!("CAST(EXTRACT(EPOCH FROM ({b} - {a})) / 3600.0 AS double precision)")
        } else {
            format!("((julianday({b}) - julianday({a})) * 24.0)")
        }
    }
}

fn midnight(d: NaiveDate) -> Ts {
    Ts::from(d.and_time(NaiveTime::MIN).and_utc())
}

/// A serde name (`"not_preferred"`) as the enum it names.
fn parse_name<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// Logs a category the report does not know (a row written by a newer build): it is left out
/// of the counts rather than failing the report. The name is a fixed vocabulary, never
/// personal data.
fn unknown(group: &'static str, name: &str) {
    tracing::warn!(
        group,
        category = name,
        "unknown category left out of the equity report"
    );
}

impl Store {
    /// Every count of the equity report for `tenant` over `range`, with "now" at `now`, read
    /// in one read-only transaction so that the counts agree with each other.
    #[tracing::instrument(skip_all, err)]
    pub async fn equity_counts(
        &self,
        tenant: &str,
        range: &ReportRange,
        now: Ts,
    ) -> DbResult<RawCounts> {
        let d = Dialect {
            postgres: matches!(self.db, Db::Postgres(_)),
        };
        let g = range.granularity;
        let (from_day, to_day) = (range.from, range.end_exclusive());
        let (from, to) = (midnight(from_day), midnight(to_day));
        let today = now.0.date_naive();

        // Current plans by exclusion mask: an index-only count.
        const PLANS_NOW: &str =
            "SELECT exclusion_mask, COUNT(*) FROM plans WHERE tenant = $1 GROUP BY exclusion_mask";
        const REVIEWS_NOW: &str =
            "SELECT COUNT(*) FROM plans WHERE tenant = $1 AND review_due < $2";
        // Plans written per period, by the mask of each plan's last version in the period:
        // one grouped pass over an index range. The mask is below 16, so the largest
        // `version * 16 + mask` of a plan's versions in a period carries its last mask.
        let period = d.period_of_instant("recorded_at", g);
        let plans_changed = format!(
            "SELECT period, CAST(last % 16 AS INTEGER), COUNT(*) FROM (\
               SELECT {period} AS period, MAX(version * 16 + exclusion_mask) AS last \
               FROM plan_versions WHERE tenant = $1 AND recorded_at >= $2 AND recorded_at < $3 \
               GROUP BY record_id, {period}\
             ) v GROUP BY period, last % 16"
        );
        // Current plans whose review fell due in a period and has passed.
        let period = d.period_of_date("review_due", g);
        let reviews = format!(
            "SELECT {period} AS period, COUNT(*) FROM plans \
             WHERE tenant = $1 AND review_due >= $2 AND review_due < $3 GROUP BY 1"
        );
        let period = d.period_of_date("day", g);
        let recommendations = format!(
            "SELECT {period} AS period, modality, exclusion_level, first_preference, \
             CAST(SUM(n) AS BIGINT) FROM recommendation_counts \
             WHERE tenant = $1 AND day >= $2 AND day < $3 GROUP BY 1, 2, 3, 4"
        );
        let period = d.period_of_instant("created_at", g);
        let checks = format!(
            "SELECT {period} AS period, outcome, COUNT(*) FROM session_checks \
             WHERE tenant = $1 AND created_at >= $2 AND created_at < $3 GROUP BY 1, 2"
        );
        let referrals = format!(
            "SELECT {period} AS period, reason, urgency, COUNT(*), \
             CAST(SUM(CASE WHEN status IN ('requested', 'accepted') AND due_by < $4 THEN 1 ELSE 0 END) AS BIGINT) \
             FROM referrals WHERE tenant = $1 AND created_at >= $2 AND created_at < $3 GROUP BY 1, 2, 3"
        );
        const OVERDUE_NOW: &str = "SELECT COUNT(*) FROM referrals \
            WHERE tenant = $1 AND status IN ('requested', 'accepted') AND due_by < $2";
        // Timeliness per period, then over the whole range (percentiles do not add up).
        let timely_by_period = d.timeliness(&period);
        let timely_in_range = d.timeliness(d.no_period());

        let f: Fetched = on_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            if d.postgres {
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                // These queries run in well under a second; compiling them costs more.
                sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
            }
            let f = Fetched {
                plans_now: sqlx::query_as(PLANS_NOW).bind(tenant).fetch_all(&mut *tx).await?,
                reviews_now: sqlx::query_as(REVIEWS_NOW).bind(tenant).bind(today).fetch_one(&mut *tx).await?,
                plans_changed: sqlx::query_as(&plans_changed).bind(tenant).bind(from).bind(to).fetch_all(&mut *tx).await?,
                reviews: sqlx::query_as(&reviews).bind(tenant).bind(from_day).bind(to_day.min(today)).fetch_all(&mut *tx).await?,
                recommendations: sqlx::query_as(&recommendations).bind(tenant).bind(from_day).bind(to_day).fetch_all(&mut *tx).await?,
                checks: sqlx::query_as(&checks).bind(tenant).bind(from).bind(to).fetch_all(&mut *tx).await?,
                referrals: sqlx::query_as(&referrals).bind(tenant).bind(from).bind(to).bind(now).fetch_all(&mut *tx).await?,
                overdue_now: sqlx::query_as(OVERDUE_NOW).bind(tenant).bind(now).fetch_one(&mut *tx).await?,
                timely_by_period: sqlx::query_as(&timely_by_period).bind(tenant).bind(from).bind(to).bind(now).fetch_all(&mut *tx).await?,
                timely_in_range: sqlx::query_as(&timely_in_range).bind(tenant).bind(from).bind(to).bind(now).fetch_all(&mut *tx).await?,
            };
            tx.commit().await?;
            f
        });
        let Fetched {
            plans_now,
            reviews_now: (reviews_now,),
            plans_changed,
            reviews,
            recommendations,
            checks,
            referrals,
            overdue_now: (overdue_now,),
            timely_by_period,
            timely_in_range,
        } = f;

        let mut raw = RawCounts {
            periods: vec![RawPeriod::default(); range.periods.len()],
            plans_review_overdue_now: reviews_now as u64,
            referrals_overdue_now: overdue_now as u64,
            ..RawCounts::default()
        };
        let slot = |start: NaiveDate| range.index_of(start);
        for (mask, n) in plans_now {
            if let Some(slot) = raw.plans_now.get_mut(mask as usize) {
                *slot += n as u64;
            }
        }
        for (start, mask, n) in plans_changed {
            if let (Some(i), true) = (slot(start), (mask as usize) < MASKS) {
                raw.periods[i].plans_changed[mask as usize] += n as u64;
            }
        }
        for (start, n) in reviews {
            if let Some(i) = slot(start) {
                raw.periods[i].plans_review_overdue += n as u64;
            }
        }
        for (start, modality, level, first, n) in recommendations {
            let Some(i) = slot(start) else { continue };
            let m = parse_name::<Modality>(&modality).map(modality_index);
            let (l, f) = (
                position(&REC_LEVELS, &level),
                position(&FIRST_PREFERENCE, &first),
            );
            match (m, l, f) {
                (Some(m), Some(l), Some(f)) => raw.periods[i].recommendations[m][l][f] += n as u64,
                _ => unknown("recommendations", &format!("{modality}/{level}/{first}")),
            }
        }
        for (start, outcome, n) in checks {
            let Some(i) = slot(start) else { continue };
            match parse_name::<Outcome>(&outcome) {
                Some(o) => raw.periods[i].session_checks[outcome_index(o)] += n as u64,
                None => unknown("session_checks", &outcome),
            }
        }
        for (start, reason, urgency, n, overdue) in referrals {
            let Some(i) = slot(start) else { continue };
            let r = reason.as_deref().and_then(parse_name::<ReferralReason>);
            let u = urgency.as_deref().and_then(parse_name::<Urgency>);
            match (r, u) {
                (Some(r), Some(u)) => {
                    raw.periods[i].referrals[reason_index(r)][urgency_index(u)] += n as u64;
                    raw.periods[i].referrals_overdue += overdue as u64;
                }
                _ => unknown(
                    "referrals",
                    &format!(
                        "{}/{}",
                        reason.unwrap_or_default(),
                        urgency.unwrap_or_default()
                    ),
                ),
            }
        }
        for (start, t) in timely_by_period.into_iter().map(timeliness) {
            if let Some(i) = start.and_then(slot) {
                raw.periods[i].timeliness = t;
            }
        }
        raw.timeliness = timely_in_range
            .into_iter()
            .map(timeliness)
            .next()
            .map(|(_, t)| t)
            .unwrap_or_default();
        Ok(raw)
    }
}

/// The rows of one report, as read.
struct Fetched {
    plans_now: Vec<(i32, i64)>,
    reviews_now: (i64,),
    plans_changed: Vec<(NaiveDate, i32, i64)>,
    reviews: Vec<(NaiveDate, i64)>,
    recommendations: Vec<(NaiveDate, String, String, String, i64)>,
    checks: Vec<(NaiveDate, String, i64)>,
    referrals: Vec<ReferralRow>,
    overdue_now: (i64,),
    timely_by_period: Vec<Timely>,
    timely_in_range: Vec<Timely>,
}

/// Period, reason, urgency, count, overdue now.
type ReferralRow = (NaiveDate, Option<String>, Option<String>, i64, i64);

/// Period, eligible, on time, scheduled, p50, p90.
type Timely = (Option<NaiveDate>, i64, i64, i64, Option<f64>, Option<f64>);

fn timeliness(
    (period, eligible, on_time, scheduled, p50, p90): Timely,
) -> (Option<NaiveDate>, Timeliness) {
    (
        period,
        Timeliness {
            eligible: eligible as u64,
            on_time: on_time as u64,
            scheduled: scheduled as u64,
            p50,
            p90,
        },
    )
}

impl Dialect {
    /// Referral timeliness grouped by `period` (an SQL expression over `created_at`; `NULL`
    /// for the whole range). Percentiles are nearest-rank, picked in SQL with window functions.
    /// Binds: tenant, from, to, now.
    fn timeliness(&self, period: &str) -> String {
        let hours = self.hours_between("created_at", "first_scheduled");
        // `first_scheduled`: the earliest version in the `scheduled` state, found in one pass
        // over the tenant's scheduled versions since `from` (a referral is scheduled after
        // it is requested), not one lookup per referral.
        format!(
            "WITH sched AS (\
               SELECT record_id, MIN(recorded_at) AS first_scheduled FROM referral_versions \
               WHERE tenant = $1 AND status = 'scheduled' AND recorded_at >= $2 GROUP BY record_id\
             ), r AS (\
               SELECT {period} AS period, created_at, due_by, status, sched.first_scheduled \
               FROM referrals LEFT JOIN sched ON sched.record_id = referrals.id \
               WHERE tenant = $1 AND created_at >= $2 AND created_at < $3\
             ), s AS (\
               SELECT period, {hours} AS hours, \
                 ROW_NUMBER() OVER (PARTITION BY period ORDER BY {hours}) AS pos, \
                 COUNT(*) OVER (PARTITION BY period) AS n \
               FROM r WHERE first_scheduled IS NOT NULL\
             ), p AS (\
               SELECT period, MIN(CASE WHEN pos = (n + 1) / 2 THEN hours END) AS p50, \
                 MIN(CASE WHEN pos = (9 * n + 9) / 10 THEN hours END) AS p90 \
               FROM s GROUP BY period\
             ), counts AS (\
               SELECT period, \
                 CAST(SUM(CASE WHEN first_scheduled IS NOT NULL OR (due_by < $4 AND status <> 'cancelled') THEN 1 ELSE 0 END) AS BIGINT) AS eligible, \
                 CAST(SUM(CASE WHEN first_scheduled IS NOT NULL AND first_scheduled <= due_by THEN 1 ELSE 0 END) AS BIGINT) AS on_time, \
                 CAST(SUM(CASE WHEN first_scheduled IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) AS scheduled \
               FROM r GROUP BY period\
             ) \
             SELECT c.period, c.eligible, c.on_time, c.scheduled, p.p50, p.p90 \
             FROM counts c LEFT JOIN p ON p.period IS NOT DISTINCT FROM c.period"
        )
    }
}
