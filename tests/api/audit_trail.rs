//! Issue 12 part 5 and issue 9 part 5: every denial and every change of configuration is
//! audited, and the trail of one subject lists every read and write made on it.

use crate::helpers::*;
use crate::on_both_engines;
use crate::safety::protocol_body;
use crate::webhooks::{spawn_webhook_app, Receiver};
use reqwest::Method;
use serde_json::{json, Value};

/// `(action, resource_type, outcome)` of every event of the trail, following the cursor.
async fn trail(app: &TestApp, tenant: &str, query: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = app
            .get(
                &format!("/v1/audit-events?limit=200{query}{cursor}"),
                tenant,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        for e in r.body["items"].as_array().unwrap() {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            out.push((s("action"), s("resource_type"), s("outcome")));
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

fn t(a: &str, r: &str, o: &str) -> (String, String, String) {
    (a.into(), r.into(), o.into())
}

#[actix_web::test]
async fn every_denial_and_configuration_change_is_audited_sqlite() {
    denials_and_configuration(spawn_webhook_app(Engine::Sqlite).await.unwrap()).await;
}

#[actix_web::test]
async fn every_denial_and_configuration_change_is_audited_postgres() {
    if let Some(app) = spawn_webhook_app(Engine::Postgres).await {
        denials_and_configuration(app).await;
    }
}

async fn denials_and_configuration(app: TestApp) {
    {
        let weak = token("t1", "plans:read");
        for (method, path, body) in [
            (Method::GET, "/v1/webhooks", None),
            (
                Method::POST,
                "/v1/webhooks",
                Some(json!({"url": "https://example.org/h", "events": ["referral.created"]})),
            ),
            (Method::GET, "/v1/audit-events", None),
            (
                Method::POST,
                "/v1/recommendations",
                Some(json!({"subject": "Patient/x", "appointment_type": "therapy"})),
            ),
        ] {
            let r = app.call_with(method, path, &weak, body.as_ref(), &[]).await;
            r.assert_problem(403);
        }
        let denied: Vec<_> = trail(&app, "t1", "")
            .await
            .into_iter()
            .filter(|e| e.2 == "denied")
            .collect();
        assert_eq!(
            denied,
            vec![
                t("list", "webhook", "denied"),
                t("create", "webhook", "denied"),
                t("list", "audit_event", "denied"),
                t("create", "recommendation", "denied"),
            ]
        );

        // Configuration: create, delete (and a delete of nothing), replay of nothing.
        let rx = Receiver::start(0).await;
        let hook = app
            .post(
                "/v1/webhooks",
                "t1",
                &json!({"url": rx.url, "events": ["referral.created"]}),
            )
            .await;
        assert_eq!(hook.status, 201, "{}", hook.body);
        let id = hook.body["id"].as_str().unwrap().to_string();
        let nil = uuid::Uuid::nil();
        app.call(
            Method::POST,
            &format!("/v1/webhooks/{id}/deliveries/{nil}/replay"),
            "t1",
            None,
        )
        .await
        .assert_problem(404);
        assert_eq!(
            app.call(Method::DELETE, &format!("/v1/webhooks/{id}"), "t1", None)
                .await
                .status,
            204
        );
        app.call(Method::DELETE, &format!("/v1/webhooks/{id}"), "t1", None)
            .await
            .assert_problem(404);
        let config: Vec<_> = trail(&app, "t1", "&resource_type=webhook")
            .await
            .into_iter()
            .filter(|e| e.2 != "denied")
            .collect();
        assert_eq!(
            config,
            vec![
                t("create", "webhook", "success"),
                t("replay_delivery", "webhook", "not_found"),
                t("delete", "webhook", "success"),
                t("delete", "webhook", "not_found"),
            ]
        );
        let r = app
            .get("/v1/audit-events?resource_type=webhook", "t1")
            .await;
        assert_eq!(r.body["items"][2]["resource_id"], Value::from(id));
    }
}

on_both_engines!(
    the_trail_of_a_subject_lists_a_whole_day_of_work,
    |app: TestApp| async move {
        let s = "Patient/day";
        // Plan: create, read, replace, versions, list.
        let plan = app.post("/v1/plans", "t1", &plan_body(s)).await;
        let plan_path = format!("/v1/plans/{}", plan.body["id"].as_str().unwrap());
        app.get(&plan_path, "t1").await;
        app.put(&plan_path, "t1", &plan_body(s), "\"1\"").await;
        app.get(&format!("{plan_path}/versions"), "t1").await;
        app.get(&format!("/v1/plans?subject={s}"), "t1").await;
        // Protocol: create, read.
        let protocol = app
            .post("/v1/safety-protocols", "t1", &protocol_body(s, "high"))
            .await;
        assert_eq!(protocol.status, 201, "{}", protocol.body);
        app.get(
            &format!(
                "/v1/safety-protocols/{}",
                protocol.body["id"].as_str().unwrap()
            ),
            "t1",
        )
        .await;
        // Session check, read, a disconnection.
        let check = app
            .post(
                "/v1/session-checks",
                "t1",
                &json!({"subject": s, "modality": "video", "appointment_type": "therapy",
                    "service_user_location": {"description": "home", "address": "1 High St, Leeds"},
                    "call_back_number": "+447700900123", "clinician_in_private_space": true,
                    "service_user_private": true}),
            )
            .await;
        assert_eq!(check.status, 201, "{}", check.body);
        let check_path = format!("/v1/session-checks/{}", check.body["id"].as_str().unwrap());
        app.get(&check_path, "t1").await;
        let d = app
            .post(&format!("{check_path}/disconnections"), "t1", &json!({}))
            .await;
        assert_eq!(d.status, 201, "{}", d.body);
        // A recommendation (not audited on success: it records nothing and is on the hot path).
        let rec = app
            .post(
                "/v1/recommendations",
                "t1",
                &json!({"subject": s, "appointment_type": "therapy"}),
            )
            .await;
        assert_eq!(rec.status, 200);
        // Referral: create, read, two status changes, versions, list.
        let referral = app
            .post(
                "/v1/referrals",
                "t1",
                &json!({"subject": s, "reason": "not_accessible", "urgency": "urgent"}),
            )
            .await;
        let rpath = format!("/v1/referrals/{}", referral.body["id"].as_str().unwrap());
        app.get(&rpath, "t1").await;
        let r = app
            .post(
                &format!("{rpath}/status"),
                "t1",
                &json!({"status": "accepted"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = app
            .post(
                &format!("{rpath}/status"),
                "t1",
                &json!({"status": "scheduled", "appointment_at": "2026-12-01T09:30:00Z"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        app.get(&format!("{rpath}/versions"), "t1").await;
        app.get(&format!("/v1/referrals?subject={s}"), "t1").await;
        // Someone else's work on another subject does not appear.
        app.post("/v1/plans", "t1", &plan_body("Patient/other"))
            .await;

        let got = trail(&app, "t1", &format!("&subject={s}")).await;
        let ok = |a: &str, r: &str| t(a, r, "success");
        assert_eq!(
            got,
            vec![
                ok("create", "plan"),
                ok("read", "plan"),
                ok("update", "plan"),
                ok("read_versions", "plan"),
                ok("list", "plan"),
                ok("create", "safety_protocol"),
                ok("read", "safety_protocol"),
                ok("create", "session_check"),
                ok("read", "session_check"),
                ok("record_disconnection", "session_check"),
                // A recommendation reads both records (issue 10).
                ok("recommend", "plan"),
                ok("recommend", "safety_protocol"),
                ok("create", "referral"),
                ok("read", "referral"),
                ok("change_status", "referral"),
                ok("change_status", "referral"),
                ok("read_versions", "referral"),
                ok("list", "referral"),
            ]
        );
    }
);
