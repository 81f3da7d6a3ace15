//! `GET /v1/reports/equity`: the aggregates against seeded data on both engines, both kinds of
//! suppression, the CSV, validation, scopes and tenants.

use crate::helpers::*;
use crate::on_both_engines;
use chrono::{Datelike, NaiveDate, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::types::Json;
use telemental::domain::plan::{DigitalExclusion, Resources};
use telemental::domain::report::mask_of;
use telemental::store::{Db, Store, Ts};

async fn store(app: &TestApp) -> Store {
    Store::connect(&app.settings.database_url, 2).await.unwrap()
}

/// Runs one statement with binds on either engine.
macro_rules! exec {
    ($store:expr, $sql:expr, $($bind:expr),* $(,)?) => {
        match &$store.db {
            Db::Sqlite(p) => { sqlx::query($sql)$(.bind($bind))*.execute(p).await.unwrap(); }
            Db::Postgres(p) => { sqlx::query($sql)$(.bind($bind))*.execute(p).await.unwrap(); }
        }
    };
}

fn report_token(tenant: &str) -> String {
    token(tenant, "reports:read")
}

async fn report(app: &TestApp, tenant: &str, query: &str) -> Reply {
    app.call_with(
        Method::GET,
        &format!("/v1/reports/equity{query}"),
        &report_token(tenant),
        None,
        &[],
    )
    .await
}

fn plan(subject: &str, resources: Value) -> Value {
    let mut p = plan_body(subject);
    p["resources"] = resources;
    p["last_reviewed_on"] = json!(Utc::now().date_naive().to_string());
    p
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| &v[k])
}

on_both_engines!(
    the_report_counts_what_the_api_did_today_with_small_numbers_suppressed,
    |app: TestApp| async move {
        let reliable = json!({"devices": ["smartphone"], "connectivity": "reliable", "digital_skills": "confident"});
        let limited = json!({"devices": ["smartphone"], "connectivity": "limited", "digital_skills": "confident"});
        let offline =
            json!({"devices": ["landline"], "connectivity": "none", "digital_skills": "none"});
        for i in 0..6 {
            let r = app
                .post(
                    "/v1/plans",
                    "t1",
                    &plan(&format!("Patient/{i}"), reliable.clone()),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
        for i in 6..12 {
            app.post(
                "/v1/plans",
                "t1",
                &plan(&format!("Patient/{i}"), limited.clone()),
            )
            .await;
        }
        for i in 12..14 {
            app.post(
                "/v1/plans",
                "t1",
                &plan(&format!("Patient/{i}"), offline.clone()),
            )
            .await;
        }
        // Another tenant's plans never show.
        for i in 0..3 {
            app.post(
                "/v1/plans",
                "t2",
                &plan(&format!("Patient/{i}"), offline.clone()),
            )
            .await;
        }
        // Six recommendations for service users with plans, two without.
        for i in 0..6 {
            let r = app
                .post(
                    "/v1/recommendations",
                    "t1",
                    &json!({"subject": format!("Patient/{i}"), "appointment_type": "therapy"}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        for i in 100..102 {
            app.post(
                "/v1/recommendations",
                "t1",
                &json!({"subject": format!("Patient/{i}"), "appointment_type": "therapy"}),
            )
            .await;
        }
        let r = report(&app, "t1", "?granularity=week").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let b = &r.body;
        assert_eq!(b["granularity"], "week");
        assert_eq!(b["suppression_threshold"], 5);
        assert_eq!(b["periods"].as_array().unwrap().len(), 12);
        let last = b["periods"].as_array().unwrap().last().unwrap();
        let today = Utc::now().date_naive();
        assert_eq!(
            last["start"],
            (today - chrono::Days::new(today.weekday().num_days_from_monday() as u64)).to_string()
        );
        // Snapshot of current plans: 6 none, 6 at risk, 2 excluded.
        assert_eq!(
            at(b, "totals.plans.by_exclusion_level"),
            &json!({"none": 6, "at_risk": 6, "excluded": "<5"})
        );
        // no_device (2) and no_digital_skills (2) and no_connectivity (2) are primary;
        // limited_connectivity (6) = at_risk (6) + excluded with limited connectivity (0).
        let factors = at(b, "totals.plans.by_factor");
        assert_eq!(factors["no_device"], "<5");
        assert_eq!(factors["no_connectivity"], "<5");
        assert_eq!(factors["no_digital_skills"], "<5");
        // Plans written this week: the same (each written once).
        assert_eq!(
            at(last, "plans.by_exclusion_level"),
            at(b, "totals.plans.by_exclusion_level")
        );
        assert_eq!(at(last, "plans.review_overdue"), &json!(0));
        // Recommendations counted as they were made.
        let recs = at(b, "totals.recommendations");
        assert_eq!(
            recs["by_exclusion_level"],
            json!({"none": 6, "at_risk": 0, "excluded": 0, "no_plan": "<5"})
        );
        assert_eq!(recs["first_preference_honoured"]["no_plan"], "<5");
        // 6 plans ranked video first and can use it: 6 video; no plan: in person.
        assert_eq!(recs["by_modality"]["video"], 6);
        assert_eq!(recs["by_modality"]["in_person"], "<5");
        assert_eq!(recs["by_modality"]["telephone"], 0);
        assert_eq!(recs["first_preference_honoured"]["yes"], 6);
        // The other tenant sees its own three plans only, and no recommendations.
        let other = report(&app, "t2", "").await;
        assert_eq!(
            at(&other.body, "totals.plans.by_exclusion_level"),
            &json!({"none": 0, "at_risk": 0, "excluded": "<5"})
        );
        assert_eq!(
            at(&other.body, "totals.recommendations.by_modality.video"),
            &json!(0)
        );
    }
);

/// Counter rows and session checks written straight into the database in past periods.
async fn seed_periods(app: &TestApp) {
    let s = store(app).await;
    // Weeks of 2026: Mon 2 Nov – Sun 8 Nov, Mon 9 – Sun 15, Mon 16 – Sun 22.
    for (day, modality, n) in [
        ("2026-11-02", "video", 10i64),
        ("2026-11-08", "telephone", 7), // Sunday: still the first week
        ("2026-11-09", "video", 3),     // Monday: the second week
        ("2026-11-16", "video", 10),
        ("2026-11-16", "telephone", 6),
    ] {
        exec!(s, "INSERT INTO recommendation_counts (tenant, day, modality, exclusion_level, first_preference, shard, n) \
                  VALUES ($1, $2, $3, 'none', 'yes', 0, $4)",
              "t1", date(day), modality, n);
    }
    // Session checks at the edges of a week (UTC).
    let instants = [
        ("2026-11-08T23:59:59.999999Z", "proceed", 6),
        ("2026-11-09T00:00:00Z", "proceed", 6),
        ("2026-11-09T00:00:01Z", "do_not_proceed", 2),
        ("2026-11-22T12:00:00Z", "do_not_proceed", 8),
    ];
    for (at, outcome, n) in instants {
        let ts = Ts::from(
            chrono::DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&Utc),
        );
        for _ in 0..n {
            exec!(s, "INSERT INTO session_checks (id, tenant, subject, body, outcome, result, created_at, created_by) \
                      VALUES ($1, 't1', 'Patient/1', $2, $3, $2, $4, 'seed')",
                  uuid::Uuid::now_v7(), Json(json!({})), outcome, ts);
        }
    }
}

on_both_engines!(
    periods_split_at_week_edges_and_a_lone_small_period_withholds_its_total,
    |app: TestApp| async move {
        seed_periods(&app).await;
        let r = report(
            &app,
            "t1",
            "?from=2026-11-03&to=2026-11-20&granularity=week",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let b = &r.body;
        assert_eq!(
            (b["from"].as_str(), b["to"].as_str()),
            (Some("2026-11-02"), Some("2026-11-22"))
        );
        let p = b["periods"].as_array().unwrap();
        assert_eq!(
            p.iter()
                .map(|p| p["start"].as_str().unwrap())
                .collect::<Vec<_>>(),
            vec!["2026-11-02", "2026-11-09", "2026-11-16"]
        );
        let modality = |i: usize| p[i]["recommendations"]["by_modality"].clone();
        assert_eq!(modality(0)["video"], 10);
        assert_eq!(modality(0)["telephone"], 7);
        assert_eq!(modality(1)["video"], "<5");
        assert_eq!(modality(2)["video"], 10);
        // Primary: 3 in week 2. Its column's total (23) would give it away: withheld.
        assert_eq!(
            b["totals"]["recommendations"]["by_modality"]["video"],
            Value::Null
        );
        assert_eq!(
            b["totals"]["recommendations"]["by_modality"]["telephone"],
            13
        );
        // The other groups of the same recommendations: week 2 is 3 in every group, so the
        // "<5" cells there cannot be worked out from the shown ones either.
        assert_eq!(p[1]["recommendations"]["by_exclusion_level"]["none"], "<5");
        assert_eq!(
            b["totals"]["recommendations"]["by_exclusion_level"]["none"],
            Value::Null
        );
        // Session checks: the last microsecond of Sunday is in week 1, Monday's first in week 2.
        let outcomes = |i: usize| p[i]["session_checks"]["by_outcome"].clone();
        assert_eq!(
            outcomes(0),
            json!({"proceed": 6, "proceed_with_actions": 0, "do_not_proceed": 0})
        );
        assert_eq!(
            outcomes(1),
            json!({"proceed": 6, "proceed_with_actions": 0, "do_not_proceed": "<5"})
        );
        assert_eq!(
            outcomes(2),
            json!({"proceed": 0, "proceed_with_actions": 0, "do_not_proceed": 8})
        );
        assert_eq!(
            b["totals"]["session_checks"]["by_outcome"]["do_not_proceed"],
            Value::Null
        );
        assert_eq!(b["totals"]["session_checks"]["by_outcome"]["proceed"], 12);

        // Monthly, the same data: one period, nothing small left.
        let m = report(&app, "t1", "?from=2026-11-01&to=2026-11-30").await;
        assert_eq!(m.body["periods"].as_array().unwrap().len(), 1);
        assert_eq!(
            m.body["totals"]["recommendations"]["by_modality"]["video"],
            23
        );
        assert_eq!(
            m.body["totals"]["session_checks"]["by_outcome"]["do_not_proceed"],
            10
        );

        // CSV: one row per period and category, the same values; withheld is empty.
        let csv = app
            .call_with(
                Method::GET,
                "/v1/reports/equity?from=2026-11-03&to=2026-11-20&granularity=week",
                &report_token("t1"),
                None,
                &[("Accept", "text/csv")],
            )
            .await;
        assert_eq!(csv.status, 200);
        assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
        assert!(csv
            .header("content-disposition")
            .unwrap()
            .contains("equity-report-2026-11-02-2026-11-22-week.csv"));
        let text = csv.body.as_str().expect("CSV text");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "period,group,category,value");
        for row in [
            "total,recommendations.by_modality,video,",
            "total,recommendations.by_modality,telephone,13",
            "2026-11-09,recommendations.by_modality,video,<5",
            "2026-11-02,session_checks.by_outcome,proceed,6",
            "2026-11-16,plans.by_exclusion_level,at_risk,0",
            "2026-11-16,referrals,overdue,0",
            "total,referrals,scheduled_before_due_share,",
            "total,referrals.hours_to_scheduled,p90,",
        ] {
            assert!(lines.contains(&row), "missing {row:?} in\n{text}");
        }
        // 1 + (totals + 3 periods) × 35 values.
        let per_period = lines.iter().filter(|l| l.starts_with("total,")).count();
        assert_eq!(per_period, 35);
        assert_eq!(lines.len(), 1 + 4 * per_period);
    }
);

on_both_engines!(
    referral_timeliness_is_withheld_below_the_threshold_and_shown_above,
    |app: TestApp| async move {
        let mut ids = Vec::new();
        for i in 0..6 {
            let r = app
                .post(
                    "/v1/referrals",
                    "t1",
                    &json!({"subject": format!("Patient/{i}"),
                    "reason": "not_accessible", "urgency": "urgent"}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            ids.push(r.body["id"].as_str().unwrap().to_string());
        }
        let schedule =
            |id: String| {
                let app = &app;
                async move {
                    let r = app
                    .post(&format!("/v1/referrals/{id}/status"), "t1",
                          &json!({"status": "scheduled", "appointment_at": "2026-12-01T09:30:00Z"}))
                    .await;
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            };
        for id in ids.iter().take(4) {
            schedule(id.clone()).await;
        }
        let r = report(&app, "t1", "").await;
        let t = &r.body["totals"]["referrals"];
        assert_eq!(t["by_reason"]["not_accessible"], 6);
        assert_eq!(t["by_urgency"]["urgent"], 6);
        assert_eq!(t["overdue"], 0);
        // Four scheduled, none past due: the share rests on 4 < 5.
        assert_eq!(t["scheduled_before_due_share"], Value::Null);
        assert_eq!(t["hours_to_scheduled"], json!({"p50": null, "p90": null}));
        schedule(ids[4].clone()).await;
        // A reschedule does not move the first scheduling.
        schedule(ids[0].clone()).await;
        let r = report(&app, "t1", "").await;
        let t = &r.body["totals"]["referrals"];
        assert_eq!(t["scheduled_before_due_share"], 1.0);
        let p50 = t["hours_to_scheduled"]["p50"].as_f64().expect("p50 shown");
        assert!(
            (0.0..1.0).contains(&p50),
            "scheduled within the hour: {p50}"
        );
        assert!(t["hours_to_scheduled"]["p90"].as_f64().unwrap() >= p50);
        let last = r.body["periods"].as_array().unwrap().last().unwrap();
        assert_eq!(last["referrals"]["scheduled_before_due_share"], 1.0);
    }
);

on_both_engines!(
    overdue_referrals_and_plan_reviews_are_counted_now,
    |app: TestApp| async move {
        let s = store(&app).await;
        // Five referrals requested two days ago and due a day ago; one of them scheduled late.
        let created = Ts::from(Utc::now() - chrono::Duration::days(2));
        let due = Ts::from(Utc::now() - chrono::Duration::days(1));
        for i in 0..6 {
            let r = app
                .post(
                    "/v1/referrals",
                    "t1",
                    &json!({"subject": format!("Patient/{i}"),
                    "reason": "not_appropriate", "urgency": "emergency"}),
                )
                .await;
            let id: uuid::Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
            exec!(
                s,
                "UPDATE referrals SET created_at = $1, due_by = $2 WHERE id = $3",
                created,
                due,
                id
            );
        }
        let r = report(&app, "t1", "?granularity=week").await;
        let t = &r.body["totals"]["referrals"];
        assert_eq!(t["overdue"], 6);
        assert_eq!(t["by_urgency"]["emergency"], 6);
        // Past due and not scheduled: eligible, not on time.
        assert_eq!(t["scheduled_before_due_share"], 0.0);
        // Plans whose review is overdue: last reviewed long ago.
        for i in 0..3 {
            let mut p = plan_body(&format!("Patient/{i}"));
            p["last_reviewed_on"] = json!("2026-01-05");
            p["review_interval_days"] = json!(30);
            app.post("/v1/plans", "t1", &p).await;
        }
        let r = report(&app, "t1", "?from=2026-01-01&to=2026-03-31").await;
        assert_eq!(r.body["totals"]["plans"]["review_overdue"], "<5");
        // Due on 4 February: the February period holds them; the total would give them away
        // only together with the other periods, which are 0 — so something is withheld.
        let feb = &r.body["periods"][1];
        assert_eq!(feb["start"], "2026-02-01");
        assert_eq!(feb["plans"]["review_overdue"], "<5");
    }
);

on_both_engines!(
    the_database_computes_the_same_exclusion_as_the_domain_for_every_resource_combination,
    |app: TestApp| async move {
        let device_sets = [
            json!([]),
            json!(["landline"]),
            json!(["mobile"]),
            json!(["smartphone"]),
            json!(["tablet"]),
            json!(["computer"]),
            json!(["landline", "computer"]),
        ];
        let mut expected = std::collections::BTreeMap::<String, u64>::new();
        let mut n = 0;
        for devices in &device_sets {
            for connectivity in ["none", "limited", "reliable"] {
                for skills in ["none", "basic", "confident"] {
                    let res = json!({"devices": devices, "connectivity": connectivity, "digital_skills": skills});
                    let r = app
                        .post(
                            "/v1/plans",
                            "t1",
                            &plan(&format!("Patient/{n}"), res.clone()),
                        )
                        .await;
                    assert_eq!(r.status, 201, "{}", r.body);
                    n += 1;
                    let resources: Resources = serde_json::from_value(res).unwrap();
                    let ex = DigitalExclusion::of(&resources);
                    let level = serde_json::to_value(ex.level).unwrap();
                    *expected
                        .entry(format!("level.{}", level.as_str().unwrap()))
                        .or_default() += 1;
                    for f in ex.factors {
                        let f = serde_json::to_value(f).unwrap();
                        *expected
                            .entry(format!("factor.{}", f.as_str().unwrap()))
                            .or_default() += 1;
                    }
                }
            }
        }
        // Every stored sample, written as an older build wrote it, read by the database too.
        let s = store(&app).await;
        for name in [
            "plan-v0-full.json",
            "plan-v0-minimal.json",
            "plan-v1-full.json",
            "plan-v1-minimal.json",
        ] {
            let path = format!(
                "{}/tests/fixtures/stored/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let body: Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let id = uuid::Uuid::now_v7();
            exec!(s, "INSERT INTO plans (id, tenant, subject, version, body, review_due, created_at, updated_at) \
                      VALUES ($1, 't3', $2, 1, $3, $4, $5, $5)",
                  id, name, Json(body.clone()), date("2027-01-01"), Ts::now());
            let resources: Resources = serde_json::from_value(body["resources"].clone()).unwrap();
            let mask: i32 = match &s.db {
                Db::Sqlite(p) => {
                    sqlx::query_scalar("SELECT exclusion_mask FROM plans WHERE id = $1")
                        .bind(id)
                        .fetch_one(p)
                        .await
                        .unwrap()
                }
                Db::Postgres(p) => {
                    sqlx::query_scalar("SELECT exclusion_mask FROM plans WHERE id = $1")
                        .bind(id)
                        .fetch_one(p)
                        .await
                        .unwrap()
                }
            };
            assert_eq!(mask as usize, mask_of(&resources), "{name}");
        }
        let r = report(&app, "t1", "").await;
        let t = &r.body["totals"]["plans"];
        let get = |k: &str| expected.get(k).copied().unwrap_or(0);
        for level in ["none", "at_risk", "excluded"] {
            assert_eq!(
                t["by_exclusion_level"][level],
                get(&format!("level.{level}")),
                "{level}"
            );
        }
        for f in [
            "no_device",
            "no_connectivity",
            "limited_connectivity",
            "no_digital_skills",
        ] {
            assert_eq!(t["by_factor"][f], get(&format!("factor.{f}")), "{f}");
        }
        assert_eq!(n, 63);
    }
);

on_both_engines!(
    bad_parameters_scopes_and_tokens_get_problems,
    |app: TestApp| async move {
        let r = report(&app, "t1", "?from=2026-02-30&to=soon&granularity=day").await;
        r.assert_problem(422);
        assert_eq!(r.error_fields(), vec!["granularity", "from", "to"]);
        let r = report(&app, "t1", "?from=2026-12-01&to=2026-11-01").await;
        r.assert_problem(422);
        assert_eq!(r.error_fields(), vec!["from"]);
        let r = report(&app, "t1", "?from=2020-01-01&to=2026-11-01").await;
        r.assert_problem(422);
        assert!(
            r.body["detail"].as_str().unwrap().contains("36 months"),
            "{}",
            r.body
        );
        report(&app, "t1", "?form=2026-01-01")
            .await
            .assert_problem(400);
        let no_scope = app
            .call_with(
                Method::GET,
                "/v1/reports/equity",
                &token("t1", "plans:read"),
                None,
                &[],
            )
            .await;
        no_scope.assert_problem(403);
        let anonymous = Reply::from(
            app.client
                .get(app.url("/v1/reports/equity"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        anonymous.assert_problem(401);
        // A refusal and a read are both in the audit trail.
        let audit = app
            .get("/v1/audit-events?resource_type=equity_report", "t1")
            .await;
        let outcomes: Vec<&str> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["outcome"].as_str().unwrap())
            .collect();
        assert!(outcomes.contains(&"denied"), "{outcomes:?}");
        // The JSON is the default; a client asking for JSON or anything gets JSON.
        for accept in ["application/json", "*/*", "text/html, */*;q=0.1"] {
            let r = app
                .call_with(
                    Method::GET,
                    "/v1/reports/equity",
                    &report_token("t1"),
                    None,
                    &[("Accept", accept)],
                )
                .await;
            assert_eq!(r.status, 200);
            assert!(
                r.header("content-type")
                    .unwrap()
                    .starts_with("application/json"),
                "{accept}"
            );
        }
    }
);

on_both_engines!(
    a_plan_revised_in_a_period_counts_once_at_its_last_level,
    |app: TestApp| async move {
        let reliable = json!({"devices": ["smartphone"], "connectivity": "reliable", "digital_skills": "confident"});
        let limited = json!({"devices": ["smartphone"], "connectivity": "limited", "digital_skills": "confident"});
        let offline =
            json!({"devices": ["landline"], "connectivity": "none", "digital_skills": "none"});
        for i in 0..5 {
            let subject = format!("Patient/{i}");
            let r = app
                .post("/v1/plans", "t1", &plan(&subject, reliable.clone()))
                .await;
            let path = r.header("location").unwrap().to_string();
            let r = app
                .put(&path, "t1", &plan(&subject, limited.clone()), "\"1\"")
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            app.put(&path, "t1", &plan(&subject, offline.clone()), "\"2\"")
                .await;
        }
        let r = report(&app, "t1", "?granularity=week").await;
        let week = r.body["periods"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(
            week["plans"]["by_exclusion_level"],
            json!({"none": 0, "at_risk": 0, "excluded": 5})
        );
        assert_eq!(week["plans"]["by_factor"]["no_device"], 5);
        assert_eq!(week["plans"]["by_factor"]["limited_connectivity"], 0);
        assert_eq!(
            r.body["totals"]["plans"]["by_exclusion_level"]["excluded"],
            5
        );
    }
);
