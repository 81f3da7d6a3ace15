//! Rows written by an older build (format 0, saved in tests/fixtures/stored) are put straight
//! into the database, then read, used and changed through the API: history written by any
//! earlier version of the service stays readable.

use crate::helpers::*;
use crate::on_both_engines;
use serde_json::{json, Value};
use sqlx::types::Json;
use telemental::store::{Db, Store, Ts};
use uuid::Uuid;

fn sample(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stored/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs one statement with the binds given as JSON-ish values on either engine.
macro_rules! exec {
    ($store:expr, $sql:expr, $($bind:expr),* $(,)?) => {
        match &$store.db {
            Db::Sqlite(p) => { sqlx::query($sql)$(.bind($bind))*.execute(p).await.unwrap(); }
            Db::Postgres(p) => { sqlx::query($sql)$(.bind($bind))*.execute(p).await.unwrap(); }
        }
    };
}

struct Old {
    plan: Uuid,
    protocol: Uuid,
    check: Uuid,
    referral: Uuid,
}

async fn write_old_rows(store: &Store, tenant: &str) -> Old {
    let at = Ts::now();
    let old = Old {
        plan: Uuid::now_v7(),
        protocol: Uuid::now_v7(),
        check: Uuid::now_v7(),
        referral: Uuid::now_v7(),
    };
    let subject = "Patient/fixture-1";
    let due = chrono::NaiveDate::from_ymd_opt(2027, 1, 19).unwrap();
    for (table, versions, id, body) in [
        (
            "plans",
            "plan_versions",
            old.plan,
            sample("plan-v0-full.json"),
        ),
        (
            "safety_protocols",
            "safety_protocol_versions",
            old.protocol,
            sample("protocol-v0-full.json"),
        ),
    ] {
        exec!(store, &format!("INSERT INTO {table} (id, tenant, subject, version, body, review_due, created_at, updated_at) VALUES ($1, $2, $3, 1, $4, $5, $6, $6)"),
            id, tenant, subject, Json(&body), due, at);
        exec!(store, &format!("INSERT INTO {versions} (record_id, tenant, version, body, review_due, recorded_at, recorded_by) VALUES ($1, $2, 1, $3, $4, $5, 'old-build')"),
            id, tenant, Json(&body), due, at);
    }
    exec!(store, "INSERT INTO session_checks (id, tenant, subject, body, outcome, result, protocol_version, plan_version, created_at, created_by) VALUES ($1, $2, $3, $4, 'proceed_with_actions', $5, 1, 1, $6, 'old-build')",
        old.check, tenant, subject, Json(&sample("session-check-v0-full.json")),
        Json(&sample("session-check-outcome-v0-full.json")), at);
    let referral = sample("referral-v0-minimal.json");
    let due_by = Ts::from(chrono::Utc::now() + chrono::Duration::days(7));
    exec!(store, "INSERT INTO referrals (id, tenant, subject, version, body, status, due_by, created_at, updated_at) VALUES ($1, $2, $3, 1, $4, 'requested', $5, $6, $6)",
        old.referral, tenant, "Patient/fixture-2", Json(&referral), due_by, at);
    exec!(store, "INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by) VALUES ($1, $2, 1, $3, $4, 'old-build')",
        old.referral, tenant, Json(&referral), at);
    old
}

on_both_engines!(
    rows_written_by_an_older_build_are_read_used_and_changed,
    |app: TestApp| async move {
        let store = Store::connect(&app.settings.database_url, 1).await.unwrap();
        let old = write_old_rows(&store, "t1").await;

        let plan = app.get(&format!("/v1/plans/{}", old.plan), "t1").await;
        assert_eq!(plan.status, 200, "{}", plan.body);
        assert_eq!(plan.body["review_interval_days"], 60);
        assert_eq!(plan.body["backup_contact"]["method"], "text");
        assert_eq!(plan.body["digital_exclusion"]["level"], "none");
        assert_eq!(plan.body["updated_by"], "old-build");

        let protocol = app
            .get(&format!("/v1/safety-protocols/{}", old.protocol), "t1")
            .await;
        assert_eq!(protocol.status, 200, "{}", protocol.body);
        assert_eq!(protocol.body["crisis_response"]["hours"], "24/7");

        // The rules run on the old rows.
        let rec = app
            .post(
                "/v1/recommendations",
                "t1",
                &json!({"subject": "Patient/fixture-1", "appointment_type": "therapy"}),
            )
            .await;
        assert_eq!(rec.status, 200, "{}", rec.body);
        assert_eq!(rec.body["plan_version"], 1);
        assert_eq!(rec.body["protocol_version"], 1);

        let check = app
            .get(&format!("/v1/session-checks/{}", old.check), "t1")
            .await;
        assert_eq!(check.status, 200, "{}", check.body);
        assert_eq!(check.body["outcome"], "proceed_with_actions");
        assert_eq!(
            check.body["others_present"],
            json!(["trainee psychologist"])
        );

        // Replacing the old plan as read writes version 2 in today's format; both read.
        let mut body = plan.body.clone();
        body["notes"] = json!("reviewed");
        let put = app
            .put(&format!("/v1/plans/{}", old.plan), "t1", &body, "\"1\"")
            .await;
        assert_eq!(put.status, 200, "{}", put.body);
        let versions = app
            .get(&format!("/v1/plans/{}/versions", old.plan), "t1")
            .await;
        assert_eq!(versions.status, 200);
        let notes: Vec<&Value> = versions.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| &v["notes"])
            .collect();
        assert_eq!(notes, vec![&json!("reviewed"), &json!("free text")]);

        // An old referral moves on through its state machine.
        let moved = app
            .post(
                &format!("/v1/referrals/{}/status", old.referral),
                "t1",
                &json!({"status": "accepted"}),
            )
            .await;
        assert_eq!(moved.status, 200, "{}", moved.body);
        assert_eq!(moved.body["history"].as_array().unwrap().len(), 2);
        assert_eq!(moved.body["version"], 2);
        store.close().await;
    }
);
