use crate::helpers::*;
use crate::on_both_engines;
use reqwest::Method;
use serde_json::{json, Value};

fn referral(subject: &str, urgency: &str) -> Value {
    json!({"subject": subject, "reason": "not_accessible", "urgency": urgency, "appointment_type": "therapy",
           "detail": "no private space at home", "requested_by": "Practitioner/9"})
}

on_both_engines!(
    a_referral_is_due_by_its_urgency,
    |app: TestApp| async move {
        let r = app
            .post("/v1/referrals", "t1", &referral("Patient/1", "urgent"))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["status"], "requested");
        assert_eq!(r.body["overdue"], false);
        let created =
            chrono::DateTime::parse_from_rfc3339(r.body["created_at"].as_str().unwrap()).unwrap();
        let due = chrono::DateTime::parse_from_rfc3339(r.body["due_by"].as_str().unwrap()).unwrap();
        assert_eq!((due - created).num_hours(), 24);
        assert_eq!(r.body["history"][0]["status"], "requested");
        let g = app.get(r.header("location").unwrap(), "t1").await;
        assert_eq!(g.body["id"], r.body["id"]);
        app.get(r.header("location").unwrap(), "t2")
            .await
            .assert_problem(404);
        let bad = app
            .post(
                "/v1/referrals",
                "t1",
                &json!({"subject": "Patient/1", "reason": "bored", "urgency": "soon"}),
            )
            .await;
        bad.assert_problem(422);
        assert_eq!(bad.error_fields(), vec!["reason", "urgency"]);
    }
);

on_both_engines!(
    idempotency_keys_replay_and_refuse_other_bodies,
    |app: TestApp| async move {
        let body = referral("Patient/2", "routine");
        let first = app.post_with_key("/v1/referrals", &body, "key-1").await;
        assert_eq!(first.status, 201);
        let again = app.post_with_key("/v1/referrals", &body, "key-1").await;
        assert_eq!(again.status, 201);
        assert_eq!(again.body, first.body, "the same response again");
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        let other = app
            .post_with_key("/v1/referrals", &referral("Patient/2", "urgent"), "key-1")
            .await;
        other.assert_problem(409);
        // Keys belong to a tenant.
        let t2 = app
            .call_with(
                Method::POST,
                "/v1/referrals",
                &token("t2", ALL_SCOPES),
                Some(&body),
                &[("Idempotency-Key", "key-1")],
            )
            .await;
        assert_eq!(t2.status, 201);
        assert_ne!(t2.body["id"], first.body["id"]);
        let list = app.get("/v1/referrals?subject=Patient/2", "t1").await;
        assert_eq!(
            list.body["items"].as_array().unwrap().len(),
            1,
            "nothing created twice"
        );
        let bad_key = app
            .call_with(
                Method::POST,
                "/v1/referrals",
                &token("t1", ALL_SCOPES),
                Some(&body),
                &[("Idempotency-Key", "")],
            )
            .await;
        bad_key.assert_problem(400);
    }
);

on_both_engines!(
    concurrent_retries_with_one_key_create_one_referral,
    |app: TestApp| async move {
        let body = referral("Patient/3", "emergency");
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (client, url, body) = (app.client.clone(), app.url("/v1/referrals"), body.clone());
            tasks.push(tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(token("t1", ALL_SCOPES))
                    .header("Idempotency-Key", "same-key")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                (status, v["id"].clone())
            }));
        }
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            let (status, id) = t.await.unwrap();
            assert_eq!(status, 201, "every retry gets the one response");
            ids.insert(id.to_string());
        }
        assert_eq!(ids.len(), 1, "every answer names the same referral");
        let list = app.get("/v1/referrals?subject=Patient/3", "t1").await;
        assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    }
);

on_both_engines!(
    the_state_machine_is_enforced_over_http,
    |app: TestApp| async move {
        let r = app
            .post("/v1/referrals", "t1", &referral("Patient/4", "routine"))
            .await;
        let status = format!("/v1/referrals/{}/status", r.body["id"].as_str().unwrap());
        let a = app
            .post(
                &status,
                "t1",
                &json!({"status": "accepted", "note": "team has capacity"}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["version"], 2);
        let back = app
            .post(&status, "t1", &json!({"status": "requested"}))
            .await;
        back.assert_problem(409);
        assert_eq!(back.body["allowed"], json!(["scheduled", "cancelled"]));
        let no_time = app
            .post(&status, "t1", &json!({"status": "scheduled"}))
            .await;
        no_time.assert_problem(422);
        assert_eq!(no_time.error_fields(), vec!["appointment_at"]);
        let stale = app
            .call_with(
                Method::POST,
                &status,
                &token("t1", ALL_SCOPES),
                Some(&json!({"status": "cancelled"})),
                &[("If-Match", "\"1\"")],
            )
            .await;
        stale.assert_problem(412);
        let s = app
            .post(
                &status,
                "t1",
                &json!({"status": "scheduled", "appointment_at": "2026-12-01T09:30:00Z"}),
            )
            .await;
        assert_eq!(s.body["status"], "scheduled");
        assert_eq!(s.body["appointment_at"], "2026-12-01T09:30:00Z");
        let re = app
            .call_with(
                Method::POST,
                &status,
                &token("t1", ALL_SCOPES),
                Some(&json!({"status": "scheduled", "appointment_at": "2026-12-02T09:30:00Z"})),
                &[("If-Match", "\"3\"")],
            )
            .await;
        assert_eq!(re.status, 200, "reschedule");
        let done = app
            .post(&status, "t1", &json!({"status": "completed"}))
            .await;
        assert_eq!(done.body["status"], "completed");
        let after = app
            .post(&status, "t1", &json!({"status": "cancelled"}))
            .await;
        after.assert_problem(409);
        assert_eq!(after.body["allowed"], json!([]));
        let history: Vec<&str> = done.body["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            history,
            vec![
                "requested",
                "accepted",
                "scheduled",
                "scheduled",
                "completed"
            ]
        );
        assert_eq!(done.body["history"][1]["actor"], "test-client");
        let versions = app
            .get(
                &format!("/v1/referrals/{}/versions", r.body["id"].as_str().unwrap()),
                "t1",
            )
            .await;
        let vs: Vec<i64> = versions.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect();
        assert_eq!(vs, vec![5, 4, 3, 2, 1]);
        app.post(&status, "t2", &json!({"status": "cancelled"}))
            .await
            .assert_problem(404);
        // Idempotent status changes replay too.
        let r2 = app
            .post("/v1/referrals", "t1", &referral("Patient/4b", "routine"))
            .await;
        let status2 = format!("/v1/referrals/{}/status", r2.body["id"].as_str().unwrap());
        let c1 = app
            .post_with_key(&status2, &json!({"status": "cancelled"}), "cancel-1")
            .await;
        let c2 = app
            .post_with_key(&status2, &json!({"status": "cancelled"}), "cancel-1")
            .await;
        assert_eq!(c1.status, 200);
        assert_eq!(c2.status, 200);
        assert_eq!(c2.body["version"], 2, "replayed, not applied twice");
    }
);

#[actix_web::test]
async fn overdue_is_computed_and_filterable() {
    let (mut settings, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    settings.referral_due_emergency = std::time::Duration::from_secs(1);
    let app = spawn_with(settings, dir, Engine::Sqlite).await;
    let late = app
        .post("/v1/referrals", "t1", &referral("Patient/5", "emergency"))
        .await;
    let fine = app
        .post("/v1/referrals", "t1", &referral("Patient/6", "routine"))
        .await;
    let handled = app
        .post("/v1/referrals", "t1", &referral("Patient/7", "emergency"))
        .await;
    app.post(
        &format!(
            "/v1/referrals/{}/status",
            handled.body["id"].as_str().unwrap()
        ),
        "t1",
        &json!({"status": "scheduled", "appointment_at": "2026-12-01T09:30:00Z"}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let g = app
        .get(
            &format!("/v1/referrals/{}", late.body["id"].as_str().unwrap()),
            "t1",
        )
        .await;
    assert_eq!(g.body["overdue"], true);
    let overdue = app.get("/v1/referrals?overdue=true", "t1").await;
    let ids: Vec<&Value> = overdue.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(
        ids,
        vec![&late.body["id"]],
        "scheduled ones are never overdue"
    );
    let not = app.get("/v1/referrals?overdue=false", "t1").await;
    assert_eq!(not.body["items"].as_array().unwrap().len(), 2);
    assert!(not.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == fine.body["id"]));
    let sched = app.get("/v1/referrals?status=scheduled", "t1").await;
    assert_eq!(sched.body["items"][0]["id"], handled.body["id"]);
    app.get("/v1/referrals?status=lost", "t1")
        .await
        .assert_problem(400);
    app.get("/v1/referrals?overdue=maybe", "t1")
        .await
        .assert_problem(400);
}
