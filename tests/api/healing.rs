//! Faults heal in seconds, on the real binary: a database that refuses connections gives 503s
//! (never 500) and recovers by itself; deliveries a killed process had in flight are sent soon
//! after a restart; a hung receiver holds only its share of the delivery slots.

use crate::helpers::*;
use crate::webhooks::Receiver;
use serde_json::{json, Value};
use sqlx::Connection;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

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
            .env("TELEMENTAL_ENCRYPTION_KEYS", telemental::crypto::TEST_KEYS)
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

/// What happened on each connection: its number, "request" or "closed", and when.
type Timeline = Arc<Mutex<Vec<(usize, &'static str, Instant)>>>;

/// A receiver that accepts connections, reads what comes, and never answers.
pub struct HangingReceiver {
    pub port: u16,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Connections on which a request has arrived.
    pub requests: Arc<AtomicUsize>,
    pub timeline: Timeline,
    task: tokio::task::JoinHandle<()>,
}

impl HangingReceiver {
    pub async fn start() -> HangingReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let timeline: Timeline = Arc::default();
        let (a, r, t) = (accepted.clone(), requests.clone(), timeline.clone());
        let task = tokio::spawn(async move {
            let mut open = tokio::task::JoinSet::new();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    continue;
                };
                let conn = a.fetch_add(1, Ordering::SeqCst);
                let (r, t) = (r.clone(), t.clone());
                // Dropping the set (when the receiver stops) closes every connection.
                open.spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut counted = false;
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !counted {
                            counted = true;
                            r.fetch_add(1, Ordering::SeqCst);
                            t.lock().unwrap().push((conn, "request", Instant::now()));
                        }
                    }
                    t.lock().unwrap().push((conn, "closed", Instant::now()));
                });
            }
        });
        HangingReceiver {
            port,
            accepted,
            requests,
            timeline,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Closes the listener and every connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The engines to run a binary test on: SQLite, and PostgreSQL when configured.
async fn engines() -> Vec<(&'static str, String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![(
        "sqlite",
        format!("sqlite://{}", dir.path().join("d.db").display()),
        Some(dir),
    )];
    if let Some(base) = postgres_url() {
        v.push(("postgres", fresh_postgres_db(&base).await, None));
    }
    v
}

fn delivery_env(db: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TELEMENTAL_DATABASE_URL", db.to_string()),
        ("TELEMENTAL_WEBHOOK_ALLOW_PRIVATE", "true".into()),
        // Far longer than the test: an attempt to the hung receiver never times out here, so
        // only a lease taken over can get the event out.
        ("TELEMENTAL_WEBHOOK_TIMEOUT", "120s".into()),
        ("TELEMENTAL_WEBHOOK_RETRY_BASE", "100ms".into()),
        ("TELEMENTAL_WORKER_INTERVAL", "100ms".into()),
    ]
}

#[actix_web::test]
async fn deliveries_in_flight_at_a_kill_9_are_sent_within_15_s_of_the_restart() {
    for (engine, db, _dir) in engines().await {
        let hung = HangingReceiver::start().await;
        let port = hung.port;
        let env = delivery_env(&db);
        let mut app = Binary::start(&env).await;
        let hook = app
            .post(
                "/v1/webhooks",
                &json!({"url": hung.url(), "events": ["referral.created"]}),
            )
            .await;
        assert_eq!(hook.status, 201, "{engine}: {}", hook.body);
        let created = app
            .post(
                "/v1/referrals",
                &json!({"subject": "Patient/k9", "reason": "clinical_risk", "urgency": "emergency"}),
            )
            .await;
        assert_eq!(created.status, 201);
        // The POST is in flight: the receiver has the request and will never answer.
        let in_flight = eventually(
            || async { hung.requests.load(Ordering::SeqCst) == 1 },
            Duration::from_secs(10),
        )
        .await;
        assert!(in_flight, "{engine}: the delivery was not attempted");
        app.kill9();
        hung.stop().await;

        let healthy =
            Receiver::start_on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(), 0).await;
        let restarted = Instant::now();
        let _app = Binary::start(&env).await;
        let arrived = eventually(
            || async { !healthy.got.lock().unwrap().is_empty() },
            Duration::from_secs(15),
        )
        .await;
        let took = restarted.elapsed();
        assert!(
            arrived,
            "{engine}: not delivered within 15 s of the restart"
        );
        let events = healthy.events();
        assert_eq!(events.len(), 1, "{engine}");
        assert_eq!(events[0]["data"]["id"], created.body["id"]);
        eprintln!("{engine}: delivered {took:?} after the restart");
    }
}

#[actix_web::test]
async fn a_hung_receiver_holds_only_its_share_of_the_delivery_slots() {
    for (engine, db, _dir) in engines().await {
        let hung = HangingReceiver::start().await;
        let healthy = Receiver::start(0).await;
        let mut env = delivery_env(&db);
        env.push(("TELEMENTAL_WEBHOOK_IN_FLIGHT", "4".into()));
        env.push(("TELEMENTAL_WEBHOOK_IN_FLIGHT_PER_WEBHOOK", "2".into()));
        let app = Binary::start(&env).await;
        for url in [hung.url(), healthy.url.clone()] {
            let r = app
                .post(
                    "/v1/webhooks",
                    &json!({"url": url, "events": ["referral.created"]}),
                )
                .await;
            assert_eq!(r.status, 201);
        }
        // Each event goes to both: the hung receiver has a backlog far above the slot count.
        for i in 0..12 {
            let r = app
                .post(
                    "/v1/referrals",
                    &json!({"subject": format!("Patient/h{i}"), "reason": "not_preferred", "urgency": "routine"}),
                )
                .await;
            assert_eq!(r.status, 201);
        }
        let all = eventually(
            || async { healthy.got.lock().unwrap().len() >= 12 },
            Duration::from_secs(20),
        )
        .await;
        assert!(
            all,
            "{engine}: the healthy receiver got {} of 12 while the other hung",
            healthy.got.lock().unwrap().len()
        );
        assert_eq!(
            hung.accepted.load(Ordering::SeqCst),
            2,
            "{engine}: the hung receiver holds exactly its cap of slots"
        );
        hung.stop().await;
    }
}

#[actix_web::test]
async fn an_instance_that_cannot_renew_its_lease_stops_sending_before_another_takes_over() {
    let Some(base) = postgres_url() else {
        eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let url = fresh_postgres_db(&base).await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    let proxy = crate::outage::Proxy::start(format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    ))
    .await;
    let mut via_proxy = parsed.clone();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let settings = |db: &str| {
        let mut s = telemental::config::Settings::for_tests(db, SECRET);
        s.webhook_allow_private = true;
        s.webhook_timeout = Duration::from_secs(120);
        s.worker_interval = Duration::from_millis(100);
        s
    };
    let hung = HangingReceiver::start().await;
    // Instance A reaches the database through the proxy; it claims the delivery and hangs on it.
    let a = spawn_with(settings(via_proxy.as_str()), None, Engine::Postgres).await;
    crate::webhooks::register(&a, &hung.url(), json!(["referral.created"])).await;
    let r = a
        .post(
            "/v1/referrals",
            "t1",
            &json!({"subject": "Patient/lease", "reason": "clinical_risk", "urgency": "urgent"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(
        eventually(
            || async { hung.requests.load(Ordering::SeqCst) == 1 },
            Duration::from_secs(10)
        )
        .await
    );
    // A loses the database (but lives on); B, healthy, starts.
    proxy.cut();
    let _b = spawn_with(settings(&url), None, Engine::Postgres).await;
    let taken_over = eventually(
        || async { hung.requests.load(Ordering::SeqCst) == 2 },
        Duration::from_secs(20),
    )
    .await;
    assert!(
        taken_over,
        "B took the delivery over once A's lease ran out"
    );
    let timeline = hung.timeline.lock().unwrap().clone();
    let at = |conn: usize, what: &str| {
        timeline
            .iter()
            .find(|(c, w, _)| *c == conn && *w == what)
            .map(|(_, _, t)| *t)
    };
    let a_closed = at(0, "closed").expect("A abandoned its POST");
    let b_sent = at(1, "request").expect("B sent");
    assert!(
        a_closed < b_sent,
        "A's POST was closed before B sent the delivery again: {timeline:?}"
    );
    hung.stop().await;
}
