use crate::helpers::*;
use crate::on_both_engines;
use reqwest::Method;
use serde_json::{json, Value};

pub fn protocol_body(subject: &str, risk: &str) -> Value {
    json!({
        "subject": subject,
        "risk_level": risk,
        "call_back_numbers": ["+447700900123"],
        "usual_locations": [{"label": "home", "address": "1 High St, Leeds"}],
        "emergency_contacts": [{"name": "A. Carer", "relationship": "mother", "phone": "+447700900456"}],
        "crisis_response": {"team": "Leeds crisis team", "phone": "+441130000000",
            "in_person_plan": "Crisis team attends within 4 hours", "hours": "24/7"},
        "agreed_with_service_user_on": "2026-11-20",
        "review_interval_days": 30
    })
}

fn check_body(subject: &str) -> Value {
    json!({"subject": subject, "modality": "video", "appointment_type": "therapy",
        "service_user_location": {"description": "home", "address": "1 High St, Leeds"},
        "call_back_number": "+447700900123", "clinician_in_private_space": false,
        "others_present": ["trainee psychologist"], "headphones": true,
        "service_user_private": true, "sensitive_topics": true})
}

fn codes(r: &Reply) -> Vec<String> {
    r.body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["code"].as_str().unwrap().to_string())
        .collect()
}

on_both_engines!(
    safety_protocols_are_versioned_records,
    |app: TestApp| async move {
        let r = app
            .post(
                "/v1/safety-protocols",
                "t1",
                &protocol_body("Patient/1", "high"),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["next_review_due"], "2026-12-20");
        assert_eq!(r.header("etag"), Some("\"1\""));
        let path = format!("/v1/safety-protocols/{}", r.body["id"].as_str().unwrap());
        app.post(
            "/v1/safety-protocols",
            "t1",
            &protocol_body("Patient/1", "low"),
        )
        .await
        .assert_problem(409);

        let mut lower = protocol_body("Patient/1", "moderate");
        lower.as_object_mut().unwrap().remove("crisis_response");
        app.call(Method::PUT, &path, "t1", Some(&lower))
            .await
            .assert_problem(428);
        let v2 = app.put(&path, "t1", &lower, "\"1\"").await;
        assert_eq!(v2.status, 200, "{}", v2.body);
        assert_eq!(v2.body["version"], 2);
        app.put(&path, "t1", &lower, "\"1\"")
            .await
            .assert_problem(412);
        let versions = app.get(&format!("{path}/versions"), "t1").await;
        let risks: Vec<&str> = versions.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["risk_level"].as_str().unwrap())
            .collect();
        assert_eq!(risks, vec!["moderate", "high"]);
        let listed = app
            .get("/v1/safety-protocols?subject=Patient/1", "t1")
            .await;
        assert_eq!(listed.body["items"][0]["version"], 2);

        app.get(&path, "t2").await.assert_problem(404);
        let plans_only = token("t1", "plans:read plans:write");
        app.call_with(Method::GET, &path, &plans_only, None, &[])
            .await
            .assert_problem(403);
        let trail = app
            .get("/v1/audit-events?resource_type=safety_protocol", "t1")
            .await;
        let actions: Vec<&str> = trail.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            vec!["create", "update", "read_versions", "list", "read"]
        );
    }
);

on_both_engines!(
    invalid_protocols_name_every_bad_field,
    |app: TestApp| async move {
        let mut b = protocol_body("Patient/1", "high");
        b.as_object_mut().unwrap().remove("crisis_response");
        b["call_back_numbers"] = json!([]);
        b["agreed_with_service_user_on"] = json!("2099-01-01");
        let r = app.post("/v1/safety-protocols", "t1", &b).await;
        r.assert_problem(422);
        assert_eq!(
            r.error_fields(),
            vec![
                "call_back_numbers",
                "crisis_response",
                "agreed_with_service_user_on"
            ]
        );
        let mut b = protocol_body("Patient/1", "extreme");
        b["call_back_numbers"] = json!(["+44 7700"]);
        b["emergency_contacts"][0]["phone"] = json!("call mum");
        let r = app.post("/v1/safety-protocols", "t1", &b).await;
        assert_eq!(
            r.error_fields(),
            vec![
                "risk_level",
                "call_back_numbers[0]",
                "emergency_contacts[0].phone"
            ]
        );
        assert_eq!(
            app.get("/v1/safety-protocols", "t1").await.body["items"],
            json!([])
        );
    }
);

on_both_engines!(
    a_session_check_that_cannot_proceed_then_can,
    |app: TestApp| async move {
        // No safety protocol yet: a remote session cannot be made safe.
        let r = app
            .post("/v1/session-checks", "t1", &check_body("Patient/9"))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["outcome"], "do_not_proceed");
        assert!(codes(&r).contains(&"agree_safety_protocol".to_string()));
        assert!(codes(&r).contains(&"offer_face_to_face".to_string()));
        assert_eq!(r.body["face_to_face_alternative_required"], true);
        assert_eq!(r.body["protocol_version"], json!(null));

        app.post(
            "/v1/safety-protocols",
            "t1",
            &protocol_body("Patient/9", "high"),
        )
        .await;
        app.post("/v1/plans", "t1", &plan_body("Patient/9")).await;

        // High risk, location unknown, no call-back number, clinician not private and unprotected.
        let mut bad = check_body("Patient/9");
        bad.as_object_mut().unwrap().remove("service_user_location");
        bad.as_object_mut().unwrap().remove("call_back_number");
        bad["others_present"] = json!([]);
        bad["headphones"] = json!(false);
        let r = app.post("/v1/session-checks", "t1", &bad).await;
        assert_eq!(r.body["outcome"], "do_not_proceed");
        let blocking: Vec<(String, String)> = r.body["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["blocking"] == true)
            .map(|a| {
                (
                    a["code"].as_str().unwrap().into(),
                    a["rule"].as_str().unwrap().into(),
                )
            })
            .collect();
        for (code, rule) in [
            ("confirm_location", "SAFE-1"),
            ("confirm_call_back_number", "SAFE-2"),
            ("disclose_others_present", "SAFE-3"),
            ("use_headphones", "SAFE-3"),
        ] {
            assert!(
                blocking.contains(&(code.to_string(), rule.to_string())),
                "{code}: {blocking:?}"
            );
        }
        assert_eq!(r.body["protocol_version"], 1);
        assert_eq!(r.body["plan_version"], 1);
        // On disconnection: the plan's back-up contact.
        assert_eq!(r.body["on_disconnect"]["method"], "telephone");
        assert_eq!(r.body["on_disconnect"]["number"], "+447700900123");

        // Fixed: location confirmed, call-back number agreed, others disclosed with headphones on.
        let ok = app
            .post("/v1/session-checks", "t1", &check_body("Patient/9"))
            .await;
        assert_ne!(ok.body["outcome"], "do_not_proceed", "{}", ok.body);
        assert_eq!(ok.body["face_to_face_alternative_required"], false);

        // Somewhere unusual at high risk: the local crisis response must be identified.
        let mut away = check_body("Patient/9");
        away["service_user_location"] =
            json!({"description": "friend's flat", "address": "9 Low Rd, York"});
        let r = app.post("/v1/session-checks", "t1", &away).await;
        assert_eq!(r.body["outcome"], "proceed_with_actions");
        assert!(codes(&r).contains(&"identify_local_crisis_response".to_string()));

        // The stored check reads back, and reading is audited.
        let id = ok.body["id"].as_str().unwrap();
        let g = app.get(&format!("/v1/session-checks/{id}"), "t1").await;
        assert_eq!(g.status, 200);
        assert_eq!(g.body["outcome"], ok.body["outcome"]);
        assert_eq!(
            g.body["service_user_location"]["address"],
            "1 High St, Leeds"
        );
        app.get(&format!("/v1/session-checks/{id}"), "t2")
            .await
            .assert_problem(404);
        let trail = app
            .get("/v1/audit-events?resource_type=session_check", "t1")
            .await;
        assert_eq!(trail.body["items"].as_array().unwrap().len(), 5);
    }
);

on_both_engines!(
    disconnections_say_how_to_reconnect_and_when_to_switch,
    |app: TestApp| async move {
        app.post(
            "/v1/safety-protocols",
            "t1",
            &protocol_body("Patient/5", "high"),
        )
        .await;
        let mut plan = plan_body("Patient/5");
        plan.as_object_mut().unwrap().remove("backup_contact");
        app.post("/v1/plans", "t1", &plan).await;
        let check = app
            .post("/v1/session-checks", "t1", &check_body("Patient/5"))
            .await;
        let path = format!(
            "/v1/session-checks/{}/disconnections",
            check.body["id"].as_str().unwrap()
        );

        let first = app.post(&path, "t1", &json!({})).await;
        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(first.body["disconnections"], 1);
        assert!(first.body["reconnect"]["number"].is_string());
        assert_eq!(
            first.body["emergency_protocol_applies_if_call_back_fails"], true,
            "high risk, sensitive topics"
        );
        assert_eq!(first.body["offer_alternative"], false);

        let second = app
            .post(&path, "t1", &json!({"note": "dropped again"}))
            .await;
        assert_eq!(second.body["disconnections"], 2);
        assert_eq!(second.body["offer_alternative"], true);
        // The plan's hearing barrier rules out a call, and the service user is uncomfortable
        // with text (FLEX-5): face-to-face only.
        assert_eq!(second.body["alternatives"], json!(["in_person"]));

        app.post(&path, "t1", &json!({"colour": 1}))
            .await
            .assert_problem(422);
        app.post(&path, "t2", &json!({})).await.assert_problem(404);
        let g = app
            .get(
                &format!("/v1/session-checks/{}", check.body["id"].as_str().unwrap()),
                "t1",
            )
            .await;
        assert_eq!(g.body["disconnections"], 2);
        let no_scope = token("t1", "plans:read");
        app.call_with(Method::POST, &path, &no_scope, Some(&json!({})), &[])
            .await
            .assert_problem(403);
    }
);

fn action<'a>(r: &'a Reply, code: &str) -> &'a Value {
    r.body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["code"] == code)
        .unwrap_or_else(|| panic!("no {code} in {}", r.body))
}

on_both_engines!(
    a_deaf_service_user_is_never_offered_a_call_after_disconnections,
    |app: TestApp| async move {
        let mut proto = protocol_body("Patient/7", "low");
        proto.as_object_mut().unwrap().remove("crisis_response");
        app.post("/v1/safety-protocols", "t1", &proto).await;
        // A hearing barrier, and a back-up contact by telephone.
        let mut plan = plan_body("Patient/7");
        plan["preferences"]["uncomfortable_with"] = json!([]);
        let created = app.post("/v1/plans", "t1", &plan).await;
        assert_eq!(created.status, 201, "{}", created.body);

        // The start-of-session check flags the back-up route the service user cannot use.
        let check = app
            .post("/v1/session-checks", "t1", &check_body("Patient/7"))
            .await;
        assert_eq!(check.status, 201, "{}", check.body);
        assert_eq!(check.body["outcome"], "proceed_with_actions");
        let flag = action(&check, "agree_backup_contact");
        assert_eq!(
            (flag["rule"].clone(), flag["blocking"].clone()),
            (json!("CONN-2"), json!(false))
        );
        assert!(flag["text"].as_str().unwrap().contains("FLEX-5"), "{flag}");
        assert_eq!(check.body["on_disconnect"]["method"], "telephone");

        let path = format!(
            "/v1/session-checks/{}/disconnections",
            check.body["id"].as_str().unwrap()
        );
        let first = app.post(&path, "t1", &json!({})).await;
        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(first.body["alternatives"], json!([]));
        let reconnect = action(&first, "reconnect");
        assert!(
            reconnect["text"].as_str().unwrap().contains("cannot use"),
            "{reconnect}"
        );

        let second = app.post(&path, "t1", &json!({})).await;
        assert_eq!(second.body["disconnections"], 2);
        assert_eq!(second.body["offer_alternative"], true);
        assert_eq!(second.body["alternatives"], json!(["in_person", "text"]));
        let offer = action(&second, "offer_alternative")["text"]
            .as_str()
            .unwrap();
        assert!(
            offer.contains("face-to-face or text") && offer.contains("Not telephone (FLEX-5"),
            "{offer}"
        );

        // The current plan counts: once the barrier is off the plan, a call may be offered.
        plan["barriers"] = json!([]);
        let put_path = format!("/v1/plans/{}", created.body["id"].as_str().unwrap());
        assert_eq!(app.put(&put_path, "t1", &plan, "\"1\"").await.status, 200);
        let third = app.post(&path, "t1", &json!({})).await;
        assert_eq!(
            third.body["alternatives"],
            json!(["in_person", "telephone", "text"])
        );
        assert!(!action(&third, "reconnect")["text"]
            .as_str()
            .unwrap()
            .contains("cannot use"));
    }
);

on_both_engines!(session_checks_are_validated, |app: TestApp| async move {
    let mut b = check_body("Patient/1");
    b["modality"] = json!("in_person");
    let r = app.post("/v1/session-checks", "t1", &b).await;
    r.assert_problem(422);
    assert_eq!(r.error_fields(), vec!["modality"]);
    let mut b = check_body("Patient/1");
    b["call_back_number"] = json!("12345");
    b["modality"] = json!("carrier_pigeon");
    b.as_object_mut()
        .unwrap()
        .remove("clinician_in_private_space");
    let r = app.post("/v1/session-checks", "t1", &b).await;
    assert_eq!(
        r.error_fields(),
        vec!["modality", "call_back_number", "clinician_in_private_space"]
    );
});
