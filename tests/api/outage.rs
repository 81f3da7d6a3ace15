//! The database goes away and comes back: 503s (never a crash), /readyz 503, then recovery.

use crate::helpers::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy to PostgreSQL that the test can cut and restore.
pub struct Proxy {
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns2.lock().unwrap().push(task);
            }
        });
        Proxy { port, up, conns }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[actix_web::test]
async fn a_lost_database_gives_503_and_the_service_recovers() {
    let Some(base) = postgres_url() else {
        eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let db_url = fresh_postgres_db(&base).await;
    let parsed = reqwest::Url::parse(&db_url).unwrap();
    let upstream = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(upstream).await;
    let mut via_proxy = parsed.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.port)).unwrap();
    let settings = telemental::config::Settings::for_tests(via_proxy.as_str(), SECRET);
    let app = spawn_with(settings, None, Engine::Postgres).await;

    let created = app
        .post("/v1/plans", "t1", &plan_body("Patient/outage"))
        .await;
    assert_eq!(created.status, 201);
    let path = format!("/v1/plans/{}", created.body["id"].as_str().unwrap());

    proxy.cut();
    let r = app.get(&path, "t1").await;
    r.assert_problem(503);
    assert!(r.header("retry-after").is_some());
    app.post("/v1/plans", "t1", &plan_body("Patient/during"))
        .await
        .assert_problem(503);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    // The process is still up.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    proxy.restore();
    let recovered = eventually(
        || async { app.get(&path, "t1").await.status == 200 },
        Duration::from_secs(20),
    )
    .await;
    assert!(recovered, "reads work again once the database is back");
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.post("/v1/plans", "t1", &plan_body("Patient/after"))
            .await
            .status,
        201
    );
    // The refused write left nothing behind.
    assert_eq!(
        app.get("/v1/plans?subject=Patient/during", "t1").await.body["items"],
        serde_json::json!([])
    );
}
