//! Every error leaves the service as `application/problem+json` (RFC 9457), mapped here once.

use crate::domain::FieldError;
use crate::store::{DbError, UpdateError};
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

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
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("database unavailable")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![FieldError::new(field, message)])
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
            _ => ApiError::Internal,
        }
    }

    /// The headers this error is sent with, as the document describes them.
    pub fn documented_headers(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => vec![(
                "WWW-Authenticate",
                "`Bearer` with `error=\"invalid_token\"` (401) or `error=\"insufficient_scope\"` (403)",
            )],
            ApiError::Unavailable => vec![("Retry-After", "Seconds to wait before retrying")],
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
            ApiError::Unavailable => ("unavailable", "Service unavailable"),
            ApiError::Internal => ("internal", "Internal error"),
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
            ApiError::Internal => "an unexpected error occurred; it has been logged".into(),
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
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
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
            ApiError::Unavailable => {
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

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::NotFound => ApiError::NotFound,
            DbError::Conflict => ApiError::conflict("conflicts with an existing record"),
            DbError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError::Unavailable
            }
            DbError::Other(cause) => {
                tracing::error!(%cause, "database error");
                ApiError::Internal
            }
            DbError::Unreadable(cause) => {
                tracing::error!(%cause, "stored row does not read");
                ApiError::Internal
            }
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
