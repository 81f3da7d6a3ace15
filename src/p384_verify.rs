//! ES384 signature checks with a table precomputed for each EHR public key.
//!
//! Checking an ECDSA signature computes `u1·G + u2·Q`, where `G` is the curve's generator and
//! `Q` the signer's public key. A general-purpose library (AWS-LC here before) does it with
//! about 384 point doublings and a hundred additions, for every token: the doublings were a
//! quarter of all the service's CPU under CDS Hooks load. But an EHR signs every token with the
//! same few keys from its JWKS, so this module pays once per key instead: for each of the 48
//! bytes of a scalar (and a carry) it keeps the 128 multiples `m·256^i·P` (`m` = 1..128) of
//! the point; the scalar's bytes are recoded as signed digits (-128..127), and a
//! multiplication is then one table lookup and one addition or subtraction per non-zero
//! digit, with no doubling. Two such products and one addition make the check (about 100 additions against
//! about 500 group operations).
//!
//! Only public values enter (the key, the message, the signature), so the variable time of a
//! lookup by byte reveals nothing secret. The point and scalar arithmetic is RustCrypto's
//! `p384` (complete addition formulas, inputs checked on the curve); this module only chooses
//! which points to add. Tests check the product for every byte value at every position
//! (against multiples computed apart, and `p384`'s own multiplication for some), random
//! products, and whole signatures against AWS-LC's verdicts.
//!
//! A table is 49 × 128 affine points (about 650 KB); the generator's is built once, a key's
//! when it is first used (or as the JWKS is read). At most [`KEY_CACHE`] keys are kept.

use p384::elliptic_curve::bigint::Reduce;
use p384::elliptic_curve::point::AffineCoordinates;
use p384::elliptic_curve::{BatchNormalize, Group, PrimeField};
use p384::{AffinePoint, FieldBytes, ProjectivePoint, Scalar};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

/// Table rows: one for each of the 48 bytes of a P-384 scalar, and one for the carry out of
/// the top byte.
const ROWS: usize = 49;
/// Entries of a row: the multiples 1..=128, the magnitudes of the signed digits -128..=127.
const ROW_LEN: usize = 128;
/// Keys whose tables are kept (a JWKS holds a few; more only if keys rotate often).
pub const KEY_CACHE: usize = 16;

/// `m·256^i·P` for each row `i` and magnitude `m` = 1..=128, in affine form.
pub struct Comb {
    points: Vec<AffinePoint>,
}

impl Comb {
    pub fn new(point: ProjectivePoint) -> Comb {
        let mut points = Vec::with_capacity(ROWS * ROW_LEN);
        let mut base = point;
        let mut row = Vec::with_capacity(ROW_LEN);
        for _ in 0..ROWS {
            row.clear();
            let mut multiple = base;
            for _ in 0..ROW_LEN {
                row.push(multiple);
                multiple += base;
            }
            points.extend(
                <ProjectivePoint as BatchNormalize<[ProjectivePoint]>>::batch_normalize(&row),
            );
            // 256·base = 2·(128·base): the next row's base.
            base = row[ROW_LEN - 1].double();
        }
        Comb { points }
    }

    /// `k·P`: `k`'s bytes recoded as signed digits in -128..=127 (a byte of 128 or more
    /// becomes the byte minus 256, carrying one into the next), one table entry added or
    /// subtracted for each non-zero digit.
    pub fn mul(&self, k: &Scalar) -> ProjectivePoint {
        // Big-endian: the last byte is the least significant (row 0).
        let bytes = k.to_bytes();
        let mut sum = ProjectivePoint::IDENTITY;
        let mut carry = 0;
        for (row, &byte) in bytes.iter().rev().enumerate() {
            let mut digit = i16::from(byte) + carry;
            carry = 0;
            if digit >= 128 {
                digit -= 256;
                carry = 1;
            }
            self.add_digit(&mut sum, row, digit);
        }
        self.add_digit(&mut sum, ROWS - 1, carry);
        sum
    }

    fn add_digit(&self, sum: &mut ProjectivePoint, row: usize, digit: i16) {
        let entry = |magnitude: i16| {
            &self.points[row * ROW_LEN + usize::from(magnitude.unsigned_abs()) - 1]
        };
        match digit {
            0 => {}
            1.. => *sum += entry(digit),
            _ => *sum -= entry(digit),
        }
    }
}

static GENERATOR: LazyLock<Comb> = LazyLock::new(|| Comb::new(ProjectivePoint::GENERATOR));

/// A P-384 public key with its table.
pub struct VerifyingKey {
    comb: Comb,
}

impl VerifyingKey {
    /// From an uncompressed SEC1 point (`04 ‖ x ‖ y`, 97 bytes), the form a JWK's `x` and `y`
    /// make; `None` unless it is a point of the curve other than the identity.
    pub fn from_sec1(bytes: &[u8]) -> Option<VerifyingKey> {
        let (&[4], xy) = bytes.split_at_checked(1)? else {
            return None;
        };
        let (x, y) = xy.split_at_checked(48)?;
        if y.len() != 48 {
            return None;
        }
        let point: Option<AffinePoint> = AffinePoint::from_coordinates(
            &FieldBytes::try_from(x).ok()?,
            &FieldBytes::try_from(y).ok()?,
        )
        .into();
        let point = ProjectivePoint::from(point?);
        if bool::from(point.is_identity()) {
            return None;
        }
        Some(VerifyingKey {
            comb: Comb::new(point),
        })
    }

    /// Whether `signature` (`r ‖ s`, 48 bytes each, as JWS puts it) is this key's ECDSA
    /// signature of `message` with SHA-384.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some((r, s)) = signature
            .split_at_checked(48)
            .filter(|(_, s)| s.len() == 48)
        else {
            return false;
        };
        let (Some(r), Some(s)) = (nonzero_scalar(r), nonzero_scalar(s)) else {
            return false;
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, message);
        let Ok(digest) = FieldBytes::try_from(digest.as_ref()) else {
            return false;
        };
        // The hash is as long as the group order, so it is taken whole, reduced mod n.
        let e = <Scalar as Reduce<FieldBytes>>::reduce(&digest);
        let Some(w) = Option::<Scalar>::from(s.invert()) else {
            return false;
        };
        let point = GENERATOR.mul(&(e * w)) + self.comb.mul(&(r * w));
        if bool::from(point.is_identity()) {
            return false;
        }
        let x = point.to_affine().x();
        <Scalar as Reduce<FieldBytes>>::reduce(&x) == r
    }
}

/// A scalar in 1..n-1 from 48 big-endian bytes; `None` for 0 or n and above.
fn nonzero_scalar(bytes: &[u8]) -> Option<Scalar> {
    let repr = FieldBytes::try_from(bytes).ok()?;
    Option::<Scalar>::from(Scalar::from_repr(repr)).filter(|s| !bool::from(s.is_zero()))
}

static KEYS: LazyLock<RwLock<HashMap<Vec<u8>, Arc<VerifyingKey>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// The key for an uncompressed SEC1 point, its table built on first use and kept. `None` if
/// the bytes are not a usable point.
pub fn key(sec1: &[u8]) -> Option<Arc<VerifyingKey>> {
    if let Some(key) = KEYS.read().unwrap_or_else(|p| p.into_inner()).get(sec1) {
        return Some(Arc::clone(key));
    }
    let key = Arc::new(VerifyingKey::from_sec1(sec1)?);
    let mut keys = KEYS.write().unwrap_or_else(|p| p.into_inner());
    if keys.len() >= KEY_CACHE {
        // Keys only come from the configured JWKS; more than this means it rotated.
        keys.clear();
    }
    keys.insert(sec1.to_vec(), Arc::clone(&key));
    Some(key)
}

/// Builds the generator's table and the key's ahead of the first token, so that token is not
/// the one that waits for them (about 30 ms).
pub fn prepare(sec1: &[u8]) {
    LazyLock::force(&GENERATOR);
    let _ = key(sec1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P384_SHA384_FIXED,
        ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    use proptest::prelude::*;

    fn keypair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap()
    }

    fn scalar(bytes: [u8; 48]) -> Scalar {
        <Scalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(bytes))
    }

    fn aws_lc_verdict(public: &[u8], message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, public)
            .verify(message, signature)
            .is_ok()
    }

    #[test]
    fn every_byte_value_at_every_position_multiplies_as_p384_does() {
        let point = ProjectivePoint::GENERATOR * scalar([7; 48]);
        let comb = Comb::new(point);
        // `256^row·P` by doublings, and its multiples by additions (independent of the
        // table's own construction by rows); a few values per row also by p384's `*`.
        let mut base = point;
        for row in 0..48 {
            let mut expected = ProjectivePoint::IDENTITY;
            for value in 0..=255u8 {
                let mut bytes = [0u8; 48];
                bytes[47 - row] = value;
                let k = scalar(bytes);
                assert_eq!(comb.mul(&k), expected, "byte {value} at position {row}");
                if matches!(value, 1 | 2 | 127 | 128 | 255) {
                    assert_eq!(comb.mul(&k), point * k, "byte {value} at position {row}");
                }
                expected += base;
            }
            for _ in 0..8 {
                base = base.double();
            }
        }
        // Carries running through every byte (each 128 or more), into the extra row.
        for bytes in [[0x80; 48], [0xff; 48], [0x7f; 48]] {
            let k = scalar(bytes);
            assert_eq!(comb.mul(&k), point * k, "{bytes:x?}");
        }
        // The largest scalar (n - 1), and 0.
        let minus_one = -Scalar::ONE;
        assert_eq!(comb.mul(&minus_one), -point);
        assert_eq!(comb.mul(&Scalar::ZERO), ProjectivePoint::IDENTITY);
        assert_eq!(GENERATOR.mul(&minus_one), -ProjectivePoint::GENERATOR);
    }

    #[test]
    fn signatures_are_judged_as_aws_lc_judges_them() {
        let rng = SystemRandom::new();
        let pair = keypair();
        let public = pair.public_key().as_ref();
        let key = VerifyingKey::from_sec1(public).unwrap();
        let message = b"eyJhbGciOiJFUzM4NCJ9.eyJ0ZW5hbnQiOiJ0In0";
        let signature = pair.sign(&rng, message).unwrap();
        let signature = signature.as_ref();
        assert!(key.verify(message, signature));
        assert!(aws_lc_verdict(public, message, signature));
        // The other s (n - s) is as valid to both (ECDSA does not require a low s).
        let s = nonzero_scalar(&signature[48..]).unwrap();
        let mut flipped = signature.to_vec();
        flipped[48..].copy_from_slice(&(-s).to_bytes());
        assert!(key.verify(message, &flipped));
        assert!(aws_lc_verdict(public, message, &flipped));
        // Refused by both: another message, a changed r or s, r or s zero or the order,
        // a short or long signature, another key.
        let n = {
            let mut n = (-Scalar::ONE).to_bytes();
            n[47] += 1;
            n
        };
        let mut refused: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"other".to_vec(), signature.to_vec()),
            (message.to_vec(), signature[..95].to_vec()),
            (message.to_vec(), [signature, &[0]].concat()),
            (
                message.to_vec(),
                [&[0u8; 48][..], &signature[48..]].concat(),
            ),
            (
                message.to_vec(),
                [&signature[..48], &[0u8; 48][..]].concat(),
            ),
            (message.to_vec(), [&n[..], &signature[48..]].concat()),
            (message.to_vec(), [&signature[..48], &n[..]].concat()),
        ];
        for i in [0, 47, 48, 95] {
            let mut changed = signature.to_vec();
            changed[i] ^= 1;
            refused.push((message.to_vec(), changed));
        }
        for (m, sig) in &refused {
            assert!(!key.verify(m, sig));
            assert!(!aws_lc_verdict(public, m, sig));
        }
        let other = VerifyingKey::from_sec1(keypair().public_key().as_ref()).unwrap();
        assert!(!other.verify(message, signature));
    }

    #[test]
    fn only_points_of_the_curve_are_keys() {
        let pair = keypair();
        let public = pair.public_key().as_ref();
        assert!(VerifyingKey::from_sec1(public).is_some());
        let mut off_curve = public.to_vec();
        off_curve[96] ^= 1;
        assert!(VerifyingKey::from_sec1(&off_curve).is_none());
        let mut compressed_tag = public.to_vec();
        compressed_tag[0] = 2;
        assert!(VerifyingKey::from_sec1(&compressed_tag).is_none());
        assert!(VerifyingKey::from_sec1(&public[..96]).is_none());
        assert!(VerifyingKey::from_sec1(&[public, &[0]].concat()).is_none());
        assert!(VerifyingKey::from_sec1(&[4u8; 97]).is_none());
        assert!(key(&off_curve).is_none());
        let first = key(public).unwrap();
        assert!(
            Arc::ptr_eq(&first, &key(public).unwrap()),
            "the table is kept"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random scalars: the table's product is `p384`'s.
        #[test]
        fn products_match(k in any::<[u8; 48]>()) {
            let k = scalar(k);
            prop_assert_eq!(GENERATOR.mul(&k), ProjectivePoint::GENERATOR * k);
        }

        /// Random messages and damage: both libraries give the same verdict.
        #[test]
        fn verdicts_match(message in proptest::collection::vec(any::<u8>(), 0..200),
                          flip in proptest::option::of((0usize..96, 1u8..=255))) {
            static PAIR: LazyLock<EcdsaKeyPair> = LazyLock::new(keypair);
            let public = PAIR.public_key().as_ref();
            let key = key(public).unwrap();
            let mut signature = PAIR.sign(&SystemRandom::new(), &message).unwrap().as_ref().to_vec();
            if let Some((at, bits)) = flip {
                signature[at] ^= bits;
            }
            let verdict = key.verify(&message, &signature);
            prop_assert_eq!(verdict, aws_lc_verdict(public, &message, &signature));
            prop_assert_eq!(verdict, flip.is_none());
        }
    }
}
