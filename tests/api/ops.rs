use crate::helpers::*;
use crate::on_both_engines;
use reqwest::Method;
use serde_json::{json, Value};

on_both_engines!(
    health_readiness_and_request_ids,
    |app: TestApp| async move {
        let r = Reply::from(app.client.get(app.url("/healthz")).send().await.unwrap()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["status"], "ok");
        assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
        let r = Reply::from(app.client.get(app.url("/readyz")).send().await.unwrap()).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body["database"],
            if app.engine == Engine::Sqlite {
                "sqlite"
            } else {
                "postgres"
            }
        );
        // A plain client id is echoed; an unusable one is replaced.
        let r = app
            .client
            .get(app.url("/healthz"))
            .header("X-Request-Id", "ehr-42.abc")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-request-id"], "ehr-42.abc");
        let r = app
            .client
            .get(app.url("/healthz"))
            .header("X-Request-Id", "has spaces in it")
            .send()
            .await
            .unwrap();
        assert_ne!(r.headers()["x-request-id"], "has spaces in it");
        // Errors carry it too.
        let r = app
            .client
            .get(app.url("/v1/plans"))
            .header("X-Request-Id", "req-401")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["x-request-id"], "req-401");
    }
);

on_both_engines!(
    bodies_that_are_not_acceptable_json,
    |app: TestApp| async move {
        let t = token("t1", ALL_SCOPES);
        let send = |ct: Option<&'static str>, body: Vec<u8>| {
            let mut req = app
                .client
                .post(app.url("/v1/plans"))
                .bearer_auth(&t)
                .body(body);
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            async move { Reply::from(req.send().await.unwrap()).await }
        };
        send(Some("application/json"), b"{\"subject\": ".to_vec())
            .await
            .assert_problem(400);
        send(Some("application/json"), b"".to_vec())
            .await
            .assert_problem(400);
        send(Some("text/plain"), b"{}".to_vec())
            .await
            .assert_problem(415);
        send(None, b"{}".to_vec()).await.assert_problem(415);
        send(Some("application/xml"), b"<plan/>".to_vec())
            .await
            .assert_problem(415);
        let mut big = plan_body("Patient/big");
        big["notes"] = json!("x".repeat(1024 * 1024 + 10));
        send(Some("application/json"), serde_json::to_vec(&big).unwrap())
            .await
            .assert_problem(413);
        // Just under the limit is parsed (and refused for the notes' length, not the size).
        let mut under = plan_body("Patient/big");
        under["notes"] = json!("x".repeat(1000 * 1000));
        let r = send(
            Some("application/json; charset=utf-8"),
            serde_json::to_vec(&under).unwrap(),
        )
        .await;
        r.assert_problem(422);
        assert_eq!(r.error_fields(), vec!["notes"]);
        send(Some("application/json"), b"[1,2]".to_vec())
            .await
            .assert_problem(422);
        send(Some("application/json"), b"\"text\"".to_vec())
            .await
            .assert_problem(422);
        // Nothing was stored.
        assert_eq!(app.get("/v1/plans", "t1").await.body["items"], json!([]));
    }
);

on_both_engines!(
    unknown_paths_are_404_and_wrong_methods_405,
    |app: TestApp| async move {
        let r = app.get("/v1/nothing-here", "t1").await;
        r.assert_problem(404);
        let r = app.call(Method::DELETE, "/v1/plans", "t1", None).await;
        r.assert_problem(405);
        assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
        let r = app
            .call(
                Method::PATCH,
                "/v1/plans/01a2234d-0e82-7794-bfcd-3081f81100c8",
                "t1",
                None,
            )
            .await;
        r.assert_problem(405);
        assert_eq!(r.header("allow"), Some("GET, HEAD, PUT"));
    }
);

on_both_engines!(
    metrics_are_labelled_by_route_template,
    |app: TestApp| async move {
        let p = app
            .post("/v1/plans", "t1", &plan_body("Patient/metrics-secret-99"))
            .await;
        let id = p.body["id"].as_str().unwrap().to_string();
        app.get(&format!("/v1/plans/{id}"), "t1").await;
        app.get("/v1/plans?subject=Patient/metrics-secret-99", "t1")
            .await;
        let text = app.metrics().await;
        assert!(text.contains("http_requests_total"), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(text.contains("route=\"/v1/plans/{id}\""));
        assert!(text.contains("status=\"201\""));
        assert!(!text.contains(&id), "no raw ids in metrics");
        assert!(
            !text.contains("metrics-secret-99"),
            "no subjects in metrics"
        );
    }
);

#[actix_web::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let r = app.client.get(app.url("/docs")).send().await.unwrap();
    assert!(r.status().is_redirection());
    let r = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("swagger"));
    let r = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[actix_web::test]
async fn the_committed_contract_matches_the_served_one() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let served: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let committed: Value =
        serde_json::from_str(include_str!("../../openapi/openapi.json")).unwrap();
    assert!(
        served == committed,
        "openapi/openapi.json is stale: regenerate it with `cargo run -- openapi > openapi/openapi.json`"
    );
    // Every operation has a unique operationId, a summary, and documents its errors as problems.
    let mut ids = std::collections::HashSet::new();
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
            assert!(op["summary"].is_string(), "{id} has no summary");
            // Error responses point at the shared problem responses; which ones each
            // operation lists is checked against the handlers in tests/api/contract.rs.
            for (code, response) in op["responses"].as_object().unwrap() {
                if code.starts_with('4') || code.starts_with('5') {
                    // A shared problem response, or one of the operation's own that is still a
                    // problem (the CDS 412) or a FHIR OperationOutcome.
                    let r = response["$ref"].as_str().unwrap_or_default();
                    let own = response["content"]
                        .as_object()
                        .is_some_and(|c| c.contains_key("application/problem+json"));
                    assert!(
                        r.starts_with("#/components/responses/") || own,
                        "{id} {code}"
                    );
                }
            }
        }
    }
    assert!(served["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(
        served["components"]["responses"]["Unprocessable"]["content"]["application/problem+json"]
            ["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
}

on_both_engines!(
    the_root_points_at_the_docs_and_the_contract,
    |app: TestApp| async move {
        let r = Reply::from(app.client.get(app.url("/")).send().await.unwrap()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["docs"], "/docs/");
        assert_eq!(r.body["openapi"], "/openapi.json");
        // Both answer, without a token.
        for path in ["/docs/", "/openapi.json"] {
            let r = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
        }
    }
);

/// The background checkpoint (every 200 ms on SQLite) lets a log of 1 000 pages or more start
/// again, copying the last frames with writers held off; how many it copied so is exported.
#[actix_web::test]
async fn a_log_restart_reports_the_frames_copied_with_writers_held_off() {
    /// Log restarts reported in the metrics' text, if any.
    fn restarts(text: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with("telemental_sqlite_checkpoint_held_pages_count"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
    }
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    // Each create commits several pages of log on its own (one request at a time).
    let mut creates = 0;
    while creates < 400 && (creates % 50 != 0 || restarts(&app.metrics().await).is_none()) {
        let r = app
            .post(
                "/v1/plans",
                "t1",
                &plan_body(&format!("Patient/ckpt-{creates}")),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        creates += 1;
    }
    let mut text = app.metrics().await;
    for _ in 0..50 {
        if restarts(&text).is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        text = app.metrics().await;
    }
    assert!(
        restarts(&text).is_some_and(|n| n >= 1.0),
        "no log restart reported after {creates} creates: {text}"
    );
}
