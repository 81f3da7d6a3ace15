//! Issue 12 parts 7 and 8: SSRF through address families and transition prefixes, webhooks
//! per tenant, duplicates, paging, and a deleted webhook's history.

use crate::helpers::*;
use crate::on_both_engines;
use crate::webhooks::{register, Receiver};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use telemental::store::outbox::NewWebhook;
use telemental::store::{AuditEntry, Store, Ts};

/// Every address the red team got through (and a few relatives).
const SSRF_URLS: &[&str] = &[
    "http://[::ffff:0:127.0.0.1]/hook",
    "http://[2002:7f00:1::]/hook",
    "http://[2002:a9fe:a9fe::]/hook",
    "http://[64:ff9b:1::a9fe:a9fe]/hook",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",
    "http://192.0.0.1/hook",
    "http://192.88.99.1/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://[64:ff9b::7f00:1]/hook",
    "http://2130706433/hook",
];

on_both_engines!(
    special_purpose_addresses_are_refused_at_registration,
    |app: TestApp| async move {
        for url in SSRF_URLS {
            let r = register(&app, url, json!(["referral.created"])).await;
            r.assert_problem(422);
            assert_eq!(r.error_fields(), vec!["url"], "{url}");
        }
        assert_eq!(app.get("/v1/webhooks", "t1").await.body["items"], json!([]));
    }
);

on_both_engines!(
    a_stored_special_purpose_address_is_refused_at_delivery,
    |app: TestApp| async move {
        // As if registered before the registry was covered: written straight to the database.
        let store = Store::connect(&app.settings.database_url, 1)
            .await
            .unwrap()
            .with_keys(app.settings.keyring().unwrap());
        let id = uuid::Uuid::now_v7();
        let entry = AuditEntry {
            tenant: "t1".into(),
            actor: "legacy".into(),
            action: "create",
            resource_type: "webhook",
            resource_id: Some(id),
            subject: None,
            request_id: "legacy".into(),
            outcome: "success",
            at: Ts::now(),
        };
        let w = NewWebhook {
            id,
            tenant: "t1",
            url: "http://[::ffff:0:127.0.0.1]:9/hook",
            events: ",referral.created,",
            secret: "whsec_x",
            description: None,
            at: Ts::now(),
        };
        store.insert_webhook(&w, 50, &entry).await.unwrap();
        store.close().await;
        app.post(
            "/v1/referrals",
            "t1",
            &json!({"subject": "Patient/s", "reason": "not_preferred", "urgency": "routine"}),
        )
        .await;
        let path = format!("/v1/webhooks/{id}/deliveries?status=dead");
        assert!(
            eventually(
                || async {
                    app.get(&path, "t1").await.body["items"]
                        .as_array()
                        .is_some_and(|a| a.len() == 1)
                },
                Duration::from_secs(10)
            )
            .await,
            "the delivery is refused and dead-lettered, not sent"
        );
        let d = app.get(&path, "t1").await;
        let error = d.body["items"][0]["attempt_log"][0]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(error.contains("loopback, private"), "{error}");
        assert!(d.body["items"][0]["attempt_log"][0]["status_code"].is_null());
    }
);

async fn app_with_cap(engine: Engine, cap: u32) -> Option<TestApp> {
    let (mut s, dir) = fresh_settings(engine).await?;
    s.webhook_allow_private = true;
    s.webhooks_per_tenant = cap;
    s.worker_interval = Duration::from_millis(100);
    Some(spawn_with(s, dir, engine).await)
}

async fn limits(app: TestApp) {
    let rx = Receiver::start(0).await;
    // The same URL with the same events (in any order) is one subscription: 409.
    let first = register(
        &app,
        &rx.url,
        json!(["referral.created", "plan.review_due"]),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = register(
        &app,
        &rx.url,
        json!(["plan.review_due", "referral.created"]),
    )
    .await;
    again.assert_problem(409);
    assert_eq!(again.body["existing_id"], first.body["id"]);
    // Other events on the same URL are another subscription.
    let other = register(&app, &rx.url, json!(["referral.created"])).await;
    assert_eq!(other.status, 201);
    // Up to the cap (3), then 409; another tenant has its own count.
    let third = register(
        &app,
        &format!("{}?n=3", rx.url),
        json!(["referral.created"]),
    )
    .await;
    assert_eq!(third.status, 201);
    let over = register(
        &app,
        &format!("{}?n=4", rx.url),
        json!(["referral.created"]),
    )
    .await;
    over.assert_problem(409);
    assert!(over.body["detail"]
        .as_str()
        .unwrap()
        .contains("TELEMENTAL_WEBHOOKS_PER_TENANT"));
    let elsewhere = app
        .post(
            "/v1/webhooks",
            "t2",
            &json!({"url": rx.url, "events": ["referral.created"]}),
        )
        .await;
    assert_eq!(elsewhere.status, 201);

    // The list is paged like every other list.
    let page = app.get("/v1/webhooks?limit=2", "t1").await;
    assert_eq!(page.body["items"].as_array().unwrap().len(), 2);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_string();
    let rest = app
        .get(&format!("/v1/webhooks?limit=2&cursor={cursor}"), "t1")
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
    assert!(rest.body["next_cursor"].is_null());
    app.get("/v1/webhooks?limit=0", "t1")
        .await
        .assert_problem(400);

    // One referral makes one delivery per distinct subscription, not one per duplicate.
    app.post(
        "/v1/referrals",
        "t1",
        &json!({"subject": "Patient/l", "reason": "not_preferred", "urgency": "routine"}),
    )
    .await;
    rx.wait_for(3).await;

    // A deleted webhook frees its place and keeps its delivery history readable.
    let id = first.body["id"].as_str().unwrap();
    let r = app
        .call(Method::DELETE, &format!("/v1/webhooks/{id}"), "t1", None)
        .await;
    assert_eq!(r.status, 204);
    let history_path = format!("/v1/webhooks/{id}/deliveries");
    let history = app.get(&history_path, "t1").await;
    assert_eq!(history.status, 200, "{}", history.body);
    assert_eq!(history.body["items"].as_array().unwrap().len(), 1);
    // (The receiver may have the event a moment before the attempt is recorded.)
    assert!(
        eventually(
            || async {
                app.get(&history_path, "t1").await.body["items"][0]["status"] == "delivered"
            },
            Duration::from_secs(10)
        )
        .await
    );
    app.get(&format!("/v1/webhooks/{id}"), "t1")
        .await
        .assert_problem(404);
    // Not another tenant's, though.
    app.get(&format!("/v1/webhooks/{id}/deliveries"), "t2")
        .await
        .assert_problem(404);
    let again = register(
        &app,
        &format!("{}?n=5", rx.url),
        json!(["referral.created"]),
    )
    .await;
    assert_eq!(again.status, 201);
}

#[actix_web::test]
async fn webhooks_are_capped_per_tenant_unique_and_paged_sqlite() {
    limits(app_with_cap(Engine::Sqlite, 3).await.unwrap()).await;
}

#[actix_web::test]
async fn webhooks_are_capped_per_tenant_unique_and_paged_postgres() {
    let Some(app) = app_with_cap(Engine::Postgres, 3).await else {
        return;
    };
    limits(app).await;
}
