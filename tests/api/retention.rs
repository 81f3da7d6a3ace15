//! Bounded growth: the outbox is pruned past its retention, and the sweepers read only rows
//! that can still fire.

use crate::healing::HangingReceiver;
use crate::helpers::*;
use crate::on_both_engines;
use crate::webhooks::{register, Receiver};
use serde_json::{json, Value};
use std::time::Duration;
use telemental::store::outbox::REVIEW_SWEEP;
use telemental::store::{Db, Store};

/// Runs one query returning a count on the app's own database.
async fn count(store: &Store, sql: &str) -> i64 {
    match &store.db {
        Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
    }
}

async fn deliveries(app: &TestApp, hook: &Value) -> Vec<Value> {
    let r = app
        .get(
            &format!("/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap()),
            "t1",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

async fn spawn_short_retention(engine: Engine) -> Option<TestApp> {
    let (mut s, dir) = fresh_settings(engine).await?;
    s.webhook_allow_private = true;
    s.webhook_retry_base = Duration::from_millis(100);
    s.webhook_max_attempts = 1; // a failure is a dead letter at once
    s.webhook_timeout = Duration::from_secs(120);
    s.worker_interval = Duration::from_millis(100);
    s.outbox_retention = Duration::from_secs(3);
    Some(spawn_with(s, dir, engine).await)
}

async fn delivered_dead_and_pending_are_pruned_by_their_own_clocks(app: TestApp) {
    let store = Store::connect(&app.settings.database_url, 1).await.unwrap();
    let ok = Receiver::start(0).await;
    let failing = Receiver::start(u32::MAX).await;
    let hung = HangingReceiver::start().await;
    let mut hooks = Vec::new();
    for url in [ok.url.clone(), failing.url.clone(), hung.url()] {
        let r = register(&app, &url, json!(["referral.created"])).await;
        assert_eq!(r.status, 201);
        hooks.push(r.body);
    }
    let r = app
        .post(
            "/v1/referrals",
            "t1",
            &json!({"subject": "Patient/old", "reason": "not_preferred", "urgency": "routine"}),
        )
        .await;
    assert_eq!(r.status, 201);
    ok.wait_for(1).await;
    let status = |items: Vec<Value>| items.first().map(|d| d["status"].clone());
    let finished = eventually(
        || async {
            status(deliveries(&app, &hooks[0]).await) == Some(json!("delivered"))
                && status(deliveries(&app, &hooks[1]).await) == Some(json!("dead"))
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(
        finished,
        "one delivered, the failing receiver's a dead letter"
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM webhook_attempts").await,
        2
    );

    // Past the retention, the delivered one and the dead letter go with their attempts; the
    // one still in flight (pending) stays, and so does the event it needs.
    let pruned = eventually(
        || async {
            deliveries(&app, &hooks[0]).await.is_empty()
                && deliveries(&app, &hooks[1]).await.is_empty()
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(pruned, "finished deliveries are pruned after the retention");
    assert_eq!(
        status(deliveries(&app, &hooks[2]).await),
        Some(json!("pending"))
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM webhook_attempts").await,
        0
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM outbox_events").await, 1);

    // The hung receiver goes away: its delivery dies, and after the retention it and the event
    // are gone too.
    hung.stop().await;
    let all_gone = eventually(
        || async {
            count(&store, "SELECT COUNT(*) FROM outbox_events").await == 0
                && count(&store, "SELECT COUNT(*) FROM webhook_deliveries").await == 0
        },
        Duration::from_secs(15),
    )
    .await;
    assert!(all_gone, "the last delivery and its event are pruned");
    // A newer event is untouched.
    app.post(
        "/v1/referrals",
        "t1",
        &json!({"subject": "Patient/new", "reason": "not_preferred", "urgency": "routine"}),
    )
    .await;
    ok.wait_for(2).await;
    assert_eq!(count(&store, "SELECT COUNT(*) FROM outbox_events").await, 1);
    store.close().await;
}

#[actix_web::test]
async fn the_outbox_is_pruned_after_its_retention_on_sqlite() {
    let app = spawn_short_retention(Engine::Sqlite).await.unwrap();
    delivered_dead_and_pending_are_pruned_by_their_own_clocks(app).await;
}

#[actix_web::test]
async fn the_outbox_is_pruned_after_its_retention_on_postgres() {
    let Some(app) = spawn_short_retention(Engine::Postgres).await else {
        eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    delivered_dead_and_pending_are_pruned_by_their_own_clocks(app).await;
}

/// The query plan of `sql` with today's date bound to `$1`, as text.
async fn plan(store: &Store, sql: &str) -> String {
    let today = chrono::Utc::now().date_naive();
    match &store.db {
        Db::Sqlite(p) => {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let rows = sqlx::query_as::<_, (i64, i64, i64, String)>(&explain)
                .bind(today)
                .fetch_all(p)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
        Db::Postgres(p) => {
            let mut c = p.acquire().await.unwrap();
            // On a nearly empty table a sequential scan is cheapest; forbid it to learn whether
            // the index can serve the query at all.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut *c)
                .await
                .unwrap();
            let explain = format!("EXPLAIN {sql}");
            let rows = sqlx::query_scalar::<_, String>(&explain)
                .bind(today)
                .fetch_all(&mut *c)
                .await
                .unwrap();
            sqlx::query("RESET enable_seqscan")
                .execute(&mut *c)
                .await
                .unwrap();
            rows.join("\n")
        }
    }
}

on_both_engines!(
    the_review_sweep_reads_only_plans_that_can_fire,
    |app: TestApp| async move {
        let app = app; // the whole app (and its SQLite directory) lives to the end
        let store = Store::connect(&app.settings.database_url, 1).await.unwrap();
        let review = plan(&store, REVIEW_SWEEP).await;
        assert!(
            review.contains("plans_review_unnotified"),
            "the review sweep uses the partial index: {review}"
        );
        store.close().await;
    }
);

/// A worker interval longer than the pruning period (ten minutes at most) is a valid setting:
/// the service starts and answers (it once panicked in the worker's set-up).
#[actix_web::test]
async fn a_worker_interval_above_ten_minutes_starts() {
    let (mut s, dir) = fresh_settings(Engine::Sqlite)
        .await
        .expect("sqlite settings");
    s.worker_interval = Duration::from_secs(3600);
    let app = spawn_with(s, dir, Engine::Sqlite).await;
    let r = app
        .post("/v1/plans", "t1", &plan_body("Patient/hourly"))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}
