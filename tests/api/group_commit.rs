//! Group commit of record changes (SQLite): requests that arrive while a batch is being
//! written join the next one, one transaction for all; a change that fails is undone alone.

use crate::helpers::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

fn referral(subject: &str) -> Value {
    json!({"subject": subject, "reason": "not_accessible", "urgency": "routine",
           "appointment_type": "therapy", "detail": "no private space at home",
           "requested_by": "Practitioner/9"})
}

/// Sends a batch of changes while another connection holds the SQLite file's write lock, so
/// that they queue behind one blocked transaction; releases it and checks every outcome.
async fn changes_queued_together_commit_together(engine: Engine) {
    let Some(app) = spawn_app(engine).await else {
        eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: PostgreSQL case skipped");
        return;
    };
    let existing = app.post("/v1/plans", "t1", &plan_body("Patient/0")).await;
    assert_eq!(existing.status, 201, "{}", existing.body);
    let existing_path = format!("/v1/plans/{}", existing.body["id"].as_str().unwrap());
    let before = (
        app.writes.change_batches.load(Ordering::SeqCst),
        app.writes.changes.load(Ordering::SeqCst),
        app.writes.changes_undone.load(Ordering::SeqCst),
    );

    // On SQLite, another connection takes the write lock: the writer's next transaction waits
    // for it (busy timeout), and everything sent meanwhile queues for the one after.
    let lock = if engine == Engine::Sqlite {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&app.settings.database_url)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut c)
            .await
            .unwrap();
        Some(c)
    } else {
        None
    };
    let bodies: Vec<Value> = (1..=12)
        .map(|i| plan_body(&format!("Patient/{i}")))
        .chain([plan_body("Patient/3"), plan_body("Patient/0")])
        .collect();
    let creates =
        futures_util::future::join_all(bodies[..13].iter().map(|b| app.post("/v1/plans", "t1", b)));
    let stale = app.put(&existing_path, "t1", &bodies[13], "\"7\"");
    let current = app.put(&existing_path, "t1", &bodies[13], "\"1\"");
    let keyed = referral("Patient/1");
    let first_key = app.post_with_key("/v1/referrals", &keyed, "same-key");
    let second_key = app.post_with_key("/v1/referrals", &keyed, "same-key");
    let release = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some(mut c) = lock {
            sqlx::query("COMMIT").execute(&mut c).await.unwrap();
        }
    };
    let (creates, stale, current, first_key, second_key, ()) =
        tokio::join!(creates, stale, current, first_key, second_key, release);

    // Each request has its own outcome, whatever its batch did: Patient/3 twice, so exactly
    // one of those two creates is a 409.
    let mut statuses: Vec<u16> = creates.iter().map(|c| c.status.as_u16()).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [[201; 12].as_slice(), &[409]].concat(),
        "{statuses:?}"
    );
    let refused = creates.iter().find(|c| c.status == 409).unwrap();
    refused.assert_problem(409);
    stale.assert_problem(412);
    assert_eq!(current.status, 200, "{}", current.body);
    assert_eq!(current.body["version"], 2);
    // The same idempotency key twice: both answered with the one referral.
    assert_eq!(first_key.status, 201, "{}", first_key.body);
    assert_eq!(second_key.status, 201, "{}", second_key.body);
    assert_eq!(first_key.body["id"], second_key.body["id"]);

    // What was answered as created is there (and only once).
    for c in creates.iter().filter(|c| c.status == 201) {
        let path = format!("/v1/plans/{}", c.body["id"].as_str().unwrap());
        assert_eq!(app.get(&path, "t1").await.status, 200);
    }
    let list = app.get("/v1/referrals?subject=Patient/1", "t1").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let audit = app
        .get("/v1/audit-events?resource_type=plan&limit=200", "t1")
        .await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let created = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "create")
        .count();
    assert_eq!(
        created, 13,
        "one audit row per plan created, none for the refused twin"
    );

    let after = (
        app.writes.change_batches.load(Ordering::SeqCst),
        app.writes.changes.load(Ordering::SeqCst),
        app.writes.changes_undone.load(Ordering::SeqCst),
    );
    if engine == Engine::Sqlite {
        // 17 changes ran (12 creates, the twin, two updates, two referrals) in at most two
        // transactions: the one that waited for the lock, and the one that took the rest.
        assert_eq!(after.1 - before.1, 17, "{before:?} -> {after:?}");
        assert!(after.0 - before.0 <= 2, "{before:?} -> {after:?}");
        // The twin, the stale update and the second use of the key were undone alone.
        assert_eq!(after.2 - before.2, 3, "{before:?} -> {after:?}");
    } else {
        // PostgreSQL groups concurrent commits itself: a transaction per change.
        assert_eq!(after, before);
    }
}

#[actix_web::test]
async fn changes_queued_together_commit_together_sqlite() {
    changes_queued_together_commit_together(Engine::Sqlite).await;
}

#[actix_web::test]
async fn changes_queued_together_commit_together_postgres() {
    changes_queued_together_commit_together(Engine::Postgres).await;
}
