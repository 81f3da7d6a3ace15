//! Encryption at rest: personal contact and location data is stored as AES-256-GCM
//! ciphertext, field by field.
//!
//! A sealed value is the text `enc:v1:<key id>:<base64 of nonce ‖ ciphertext ‖ tag>`. Each
//! value gets a fresh random 96-bit nonce. The associated data binds the ciphertext to where
//! it is stored (tenant, table and column, row id, field path), so a ciphertext copied to
//! another row, field or tenant does not decrypt. The key ring holds one current key (all new
//! writes) and older keys that still decrypt; `telemental rekey` moves old values to the
//! current key.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde_json::Value;
use std::fmt;

/// A fixed key for tests and the saved samples of `tests/fixtures/stored` (which are sealed
/// with it). Public knowledge: never use it for real data.
pub const TEST_KEYS: &str = "test:ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";

/// What every sealed value starts with.
pub const PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A value that cannot be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The value names a key this process does not have: a configuration problem (503).
    #[error(
        "a stored value is encrypted with key `{0}`, which is not in TELEMENTAL_ENCRYPTION_KEYS"
    )]
    UnknownKey(String),
    /// No key is configured at all (a store opened without keys).
    #[error("no encryption key is configured (TELEMENTAL_ENCRYPTION_KEYS)")]
    NoKey,
    /// The value does not authenticate: altered, truncated, or moved from another row or
    /// field. Data corruption (500), never decrypted into garbage.
    #[error("a stored encrypted value does not authenticate ({0}): tampered with or moved")]
    Corrupt(&'static str),
}

impl CryptoError {
    /// The key id a failure is about, for logs (never the value).
    pub fn key_id(&self) -> Option<&str> {
        match self {
            CryptoError::UnknownKey(id) => Some(id),
            _ => None,
        }
    }
}

/// One key: its id and cipher. The key bytes never leave the cipher.
#[derive(Clone)]
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// The configured keys: the first is current (encrypts), all decrypt. `Debug` shows the ids
/// only.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
    /// Key ids met in stored values but not configured (reported by `/readyz`).
    unknown_seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring(ids: {:?}, keys: ***)", self.ids())
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Keyring {
    /// Parses `id:base64,id:base64…` (standard base64 of 32 bytes each; whitespace and empty
    /// entries ignored, so a file may hold one entry per line). Errors never repeat a key.
    pub fn parse(s: &str) -> Result<Keyring, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, entry) in s
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
            .enumerate()
        {
            let Some((id, b64)) = entry.split_once(':') else {
                return Err(format!("entry {} is not `id:base64-key`", n + 1));
            };
            let id = id.trim();
            if !valid_id(id) {
                return Err(format!(
                    "entry {}: a key id is 1 to 32 letters, digits, `-`, `_` or `.`",
                    n + 1
                ));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("key id `{id}` appears twice"));
            }
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| format!("key `{id}` is not standard base64"))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "key `{id}` is {} bytes; AES-256 keys are 32 bytes",
                    bytes.len()
                ));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| "bad key length")?;
            keys.push(Key {
                id: id.to_string(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err("no key: expected `id:base64-key[,id:base64-key…]`".into());
        }
        Ok(Keyring {
            keys,
            unknown_seen: Default::default(),
        })
    }

    /// A new random key entry (`id:base64`), for the dev key file and for operators.
    pub fn generate_entry(id: &str) -> String {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        format!("{id}:{}", STANDARD.encode(k))
    }

    /// The id of the key new values are encrypted with.
    pub fn current_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    pub fn has(&self, id: &str) -> bool {
        self.keys.iter().any(|k| k.id == id)
    }

    /// Key ids met in stored values that this ring does not have, since it was made.
    pub fn unknown_seen(&self) -> Vec<String> {
        self.unknown_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The same keys with nothing seen yet (one ring per running store).
    pub fn fresh(&self) -> Keyring {
        Keyring {
            keys: self.keys.clone(),
            unknown_seen: Default::default(),
        }
    }

    /// Encrypts `plain` with the current key for `aad`.
    pub fn seal(&self, plain: &[u8], aad: &Aad<'_>) -> Result<String, CryptoError> {
        let key = self.keys.first().ok_or(CryptoError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ad = aad.bytes();
        let ct = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &ad,
                },
            )
            .map_err(|_| CryptoError::Corrupt("encryption failed"))?;
        let mut raw = Vec::with_capacity(NONCE_LEN + ct.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&ct);
        let mut out =
            String::with_capacity(PREFIX.len() + key.id.len() + 1 + raw.len() * 4 / 3 + 4);
        out.push_str(PREFIX);
        out.push_str(&key.id);
        out.push(':');
        STANDARD.encode_string(&raw, &mut out);
        Ok(out)
    }

    /// Decrypts a sealed value written for `aad`.
    pub fn open(&self, sealed: &str, aad: &Aad<'_>) -> Result<Vec<u8>, CryptoError> {
        let rest = sealed
            .strip_prefix(PREFIX)
            .ok_or(CryptoError::Corrupt("not an encrypted value"))?;
        let (id, b64) = rest
            .split_once(':')
            .ok_or(CryptoError::Corrupt("no key id"))?;
        let Some(key) = self.keys.iter().find(|k| k.id == id) else {
            let mut seen = self.unknown_seen.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.iter().any(|s| s == id) && seen.len() < 16 {
                seen.push(id.to_string());
            }
            return Err(CryptoError::UnknownKey(id.to_string()));
        };
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| CryptoError::Corrupt("not base64"))?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Corrupt("too short"));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CryptoError::Corrupt("nonce"))?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: &aad.bytes(),
                },
            )
            .map_err(|_| CryptoError::Corrupt("authentication failed"))
    }

    /// Decrypts a sealed UTF-8 string.
    pub fn open_str(&self, sealed: &str, aad: &Aad<'_>) -> Result<String, CryptoError> {
        String::from_utf8(self.open(sealed, aad)?).map_err(|_| CryptoError::Corrupt("not UTF-8"))
    }
}

/// The key id of a sealed value; `None` for anything else.
pub fn key_id_of(value: &str) -> Option<&str> {
    value
        .strip_prefix(PREFIX)?
        .split_once(':')
        .map(|(id, _)| id)
}

/// Where a value is stored: what its ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    pub tenant: &'a str,
    /// `table.column`.
    pub table: &'a str,
    /// The row: a record id with its version (`<uuid>@<version>`), or a row's key.
    pub row: &'a str,
    /// The field's path in the column's JSON (`usual_locations.1.address`); empty for a
    /// whole column.
    pub field: &'a str,
}

impl Aad<'_> {
    /// Length-prefixed parts, so that no two places share associated data.
    fn bytes(&self) -> Vec<u8> {
        let parts = [
            "telemental/enc/v1",
            self.tenant,
            self.table,
            self.row,
            self.field,
        ];
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
        for p in parts {
            out.extend_from_slice(&(p.len() as u32).to_be_bytes());
            out.extend_from_slice(p.as_bytes());
        }
        out
    }
}

/// One stored row's column: the keys and where the values go, for sealing and opening the
/// fields of its JSON.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub keys: &'a Keyring,
    pub tenant: &'a str,
    pub table: &'a str,
    pub row: &'a str,
}

impl<'a> Place<'a> {
    fn aad(&self, field: &'a str) -> Aad<'a> {
        Aad {
            tenant: self.tenant,
            table: self.table,
            row: self.row,
            field,
        }
    }

    /// Encrypts the strings found at `paths` (dot-separated; `*` is every element of an
    /// array). Absent and null fields are left as they are.
    pub fn seal_fields(&self, v: &mut Value, paths: &[&str]) -> Result<(), CryptoError> {
        for path in paths {
            let segs: Vec<&str> = path.split('.').collect();
            walk(v, &segs, &mut String::new(), &mut |s, at| {
                let sealed = self.keys.seal(s.as_bytes(), &self.aad(at))?;
                *s = sealed;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Decrypts the strings at `paths`. Each must be sealed (a clear value where a sealed one
    /// belongs is corruption, not a value to trust).
    pub fn open_fields(&self, v: &mut Value, paths: &[&str]) -> Result<(), CryptoError> {
        for path in paths {
            let segs: Vec<&str> = path.split('.').collect();
            walk(v, &segs, &mut String::new(), &mut |s, at| {
                *s = self.keys.open_str(s, &self.aad(at))?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// The key ids used at `paths` (for `rekey`'s report).
    pub fn key_ids(v: &mut Value, paths: &[&str], out: &mut Vec<String>) {
        for path in paths {
            let segs: Vec<&str> = path.split('.').collect();
            let _ = walk(v, &segs, &mut String::new(), &mut |s, _| {
                if let Some(id) = key_id_of(s) {
                    if !out.iter().any(|o| o == id) {
                        out.push(id.to_string());
                    }
                }
                Ok(())
            });
        }
    }

    /// A whole JSON value sealed into one string value.
    pub fn seal_value(&self, v: &Value) -> Result<Value, CryptoError> {
        let text = serde_json::to_vec(v).map_err(|_| CryptoError::Corrupt("not JSON"))?;
        Ok(Value::String(self.keys.seal(&text, &self.aad(""))?))
    }

    /// The value sealed by [`Self::seal_value`]; any other value is returned as it is (written
    /// before encryption, in clear).
    pub fn open_value(&self, v: Value) -> Result<Value, CryptoError> {
        match v {
            Value::String(s) if s.starts_with(PREFIX) => {
                let text = self.keys.open(&s, &self.aad(""))?;
                serde_json::from_slice(&text).map_err(|_| CryptoError::Corrupt("not JSON"))
            }
            other => Ok(other),
        }
    }

    /// A string column sealed as it is.
    pub fn seal_text(&self, s: &str) -> Result<String, CryptoError> {
        self.keys.seal(s.as_bytes(), &self.aad(""))
    }

    /// A string column: decrypted when sealed, else (written before encryption) as it is.
    pub fn open_text(&self, s: &str) -> Result<String, CryptoError> {
        if s.starts_with(PREFIX) {
            self.keys.open_str(s, &self.aad(""))
        } else {
            Ok(s.to_string())
        }
    }
}

/// Opens sealed fields of a typed form in place, each at the path it was sealed at (the
/// concrete path of [`Place::seal_fields`]: `usual_locations.1.address`). Reading a row
/// this way skips building a JSON value tree.
pub struct Opener<'a> {
    place: &'a Place<'a>,
    path: String,
}

impl<'a> Opener<'a> {
    pub fn new(place: &'a Place<'a>) -> Opener<'a> {
        Opener {
            place,
            path: String::new(),
        }
    }

    /// Opens `s`, sealed at `path`.
    pub fn field(&mut self, s: &mut String, path: fmt::Arguments<'_>) -> Result<(), CryptoError> {
        use fmt::Write;
        self.path.clear();
        let _ = self.path.write_fmt(path);
        let aad = Aad {
            tenant: self.place.tenant,
            table: self.place.table,
            row: self.place.row,
            field: &self.path,
        };
        *s = self.place.keys.open_str(s, &aad)?;
        Ok(())
    }

    /// Opens `s` when present.
    pub fn opt(
        &mut self,
        s: &mut Option<String>,
        path: fmt::Arguments<'_>,
    ) -> Result<(), CryptoError> {
        match s {
            Some(s) => self.field(s, path),
            None => Ok(()),
        }
    }
}

/// Calls `f` on every string at the path `segs` below `v`, with the concrete path.
fn walk(
    v: &mut Value,
    segs: &[&str],
    at: &mut String,
    f: &mut dyn FnMut(&mut String, &str) -> Result<(), CryptoError>,
) -> Result<(), CryptoError> {
    let Some((first, rest)) = segs.split_first() else {
        return match v {
            Value::String(s) => f(s, at),
            _ => Ok(()),
        };
    };
    let len = at.len();
    if *first == "*" {
        if let Value::Array(items) = v {
            for (i, item) in items.iter_mut().enumerate() {
                push_seg(at, &i.to_string());
                walk(item, rest, at, f)?;
                at.truncate(len);
            }
        }
    } else if let Some(child) = v.as_object_mut().and_then(|m| m.get_mut(*first)) {
        push_seg(at, first);
        walk(child, rest, at, f)?;
        at.truncate(len);
    }
    Ok(())
}

fn push_seg(at: &mut String, seg: &str) {
    if !at.is_empty() {
        at.push('.');
    }
    at.push_str(seg);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn aad(row: &str) -> Aad<'_> {
        Aad {
            tenant: "t1",
            table: "plans.body",
            row,
            field: "notes",
        }
    }

    #[test]
    fn a_value_round_trips_and_names_its_key() {
        let ring = Keyring::parse(K1).unwrap();
        let s = ring.seal(b"+447700900123", &aad("r1")).unwrap();
        assert!(s.starts_with("enc:v1:k1:"), "{s}");
        assert!(!s.contains("447700900123"));
        assert_eq!(ring.open(&s, &aad("r1")).unwrap(), b"+447700900123");
        assert_eq!(key_id_of(&s), Some("k1"));
    }

    #[test]
    fn each_value_gets_a_fresh_nonce() {
        let ring = Keyring::parse(K1).unwrap();
        let a = ring.seal(b"same", &aad("r1")).unwrap();
        let b = ring.seal(b"same", &aad("r1")).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn a_value_moved_to_another_row_field_table_or_tenant_does_not_open() {
        let ring = Keyring::parse(K1).unwrap();
        let s = ring.seal(b"1 High St", &aad("r1")).unwrap();
        let moved = [
            Aad {
                row: "r2",
                ..aad("r1")
            },
            Aad {
                field: "barriers.0.note",
                ..aad("r1")
            },
            Aad {
                table: "safety_protocols.body",
                ..aad("r1")
            },
            Aad {
                tenant: "t2",
                ..aad("r1")
            },
        ];
        for to in moved {
            assert!(
                matches!(ring.open(&s, &to), Err(CryptoError::Corrupt(_))),
                "{to:?}"
            );
        }
    }

    #[test]
    fn a_tampered_value_does_not_open() {
        let ring = Keyring::parse(K1).unwrap();
        let s = ring.seal(b"1 High St", &aad("r1")).unwrap();
        let (head, body) = s.rsplit_once(':').unwrap();
        let mut raw = STANDARD.decode(body).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let bad = format!("{head}:{}", STANDARD.encode(&raw));
            assert_eq!(
                ring.open(&bad, &aad("r1")),
                Err(CryptoError::Corrupt("authentication failed"))
            );
            raw[i] ^= 1;
        }
        let short = format!("{head}:{}", STANDARD.encode(&raw[..20]));
        assert!(matches!(
            ring.open(&short, &aad("r1")),
            Err(CryptoError::Corrupt(_))
        ));
    }

    #[test]
    fn an_old_key_still_opens_and_a_missing_one_is_named() {
        let old = Keyring::parse(K1).unwrap();
        let s = old.seal(b"x", &aad("r1")).unwrap();
        let rotated = Keyring::parse(&format!("{K2},{K1}")).unwrap();
        assert_eq!(rotated.current_id(), Some("k2"));
        assert_eq!(rotated.open(&s, &aad("r1")).unwrap(), b"x");
        assert!(rotated
            .seal(b"x", &aad("r1"))
            .unwrap()
            .starts_with("enc:v1:k2:"));
        let only_new = Keyring::parse(K2).unwrap();
        let e = only_new.open(&s, &aad("r1")).unwrap_err();
        assert_eq!(e, CryptoError::UnknownKey("k1".into()));
        assert_eq!(e.key_id(), Some("k1"));
    }

    #[test]
    fn key_lists_are_checked_and_never_echo_a_key() {
        let secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        for (bad, why) in [
            ("", "no key"),
            ("k1", "not `id:base64-key`"),
            ("k1:not base64!", "not standard base64"),
            ("k1:AAEC", "3 bytes"),
            (":AAEC", "key id"),
            ("bad id:AAEC", "key id"),
            (&format!("{K1},{K1}"), "twice"),
        ] {
            let e = Keyring::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains(secret));
        }
        let ring = Keyring::parse(&format!("{K1}\n{K2}\n")).unwrap();
        assert_eq!(ring.ids(), ["k1", "k2"]);
        let debug = format!("{ring:?}");
        assert!(!debug.contains(secret) && debug.contains("k1"), "{debug}");
        let generated = Keyring::generate_entry("dev");
        assert!(Keyring::parse(&generated).is_ok());
    }

    #[test]
    fn fields_are_sealed_at_their_paths_and_opened_back() {
        let ring = Keyring::parse(K1).unwrap();
        let place = Place {
            keys: &ring,
            tenant: "t1",
            table: "safety_protocols.body",
            row: "id@1",
        };
        let clear = json!({
            "subject": "Patient/1",
            "call_back_numbers": ["+447700900123", "+447700900124"],
            "usual_locations": [{"label": "home", "address": "1 High St"}, {"label": "work"}],
        });
        let paths = ["call_back_numbers.*", "usual_locations.*.address"];
        let mut v = clear.clone();
        place.seal_fields(&mut v, &paths).unwrap();
        assert_eq!(v["subject"], "Patient/1");
        assert_eq!(v["usual_locations"][1], json!({"label": "work"}));
        let text = v.to_string();
        assert!(
            !text.contains("447700900") && !text.contains("High St"),
            "{text}"
        );
        let mut ids = Vec::new();
        Place::key_ids(&mut v, &paths, &mut ids);
        assert_eq!(ids, ["k1"]);
        // Two numbers swapped inside the row: each is bound to its index.
        let mut swapped = v.clone();
        swapped["call_back_numbers"]
            .as_array_mut()
            .unwrap()
            .swap(0, 1);
        assert!(place.open_fields(&mut swapped, &paths).is_err());
        place.open_fields(&mut v, &paths).unwrap();
        assert_eq!(v, clear);
        // A clear value where a sealed one belongs is refused.
        let mut downgraded = clear.clone();
        assert!(place.open_fields(&mut downgraded, &paths).is_err());
    }

    #[test]
    fn whole_values_are_sealed_and_clear_ones_read_as_they_are() {
        let ring = Keyring::parse(K1).unwrap();
        let place = Place {
            keys: &ring,
            tenant: "t1",
            table: "outbox_events.payload",
            row: "e1",
        };
        let v = json!({"detail": "call 07700 900123"});
        let sealed = place.seal_value(&v).unwrap();
        assert!(sealed.as_str().unwrap().starts_with(PREFIX));
        assert_eq!(place.open_value(sealed.clone()).unwrap(), v);
        assert_eq!(place.open_value(v.clone()).unwrap(), v);
        let other = Place { row: "e2", ..place };
        assert!(other.open_value(sealed).is_err());
        let t = place.seal_text("whsec_1").unwrap();
        assert_eq!(place.open_text(&t).unwrap(), "whsec_1");
        assert_eq!(place.open_text("whsec_1").unwrap(), "whsec_1");
    }

    /// Not a benchmark harness, a figure for the README: `cargo test --release --lib
    /// crypto::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost_of_sealing_and_opening_a_field() {
        let ring = Keyring::parse(K1).unwrap();
        let n = 200_000;
        let t = std::time::Instant::now();
        let mut last = String::new();
        for _ in 0..n {
            last = ring.seal(b"+447700900123", &aad("r1")).unwrap();
        }
        let seal = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(ring.open(&last, &aad("r1")).unwrap());
        }
        let open = t.elapsed() / n;
        println!("seal {seal:?} per field, open {open:?} per field");
    }
}
