use crate::helpers::*;
use crate::on_both_engines;
use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

const ES256_PEM: &[u8] = include_bytes!("../fixtures/es256.pem");
const ES256_PUB_PEM: &[u8] = include_bytes!("../fixtures/es256.pub.pem");
const ES256_JWK: &str = include_str!("../fixtures/es256.jwk.json");

fn es256(claims: &Value, kid: &str) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_pem(ES256_PEM).unwrap()).unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

async fn status_with(app: &TestApp, bearer: &str) -> Reply {
    app.call_with(Method::GET, "/v1/plans", bearer, None, &[])
        .await
}

on_both_engines!(bad_tokens_are_refused_with_401, |app: TestApp| async move {
    let good = claims("t1", ALL_SCOPES);
    assert_eq!(status_with(&app, &mint(&good)).await.status, 200);

    let mut cases: Vec<(&str, String)> = Vec::new();
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        mint(&c)
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        mint(&c)
    };
    cases.push(("expired", with("exp", json!(now() - 120))));
    cases.push(("not yet valid", with("nbf", json!(now() + 600))));
    cases.push(("wrong audience", with("aud", json!("someone-else"))));
    cases.push(("missing tenant", without("tenant")));
    cases.push(("empty tenant", with("tenant", json!(""))));
    cases.push(("missing scope", without("scope")));
    cases.push(("missing sub", without("sub")));
    cases.push(("missing exp", without("exp")));
    cases.push(("missing aud", without("aud")));
    cases.push((
        "bad signature",
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"another-secret-another-secret-0000").unwrap(),
        )
        .unwrap(),
    ));
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good)
    );
    cases.push(("alg none", unsigned));
    cases.push(("garbage", "not-a-jwt".into()));
    cases.push(("truncated", mint(&good)[..40].to_string()));
    // An asymmetric token when no JWKS is configured.
    cases.push(("ES256 without JWKS", es256(&good, "test-es256")));

    for (what, t) in cases {
        let r = status_with(&app, &t).await;
        r.assert_problem(401);
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(
            www.starts_with("Bearer "),
            "{what}: WWW-Authenticate {www:?}"
        );
    }
    // No header, another scheme.
    let r = Reply::from(app.client.get(app.url("/v1/plans")).send().await.unwrap()).await;
    r.assert_problem(401);
    assert!(r.header("www-authenticate").is_some());
    let r = Reply::from(
        app.client
            .get(app.url("/v1/plans"))
            .header("Authorization", "Basic dTpw")
            .send()
            .await
            .unwrap(),
    )
    .await;
    r.assert_problem(401);
});

on_both_engines!(
    missing_scopes_are_403_and_audited,
    |app: TestApp| async move {
        let read_only = token("t1", "plans:read");
        let r = app
            .call_with(
                Method::POST,
                "/v1/plans",
                &read_only,
                Some(&plan_body("Patient/1")),
                &[],
            )
            .await;
        r.assert_problem(403);
        assert!(r.body["detail"].as_str().unwrap().contains("plans:write"));
        let none = token("t1", "");
        status_with(&app, &none).await.assert_problem(403);
        // The audit trail needs its own scope.
        app.call_with(Method::GET, "/v1/audit-events", &read_only, None, &[])
            .await
            .assert_problem(403);
        let audit = app.get("/v1/audit-events?resource_type=plan", "t1").await;
        let denied: Vec<&Value> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "denied")
            .collect();
        assert_eq!(denied.len(), 2, "{}", audit.body);
        assert_eq!(denied[0]["action"], "create");
        // Nothing was created.
        assert_eq!(app.get("/v1/plans", "t1").await.body["items"], json!([]));
    }
);

#[actix_web::test]
async fn the_issuer_is_checked_when_configured() {
    let (mut settings, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    settings.jwt_issuer = Some("https://idp.example".into());
    let app = spawn_with(settings, dir, Engine::Sqlite).await;
    let mut c = claims("t1", ALL_SCOPES);
    status_with(&app, &mint(&c)).await.assert_problem(401); // no iss
    c["iss"] = json!("https://evil.example");
    status_with(&app, &mint(&c)).await.assert_problem(401);
    c["iss"] = json!("https://idp.example");
    assert_eq!(status_with(&app, &mint(&c)).await.status, 200);
}

/// A JWKS endpoint on a random local port whose key set the test can change.
async fn jwks_server(keys: Arc<Mutex<Value>>, hits: Arc<Mutex<u32>>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let keys = keys.clone();
        let hits = hits.clone();
        App::new().route(
            "/jwks.json",
            web::get().to(move || {
                let keys = keys.clone();
                let hits = hits.clone();
                async move {
                    *hits.lock().unwrap() += 1;
                    let body = keys.lock().unwrap().clone();
                    HttpResponse::Ok().json(body)
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    format!("http://127.0.0.1:{port}/jwks.json")
}

#[actix_web::test]
async fn asymmetric_tokens_verify_against_a_jwks_with_rotation() {
    let jwk: Value = serde_json::from_str(ES256_JWK).unwrap();
    let keys = Arc::new(Mutex::new(json!({"keys": []})));
    let hits = Arc::new(Mutex::new(0));
    let url = jwks_server(keys.clone(), hits.clone()).await;
    let (mut settings, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    settings.jwt_secret = None;
    settings.jwks_url = Some(url);
    settings.jwks_min_refetch = std::time::Duration::from_millis(200);
    let app = spawn_with(settings, dir, Engine::Sqlite).await;
    let c = claims("t1", ALL_SCOPES);

    // The key is not published yet: refused.
    status_with(&app, &es256(&c, "test-es256"))
        .await
        .assert_problem(401);
    // Published (a rotation): an unknown kid triggers a refetch.
    *keys.lock().unwrap() = json!({"keys": [jwk]});
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let r = status_with(&app, &es256(&c, "test-es256")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let fetched = *hits.lock().unwrap();
    // Known kid: served from the cache.
    for _ in 0..5 {
        assert_eq!(
            status_with(&app, &es256(&c, "test-es256")).await.status,
            200
        );
    }
    assert_eq!(
        *hits.lock().unwrap(),
        fetched,
        "cached keys are not refetched"
    );
    // Unknown kids are refetched at most once per interval, not once per request.
    for _ in 0..5 {
        status_with(&app, &es256(&c, "unknown-kid"))
            .await
            .assert_problem(401);
    }
    assert!(
        *hits.lock().unwrap() <= fetched + 1,
        "refetches are rate-limited"
    );

    // HS256 signed with the public key as the secret (key confusion) is refused.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(ES256_PUB_PEM).unwrap(),
    )
    .unwrap();
    status_with(&app, &confused).await.assert_problem(401);
    // A token claiming another asymmetric algorithm for the ES256 key is refused.
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("test-es256".into());
    let parts: Vec<String> = es256(&c, "test-es256")
        .split('.')
        .map(str::to_owned)
        .collect();
    let forged = format!(
        "{}.{}.{}",
        b64(&serde_json::to_value(&h).unwrap()),
        parts[1],
        parts[2]
    );
    status_with(&app, &forged).await.assert_problem(401);
    // Wrong audience still applies to JWKS tokens.
    let mut wrong = c.clone();
    wrong["aud"] = json!("other");
    status_with(&app, &es256(&wrong, "test-es256"))
        .await
        .assert_problem(401);
}

/// A key server that answers its first fetch at once and holds every later one until released,
/// telling the test when a held fetch has arrived.
async fn stalling_jwks_server(
    jwk: Value,
    arrived: tokio::sync::mpsc::UnboundedSender<()>,
    release: Arc<tokio::sync::Notify>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = serde_json::to_string(&json!({"keys": [jwk]})).unwrap();
    actix_web::rt::spawn(async move {
        let mut served = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            served += 1;
            let (body, arrived, release) = (body.clone(), arrived.clone(), release.clone());
            actix_web::rt::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                if served > 1 {
                    let _ = arrived.send(());
                    release.notified().await;
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/jwks.json")
}

#[actix_web::test]
async fn an_unknown_kid_fetch_does_not_hold_up_valid_tokens() {
    let jwk: Value = serde_json::from_str(ES256_JWK).unwrap();
    let (tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let url = stalling_jwks_server(jwk, tx, release.clone()).await;
    let (mut settings, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    settings.jwt_secret = None;
    settings.jwks_url = Some(url);
    settings.jwks_min_refetch = std::time::Duration::ZERO;
    // Longer than the test: the held fetch stays blocked until the test releases it.
    settings.jwks_timeout = std::time::Duration::from_secs(120);
    let app = spawn_with(settings, dir, Engine::Sqlite).await;
    let c = claims("t1", ALL_SCOPES);
    let good = es256(&c, "test-es256");
    assert_eq!(status_with(&app, &good).await.status, 200);

    // A token with an unknown kid starts a refetch, which the key server holds.
    let bad = es256(&c, "unknown-kid");
    let (base, client) = (app.base.clone(), app.client.clone());
    let pending = actix_web::rt::spawn(async move {
        client
            .get(format!("{base}/v1/plans"))
            .bearer_auth(bad)
            .send()
            .await
            .unwrap()
            .status()
    });
    arrived
        .recv()
        .await
        .expect("the refetch reached the key server");

    // While that fetch is blocked, valid tokens are answered (the guard only stops a hang).
    for _ in 0..5 {
        let r = tokio::time::timeout(std::time::Duration::from_secs(20), status_with(&app, &good))
            .await
            .expect("a valid token waited for the blocked JWKS fetch");
        assert_eq!(r.status, 200);
    }
    assert!(!pending.is_finished(), "the fetch is still blocked");
    release.notify_waiters();
    assert_eq!(pending.await.unwrap(), 401);
}

#[actix_web::test]
async fn a_key_server_that_never_answers_is_given_up_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts connections and never answers.
    actix_web::rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let (mut settings, dir) = fresh_settings(Engine::Sqlite).await.unwrap();
    settings.jwt_secret = None;
    settings.jwks_url = Some(format!("http://127.0.0.1:{port}/jwks.json"));
    settings.jwks_timeout = std::time::Duration::from_millis(300);
    let app = spawn_with(settings, dir, Engine::Sqlite).await;
    let c = claims("t1", ALL_SCOPES);
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        status_with(&app, &es256(&c, "test-es256")),
    )
    .await
    .expect("the JWKS fetch is bounded");
    r.assert_problem(401);
}
