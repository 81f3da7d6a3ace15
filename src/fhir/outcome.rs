//! Errors of the FHIR views: the service's errors as OperationOutcomes, with the same status
//! codes and headers as everywhere else.

use super::mapping::operation_outcome;
use crate::error::ApiError;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The client asked for a format other than JSON.
    #[error("{0}")]
    NotAcceptable(String),
}

impl FhirError {
    /// The `issue.code` (http://hl7.org/fhir/issue-type) for this error.
    pub fn issue_code(&self) -> &'static str {
        match self {
            FhirError::NotAcceptable(_) => "not-supported",
            FhirError::Api(e) => match e {
                ApiError::BadRequest(_) | ApiError::Invalid(_) => "invalid",
                ApiError::Unauthorized(_) => "login",
                ApiError::Forbidden(_) => "forbidden",
                ApiError::NotFound => "not-found",
                ApiError::Conflict { .. } | ApiError::PreconditionFailed(_) => "conflict",
                ApiError::PreconditionRequired => "required",
                ApiError::PayloadTooLarge(_) => "too-long",
                ApiError::UnsupportedMediaType(_) | ApiError::MethodNotAllowed(_) => {
                    "not-supported"
                }
                ApiError::Unavailable => "transient",
                ApiError::KeyMissing => "exception",
                ApiError::RequestTimeout(_) => "timeout",
                ApiError::Internal(_) => "exception",
            },
        }
    }

    fn diagnostics(&self) -> String {
        match self {
            FhirError::NotAcceptable(m) => m.clone(),
            FhirError::Api(e) => e.problem().detail,
        }
    }
}

impl ResponseError for FhirError {
    fn status_code(&self) -> StatusCode {
        match self {
            FhirError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            FhirError::Api(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let severity = if self.status_code().is_server_error() {
            "fatal"
        } else {
            "error"
        };
        let body = operation_outcome(severity, self.issue_code(), &self.diagnostics());
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = match self {
            // The service's own response carries the right headers (WWW-Authenticate, Allow,
            // Retry-After); only the body and its type change.
            FhirError::Api(e) => e.error_response(),
            FhirError::NotAcceptable(_) => HttpResponse::new(StatusCode::NOT_ACCEPTABLE),
        };
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(FHIR_JSON),
        );
        res.set_body(actix_web::body::BoxBody::new(body))
    }
}

impl From<crate::store::DbError> for FhirError {
    fn from(e: crate::store::DbError) -> Self {
        FhirError::Api(e.into())
    }
}
