//! Every error leaves the service as `application/problem+json` (RFC 9457), mapped here once.
//! A 500 carries its cause, which [`log_server_errors`] logs once with the request id; the
//! client only learns that it happened.

use crate::auth::RequestId;
use crate::crypto::CryptoError;
use crate::domain::FieldError;
use crate::store::{DbError, UpdateError};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use serde::Serialize;
use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use utoipa::ToSchema;

/// A boxed error that can cross threads.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// `e` and its sources, joined with ": ". A source whose text the previous message already
/// includes (many errors repeat their source in their own message) is not repeated.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        src = inner.source();
    }
    out
}

/// Why a request failed inside the service: what it was doing and the error underneath.
/// Logged, never shown to the client.
#[derive(Debug)]
pub struct InternalCause {
    pub context: Cow<'static, str>,
    pub source: BoxError,
}

impl fmt::Display for InternalCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chain = error_chain(self.source.as_ref());
        write!(f, "{}: {}", self.context, without_quoted_values(&chain))
    }
}

/// Error messages quote the values they choke on (serde: `invalid type: string "…"`,
/// PostgreSQL: `invalid input syntax for type uuid: "…"`), and a stored value can be personal
/// data. Quoted text is replaced by `"…"`; field and type names (in backticks) stay.
fn without_quoted_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        out.push_str("\"…\"");
        while let Some(q) = chars.next() {
            match q {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
    }
    out
}

/// An RFC 9457 problem document. Each error response of the document shows its own example.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem; stable, for clients to branch on.
    #[serde(rename = "type")]
    #[schema(
        pattern = "^urn:telemental:problem:[a-z-]+$",
        example = "urn:telemental:problem:not-found"
    )]
    pub type_: String,
    pub title: String,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    pub detail: String,
    /// Every invalid field, for 422 responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
    /// The current version, for 412 responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub current_version: Option<i64>,
    /// The existing record, for 409 responses on create.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>, nullable = false)]
    pub existing_id: Option<String>,
    /// Allowed next states, for 409 responses on a bad transition (empty: a final state).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::domain::referral::ReferralStatus>>, nullable = false)]
    pub allowed: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{detail}")]
    Conflict {
        detail: String,
        existing_id: Option<String>,
        allowed: Option<Vec<String>>,
    },
    #[error("If-Match does not match the current version {0}")]
    PreconditionFailed(i64),
    #[error("PUT needs an If-Match header with the version read")]
    PreconditionRequired,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    #[error("this path answers {0} only")]
    MethodNotAllowed(String),
    #[error("database unavailable")]
    Unavailable,
    /// 503: stored data needs an encryption key this process does not have (its id is
    /// logged). Answered like an outage: the operator fixes it, the client retries.
    #[error("an encryption key is missing")]
    KeyMissing,
    /// A 500; its cause is logged with the request id by [`log_server_errors`].
    #[error("internal error: {0}")]
    Internal(InternalCause),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![FieldError::new(field, message)])
    }

    /// A 500 caused by `source` while doing `context` (e.g. "stored plan does not parse").
    /// A plain message will do as the source when there is no error value.
    pub fn internal(
        context: impl Into<Cow<'static, str>>,
        source: impl Into<BoxError>,
    ) -> ApiError {
        ApiError::Internal(InternalCause {
            context: context.into(),
            source: source.into(),
        })
    }

    pub fn conflict(detail: impl Into<String>) -> ApiError {
        ApiError::Conflict {
            detail: detail.into(),
            existing_id: None,
            allowed: None,
        }
    }

    /// A typical error of `status`, for the document's examples.
    pub fn example(status: u16) -> ApiError {
        match status {
            400 => ApiError::BadRequest("invalid query: limit must be between 1 and 200".into()),
            401 => ApiError::Unauthorized("missing bearer token".into()),
            403 => ApiError::Forbidden("this operation needs the scope plans:write".into()),
            404 => ApiError::NotFound,
            409 => ApiError::Conflict {
                detail: "this subject already has a plan; update it with PUT".into(),
                existing_id: Some("01936f4e-8c2a-7d3b-9e4f-5a6b7c8d9e0f".into()),
                allowed: None,
            },
            412 => ApiError::PreconditionFailed(3),
            413 => ApiError::PayloadTooLarge("the body is over 1 MiB".into()),
            415 => ApiError::UnsupportedMediaType("send the body as application/json".into()),
            422 => ApiError::Invalid(vec![
                FieldError::new(
                    "resources.connectivity",
                    "unknown variant `great`, expected one of `none`, `limited`, `reliable`",
                ),
                FieldError::new("review_interval_days", "must be between 7 and 365 days"),
            ]),
            428 => ApiError::PreconditionRequired,
            503 => ApiError::Unavailable,
            _ => ApiError::internal("an example", "of an unexpected error"),
        }
    }

    /// The headers this error is sent with, as the document describes them.
    pub fn documented_headers(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => vec![(
                "WWW-Authenticate",
                "`Bearer` with `error=\"invalid_token\"` (401) or `error=\"insufficient_scope\"` (403)",
            )],
            ApiError::Unavailable | ApiError::KeyMissing => {
                vec![("Retry-After", "Seconds to wait before retrying")]
            }
            _ => vec![],
        }
    }

    fn slug_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("bad-request", "Bad request"),
            ApiError::Unauthorized(_) => ("unauthorized", "Missing or invalid bearer token"),
            ApiError::Forbidden(_) => ("forbidden", "Missing scope"),
            ApiError::NotFound => ("not-found", "Not found"),
            ApiError::Conflict { .. } => ("conflict", "Conflict"),
            ApiError::PreconditionFailed(_) => ("version-mismatch", "Version mismatch"),
            ApiError::PreconditionRequired => ("if-match-required", "If-Match required"),
            ApiError::PayloadTooLarge(_) => ("payload-too-large", "Body too large"),
            ApiError::UnsupportedMediaType(_) => ("unsupported-media-type", "JSON required"),
            ApiError::RequestTimeout(_) => ("request-timeout", "Request too slow"),
            ApiError::Invalid(_) => ("validation", "Invalid request"),
            ApiError::MethodNotAllowed(_) => ("method-not-allowed", "Method not allowed"),
            ApiError::Unavailable | ApiError::KeyMissing => ("unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("internal", "Internal error"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_and_title();
        let detail = match self {
            ApiError::NotFound => "no such resource for this tenant".to_string(),
            ApiError::Invalid(errs) => match errs.len() {
                1 => format!("{}: {}", errs[0].field, errs[0].message),
                n => format!("{n} fields are invalid"),
            },
            ApiError::Unavailable => "the database is unavailable; retry shortly".to_string(),
            ApiError::KeyMissing => "stored data cannot be decrypted with the configured keys \
                (misconfigured); it has been logged, retry later"
                .to_string(),
            ApiError::Internal(_) => "an unexpected error occurred; it has been logged".into(),
            other => other.to_string(),
        };
        let (existing_id, allowed) = match self {
            ApiError::Conflict {
                existing_id,
                allowed,
                ..
            } => (existing_id.clone(), allowed.clone()),
            _ => (None, None),
        };
        Problem {
            type_: format!("urn:telemental:problem:{slug}"),
            title: title.to_string(),
            status: self.status_code().as_u16(),
            detail,
            errors: match self {
                ApiError::Invalid(e) => Some(e.clone()),
                _ => None,
            },
            current_version: match self {
                ApiError::PreconditionFailed(v) => Some(*v),
                _ => None,
            },
            existing_id,
            allowed,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable | ApiError::KeyMissing => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        match self {
            ApiError::Unauthorized(msg) => {
                let desc = msg.replace('"', "'");
                res.insert_header((
                    header::WWW_AUTHENTICATE,
                    format!("Bearer realm=\"telemental\", error=\"invalid_token\", error_description=\"{desc}\""),
                ));
            }
            ApiError::Forbidden(_) => {
                res.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"telemental\", error=\"insufficient_scope\"",
                ));
            }
            ApiError::Unavailable | ApiError::KeyMissing => {
                res.insert_header((header::RETRY_AFTER, "5"));
            }
            ApiError::MethodNotAllowed(allow) => {
                res.insert_header((header::ALLOW, allow.clone()));
            }
            _ => {}
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        res.body(body)
    }
}

/// A stored value that does not decrypt: a missing key is a configuration fault (503, its id
/// logged, never the value); a value that does not authenticate is corruption or tampering
/// (500, logged with its cause). Neither is ever answered with what the bytes decrypt to.
fn crypto_error(e: DbError) -> ApiError {
    match e.crypto() {
        Some(CryptoError::UnknownKey(id)) => {
            tracing::error!(key_id = %id, "a stored value needs an encryption key that is not configured");
            ApiError::KeyMissing
        }
        Some(CryptoError::NoKey) => {
            tracing::error!("no encryption key is configured");
            ApiError::KeyMissing
        }
        _ => ApiError::internal("a stored encrypted value does not authenticate", e),
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::NotFound,
            DbError::Conflict => ApiError::conflict("conflicts with an existing record"),
            DbError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError::Unavailable
            }
            DbError::Other(cause) => ApiError::internal("database error", cause),
            e if e.crypto().is_some() => crypto_error(e),
            DbError::Unreadable(cause) => ApiError::internal("stored row does not read", cause),
            DbError::Crypto(cause) => ApiError::internal("stored value does not read", cause),
        }
    }
}

impl From<UpdateError> for ApiError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::NotFound => ApiError::NotFound,
            UpdateError::VersionMismatch(v) => ApiError::PreconditionFailed(v),
            UpdateError::Db(e) => e.into(),
        }
    }
}

/// Logs every 500 once, with its cause and the request id (set by the observing middleware,
/// which must wrap this one). The response itself is left as it is.
pub async fn log_server_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let method = req.method().to_string();
    let res = next.call(req).await?;
    if res.status() == StatusCode::INTERNAL_SERVER_ERROR {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        let cause = match res.response().error() {
            Some(e) => match e.as_error::<ApiError>() {
                Some(ApiError::Internal(cause)) => cause.to_string(),
                _ => e.to_string(),
            },
            None => "a 500 response without an error value".to_string(),
        };
        tracing::error!(%request_id, %method, %route, %cause, "internal error");
    }
    Ok(res)
}

/// Why the service could not start: what it was doing, and the error chain underneath (shown
/// whole by `main`).
#[derive(Debug)]
pub struct StartupError {
    context: String,
    source: Option<BoxError>,
}

impl StartupError {
    pub fn new(context: impl Into<String>, source: impl Into<BoxError>) -> StartupError {
        StartupError {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// An error that is its own cause (a bad setting).
    pub fn msg(context: impl Into<String>) -> StartupError {
        StartupError {
            context: context.into(),
            source: None,
        }
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl StdError for StartupError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chains_show_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = StartupError::new("cannot listen on 127.0.0.1:8080", io);
        assert_eq!(
            error_chain(&e),
            "cannot listen on 127.0.0.1:8080: address in use"
        );
        // sqlx repeats its source in its own message: not twice.
        let db = sqlx::Error::Io(std::io::Error::other("connection reset"));
        let e = StartupError::new("cannot open the database", db);
        assert_eq!(
            error_chain(&e),
            "cannot open the database: error communicating with database: connection reset"
        );
        assert_eq!(error_chain(&StartupError::msg("bad")), "bad");
    }

    #[test]
    fn an_internal_error_keeps_its_cause_but_does_not_show_it() {
        let parse = serde_json::from_str::<u32>(r#""+44 \"7700\" 900123""#).unwrap_err();
        let e = ApiError::internal("stored plan does not parse", parse);
        let ApiError::Internal(cause) = &e else {
            panic!("not internal")
        };
        assert_eq!(
            cause.to_string(),
            "stored plan does not parse: invalid type: string \"…\", expected u32 at line 1 column 21"
        );
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("invalid type"), "{}", p.detail);
    }
}
