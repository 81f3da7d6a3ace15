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
//!
//! Format 2 has the fields of format 1, with the personal contact and location fields (each
//! kind's [`StoredForm::SEALED`]) encrypted in place (`crate::crypto`). Formats 0 and 1 are
//! clear and keep reading until `telemental rekey` has rewritten them.

pub mod plan;
pub mod protocol;
pub mod referral;
pub mod session_check;

use crate::crypto::{CryptoError, Opener, Place};
use serde::de::DeserializeOwned;
use serde_json::Value;

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
    /// A sealed field that does not decrypt (a missing key, or tampering).
    #[error("stored {kind}: {source}")]
    Sealed {
        kind: &'static str,
        source: CryptoError,
    },
}

impl FormError {
    /// The decryption failure behind this error, if that is what it is.
    pub fn crypto(&self) -> Option<&CryptoError> {
        match self {
            FormError::Sealed { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The first format whose personal fields are sealed (`crate::crypto`).
pub const FIRST_SEALED_FORMAT: u32 = 2;

/// A kind of stored JSON: its newest format and how to read any format it has had.
pub trait StoredForm: Sized {
    const KIND: &'static str;
    /// The format written today.
    const FORMAT: u32;
    /// The fields holding personal contact or location data, sealed from format 2 on:
    /// dot-separated paths, `*` for every element of an array.
    const SEALED: &'static [&'static str];
    /// The form as read, whatever its format.
    type Read: DeserializeOwned + HasFormat;

    /// Upgrades a form of any supported format to the domain value.
    fn upgrade(read: Self::Read) -> Self;
    /// The newest form, as JSON, before its fields are sealed.
    fn clear_form(&self) -> Value;
    /// Opens the sealed fields of a form as read (format 2 on): exactly the fields of
    /// [`Self::SEALED`] (the saved samples' tests fail otherwise).
    fn open(read: &mut Self::Read, o: &mut Opener<'_>) -> Result<(), CryptoError>;

    /// The newest form, with its personal fields sealed for `place`.
    fn encode(&self, place: &Place<'_>) -> Result<Value, FormError> {
        let mut v = self.clear_form();
        place
            .seal_fields(&mut v, Self::SEALED)
            .map_err(|source| FormError::Sealed {
                kind: Self::KIND,
                source,
            })?;
        Ok(v)
    }

    /// Reads a stored JSON text.
    fn decode_str(s: &str, place: &Place<'_>) -> Result<Self, FormError> {
        let read: Self::Read = serde_json::from_str(s).map_err(|source| FormError::Unreadable {
            kind: Self::KIND,
            source,
        })?;
        Self::accept(read, place)
    }

    /// Reads a stored JSON value.
    fn decode(v: Value, place: &Place<'_>) -> Result<Self, FormError> {
        let read: Self::Read =
            serde_json::from_value(v).map_err(|source| FormError::Unreadable {
                kind: Self::KIND,
                source,
            })?;
        Self::accept(read, place)
    }

    /// Formats before 2 are clear; later ones are opened, then upgraded.
    fn accept(mut read: Self::Read, place: &Place<'_>) -> Result<Self, FormError> {
        let found = read.format();
        if found > Self::FORMAT {
            return Err(FormError::TooNew {
                kind: Self::KIND,
                found,
                newest: Self::FORMAT,
            });
        }
        if found >= FIRST_SEALED_FORMAT {
            Self::open(&mut read, &mut Opener::new(place)).map_err(|source| FormError::Sealed {
                kind: Self::KIND,
                source,
            })?;
        }
        Ok(Self::upgrade(read))
    }
}

/// The `format` of a stored JSON value (0 when absent).
pub fn format_of(v: &Value) -> u32 {
    v.get("format")
        .and_then(Value::as_u64)
        .and_then(|f| u32::try_from(f).ok())
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keyring;
    use crate::domain::plan::{BackupMethod, Plan};
    use crate::domain::protocol::SafetyProtocol;
    use crate::domain::referral::{ReferralState, ReferralStatus};
    use crate::domain::session_check::{Outcome, SessionCheck, SessionCheckOutcome};
    use serde_json::Value;
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stored")
    }

    fn sample(name: &str) -> Value {
        let text = std::fs::read_to_string(dir().join(name)).expect("saved sample");
        serde_json::from_str(&text).expect("saved sample is JSON")
    }

    /// The samples of one kind: (file prefix, format).
    fn samples(prefix: &str) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = std::fs::read_dir(dir())
            .expect("samples directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| {
                let rest = n.strip_prefix(prefix)?.strip_prefix("-v")?;
                let (format, _) = rest.split_once('-')?;
                Some((n.clone(), format.parse().ok()?))
            })
            .collect();
        out.sort();
        out
    }

    /// Every saved sample of `prefix` reads; the newest samples are exactly what is written
    /// today; every older sample, upgraded and written again, is the newest sample of the same
    /// case. `TELEMENTAL_WRITE_SAMPLES=1` writes the newest samples instead of comparing (only
    /// when adding a new format).
    fn check_kind<T: StoredForm>(prefix: &str) -> Vec<(String, T)> {
        let ring = fixture_keys();
        let place = fixture_place(&ring);
        let all = samples(prefix);
        assert!(
            all.iter().any(|(_, f)| *f == 0),
            "no format-0 sample of {prefix}"
        );
        let mut read = Vec::new();
        for (name, _) in &all {
            let value = T::decode(sample(name), &place)
                .unwrap_or_else(|e| panic!("saved sample {name} no longer reads: {e}"));
            read.push((name.clone(), value));
        }
        for (name, value) in &read {
            let case = name.rsplit_once('-').map(|(_, c)| c).unwrap_or(name);
            let newest = format!("{prefix}-v{}-{case}", T::FORMAT);
            let written = value.encode(&place).unwrap();
            if std::env::var("TELEMENTAL_WRITE_SAMPLES").is_ok_and(|v| v == "1") {
                let text = serde_json::to_string_pretty(&written).unwrap() + "\n";
                std::fs::write(dir().join(&newest), text).unwrap();
                continue;
            }
            // Nonces are random: the sealed fields are compared after opening, and the same
            // fields must be sealed in both.
            let saved = sample(&newest);
            assert_eq!(
                sealed_paths(&written),
                sealed_paths(&saved),
                "{name}, written again, seals other fields than {newest}"
            );
            assert_eq!(
                opened::<T>(written.clone(), &place),
                opened::<T>(saved, &place),
                "{name}, read and written again, is not {newest}: a stored shape changed; give \
                 it a new format number and new samples"
            );
            assert_eq!(written["format"], T::FORMAT);
        }
        read
    }

    /// The key the `-v2-` samples were sealed with (tests only).
    fn fixture_keys() -> Keyring {
        Keyring::parse(crate::crypto::TEST_KEYS).unwrap()
    }

    fn fixture_place(keys: &Keyring) -> Place<'_> {
        Place {
            keys,
            tenant: "fixture",
            table: "fixture",
            row: "fixture@1",
        }
    }

    /// The sealed fields' values opened (and `format` kept).
    fn opened<T: StoredForm>(mut v: Value, place: &Place<'_>) -> Value {
        if format_of(&v) >= FIRST_SEALED_FORMAT {
            place.open_fields(&mut v, T::SEALED).unwrap();
        }
        v
    }

    /// Every concrete path whose value is sealed.
    fn sealed_paths(v: &Value) -> Vec<String> {
        fn walk(v: &Value, at: String, out: &mut Vec<String>) {
            match v {
                Value::String(s) if s.starts_with(crate::crypto::PREFIX) => out.push(at),
                Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .for_each(|(i, x)| walk(x, format!("{at}.{i}"), out)),
                Value::Object(m) => m
                    .iter()
                    .for_each(|(k, x)| walk(x, format!("{at}.{k}"), out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(v, String::new(), &mut out);
        out
    }

    #[test]
    fn the_newest_samples_hold_no_personal_value_in_clear() {
        for name in std::fs::read_dir(dir()).unwrap() {
            let name = name.unwrap().file_name().into_string().unwrap();
            if !name.contains("-v2-") {
                continue;
            }
            let text = std::fs::read_to_string(dir().join(&name)).unwrap();
            for clear in [
                "+4477009",
                "+441130",
                "High St",
                "A. Carer",
                "uses captions",
                "sister",
                "room 4",
                "free text",
                "agreed by phone",
            ] {
                assert!(!text.contains(clear), "{name} holds {clear} in clear");
            }
        }
    }

    #[test]
    fn a_sealed_sample_opened_elsewhere_or_without_its_key_does_not_read() {
        let keys = fixture_keys();
        let v = sample("protocol-v2-full.json");
        let elsewhere = Place {
            row: "another@1",
            ..fixture_place(&keys)
        };
        let e = SafetyProtocol::decode(v.clone(), &elsewhere).unwrap_err();
        assert!(matches!(e.crypto(), Some(CryptoError::Corrupt(_))), "{e}");
        let other = Keyring::parse(&Keyring::generate_entry("other")).unwrap();
        let e = SafetyProtocol::decode(v, &fixture_place(&other)).unwrap_err();
        assert!(
            matches!(e.crypto(), Some(CryptoError::UnknownKey(id)) if id == "test"),
            "{e}"
        );
    }

    /// The cost of sealing, per record, beside writing and reading the clear form (not a
    /// benchmark harness; a figure for the README): `cargo test --release --lib
    /// store::forms::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost_of_sealing_a_record() {
        fn measure<T: StoredForm>(name: &str) {
            let keys = fixture_keys();
            let place = fixture_place(&keys);
            let value = T::decode(sample(name), &place).unwrap();
            let clear = value.clear_form();
            let sealed = value.encode(&place).unwrap();
            let (clear_text, sealed_text) = (clear.to_string(), sealed.to_string());
            let n = 20_000u32;
            let time = |f: &dyn Fn()| {
                let t = std::time::Instant::now();
                for _ in 0..n {
                    f();
                }
                t.elapsed() / n
            };
            let write_clear = time(&|| {
                std::hint::black_box(value.clear_form().to_string());
            });
            let write_sealed = time(&|| {
                std::hint::black_box(value.encode(&place).unwrap().to_string());
            });
            // Reading a clear (format 1) row and a sealed one, from the stored text.
            let mut v1 = clear.clone();
            v1["format"] = Value::from(1);
            let v1_text = v1.to_string();
            let read_clear = time(&|| {
                std::hint::black_box(T::decode_str(&v1_text, &place).unwrap());
            });
            let read_sealed = time(&|| {
                std::hint::black_box(T::decode_str(&sealed_text, &place).unwrap());
            });
            println!(
                "{name}: {} sealed fields; write {write_clear:?} clear / {write_sealed:?} sealed; \
                 read {read_clear:?} clear / {read_sealed:?} sealed; {} / {} bytes",
                sealed_paths(&sealed).len(),
                clear_text.len(),
                sealed_text.len()
            );
        }
        measure::<Plan>("plan-v1-full.json");
        measure::<SafetyProtocol>("protocol-v1-full.json");
        measure::<ReferralState>("referral-v1-full.json");
        measure::<SessionCheck>("session-check-v1-full.json");
    }

    #[test]
    fn every_saved_plan_shape_reads_back() {
        let read = check_kind::<Plan>("plan");
        let (_, full) = read.iter().find(|(n, _)| n == "plan-v0-full.json").unwrap();
        assert_eq!(full.subject.as_str(), "Patient/fixture-1");
        assert_eq!(full.review_interval_days.days(), 60);
        assert_eq!(full.barriers.len(), 2);
        assert_eq!(
            full.backup_contact.as_ref().map(|b| b.method),
            Some(BackupMethod::Text)
        );
        assert_eq!(full.personalisation.participants[1].name, None);
        assert_eq!(full.last_reviewed_on().to_string(), "2026-11-20");
    }

    #[test]
    fn every_saved_protocol_shape_reads_back() {
        let read = check_kind::<SafetyProtocol>("protocol");
        let (_, full) = read
            .iter()
            .find(|(n, _)| n == "protocol-v0-full.json")
            .unwrap();
        assert!(full.has_in_person_crisis_response());
        assert_eq!(full.call_back_numbers.len(), 2);
        assert_eq!(full.usual_locations[1].address, None);
    }

    #[test]
    fn every_saved_session_check_shape_reads_back() {
        let checks = check_kind::<SessionCheck>("session-check");
        assert!(checks.iter().any(|(_, c)| c.first_remote_appointment));
        let outcomes = check_kind::<SessionCheckOutcome>("session-check-outcome");
        let (_, minimal) = outcomes
            .iter()
            .find(|(n, _)| n == "session-check-outcome-v0-minimal.json")
            .unwrap();
        assert_eq!(minimal.outcome, Outcome::DoNotProceed);
        assert_eq!(minimal.actions.len(), 6);
        assert!(minimal.on_disconnect.is_none());
    }

    #[test]
    fn every_saved_referral_shape_reads_back() {
        let read = check_kind::<ReferralState>("referral");
        let (_, full) = read
            .iter()
            .find(|(n, _)| n == "referral-v0-full.json")
            .unwrap();
        assert_eq!(full.status, ReferralStatus::Scheduled);
        assert_eq!(full.history.len(), 2);
        assert_eq!(full.history[1].note.as_deref(), Some("room 4"));
    }

    #[test]
    fn a_format_newer_than_this_build_is_refused_not_misread() {
        let mut v = sample("plan-v0-full.json");
        v["format"] = Value::from(Plan::FORMAT + 1);
        let keys = fixture_keys();
        assert!(matches!(
            Plan::decode(v, &fixture_place(&keys)),
            Err(FormError::TooNew { .. })
        ));
    }

    #[test]
    fn reading_is_lenient_about_unknown_and_missing_optional_fields() {
        let mut v = sample("plan-v0-minimal.json");
        let m = v.as_object_mut().unwrap();
        m.insert("added_by_a_later_build".into(), Value::from(true));
        m.remove("barriers");
        m.remove("personalisation");
        m.remove("review_interval_days");
        let keys = fixture_keys();
        let plan = Plan::decode(v, &fixture_place(&keys)).expect("reads");
        assert!(plan.barriers.is_empty());
        assert_eq!(plan.review_interval_days.days(), 90);
    }
}
