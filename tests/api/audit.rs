use crate::helpers::*;
use crate::on_both_engines;
use serde_json::{json, Value};

fn actions(r: &Reply) -> Vec<(String, String)> {
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

on_both_engines!(
    every_read_and_write_of_a_plan_is_audited,
    |app: TestApp| async move {
        let created = app
            .call_with(
                reqwest::Method::POST,
                "/v1/plans",
                &token("t1", ALL_SCOPES),
                Some(&plan_body("Patient/a")),
                &[("X-Request-Id", "req-create-1")],
            )
            .await;
        let id = created.body["id"].as_str().unwrap().to_string();
        let path = format!("/v1/plans/{id}");
        app.get(&path, "t1").await;
        app.put(&path, "t1", &plan_body("Patient/a"), "\"1\"").await;
        app.get(&format!("{path}/versions"), "t1").await;
        app.get("/v1/plans?subject=Patient/a", "t1").await;
        app.post("/v1/plans", "t1", &plan_body("Patient/b")).await;
        app.get(&path, "t2").await; // another tenant: not found, audited in t2

        let trail = app.get("/v1/audit-events?subject=Patient/a", "t1").await;
        assert_eq!(trail.status, 200);
        assert_eq!(
            actions(&trail),
            [
                ("create", "success"),
                ("read", "success"),
                ("update", "success"),
                ("read_versions", "success"),
                ("list", "success")
            ]
            .map(|(a, o)| (a.to_string(), o.to_string()))
            .to_vec()
        );
        let first = &trail.body["items"][0];
        assert_eq!(first["actor"], "test-client");
        assert_eq!(first["resource_type"], "plan");
        assert_eq!(first["resource_id"], Value::from(id.clone()));
        assert_eq!(first["request_id"], "req-create-1");
        assert!(first["at"].as_str().unwrap().ends_with('Z'));

        // Paging through the whole trail with the cursor gives every event once.
        let mut seen = Vec::new();
        let mut url = "/v1/audit-events?limit=2".to_string();
        loop {
            let page = app.get(&url, "t1").await;
            for e in page.body["items"].as_array().unwrap() {
                seen.push(e["id"].as_str().unwrap().to_string());
            }
            match page.body["next_cursor"].as_str() {
                Some(c) => url = format!("/v1/audit-events?limit=2&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), 6);
        let unique: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 6);

        // Tenants see only their own trail.
        let other = app.get("/v1/audit-events", "t2").await;
        assert_eq!(
            actions(&other),
            vec![("read".to_string(), "not_found".to_string())]
        );

        let future = app
            .get("/v1/audit-events?since=2099-01-01T00:00:00Z", "t1")
            .await;
        assert_eq!(future.body["items"], json!([]));
        let past = app
            .get(
                "/v1/audit-events?since=2000-01-01T00:00:00Z&resource_type=plan",
                "t1",
            )
            .await;
        assert_eq!(past.body["items"].as_array().unwrap().len(), 6);
        app.get("/v1/audit-events?since=yesterday", "t1")
            .await
            .assert_problem(400);
    }
);

on_both_engines!(the_audit_table_is_append_only, |app: TestApp| async move {
    app.post("/v1/plans", "t1", &plan_body("Patient/a")).await;
    let url = app.settings.database_url.clone();
    let store = telemental::store::Store::connect(&url, 1).await.unwrap();
    let r = match &store.db {
        telemental::store::Db::Sqlite(p) => sqlx::query("DELETE FROM audit_events")
            .execute(p)
            .await
            .map(|_| ()),
        telemental::store::Db::Postgres(p) => sqlx::query("DELETE FROM audit_events")
            .execute(p)
            .await
            .map(|_| ()),
    };
    assert!(
        r.is_err(),
        "deleting audit events is refused by the database"
    );
    let r = match &store.db {
        telemental::store::Db::Sqlite(p) => sqlx::query("UPDATE audit_events SET actor = 'x'")
            .execute(p)
            .await
            .map(|_| ()),
        telemental::store::Db::Postgres(p) => sqlx::query("UPDATE audit_events SET actor = 'x'")
            .execute(p)
            .await
            .map(|_| ()),
    };
    assert!(
        r.is_err(),
        "updating audit events is refused by the database"
    );
});
