//! `/dashboard`: served without a token, locked down by its headers, and, in headless
//! Chromium, drawn from the report API with a token given in the URL fragment. The browser
//! test writes `dashboard-screenshot.png` beside the test binaries' target directory so that a
//! person can look at it.

use crate::helpers::*;
use chrono::{Duration, NaiveDate, Utc};
use serde_json::{json, Value};
use sqlx::types::Json;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use telemental::store::{Db, Store, Ts};
use uuid::Uuid;

#[actix_web::test]
async fn the_page_and_its_assets_need_no_token_and_allow_only_this_origin() {
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = |n: &str| r.headers().get(n).unwrap().to_str().unwrap().to_string();
        assert!(h("content-type").starts_with(kind), "{path}");
        let csp = h("content-security-policy");
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(h("referrer-policy"), "no-referrer");
    }
    let page = app.client.get(app.url("/dashboard")).send().await.unwrap();
    let html = page.text().await.unwrap();
    // No inline script and nothing from another origin.
    assert!(!html.contains("<script>") && !html.contains("http://") && !html.contains("https://"));
    assert!(html.contains("<script src=\"/dashboard/app.js\""));
}

/// A small deterministic generator for seeding.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

macro_rules! exec {
    ($store:expr, $sql:expr, $($bind:expr),* $(,)?) => {
        match &$store.db {
            Db::Sqlite(p) => { sqlx::query($sql)$(.bind($bind))*.execute(p).await.unwrap(); }
            Db::Postgres(p) => { sqlx::query($sql)$(.bind($bind))*.execute(p).await.unwrap(); }
        }
    };
}

/// A year of a mid-sized service, written straight into the database.
async fn seed(store: &Store, tenant: &str) {
    let mut rng = Lcg(7);
    let now = Utc::now();
    let ts = |days_ago: i64, hours: i64| {
        Ts::from(now - Duration::days(days_ago) + Duration::hours(hours))
    };
    let resources = [
        json!({"devices": ["smartphone", "computer"], "connectivity": "reliable", "digital_skills": "confident"}),
        json!({"devices": ["smartphone"], "connectivity": "limited", "digital_skills": "basic"}),
        json!({"devices": ["landline"], "connectivity": "none", "digital_skills": "none"}),
        json!({"devices": ["mobile"], "connectivity": "limited", "digital_skills": "basic"}),
    ];
    for i in 0..520 {
        let days_ago = rng.below(365) as i64;
        let kind = match rng.below(10) {
            0..=5 => 0,
            6 | 7 => 1,
            8 => 2,
            _ => 3,
        };
        let body = json!({"format": 1, "subject": format!("Patient/{i}"),
            "preferences": {"default": ["video", "telephone", "in_person"]},
            "resources": resources[kind], "review_interval_days": 90});
        let id = Uuid::now_v7();
        let at = ts(days_ago, 0);
        let review_due: NaiveDate =
            (now - Duration::days(days_ago) + Duration::days(90)).date_naive();
        exec!(store, "INSERT INTO plans (id, tenant, subject, version, body, review_due, created_at, updated_at) \
                      VALUES ($1, $2, $3, 1, $4, $5, $6, $6)",
              id, tenant, format!("Patient/{i}"), Json(&body), review_due, at);
        exec!(store, "INSERT INTO plan_versions (record_id, tenant, version, body, review_due, recorded_at, recorded_by) \
                      VALUES ($1, $2, 1, $3, $4, $5, 'seed')",
              id, tenant, Json(&body), review_due, at);
    }
    for d in 0..365i64 {
        let day = (now - Duration::days(d)).date_naive();
        for (modality, level, first, n) in [
            ("video", "none", "yes", 6 + rng.below(8)),
            ("telephone", "at_risk", "no", 2 + rng.below(6)),
            ("in_person", "excluded", "no", 1 + rng.below(4)),
            ("in_person", "no_plan", "no_plan", rng.below(3)),
            ("text", "at_risk", "yes", rng.below(2)),
        ] {
            if n > 0 {
                exec!(store, "INSERT INTO recommendation_counts (tenant, day, modality, exclusion_level, first_preference, shard, n) \
                              VALUES ($1, $2, $3, $4, $5, 0, $6)",
                      tenant, day, modality, level, first, n as i64);
            }
        }
        for _ in 0..(2 + rng.below(4)) {
            let outcome = [
                "proceed",
                "proceed",
                "proceed_with_actions",
                "do_not_proceed",
            ][rng.below(4) as usize];
            exec!(store, "INSERT INTO session_checks (id, tenant, subject, body, outcome, result, created_at, created_by) \
                          VALUES ($1, $2, 'Patient/1', $3, $4, $3, $5, 'seed')",
                  Uuid::now_v7(), tenant, Json(json!({})), outcome, ts(d, 9));
        }
        if rng.below(3) == 0 {
            continue;
        }
        for _ in 0..(1 + rng.below(2)) {
            let reason = [
                "not_accessible",
                "not_appropriate",
                "not_preferred",
                "technology_failure",
            ][rng.below(4) as usize];
            let urgency = ["routine", "urgent", "emergency"][rng.below(3) as usize];
            let created = ts(d, 8);
            let due = Ts::from(
                created.0
                    + Duration::hours(match urgency {
                        "routine" => 168,
                        "urgent" => 24,
                        _ => 4,
                    }),
            );
            let hours = 1 + rng.below(60) as i64;
            let scheduled = Ts::from(created.0 + Duration::hours(hours));
            let open = scheduled.0 > now;
            let status = if open { "requested" } else { "scheduled" };
            let request = json!({"subject": "Patient/1", "reason": reason, "urgency": urgency});
            let id = Uuid::now_v7();
            exec!(store, "INSERT INTO referrals (id, tenant, subject, version, body, status, due_by, created_at, updated_at) \
                          VALUES ($1, $2, 'Patient/1', $3, $4, $5, $6, $7, $7)",
                  id, tenant, if open { 1i64 } else { 2 }, Json(json!({"format": 1, "request": request, "status": status})),
                  status, due, created);
            exec!(store, "INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by) \
                          VALUES ($1, $2, 1, $3, $4, 'seed')",
                  id, tenant, Json(json!({"format": 1, "request": request, "status": "requested"})), created);
            if !open {
                exec!(store, "INSERT INTO referral_versions (record_id, tenant, version, body, recorded_at, recorded_by) \
                              VALUES ($1, $2, 2, $3, $4, 'seed')",
                      id, tenant, Json(json!({"format": 1, "request": request, "status": "scheduled"})), scheduled);
            }
        }
    }
}

/// Debian's `chromium` (or `TELEMENTAL_CHROMIUM`).
fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TELEMENTAL_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
            .find(|p| p.is_file())
    })
}

/// Runs headless Chromium on `url` with `args`, killed after 90 s; its stdout.
async fn run_chromium(bin: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=20000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if child.try_wait().expect("chromium waits").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        // The app under test runs on this thread's runtime: yield to it while waiting.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    reader.join().unwrap()
}

#[actix_web::test]
async fn headless_chromium_draws_every_chart_from_the_api_with_a_token_in_the_fragment() {
    let Some(bin) = chromium() else {
        // CI installs Chromium (.ci/run) and sets CI, so there this fails rather than skips.
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is required in CI"
        );
        eprintln!("chromium not found: the browser test is skipped (apt-get install chromium)");
        return;
    };
    let app = spawn_app(Engine::Sqlite).await.unwrap();
    let store = Store::connect(&app.settings.database_url, 2).await.unwrap();
    seed(&store, "clinic").await;
    let token = token("clinic", "reports:read");
    // Check the API first, so that a failure says which side broke.
    let r = app
        .call_with(
            reqwest::Method::GET,
            "/v1/reports/equity",
            &token,
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let profile = tempfile::tempdir().unwrap();
    let url = app.url(&format!("/dashboard#token={token}"));

    let dom = run_chromium(&bin, profile.path(), &url, &["--dump-dom"]).await;
    assert!(
        dom.contains("data-state=\"ready\""),
        "the page did not finish:\n{dom}"
    );
    let figures = [
        "plans-level",
        "plans-factor",
        "recs-modality",
        "recs-level",
        "recs-first",
        "checks-outcome",
        "referrals-reason",
        "referrals-urgency",
        "referrals-share",
        "referrals-hours",
        "overdue",
    ];
    for id in figures {
        let start = dom
            .find(&format!("<figure id=\"{id}\""))
            .unwrap_or_else(|| panic!("no figure {id}"));
        let tag = &dom[start..start + dom[start..].find('>').unwrap()];
        let marks: usize = tag
            .split("data-marks=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no marks on {id}: {tag}"));
        assert!(marks > 0, "{id} drew nothing");
    }
    // A table behind every chart, with the whole range as its last row.
    assert_eq!(dom.matches("<table>").count(), figures.len());
    assert_eq!(dom.matches("Whole range").count(), figures.len());
    // The token is not left in the page or its address.
    assert!(!dom.contains(&token), "the token is in the page");
    let months: Value = r.body["periods"].clone();
    assert_eq!(months.as_array().unwrap().len(), 12);

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    run_chromium(
        &bin,
        profile.path(),
        &url,
        &[&arg, "--window-size=1280,2400"],
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 50_000,
        "the screenshot looks empty ({} bytes)",
        png.len()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}
