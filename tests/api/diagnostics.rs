//! Errors keep their causes: a 500 is logged once with its cause and the request id; start-up
//! errors say what failed underneath; logs to a file carry no colour codes.

use crate::healing::Binary;
use crate::helpers::*;
use sqlx::Connection;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_telemental");

#[actix_web::test]
async fn a_500_is_logged_once_with_its_cause_and_request_id_and_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("d.db").display());
    let app = Binary::start(&[
        ("TELEMENTAL_DATABASE_URL", url.clone()),
        ("TELEMENTAL_LOG_FORMAT", "text".into()),
    ])
    .await;
    let created = app.post("/v1/plans", &plan_body("Patient/broken")).await;
    assert_eq!(created.status, 201);
    let id: uuid::Uuid = created.body["id"].as_str().unwrap().parse().unwrap();
    // A stored row the code cannot read: the service's fault, not the client's. (A version
    // row: the current plan may be served from the service's memory, which no other writer
    // may change behind its back.)
    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE plan_versions SET body = '\"corrupted\"' WHERE record_id = $1")
        .bind(id)
        .execute(&mut c)
        .await
        .unwrap();
    drop(c);

    let r = reqwest::Client::new()
        .get(format!("{}/v1/plans/{id}/versions", app.base))
        .bearer_auth(token("t1", ALL_SCOPES))
        .header("X-Request-Id", "req-broken-plan-1")
        .send()
        .await
        .unwrap();
    let r = Reply::from(r).await;
    r.assert_problem(500);
    let body = r.body.to_string();
    assert!(
        !body.contains("corrupted") && !body.contains("invalid type"),
        "{body}"
    );

    // The log line may follow the response by a moment.
    let logged = eventually(
        || async { app.stderr().contains("internal error") },
        std::time::Duration::from_secs(5),
    )
    .await;
    let logs = app.stderr();
    assert!(logged, "{logs}");
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("internal error"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once: {logs}");
    let line = lines[0];
    assert!(
        line.contains("req-broken-plan-1"),
        "with the request id: {line}"
    );
    assert!(
        line.contains("does not read") && line.contains("invalid type"),
        "with its cause: {line}"
    );
    assert!(
        line.contains("/v1/plans/{id}"),
        "with the route template: {line}"
    );
    assert!(
        !line.contains("corrupted"),
        "without the stored value: {line}"
    );
    assert!(
        !logs.contains('\u{1b}'),
        "no escape codes in a log file: {logs}"
    );
}

#[test]
fn start_up_errors_say_what_failed_underneath() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (envs, says) in [
        (
            vec![
                ("TELEMENTAL_BIND", addr.to_string()),
                (
                    "TELEMENTAL_DATABASE_URL",
                    format!("sqlite://{}", dir.path().join("s.db").display()),
                ),
            ],
            vec![format!("cannot listen on {addr}"), "in use".to_string()],
        ),
        (
            vec![(
                "TELEMENTAL_DATABASE_URL",
                format!("sqlite://{}/no/such/dir/s.db", dir.path().display()),
            )],
            vec![
                "cannot open the SQLite database".to_string(),
                "unable to open database file".to_string(),
            ],
        ),
    ] {
        let out = Command::new(BIN)
            .env_clear()
            .env("TELEMENTAL_JWT_SECRET", SECRET)
            .env("TELEMENTAL_ENCRYPTION_KEYS", telemental::crypto::TEST_KEYS)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        for s in &says {
            assert!(err.contains(s.as_str()), "{s:?} in {err}");
        }
        assert!(!err.contains('\u{1b}'), "no escape codes: {err}");
    }
    drop(held);
}
