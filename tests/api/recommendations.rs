use crate::helpers::*;
use crate::on_both_engines;
use crate::safety::protocol_body;
use reqwest::Method;
use serde_json::{json, Value};

fn option<'a>(r: &'a Reply, modality: &str) -> &'a Value {
    r.body["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["modality"] == modality)
        .unwrap()
}

fn rules_of(o: &Value) -> Vec<&str> {
    o["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect()
}

/// Worked example 1's plan.
fn confident_video_user(subject: &str) -> Value {
    let mut p = plan_body(subject);
    p["preferences"] = json!({"default": ["video", "telephone", "in_person"]});
    p["resources"] = json!({"devices": ["smartphone", "computer"], "connectivity": "reliable",
        "digital_skills": "confident", "familiar_platforms": ["Zoom"], "private_space": "yes"});
    p["barriers"] = json!([]);
    p["personalisation"] = json!({});
    p["last_reviewed_on"] = json!(chrono::Utc::now().date_naive().to_string());
    p
}

on_both_engines!(
    worked_example_1_recommends_video_over_http,
    |app: TestApp| async move {
        app.post("/v1/plans", "t1", &confident_video_user("Patient/1"))
            .await;
        let mut proto = protocol_body("Patient/1", "low");
        proto.as_object_mut().unwrap().remove("crisis_response");
        app.post("/v1/safety-protocols", "t1", &proto).await;
        let r = app
            .post(
                "/v1/recommendations",
                "t1",
                &json!({"subject": "Patient/1", "appointment_type": "therapy"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["recommended_modality"], "video");
        assert_eq!(r.body["suggested_platforms"], json!(["Zoom"]));
        assert_eq!(r.body["prerequisites"], json!([]));
        assert_eq!(
            r.body["fallback_referral"],
            json!({"suggested": false, "reason": null})
        );
        assert_eq!(r.body["plan_version"], 1);
        assert_eq!(r.body["protocol_version"], 1);
        assert_eq!(r.body["options"].as_array().unwrap().len(), 4);
        let video = option(&r, "video");
        assert_eq!(
            (video["suitable"].clone(), video["rank"].clone()),
            (json!(true), json!(1))
        );
        assert!(rules_of(video).contains(&"FLEX-2") && rules_of(video).contains(&"CONN-1"));
        assert_eq!(option(&r, "in_person")["offered"], true);
        let actions: Vec<&str> = r.body["session_actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            vec!["confirm_location", "confirm_call_back_number"]
        );
    }
);

on_both_engines!(
    worked_example_3_moderate_risk_without_protocol,
    |app: TestApp| async move {
        app.post("/v1/plans", "t1", &confident_video_user("Patient/3"))
            .await;
        let r = app.post("/v1/recommendations", "t1",
        &json!({"subject": "Patient/3", "appointment_type": "therapy", "risk_level": "moderate"})).await;
        assert_eq!(r.body["recommended_modality"], "in_person");
        for m in ["video", "telephone", "text"] {
            assert_eq!(option(&r, m)["suitable"], false, "{m}");
            assert!(rules_of(option(&r, m)).contains(&"SAFE-2"), "{m}");
        }
        let pre: Vec<&str> = r.body["prerequisites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["code"].as_str().unwrap())
            .collect();
        assert!(pre.contains(&"safety_protocol"));
        assert_eq!(
            r.body["fallback_referral"],
            json!({"suggested": true, "reason": "not_appropriate"})
        );
        assert_eq!(r.body["protocol_version"], json!(null));
    }
);

on_both_engines!(
    worked_example_5_a_deaf_service_user_gets_their_next_choice_text,
    |app: TestApp| async move {
        let mut plan = confident_video_user("Patient/5");
        plan["barriers"] = json!([{"kind": "hearing"}]);
        plan["preferences"] = json!({"default": ["telephone", "text", "in_person"]});
        let created = app.post("/v1/plans", "t1", &plan).await;
        assert_eq!(created.status, 201, "{}", created.body);
        let mut proto = protocol_body("Patient/5", "low");
        proto.as_object_mut().unwrap().remove("crisis_response");
        app.post("/v1/safety-protocols", "t1", &proto).await;
        let ask = json!({"subject": "Patient/5", "appointment_type": "therapy"});
        let r = app.post("/v1/recommendations", "t1", &ask).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["recommended_modality"], "text");
        assert_eq!(
            r.body["fallback_referral"],
            json!({"suggested": false, "reason": null})
        );
        let telephone = option(&r, "telephone");
        assert_eq!(telephone["suitable"], false);
        assert_eq!(telephone["offered"], false);
        assert!(rules_of(telephone).contains(&"FLEX-5"));
        let text = option(&r, "text");
        assert_eq!(
            (text["offered"].clone(), text["rank"].clone()),
            (json!(true), json!(1))
        );
        let in_person = option(&r, "in_person");
        assert_eq!(
            (in_person["offered"].clone(), in_person["rank"].clone()),
            (json!(true), json!(2))
        );

        // Had they ranked only the telephone, nothing they ranked would remain: in person,
        // with a fallback referral for want of access.
        plan["preferences"] = json!({"default": ["telephone"]});
        let path = format!("/v1/plans/{}", created.body["id"].as_str().unwrap());
        let put = app.put(&path, "t1", &plan, "\"1\"").await;
        assert_eq!(put.status, 200, "{}", put.body);
        let r = app.post("/v1/recommendations", "t1", &ask).await;
        assert_eq!(r.body["recommended_modality"], "in_person");
        assert_eq!(
            r.body["fallback_referral"],
            json!({"suggested": true, "reason": "not_accessible"})
        );
        assert_eq!(r.body["plan_version"], 2);
    }
);

on_both_engines!(
    no_plan_means_an_initial_conversation_first,
    |app: TestApp| async move {
        // Another tenant's plan for the same reference is never used.
        app.post("/v1/plans", "t2", &confident_video_user("Patient/1"))
            .await;
        let r = app.post("/v1/recommendations", "t1", &json!({"subject": "Patient/1", "appointment_type": "assessment", "first_appointment": true})).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["recommended_modality"], "in_person");
        assert_eq!(r.body["plan_version"], json!(null));
        assert_eq!(r.body["digital_exclusion"], json!(null));
        let pre: Vec<&str> = r.body["prerequisites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rule"].as_str().unwrap())
            .collect();
        assert!(pre.contains(&"FLEX-1"));
    }
);

on_both_engines!(
    recommendation_requests_are_checked,
    |app: TestApp| async move {
        let r = app
            .post(
                "/v1/recommendations",
                "t1",
                &json!({"subject": "", "appointment_type": "tea", "risk_level": "dire"}),
            )
            .await;
        r.assert_problem(422);
        assert_eq!(
            r.error_fields(),
            vec!["subject", "appointment_type", "risk_level"]
        );
        let t = token("t1", "plans:read");
        app.call_with(
            Method::POST,
            "/v1/recommendations",
            &t,
            Some(&json!({"subject": "Patient/1", "appointment_type": "therapy"})),
            &[],
        )
        .await
        .assert_problem(403);
    }
);

#[actix_web::test]
async fn the_rule_catalog_lists_all_fifteen_rules() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let r = app.get("/v1/guideline-rules", "t1").await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            "FLEX-1", "FLEX-2", "FLEX-3", "FLEX-4", "FLEX-5", "CONN-1", "CONN-2", "SAFE-1",
            "SAFE-2", "SAFE-3", "THER-1", "THER-2", "THER-3", "EXCL-1", "F2F-1"
        ]
    );
    for rule in r.body["items"].as_array().unwrap() {
        for f in ["section", "title", "guideline_text", "service_behaviour"] {
            assert!(
                rule[f].as_str().is_some_and(|s| !s.is_empty()),
                "{} {f}",
                rule["id"]
            );
        }
    }
    let anon = Reply::from(
        app.client
            .get(app.url("/v1/guideline-rules"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    anon.assert_problem(401);
}
