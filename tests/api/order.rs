//! The order of refusals is the same for every operation: 401 (no valid token), then 403 (the
//! token lacks the operation's scope) whatever the body, query or path, then problems with the
//! request itself. The operations are taken from the OpenAPI document, so a new one is covered
//! without editing this test.

use crate::helpers::*;
use crate::on_both_engines;
use reqwest::Method;
use serde_json::Value;

/// Every operation of the document: (method, path template, the scopes it needs, whether it
/// takes a body, whether it takes query parameters).
fn operations() -> Vec<(Method, String, Vec<String>, bool, bool)> {
    let doc = serde_json::to_value(telemental::openapi()).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            let Ok(method) = m.to_uppercase().parse::<Method>() else {
                continue;
            };
            let scopes: Vec<String> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("bearer"))
                .flat_map(|s| s.as_array().cloned().unwrap_or_default())
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            let has_body = op.get("requestBody").is_some();
            let has_query = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            out.push((method, path.clone(), scopes, has_body, has_query));
        }
    }
    out
}

/// A request that is wrong in every other way: malformed ids in the path, a bad query, a body
/// that is neither JSON by content type nor by content.
async fn garbage(app: &TestApp, method: &Method, path: &str, bearer: Option<&str>) -> Reply {
    let path = path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                "not-an-id"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let mut req = app
        .client
        .request(
            method.clone(),
            app.url(&format!("{path}?limit=0&cursor=%25%25")),
        )
        .header("content-type", "text/plain")
        .body("{not json");
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    Reply::from(req.send().await.unwrap()).await
}

on_both_engines!(
    without_the_scope_every_operation_answers_403_whatever_else_is_wrong,
    |app: TestApp| async move {
        let ops = operations();
        assert!(ops.len() > 20, "the document lists the operations");
        // A valid token with a scope that no operation needs.
        let wrong = token("t1", "nothing:at_all");
        let mut checked = 0;
        for (method, path, scopes, _, _) in &ops {
            if scopes.is_empty() || !path.starts_with("/v1/") {
                continue;
            }
            let r = garbage(&app, method, path, None).await;
            assert_eq!(r.status, 401, "{method} {path} without a token: {}", r.body);
            let r = garbage(&app, method, path, Some(&wrong)).await;
            assert_eq!(
                r.status, 403,
                "{method} {path} without its scope: {}",
                r.body
            );
            r.assert_problem(403);
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} operations checked");
    }
);

on_both_engines!(
    with_the_scope_a_bad_request_is_400_or_415_before_an_unknown_id_is_404,
    |app: TestApp| async move {
        let all = token("t1", ALL_SCOPES);
        for (method, path, scopes, has_body, has_query) in operations() {
            if scopes.is_empty() || !path.starts_with("/v1/") {
                continue;
            }
            let r = garbage(&app, &method, &path, Some(&all)).await;
            let status = r.status.as_u16();
            // A body that is not JSON is 415 (a PUT without If-Match is 428 first); a bad
            // query is 400; otherwise the malformed id names nothing.
            let expected: &[u16] = match (has_body, has_query) {
                (true, _) if method == Method::PUT => &[428],
                (true, _) => &[415],
                (false, true) => &[400],
                (false, false) if path.contains('{') => &[404],
                (false, false) => &[200],
            };
            assert!(
                expected.contains(&status),
                "{method} {path}: {status} {}",
                r.body
            );
            let _: &Value = &r.body;
        }
    }
);
