//! CDS Hooks 2.0: the `appointment-book` hook as the `telemental-modality` service, so an EHR
//! gets the guideline's advice (cards) while a clinician books an appointment.
//!
//! [`cards`] is the pure logic (context → appointments → cards); [`auth`] how EHRs
//! authenticate (JWKS-signed JWTs, `jti` replay refusal, CORS); `handlers` the HTTP layer.

pub mod auth;
pub mod cards;
mod handlers;

pub use handlers::configure;

use std::sync::atomic::AtomicI64;

/// What the CDS endpoints need from the settings.
#[derive(Debug)]
pub struct CdsSettings {
    /// `TELEMENTAL_JWT_AUDIENCE`: always an accepted `aud`.
    pub audience: String,
    /// `TELEMENTAL_PUBLIC_URL`: the endpoint URL under it is an accepted `aud` too.
    pub public_url: Option<String>,
    /// `TELEMENTAL_CDS_ISSUERS`: allowed `iss` values (any when empty).
    pub issuers: Vec<String>,
    /// `TELEMENTAL_CDS_ALLOWED_ORIGINS`.
    pub allowed_origins: Vec<String>,
    /// Unix time of the last prune of expired token ids.
    pub last_prune: AtomicI64,
}

impl CdsSettings {
    pub fn new(settings: &crate::config::Settings) -> CdsSettings {
        CdsSettings {
            audience: settings.jwt_audience.clone(),
            public_url: settings.public_url.clone(),
            issuers: settings.cds_issuers.clone(),
            allowed_origins: settings.cds_allowed_origins.0.clone(),
            last_prune: AtomicI64::new(0),
        }
    }
}
