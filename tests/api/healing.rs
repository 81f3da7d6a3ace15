//! Faults heal in seconds, on the real binary: a database that refuses connections gives 503s
//! (never 500) and recovers by itself; deliveries a killed process had in flight are sent soon
//! after a restart; a hung receiver holds only its share of the delivery slots.

use crate::helpers::*;
use serde_json::{json, Value};
use sqlx::Connection;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_telemental");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary on a port of its own; killed (SIGKILL) when dropped. Its stderr goes to a file.
pub struct Binary {
    pub base: String,
    child: Child,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Binary {
    /// Starts the binary with `envs` on top of a secret and a free port, and waits for /readyz.
    pub async fn start(envs: &[(&str, String)]) -> Binary {
        let port = free_port();
        Self::start_on(port, envs).await
    }

    pub async fn start_on(port: u16, envs: &[(&str, String)]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TELEMENTAL_BIND", format!("127.0.0.1:{port}"))
            .env("TELEMENTAL_JWT_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let c = reqwest::Client::new();
        let ready = eventually(
            || async {
                c.get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
            Duration::from_secs(20),
        )
        .await;
        let b = Binary {
            base,
            child,
            log,
            _dir: dir,
        };
        assert!(ready, "the binary did not become ready: {}", b.stderr());
        b
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(token("t1", ALL_SCOPES))
            .json(body)
            .send()
            .await
            .expect("request sent");
        Reply::from(r).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token("t1", ALL_SCOPES))
            .send()
            .await
            .expect("request sent");
        Reply::from(r).await
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Asserts a 503 problem with `Retry-After`.
fn assert_unavailable(r: &Reply, what: &str) {
    assert_eq!(r.status.as_u16(), 503, "{what}: {}", r.body);
    r.assert_problem(503);
    assert!(r.header("retry-after").is_some(), "{what}: Retry-After");
}

#[actix_web::test]
async fn postgres_refusing_connections_gives_503_and_heals_when_it_accepts_again() {
    let Some(admin_url) = postgres_url() else {
        eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let url = fresh_postgres_db(&admin_url).await;
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    let app = Binary::start(&[("TELEMENTAL_DATABASE_URL", url.clone())]).await;
    let created = app.post("/v1/plans", &plan_body("Patient/refused")).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let path = format!("/v1/plans/{}", created.body["id"].as_str().unwrap());

    // The fault: the database refuses new connections and every open one is terminated.
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .execute(&mut admin)
        .await
        .unwrap();

    // Writes and reads (each read is audited, so it writes too), several times over: the first
    // use of a terminated connection and the attempts to open new ones are all 503.
    for _ in 0..3 {
        assert_unavailable(
            &app.post("/v1/plans", &plan_body("Patient/during")).await,
            "a write",
        );
        assert_unavailable(&app.get(&path).await, "a read");
        assert_unavailable(
            &app.post(
                "/v1/referrals",
                &json!({"subject": "Patient/during", "reason": "clinical_risk", "urgency": "urgent"}),
            )
            .await,
            "a referral",
        );
    }
    let ready = reqwest::get(format!("{}/readyz", app.base)).await.unwrap();
    assert_eq!(ready.status(), 503);

    sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    let healed = Instant::now();
    let ok = eventually(
        || async {
            app.post("/v1/plans", &plan_body("Patient/after"))
                .await
                .status
                == 201
        },
        Duration::from_secs(10),
    )
    .await;
    assert!(
        ok,
        "writes work again once the database accepts connections"
    );
    assert!(healed.elapsed() < Duration::from_secs(10));
    assert_eq!(app.get(&path).await.status, 200);
    let logs = app.stderr();
    assert!(
        !logs.contains("status=500") && !logs.contains("\"status\":500"),
        "no 500 during the fault: {logs}"
    );
}

#[actix_web::test]
async fn a_sqlite_file_locked_by_another_process_gives_503_then_heals() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("locked.db");
    let url = format!("sqlite://{}", file.display());
    let app = Binary::start(&[("TELEMENTAL_DATABASE_URL", url.clone())]).await;
    assert_eq!(
        app.post("/v1/plans", &plan_body("Patient/lock"))
            .await
            .status,
        201
    );

    // Another process (a backup tool, an operator's shell) holds the write lock.
    let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    assert_unavailable(
        &app.post("/v1/plans", &plan_body("Patient/locked-out"))
            .await,
        "a write while the file is locked",
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    drop(other);

    assert_eq!(
        app.post("/v1/plans", &plan_body("Patient/after-lock"))
            .await
            .status,
        201
    );
}
