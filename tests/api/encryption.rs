//! Encryption at rest: what the service stores holds no phone number, address or note in
//! clear (the database's own bytes are searched), a ciphertext tampered with or moved is
//! refused, a missing key is a 503, and `telemental rekey` rotates keys and encrypts rows
//! written before encryption, with the service running.

use crate::helpers::*;
use crate::on_both_engines;
use crate::webhooks::{register, spawn_webhook_app, Receiver};
use serde_json::{json, Value};
use telemental::config::Settings;
use telemental::crypto::Keyring;
use telemental::outbox::guard::verify_signature;
use telemental::store::{Db, Store};

const BIN: &str = env!("CARGO_BIN_EXE_telemental");
const OLD: &str = "old:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW: &str = "new:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// What the tests write that must never be found in the database in clear.
const MARKERS: &[&str] = &[
    "7700911111",
    "7700922222",
    "7700933333",
    "7700944444",
    "Secret Road",
    "Hidden Lane",
    "marker-plan-note",
    "marker-barrier",
    "marker-sister",
    "marker-carer",
    "marker-trainee",
    "marker-cafe",
    "marker-disconnect",
    "marker-referral-detail",
    "marker-protocol-note",
];

fn plan(subject: &str, note: &str) -> Value {
    let mut b = plan_body(subject);
    b["backup_contact"]["number"] = json!("+447700911111");
    b["notes"] = json!(note);
    b["barriers"] = json!([{"kind": "hearing", "note": "marker-barrier"}]);
    b["personalisation"]["participants"] =
        json!([{"role": "family", "name": "marker-sister", "joins_remotely": true}]);
    b
}

fn protocol(subject: &str) -> Value {
    json!({
        "subject": subject,
        "risk_level": "high",
        "call_back_numbers": ["+447700922222"],
        "usual_locations": [{"label": "home", "address": "3 Secret Road, Leeds"}],
        "emergency_contacts": [{"name": "marker-carer", "relationship": "mother", "phone": "+447700933333"}],
        "crisis_response": {"team": "Leeds crisis team", "phone": "+441130000000",
            "in_person_plan": "Crisis team attends within 4 hours", "hours": "24/7"},
        "agreed_with_service_user_on": "2026-11-20",
        "review_interval_days": 30,
        "notes": "marker-protocol-note"
    })
}

fn check(subject: &str) -> Value {
    json!({"subject": subject, "modality": "video", "appointment_type": "therapy",
        "service_user_location": {"description": "marker-cafe", "address": "4 Hidden Lane, Leeds"},
        "call_back_number": "+447700944444", "clinician_in_private_space": true,
        "others_present": ["marker-trainee"], "headphones": true,
        "service_user_private": true, "sensitive_topics": false})
}

fn referral(subject: &str) -> Value {
    json!({"subject": subject, "reason": "not_accessible", "urgency": "urgent",
        "appointment_type": "therapy", "detail": "marker-referral-detail",
        "requested_by": "Practitioner/9"})
}

/// Everything the database holds, as text: the SQLite file and its WAL as bytes, or every
/// PostgreSQL table's rows as JSON.
async fn stored_text(app: &TestApp) -> String {
    match app.engine {
        Engine::Sqlite => {
            let url = app.settings.database_url.expose();
            let file = url.trim_start_matches("sqlite://").to_string();
            let mut out = String::new();
            for f in [file.clone(), format!("{file}-wal")] {
                if let Ok(bytes) = std::fs::read(&f) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
            assert!(out.contains("Patient/enc"), "the files were read");
            out
        }
        Engine::Postgres => {
            let store = Store::connect(&app.settings.database_url, 1).await.unwrap();
            let Db::Postgres(p) = &store.db else {
                unreachable!()
            };
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(p)
            .await
            .unwrap();
            let mut out = String::new();
            for (t,) in tables {
                let (rows,): (Option<String>,) = sqlx::query_as(&format!(
                    "SELECT string_agg(row_to_json(t)::text, E'\\n') FROM \"{t}\" t"
                ))
                .fetch_one(p)
                .await
                .unwrap();
                out.push_str(&rows.unwrap_or_default());
            }
            store.close().await;
            assert!(out.contains("Patient/enc"), "the tables were read");
            out
        }
    }
}

fn assert_nothing_in_clear(stored: &str, also: &[&str]) {
    for m in MARKERS.iter().chain(also) {
        assert!(!stored.contains(m), "{m:?} is stored in clear");
    }
}

async fn both_webhook_engines<F, Fut>(f: F)
where
    F: Fn(TestApp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f(spawn_webhook_app(Engine::Sqlite).await.unwrap()).await;
    if let Some(app) = spawn_webhook_app(Engine::Postgres).await {
        f(app).await;
    }
}

#[actix_web::test]
async fn personal_data_reads_back_but_the_database_holds_none_of_it_in_clear() {
    both_webhook_engines(|app: TestApp| async move {
        let rx = Receiver::start(0).await;
        let hook = register(&app, &rx.url, json!(["referral.created"])).await;
        assert_eq!(hook.status, 201, "{}", hook.body);
        let secret = hook.body["secret"].as_str().unwrap().to_string();

        let p = app
            .post(
                "/v1/plans",
                "t1",
                &plan("Patient/enc", "marker-plan-note 1"),
            )
            .await;
        assert_eq!(p.status, 201, "{}", p.body);
        let plan_path = p.header("location").unwrap().to_string();
        let u = app
            .put(
                &plan_path,
                "t1",
                &plan("Patient/enc", "marker-plan-note 2"),
                "\"1\"",
            )
            .await;
        assert_eq!(u.status, 200, "{}", u.body);
        let pr = app
            .post("/v1/safety-protocols", "t1", &protocol("Patient/enc"))
            .await;
        assert_eq!(pr.status, 201, "{}", pr.body);
        let c = app
            .post("/v1/session-checks", "t1", &check("Patient/enc"))
            .await;
        assert_eq!(c.status, 201, "{}", c.body);
        let check_path = format!("/v1/session-checks/{}", c.body["id"].as_str().unwrap());
        let d = app
            .post(
                &format!("{check_path}/disconnections"),
                "t1",
                &json!({"note": "marker-disconnect"}),
            )
            .await;
        assert_eq!(d.status, 201, "{}", d.body);
        let r = app
            .post_with_key("/v1/referrals", &referral("Patient/enc"), "enc-1")
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let replay = app
            .post_with_key("/v1/referrals", &referral("Patient/enc"), "enc-1")
            .await;
        assert_eq!(replay.status, 201, "{}", replay.body);
        assert_eq!(replay.body, r.body, "the kept response replays decrypted");

        // Everything reads back as written.
        let g = app.get(&plan_path, "t1").await;
        assert_eq!(g.body["backup_contact"]["number"], "+447700911111");
        assert_eq!(g.body["notes"], "marker-plan-note 2");
        assert_eq!(
            g.body["personalisation"]["participants"][0]["name"],
            "marker-sister"
        );
        let v = app.get(&format!("{plan_path}/versions"), "t1").await;
        assert_eq!(v.status, 200, "{}", v.body);
        assert_eq!(
            v.body["items"][1]["notes"], "marker-plan-note 1",
            "{}",
            v.body
        );
        let g = app.get(pr.header("location").unwrap(), "t1").await;
        assert_eq!(
            g.body["usual_locations"][0]["address"],
            "3 Secret Road, Leeds"
        );
        assert_eq!(g.body["emergency_contacts"][0]["phone"], "+447700933333");
        let g = app.get(&check_path, "t1").await;
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(
            g.body["service_user_location"]["address"],
            "4 Hidden Lane, Leeds"
        );
        assert_eq!(g.body["call_back_number"], "+447700944444");
        let g = app.get(r.header("location").unwrap(), "t1").await;
        assert_eq!(g.body["detail"], "marker-referral-detail");
        let rec = app
            .post(
                "/v1/recommendations",
                "t1",
                &json!({"subject": "Patient/enc", "appointment_type": "therapy"}),
            )
            .await;
        assert_eq!(rec.status, 200, "{}", rec.body);

        // The webhook gets the payload in clear, signed with the (stored sealed) secret.
        let events = rx.wait_for(1).await;
        assert_eq!(events[0]["data"]["detail"], "marker-referral-detail");
        let got = rx.got.lock().unwrap()[0].clone();
        let now = chrono::Utc::now().timestamp();
        assert!(verify_signature(
            &secret,
            &got.signature,
            &got.body,
            now,
            300
        ));

        let stored = stored_text(&app).await;
        assert_nothing_in_clear(&stored, &[&secret]);
        assert!(
            stored.contains("enc:v1:test:"),
            "values are sealed with the test key"
        );
    })
    .await;
}

/// Runs one statement against the app's database.
async fn exec(app: &TestApp, sql: &str) {
    let store = Store::connect(&app.settings.database_url, 1).await.unwrap();
    match &store.db {
        Db::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        Db::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
    store.close().await;
}

on_both_engines!(
    a_ciphertext_tampered_with_or_moved_is_a_500_and_a_missing_key_a_503,
    |app: TestApp| async move {
        let a = app
            .post("/v1/referrals", "t1", &referral("Patient/enc"))
            .await;
        let b = app
            .post("/v1/referrals", "t1", &referral("Patient/enc-2"))
            .await;
        let p = app
            .post("/v1/plans", "t1", &plan("Patient/enc", "marker-plan-note"))
            .await;
        assert_eq!(p.status, 201, "{}", p.body);
        let (a_id, b_id, p_id) = (
            a.body["id"].as_str().unwrap().to_string(),
            b.body["id"].as_str().unwrap().to_string(),
            p.body["id"].as_str().unwrap().to_string(),
        );
        let hex = |id: &str| id.replace('-', "");
        let (id_a, id_b, id_p) = match app.engine {
            Engine::Sqlite => (
                format!("X'{}'", hex(&a_id)),
                format!("X'{}'", hex(&b_id)),
                format!("X'{}'", hex(&p_id)),
            ),
            Engine::Postgres => (
                format!("'{a_id}'::uuid"),
                format!("'{b_id}'::uuid"),
                format!("'{p_id}'::uuid"),
            ),
        };
        // Referral A's body moved onto referral B: same tenant, same table, another row.
        exec(
            &app,
            &format!("UPDATE referrals SET body = (SELECT body FROM referrals WHERE id = {id_a}) WHERE id = {id_b}"),
        )
        .await;
        let r = app.get(&format!("/v1/referrals/{b_id}"), "t1").await;
        r.assert_problem(500);
        assert!(!r.body.to_string().contains("marker"), "{}", r.body);
        // A plan version's ciphertext altered: one character of the note changed.
        let body_text = match app.engine {
            Engine::Sqlite => "body",
            Engine::Postgres => "body::text",
        };
        let cast = match app.engine {
            Engine::Sqlite => "",
            Engine::Postgres => "::jsonb",
        };
        exec(
            &app,
            &format!(
                "UPDATE plan_versions SET body = replace({body_text}, 'enc:v1:test:', 'enc:v1:test:A'){cast} WHERE record_id = {id_p}"
            ),
        )
        .await;
        let r = app.get(&format!("/v1/plans/{p_id}/versions"), "t1").await;
        r.assert_problem(500);
        // The referral A still reads.
        assert_eq!(
            app.get(&format!("/v1/referrals/{a_id}"), "t1").await.status,
            200
        );
        assert_eq!(app.get("/readyz", "t1").await.status, 200);

        // Restarted with another key only: what the test key sealed is a 503, and not ready.
        let mut settings = app.settings.clone();
        app.stop().await;
        settings.encryption_keys = Some(Keyring::parse(NEW).unwrap());
        let app = spawn_with(settings, app._dir, app.engine).await;
        let r = app.get(&format!("/v1/referrals/{a_id}"), "t1").await;
        r.assert_problem(503);
        assert!(r.header("retry-after").is_some());
        assert!(!r.body.to_string().contains("marker"), "{}", r.body);
        let ready = app.get("/readyz", "t1").await;
        ready.assert_problem(503);
    }
);

/// `telemental rekey` against the app's database with `keys`; its standard output.
fn rekey(settings: &Settings, keys: &str) -> String {
    let out = std::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TELEMENTAL_DATABASE_URL", settings.database_url.expose())
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .env("TELEMENTAL_ENCRYPTION_KEYS", keys)
        .env("TELEMENTAL_LOG", "warn")
        .args(["rekey", "--batch", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("rows read"),
        "progress is reported: {stderr}"
    );
    assert!(!stderr.contains("AAECAw") && !stdout.contains("AAECAw"));
    stdout
}

/// The key ids `rekey` reports in use.
fn keys_in_use(stdout: &str) -> Value {
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    last["keys_in_use"].clone()
}

on_both_engines!(
    keys_rotate_with_writes_running_and_the_old_key_can_then_be_removed,
    |app: TestApp| async move {
        // Written under the old key (and one plan in clear, as before encryption).
        let mut settings = app.settings.clone();
        app.stop().await;
        settings.encryption_keys = Some(Keyring::parse(OLD).unwrap());
        let app = spawn_with(settings.clone(), app._dir, app.engine).await;
        let mut plans = Vec::new();
        for i in 0..5 {
            let p = app
                .post(
                    "/v1/plans",
                    "t1",
                    &plan(&format!("Patient/enc{i}"), "marker-plan-note"),
                )
                .await;
            assert_eq!(p.status, 201, "{}", p.body);
            plans.push(p.header("location").unwrap().to_string());
        }
        let pr = app
            .post("/v1/safety-protocols", "t1", &protocol("Patient/enc"))
            .await;
        let c = app
            .post("/v1/session-checks", "t1", &check("Patient/enc"))
            .await;
        let r = app
            .post_with_key("/v1/referrals", &referral("Patient/enc"), "rot-1")
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let clear = include_str!("../fixtures/stored/plan-v1-full.json");
        let clear_id = uuid::Uuid::now_v7();
        let id_sql = match app.engine {
            Engine::Sqlite => format!("X'{}'", clear_id.simple()),
            Engine::Postgres => format!("'{clear_id}'::uuid"),
        };
        let now = match app.engine {
            Engine::Sqlite => "'2026-11-20T00:00:00.000000Z'",
            Engine::Postgres => "now()",
        };
        let body = clear.replace('\'', "''");
        exec(&app, &format!("INSERT INTO plans (id, tenant, subject, version, body, review_due, created_at, updated_at) VALUES ({id_sql}, 't1', 'Patient/clear', 1, '{body}', '2027-01-19', {now}, {now})")).await;
        exec(&app, &format!("INSERT INTO plan_versions (record_id, tenant, version, body, review_due, recorded_at, recorded_by) VALUES ({id_sql}, 't1', 1, '{body}', '2027-01-19', {now}, 'old-build')")).await;
        assert_eq!(
            app.get(&format!("/v1/plans/{clear_id}"), "t1").await.body["backup_contact"]["number"],
            "+447700900123",
            "a clear row still reads"
        );

        // The new key first: new writes use it at once while rekey runs beside the writes.
        let both = format!("{NEW},{OLD}");
        let mut settings = settings.clone();
        app.stop().await;
        settings.encryption_keys = Some(Keyring::parse(&both).unwrap());
        let app = spawn_with(settings.clone(), app._dir, app.engine).await;
        let writer = {
            let (base, client) = (app.base.clone(), app.client.clone());
            let plans = plans.clone();
            actix_web::rt::spawn(async move {
                let t = token("t1", ALL_SCOPES);
                for round in 0..4 {
                    for (i, path) in plans.iter().enumerate() {
                        let r = client
                            .put(format!("{base}{path}"))
                            .bearer_auth(&t)
                            .header("If-Match", format!("\"{}\"", round + 1))
                            .json(&plan(
                                &format!("Patient/enc{i}"),
                                &format!("marker-plan-note {round}"),
                            ))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 200);
                    }
                }
            })
        };
        let s2 = settings.clone();
        let both2 = both.clone();
        let first = actix_web::rt::task::spawn_blocking(move || rekey(&s2, &both2))
            .await
            .unwrap();
        writer.await.unwrap();
        assert!(first.contains("\"table\":\"plan_versions\""), "{first}");
        let report = rekey(&settings, &both);
        assert_eq!(
            keys_in_use(&report)["new"].as_u64().map(|n| n > 0),
            Some(true),
            "{report}"
        );
        assert!(keys_in_use(&report).get("old").is_none(), "{report}");
        assert!(keys_in_use(&report).get("clear").is_none(), "{report}");
        let stored = stored_text(&app).await;
        if app.engine == Engine::Postgres {
            // Live rows only (SQLite's free pages may still hold old ciphertext until reused;
            // it needs the old key to read). The old key's canary is not data.
            let data = stored.lines().filter(|l| !l.contains("\"key_id\""));
            assert!(data.clone().all(|l| !l.contains("enc:v1:old:")), "{stored}");
        }
        assert_nothing_in_clear(&stored, &["+447700900123", "free text"]);

        // Restarted with only the new key: everything reads.
        app.stop().await;
        settings.encryption_keys = Some(Keyring::parse(NEW).unwrap());
        let app = spawn_with(settings, app._dir, app.engine).await;
        assert_eq!(app.get("/readyz", "t1").await.status, 200);
        for (i, path) in plans.iter().enumerate() {
            let g = app.get(path, "t1").await;
            assert_eq!(g.body["notes"], "marker-plan-note 3", "{i}: {}", g.body);
            let v = app.get(&format!("{path}/versions"), "t1").await;
            assert_eq!(v.status, 200, "{}", v.body);
            assert_eq!(v.body["items"].as_array().unwrap().len(), 5);
        }
        let g = app.get(&format!("/v1/plans/{clear_id}"), "t1").await;
        assert_eq!(g.body["backup_contact"]["number"], "+447700900123");
        assert_eq!(
            app.get(pr.header("location").unwrap(), "t1").await.status,
            200
        );
        let cid = c.body["id"].as_str().unwrap();
        assert_eq!(
            app.get(&format!("/v1/session-checks/{cid}"), "t1")
                .await
                .status,
            200
        );
        let replay = app
            .post_with_key("/v1/referrals", &referral("Patient/enc"), "rot-1")
            .await;
        assert_eq!(replay.body, r.body);
    }
);

#[test]
fn without_keys_outside_dev_mode_the_binary_stops_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    for (keys, says) in [
        (None, "TELEMENTAL_ENCRYPTION_KEYS"),
        (Some("k1:c2hvcnQ="), "TELEMENTAL_ENCRYPTION_KEYS"),
        (Some("no-colon"), "TELEMENTAL_ENCRYPTION_KEYS"),
    ] {
        let mut cmd = std::process::Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TELEMENTAL_DATABASE_URL", &db)
            .env("TELEMENTAL_JWT_SECRET", SECRET)
            .env("TELEMENTAL_BIND", "127.0.0.1:0");
        if let Some(k) = keys {
            cmd.env("TELEMENTAL_ENCRYPTION_KEYS", k);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(!err.contains("c2hvcnQ="), "the key is not echoed: {err}");
    }
}

/// Starts the binary in dev mode on `db`; the child and the dev token it prints.
fn start_dev(db: &str, port: u16) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TELEMENTAL_DATABASE_URL", db)
        .env("TELEMENTAL_BIND", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let token = loop {
        let line = lines.next().expect("the dev token is printed").unwrap();
        if line.starts_with("eyJ") {
            break line.trim().to_string();
        }
    };
    (child, token)
}

#[actix_web::test]
async fn dev_mode_keeps_its_key_beside_the_database_and_a_restart_reads_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dev.db").display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = || async {
        eventually(
            || async {
                client
                    .get(format!("{base}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
            std::time::Duration::from_secs(20),
        )
        .await
    };
    let (mut child, token) = start_dev(&db, port);
    assert!(ready().await);
    let created: Value = client
        .post(format!("{base}/v1/plans"))
        .bearer_auth(&token)
        .json(&plan("Patient/dev", "marker-plan-note"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    child.kill().unwrap();
    let _ = child.wait();

    let key_file = dir.path().join("dev.db.keys");
    let text = std::fs::read_to_string(&key_file).expect("a key file beside the database");
    assert!(Keyring::parse(&text).is_ok());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let (mut child, token) = start_dev(&db, port);
    assert!(ready().await);
    let again: Value = client
        .get(format!("{base}/v1/plans/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["notes"], "marker-plan-note", "{again}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), text, "reused");
    child.kill().unwrap();
    let _ = child.wait();
}
