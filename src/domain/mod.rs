//! The guideline's domain: plain types and functions, free of HTTP and SQL.

pub mod plan;
pub mod protocol;
pub mod referral;
pub mod report;
pub mod rules;
pub mod session_check;
pub mod types;

use serde::Serialize;
use utoipa::ToSchema;

/// One invalid field of a request, named by its JSON path (`resources.connectivity`,
/// `barriers[0].kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `preferences.default[1]`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
