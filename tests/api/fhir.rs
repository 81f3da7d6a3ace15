//! FHIR R4 read views over HTTP. Every FHIR resource a test receives is also written to the
//! samples directory, where `.ci/run` validates it with a FHIR R4 model library.

use crate::helpers::*;
use crate::on_both_engines;
use crate::safety::protocol_body;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where FHIR samples go: `TELEMENTAL_FHIR_SAMPLES`, else `target/fhir-samples`.
pub fn samples_dir() -> std::path::PathBuf {
    std::env::var_os("TELEMENTAL_FHIR_SAMPLES")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fhir-samples")
        })
}

static SAMPLE: AtomicUsize = AtomicUsize::new(0);

/// Writes one FHIR resource (any `resourceType`) for the validator.
pub fn save_sample(label: &str, resource: &Value) {
    assert!(
        resource["resourceType"].is_string(),
        "not a resource: {resource}"
    );
    let dir = samples_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let n = SAMPLE.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{label}-{}-{}-{n}.json",
        resource["resourceType"].as_str().unwrap(),
        std::process::id()
    );
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(resource).unwrap()).unwrap();
}

/// A FHIR GET with a token; the body is checked to be FHIR JSON and saved as a sample.
pub async fn fhir_get(app: &TestApp, path: &str, bearer: &str, headers: &[(&str, &str)]) -> Reply {
    let r = app
        .call_with(Method::GET, path, bearer, None, headers)
        .await;
    if r.status != 304 {
        assert_eq!(
            r.header("content-type"),
            Some("application/fhir+json; charset=utf-8"),
            "{path}: {}",
            r.body
        );
        save_sample("fhir", &r.body);
    }
    r
}

fn all(tenant: &str) -> String {
    token(tenant, ALL_SCOPES)
}

/// Asserts an OperationOutcome of this status and issue code.
fn assert_outcome(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.body);
    assert_eq!(r.body["resourceType"], "OperationOutcome", "{}", r.body);
    assert_eq!(r.body["issue"][0]["code"], code, "{}", r.body);
    assert!(r.body["issue"][0]["diagnostics"].is_string());
}

fn referral_body(subject: &str, urgency: &str) -> Value {
    json!({"subject": subject, "reason": "not_accessible", "urgency": urgency,
        "appointment_type": "therapy", "detail": "no private space at home",
        "requested_by": "Practitioner/9"})
}

/// The path and query of an absolute link.
fn path_of(link: &str) -> String {
    let u = url::Url::parse(link).unwrap();
    format!("{}?{}", u.path(), u.query().unwrap_or(""))
}

on_both_engines!(
    plans_protocols_and_referrals_read_as_fhir_resources,
    |app: TestApp| async move {
        let plan = app.post("/v1/plans", "t1", &plan_body("Patient/123")).await;
        let protocol = app
            .post(
                "/v1/safety-protocols",
                "t1",
                &protocol_body("Patient/123", "high"),
            )
            .await;
        let referral = app
            .post(
                "/v1/referrals",
                "t1",
                &referral_body("Patient/123", "urgent"),
            )
            .await;
        let (plan_id, protocol_id, referral_id) = (
            plan.body["id"].as_str().unwrap().to_string(),
            protocol.body["id"].as_str().unwrap().to_string(),
            referral.body["id"].as_str().unwrap().to_string(),
        );

        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{plan_id}"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("etag"), Some("W/\"1\""));
        assert!(r
            .header("last-modified")
            .is_some_and(|v| v.ends_with(" GMT")));
        assert_eq!(r.body["resourceType"], "CarePlan");
        assert_eq!(r.body["id"], plan_id.as_str());
        assert_eq!(r.body["meta"]["versionId"], "1");
        assert_eq!(r.body["subject"]["reference"], "Patient/123");
        assert_eq!(
            r.body["category"][1]["coding"][0]["code"],
            "telemental-preference-plan"
        );
        assert_eq!(r.body["status"], "active");

        // A new version is a new versionId and ETag; the old ETag no longer matches.
        let mut changed = plan_body("Patient/123");
        changed["review_interval_days"] = json!(30);
        assert_eq!(
            app.put(&format!("/v1/plans/{plan_id}"), "t1", &changed, "\"1\"")
                .await
                .status,
            200
        );
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{plan_id}"),
            &all("t1"),
            &[("If-None-Match", "W/\"1\"")],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("etag"), Some("W/\"2\""));
        assert_eq!(r.body["meta"]["versionId"], "2");
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{plan_id}"),
            &all("t1"),
            &[("If-None-Match", "W/\"2\"")],
        )
        .await;
        assert_eq!(r.status, 304);

        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{protocol_id}"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body["category"][1]["coding"][0]["code"],
            "telemental-safety-protocol"
        );
        assert_eq!(
            r.body["activity"][0]["detail"]["performer"][0]["display"],
            "Leeds crisis team"
        );

        let r = fhir_get(
            &app,
            &format!("/fhir/R4/ServiceRequest/{referral_id}"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("etag"), Some("W/\"1\""));
        assert_eq!(r.body["resourceType"], "ServiceRequest");
        assert_eq!(r.body["status"], "active");
        assert_eq!(r.body["priority"], "urgent");
        assert_eq!(r.body["code"]["coding"][0]["code"], "3457005");
        assert_eq!(r.body["orderDetail"][0]["coding"][0]["code"], "FACE");
        assert_eq!(
            r.body["occurrencePeriod"]["end"].as_str().unwrap().len(),
            24
        );

        // Scheduling moves the occurrence to the appointment; cancelling revokes.
        let s = app
            .post(
                &format!("/v1/referrals/{referral_id}/status"),
                "t1",
                &json!({"status": "scheduled", "appointment_at": "2026-12-01T09:30:00Z"}),
            )
            .await;
        assert_eq!(s.status, 200, "{}", s.body);
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/ServiceRequest/{referral_id}"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.body["occurrenceDateTime"], "2026-12-01T09:30:00.000Z");
        assert_eq!(r.body["meta"]["versionId"], "2");
        app.post(
            &format!("/v1/referrals/{referral_id}/status"),
            "t1",
            &json!({"status": "cancelled"}),
        )
        .await;
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/ServiceRequest/{referral_id}"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.body["status"], "revoked");

        // Reads are audited like REST reads.
        let audit = app.get("/v1/audit-events?subject=Patient/123", "t1").await;
        let reads: Vec<(String, String)> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "read")
            .map(|e| {
                (
                    e["resource_type"].as_str().unwrap().into(),
                    e["resource_id"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert!(
            reads.contains(&("plan".into(), plan_id.clone())),
            "{reads:?}"
        );
        assert!(reads.contains(&("safety_protocol".into(), protocol_id.clone())));
        assert!(reads.contains(&("referral".into(), referral_id.clone())));
    }
);

on_both_engines!(
    searches_are_paged_searchset_bundles_with_totals,
    |app: TestApp| async move {
        app.post("/v1/plans", "t1", &plan_body("Patient/1")).await;
        app.post(
            "/v1/safety-protocols",
            "t1",
            &protocol_body("Patient/1", "low"),
        )
        .await;
        for u in ["routine", "urgent", "emergency"] {
            assert_eq!(
                app.post("/v1/referrals", "t1", &referral_body("Patient/1", u))
                    .await
                    .status,
                201
            );
        }
        app.post(
            "/v1/referrals",
            "t1",
            &referral_body("Patient/2", "routine"),
        )
        .await;
        app.post("/v1/plans", "t2", &plan_body("Patient/1")).await; // another tenant

        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1&_count=1",
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["type"], "searchset");
        assert_eq!(r.body["total"], 2);
        assert_eq!(r.body["entry"].as_array().unwrap().len(), 1);
        let first = &r.body["entry"][0];
        assert_eq!(first["search"]["mode"], "match");
        assert_eq!(
            first["resource"]["category"][1]["coding"][0]["code"],
            "telemental-preference-plan"
        );
        let full_url = first["fullUrl"].as_str().unwrap();
        assert!(
            full_url.starts_with(&app.base)
                && full_url.ends_with(first["resource"]["id"].as_str().unwrap())
        );
        let next = r.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .expect("a next link")["url"]
            .as_str()
            .unwrap()
            .to_string();
        let r2 = fhir_get(&app, &path_of(&next), &all("t1"), &[]).await;
        assert_eq!(r2.body["total"], 2);
        assert_eq!(
            r2.body["entry"][0]["resource"]["category"][1]["coding"][0]["code"],
            "telemental-safety-protocol"
        );
        assert!(r2.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["relation"] != "next"));

        // The same with patient=, a bare subject and _format=json.
        for q in ["patient=1", "subject=1&_format=json", "subject=Patient%2F1"] {
            let r = fhir_get(&app, &format!("/fhir/R4/CarePlan?{q}"), &all("t1"), &[]).await;
            assert_eq!(r.body["total"], 2, "{q}");
        }
        // Only the kinds the token may read.
        let plans_only = token("t1", "plans:read");
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1",
            &plans_only,
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 1);

        // Referrals: three for Patient/1 in pages of two.
        let r = fhir_get(
            &app,
            "/fhir/R4/ServiceRequest?subject=Patient/1&_count=2",
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 3);
        assert_eq!(r.body["entry"].as_array().unwrap().len(), 2);
        let next = r.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .unwrap()["url"]
            .as_str()
            .unwrap()
            .to_string();
        let r2 = fhir_get(&app, &path_of(&next), &all("t1"), &[]).await;
        assert_eq!(r2.body["entry"].as_array().unwrap().len(), 1);
        let mut ids: Vec<&str> = r.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .chain(r2.body["entry"].as_array().unwrap())
            .map(|e| e["resource"]["id"].as_str().unwrap())
            .collect();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        // _count=0: the total alone; nothing matching: an empty searchset, no entry element.
        let r = fhir_get(
            &app,
            "/fhir/R4/ServiceRequest?subject=Patient/1&_count=0",
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 3);
        assert!(r.body.get("entry").is_none());
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/404",
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 0);
        assert!(r.body.get("entry").is_none());
        // Another tenant sees only its own plan.
        let r = fhir_get(&app, "/fhir/R4/CarePlan?subject=Patient/1", &all("t2"), &[]).await;
        assert_eq!(r.body["total"], 1);
        // Each listed record is audited.
        let audit = app
            .get(
                "/v1/audit-events?subject=Patient/1&resource_type=referral",
                "t1",
            )
            .await;
        let listed = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "list")
            .count();
        assert_eq!(listed, 3);
    }
);

/// A POST-based FHIR search: `body` sent with `content_type` (none when `None`); a FHIR JSON
/// answer is saved as a sample.
async fn fhir_post_form(
    app: &TestApp,
    path: &str,
    bearer: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = app.client.post(app.url(path)).bearer_auth(bearer);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = Reply::from(req.body(body).send().await.unwrap()).await;
    assert_eq!(
        r.header("content-type"),
        Some("application/fhir+json; charset=utf-8"),
        "{path}: {}",
        r.body
    );
    save_sample("fhir-post", &r.body);
    r
}

const FORM: &str = "application/x-www-form-urlencoded";

/// The relation's link of a Bundle.
fn link<'a>(bundle: &'a Value, relation: &str) -> Option<&'a str> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)?["url"]
        .as_str()
}

on_both_engines!(
    searches_by_post_take_a_form_and_answer_as_get_does,
    |app: TestApp| async move {
        app.post("/v1/plans", "t1", &plan_body("Patient/1")).await;
        app.post(
            "/v1/safety-protocols",
            "t1",
            &protocol_body("Patient/1", "low"),
        )
        .await;
        for u in ["routine", "urgent", "emergency"] {
            let r = app
                .post("/v1/referrals", "t1", &referral_body("Patient/1", u))
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
        }

        // The parameters in the body: the same Bundle as the GET search, with GET links.
        let by_get = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1&_count=1",
            &all("t1"),
            &[],
        )
        .await;
        let r = fhir_post_form(
            &app,
            "/fhir/R4/CarePlan/_search",
            &all("t1"),
            Some(FORM),
            "subject=Patient%2F1&_count=1",
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["type"], "searchset");
        assert_eq!(r.body["total"], 2);
        assert_eq!(r.body["entry"], by_get.body["entry"]);
        assert_eq!(link(&r.body, "self"), link(&by_get.body, "self"));
        let next = link(&r.body, "next").expect("a next link").to_string();
        assert!(next.contains("/fhir/R4/CarePlan?subject="), "{next}");
        let r2 = fhir_get(&app, &path_of(&next), &all("t1"), &[]).await;
        assert_eq!(
            r2.body["entry"][0]["resource"]["category"][1]["coding"][0]["code"],
            "telemental-safety-protocol"
        );

        // Split between the URL and the body (with a charset), and the URL alone with an empty
        // body and no content type.
        let r = fhir_post_form(
            &app,
            "/fhir/R4/ServiceRequest/_search?_count=2",
            &all("t1"),
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            "patient=1",
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["total"], 3);
        assert_eq!(r.body["entry"].as_array().unwrap().len(), 2);
        assert_eq!(
            r.body["entry"][0]["resource"]["resourceType"],
            "ServiceRequest"
        );
        let r = fhir_post_form(
            &app,
            "/fhir/R4/ServiceRequest/_search?subject=Patient/1&_format=json",
            &all("t1"),
            None,
            "",
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 3, "{}", r.body);
        // An offset past the end (the largest there is): the total, no entry, no next link.
        let r = fhir_post_form(
            &app,
            "/fhir/R4/CarePlan/_search",
            &all("t1"),
            Some(FORM),
            "subject=Patient/1&_offset=18446744073709551615",
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 2, "{}", r.body);
        assert!(r.body.get("entry").is_none() && link(&r.body, "next").is_none());

        // Each record listed is audited, as for GET searches.
        let audit = app
            .get(
                "/v1/audit-events?subject=Patient/1&resource_type=referral",
                "t1",
            )
            .await;
        let listed = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "list")
            .count();
        assert_eq!(listed, 5);

        // Refusals, each an OperationOutcome: a parameter in both places, a bad value, a
        // format other than JSON in the form, a JSON body, a body without a type, a NUL, a
        // body over 64 KiB, no token, no scope.
        for (query, ct, body, status, code) in [
            (
                "?subject=Patient/1",
                Some(FORM),
                "subject=Patient/1".to_string(),
                400,
                "invalid",
            ),
            (
                "",
                Some(FORM),
                "subject=Patient/1&_count=many".into(),
                400,
                "invalid",
            ),
            (
                "",
                Some(FORM),
                "subject=Patient/1&_format=xml".into(),
                406,
                "not-supported",
            ),
            (
                "",
                Some("application/json"),
                "{\"subject\": \"Patient/1\"}".into(),
                415,
                "not-supported",
            ),
            ("", None, "subject=Patient/1".into(), 415, "not-supported"),
            (
                "",
                Some(FORM),
                "subject=Patient/1%00".into(),
                400,
                "invalid",
            ),
            (
                "",
                Some(FORM),
                format!("subject=Patient/1&pad={}", "x".repeat(70 * 1024)),
                413,
                "too-long",
            ),
        ] {
            let r = fhir_post_form(
                &app,
                &format!("/fhir/R4/CarePlan/_search{query}"),
                &all("t1"),
                ct,
                body.clone(),
                &[],
            )
            .await;
            assert_outcome(&r, status, code);
        }
        let r = fhir_post_form(
            &app,
            "/fhir/R4/CarePlan/_search",
            "",
            Some(FORM),
            "subject=1",
            &[],
        )
        .await;
        assert_outcome(&r, 401, "login");
        let r = fhir_post_form(
            &app,
            "/fhir/R4/ServiceRequest/_search",
            &token("t1", "plans:read"),
            Some(FORM),
            "subject=1",
            &[],
        )
        .await;
        assert_outcome(&r, 403, "forbidden");

        // Other methods on the search path: 405 naming every method the path answers (it is
        // also a CarePlan id's path, read by GET).
        let r = app
            .call_with(
                Method::PUT,
                "/fhir/R4/CarePlan/_search",
                &all("t1"),
                None,
                &[],
            )
            .await;
        assert_outcome(&r, 405, "not-supported");
        assert_eq!(r.header("allow"), Some("POST, GET, HEAD"));
    }
);

/// The ids of a searchset's entries, in order.
fn entry_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

on_both_engines!(
    searches_narrow_by_id_status_category_priority_and_dates,
    |app: TestApp| async move {
        let plan = app.post("/v1/plans", "t1", &plan_body("Patient/5")).await;
        let protocol = app
            .post(
                "/v1/safety-protocols",
                "t1",
                &protocol_body("Patient/5", "low"),
            )
            .await;
        let (plan_id, protocol_id) = (
            plan.body["id"].as_str().unwrap().to_string(),
            protocol.body["id"].as_str().unwrap().to_string(),
        );
        let mut referrals = Vec::new();
        for u in ["routine", "urgent", "emergency"] {
            let r = app
                .post("/v1/referrals", "t1", &referral_body("Patient/5", u))
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            referrals.push(r.body["id"].as_str().unwrap().to_string());
        }
        // Another service user's referral never shows.
        app.post("/v1/referrals", "t1", &referral_body("Patient/6", "urgent"))
            .await;
        let r = app
            .post(
                &format!("/v1/referrals/{}/status", referrals[2]),
                "t1",
                &json!({"status": "cancelled"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let search = |q: String| {
            let app = &app;
            async move { fhir_get(app, &q, &all("t1"), &[]).await }
        };

        // CarePlan: by category (a kind's code, or system|code), status and _id.
        let r = search(
            "/fhir/R4/CarePlan?subject=Patient/5&category=telemental-safety-protocol".into(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["total"], 1);
        assert_eq!(entry_ids(&r.body), [protocol_id.as_str()]);
        let r = search(format!(
            "/fhir/R4/CarePlan?patient=5&category={}",
            "https://telemental.org/fhir/CodeSystem/care-plan-kind%7Ctelemental-preference-plan"
        ))
        .await;
        assert_eq!(entry_ids(&r.body), [plan_id.as_str()]);
        let r =
            search("/fhir/R4/CarePlan?subject=Patient/5&category=718347000&status=active".into())
                .await;
        assert_eq!(r.body["total"], 2, "{}", r.body);
        let r = search("/fhir/R4/CarePlan?subject=Patient/5&status=completed,revoked".into()).await;
        assert_eq!(r.body["total"], 0, "{}", r.body);
        assert!(r.body.get("entry").is_none());
        let r = search(format!(
            "/fhir/R4/CarePlan?subject=Patient/5&_id={protocol_id},nope"
        ))
        .await;
        assert_eq!(entry_ids(&r.body), [protocol_id.as_str()]);

        // ServiceRequest: priority and status (comma: or; repeated parameters: and).
        let r =
            search("/fhir/R4/ServiceRequest?subject=Patient/5&priority=urgent,stat".into()).await;
        assert_eq!(r.body["total"], 2, "{}", r.body);
        assert_eq!(
            entry_ids(&r.body),
            [referrals[1].as_str(), referrals[2].as_str()]
        );
        let r = search("/fhir/R4/ServiceRequest?subject=Patient/5&status=revoked".into()).await;
        assert_eq!(entry_ids(&r.body), [referrals[2].as_str()]);
        let r =
            search("/fhir/R4/ServiceRequest?subject=Patient/5&status=active&priority=stat".into())
                .await;
        assert_eq!(r.body["total"], 0, "{}", r.body);
        let r = search("/fhir/R4/ServiceRequest?subject=Patient/5&status=http://hl7.org/fhir/request-status%7Cactive".into()).await;
        assert_eq!(entry_ids(&r.body), referrals[..2]);

        // Dates: the cancelled referral changed last; its lastUpdated splits the three.
        let cancelled = search(format!("/fhir/R4/ServiceRequest/{}", referrals[2])).await;
        let changed = cancelled.body["meta"]["lastUpdated"]
            .as_str()
            .unwrap()
            .to_string();
        let authored = cancelled.body["authoredOn"].as_str().unwrap().to_string();
        assert!(changed > authored, "{changed} after {authored}");
        let r = search(format!(
            "/fhir/R4/ServiceRequest?subject=Patient/5&_lastUpdated=ge{changed}"
        ))
        .await;
        assert_eq!(entry_ids(&r.body), [referrals[2].as_str()]);
        let r = search(format!(
            "/fhir/R4/ServiceRequest?subject=Patient/5&_lastUpdated=lt{changed}"
        ))
        .await;
        assert_eq!(entry_ids(&r.body), referrals[..2]);
        let r = search(format!(
            "/fhir/R4/ServiceRequest?subject=Patient/5&authored=eq{authored}&_lastUpdated=gt2000"
        ))
        .await;
        assert_eq!(entry_ids(&r.body), [referrals[2].as_str()]);
        // A range by repetition; a '+' left raw in the URL still reads as an offset.
        let r = search("/fhir/R4/ServiceRequest?subject=Patient/5&_lastUpdated=ge2000-01-01T00:00:00+01:00&_lastUpdated=lt2100".into()).await;
        assert_eq!(r.body["total"], 3, "{}", r.body);
        let r = search("/fhir/R4/CarePlan?subject=Patient/5&_lastUpdated=lt2000-06".into()).await;
        assert_eq!(r.body["total"], 0, "{}", r.body);

        // Paging keeps the search: the next link carries its parameters, and leads on.
        let r = search(
            "/fhir/R4/ServiceRequest?subject=Patient/5&priority=routine,stat&_count=1".into(),
        )
        .await;
        assert_eq!(r.body["total"], 2, "{}", r.body);
        let self_link = link(&r.body, "self").unwrap();
        assert!(self_link.contains("priority=routine%2Cstat"), "{self_link}");
        let next = link(&r.body, "next").expect("a next link").to_string();
        assert!(next.contains("priority=routine%2Cstat"), "{next}");
        let r2 = search(path_of(&next)).await;
        assert_eq!(r2.body["total"], 2);
        assert_eq!(entry_ids(&r2.body), [referrals[2].as_str()]);
        assert!(link(&r2.body, "next").is_none());

        // _sort: by id or a date, '-' for descending; the links keep it. _total is accepted
        // (the total is always exact).
        let r = search(
            "/fhir/R4/ServiceRequest?subject=Patient/5&_sort=-_lastUpdated,-_id&_total=accurate"
                .into(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let newest_first = entry_ids(&r.body);
        assert_eq!(
            newest_first[0], referrals[2],
            "the cancelled one changed last"
        );
        let keys: Vec<(String, String)> = r.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let res = &e["resource"];
                let updated = res["meta"]["lastUpdated"].as_str().unwrap().to_string();
                (updated, res["id"].as_str().unwrap().to_string())
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] >= w[1]), "{keys:?}");
        let r =
            search("/fhir/R4/ServiceRequest?subject=Patient/5&_sort=_lastUpdated,_id".into()).await;
        let oldest_first: Vec<String> = newest_first.iter().rev().cloned().collect();
        assert_eq!(entry_ids(&r.body), oldest_first);
        // Paged one at a time, the sort holds across pages.
        let mut paged = Vec::new();
        let mut next = Some(
            "/fhir/R4/ServiceRequest?subject=Patient/5&_sort=-_lastUpdated,-_id&_count=1"
                .to_string(),
        );
        while let Some(path) = next {
            let r = search(path).await;
            paged.extend(entry_ids(&r.body));
            next = link(&r.body, "next").map(|l| {
                assert!(l.contains("_sort=-_lastUpdated%2C-_id"), "{l}");
                path_of(l)
            });
        }
        assert_eq!(paged, newest_first);
        let r = search("/fhir/R4/CarePlan?subject=Patient/5&_sort=-_id".into()).await;
        let mut ids = vec![plan_id.clone(), protocol_id.clone()];
        ids.sort();
        ids.reverse();
        assert_eq!(entry_ids(&r.body), ids);
        for q in [
            "ServiceRequest?subject=Patient/5&_sort=priority",
            "CarePlan?subject=Patient/5&_sort=authored",
            "CarePlan?subject=Patient/5&_sort=_id,-_id",
            "CarePlan?subject=Patient/5&_total=exact",
        ] {
            let r = search(format!("/fhir/R4/{q}")).await;
            assert_outcome(&r, 400, "invalid");
        }

        // By POST: the same parameters in a form.
        let r = fhir_post_form(
            &app,
            "/fhir/R4/ServiceRequest/_search",
            &all("t1"),
            Some(FORM),
            "patient=5&status=revoked&authored=gt2000&authored=lt2100",
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(entry_ids(&r.body), [referrals[2].as_str()]);
        let r = fhir_post_form(
            &app,
            "/fhir/R4/CarePlan/_search?category=telemental-preference-plan",
            &all("t1"),
            Some(FORM),
            "subject=Patient%2F5",
            &[],
        )
        .await;
        assert_eq!(entry_ids(&r.body), [plan_id.as_str()]);

        // Bad values and modifiers: a 400 that names the parameter; nothing listed or lost.
        for (q, named) in [
            ("CarePlan?subject=Patient/5&status:not=active", "status:not"),
            (
                "CarePlan?subject=Patient/5&_lastUpdated=yesterday",
                "_lastUpdated",
            ),
            ("CarePlan?subject=Patient/5&_lastUpdated=ap2026", "ap"),
            (
                "CarePlan?subject=Patient/5&_lastUpdated=ge2026-02-30",
                "no such date",
            ),
            (
                "ServiceRequest?subject=Patient/5&priority=a%7Cb%7Cc",
                "priority",
            ),
            (
                "ServiceRequest?subject=Patient/5&authored=2026-01-01T10",
                "authored",
            ),
        ] {
            let r = search(format!("/fhir/R4/{q}")).await;
            assert_outcome(&r, 400, "invalid");
            let said = r.body["issue"][0]["diagnostics"].as_str().unwrap();
            assert!(said.contains(named), "{q}: {said}");
        }
        // `authored` is a ServiceRequest's and `category` a CarePlan's: each ignored on the
        // other type, or refused when strict handling is asked.
        let r = search("/fhir/R4/ServiceRequest?subject=Patient/5&category=x".into()).await;
        assert_eq!(r.body["total"], 3, "{}", r.body);
        let r = fhir_get(
            &app,
            "/fhir/R4/ServiceRequest?subject=Patient/5&category=x",
            &all("t1"),
            &[("Prefer", "handling=strict")],
        )
        .await;
        assert_outcome(&r, 400, "invalid");
        let said = r.body["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            said.contains("category") && said.contains("priority"),
            "{said}"
        );
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/5&status=active&category=718347000",
            &all("t1"),
            &[("Prefer", "handling=strict")],
        )
        .await;
        assert_eq!(r.body["total"], 2, "{}", r.body);

        // The CapabilityStatement lists each type's parameters, with their definitions.
        let cs = search("/fhir/R4/metadata".into()).await;
        let names = |ty: &str| -> Vec<String> {
            let res = cs.body["rest"][0]["resource"].as_array().unwrap();
            let res = res.iter().find(|r| r["type"] == ty).unwrap();
            res["searchParam"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    assert!(p["definition"]
                        .as_str()
                        .unwrap()
                        .starts_with("http://hl7.org/fhir/SearchParameter/"));
                    p["name"].as_str().unwrap().to_string()
                })
                .collect()
        };
        assert_eq!(
            names("CarePlan"),
            [
                "subject",
                "patient",
                "_id",
                "_lastUpdated",
                "status",
                "category"
            ]
        );
        assert_eq!(
            names("ServiceRequest"),
            [
                "subject",
                "patient",
                "_id",
                "_lastUpdated",
                "status",
                "priority",
                "authored"
            ]
        );
    }
);

on_both_engines!(
    unknown_search_parameters_are_ignored_unless_strict_handling_is_asked,
    |app: TestApp| async move {
        app.post("/v1/plans", "t1", &plan_body("Patient/1")).await;
        // Lenient (the default): ignored, and left out of the self link.
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1&intent=plan&_elements=id",
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["total"], 1);
        let self_link = link(&r.body, "self").unwrap();
        assert!(
            !self_link.contains("intent") && !self_link.contains("_elements"),
            "{self_link}"
        );
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1&intent=plan",
            &all("t1"),
            &[("Prefer", "handling=lenient")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        // Strict: 400 naming each unknown parameter once, by GET and by POST.
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1&intent=plan&_elements=id&intent=order",
            &all("t1"),
            &[("Prefer", "return=representation, handling=strict")],
        )
        .await;
        assert_outcome(&r, 400, "invalid");
        let diagnostics = r.body["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(diagnostics.contains("intent, _elements"), "{diagnostics}");
        let r = fhir_post_form(
            &app,
            "/fhir/R4/ServiceRequest/_search",
            &all("t1"),
            Some(FORM),
            "subject=Patient/1&code=3457005",
            &[("Prefer", "handling=strict")],
        )
        .await;
        assert_outcome(&r, 400, "invalid");
        assert!(r.body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("code"));
        // _summary=count: the total alone, by GET, POST and in a history; other summaries are
        // refused rather than answered with whole resources.
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1&_summary=count",
            &all("t1"),
            &[("Prefer", "handling=strict")],
        )
        .await;
        assert_eq!(r.body["total"], 1, "{}", r.body);
        assert!(r.body.get("entry").is_none());
        let r = fhir_post_form(
            &app,
            "/fhir/R4/CarePlan/_search",
            &all("t1"),
            Some(FORM),
            "subject=Patient/1&_summary=count",
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 1, "{}", r.body);
        assert!(r.body.get("entry").is_none());
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1&_summary=false",
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.body["entry"].as_array().unwrap().len(), 1, "{}", r.body);
        for q in [
            "_summary=true",
            "_summary=text",
            "_summary=count&_summary=false",
        ] {
            let r = fhir_get(
                &app,
                &format!("/fhir/R4/CarePlan?subject=Patient/1&{q}"),
                &all("t1"),
                &[],
            )
            .await;
            assert_outcome(&r, 400, "invalid");
        }
        // Known parameters only: strict handling changes nothing.
        let r = fhir_get(
            &app,
            "/fhir/R4/CarePlan?subject=Patient/1&_count=5&_format=json",
            &all("t1"),
            &[("Prefer", "handling=strict")],
        )
        .await;
        assert_eq!(r.body["total"], 1, "{}", r.body);
    }
);

on_both_engines!(
    every_care_plan_version_reads_by_vread_and_in_its_history,
    |app: TestApp| async move {
        let plan = app.post("/v1/plans", "t1", &plan_body("Patient/7")).await;
        let id = plan.body["id"].as_str().unwrap().to_string();
        for (version, days) in [(1, 30), (2, 60)] {
            // Versions a few milliseconds apart, so that `_since` (below) can fall between.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let mut changed = plan_body("Patient/7");
            changed["review_interval_days"] = json!(days);
            let r = app
                .put(
                    &format!("/v1/plans/{id}"),
                    "t1",
                    &changed,
                    &format!("\"{version}\""),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let protocol = app
            .post(
                "/v1/safety-protocols",
                "t1",
                &protocol_body("Patient/7", "low"),
            )
            .await;
        let protocol_id = protocol.body["id"].as_str().unwrap().to_string();

        // vread: each version as it was, with its own ETag; the current one is the read's.
        let current = fhir_get(&app, &format!("/fhir/R4/CarePlan/{id}"), &all("t1"), &[]).await;
        let mut versions = Vec::new();
        for v in 1..=3 {
            let r = fhir_get(
                &app,
                &format!("/fhir/R4/CarePlan/{id}/_history/{v}"),
                &all("t1"),
                &[],
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["meta"]["versionId"], v.to_string());
            assert_eq!(r.header("etag"), Some(format!("W/\"{v}\"").as_str()));
            assert!(r.header("last-modified").is_some());
            versions.push(r.body);
        }
        assert_eq!(versions[2], current.body);
        assert_ne!(versions[0], versions[1]);
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{id}/_history/2"),
            &all("t1"),
            &[("If-None-Match", "W/\"2\"")],
        )
        .await;
        assert_eq!(r.status, 304);
        // No such version, no such record, another tenant's: 404.
        for (path, tenant) in [
            (format!("/fhir/R4/CarePlan/{id}/_history/4"), "t1"),
            (format!("/fhir/R4/CarePlan/{id}/_history/0"), "t1"),
            (format!("/fhir/R4/CarePlan/{id}/_history/two"), "t1"),
            (
                format!("/fhir/R4/CarePlan/{id}/_history/9223372036854775807"),
                "t1",
            ),
            (format!("/fhir/R4/CarePlan/{id}/_history/1"), "t2"),
            (format!("/fhir/R4/CarePlan/{id}/_history"), "t2"),
            (
                "/fhir/R4/CarePlan/01a2514d-0503-7569-a181-875fa094fff6/_history".to_string(),
                "t1",
            ),
        ] {
            let r = fhir_get(&app, &path, &all(tenant), &[]).await;
            assert_outcome(&r, 404, "not-found");
        }

        // The history: newest first, how each version was made, paged.
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{id}/_history"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["type"], "history");
        assert_eq!(r.body["total"], 3);
        let entries = r.body["entry"].as_array().unwrap();
        let shown: Vec<&Value> = entries.iter().map(|e| &e["resource"]).collect();
        assert_eq!(shown, [&versions[2], &versions[1], &versions[0]]);
        let methods: Vec<&str> = entries
            .iter()
            .map(|e| e["request"]["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["PUT", "PUT", "POST"]);
        assert_eq!(entries[2]["response"]["status"], "201");
        assert_eq!(entries[0]["response"]["etag"], "W/\"3\"");
        assert_eq!(entries[0]["request"]["url"], format!("CarePlan/{id}"));
        assert!(entries[0]["fullUrl"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/fhir/R4/CarePlan/{id}")));
        let page = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{id}/_history?_count=2"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(page.body["entry"].as_array().unwrap().len(), 2);
        let next = link(&page.body, "next").expect("a next link").to_string();
        let rest = fhir_get(&app, &path_of(&next), &all("t1"), &[]).await;
        assert_eq!(rest.body["total"], 3);
        assert_eq!(rest.body["entry"].as_array().unwrap().len(), 1);
        assert_eq!(rest.body["entry"][0]["resource"], versions[0]);
        assert!(link(&rest.body, "next").is_none());
        for q in [
            "_count=0",
            "_summary=count",
            "_offset=3",
            "_offset=18446744073709551615",
        ] {
            let r = fhir_get(
                &app,
                &format!("/fhir/R4/CarePlan/{id}/_history?{q}"),
                &all("t1"),
                &[],
            )
            .await;
            assert_eq!(r.body["total"], 3, "{q}");
            assert!(r.body.get("entry").is_none(), "{q}");
        }
        // _since: the versions recorded at or after an instant; links keep it.
        let second = versions[1]["meta"]["lastUpdated"].as_str().unwrap();
        let since = |q: String| {
            let (app, id) = (&app, &id);
            async move {
                let path = format!("/fhir/R4/CarePlan/{id}/_history?{q}");
                fhir_get(app, &path, &all("t1"), &[("Prefer", "handling=strict")]).await
            }
        };
        let r = since(format!("_since={second}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["total"], 2, "{}", r.body);
        let shown: Vec<&Value> = r.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        assert_eq!(shown, [&versions[2], &versions[1]]);
        let r = since(format!("_since={second}&_count=1")).await;
        let next = link(&r.body, "next").expect("a next link").to_string();
        assert!(next.contains("_since="), "{next}");
        let r = since(path_of(&next).split_once('?').unwrap().1.to_string()).await;
        assert_eq!(r.body["total"], 2, "{}", r.body);
        assert_eq!(r.body["entry"][0]["resource"], versions[1]);
        assert!(link(&r.body, "next").is_none());
        for (q, total) in [
            ("_since=2000", 3),
            ("_since=2100-01-01T00:00:00Z", 0),
            // After the end of 9999 in UTC: nothing, on both engines.
            ("_since=9999-12-31T23:59:59%2B00:00", 0),
            ("_since=9999-12-31T23:00:00-14:00", 0),
            ("_since=1900-01-01T00:00:00%2B14:00", 3),
        ] {
            let r = since(q.to_string()).await;
            assert_eq!(r.body["total"], total, "{q}: {}", r.body);
        }
        for q in ["_since=yesterday", "_since=ge2026", "_at=2026"] {
            assert_outcome(&since(q.to_string()).await, 400, "invalid");
        }
        // A safety protocol's history is its own.
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{protocol_id}/_history"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 1, "{}", r.body);
        assert_eq!(
            r.body["entry"][0]["resource"]["category"][1]["coding"][0]["code"],
            "telemental-safety-protocol"
        );

        // Scopes as for a read: each kind with its own, SMART's read permission for both, and
        // a search-only scope reads no version.
        let protocols_only = token("t1", "protocols:read");
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{id}/_history/1"),
            &protocols_only,
            &[],
        )
        .await;
        assert_outcome(&r, 404, "not-found");
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{protocol_id}/_history"),
            &protocols_only,
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let smart_read = token("t1", "system/CarePlan.r");
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{id}/_history"),
            &smart_read,
            &[],
        )
        .await;
        assert_eq!(r.body["total"], 3, "{}", r.body);
        let smart_search = token("t1", "system/CarePlan.s");
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/CarePlan/{id}/_history/1"),
            &smart_search,
            &[],
        )
        .await;
        assert_outcome(&r, 403, "forbidden");

        // A referral: a version per status change, the statuses as they were.
        let referral = app
            .post("/v1/referrals", "t1", &referral_body("Patient/7", "urgent"))
            .await;
        let rid = referral.body["id"].as_str().unwrap().to_string();
        for body in [
            json!({"status": "scheduled", "appointment_at": "2026-12-01T09:30:00Z"}),
            json!({"status": "cancelled"}),
        ] {
            let r = app
                .post(&format!("/v1/referrals/{rid}/status"), "t1", &body)
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/ServiceRequest/{rid}/_history"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(r.body["type"], "history", "{}", r.body);
        assert_eq!(r.body["total"], 3);
        let statuses: Vec<&str> = r.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["revoked", "active", "active"]);
        // _since the newest version's instant: at least that one (the others may share its
        // millisecond); none from next year.
        let newest = r.body["entry"][0]["resource"]["meta"]["lastUpdated"]
            .as_str()
            .unwrap()
            .to_string();
        let h = fhir_get(
            &app,
            &format!("/fhir/R4/ServiceRequest/{rid}/_history?_since={newest}"),
            &all("t1"),
            &[],
        )
        .await;
        let listed = h.body["total"].as_i64().unwrap();
        assert!((1..=3).contains(&listed), "{}", h.body);
        assert_eq!(h.body["entry"][0]["resource"]["status"], "revoked");
        let h = fhir_get(
            &app,
            &format!("/fhir/R4/ServiceRequest/{rid}/_history?_since=2100&_summary=count"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(h.body["total"], 0, "{}", h.body);
        // A page below the newest: the same versions as in the whole history.
        for offset in [1, 2] {
            let h = fhir_get(
                &app,
                &format!("/fhir/R4/ServiceRequest/{rid}/_history?_count=1&_offset={offset}"),
                &all("t1"),
                &[],
            )
            .await;
            assert_eq!(h.body["total"], 3, "{}", h.body);
            assert_eq!(
                h.body["entry"][0]["resource"],
                r.body["entry"][offset]["resource"]
            );
        }
        assert_eq!(
            r.body["entry"][1]["resource"]["occurrenceDateTime"],
            "2026-12-01T09:30:00.000Z"
        );
        let first = fhir_get(
            &app,
            &format!("/fhir/R4/ServiceRequest/{rid}/_history/1"),
            &all("t1"),
            &[],
        )
        .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.body["meta"]["versionId"], "1");
        assert_eq!(first.header("etag"), Some("W/\"1\""));
        assert!(first.body.get("occurrenceDateTime").is_none());
        for (path, scope) in [
            (
                format!("/fhir/R4/ServiceRequest/{rid}/_history/4"),
                ALL_SCOPES,
            ),
            (format!("/fhir/R4/ServiceRequest/{id}/_history"), ALL_SCOPES),
            (
                format!("/fhir/R4/ServiceRequest/{id}/_history/1"),
                ALL_SCOPES,
            ),
        ] {
            let r = fhir_get(&app, &path, &token("t1", scope), &[]).await;
            assert_outcome(&r, 404, "not-found");
        }
        let r = fhir_get(
            &app,
            &format!("/fhir/R4/ServiceRequest/{rid}/_history"),
            &token("t1", "plans:read"),
            &[],
        )
        .await;
        assert_outcome(&r, 403, "forbidden");

        // Audited as reads of versions, like GET /v1/plans/{id}/versions.
        let audit = app
            .get(
                "/v1/audit-events?subject=Patient/7&resource_type=plan",
                "t1",
            )
            .await;
        let read_versions = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "read_versions" && e["outcome"] == "success")
            .count();
        assert!(
            read_versions >= 10,
            "{read_versions} read_versions rows: {}",
            audit.body
        );
    }
);

on_both_engines!(
    every_fhir_error_is_an_operation_outcome,
    |app: TestApp| async move {
        let plan = app.post("/v1/plans", "t1", &plan_body("Patient/1")).await;
        let plan_id = plan.body["id"].as_str().unwrap().to_string();
        let read = format!("/fhir/R4/CarePlan/{plan_id}");

        // No token.
        let r = Reply::from(app.client.get(app.url(&read)).send().await.unwrap()).await;
        assert_outcome(&r, 401, "login");
        assert!(r
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")));
        assert_eq!(
            r.header("content-type"),
            Some("application/fhir+json; charset=utf-8")
        );
        save_sample("error", &r.body);
        // A token without the scope: 403 (and audited); with only the other kind's scope: 404.
        let r = fhir_get(&app, &read, &token("t1", "referrals:read"), &[]).await;
        assert_outcome(&r, 403, "forbidden");
        let r = fhir_get(&app, &read, &token("t1", "protocols:read"), &[]).await;
        assert_outcome(&r, 404, "not-found");
        let r = fhir_get(
            &app,
            "/fhir/R4/ServiceRequest?subject=Patient/1",
            &token("t1", "plans:read"),
            &[],
        )
        .await;
        assert_outcome(&r, 403, "forbidden");
        // Another tenant's record, an unknown id, a malformed id.
        assert_outcome(
            &fhir_get(&app, &read, &all("t2"), &[]).await,
            404,
            "not-found",
        );
        let unknown = "/fhir/R4/CarePlan/01936c1e-8f5a-7cc0-b4a7-0a1f2f3e4d5c";
        assert_outcome(
            &fhir_get(&app, unknown, &all("t1"), &[]).await,
            404,
            "not-found",
        );
        assert_outcome(
            &fhir_get(&app, "/fhir/R4/ServiceRequest/not-a-uuid", &all("t1"), &[]).await,
            404,
            "not-found",
        );
        // Formats other than JSON.
        assert_outcome(
            &fhir_get(&app, &format!("{read}?_format=xml"), &all("t1"), &[]).await,
            406,
            "not-supported",
        );
        assert_outcome(
            &fhir_get(
                &app,
                &read,
                &all("t1"),
                &[("Accept", "application/fhir+xml")],
            )
            .await,
            406,
            "not-supported",
        );
        // Accepted spellings of JSON.
        for accept in ["application/json", "application/fhir+json", "*/*"] {
            assert_eq!(
                fhir_get(&app, &read, &all("t1"), &[("Accept", accept)])
                    .await
                    .status,
                200,
                "{accept}"
            );
        }
        // Bad searches.
        for q in [
            "",
            "subject=Patient/1&_count=-1",
            "subject=Patient/1&_offset=x",
            "subject=a&patient=b",
            "subject=1&subject=2",
        ] {
            let r = fhir_get(
                &app,
                &format!("/fhir/R4/ServiceRequest?{q}"),
                &all("t1"),
                &[],
            )
            .await;
            assert_outcome(&r, 400, "invalid");
        }
        // Wrong method: 405 with Allow; unknown resource type: 404.
        let r = app
            .call_with(
                Method::POST,
                "/fhir/R4/CarePlan",
                &all("t1"),
                Some(&json!({})),
                &[],
            )
            .await;
        assert_outcome(&r, 405, "not-supported");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        save_sample("error", &r.body);
        let r = fhir_get(&app, "/fhir/R4/Patient/1", &all("t1"), &[]).await;
        assert_outcome(&r, 404, "not-found");
        // The refusal is in the audit trail.
        let audit = app.get("/v1/audit-events?resource_type=plan", "t1").await;
        assert!(audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "denied"));
    }
);

on_both_engines!(
    the_capability_statement_says_what_is_supported,
    |app: TestApp| async move {
        let r = fhir_get(&app, "/fhir/R4/metadata", &all("t1"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["resourceType"], "CapabilityStatement");
        assert_eq!(r.body["fhirVersion"], "4.0.1");
        assert_eq!(r.body["kind"], "instance");
        let types: Vec<&str> = r.body["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["CarePlan", "ServiceRequest"]);
        let r = fhir_get(
            &app,
            "/fhir/R4/metadata?_format=json",
            &all("t1"),
            &[("Accept", "application/json")],
        )
        .await;
        assert_eq!(r.status, 200);
        let r = Reply::from(
            app.client
                .get(app.url("/fhir/R4/metadata"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_outcome(&r, 401, "login");
    }
);

on_both_engines!(
    smart_scopes_read_the_fhir_views_and_nothing_else,
    |app: TestApp| async move {
        let plan = app.post("/v1/plans", "t1", &plan_body("Patient/7")).await;
        let protocol = app
            .post(
                "/v1/safety-protocols",
                "t1",
                &protocol_body("Patient/7", "low"),
            )
            .await;
        let referral = app
            .post(
                "/v1/referrals",
                "t1",
                &referral_body("Patient/7", "routine"),
            )
            .await;
        let plan_read = format!("/fhir/R4/CarePlan/{}", plan.body["id"].as_str().unwrap());
        let protocol_read = format!(
            "/fhir/R4/CarePlan/{}",
            protocol.body["id"].as_str().unwrap()
        );
        let referral_read = format!(
            "/fhir/R4/ServiceRequest/{}",
            referral.body["id"].as_str().unwrap()
        );
        let care_plans = "/fhir/R4/CarePlan?patient=7";
        let referrals = "/fhir/R4/ServiceRequest?subject=Patient/7";
        let status = |scope: &'static str, path: String| {
            let app = &app;
            async move {
                fhir_get(app, &path, &token("t1", scope), &[])
                    .await
                    .status
                    .as_u16()
            }
        };

        // A backend service's v2 scope: read and search of both CarePlan kinds.
        let s = "system/CarePlan.rs";
        assert_eq!(status(s, plan_read.clone()).await, 200);
        assert_eq!(status(s, protocol_read.clone()).await, 200);
        let r = fhir_get(&app, care_plans, &token("t1", s), &[]).await;
        assert_eq!(r.body["total"], 2, "{}", r.body);
        assert_eq!(status(s, referral_read.clone()).await, 403);
        // Read without search, and search without read.
        assert_eq!(status("system/CarePlan.r", plan_read.clone()).await, 200);
        assert_eq!(status("system/CarePlan.r", care_plans.into()).await, 403);
        assert_eq!(status("system/CarePlan.s", care_plans.into()).await, 200);
        assert_eq!(status("system/CarePlan.s", plan_read.clone()).await, 403);
        // v1 scopes, a user's app, a wildcard.
        assert_eq!(
            status("user/CarePlan.read", protocol_read.clone()).await,
            200
        );
        assert_eq!(
            status("system/ServiceRequest.read", referral_read.clone()).await,
            200
        );
        assert_eq!(
            status("system/ServiceRequest.read", referrals.into()).await,
            200
        );
        assert_eq!(status("system/*.read", referral_read.clone()).await, 200);
        assert_eq!(status("system/*.read", plan_read.clone()).await, 200);
        // Not honoured: a launch patient's scope, a query-narrowed scope, letters out of order.
        for refused in [
            "patient/CarePlan.read",
            "system/CarePlan.rs?category=https://telemental.org/fhir/CodeSystem/care-plan-kind|telemental-preference-plan",
            "system/CarePlan.sr",
            "system/Patient.rs",
        ] {
            let r = fhir_get(&app, &plan_read, &token("t1", refused), &[]).await;
            assert_outcome(&r, 403, "forbidden");
            assert!(
                r.body["issue"][0]["diagnostics"]
                    .as_str()
                    .unwrap()
                    .contains("system/CarePlan.r"),
                "{}",
                r.body
            );
        }
        // The tenant still comes from the token: another tenant's record is not found.
        let other = fhir_get(&app, &plan_read, &token("t2", "system/*.rs"), &[]).await;
        assert_outcome(&other, 404, "not-found");
        // SMART scopes reach only the FHIR views, never /v1.
        let v1 = app
            .call_with(
                Method::GET,
                &format!("/v1/plans/{}", plan.body["id"].as_str().unwrap()),
                &token("t1", "system/*.*"),
                None,
                &[],
            )
            .await;
        assert_eq!(v1.status, 403, "{}", v1.body);

        // Reads with SMART scopes are audited like any other, with the actor and outcome.
        let audit = app
            .get("/v1/audit-events?resource_type=plan&limit=200", "t1")
            .await;
        assert_eq!(audit.status, 200, "{}", audit.body);
        let reads: Vec<(&str, &str)> = audit.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "read")
            .map(|e| (e["outcome"].as_str().unwrap(), e["actor"].as_str().unwrap()))
            .collect();
        assert!(reads.contains(&("success", "test-client")), "{reads:?}");
        assert!(reads.contains(&("denied", "test-client")), "{reads:?}");
    }
);

/// A SMART app in an EHR's browser: CORS for the origins in TELEMENTAL_FHIR_ALLOWED_ORIGINS.
async fn browsers_read_fhir_from_allowed_origins_only(engine: Engine) {
    const APP: &str = "https://smart-app.example.org";
    let Some((mut settings, dir)) = fresh_settings(engine).await else {
        eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: PostgreSQL case skipped");
        return;
    };
    settings.fhir_allowed_origins = telemental::config::Origins(vec![APP.into()]);
    let app = spawn_with(settings, dir, engine).await;
    let plan = app.post("/v1/plans", "t1", &plan_body("Patient/5")).await;
    let read = format!("/fhir/R4/CarePlan/{}", plan.body["id"].as_str().unwrap());
    let cs = fhir_get(&app, "/fhir/R4/metadata", &all("t1"), &[]).await;
    assert_eq!(cs.body["rest"][0]["security"]["cors"], true, "{}", cs.body);

    let preflight = |origin: &'static str, path: String| {
        app.client
            .request(Method::OPTIONS, app.url(&path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header(
                "Access-Control-Request-Headers",
                "authorization, if-none-match",
            )
            .send()
    };
    for path in [read.clone(), "/fhir/R4/CarePlan?patient=5".into()] {
        let r = preflight(APP, path).await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["access-control-allow-origin"], APP);
        assert_eq!(
            r.headers()["access-control-allow-methods"],
            "GET, POST, OPTIONS"
        );
        let allowed = r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase();
        assert!(allowed.contains("authorization") && allowed.contains("if-none-match"));
        // A POST-based search's form and its Prefer header may be sent too.
        assert!(allowed.contains("content-type") && allowed.contains("prefer"));
    }
    // Another origin's preflight: a 403 OperationOutcome, no CORS header.
    let r = Reply::from(
        preflight("https://evil.example", read.clone())
            .await
            .unwrap(),
    )
    .await;
    assert_outcome(&r, 403, "forbidden");
    assert!(r.header("access-control-allow-origin").is_none());
    save_sample("error", &r.body);

    // The read itself: the allowed origin may see the answer and its ETag.
    let get = |origin: &'static str| {
        app.client
            .get(app.url(&read))
            .bearer_auth(token("t1", "system/CarePlan.rs"))
            .header("Origin", origin)
            .send()
    };
    let r = get(APP).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], APP);
    assert!(r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("ETag"));
    let r = get("https://evil.example").await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "CORS is for browsers; the token decides access"
    );
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // /v1 answers no CORS.
    let r = app
        .client
        .request(Method::OPTIONS, app.url("/v1/plans"))
        .header("Origin", APP)
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn browsers_read_fhir_from_allowed_origins_only_sqlite() {
    browsers_read_fhir_from_allowed_origins_only(Engine::Sqlite).await;
}

#[actix_web::test]
async fn browsers_read_fhir_from_allowed_origins_only_postgres() {
    browsers_read_fhir_from_allowed_origins_only(Engine::Postgres).await;
}

/// With no origin configured (the default), every preflight is refused.
#[actix_web::test]
async fn fhir_cors_is_off_by_default() {
    let app = spawn_app(Engine::Sqlite).await.expect("sqlite app");
    let r = app
        .client
        .request(Method::OPTIONS, app.url("/fhir/R4/metadata"))
        .header("Origin", "https://smart-app.example.org")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    let r = Reply::from(r).await;
    assert_outcome(&r, 403, "forbidden");
}
