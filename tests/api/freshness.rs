//! Issue 10: reads may be served from memory, but never older than a write that was
//! acknowledged; and one service process per SQLite file.

use crate::helpers::*;
use crate::on_both_engines;
use serde_json::json;

on_both_engines!(
    a_read_after_an_acknowledged_write_never_sees_an_older_version,
    |app: TestApp| async move {
        let created = app
            .post("/v1/plans", "t1", &plan_body("Patient/fresh"))
            .await;
        assert_eq!(created.status, 201);
        let path = format!("/v1/plans/{}", created.body["id"].as_str().unwrap());
        // Warm whatever cache there is.
        assert_eq!(app.get(&path, "t1").await.body["version"], 1);
        let app = std::sync::Arc::new(app);
        // Writers race; each, once acknowledged, reads the plan back and asks for a
        // recommendation: both must reflect its own version or a newer one.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let app = app.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for j in 0..5 {
                        let mut body = plan_body("Patient/fresh");
                        body["notes"] = json!(format!("writer {i}, write {j}"));
                        let r = app.put(&path, "t1", &body, "*").await;
                        assert_eq!(r.status, 200, "{}", r.body);
                        let mine = r.body["version"].as_i64().unwrap();
                        let read = app.get(&path, "t1").await;
                        assert!(read.body["version"].as_i64().unwrap() >= mine);
                        let rec = app
                            .post(
                                "/v1/recommendations",
                                "t1",
                                &json!({"subject": "Patient/fresh", "appointment_type": "therapy"}),
                            )
                            .await;
                        assert!(rec.body["plan_version"].as_i64().unwrap() >= mine);
                        acked.push(mine);
                    }
                    acked
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        assert_eq!(
            all,
            (2..=41).collect::<Vec<i64>>(),
            "every write got its own version"
        );
        let last = app.get(&path, "t1").await;
        assert_eq!(last.body["version"], 41);
    }
);

#[actix_web::test]
async fn a_second_service_process_on_one_sqlite_file_is_refused() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_telemental"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "TELEMENTAL_DATABASE_URL",
            app.settings.database_url.expose(),
        )
        .env("TELEMENTAL_JWT_SECRET", SECRET)
        .env("TELEMENTAL_ENCRYPTION_KEYS", telemental::crypto::TEST_KEYS)
        .env("TELEMENTAL_BIND", "127.0.0.1:0")
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second process started");
    assert!(
        err.contains("another process is using the SQLite database"),
        "{err}"
    );
    // Tools that do not write plans or protocols may still open it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_telemental"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "TELEMENTAL_DATABASE_URL",
            app.settings.database_url.expose(),
        )
        .arg("migrate")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
