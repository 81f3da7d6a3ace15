use crate::helpers::*;
use crate::on_both_engines;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use telemental::outbox::guard::verify_signature;

#[derive(Clone, Debug)]
pub struct Received {
    pub event_id: String,
    pub signature: String,
    pub body: Vec<u8>,
}

/// A scheduling system on a local port: records what arrives, fails the first `fail_first`.
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(fail_first: u32) -> Receiver {
        Self::start_on(
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            fail_first,
        )
        .await
    }

    pub async fn start_on(listener: std::net::TcpListener, fail_first: u32) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let fail = Arc::new(Mutex::new(fail_first));
        let (g, f) = (got.clone(), fail);
        let server = HttpServer::new(move || {
            let (g, f) = (g.clone(), f.clone());
            App::new().route(
                "/hook",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let (g, f) = (g.clone(), f.clone());
                    async move {
                        let mut fail = f.lock().unwrap();
                        if *fail > 0 {
                            *fail -= 1;
                            return HttpResponse::InternalServerError().finish();
                        }
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        g.lock().unwrap().push(Received {
                            event_id: h("telemental-event-id"),
                            signature: h("telemental-signature"),
                            body: body.to_vec(),
                        });
                        HttpResponse::NoContent().finish()
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        actix_web::rt::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
        }
    }

    /// The bodies received so far; each is also kept under `target/webhook-samples/`, where
    /// CI validates it against the event's schema in the OpenAPI document
    /// (`scripts/check_webhook_samples.py`).
    pub fn events(&self) -> Vec<Value> {
        let events: Vec<Value> = self
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/webhook-samples");
        if std::fs::create_dir_all(&dir).is_ok() {
            for e in &events {
                let name = format!(
                    "{}-{}.json",
                    e["type"].as_str().unwrap_or("unknown"),
                    e["id"].as_str().unwrap_or("no-id")
                );
                let _ = std::fs::write(dir.join(name), e.to_string());
            }
        }
        events
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        let ok = eventually(
            || async { self.got.lock().unwrap().len() >= n },
            Duration::from_secs(20),
        )
        .await;
        assert!(
            ok,
            "expected {n} deliveries, got {}",
            self.got.lock().unwrap().len()
        );
        self.events()
    }
}

pub async fn spawn_webhook_app(engine: Engine) -> Option<TestApp> {
    let (mut s, dir) = fresh_settings(engine).await?;
    s.webhook_allow_private = true;
    s.webhook_retry_base = Duration::from_millis(100);
    s.worker_interval = Duration::from_millis(100);
    Some(spawn_with(s, dir, engine).await)
}

pub async fn register(app: &TestApp, url: &str, events: Value) -> Reply {
    app.post("/v1/webhooks", "t1", &json!({"url": url, "events": events}))
        .await
}

macro_rules! on_both_with_webhooks {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[actix_web::test]
            async fn sqlite() {
                ($body)(spawn_webhook_app(Engine::Sqlite).await.unwrap()).await;
            }
            #[actix_web::test]
            async fn postgres() {
                let Some(app) = spawn_webhook_app(Engine::Postgres).await else {
                    return;
                };
                ($body)(app).await;
            }
        }
    };
}

on_both_engines!(
    private_webhook_urls_are_refused_by_default,
    |app: TestApp| async move {
        for url in [
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest",
            "http://[::1]/x",
            "http://10.0.0.1/",
        ] {
            let r = register(&app, url, json!(["referral.created"])).await;
            r.assert_problem(422);
            assert_eq!(r.error_fields(), vec!["url"], "{url}");
        }
        let r = register(&app, "ftp://example.org/", json!([])).await;
        assert_eq!(r.error_fields(), vec!["url", "events"]);
        let r = register(&app, "https://example.org/", json!(["referral.exploded"])).await;
        assert_eq!(r.error_fields(), vec!["events[0]"]);
        let no_scope = token("t1", "referrals:write");
        app.call_with(Method::GET, "/v1/webhooks", &no_scope, None, &[])
            .await
            .assert_problem(403);
        assert_eq!(app.get("/v1/webhooks", "t1").await.body["items"], json!([]));
    }
);

on_both_with_webhooks!(
    signed_events_arrive_and_failures_are_retried,
    |app: TestApp| async move {
        let rx = Receiver::start(2).await; // the first two attempts get a 500
        let hook = register(
            &app,
            &rx.url,
            json!(["referral.created", "referral.status_changed"]),
        )
        .await;
        assert_eq!(hook.status, 201, "{}", hook.body);
        let secret = hook.body["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"));
        let hook_id = hook.body["id"].as_str().unwrap().to_string();
        let listed = app.get("/v1/webhooks", "t1").await;
        assert!(
            listed.body["items"][0].get("secret").is_none(),
            "the secret is shown once"
        );

        let r = app
            .post(
                "/v1/referrals",
                "t1",
                &json!({"subject": "Patient/w", "reason": "not_preferred", "urgency": "urgent"}),
            )
            .await;
        let events = rx.wait_for(1).await;
        assert_eq!(events[0]["type"], "referral.created");
        assert_eq!(events[0]["data"]["id"], r.body["id"]);
        assert_eq!(events[0]["data"]["status"], "requested");
        let got = rx.got.lock().unwrap()[0].clone();
        assert_eq!(got.event_id, events[0]["id"].as_str().unwrap());
        let now = chrono::Utc::now().timestamp();
        assert!(
            verify_signature(&secret, &got.signature, &got.body, now, 300),
            "signature verifies"
        );
        assert!(!verify_signature(
            "whsec_wrong",
            &got.signature,
            &got.body,
            now,
            300
        ));

        // The receiver records the event before it answers; the attempt is recorded after.
        let deliveries = format!("/v1/webhooks/{hook_id}/deliveries");
        eventually(
            || async { app.get(&deliveries, "t1").await.body["items"][0]["status"] == "delivered" },
            Duration::from_secs(5),
        )
        .await;
        let d = app.get(&deliveries, "t1").await;
        let first = &d.body["items"][0];
        assert_eq!(first["status"], "delivered");
        assert_eq!(first["attempts"], 3);
        let codes: Vec<&Value> = first["attempt_log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| &a["status_code"])
            .collect();
        assert_eq!(codes, vec![&json!(500), &json!(500), &json!(204)]);

        // Not subscribed: session_check.do_not_proceed is not sent to this hook.
        app.post(
            "/v1/session-checks",
            "t1",
            &json!({"subject": "Patient/w", "modality": "video", "appointment_type": "therapy",
        "clinician_in_private_space": true}),
        )
        .await;
        app.post(
            &format!("/v1/referrals/{}/status", r.body["id"].as_str().unwrap()),
            "t1",
            &json!({"status": "accepted"}),
        )
        .await;
        let events = rx.wait_for(2).await;
        assert_eq!(events[1]["type"], "referral.status_changed");
        // The referral as the API shows it; the previous status ends its history.
        let history = events[1]["data"]["history"].as_array().unwrap();
        assert_eq!(history[history.len() - 2]["status"], "requested");
        assert_eq!(events[1]["data"]["status"], "accepted");
        let read = app
            .get(
                &format!("/v1/referrals/{}", r.body["id"].as_str().unwrap()),
                "t1",
            )
            .await;
        assert_eq!(
            events[1]["data"], read.body,
            "one shape for the referral everywhere"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(rx.events().len(), 2);
    }
);

on_both_with_webhooks!(every_event_type_is_emitted, |app: TestApp| async move {
    let rx = Receiver::start(0).await;
    register(
        &app,
        &rx.url,
        json!([
            "session_check.do_not_proceed",
            "plan.review_due",
            "referral.overdue"
        ]),
    )
    .await;
    // A check without any safety protocol: do not proceed.
    let c = app.post("/v1/session-checks", "t1", &json!({"subject": "Patient/e", "modality": "video", "appointment_type": "therapy",
        "service_user_location": {"description": "home", "address": "secret street 1"}, "clinician_in_private_space": true})).await;
    assert_eq!(c.body["outcome"], "do_not_proceed");
    let events = rx.wait_for(1).await;
    assert_eq!(events[0]["type"], "session_check.do_not_proceed");
    assert_eq!(events[0]["data"]["session_check_id"], c.body["id"]);
    assert!(
        !String::from_utf8_lossy(&rx.got.lock().unwrap()[0].body).contains("secret street"),
        "no location in events"
    );
    // A plan already due for review.
    let mut plan = plan_body("Patient/e");
    plan["last_reviewed_on"] = json!("2026-01-01");
    plan["review_interval_days"] = json!(30);
    app.post("/v1/plans", "t1", &plan).await;
    let events = rx.wait_for(2).await;
    assert_eq!(events[1]["type"], "plan.review_due");
    assert_eq!(events[1]["data"]["next_review_due"], "2026-01-31");
    // Sent once: a later sweep does not repeat it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.events().len(), 2);
});

#[actix_web::test]
async fn overdue_referrals_are_announced_once() {
    let (mut s, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    s.webhook_allow_private = true;
    s.worker_interval = Duration::from_millis(100);
    s.referral_due_emergency = Duration::from_secs(1);
    let app = spawn_with(s, dir, Engine::Sqlite).await;
    let rx = Receiver::start(0).await;
    register(&app, &rx.url, json!(["referral.overdue"])).await;
    let late = app
        .post(
            "/v1/referrals",
            "t1",
            &json!({"subject": "Patient/o", "reason": "clinical_risk", "urgency": "emergency"}),
        )
        .await;
    let on_time = app
        .post(
            "/v1/referrals",
            "t1",
            &json!({"subject": "Patient/p", "reason": "clinical_risk", "urgency": "emergency"}),
        )
        .await;
    app.post(
        &format!(
            "/v1/referrals/{}/status",
            on_time.body["id"].as_str().unwrap()
        ),
        "t1",
        &json!({"status": "scheduled", "appointment_at": "2026-12-01T10:00:00Z"}),
    )
    .await;
    let events = rx.wait_for(1).await;
    assert_eq!(events[0]["type"], "referral.overdue");
    assert_eq!(events[0]["data"]["id"], late.body["id"]);
    // The same shape as the created event and the API: the referral, now overdue.
    let read = app
        .get(
            &format!("/v1/referrals/{}", late.body["id"].as_str().unwrap()),
            "t1",
        )
        .await;
    assert_eq!(events[0]["data"], read.body);
    assert_eq!(events[0]["data"]["overdue"], true);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        rx.events().len(),
        1,
        "emitted once, and never for the scheduled one"
    );
}

#[actix_web::test]
async fn dead_letters_can_be_replayed() {
    let (mut s, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    s.webhook_allow_private = true;
    s.webhook_retry_base = Duration::from_millis(50);
    s.webhook_max_attempts = 2;
    s.worker_interval = Duration::from_millis(100);
    let app = spawn_with(s, dir, Engine::Sqlite).await;
    let rx = Receiver::start(2).await;
    let hook = register(&app, &rx.url, json!(["referral.created"])).await;
    let hook_id = hook.body["id"].as_str().unwrap().to_string();
    app.post(
        "/v1/referrals",
        "t1",
        &json!({"subject": "Patient/d", "reason": "not_preferred", "urgency": "routine"}),
    )
    .await;
    let path = format!("/v1/webhooks/{hook_id}/deliveries?status=dead");
    assert!(
        eventually(
            || async {
                app.get(&path, "t1").await.body["items"]
                    .as_array()
                    .is_some_and(|a| a.len() == 1)
            },
            Duration::from_secs(10)
        )
        .await
    );
    let dead = app.get(&path, "t1").await;
    let delivery = dead.body["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(dead.body["items"][0]["attempts"], 2);
    assert!(rx.events().is_empty());
    let replay = app
        .call(
            Method::POST,
            &format!("/v1/webhooks/{hook_id}/deliveries/{delivery}/replay"),
            "t1",
            None,
        )
        .await;
    assert_eq!(replay.status, 202);
    let events = rx.wait_for(1).await;
    assert_eq!(events[0]["type"], "referral.created");
    app.call(
        Method::POST,
        &format!(
            "/v1/webhooks/{hook_id}/deliveries/{}/replay",
            uuid::Uuid::nil()
        ),
        "t1",
        None,
    )
    .await
    .assert_problem(404);
    // Deleting the hook stops it for good.
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v1/webhooks/{hook_id}"),
            "t1",
            None
        )
        .await
        .status,
        204
    );
    app.call(
        Method::DELETE,
        &format!("/v1/webhooks/{hook_id}"),
        "t1",
        None,
    )
    .await
    .assert_problem(404);
    app.post(
        "/v1/referrals",
        "t1",
        &json!({"subject": "Patient/d2", "reason": "not_preferred", "urgency": "routine"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.events().len(), 1);
}

on_both_with_webhooks!(
    events_written_while_the_receiver_was_down_arrive_after_a_restart,
    |app: TestApp| async move {
        // The receiver's port is reserved but nothing answers yet.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/hook");
        register(&app, &url, json!(["referral.created"])).await;
        let created = app.post("/v1/referrals", "t1", &json!({"subject": "Patient/r", "reason": "technology_failure", "urgency": "urgent"})).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        // The service goes down (as after a crash: the event is only in the database).
        app.stop().await;
        let rx =
            Receiver::start_on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(), 0).await;
        let mut s = app.settings.clone();
        s.webhook_retry_base = Duration::from_millis(100);
        let again = spawn_with(s, None, app.engine).await;
        let events = rx.wait_for(1).await;
        assert_eq!(events[0]["data"]["id"], created.body["id"]);
        drop(again);
    }
);
