//! CDS Hooks over HTTP, called as an EHR would: JWTs signed with ES384 (and ES256) keys served
//! from a local JWKS, `aud` the endpoint URL, one `jti` per call.

use crate::fhir::save_sample;
use crate::helpers::*;
use crate::safety::protocol_body;
use actix_web::{web, App, HttpResponse, HttpServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use telemental::config::Origins;

const ES384_PEM: &[u8] = include_bytes!("../fixtures/es384.pem");
const ES384_JWK: &str = include_str!("../fixtures/es384.jwk.json");
const ES256_PEM: &[u8] = include_bytes!("../fixtures/es256.pem");
const ES256_JWK: &str = include_str!("../fixtures/es256.jwk.json");
const RS384_PEM: &[u8] = include_bytes!("../fixtures/rs384.pem");
const RS384_JWK: &str = include_str!("../fixtures/rs384.jwk.json");
pub const PUBLIC_URL: &str = "https://telemental.test";
pub const EHR: &str = "https://ehr.example";
const HOOK_PATH: &str = "/cds-services/telemental-modality";
const PM: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode";

/// A JWKS with the ES384, ES256 and RS384 test keys on a random local port.
async fn jwks_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let keys: Value = json!({"keys": [
        serde_json::from_str::<Value>(ES384_JWK).unwrap(),
        serde_json::from_str::<Value>(ES256_JWK).unwrap(),
        serde_json::from_str::<Value>(RS384_JWK).unwrap(),
    ]});
    let server = HttpServer::new(move || {
        let keys = keys.clone();
        App::new().route(
            "/jwks.json",
            web::get().to(move || {
                let keys = keys.clone();
                async move { HttpResponse::Ok().json(keys) }
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

/// The app with a JWKS, a public URL, an allowed browser origin and an issuer allow-list.
pub async fn spawn_cds(engine: Engine) -> Option<TestApp> {
    let (mut settings, dir) = fresh_settings(engine).await?;
    settings.jwks_url = Some(jwks_server().await);
    settings.public_url = Some(PUBLIC_URL.into());
    settings.cds_allowed_origins = Origins(vec![EHR.into()]);
    settings.cds_issuers = vec![EHR.into()];
    Some(spawn_with(settings, dir, engine).await)
}

macro_rules! cds_on_both_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[actix_web::test]
            async fn sqlite() {
                let app = spawn_cds(Engine::Sqlite).await.expect("sqlite app");
                ($body)(app).await;
            }
            #[actix_web::test]
            async fn postgres() {
                let Some(app) = spawn_cds(Engine::Postgres).await else {
                    eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: PostgreSQL case skipped");
                    return;
                };
                ($body)(app).await;
            }
        }
    };
}

/// An EHR's claims for a call to `path`: a fresh `jti` each time.
pub fn ehr_claims(tenant: &str, path: &str) -> Value {
    json!({"iss": EHR, "sub": "ehr-client-1", "aud": format!("{PUBLIC_URL}{path}"),
           "exp": now() + 300, "iat": now(), "jti": uuid::Uuid::new_v4().to_string(),
           "tenant": tenant})
}

/// Signs an EHR's claims with one of the test keys.
type Signer = fn(&Value) -> String;

pub fn es384(claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("test-es384".into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_pem(ES384_PEM).unwrap()).unwrap()
}

fn rs384(claims: &Value) -> String {
    let mut h = Header::new(Algorithm::RS384);
    h.kid = Some("test-rs384".into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_rsa_pem(RS384_PEM).unwrap()).unwrap()
}

fn es256(claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("test-es256".into());
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_pem(ES256_PEM).unwrap()).unwrap()
}

pub fn appointment(code: &str) -> Value {
    json!({"resourceType": "Appointment", "id": "apt-1", "status": "proposed",
           "serviceType": [{"coding": [{"system": PM, "code": code}]}],
           "start": "2026-12-03T10:00:00Z", "end": "2026-12-03T10:50:00Z",
           "participant": [{"actor": {"reference": "Patient/123"}, "status": "needs-action"},
                           {"actor": {"reference": "PractitionerRole/9"}, "status": "accepted"}]})
}

pub fn hook_request(patient: &str, appointments: Vec<Value>) -> Value {
    json!({"hook": "appointment-book", "hookInstance": uuid::Uuid::new_v4().to_string(),
           "fhirServer": "https://ehr.example/fhir",
           "context": {"userId": "PractitionerRole/9", "patientId": patient,
                       "appointments": {"resourceType": "Bundle", "type": "collection",
                                        "entry": appointments.into_iter().map(|a| json!({"resource": a})).collect::<Vec<_>>()}}})
}

async fn call(app: &TestApp, path: &str, token: &str, body: Option<&Value>) -> Reply {
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    app.call_with(method, path, token, body, &[]).await
}

async fn hook(app: &TestApp, tenant: &str, body: &Value) -> Reply {
    call(
        app,
        HOOK_PATH,
        &es384(&ehr_claims(tenant, HOOK_PATH)),
        Some(body),
    )
    .await
}

/// The FHIR resources inside the cards, saved for the validator.
fn save_card_resources(cards: &Value) {
    for card in cards.as_array().unwrap() {
        for s in card["suggestions"].as_array().into_iter().flatten() {
            for a in s["actions"].as_array().unwrap() {
                save_sample("cds", &a["resource"]);
            }
        }
    }
}

/// No null, "", [] or {} anywhere (CDS Hooks omits optional fields).
fn assert_no_empty(v: &Value, path: &str) {
    match v {
        Value::Null => panic!("{path} is null"),
        Value::String(s) => assert!(!s.is_empty(), "{path} is empty"),
        Value::Array(a) => {
            assert!(!a.is_empty(), "{path} is []");
            for (i, x) in a.iter().enumerate() {
                assert_no_empty(x, &format!("{path}[{i}]"));
            }
        }
        Value::Object(o) => {
            assert!(!o.is_empty(), "{path} is {{}}");
            for (k, x) in o {
                assert_no_empty(x, &format!("{path}.{k}"));
            }
        }
        _ => {}
    }
}

fn assert_card(card: &Value) {
    assert_no_empty(card, "card");
    assert!(card["summary"].as_str().unwrap().chars().count() < 140);
    assert!(["info", "warning", "critical"].contains(&card["indicator"].as_str().unwrap()));
    assert!(card["source"]["label"].is_string());
    assert!(uuid::Uuid::parse_str(card["uuid"].as_str().unwrap()).is_ok());
    let rules = card["extension"]["org.telemental.guideline-rules"]
        .as_array()
        .unwrap();
    for r in rules {
        assert!(card["detail"]
            .as_str()
            .unwrap()
            .contains(r.as_str().unwrap()));
    }
    if card.get("suggestions").is_some() {
        assert_eq!(card["selectionBehavior"], "at-most-one");
        for s in card["suggestions"].as_array().unwrap() {
            assert!(s["label"].is_string() && s["uuid"].is_string());
            for a in s["actions"].as_array().unwrap() {
                assert!(["create", "update"].contains(&a["type"].as_str().unwrap()));
                assert!(a["description"].is_string() && a["resource"]["resourceType"].is_string());
            }
        }
    }
    for o in card["overrideReasons"].as_array().into_iter().flatten() {
        assert!(o["display"].is_string() && o["code"].is_string());
    }
}

cds_on_both_engines!(
    discovery_lists_the_appointment_book_service,
    |app: TestApp| async move {
        let r = call(
            &app,
            "/cds-services",
            &es384(&ehr_claims("t1", "/cds-services")),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let s = &r.body["services"][0];
        assert_eq!(s["hook"], "appointment-book");
        assert_eq!(s["id"], "telemental-modality");
        assert!(s["title"].is_string() && s["description"].is_string());
        assert_no_empty(&r.body, "discovery");
        let r = Reply::from(
            app.client
                .get(app.url("/cds-services"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        r.assert_problem(401);
    }
);

cds_on_both_engines!(
    an_unsuitable_booking_gets_a_warning_with_suggestions,
    |app: TestApp| async move {
        // plan_body: video, telephone, in person; a hearing barrier makes telephone unsuitable.
        assert_eq!(
            app.post("/v1/plans", "t1", &plan_body("Patient/123"))
                .await
                .status,
            201
        );
        let mut protocol = protocol_body("Patient/123", "low");
        protocol["agreed_with_service_user_on"] =
            json!(chrono::Utc::now().date_naive().to_string());
        assert_eq!(
            app.post("/v1/safety-protocols", "t1", &protocol)
                .await
                .status,
            201
        );

        let r = hook(&app, "t1", &hook_request("123", vec![appointment("PHONE")])).await;
        assert_eq!(r.status, 200, "{}", r.body);
        save_card_resources(&r.body["cards"]);
        let cards = r.body["cards"].as_array().unwrap();
        assert_eq!(cards.len(), 1, "{}", r.body);
        let card = &cards[0];
        assert_card(card);
        assert_eq!(card["indicator"], "warning");
        assert!(card["summary"]
            .as_str()
            .unwrap()
            .starts_with("Telephone is not suitable"));
        assert!(card["extension"]["org.telemental.guideline-rules"]
            .as_array()
            .unwrap()
            .contains(&json!("FLEX-5")));
        assert!(card["detail"].as_str().unwrap().contains("FLEX-5"));
        let suggestions = card["suggestions"].as_array().unwrap();
        assert_eq!(suggestions.len(), 2);
        let rebook = &suggestions[0]["actions"][0];
        assert_eq!(rebook["type"], "update");
        assert_eq!(rebook["resource"]["id"], "apt-1");
        let codes: Vec<&str> = rebook["resource"]["serviceType"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| t["coding"].as_array().unwrap())
            .map(|c| c["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, ["VIDEOCONF"]);
        let referral = &suggestions[1]["actions"][0];
        assert_eq!(referral["type"], "create");
        assert_eq!(referral["resource"]["resourceType"], "ServiceRequest");
        assert_eq!(
            referral["resource"]["orderDetail"][0]["coding"][0]["code"],
            "FACE"
        );
        assert_eq!(card["overrideReasons"].as_array().unwrap().len(), 4);

        // The booking that fits (video, the first choice): no card at all.
        let r = hook(
            &app,
            "t1",
            &hook_request("123", vec![appointment("VIDEOCONF")]),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, json!({"cards": []}));

        // Several appointments: one card per misfit; the issued cards are audited with the patient.
        let mut second = appointment("ONLINEWRIT");
        second["id"] = json!("apt-2");
        let r = hook(
            &app,
            "t1",
            &hook_request(
                "123",
                vec![appointment("VIDEOCONF"), second, appointment("PHONE")],
            ),
        )
        .await;
        save_card_resources(&r.body["cards"]);
        let cards = r.body["cards"].as_array().unwrap();
        assert_eq!(cards.len(), 2, "{}", r.body);
        assert!(cards[0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Secure messaging is not suitable"));
        let audit = app
            .get(
                "/v1/audit-events?subject=Patient/123&resource_type=cds_card",
                "t1",
            )
            .await;
        let issued = audit.body["items"].as_array().unwrap();
        assert_eq!(issued.len(), 3);
        assert!(issued
            .iter()
            .all(|e| e["action"] == "issue" && e["actor"] == "ehr-client-1"));
        // Another tenant has no plan for Patient/123: FLEX-1 and the prerequisites instead.
        let r = hook(
            &app,
            "t2",
            &hook_request("123", vec![appointment("VIDEOCONF")]),
        )
        .await;
        let cards = r.body["cards"].as_array().unwrap();
        assert_eq!(cards[0]["indicator"], "warning");
        let info: Vec<&Value> = cards.iter().filter(|c| c["indicator"] == "info").collect();
        assert_eq!(info.len(), 3, "{}", r.body);
        for c in cards {
            assert_card(c);
        }
        save_card_resources(&r.body["cards"]);
    }
);

cds_on_both_engines!(
    a_context_without_what_is_needed_is_refused,
    |app: TestApp| async move {
        let mut no_patient = hook_request("123", vec![appointment("PHONE")]);
        no_patient["context"]
            .as_object_mut()
            .unwrap()
            .remove("patientId");
        let r = hook(&app, "t1", &no_patient).await;
        r.assert_problem(412);
        assert!(r.body["detail"].as_str().unwrap().contains("patientId"));
        let mut no_appointments = hook_request("123", vec![]);
        no_appointments["context"]
            .as_object_mut()
            .unwrap()
            .remove("appointments");
        hook(&app, "t1", &no_appointments).await.assert_problem(412);
        hook(&app, "t1", &hook_request("123", vec![]))
            .await
            .assert_problem(412);
        let mut no_context = hook_request("123", vec![]);
        no_context.as_object_mut().unwrap().remove("context");
        hook(&app, "t1", &no_context).await.assert_problem(412);
        // Not this hook, or not a hook call at all.
        let mut other = hook_request("123", vec![appointment("PHONE")]);
        other["hook"] = json!("patient-view");
        let r = hook(&app, "t1", &other).await;
        r.assert_problem(422);
        assert_eq!(r.error_fields(), vec!["hook"]);
        let r = hook(&app, "t1", &json!({"context": {}})).await;
        r.assert_problem(422);
        let r = app
            .client
            .post(app.url(HOOK_PATH))
            .bearer_auth(es384(&ehr_claims("t1", HOOK_PATH)))
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        Reply::from(r).await.assert_problem(415);
    }
);

cds_on_both_engines!(
    ehr_tokens_are_checked_claim_by_claim,
    |app: TestApp| async move {
        let body = hook_request("123", vec![appointment("FACE")]);
        let good = ehr_claims("t1", HOOK_PATH);
        let t = es384(&good);
        assert_eq!(call(&app, HOOK_PATH, &t, Some(&body)).await.status, 200);
        // The same token again: a replayed jti.
        let r = call(&app, HOOK_PATH, &t, Some(&body)).await;
        r.assert_problem(401);
        assert!(r.body["detail"].as_str().unwrap().contains("jti"));
        // Discovery and feedback refuse a replay too.
        let feedback = "/cds-services/telemental-modality/feedback";
        let fb = json!({"feedback": [{"card": uuid::Uuid::new_v4(), "outcome": "accepted",
                                      "outcomeTimestamp": "2026-11-29T10:00:00Z"}]});
        for (path, body) in [("/cds-services", None), (feedback, Some(&fb))] {
            let t = es384(&ehr_claims("t1", path));
            assert_eq!(call(&app, path, &t, body).await.status, 200, "{path}");
            call(&app, path, &t, body).await.assert_problem(401);
        }
        // aud may be the configured audience; ES256 and RS384 keys work too.
        let mut c = ehr_claims("t1", HOOK_PATH);
        c["aud"] = json!("telemental");
        assert_eq!(
            call(&app, HOOK_PATH, &es384(&c), Some(&body)).await.status,
            200
        );
        assert_eq!(
            call(
                &app,
                HOOK_PATH,
                &es256(&ehr_claims("t1", HOOK_PATH)),
                Some(&body)
            )
            .await
            .status,
            200
        );
        assert_eq!(
            call(
                &app,
                HOOK_PATH,
                &rs384(&ehr_claims("t1", HOOK_PATH)),
                Some(&body)
            )
            .await
            .status,
            200
        );

        let with = |k: &str, v: Value| {
            let mut c = ehr_claims("t1", HOOK_PATH);
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = ehr_claims("t1", HOOK_PATH);
            c.as_object_mut().unwrap().remove(k);
            c
        };
        let cases: Vec<(&str, String)> = vec![
            (
                "another endpoint's aud",
                es384(&with("aud", json!(format!("{PUBLIC_URL}/cds-services")))),
            ),
            (
                "another service's aud",
                es384(&with(
                    "aud",
                    json!("https://other.example/cds-services/telemental-modality"),
                )),
            ),
            ("expired", es384(&with("exp", json!(now() - 120)))),
            (
                "lives over an hour",
                es384(&with("exp", json!(now() + 7200))),
            ),
            (
                "issuer not allowed",
                es384(&with("iss", json!("https://evil.example"))),
            ),
            ("no jti", es384(&without("jti"))),
            ("no tenant", es384(&without("tenant"))),
            ("no iss", es384(&without("iss"))),
            // An algorithm CDS Hooks clients may not use, though the key could verify it.
            ("PS384", {
                let mut h = Header::new(Algorithm::PS384);
                h.kid = Some("test-rs384".into());
                jsonwebtoken::encode(
                    &h,
                    &ehr_claims("t1", HOOK_PATH),
                    &EncodingKey::from_rsa_pem(RS384_PEM).unwrap(),
                )
                .unwrap()
            }),
            // The /v1 HS256 token is not an EHR token.
            ("HS256", token("t1", ALL_SCOPES)),
            ("HS256 with CDS claims", mint(&ehr_claims("t1", HOOK_PATH))),
        ];
        for (what, t) in cases {
            let r = call(&app, HOOK_PATH, &t, Some(&body)).await;
            assert_eq!(r.status, 401, "{what}: {}", r.body);
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|h| h.starts_with("Bearer")),
                "{what}"
            );
        }
        // A signature that is not the token's own is refused, whichever the algorithm (ECDSA
        // signatures are checked on the signature pool, RSA ones on the worker): each token's
        // signature replaced by that of another token from the same key.
        let signers: [(&str, Signer); 3] = [("ES384", es384), ("ES256", es256), ("RS384", rs384)];
        for (alg, sign) in signers {
            let genuine = sign(&ehr_claims("t1", HOOK_PATH));
            let other = sign(&ehr_claims("t1", HOOK_PATH));
            let (signed, _) = genuine.rsplit_once('.').unwrap();
            let (_, signature) = other.rsplit_once('.').unwrap();
            let r = call(
                &app,
                HOOK_PATH,
                &format!("{signed}.{signature}"),
                Some(&body),
            )
            .await;
            r.assert_problem(401);
            assert!(
                r.body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("signature does not verify"),
                "{alg}: {}",
                r.body
            );
            // The genuine token still works: the refused call did not use up its jti.
            assert_eq!(
                call(&app, HOOK_PATH, &genuine, Some(&body)).await.status,
                200,
                "{alg}"
            );
        }
        // The tenant claim is the tenant: nothing of t1 is visible to a t2 token (no plan: FLEX-1).
        app.post("/v1/plans", "t1", &plan_body("Patient/123")).await;
        let r = hook(
            &app,
            "t2",
            &hook_request("123", vec![appointment("VIDEOCONF")]),
        )
        .await;
        assert!(r.body["cards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["detail"].as_str().unwrap().contains("FLEX-1")));
    }
);

cds_on_both_engines!(
    feedback_is_accepted_and_audited,
    |app: TestApp| async move {
        let r = hook(
            &app,
            "t1",
            &hook_request("123", vec![appointment("VIDEOCONF")]),
        )
        .await;
        let cards = r.body["cards"].as_array().unwrap();
        assert!(cards.len() >= 2);
        let (a, b) = (
            cards[0]["uuid"].as_str().unwrap(),
            cards[1]["uuid"].as_str().unwrap(),
        );
        let suggestion = cards[0]["suggestions"][0]["uuid"].as_str().unwrap();
        let path = "/cds-services/telemental-modality/feedback";
        let fb = json!({"feedback": [
        {"card": a, "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
         "outcomeTimestamp": "2026-11-29T10:00:00Z"},
        {"card": b, "outcome": "overridden",
         "overrideReason": {"reason": {"system": "https://telemental.org/fhir/CodeSystem/cds-override-reason",
                                       "code": "clinical-judgement", "display": "Clinical judgement"},
                            "userComment": "discussed with the service user"},
         "outcomeTimestamp": "2026-11-29T10:01:00Z"}]});
        let r = call(&app, path, &es384(&ehr_claims("t1", path)), Some(&fb)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let audit = app
            .get("/v1/audit-events?resource_type=cds_card", "t1")
            .await;
        let items = audit.body["items"].as_array().unwrap();
        let outcome = |id: &str, action: &str| {
            items
                .iter()
                .any(|e| e["resource_id"] == id && e["action"] == action)
        };
        assert!(outcome(a, "feedback_accepted"), "{}", audit.body);
        assert!(outcome(b, "feedback_overridden"));
        // The card was issued for Patient/123: feedback can be traced to the patient.
        assert!(items.iter().any(|e| e["resource_id"] == a
            && e["action"] == "issue"
            && e["subject"] == "Patient/123"));
        // The free-text comment is stored nowhere the API shows.
        assert!(!audit.body.to_string().contains("discussed with"));
        // Bad feedback.
        for bad in [
            json!({"feedback": []}),
            json!({"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]}),
            json!({"feedback": [{"card": a, "outcome": "ignored", "outcomeTimestamp": "2026-11-29T10:00:00Z"}]}),
        ] {
            call(&app, path, &es384(&ehr_claims("t1", path)), Some(&bad))
                .await
                .assert_problem(422);
        }
        // A token for the hook URL is not one for the feedback URL.
        call(&app, path, &es384(&ehr_claims("t1", HOOK_PATH)), Some(&fb))
            .await
            .assert_problem(401);
    }
);

cds_on_both_engines!(
    browsers_get_cors_from_allowed_origins_only,
    |app: TestApp| async move {
        let preflight = |origin: &'static str| {
            app.client
                .request(Method::OPTIONS, app.url(HOOK_PATH))
                .header("Origin", origin)
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "authorization, content-type",
                )
                .send()
        };
        let r = preflight(EHR).await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["access-control-allow-origin"], EHR);
        assert!(r.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST"));
        assert!(r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase()
            .contains("authorization"));
        let r = preflight("https://evil.example").await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("access-control-allow-origin").is_none());
        // Actual calls: the header for an allowed origin only.
        let send = |origin: &'static str| {
            app.client
                .get(app.url("/cds-services"))
                .bearer_auth(es384(&ehr_claims("t1", "/cds-services")))
                .header("Origin", origin)
                .send()
        };
        let r = send(EHR).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["access-control-allow-origin"], EHR);
        let r = send("https://evil.example").await.unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none());
        // Not on the rest of the API.
        let r = app
            .client
            .request(Method::OPTIONS, app.url("/v1/plans"))
            .header("Origin", EHR)
            .header("Access-Control-Request-Method", "GET")
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
);

/// Two instances on one PostgreSQL: a token used on one is refused on the other.
#[actix_web::test]
async fn a_replay_is_refused_by_another_instance_on_the_same_database() {
    let Some(first) = spawn_cds(Engine::Postgres).await else {
        eprintln!("TELEMENTAL_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let mut settings = first.settings.clone();
    settings.jwks_url = Some(jwks_server().await);
    let second = spawn_with(settings, None, Engine::Postgres).await;
    let body = hook_request("123", vec![appointment("FACE")]);
    let t = es384(&ehr_claims("t1", HOOK_PATH));
    assert_eq!(call(&first, HOOK_PATH, &t, Some(&body)).await.status, 200);
    call(&second, HOOK_PATH, &t, Some(&body))
        .await
        .assert_problem(401);
    // Concurrent first uses of one token on both: exactly one succeeds.
    let t = es384(&ehr_claims("t1", HOOK_PATH));
    let (a, b) = tokio::join!(
        call(&first, HOOK_PATH, &t, Some(&body)),
        call(&second, HOOK_PATH, &t, Some(&body))
    );
    let ok = [a.status, b.status]
        .iter()
        .filter(|s| s.as_u16() == 200)
        .count();
    assert_eq!(ok, 1, "{} {}", a.status, b.status);
}

/// Seen token ids are kept until they expire, then pruned and usable again; the group-commit
/// writer refuses a replay within one batch too.
#[actix_web::test]
async fn expired_token_ids_are_pruned() {
    use telemental::cds::auth::prune_jtis;
    use telemental::store::writer::{SeenToken, Writer};
    use telemental::store::{Store, Ts};
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let Some((settings, _dir)) = fresh_settings(engine).await else {
            continue;
        };
        let store = Store::connect(&settings.database_url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let writer = Writer::start(store.clone()).unwrap();
        let past = Ts::from(chrono::Utc::now() - chrono::Duration::minutes(5));
        let future = Ts::from(chrono::Utc::now() + chrono::Duration::minutes(5));
        let seen = |iss: &str, jti: &str, keep_until: Ts| {
            let w = writer.clone();
            let t = SeenToken {
                issuer: iss.into(),
                jti: jti.into(),
                keep_until,
            };
            async move { w.record(Some(t), Vec::new()).await.unwrap() }
        };
        assert!(seen(EHR, "old", past).await);
        assert!(seen(EHR, "live", future).await);
        assert!(!seen(EHR, "live", future).await, "{engine:?}");
        // Same jti from another issuer is another token.
        assert!(seen("https://other.example", "live", future).await);
        // Concurrent uses of one token (likely one batch): exactly one is fresh.
        let (a, b, c) = tokio::join!(
            seen(EHR, "burst", future),
            seen(EHR, "burst", future),
            seen(EHR, "burst", future)
        );
        assert_eq!([a, b, c].iter().filter(|f| **f).count(), 1, "{engine:?}");
        assert_eq!(
            prune_jtis(&store, Ts::now()).await.unwrap(),
            1,
            "{engine:?}"
        );
        // An expired row not yet pruned is taken over by a new use.
        assert!(seen(EHR, "stale", past).await);
        assert!(seen(EHR, "stale", future).await);
        assert!(seen(EHR, "old", future).await);
        store.close().await;
    }
}
