//! Request parsing at the boundary: JSON bodies into domain types with every bad field named,
//! `If-Match`, pagination cursors.

use crate::domain::FieldError;
use crate::error::ApiError;
use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Largest accepted body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A request body type: how to fill gaps while collecting errors.
pub trait Input: DeserializeOwned + 'static {
    /// A complete, valid example; missing required fields are borrowed from it so that parsing
    /// can go on and report every other bad field too.
    fn template() -> Value;

    /// Top-level optional objects that may be left out but not sent as `null` (the document
    /// says so, and schema-driven clients never send one).
    const NOT_NULL: &'static [&'static str] = &[];
}

/// A JSON body parsed into `T`: 415 when not JSON, 413 over 1 MiB, 400 when not parsable JSON,
/// 422 with every bad field when well-formed but invalid.
///
/// Extraction itself never fails: the outcome is kept until the handler asks for it with
/// [`ValidJson::parse`] after checking the caller's scope, so that a caller without the scope
/// gets 403 whatever the body (401, then 403, then 400/413/415, then 404/422).
pub struct ValidJson<T>(Result<T, ApiError>);

impl<T> ValidJson<T> {
    /// The parsed body, or the problem with it.
    pub fn parse(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T: Input> FromRequest for ValidJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_ascii_lowercase());
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            Ok(ValidJson(
                read_json::<T>(content_type, declared_len, &mut payload).await,
            ))
        })
    }
}

async fn read_json<T: Input>(
    content_type: Option<String>,
    declared_len: Option<usize>,
    payload: &mut Payload,
) -> Result<T, ApiError> {
    {
        {
            let is_json = content_type.as_deref().is_some_and(|ct| {
                let essence = ct.split(';').next().unwrap_or("").trim();
                essence == "application/json" || essence.ends_with("+json")
            });
            if !is_json {
                return Err(ApiError::UnsupportedMediaType(
                    "send the body as application/json".into(),
                ));
            }
            let too_large = || ApiError::PayloadTooLarge("the body is over 1 MiB".into());
            if declared_len.is_some_and(|n| n > BODY_LIMIT) {
                return Err(too_large());
            }
            let mut body = Vec::with_capacity(declared_len.unwrap_or(1024).min(BODY_LIMIT));
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|_| ApiError::BadRequest("the body could not be read".into()))?;
                if body.len() + chunk.len() > BODY_LIMIT {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
            parse_value::<T>(value)
        }
    }
}

/// Query parameters parsed into `T`; like [`ValidJson`], a bad query (400) is kept until the
/// handler asks for it after the scope check.
pub struct QueryParams<T>(Result<T, ApiError>);

impl<T> QueryParams<T> {
    pub fn parse(self) -> Result<T, ApiError> {
        self.0
    }
}

impl<T: DeserializeOwned> FromRequest for QueryParams<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let parsed = actix_web::web::Query::<T>::from_query(req.query_string())
            .map(actix_web::web::Query::into_inner)
            .map_err(|e| {
                let msg = match &e {
                    actix_web::error::QueryPayloadError::Deserialize(d) => d.to_string(),
                    other => other.to_string(),
                };
                ApiError::BadRequest(format!("invalid query: {msg}"))
            });
        std::future::ready(Ok(QueryParams(parsed)))
    }
}

/// The id in the request's path (`{id}`, or `name`); a malformed id names nothing: 404.
pub fn path_id(req: &HttpRequest, name: &str) -> Result<uuid::Uuid, ApiError> {
    req.match_info()
        .get(name)
        .and_then(|s| s.parse().ok())
        .ok_or(ApiError::NotFound)
}

/// Deserialises `value` into `T`, collecting every structural error (wrong type, unknown
/// variant, unknown field, missing field) with its JSON path instead of stopping at the first.
pub fn parse_value<T: Input>(mut value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid("$", "the body must be a JSON object"));
    }
    let template = T::template();
    let mut errors: Vec<FieldError> = Vec::new();
    if let Value::Object(fields) = &mut value {
        for name in T::NOT_NULL {
            if fields.get(*name).is_some_and(Value::is_null) {
                fields.remove(*name);
                errors.push(FieldError::new(
                    *name,
                    "must be an object, or left out (not null)",
                ));
            }
        }
    }
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) if errors.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        let mut segments = path_segments(err.path());
        let message = err.inner().to_string();
        // serde reports a missing field at its parent: name the field itself.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            segments.push(Seg::Key(name.to_string()));
        }
        let field = render(&segments);
        if errors.iter().any(|e| field.starts_with(&e.field)) {
            // A consequence of an earlier repair (e.g. a required field of an optional object
            // that had to be dropped): drop the enclosing object instead and go on.
            segments.pop();
            if segments.is_empty() || !remove(&mut value, &segments) {
                break;
            }
            continue;
        }
        errors.push(FieldError::new(field, clean_message(&message)));
        // Repair the value so the next pass can find the next error: take the template's
        // value at the same place (first element for arrays), else drop the field.
        match lookup(&template, &segments) {
            Some(fill) if !message.starts_with("unknown field") => {
                set(&mut value, &segments, fill.clone());
            }
            _ => {
                if !remove(&mut value, &segments) {
                    break;
                }
            }
        }
    }
    Err(ApiError::Invalid(errors))
}

fn clean_message(m: &str) -> String {
    // serde_json appends " at line 1 column 2" for some errors; positions mean nothing in a Value.
    match m.find(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_segments(p: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    p.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

fn render(segments: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segments {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if s.is_empty() {
        "$".into()
    } else {
        s
    }
}

fn lookup<'a>(v: &'a Value, segments: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in segments {
        cur = match seg {
            Seg::Key(k) => cur.get(k)?,
            Seg::Index(_) => cur.get(0)?,
        };
    }
    Some(cur)
}

fn set(v: &mut Value, segments: &[Seg], new: Value) {
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = match seg {
            Seg::Key(k) => cur.get_mut(k),
            Seg::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (last, cur) {
        (Seg::Key(k), Value::Object(m)) => {
            m.insert(k.clone(), new);
        }
        (Seg::Index(i), Value::Array(a)) if *i < a.len() => a[*i] = new,
        _ => {}
    }
}

fn remove(v: &mut Value, segments: &[Seg]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = v;
    for seg in parents {
        let next = match seg {
            Seg::Key(k) => cur.get_mut(k),
            Seg::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur) {
        (Seg::Key(k), Value::Object(m)) => m.remove(k).is_some(),
        (Seg::Index(i), Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// The version named by `If-Match`: `Ok(None)` for `*`, 428 when absent. A value that is not
/// a version of ours can never match, so it becomes 412 at the update.
pub fn if_match(req: &HttpRequest, required: bool) -> Result<Option<i64>, ApiError> {
    let Some(raw) = req.headers().get(header::IF_MATCH) else {
        return if required {
            Err(ApiError::PreconditionRequired)
        } else {
            Ok(None)
        };
    };
    let s = raw.to_str().unwrap_or("").trim();
    if s == "*" {
        return Ok(None);
    }
    let s = s.strip_prefix("W/").unwrap_or(s);
    let v = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .parse::<i64>()
        .unwrap_or(-1);
    Ok(Some(v))
}

pub fn etag(version: i64) -> (header::HeaderName, String) {
    (header::ETAG, format!("\"{version}\""))
}

/// Page size: default 50, at most 200.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(
            "limit must be between 1 and 200".into(),
        )),
    }
}

/// Opaque cursors: base64url of the last row's sort key.
pub fn encode_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

pub fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad_cursor)
}

pub fn bad_cursor() -> ApiError {
    ApiError::BadRequest("cursor is not one this service issued".into())
}

/// An optional cursor holding one key (an id or a version).
pub fn parse_cursor<T: std::str::FromStr>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    cursor
        .map(|c| decode_cursor(c)?.parse::<T>().map_err(|_| bad_cursor()))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::plans::PlanRequest as PlanInput;
    use serde_json::json;

    fn fields(r: Result<PlanInput, ApiError>) -> Vec<String> {
        match r {
            Err(ApiError::Invalid(e)) => e.into_iter().map(|e| e.field).collect(),
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn every_structural_error_is_collected_with_its_path() {
        let v = json!({
            "subject": "",
            "preferences": {"default": ["video", "fax"]},
            "resources": {"connectivity": "great", "digital_skills": "basic", "colour": "red"},
            "barriers": [{"kind": "hearing"}, {"kind": "smell"}],
            "backup_contact": {"method": "telephone", "number": "0770"},
            "review_interval_days": 3
        });
        assert_eq!(
            fields(parse_value::<PlanInput>(v)),
            vec![
                "subject",
                "preferences.default[1]",
                "resources.connectivity",
                "resources.colour",
                "barriers[1].kind",
                "backup_contact.number",
                "review_interval_days",
            ]
        );
    }

    #[test]
    fn missing_fields_are_named_and_parsing_goes_on() {
        let v = json!({"preferences": {"default": ["pigeon"]}});
        assert_eq!(
            fields(parse_value::<PlanInput>(v)),
            vec!["preferences.default[0]", "subject", "resources"]
        );
    }

    #[test]
    fn the_body_must_be_an_object() {
        assert_eq!(fields(parse_value::<PlanInput>(json!([1, 2]))), vec!["$"]);
    }
}
