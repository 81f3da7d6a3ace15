//! `spawn_app`: the real application on a random port and a fresh database per test.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use telemental::config::Settings;
use telemental::Application;

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const ALL_SCOPES: &str =
    "plans:read plans:write protocols:read protocols:write sessions:write \
    referrals:read referrals:write recommendations:read webhooks:manage audit:read \
    reports:read";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub handle: actix_web::dev::ServerHandle,
    pub engine: Engine,
    /// Keeps the SQLite file alive for the test's duration.
    pub _dir: Option<tempfile::TempDir>,
    /// The group-commit writer's counts.
    pub writes: std::sync::Arc<telemental::store::writer::WriteStats>,
}

/// `TELEMENTAL_TEST_POSTGRES_URL`, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn postgres_url() -> Option<String> {
    std::env::var("TELEMENTAL_TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh PostgreSQL database; its URL.
pub async fn fresh_postgres_db(base: &str) -> String {
    use sqlx::Connection;
    let name = format!("tm_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (head, _) = base.rsplit_once('/').expect("URL has a database");
    let tail = base.rsplit_once('/').map(|(_, t)| t).unwrap_or("");
    let query = tail
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{head}/{name}{query}")
}

/// Settings for a fresh database of `engine`; `None` when PostgreSQL is not configured.
pub async fn fresh_settings(engine: Engine) -> Option<(Settings, Option<tempfile::TempDir>)> {
    match engine {
        Engine::Sqlite => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = format!("sqlite://{}", dir.path().join("test.db").display());
            Some((Settings::for_tests(&url, SECRET), Some(dir)))
        }
        Engine::Postgres => {
            let base = postgres_url()?;
            let url = fresh_postgres_db(&base).await;
            Some((Settings::for_tests(&url, SECRET), None))
        }
    }
}

pub async fn spawn_app(engine: Engine) -> Option<TestApp> {
    let (settings, dir) = fresh_settings(engine).await?;
    Some(spawn_with(settings, dir, engine).await)
}

pub async fn spawn_with(
    settings: Settings,
    dir: Option<tempfile::TempDir>,
    engine: Engine,
) -> TestApp {
    let app = Application::build(&settings, None, false)
        .await
        .expect("app builds");
    let port = app.port();
    let handle = app.handle();
    let writes = app
        .store
        .writer()
        .expect("the app starts its writer")
        .stats();
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        settings,
        handle,
        engine,
        _dir: dir,
        writes,
    }
}

/// Runs the body once on SQLite and once on PostgreSQL (when configured).
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[actix_web::test]
            async fn sqlite() {
                let app = $crate::helpers::spawn_app($crate::helpers::Engine::Sqlite)
                    .await
                    .expect("sqlite app");
                ($body)(app).await;
            }
            #[actix_web::test]
            async fn postgres() {
                let Some(app) = $crate::helpers::spawn_app($crate::helpers::Engine::Postgres).await
                else {
                    eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: PostgreSQL case skipped");
                    return;
                };
                ($body)(app).await;
            }
        }
    };
}

pub fn mint(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

pub fn claims(tenant: &str, scope: &str) -> Value {
    json!({"sub": "test-client", "tenant": tenant, "scope": scope, "aud": "telemental",
           "exp": now() + 600, "iat": now()})
}

pub fn token(tenant: &str, scope: &str) -> String {
    mint(&claims(tenant, scope))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(r: Response) -> Reply {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json error of this status.
    pub fn assert_problem(&self, status: u16) -> &Reply {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "problem content type for {status}"
        );
        assert_eq!(self.body["status"], status);
        assert!(self.body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:telemental:problem:"));
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        self
    }

    /// The `field` of every entry of `errors`.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl TestApp {
    /// The Prometheus text of `GET /metrics` (no token needed).
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with a bearer token for `tenant` with every scope.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        tenant: &str,
        body: Option<&Value>,
    ) -> Reply {
        self.call_with(method, path, &token(tenant, ALL_SCOPES), body, &[])
            .await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(bearer);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        Reply::from(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, tenant: &str) -> Reply {
        self.call(Method::GET, path, tenant, None).await
    }

    pub async fn post(&self, path: &str, tenant: &str, body: &Value) -> Reply {
        self.call(Method::POST, path, tenant, Some(body)).await
    }

    pub async fn put(&self, path: &str, tenant: &str, body: &Value, if_match: &str) -> Reply {
        self.call_with(
            Method::PUT,
            path,
            &token(tenant, ALL_SCOPES),
            Some(body),
            &[("If-Match", if_match)],
        )
        .await
    }

    /// A POST for tenant `t1` with every scope and an `Idempotency-Key`.
    pub async fn post_with_key(&self, path: &str, body: &Value, key: &str) -> Reply {
        self.call_with(
            Method::POST,
            path,
            &token("t1", ALL_SCOPES),
            Some(body),
            &[("Idempotency-Key", key)],
        )
        .await
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// A valid plan for `subject`, as in the API outline.
pub fn plan_body(subject: &str) -> Value {
    json!({
        "subject": subject,
        "initial_conversation": {"held_on": "2026-11-20", "held_by": "Practitioner/9"},
        "preferences": {
            "default": ["video", "telephone", "in_person"],
            "by_appointment_type": {"medication_review": ["telephone", "in_person"]},
            "uncomfortable_with": ["text"]
        },
        "resources": {
            "devices": ["smartphone", "computer"],
            "connectivity": "reliable",
            "digital_skills": "basic",
            "familiar_platforms": ["WhatsApp"],
            "private_space": "yes"
        },
        "barriers": [{"kind": "hearing", "note": "uses captions"}],
        "personalisation": {
            "participants": [{"role": "family", "name": "sister", "joins_remotely": true}],
            "contact_pattern": "shorter_more_frequent",
            "reluctant_to_attend_in_person": false,
            "cannot_attend_in_person": false
        },
        "backup_contact": {"method": "telephone", "number": "+447700900123"},
        "review_interval_days": 90,
        "last_reviewed_on": "2026-11-20",
        "notes": "free text"
    })
}

/// Polls until `f` holds or the time is up.
pub async fn eventually<F, Fut>(mut f: F, within: Duration) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
