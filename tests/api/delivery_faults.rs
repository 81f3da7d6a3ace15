//! Webhook delivery under faults: a real `kill -9`, and several instances on one PostgreSQL.

use crate::helpers::*;
use crate::webhooks::{register, Receiver};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_telemental");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(port: u16, db: &str) -> std::process::Child {
    Command::new(BIN)
        .env("TELEMENTAL_BIND", format!("127.0.0.1:{port}"))
        .env("TELEMENTAL_DATABASE_URL", db)
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .env("TELEMENTAL_ENCRYPTION_KEYS", telemental::crypto::TEST_KEYS)
        .env("TELEMENTAL_WEBHOOK_ALLOW_PRIVATE", "true")
        .env("TELEMENTAL_WEBHOOK_RETRY_BASE", "100ms")
        .env("TELEMENTAL_WORKER_INTERVAL", "100ms")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn ready(base: &str) {
    let c = reqwest::Client::new();
    assert!(
        eventually(
            || async {
                c.get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
            Duration::from_secs(20)
        )
        .await,
        "not ready"
    );
}

#[actix_web::test]
async fn an_event_committed_before_kill_9_is_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hook_port = free_port(); // nothing listens yet: every attempt fails
    let mut child = start(port, &db);
    ready(&base).await;
    let c = reqwest::Client::new();
    let t = token("t1", ALL_SCOPES);
    let hook = c.post(format!("{base}/v1/webhooks")).bearer_auth(&t)
        .json(&json!({"url": format!("http://127.0.0.1:{hook_port}/hook"), "events": ["referral.created"]}))
        .send().await.unwrap();
    assert_eq!(hook.status(), 201);
    let created: Value = c
        .post(format!("{base}/v1/referrals"))
        .bearer_auth(&t)
        .json(&json!({"subject": "Patient/k9", "reason": "clinical_risk", "urgency": "emergency"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    child.kill().unwrap(); // SIGKILL right after the 201
    let _ = child.wait();

    let rx = Receiver::start_on(
        std::net::TcpListener::bind(("127.0.0.1", hook_port)).unwrap(),
        0,
    )
    .await;
    let mut child = start(port, &db);
    ready(&base).await;
    let events = rx.wait_for(1).await;
    assert_eq!(events[0]["type"], "referral.created");
    assert_eq!(events[0]["data"]["id"], created["id"]);
    child.kill().unwrap();
    let _ = child.wait();
}

#[actix_web::test]
async fn two_instances_on_one_postgres_deliver_each_event_once() {
    let Some(base_url) = postgres_url() else {
        eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let url = fresh_postgres_db(&base_url).await;
    let mut s = telemental::config::Settings::for_tests(&url, SECRET);
    s.webhook_allow_private = true;
    s.worker_interval = Duration::from_millis(50);
    let a = spawn_with(s.clone(), None, Engine::Postgres).await;
    let b = spawn_with(s, None, Engine::Postgres).await;
    let rx = Receiver::start(0).await;
    register(&a, &rx.url, json!(["referral.created"])).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let app = if i % 2 == 0 { &a } else { &b };
        let r = app.post("/v1/referrals", "t1", &json!({"subject": format!("Patient/{i}"), "reason": "not_preferred", "urgency": "routine"})).await;
        ids.push(r.body["id"].clone());
    }
    rx.wait_for(40).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = rx.events();
    assert_eq!(
        events.len(),
        40,
        "no event delivered twice by the two workers"
    );
    let mut seen: Vec<&Value> = events.iter().map(|e| &e["data"]["id"]).collect();
    seen.sort_by_key(|v| v.to_string());
    seen.dedup();
    assert_eq!(seen.len(), 40);
}
