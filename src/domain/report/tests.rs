use super::*;
use serde_json::{json, Value};

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn today() -> NaiveDate {
    date("2026-11-29") // a Sunday
}

fn fields(r: Result<ReportRange, Vec<FieldError>>) -> Vec<String> {
    r.expect_err("invalid")
        .into_iter()
        .map(|e| e.field)
        .collect()
}

#[test]
fn ranges_widen_to_whole_weeks_and_months() {
    let r = ReportRange::parse(
        Some("2026-11-04"),
        Some("2026-11-18"),
        Some("week"),
        today(),
    )
    .unwrap();
    assert_eq!((r.from, r.to), (date("2026-11-02"), date("2026-11-22")));
    assert_eq!(r.periods.len(), 3);
    assert_eq!(r.periods[1].start, date("2026-11-09"));
    assert_eq!(r.periods[1].end, date("2026-11-15"));
    let r = ReportRange::parse(Some("2026-01-31"), Some("2026-03-01"), None, today()).unwrap();
    assert_eq!(r.granularity, Granularity::Month);
    assert_eq!((r.from, r.to), (date("2026-01-01"), date("2026-03-31")));
    assert_eq!(
        r.periods.iter().map(|p| p.end).collect::<Vec<_>>(),
        vec![date("2026-01-31"), date("2026-02-28"), date("2026-03-31")]
    );
    assert_eq!(r.end_exclusive(), date("2026-04-01"));
}

#[test]
fn without_dates_the_last_twelve_periods_up_to_today_are_covered() {
    let r = ReportRange::parse(None, None, None, today()).unwrap();
    assert_eq!((r.from, r.to), (date("2025-12-01"), date("2026-11-30")));
    assert_eq!(r.periods.len(), 12);
    let r = ReportRange::parse(None, None, Some("week"), today()).unwrap();
    assert_eq!(r.periods.len(), 12);
    assert_eq!(r.to, today());
    assert_eq!(r.from, date("2026-09-07"));
}

#[test]
fn every_bad_parameter_is_named() {
    assert_eq!(
        fields(ReportRange::parse(
            Some("2026-13-01"),
            Some("yesterday"),
            Some("day"),
            today()
        )),
        vec!["granularity", "from", "to"]
    );
    assert_eq!(
        fields(ReportRange::parse(
            Some("2026-12-01"),
            Some("2026-11-30"),
            None,
            today()
        )),
        vec!["from"]
    );
    assert_eq!(
        fields(ReportRange::parse(Some("1899-01-01"), None, None, today())),
        vec!["from"]
    );
}

#[test]
fn ranges_are_limited_to_53_weeks_or_36_months() {
    assert!(ReportRange::parse(Some("2024-01-01"), Some("2026-12-31"), None, today()).is_ok());
    assert_eq!(
        fields(ReportRange::parse(
            Some("2023-12-31"),
            Some("2026-12-31"),
            None,
            today()
        )),
        vec!["from"]
    );
    let ok = ReportRange::parse(
        Some("2025-11-24"),
        Some("2026-11-29"),
        Some("week"),
        today(),
    );
    assert_eq!(ok.unwrap().periods.len(), 53);
    assert!(ReportRange::parse(
        Some("2025-11-17"),
        Some("2026-11-29"),
        Some("week"),
        today()
    )
    .is_err());
}

#[test]
fn category_lists_are_the_domain_names_in_order() {
    fn names<T: serde::Serialize>(items: impl IntoIterator<Item = T>) -> Vec<String> {
        items
            .into_iter()
            .map(|t| {
                serde_json::to_value(t)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }
    fn parse<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_json::from_value(json!(s)).unwrap()
    }
    for (i, n) in MODALITIES.iter().enumerate() {
        assert_eq!(modality_index(parse(n)), i);
    }
    for (i, n) in LEVELS.iter().enumerate() {
        assert_eq!(level_index(parse(n)), i);
    }
    for (i, n) in OUTCOMES.iter().enumerate() {
        assert_eq!(outcome_index(parse(n)), i);
    }
    for (i, n) in REASONS.iter().enumerate() {
        assert_eq!(reason_index(parse(n)), i);
    }
    for (i, n) in URGENCIES.iter().enumerate() {
        assert_eq!(urgency_index(parse(n)), i);
    }
    assert_eq!(names(Modality::ALL), MODALITIES.to_vec());
    use super::super::plan::ExclusionFactor as F;
    assert_eq!(
        names([
            F::NoDevice,
            F::NoConnectivity,
            F::LimitedConnectivity,
            F::NoDigitalSkills
        ]),
        FACTORS.to_vec()
    );
    // Each group's fields are its list, in order.
    assert_eq!(ExclusionLevels::names(), ExclusionLevels::list().to_vec());
    assert_eq!(ExclusionFactors::names(), ExclusionFactors::list().to_vec());
    assert_eq!(Modalities::names(), Modalities::list().to_vec());
    assert_eq!(
        RecommendationLevels::names(),
        RecommendationLevels::list().to_vec()
    );
    assert_eq!(FirstPreference::names(), FirstPreference::list().to_vec());
    assert_eq!(Outcomes::names(), Outcomes::list().to_vec());
    assert_eq!(Reasons::names(), Reasons::list().to_vec());
    assert_eq!(Urgencies::names(), Urgencies::list().to_vec());
}

#[test]
fn masks_follow_the_domains_exclusion_rule() {
    let mut valid = 0;
    for m in 0..MASKS {
        match resources_of_mask(m) {
            Some(r) => {
                valid += 1;
                assert_eq!(mask_of(&r), m, "mask {m}");
            }
            None => assert_eq!(m & 6, 6),
        }
    }
    assert_eq!(valid, 12);
    assert_eq!(mask_level(0), Some(0));
    assert_eq!(mask_level(4), Some(1));
    for m in [1, 2, 5, 8, 12, 13] {
        assert_eq!(mask_level(m), Some(2), "mask {m}");
    }
}

fn range() -> ReportRange {
    ReportRange::parse(Some("2026-09-01"), Some("2026-11-30"), None, today()).unwrap()
}

/// Three months; large enough numbers everywhere except where a test puts small ones.
fn raw() -> RawCounts {
    let mut p = RawPeriod::default();
    p.plans_changed[0] = 40; // none
    p.plans_changed[4] = 20; // at risk: limited connectivity
    p.plans_changed[5] = 10; // excluded: no device, limited connectivity
    p.plans_changed[9] = 10; // excluded: no device, no skills
    p.plans_review_overdue = 6;
    p.recommendations[0][3][2] = 10; // in person, no plan
    p.recommendations[1][0][0] = 30; // video, none, first preference
    p.recommendations[2][1][1] = 10; // telephone, at risk, not first
    p.recommendations[0][2][1] = 10; // in person, excluded, not first
    p.session_checks = [20, 15, 10];
    p.referrals[2][0] = 8;
    p.referrals[1][1] = 6;
    p.referrals_overdue = 0;
    p.timeliness = Timeliness {
        eligible: 10,
        on_time: 8,
        scheduled: 9,
        p50: Some(20.04),
        p90: Some(70.0),
    };
    let mut plans_now = [0; MASKS];
    plans_now[0] = 500;
    plans_now[4] = 100;
    plans_now[5] = 60;
    plans_now[9] = 40;
    RawCounts {
        plans_now,
        plans_review_overdue_now: 30,
        referrals_overdue_now: 0,
        periods: vec![p.clone(), p.clone(), p],
        timeliness: Timeliness {
            eligible: 30,
            on_time: 24,
            scheduled: 27,
            p50: Some(21.0),
            p90: Some(71.0),
        },
    }
}

fn at(v: &Value, path: &str) -> Value {
    path.split('.').fold(v.clone(), |v, k| v[k].clone())
}

fn report(raw: &RawCounts) -> Value {
    let now = "2026-11-29T12:00:00Z".parse().unwrap();
    serde_json::to_value(assemble(&range(), raw, 5, now)).unwrap()
}

#[test]
fn large_counts_are_shown_exactly_and_add_up() {
    let r = report(&raw());
    assert_eq!(r["from"], "2026-09-01");
    assert_eq!(r["to"], "2026-11-30");
    assert_eq!(r["granularity"], "month");
    assert_eq!(r["suppression_threshold"], 5);
    assert_eq!(
        at(&r, "totals.plans.by_exclusion_level"),
        json!({"none": 500, "at_risk": 100, "excluded": 100})
    );
    assert_eq!(
        at(&r, "totals.plans.by_factor"),
        json!({"no_device": 100, "no_connectivity": 0, "limited_connectivity": 160, "no_digital_skills": 40})
    );
    assert_eq!(at(&r, "totals.plans.review_overdue"), json!(30));
    assert_eq!(
        at(&r, "totals.recommendations.by_modality"),
        json!({"in_person": 60, "video": 90, "telephone": 30, "text": 0})
    );
    assert_eq!(
        at(&r, "totals.recommendations.first_preference_honoured"),
        json!({"yes": 90, "no": 60, "no_plan": 30})
    );
    assert_eq!(
        at(&r, "totals.session_checks.by_outcome"),
        json!({"proceed": 60, "proceed_with_actions": 45, "do_not_proceed": 30})
    );
    assert_eq!(
        at(&r, "totals.referrals.by_urgency"),
        json!({"routine": 24, "urgent": 18, "emergency": 0})
    );
    assert_eq!(
        at(&r, "totals.referrals.scheduled_before_due_share"),
        json!(0.8)
    );
    assert_eq!(
        at(&r, "totals.referrals.hours_to_scheduled"),
        json!({"p50": 21.0, "p90": 71.0})
    );
    let periods = r["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 3);
    assert_eq!(periods[0]["start"], "2026-09-01");
    assert_eq!(periods[0]["end"], "2026-09-30");
    assert_eq!(
        at(&periods[0], "plans.by_exclusion_level"),
        json!({"none": 40, "at_risk": 20, "excluded": 20})
    );
    assert_eq!(
        at(&periods[0], "referrals.hours_to_scheduled.p50"),
        json!(20.0)
    );
}

/// Every shown count in the report, with its JSON path.
fn suppressed(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                suppressed(x, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                suppressed(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) if s.starts_with('<') => out.push((path.to_string(), v.clone())),
        Value::Null => out.push((path.to_string(), v.clone())),
        _ => {}
    }
}

#[test]
fn a_small_count_in_one_period_withholds_its_columns_total() {
    let mut raw = raw();
    raw.periods[1].session_checks[2] = 3;
    let r = report(&raw);
    assert_eq!(
        at(&r["periods"][1], "session_checks.by_outcome.do_not_proceed"),
        json!("<5")
    );
    // 10 + 3 + 10 = 23 would give the 3 away.
    assert_eq!(
        at(&r, "totals.session_checks.by_outcome.do_not_proceed"),
        Value::Null
    );
    assert_eq!(
        at(&r, "totals.session_checks.by_outcome.proceed"),
        json!(60)
    );
    let mut all = Vec::new();
    suppressed(&r, "", &mut all);
    assert_eq!(all.len(), 2, "{all:?}");
}

#[test]
fn a_small_category_is_not_recoverable_from_another_group_of_the_same_period() {
    let mut raw = raw();
    // Period 0: telephone 10 → 2 (and at risk / not first likewise): 2 = (none+at_risk+...)
    raw.periods[0].recommendations[2][1][1] = 2;
    let r = report(&raw);
    let p = &r["periods"][0]["recommendations"];
    assert_eq!(p["by_modality"]["telephone"], "<5");
    assert_eq!(p["by_exclusion_level"]["at_risk"], "<5");
    // modality: 20 + 30 + 2 + 0; level: 30 + 2 + 10 + 10; first: 30 + 12 + 10 — the
    // "no" cell (12) alone would not give 2 away, but the groups share one total, so each
    // group with a "<5" needs a second unknown.
    for group in ["by_modality", "by_exclusion_level"] {
        let unknown = p[group]
            .as_object()
            .unwrap()
            .values()
            .filter(|v| !v.is_u64())
            .count();
        assert!(unknown >= 2, "{group}: {}", p[group]);
    }
    // And the range totals of telephone and at_risk cannot give the period's value away.
    let t = &r["totals"]["recommendations"];
    assert!(
        t["by_modality"]["telephone"].is_null()
            || !r["periods"][1]["recommendations"]["by_modality"]["telephone"].is_u64()
    );
    assert!(
        t["by_exclusion_level"]["at_risk"].is_null()
            || t["by_exclusion_level"]["at_risk"].is_string()
    );
}

#[test]
fn limited_connectivity_does_not_give_away_at_risk_when_no_plan_is_excluded() {
    let mut raw = raw();
    raw.plans_now = [0; MASKS];
    raw.plans_now[0] = 50;
    raw.plans_now[4] = 3; // at risk, and no excluded plan: limited_connectivity = at_risk
    raw.plans_review_overdue_now = 0;
    for p in &mut raw.periods {
        p.plans_review_overdue = 0;
    }
    let r = report(&raw);
    let plans = &r["totals"]["plans"];
    assert_eq!(plans["by_exclusion_level"]["at_risk"], "<5");
    assert_eq!(plans["by_exclusion_level"]["excluded"], 0);
    assert_eq!(plans["by_factor"]["limited_connectivity"], "<5");
}

#[test]
fn shares_and_percentiles_resting_on_fewer_than_the_threshold_are_withheld() {
    let mut raw = raw();
    raw.periods[2].timeliness = Timeliness {
        eligible: 4,
        on_time: 4,
        scheduled: 4,
        p50: Some(3.0),
        p90: Some(5.0),
    };
    let r = report(&raw);
    let p = &r["periods"][2]["referrals"];
    assert_eq!(p["scheduled_before_due_share"], Value::Null);
    assert_eq!(p["hours_to_scheduled"], json!({"p50": null, "p90": null}));
    assert_eq!(
        r["periods"][1]["referrals"]["scheduled_before_due_share"],
        json!(0.8)
    );
}

#[test]
fn an_empty_tenant_reports_zeros_and_nothing_withheld() {
    let raw = RawCounts {
        periods: vec![RawPeriod::default(); 3],
        ..RawCounts::default()
    };
    let r = report(&raw);
    let mut all = Vec::new();
    suppressed(&r, "", &mut all);
    let counts: Vec<_> = all
        .iter()
        .filter(|(p, _)| !p.contains("share") && !p.contains("hours_to_scheduled"))
        .collect();
    assert!(counts.is_empty(), "{counts:?}");
    assert_eq!(at(&r, "totals.plans.by_exclusion_level.none"), json!(0));
}

#[test]
fn the_tally_says_whether_the_first_preference_was_honoured() {
    use crate::domain::rules::{recommend, RecommendationRequest};
    let plan_json = json!({
        "subject": "Patient/1",
        "initial_conversation": {"held_on": "2026-11-20"},
        "preferences": {"default": ["video", "telephone", "in_person"]},
        "resources": {"devices": ["computer"], "connectivity": "limited", "digital_skills": "confident",
                      "private_space": "yes"},
        "review_interval_days": 90
    });
    let plan = serde_json::from_value::<super::super::plan::PlanInput>(plan_json)
        .unwrap()
        .check(today())
        .unwrap();
    let req: RecommendationRequest =
        serde_json::from_value(json!({"subject": "Patient/1", "appointment_type": "therapy"}))
            .unwrap();
    let rec = recommend(&req, Some(&plan), None, today());
    let t = RecommendationTally::of(&req, Some(&plan), &rec, today());
    assert_eq!(t.exclusion_level, "at_risk");
    assert_eq!(
        t.modality,
        MODALITIES[modality_index(rec.recommended_modality)]
    );
    let honoured = rec.recommended_modality == Modality::Video;
    assert_eq!(t.first_preference, if honoured { "yes" } else { "no" });
    let none = recommend(&req, None, None, today());
    let t = RecommendationTally::of(&req, None, &none, today());
    assert_eq!(
        (t.modality, t.exclusion_level, t.first_preference),
        ("in_person", "no_plan", "no_plan")
    );
}
