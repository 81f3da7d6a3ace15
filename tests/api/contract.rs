//! The document against the handlers: for every operation in the served OpenAPI document,
//! requests that provoke each kind of error it can give. Every status an operation returns must
//! be documented for it, and every error status it documents must be provoked here (500 and
//! 503 aside: those need a broken database, see outage.rs). A handler that starts returning an
//! undocumented status, or a declaration that lists one the handler never returns, fails.

use crate::helpers::*;
use crate::on_both_engines;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A request's body: JSON, or raw bytes with a content type.
enum Body {
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

struct Probe<'a> {
    app: &'a TestApp,
    observed: BTreeMap<String, BTreeSet<u16>>,
}

impl Probe<'_> {
    async fn send(
        &mut self,
        op: &str,
        method: &Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.app.client.request(method.clone(), self.app.url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Raw(ct, bytes)) => req.header("content-type", ct).body(bytes),
            None => req,
        };
        let reply = Reply::from(req.send().await.expect("request sent")).await;
        self.observed
            .entry(op.to_string())
            .or_default()
            .insert(reply.status.as_u16());
        reply
    }
}

fn protocol_body(subject: &str) -> Value {
    json!({"subject": subject, "risk_level": "low", "call_back_numbers": ["+447700900123"],
           "agreed_with_service_user_on": "2026-11-20"})
}

on_both_engines!(
    every_operation_returns_exactly_its_documented_error_statuses,
    |app: TestApp| async move {
        // Private webhook targets allowed, one attempt: a delivery to a closed local port is
        // dead at once and can be replayed.
        let mut settings = app.settings.clone();
        app.stop().await;
        settings.webhook_allow_private = true;
        settings.webhook_max_attempts = 1;
        let app = spawn_with(settings, app._dir, app.engine).await;

        let t = "contract";
        let all = token(t, ALL_SCOPES);
        let doc: Value = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();

        // One record of each kind to address.
        let plan = app.post("/v1/plans", t, &plan_body("Patient/c1")).await;
        let protocol = app
            .post("/v1/safety-protocols", t, &protocol_body("Patient/c1"))
            .await;
        let check = app
            .post(
                "/v1/session-checks",
                t,
                &json!({"subject": "Patient/c1", "modality": "video",
                        "appointment_type": "therapy", "clinician_in_private_space": true}),
            )
            .await;
        let hook = app
            .post(
                "/v1/webhooks",
                t,
                &json!({"url": "http://127.0.0.1:9/hook", "events": ["referral.created"]}),
            )
            .await;
        let doomed = app
            .post(
                "/v1/webhooks",
                t,
                &json!({"url": "http://127.0.0.1:9/doomed", "events": ["plan.review_due"]}),
            )
            .await;
        let referral_body =
            json!({"subject": "Patient/c1", "reason": "not_accessible", "urgency": "routine"});
        let referral = app.post("/v1/referrals", t, &referral_body).await;
        for r in [&plan, &protocol, &check, &hook, &doomed, &referral] {
            assert!(r.status.is_success(), "setup: {}", r.body);
        }
        let id = |r: &Reply| r.body["id"].as_str().unwrap().to_string();
        let (plan_id, protocol_id, check_id, hook_id, referral_id) = (
            id(&plan),
            id(&protocol),
            id(&check),
            id(&hook),
            id(&referral),
        );
        let deliveries = format!("/v1/webhooks/{hook_id}/deliveries");
        let dead = eventually(
            || async {
                app.get(&format!("{deliveries}?status=dead"), t).await.body["items"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            },
            Duration::from_secs(20),
        )
        .await;
        assert!(dead, "the delivery to a closed port was not dead-lettered");
        let delivery_id = app.get(&deliveries, t).await.body["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();

        let mut probe = Probe {
            app: &app,
            observed: BTreeMap::new(),
        };
        let mut documented: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        let mut subjects = 0;
        let unknown = uuid::Uuid::now_v7().to_string();

        for (template, item) in doc["paths"].as_object().unwrap() {
            // The EHR-facing operations answer EHR tokens and FHIR/CDS Hooks errors; their
            // documented statuses are provoked in fhir.rs and cds.rs.
            if template.starts_with("/fhir/") || template.starts_with("/cds-services") {
                continue;
            }
            for (method_name, op) in item.as_object().unwrap() {
                let op_id = op["operationId"].as_str().unwrap().to_string();
                let method = Method::from_bytes(method_name.to_uppercase().as_bytes()).unwrap();
                let codes: BTreeSet<u16> = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(|c| c.parse().unwrap())
                    .collect();
                documented.insert(op_id.clone(), codes.clone());
                let success = *codes.iter().find(|c| **c < 300).unwrap();

                // A valid request: real ids, a valid body, the headers it needs.
                let id_for_path = match template.as_str() {
                    // Deleted while the others still need theirs.
                    _ if op_id == "deleteWebhook" => id(&doomed),
                    p if p.starts_with("/v1/plans/") => plan_id.clone(),
                    p if p.starts_with("/v1/safety-protocols/") => protocol_id.clone(),
                    p if p.starts_with("/v1/session-checks/") => check_id.clone(),
                    p if p.starts_with("/v1/referrals/") => referral_id.clone(),
                    p if p.starts_with("/v1/webhooks/") => hook_id.clone(),
                    _ => String::new(),
                };
                let path = template
                    .replace("{id}", &id_for_path)
                    .replace("{delivery_id}", &delivery_id);
                subjects += 1;
                let fresh = format!("Patient/c-new-{subjects}");
                let body: Option<Value> = match op_id.as_str() {
                    "createPlan" => Some(plan_body(&fresh)),
                    "replacePlan" => Some(plan_body("Patient/c1")),
                    "createSafetyProtocol" => Some(protocol_body(&fresh)),
                    "replaceSafetyProtocol" => Some(protocol_body("Patient/c1")),
                    "createSessionCheck" => Some(check_body("Patient/c1")),
                    "recordDisconnection" => Some(json!({})),
                    "recommendModality" => {
                        Some(json!({"subject": "Patient/c1", "appointment_type": "therapy"}))
                    }
                    "createReferral" => Some(referral_body.clone()),
                    "changeReferralStatus" => Some(json!({"status": "accepted"})),
                    "createWebhook" => Some(
                        json!({"url": "http://127.0.0.1:9/other", "events": ["referral.created"]}),
                    ),
                    _ => None,
                };
                assert_eq!(
                    body.is_some(),
                    op.get("requestBody").is_some(),
                    "{op_id}: a body exactly when the document has one"
                );
                let needs_if_match = method == Method::PUT;
                let if_match: Vec<(&str, &str)> = if needs_if_match {
                    vec![("If-Match", "*")]
                } else {
                    vec![]
                };
                let json_body = || body.clone().map(Body::Json);
                let public = op["security"] == json!([{}]);
                let scopes: Vec<&str> = op["security"][0]["bearer"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();

                // Conflicts and failed preconditions, before the valid request changes state.
                match op_id.as_str() {
                    "createPlan" | "createSafetyProtocol" => {
                        let dup = if op_id == "createPlan" {
                            plan_body("Patient/c1")
                        } else {
                            protocol_body("Patient/c1")
                        };
                        let r = probe
                            .send(
                                &op_id,
                                &method,
                                &path,
                                Some(&all),
                                Some(Body::Json(dup)),
                                &[],
                            )
                            .await;
                        r.assert_problem(409);
                    }
                    "createReferral" => {
                        let key = [("Idempotency-Key", "contract-key")];
                        probe
                            .send(&op_id, &method, &path, Some(&all), json_body(), &key)
                            .await;
                        let other = json!({"subject": "Patient/c2", "reason": "not_preferred", "urgency": "routine"});
                        probe
                            .send(
                                &op_id,
                                &method,
                                &path,
                                Some(&all),
                                Some(Body::Json(other)),
                                &key,
                            )
                            .await
                            .assert_problem(409);
                        probe
                            .send(
                                &op_id,
                                &method,
                                &path,
                                Some(&all),
                                json_body(),
                                &[("Idempotency-Key", "has spaces")],
                            )
                            .await
                            .assert_problem(400);
                    }
                    "changeReferralStatus" => {
                        let finished = json!({"status": "completed"});
                        probe
                            .send(
                                &op_id,
                                &method,
                                &path,
                                Some(&all),
                                Some(Body::Json(finished)),
                                &[],
                            )
                            .await
                            .assert_problem(409);
                        probe
                            .send(
                                &op_id,
                                &method,
                                &path,
                                Some(&all),
                                json_body(),
                                &[("If-Match", "\"99\"")],
                            )
                            .await
                            .assert_problem(412);
                        // A body wrong whatever the state is refused as such, before If-Match.
                        let wrong =
                            json!({"status": "accepted", "appointment_at": "2026-12-01T09:30:00Z"});
                        let r = probe
                            .send(
                                &op_id,
                                &method,
                                &path,
                                Some(&all),
                                Some(Body::Json(wrong)),
                                &[("If-Match", "\"99\"")],
                            )
                            .await;
                        r.assert_problem(422);
                        assert_eq!(r.error_fields(), ["appointment_at"]);
                    }
                    "replacePlan" | "replaceSafetyProtocol" => {
                        probe
                            .send(&op_id, &method, &path, Some(&all), json_body(), &[])
                            .await
                            .assert_problem(428);
                        probe
                            .send(
                                &op_id,
                                &method,
                                &path,
                                Some(&all),
                                json_body(),
                                &[("If-Match", "\"99\"")],
                            )
                            .await
                            .assert_problem(412);
                    }
                    "getEquityReport" => {
                        // Its parameters are a closed set.
                        probe
                            .send(
                                &op_id,
                                &method,
                                &format!("{path}?bogus=1"),
                                Some(&all),
                                None,
                                &[],
                            )
                            .await
                            .assert_problem(400);
                    }
                    _ => {}
                }

                // The valid request gives the documented success.
                let r = probe
                    .send(&op_id, &method, &path, Some(&all), json_body(), &if_match)
                    .await;
                assert_eq!(r.status.as_u16(), success, "{op_id}: {}", r.body);

                if !public {
                    probe
                        .send(&op_id, &method, &path, None, json_body(), &if_match)
                        .await
                        .assert_problem(401);
                    // A token with another scope than the operation's.
                    let other = if scopes.contains(&"audit:read") {
                        "plans:read"
                    } else {
                        "audit:read"
                    };
                    let r = probe
                        .send(
                            &op_id,
                            &method,
                            &path,
                            Some(&token(t, other)),
                            json_body(),
                            &if_match,
                        )
                        .await;
                    if scopes.is_empty() {
                        assert_eq!(r.status.as_u16(), success, "{op_id} needs no scope");
                    } else {
                        r.assert_problem(403);
                    }
                }
                if let Some(valid) = &body {
                    let valid = serde_json::to_vec(valid).unwrap();
                    for (b, status) in [
                        (Body::Raw("text/plain", valid), 415),
                        (
                            Body::Raw("application/json", b"{\"subject\": ".to_vec()),
                            400,
                        ),
                        (
                            Body::Raw("application/json", vec![b' '; 1024 * 1024 + 1]),
                            413,
                        ),
                        (Body::Json(json!({"no_such_field": 1})), 422),
                    ] {
                        probe
                            .send(&op_id, &method, &path, Some(&all), Some(b), &if_match)
                            .await
                            .assert_problem(status);
                    }
                }
                if template.contains('{') {
                    let missing = template
                        .replace("{id}", &unknown)
                        .replace("{delivery_id}", &unknown);
                    probe
                        .send(
                            &op_id,
                            &method,
                            &missing,
                            Some(&all),
                            json_body(),
                            &if_match,
                        )
                        .await
                        .assert_problem(404);
                }
                let params: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                    .unwrap_or_default();
                // The boundary checks of every parameter: no NUL (422 naming it).
                if let Some(first) = params.iter().find(|p| {
                    op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|q| q["name"] == **p && q["in"] == "query")
                }) {
                    probe
                        .send(
                            &op_id,
                            &method,
                            &format!("{path}?{first}=a%00b"),
                            Some(&all),
                            None,
                            &[],
                        )
                        .await
                        .assert_problem(422);
                }
                for (name, bad) in [
                    ("limit", "0"),
                    ("cursor", "!"),
                    ("status", "bogus"),
                    ("resource_type", "bogus"),
                    ("review_due_before", "tomorrow"),
                    ("since", "yesterday"),
                ] {
                    if params.contains(&name) {
                        probe
                            .send(
                                &op_id,
                                &method,
                                &format!("{path}?{name}={bad}"),
                                Some(&all),
                                None,
                                &[],
                            )
                            .await
                            .assert_problem(400);
                    }
                }
            }
        }

        let mut problems = Vec::new();
        for (op, codes) in &documented {
            let seen = probe.observed.get(op).cloned().unwrap_or_default();
            for code in seen.difference(codes) {
                problems.push(format!("{op} returned {code}, which it does not document"));
            }
            for code in codes.difference(&seen) {
                if *code >= 400 && *code != 500 && *code != 503 {
                    problems.push(format!("{op} documents {code}, never provoked here"));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
);

fn check_body(subject: &str) -> Value {
    json!({"subject": subject, "modality": "video", "appointment_type": "therapy",
           "clinician_in_private_space": true})
}

on_both_engines!(
    every_documented_request_example_is_accepted,
    |app: TestApp| async move {
        // The webhook example is a receiver on this machine, for a service that allows it.
        let mut settings = app.settings.clone();
        app.stop().await;
        settings.webhook_allow_private = true;
        let app = spawn_with(settings, app._dir, app.engine).await;
        let t = "examples";
        let doc: Value = app
            .client
            .get(app.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let example = |template: &str, method: &str| -> Value {
            doc["paths"][template][method]["requestBody"]["content"]["application/json"]["example"]
                .clone()
        };
        let mut posted = 0;
        // In an order in which each example finds what it refers to.
        let order = [
            ("/v1/plans", "post"),
            ("/v1/plans/{id}", "put"),
            ("/v1/safety-protocols", "post"),
            ("/v1/safety-protocols/{id}", "put"),
            ("/v1/session-checks", "post"),
            ("/v1/session-checks/{id}/disconnections", "post"),
            ("/v1/recommendations", "post"),
            ("/v1/referrals", "post"),
            ("/v1/referrals/{id}/status", "post"),
            ("/v1/webhooks", "post"),
        ];
        let mut ids: BTreeMap<&str, String> = BTreeMap::new();
        for (template, method) in order {
            let body = example(template, method);
            assert!(
                body.is_object(),
                "{method} {template} has no request example"
            );
            let family = template.split('/').nth(2).unwrap();
            let path = match ids.get(family) {
                Some(id) => template.replace("{id}", id),
                None => template.to_string(),
            };
            let r = if method == "put" {
                app.put(&path, t, &body, "*").await
            } else {
                app.post(&path, t, &body).await
            };
            assert!(
                r.status.is_success(),
                "{method} {template} refused its own example: {}",
                r.body
            );
            if let Some(id) = r.body["id"].as_str() {
                ids.entry(family).or_insert_with(|| id.to_string());
            }
            posted += 1;
        }
        // Every operation with a body was covered.
        let with_body = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(path, _)| path.starts_with("/v1/"))
            .flat_map(|(_, item)| item.as_object().unwrap().values())
            .filter(|op| op.get("requestBody").is_some())
            .count();
        assert_eq!(posted, with_body);
    }
);
