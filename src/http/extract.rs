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

/// How long a client may take to send a whole body (`TELEMENTAL_BODY_TIMEOUT`), as app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Years a date or instant may have, in any field or query parameter. Wide enough for every
/// clinical date, narrow enough that both engines store and compare it the same way
/// (PostgreSQL refuses years before 4713 BC; SQLite's fixed-width text sorts only 4-digit years).
pub const YEARS: std::ops::RangeInclusive<i64> = 1900..=9999;

/// Parses a body as JSON, refusing a key repeated within one object (422 naming it; serde
/// would silently keep the last one) and anything that is not one JSON value (400).
pub fn strict_json(body: &[u8]) -> Result<Value, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize::<_, Strict>(&mut de);
    match parsed {
        Ok(Strict(v)) => {
            de.end()
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
            Ok(v)
        }
        Err(e) => {
            let message = e.inner().to_string();
            if let Some(key) = message
                .strip_prefix(DUPLICATE)
                .and_then(|rest| rest.split('`').next())
            {
                let mut segments = path_segments(e.path());
                segments.push(Seg::Key(key.to_string()));
                return Err(ApiError::invalid(
                    render(&segments),
                    "this key appears more than once in its object",
                ));
            }
            Err(ApiError::BadRequest(format!(
                "the body is not valid JSON: {message}"
            )))
        }
    }
}

const DUPLICATE: &str = "duplicate key `";

/// A JSON value whose objects have no repeated key.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("{DUPLICATE}{key}`")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Checks every string of a body, whatever field it is in (so new fields are covered too):
/// no NUL character (PostgreSQL cannot store one in text), and a string that is a date or an
/// instant (`YYYY-MM-DD…`) must have a year in [`YEARS`].
pub fn boundary_errors(value: &Value) -> Vec<FieldError> {
    fn walk(v: &Value, path: &mut Vec<Seg>, errors: &mut Vec<FieldError>) {
        match v {
            Value::String(s) => {
                if let Some(m) = text_problem(s) {
                    errors.push(FieldError::new(render(path), m));
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(item, path, errors);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    path.push(Seg::Key(k.clone()));
                    if k.contains('\0') {
                        errors.push(FieldError::new(render(path), NUL_MESSAGE));
                    } else {
                        walk(item, path, errors);
                    }
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut errors = Vec::new();
    walk(value, &mut Vec::new(), &mut errors);
    errors
}

const NUL_MESSAGE: &str = "must not contain the NUL character (\\u0000)";

/// What is wrong with one text value from a client, if anything.
fn text_problem(s: &str) -> Option<String> {
    if s.contains('\0') {
        return Some(NUL_MESSAGE.into());
    }
    match date_year(s) {
        Some(y) if !YEARS.contains(&y) => Some(format!(
            "dates must have a year from {} to {}",
            YEARS.start(),
            YEARS.end()
        )),
        _ => None,
    }
}

/// The year of a string shaped like a date or an instant (`[+-]YYYY…-MM-DD`, alone or followed
/// by a time), else `None`.
fn date_year(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let sign_len = usize::from(matches!(b.first(), Some(b'+') | Some(b'-')));
    let digits = b[sign_len..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let rest = &b[sign_len + digits..];
    let shaped = digits >= 4
        && rest.len() >= 6
        && rest[0] == b'-'
        && rest[1..3].iter().all(u8::is_ascii_digit)
        && rest[3] == b'-'
        && rest[4..6].iter().all(u8::is_ascii_digit)
        && (rest.len() == 6 || matches!(rest[6], b'T' | b't' | b' '));
    if !shaped {
        return None;
    }
    let year: i64 = s[sign_len..sign_len + digits].parse().unwrap_or(i64::MAX);
    Some(if b.first() == Some(&b'-') {
        -year
    } else {
        year
    })
}

/// The same checks for a query string, applied to every parameter of every `/v1` call (the
/// [`crate::auth::Caller`] extractor runs it): 422 naming the parameter.
pub fn check_query(query: &str) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k.contains('\0') {
            errors.push(FieldError::new("query", NUL_MESSAGE));
        } else if let Some(m) = text_problem(&v) {
            errors.push(FieldError::new(k.into_owned(), m));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errors))
    }
}

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
        let (declared_len, body_timeout) = length_and_timeout(req);
        let mut payload = payload.take();
        Box::pin(async move {
            Ok(ValidJson(
                read_json::<T>(content_type, declared_len, body_timeout, &mut payload).await,
            ))
        })
    }
}

async fn read_json<T: Input>(
    content_type: Option<String>,
    declared_len: Option<usize>,
    body_timeout: std::time::Duration,
    payload: &mut Payload,
) -> Result<T, ApiError> {
    let is_json = content_type.as_deref().is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence == "application/json" || essence.ends_with("+json")
    });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "send the body as application/json".into(),
        ));
    }
    let body = read_body(
        declared_len,
        body_timeout,
        payload,
        BODY_LIMIT,
        "the body is over 1 MiB",
    )
    .await?;
    let value = strict_json(&body)?;
    let errors = boundary_errors(&value);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    parse_value::<T>(value)
}

/// A request's declared `Content-Length` (when it parses) and how long its body may take
/// (`TELEMENTAL_BODY_TIMEOUT`, as app data).
fn length_and_timeout(req: &HttpRequest) -> (Option<usize>, std::time::Duration) {
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<usize>().ok());
    let body_timeout = req
        .app_data::<actix_web::web::Data<BodyTimeout>>()
        .map(|t| t.0)
        .unwrap_or(DEFAULT_BODY_TIMEOUT);
    (declared_len, body_timeout)
}

/// Reads a whole body of at most `limit` bytes (413 with `too_large` beyond), within
/// `body_timeout`: a client that stalls mid-body gets 408 (and the connection is closed)
/// instead of holding it open for ever.
async fn read_body(
    declared_len: Option<usize>,
    body_timeout: std::time::Duration,
    payload: &mut Payload,
    limit: usize,
    too_large: &str,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(too_large.into());
    if declared_len.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared_len.unwrap_or(1024).min(limit));
    let read = async {
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|_| ApiError::BadRequest("the body could not be read".into()))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(body_timeout, read).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ApiError::RequestTimeout(format!(
                "the body did not arrive within {} s",
                body_timeout.as_secs_f64()
            )))
        }
    }
    Ok(body)
}

/// Largest form body (a FHIR search's parameters).
pub const FORM_LIMIT: usize = 64 * 1024;

/// An `application/x-www-form-urlencoded` body (a FHIR search by POST), as text: 415 for any
/// other declared type (an empty body may declare none), 413 over 64 KiB, 408 when it stalls,
/// 400 when not UTF-8. Like [`ValidJson`], the outcome is kept until the handler asks for it
/// after the scope check.
pub struct FormBody(Result<String, ApiError>);

impl FormBody {
    /// The body's text, or the problem with it.
    pub fn parse(self) -> Result<String, ApiError> {
        self.0
    }
}

impl FromRequest for FormBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().map(str::to_ascii_lowercase));
        let (declared_len, body_timeout) = length_and_timeout(req);
        let mut payload = payload.take();
        Box::pin(async move {
            let read = async {
                let refused = || {
                    ApiError::UnsupportedMediaType(
                        "send the search parameters as application/x-www-form-urlencoded".into(),
                    )
                };
                let declared_form = match &content_type {
                    None => false,
                    Some(Ok(ct))
                        if ct.split(';').next().unwrap_or("").trim()
                            == "application/x-www-form-urlencoded" =>
                    {
                        true
                    }
                    Some(_) => return Err(refused()),
                };
                let body = read_body(
                    declared_len,
                    body_timeout,
                    &mut payload,
                    FORM_LIMIT,
                    "the form is over 64 KiB",
                )
                .await?;
                if !declared_form && !body.is_empty() {
                    return Err(refused());
                }
                String::from_utf8(body)
                    .map_err(|_| ApiError::BadRequest("the form is not UTF-8".into()))
            };
            Ok(FormBody(read.await))
        })
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
        // The generic boundary checks of every parameter first (422 naming it), then the
        // parameters this operation knows (400).
        if let Err(e) = check_query(req.query_string()) {
            return std::future::ready(Ok(QueryParams(Err(e))));
        }
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
    // The usual case, a valid body: read from the value as it is, without the copy each pass
    // of the repairs below takes.
    if errors.is_empty() {
        if let Ok(v) = T::deserialize(&value) {
            return Ok(v);
        }
    }
    let template = T::template();
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
    // RFC 9110 §13.1.1: If-Match uses the strong comparison, so a weak tag never matches.
    if s.starts_with("W/") {
        return Ok(Some(-1));
    }
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
    fn repeated_keys_are_refused_with_their_path() {
        let r = strict_json(br#"{"a": {"b": 1, "c": [{"d": 1, "d": 2}]}}"#);
        match r {
            Err(ApiError::Invalid(e)) => assert_eq!(e[0].field, "a.c[0].d"),
            other => panic!("{other:?}"),
        }
        match strict_json(br#"{"subject": "x", "subject": "y"}"#) {
            Err(ApiError::Invalid(e)) => assert_eq!(e[0].field, "subject"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(strict_json(b"{} x"), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            strict_json(b"{\"a\":"),
            Err(ApiError::BadRequest(_))
        ));
        assert_eq!(
            strict_json(br#"{"a": [1, 2.5, null, true, "s"]}"#).unwrap(),
            json!({"a": [1, 2.5, null, true, "s"]})
        );
    }

    #[test]
    fn nul_and_far_dates_are_refused_anywhere() {
        let v = json!({"a": "x\u{0}y", "b": ["2026-01-01", "-5000-01-01"],
            "c": {"d": "+10000-01-01T00:00:00Z", "e": "1899-12-31", "f": "9999-12-31T23:59:59Z"},
            "g": "1850-ish is fine as text", "h": "0001-01-01 00:00"});
        let fields: Vec<String> = boundary_errors(&v).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["a", "b[1]", "c.d", "c.e", "h"]);
        assert!(check_query("subject=a%00b").is_err());
        assert!(check_query("review_due_before=-5000-01-01").is_err());
        assert!(check_query("review_due_before=2027-01-01&subject=Patient%2F1").is_ok());
    }

    #[test]
    fn weak_etags_never_match() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::IF_MATCH, "W/\"1\""))
            .to_http_request();
        assert_eq!(if_match(&req, true).unwrap(), Some(-1));
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::IF_MATCH, "\"1\""))
            .to_http_request();
        assert_eq!(if_match(&req, true).unwrap(), Some(1));
    }

    #[test]
    fn the_body_must_be_an_object() {
        assert_eq!(fields(parse_value::<PlanInput>(json!([1, 2]))), vec!["$"]);
    }
}
