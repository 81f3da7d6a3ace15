//! Tests of the real `telemental` binary as a clinic would run it.

use crate::helpers::*;
use serde_json::Value;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_telemental");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Outside dev mode the service needs encryption keys: the test key unless a test sets
    // its own.
    let set = |name: &str| envs.iter().any(|(k, _)| k.starts_with(name));
    if set("TELEMENTAL_JWT_SECRET") && !set("TELEMENTAL_ENCRYPTION_KEYS") {
        cmd.env("TELEMENTAL_ENCRYPTION_KEYS", telemental::crypto::TEST_KEYS);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("binary starts")
}

async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    let ok = eventually(
        || async {
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
        Duration::from_secs(20),
    )
    .await;
    assert!(ok, "the binary did not become ready");
}

fn output(mut child: Child) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    (out, err)
}

#[actix_web::test]
async fn a_201_survives_kill_9_and_logs_hold_no_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = vec![
        ("TELEMENTAL_BIND", format!("127.0.0.1:{port}")),
        (
            "TELEMENTAL_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("t.db").display()),
        ),
        ("TELEMENTAL_JWT_SECRET", SECRET.to_string()),
        ("TELEMENTAL_LOG", "debug".to_string()),
        ("TELEMENTAL_LOG_FORMAT", "json".to_string()),
    ];
    let child = start(&env);
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let t = token("t1", ALL_SCOPES);
    let mut body = plan_body("Patient/pii-subject-777");
    body["backup_contact"]["number"] = Value::from("+447700900999");
    body["notes"] = Value::from("confidential-note-text");
    let created: Value = client
        .post(format!("{base}/v1/plans"))
        .bearer_auth(&t)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    client
        .get(format!("{base}/v1/plans?subject=Patient/pii-subject-777"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    let bad = client.post(format!("{base}/v1/plans")).bearer_auth(&t).header("content-type", "application/json")
        .body(r#"{"subject": "Patient/pii-subject-777", "backup_contact": {"number": "+447700900999x"}}"#).send().await.unwrap();
    assert_eq!(bad.status(), 422);

    // SIGKILL: no chance to flush anything.
    let mut child = child;
    child.kill().unwrap();
    let (_, log1) = output(child);

    let child = start(&env);
    wait_ready(&base).await;
    let again: Value = client
        .get(format!("{base}/v1/plans/{id}"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, created, "the acknowledged plan survived kill -9");

    // SIGTERM: graceful shutdown, exit 0.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let mut child = child;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "graceful exit: {status:?}");
    let (_, log2) = output(child);

    let logs = format!("{log1}\n{log2}");
    assert!(
        logs.contains("\"route\":\"/v1/plans/{id}\""),
        "request lines are logged: {logs}"
    );
    for secret in [
        "pii-subject-777",
        "+447700900999",
        "447700900999",
        "confidential-note-text",
        // The encryption key (its base64 part).
        telemental::crypto::TEST_KEYS.split_once(':').unwrap().1,
        &t,
        SECRET,
    ] {
        assert!(!logs.contains(secret), "{secret:?} leaked into the logs");
    }
}

#[actix_web::test]
async fn dev_mode_prints_a_working_token_and_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("dev.db").display());
    // Refuses a public bind.
    let child = start(&[
        ("TELEMENTAL_BIND", "0.0.0.0:0".into()),
        ("TELEMENTAL_DATABASE_URL", db.clone()),
    ]);
    let (_, err) = output(child);
    assert!(err.contains("dev mode"), "{err}");

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start(&[
        ("TELEMENTAL_BIND", format!("127.0.0.1:{port}")),
        ("TELEMENTAL_DATABASE_URL", db),
    ]);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut printed = String::new();
    let token = loop {
        let line = lines.next().expect("the token is printed").unwrap();
        printed.push_str(&line);
        if line.starts_with("eyJ") {
            break line.trim().to_string();
        }
    };
    assert!(printed.contains("tenant \"dev\""), "{printed}");
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/v1/plans"))
        .bearer_auth(&token)
        .json(&plan_body("Patient/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .get(format!("{base}/v1/audit-events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the dev token has every scope");
    let r = client
        .get(format!("{base}/v1/reports/equity"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the dev token reads reports too");
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn bad_settings_stop_the_binary_with_a_clear_message() {
    for (k, v, says) in [
        ("TELEMENTAL_BIND", "not-an-address", "TELEMENTAL_BIND"),
        ("TELEMENTAL_JWT_SECRET", "short", "32 bytes"),
        (
            "TELEMENTAL_DATABASE_URL",
            "mysql://x",
            "sqlite:// or postgres://",
        ),
        ("TELEMENTAL_JWKS_URL", "ftp://keys", "http"),
        ("TELEMENTAL_SHUTDOWN_TIMEOUT", "soon", "duration"),
        ("TELEMENTAL_WEBHOOK_TIMEOUT", "10", "needs a unit"),
        ("TELEMENTAL_WEBHOOK_IN_FLIGHT", "none", "invalid digit"),
        ("TELEMENTAL_LOG_FORMAT", "xml", "text, json"),
        ("TELEMENTAL_LOG", "a=b=c", "level"),
        ("TELEMENTAL_OUTBOX_RETENTION", "forever", "duration"),
    ] {
        let child = start(&[
            (k, v.to_string()),
            (
                "TELEMENTAL_JWT_SECRET",
                if k == "TELEMENTAL_JWT_SECRET" {
                    v.to_string()
                } else {
                    SECRET.to_string()
                },
            ),
        ]);
        let mut child = child;
        let status = child.wait().unwrap();
        let (_, err) = output(child);
        assert!(!status.success(), "{k}={v} was accepted");
        assert!(err.contains(says), "{k}={v}: {err}");
        assert!(err.contains(k), "the message names the variable: {err}");
    }
}

#[actix_web::test]
async fn the_token_and_migrate_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    let out = Command::new(BIN)
        .args(["migrate"])
        .env("TELEMENTAL_DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "token",
            "--tenant",
            "clinic-a",
            "--scope",
            "plans:read",
            "--ttl",
            "60",
        ])
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (settings, dir2) = fresh_settings(Engine::Sqlite).await.unwrap();
    let app = spawn_with(settings, dir2, Engine::Sqlite).await;
    let r = app
        .client
        .get(app.url("/v1/plans"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(app.url("/v1/plans"))
        .bearer_auth(&token)
        .json(&plan_body("Patient/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "only the minted scope");
    let out = Command::new(BIN)
        .args(["token", "--tenant", "a", "--scope", "plans:rule"])
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(BIN)
        .args(["token", "--tenant", "a", "--scope", "reports:read"])
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "reports:read is a known scope");
    let out = Command::new(BIN)
        .args(["token", "--tenant", "a", "--scope", "system/CarePlan.rs"])
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(out.status.success(), "a SMART scope the FHIR views honour");
    let out = Command::new(BIN)
        .args(["token", "--tenant", "a", "--scope", "patient/CarePlan.rs"])
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a SMART scope that grants nothing here"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("patient/CarePlan.rs"));
    let out = Command::new(BIN)
        .args(["token", "--tenant", "a", "--scope", "plans:read"])
        .env_remove("TELEMENTAL_JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

/// The allocator option compiled into the binary (`_rjem_malloc_conf`, src/main.rs) is the one
/// jemalloc applies: if that symbol's name changed with a jemalloc update, the option would be
/// dropped without a word and freed pages kept ten times longer. Asked through the environment,
/// jemalloc prints its options to stderr at exit.
#[cfg(not(target_env = "msvc"))]
#[test]
fn the_binary_allocates_with_jemalloc_and_its_compiled_option() {
    let out = Command::new(BIN)
        .arg("--help")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("opt.dirty_decay_ms: 1000 "),
        "jemalloc's options at exit: {err}"
    );
}

/// A log reader that falls behind (a pipe to a collector that stops reading, a log file the
/// kernel throttles) must not stall the service: the HTTP workers hand their log lines to a
/// thread of their own. Here stderr is a pipe nobody reads; it fills after a few hundred
/// request lines, and with the workers writing to it themselves the next request never got an
/// answer. Every request must be answered, and the lines kept are there once the pipe is read.
#[actix_web::test]
async fn a_log_reader_that_stops_reading_does_not_stall_requests() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start(&[
        ("TELEMENTAL_BIND", format!("127.0.0.1:{port}")),
        (
            "TELEMENTAL_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("t.db").display()),
        ),
        ("TELEMENTAL_JWT_SECRET", SECRET.into()),
        ("TELEMENTAL_LOG", "info".into()),
    ]);
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    // About 200 bytes of log a request: 3 000 requests are ten times a pipe's 64 KiB.
    let answered = actix_web::rt::time::timeout(Duration::from_secs(120), async {
        let mut n = 0;
        for _ in 0..3000 {
            let r = client.get(format!("{base}/healthz")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            n += 1;
        }
        n
    })
    .await;
    assert_eq!(answered, Ok(3000), "requests stalled behind the log pipe");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("telemental_log_lines_dropped_total"),
        "{metrics}"
    );
    // Read what the pipe holds: request lines, in order, whole.
    let mut stderr = child.stderr.take().unwrap();
    let mut head = vec![0u8; 16 * 1024];
    stderr.read_exact(&mut head).unwrap();
    let text = String::from_utf8_lossy(&head);
    assert!(text.contains("route=/healthz status=200"), "{text}");
    child.kill().unwrap();
    let _ = child.wait();
}
