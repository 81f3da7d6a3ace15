use crate::helpers::*;
use crate::on_both_engines;
use reqwest::Method;
use serde_json::json;

on_both_engines!(
    a_plan_is_created_read_and_computed,
    |app: TestApp| async move {
        let r = app.post("/v1/plans", "t1", &plan_body("Patient/123")).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        assert_eq!(r.header("etag"), Some("\"1\""));
        assert_eq!(
            r.header("location"),
            Some(format!("/v1/plans/{id}").as_str())
        );
        assert_eq!(r.body["version"], 1);
        assert_eq!(r.body["next_review_due"], "2027-02-18");
        assert_eq!(
            r.body["digital_exclusion"],
            json!({"level": "none", "factors": []})
        );
        assert_eq!(r.body["updated_by"], "test-client");

        let g = app.get(&format!("/v1/plans/{id}"), "t1").await;
        assert_eq!(g.status, 200);
        assert_eq!(g.body, r.body, "a read returns what the create returned");
        assert_eq!(g.header("etag"), Some("\"1\""));
    }
);

on_both_engines!(one_plan_per_subject_per_tenant, |app: TestApp| async move {
    let first = app.post("/v1/plans", "t1", &plan_body("Patient/1")).await;
    assert_eq!(first.status, 201);
    let dup = app.post("/v1/plans", "t1", &plan_body("Patient/1")).await;
    dup.assert_problem(409);
    assert_eq!(dup.body["existing_id"], first.body["id"]);
    // Another tenant's service user may carry the same reference.
    let other = app.post("/v1/plans", "t2", &plan_body("Patient/1")).await;
    assert_eq!(other.status, 201);
});

on_both_engines!(
    replace_needs_if_match_and_keeps_every_version,
    |app: TestApp| async move {
        let r = app.post("/v1/plans", "t1", &plan_body("Patient/7")).await;
        let id = r.body["id"].as_str().unwrap().to_string();
        let path = format!("/v1/plans/{id}");
        let mut changed = plan_body("Patient/7");
        changed["preferences"]["default"] = json!(["telephone", "in_person"]);

        let no_if_match = app.call(Method::PUT, &path, "t1", Some(&changed)).await;
        no_if_match.assert_problem(428);

        let v2 = app.put(&path, "t1", &changed, "\"1\"").await;
        assert_eq!(v2.status, 200, "{}", v2.body);
        assert_eq!(v2.body["version"], 2);
        assert_eq!(v2.header("etag"), Some("\"2\""));
        assert_eq!(v2.body["created_at"], r.body["created_at"]);

        let stale = app.put(&path, "t1", &changed, "\"1\"").await;
        stale.assert_problem(412);
        assert_eq!(stale.body["current_version"], 2);

        // Read-modify-write: echoing server fields back is accepted.
        let mut echoed = v2.body.clone();
        echoed["review_interval_days"] = json!(30);
        let v3 = app.put(&path, "t1", &echoed, "\"2\"").await;
        assert_eq!(v3.status, 200, "{}", v3.body);
        assert_eq!(v3.body["next_review_due"], "2026-12-20");

        let versions = app.get(&format!("{path}/versions"), "t1").await;
        assert_eq!(versions.status, 200);
        let vs: Vec<i64> = versions.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect();
        assert_eq!(vs, vec![3, 2, 1], "newest first");
        assert_eq!(
            versions.body["items"][2]["preferences"]["default"],
            json!(["video", "telephone", "in_person"])
        );
        assert_eq!(versions.body["next_cursor"], json!(null));

        let page = app.get(&format!("{path}/versions?limit=2"), "t1").await;
        assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
        let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
        let rest = app
            .get(&format!("{path}/versions?limit=2&cursor={cursor}"), "t1")
            .await;
        assert_eq!(rest.body["items"][0]["version"], 1);
        assert_eq!(rest.body["next_cursor"], json!(null));

        // The subject of a record cannot be changed.
        let moved = app.put(&path, "t1", &plan_body("Patient/8"), "\"3\"").await;
        moved.assert_problem(422);
        assert_eq!(moved.error_fields(), vec!["subject"]);
    }
);

on_both_engines!(
    exactly_one_of_concurrent_writers_wins,
    |app: TestApp| async move {
        let r = app
            .post("/v1/plans", "t1", &plan_body("Patient/race"))
            .await;
        let path = format!("/v1/plans/{}", r.body["id"].as_str().unwrap());
        let mut tasks = Vec::new();
        for i in 0..12 {
            let mut body = plan_body("Patient/race");
            body["notes"] = json!(format!("writer {i}"));
            let client = app.client.clone();
            let url = app.url(&path);
            tasks.push(tokio::spawn(async move {
                client
                    .put(url)
                    .bearer_auth(token("t1", ALL_SCOPES))
                    .header("If-Match", "\"1\"")
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 412).count(),
            11,
            "{statuses:?}"
        );
        let versions = app.get(&format!("{path}/versions"), "t1").await;
        assert_eq!(versions.body["items"].as_array().unwrap().len(), 2);
    }
);

on_both_engines!(
    lists_by_subject_and_review_date_with_cursors,
    |app: TestApp| async move {
        for (i, last) in [
            "2026-01-10",
            "2026-03-01",
            "2026-02-01",
            "2026-11-01",
            "2025-12-01",
        ]
        .iter()
        .enumerate()
        {
            let mut b = plan_body(&format!("Patient/{i}"));
            b["last_reviewed_on"] = json!(last);
            b["review_interval_days"] = json!(30);
            assert_eq!(app.post("/v1/plans", "t1", &b).await.status, 201);
        }
        app.post("/v1/plans", "t2", &plan_body("Patient/0")).await;

        let by_subject = app.get("/v1/plans?subject=Patient/3", "t1").await;
        assert_eq!(by_subject.status, 200);
        let items = by_subject.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["subject"], "Patient/3");

        // Due before 2026-03-15: reviews due 2026-01-01 (P4), 2026-02-09 (P0), 2026-03-03 (P2).
        let due = app
            .get("/v1/plans?review_due_before=2026-03-15&limit=2", "t1")
            .await;
        assert_eq!(due.status, 200, "{}", due.body);
        let subjects: Vec<&str> = due.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["subject"].as_str().unwrap())
            .collect();
        assert_eq!(subjects, vec!["Patient/4", "Patient/0"]);
        let cursor = due.body["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_string();
        let next = app
            .get(
                &format!("/v1/plans?review_due_before=2026-03-15&limit=2&cursor={cursor}"),
                "t1",
            )
            .await;
        let subjects: Vec<&str> = next.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["subject"].as_str().unwrap())
            .collect();
        assert_eq!(subjects, vec!["Patient/2"]);
        assert_eq!(next.body["next_cursor"], json!(null));

        let all = app.get("/v1/plans?limit=200", "t1").await;
        assert_eq!(
            all.body["items"].as_array().unwrap().len(),
            5,
            "only this tenant's plans"
        );

        app.get("/v1/plans?limit=0", "t1").await.assert_problem(400);
        app.get("/v1/plans?limit=201", "t1")
            .await
            .assert_problem(400);
        app.get("/v1/plans?review_due_before=tomorrow", "t1")
            .await
            .assert_problem(400);
        app.get("/v1/plans?cursor=!!!", "t1")
            .await
            .assert_problem(400);
    }
);

on_both_engines!(
    another_tenants_plan_is_not_found,
    |app: TestApp| async move {
        let r = app.post("/v1/plans", "t1", &plan_body("Patient/1")).await;
        let path = format!("/v1/plans/{}", r.body["id"].as_str().unwrap());
        app.get(&path, "t2").await.assert_problem(404);
        app.put(&path, "t2", &plan_body("Patient/1"), "\"1\"")
            .await
            .assert_problem(404);
        app.get(&format!("{path}/versions"), "t2")
            .await
            .assert_problem(404);
        assert_eq!(
            app.get("/v1/plans?subject=Patient/1", "t2").await.body["items"],
            json!([])
        );
        // Still intact for its owner.
        assert_eq!(app.get(&path, "t1").await.body["version"], 1);
        app.get("/v1/plans/00000000-0000-0000-0000-000000000000", "t1")
            .await
            .assert_problem(404);
        app.get("/v1/plans/not-a-uuid", "t1")
            .await
            .assert_problem(404);
    }
);

on_both_engines!(
    invalid_plans_name_every_bad_field,
    |app: TestApp| async move {
        let mut b = plan_body("Patient/1");
        b["preferences"]["default"] = json!(["video", "fax"]);
        b["resources"]["connectivity"] = json!("great");
        b["backup_contact"]["number"] = json!("07700 900123");
        b["review_interval_days"] = json!(400);
        b["barriers"][0]["kind"] = json!("smell");
        let r = app.post("/v1/plans", "t1", &b).await;
        r.assert_problem(422);
        assert_eq!(
            r.error_fields(),
            vec![
                "preferences.default[1]",
                "resources.connectivity",
                "barriers[0].kind",
                "backup_contact.number",
                "review_interval_days"
            ]
        );

        let mut b = plan_body("Patient/1");
        b["preferences"]["default"] = json!(["video", "video"]);
        b["last_reviewed_on"] = json!("2099-01-01");
        b["review_interval_days"] = json!(6);
        let r = app.post("/v1/plans", "t1", &b).await;
        r.assert_problem(422);
        assert_eq!(r.error_fields(), vec!["review_interval_days"]);
        b["review_interval_days"] = json!(7);
        let r = app.post("/v1/plans", "t1", &b).await;
        assert_eq!(
            r.error_fields(),
            vec!["preferences.default[1]", "last_reviewed_on"]
        );

        let r = app.post("/v1/plans", "t1", &json!({})).await;
        assert_eq!(
            r.error_fields(),
            vec!["subject", "preferences", "resources"]
        );
        let r = app.post("/v1/plans", "t1", &json!({"subject": "Patient/1", "colour": "red",
        "preferences": {"default": ["video"]}, "resources": {"connectivity": "none", "digital_skills": "none"}})).await;
        assert_eq!(r.error_fields(), vec!["colour"]);

        // Nothing was stored by any of the refused requests.
        assert_eq!(app.get("/v1/plans", "t1").await.body["items"], json!([]));
    }
);

on_both_engines!(
    digital_exclusion_is_computed_from_resources,
    |app: TestApp| async move {
        let mut b = plan_body("Patient/ex");
        b["resources"] =
            json!({"devices": ["tablet"], "connectivity": "reliable", "digital_skills": "none"});
        let r = app.post("/v1/plans", "t1", &b).await;
        assert_eq!(
            r.body["digital_exclusion"],
            json!({"level": "excluded", "factors": ["no_digital_skills"]})
        );
        let mut b = plan_body("Patient/risk");
        b["resources"] = json!({"devices": ["smartphone"], "connectivity": "limited", "digital_skills": "confident"});
        let r = app.post("/v1/plans", "t1", &b).await;
        assert_eq!(
            r.body["digital_exclusion"],
            json!({"level": "at_risk", "factors": ["limited_connectivity"]})
        );
    }
);

on_both_engines!(records_survive_a_restart, |app: TestApp| async move {
    let created = app
        .post("/v1/plans", "t1", &plan_body("Patient/restart"))
        .await;
    let path = format!("/v1/plans/{}", created.body["id"].as_str().unwrap());
    app.stop().await;
    let again = spawn_with(app.settings.clone(), None, app.engine).await;
    let read = again.get(&path, "t1").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, created.body);
});
