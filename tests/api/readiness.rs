//! Issue 12 part 9: readiness tells the truth. A database that answers but cannot be written
//! stops the binary at start with a clear message, or makes `/readyz` and every request 503,
//! never 500.

use crate::helpers::*;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_telemental");

#[actix_web::test]
async fn a_read_only_sqlite_file_is_a_clear_start_up_error() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    assert_eq!(
        app.post("/v1/plans", "t1", &plan_body("Patient/ro"))
            .await
            .status,
        201
    );
    app.stop().await;
    let url = format!("{}?mode=ro", app.settings.database_url);
    let out = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TELEMENTAL_DATABASE_URL", &url)
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .env("TELEMENTAL_ENCRYPTION_KEYS", telemental::crypto::TEST_KEYS)
        .env("TELEMENTAL_BIND", "127.0.0.1:0")
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a read-only database");
    assert!(err.contains("cannot be written"), "{err}");
}

async fn psql(base: &str, statements: &[String]) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(base).await.unwrap();
    for s in statements {
        sqlx::query(s).execute(&mut c).await.unwrap();
    }
}

#[actix_web::test]
async fn a_read_only_postgres_makes_readyz_and_requests_503_never_500() {
    let Some(base) = postgres_url() else {
        return;
    };
    let app = spawn_app(Engine::Postgres).await.unwrap();
    let created = app.post("/v1/plans", "t1", &plan_body("Patient/ro")).await;
    assert_eq!(created.status, 201);
    let path = format!("/v1/plans/{}", created.body["id"].as_str().unwrap());
    let db = app
        .settings
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let kick = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    );
    psql(
        &base,
        &[
            format!("ALTER DATABASE {db} SET default_transaction_read_only = on"),
            kick.clone(),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let readyz = app.url("/readyz");
    assert!(
        eventually(
            || async {
                client
                    .get(&readyz)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 503)
            },
            Duration::from_secs(10)
        )
        .await,
        "/readyz stays 200 on a read-only database"
    );
    // Writes, and reads (which write their audit row), are 503 with Retry-After.
    for _ in 0..3 {
        let w = app.post("/v1/plans", "t1", &plan_body("Patient/ro2")).await;
        w.assert_problem(503);
        assert!(w.header("retry-after").is_some());
        app.get(&path, "t1").await.assert_problem(503);
    }
    psql(
        &base,
        &[
            format!("ALTER DATABASE {db} SET default_transaction_read_only = off"),
            kick,
        ],
    )
    .await;
    assert!(
        eventually(
            || async {
                client
                    .get(&readyz)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
            Duration::from_secs(10)
        )
        .await,
        "ready again once the database can be written"
    );
    assert!(
        eventually(
            || async { app.get(&path, "t1").await.status == 200 },
            Duration::from_secs(10)
        )
        .await
    );
}
