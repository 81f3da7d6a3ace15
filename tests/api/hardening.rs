//! Issue 12's red-team findings on the HTTP surface, each reproduced as it was found: made-up
//! methods in metrics, slow clients, NUL and far dates, and the HTTP details clients rely on.

use crate::helpers::*;
use crate::on_both_engines;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---- part 1: metrics labels from closed sets ----

#[actix_web::test]
async fn made_up_methods_and_paths_do_not_make_new_metric_series() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    for i in 0..20 {
        let m = Method::from_bytes(format!("RT{i}X{suffix}").as_bytes()).unwrap();
        let r = app.client.request(m, app.url("/healthz")).send().await;
        assert!(r.is_ok());
        let path = format!("/no-such-{suffix}-{i}");
        app.client.get(app.url(&path)).send().await.unwrap();
    }
    let text = app.metrics().await;
    assert!(
        !text.contains(&suffix),
        "a raw method or path became a label"
    );
    assert!(
        text.contains("method=\"other\""),
        "made-up methods are `other`"
    );
    assert!(
        text.contains("route=\"unmatched\""),
        "unknown paths are `unmatched`"
    );
}

// ---- part 2: slow clients ----

async fn raw(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

/// Reads until the server closes the connection; what it sent. A guard (not a measurement)
/// stops a test that would otherwise hang for ever.
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    assert!(r.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&out).into_owned()
}

async fn app_with_short_timeouts() -> TestApp {
    let (mut settings, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    settings.header_timeout = Duration::from_millis(500);
    settings.body_timeout = Duration::from_millis(500);
    spawn_with(settings, dir, Engine::Sqlite).await
}

fn port_of(app: &TestApp) -> u16 {
    app.base.rsplit(':').next().unwrap().parse().unwrap()
}

#[actix_web::test]
async fn headers_that_never_finish_are_cut_off() {
    let app = app_with_short_timeouts().await;
    let mut s = raw(port_of(&app)).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut s).await;
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
}

#[actix_web::test]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let app = app_with_short_timeouts().await;
    let t = token("t1", ALL_SCOPES);
    let mut s = raw(port_of(&app)).await;
    let head = format!(
        "POST /v1/plans HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"subject\": "
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let got = read_until_closed(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("urn:telemental:problem:request-timeout"));
}

#[actix_web::test]
async fn an_error_before_the_body_closes_without_reading_it() {
    let app = app_with_short_timeouts().await;
    let mut s = raw(port_of(&app)).await;
    // No token, a chunked body that never ends.
    s.write_all(
        b"POST /v1/plans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n",
    )
    .await
    .unwrap();
    let got = read_until_closed(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
}

#[actix_web::test]
async fn connections_over_the_cap_wait_for_a_free_one() {
    let (mut settings, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    settings.max_connections = workers as u32; // one per worker
    settings.header_timeout = Duration::from_secs(2);
    let app = spawn_with(settings, dir, Engine::Sqlite).await;
    let port = port_of(&app);
    // Fill every slot with a client that sends half a request head and stalls.
    let mut stalled = Vec::new();
    for _ in 0..workers {
        let mut s = raw(port).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One more request: served only once a stalled client has been cut off (header timeout).
    let r = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let mut closed = 0;
    for s in &mut stalled {
        let mut buf = [0u8; 256];
        // A closed connection reads (a 408 or) EOF at once; an open one would block.
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert!(
        closed >= 1,
        "the extra request was served while every slot was still held"
    );
}

// ---- part 3: NUL and far dates, the same on both engines ----

on_both_engines!(
    nul_and_far_dates_are_refused_with_422,
    |app: TestApp| async move {
        let mut plan = plan_body("Patient/nul");
        plan["notes"] = json!("before\u{0}after");
        let r = app.post("/v1/plans", "t1", &plan).await;
        r.assert_problem(422);
        assert_eq!(r.error_fields(), vec!["notes"]);

        let mut plan = plan_body("Patient/far");
        plan["last_reviewed_on"] = json!("-262143-01-01");
        let r = app.post("/v1/plans", "t1", &plan).await;
        r.assert_problem(422);
        assert_eq!(r.error_fields(), vec!["last_reviewed_on"]);

        let mut plan = plan_body("Patient/a\u{0}b");
        plan["barriers"][0]["note"] = json!("x\u{0}");
        let r = app.post("/v1/plans", "t1", &plan).await;
        assert_eq!(r.error_fields(), vec!["subject", "barriers[0].note"]);

        for q in [
            "/v1/audit-events?subject=a%00b",
            "/v1/audit-events?resource_type=plan%00",
            "/v1/plans?subject=Patient%2F1%00",
            "/v1/plans?review_due_before=-5000-01-01",
            "/v1/referrals?subject=%00",
        ] {
            app.get(q, "t1").await.assert_problem(422);
        }

        // A referral scheduled in year 1.
        let created = app
            .post(
                "/v1/referrals",
                "t1",
                &json!({"subject": "Patient/1", "reason": "not_accessible", "urgency": "urgent",
                    "appointment_type": "therapy"}),
            )
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.body["id"].as_str().unwrap();
        let r = app
            .post(
                &format!("/v1/referrals/{id}/status"),
                "t1",
                &json!({"status": "scheduled", "appointment_at": "0001-01-01T09:00:00Z"}),
            )
            .await;
        r.assert_problem(422);
        assert_eq!(r.error_fields(), vec!["appointment_at"]);

        // NUL in a token's tenant or sub: 401, never a 500.
        for (k, v) in [("tenant", "t\u{0}1"), ("sub", "me\u{0}")] {
            let mut c = claims("t1", ALL_SCOPES);
            c[k] = json!(v);
            app.call_with(Method::GET, "/v1/plans", &mint(&c), None, &[])
                .await
                .assert_problem(401);
        }
        // Nothing above reached the database as an error.
        assert_eq!(app.get("/v1/plans", "t1").await.status, 200);
    }
);

// ---- part 10: HTTP details ----

on_both_engines!(http_details_clients_rely_on, |app: TestApp| async move {
    let created = app.post("/v1/plans", "t1", &plan_body("Patient/h")).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let id = created.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/plans/{id}");

    // Every /v1 response, errors included, is no-store; operational endpoints need not be.
    assert_eq!(
        app.get(&path, "t1").await.header("cache-control"),
        Some("no-store")
    );
    let missing = app
        .get("/v1/plans/00000000-0000-0000-0000-000000000000", "t1")
        .await;
    assert_eq!(missing.header("cache-control"), Some("no-store"));
    let unauth = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(unauth.headers().get("cache-control").unwrap(), "no-store");

    // HEAD wherever GET is: the GET's headers, no body.
    let head = app
        .client
        .head(app.url(&path))
        .bearer_auth(token("t1", ALL_SCOPES))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers().get("etag").unwrap(), "\"1\"");
    assert!(head.bytes().await.unwrap().is_empty());
    for p in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = app.client.head(app.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "HEAD {p}");
    }
    // HEAD where there is no GET stays 405.
    let r = app
        .client
        .head(app.url("/v1/recommendations"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // A weak tag never matches If-Match (strong comparison): 412, nothing changes.
    let r = app
        .put(&path, "t1", &plan_body("Patient/h"), "W/\"1\"")
        .await;
    r.assert_problem(412);
    let r = app.put(&path, "t1", &plan_body("Patient/h"), "\"1\"").await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Two Authorization headers: 401, even when both are valid.
    let t = token("t1", ALL_SCOPES);
    let r = app
        .client
        .get(app.url(&path))
        .header("Authorization", format!("Bearer {t}"))
        .header("Authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap();
    Reply::from(r).await.assert_problem(401);

    // Token lifetime: over 24 h refused, by iat or, without iat, from now.
    let mut c = claims("t1", ALL_SCOPES);
    c["exp"] = json!(now() + 25 * 3600);
    app.call_with(Method::GET, &path, &mint(&c), None, &[])
        .await
        .assert_problem(401);
    c.as_object_mut().unwrap().remove("iat");
    app.call_with(Method::GET, &path, &mint(&c), None, &[])
        .await
        .assert_problem(401);
    c["exp"] = json!(now() + 23 * 3600);
    assert_eq!(
        app.call_with(Method::GET, &path, &mint(&c), None, &[])
            .await
            .status,
        200
    );
    let mut c = claims("t1", ALL_SCOPES);
    c["iat"] = json!(now() - 20 * 3600);
    c["exp"] = json!(now() + 5 * 3600);
    app.call_with(Method::GET, &path, &mint(&c), None, &[])
        .await
        .assert_problem(401);

    // A key given twice in a body: 422 naming it (serde would keep the last silently).
    let r = app
        .client
        .post(app.url("/v1/plans"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(
            serde_json::to_string(&plan_body("Patient/dup"))
                .unwrap()
                .replacen('{', "{\"subject\": \"Patient/other\", ", 1),
        )
        .send()
        .await
        .unwrap();
    let r = Reply::from(r).await;
    r.assert_problem(422);
    assert_eq!(r.error_fields(), vec!["subject"]);
    let listed = app.get("/v1/plans?subject=Patient/other", "t1").await;
    assert_eq!(listed.body["items"], Value::Array(vec![]));
});
