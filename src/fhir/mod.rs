//! FHIR R4 read views under `/fhir/R4`: preference plans and safety protocols as CarePlans,
//! fallback referrals as ServiceRequests, a CapabilityStatement, searchset Bundles, and every
//! error as an OperationOutcome.
//!
//! [`mapping`] holds the pure mapping from domain types to FHIR JSON; [`stored`] the one place
//! per record kind where a stored body becomes a domain type; [`scopes`] which reads a token's
//! scopes (the service's own, or SMART's) allow; `handlers` the thin HTTP layer.

mod doc;
mod handlers;
pub mod mapping;
pub mod outcome;
pub mod scopes;
pub mod search;
pub mod stored;

pub use doc::document_errors;
pub use handlers::{configure, fallback_error};

/// What the FHIR views need from the settings.
#[derive(Debug, Clone, Default)]
pub struct FhirSettings {
    /// `TELEMENTAL_PUBLIC_URL`, without a trailing slash; else the request's own scheme and host.
    pub public_url: Option<String>,
    /// `TELEMENTAL_FHIR_ALLOWED_ORIGINS`: browser origins allowed to read the views (CORS).
    pub allowed_origins: Vec<String>,
}
