//! Stored forms: how each kind of record is written to a row's JSON column, and read back.
//!
//! The store keeps its own types, apart from the API's request and response types and from
//! the domain types, so that the API and the domain can change without making old rows
//! unreadable. Each form carries a `format` number. Reading is lenient (unknown fields are
//! ignored, missing optional ones take their defaults) and upgrades older formats on the way
//! in; version rows are history and must stay readable forever. Rows written before formats
//! existed have no `format` field and read as format 0.
//!
//! One module per record kind holds its forms and the conversions to and from the domain.
//! `tests/fixtures/stored/` keeps a saved sample of every shape ever written; a test reads each
//! one back, and another checks that what is written today is the newest sample, so a change
//! to a stored shape fails a test until it gets a new format number and a new sample.

pub mod plan;
pub mod protocol;
pub mod referral;
pub mod session_check;

use serde::de::DeserializeOwned;

/// A stored row that does not read.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("stored {kind} has format {found}, newer than this build reads ({newest})")]
    TooNew {
        kind: &'static str,
        found: u32,
        newest: u32,
    },
    #[error("stored {kind} does not read: {source}")]
    Unreadable {
        kind: &'static str,
        source: serde_json::Error,
    },
}

/// A kind of stored JSON: its newest format and how to read any format it has had.
pub trait StoredForm: Sized {
    const KIND: &'static str;
    /// The format written today.
    const FORMAT: u32;
    /// The form as read, whatever its format.
    type Read: DeserializeOwned + HasFormat;

    /// Upgrades a form of any supported format to the domain value.
    fn upgrade(read: Self::Read) -> Self;
    /// The newest form, as JSON.
    fn encode(&self) -> serde_json::Value;

    /// Reads a stored JSON text.
    fn decode_str(s: &str) -> Result<Self, FormError> {
        let read: Self::Read = serde_json::from_str(s).map_err(|source| FormError::Unreadable {
            kind: Self::KIND,
            source,
        })?;
        Self::accept(read)
    }

    /// Reads a stored JSON value.
    fn decode(v: serde_json::Value) -> Result<Self, FormError> {
        let read: Self::Read =
            serde_json::from_value(v).map_err(|source| FormError::Unreadable {
                kind: Self::KIND,
                source,
            })?;
        Self::accept(read)
    }

    fn accept(read: Self::Read) -> Result<Self, FormError> {
        let found = read.format();
        if found > Self::FORMAT {
            return Err(FormError::TooNew {
                kind: Self::KIND,
                found,
                newest: Self::FORMAT,
            });
        }
        Ok(Self::upgrade(read))
    }
}

/// The `format` field of a stored form (0 when absent).
pub trait HasFormat {
    fn format(&self) -> u32;
}

/// Implements [`HasFormat`] for a form struct with a `format: u32` field.
macro_rules! has_format {
    ($t:ty) => {
        impl $crate::store::forms::HasFormat for $t {
            fn format(&self) -> u32 {
                self.format
            }
        }
    };
}
pub(crate) use has_format;
