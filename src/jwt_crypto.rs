//! Signature checks for asymmetric JWTs with AWS-LC (`aws-lc-rs`), and ES384 with a table per
//! key (`p384_verify`).
//!
//! jsonwebtoken's RustCrypto backend checks an ES384 signature in about 0.8 ms of CPU, which on
//! a small server is most of the cost of an EHR's CDS Hooks call (every call brings a fresh,
//! single-use token, so nothing can be cached). `ring` (tried before) has no assembly for
//! P-384 and was not much faster; AWS-LC checks P-384 several times faster and RSA as fast.
//! ES384 goes further: an EHR signs with the few keys of its JWKS, so `p384_verify` keeps a
//! table for each and checks without point doublings. This provider uses AWS-LC for
//! RS256/RS384/RS512/ES256, `p384_verify` for ES384, and keeps RustCrypto for everything else
//! (HMAC, PSS, signing, JWK utilities). The algorithm is still pinned by the key before a
//! signature is looked at (see `auth.rs`); this only changes who does the arithmetic.

use crate::p384_verify;
use aws_lc_rs::signature::{self as rs, RsaPublicKeyComponents, UnparsedPublicKey};
use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use std::sync::{Arc, LazyLock};

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    signer_factory: rust_crypto::DEFAULT_PROVIDER.signer_factory,
    verifier_factory: new_verifier,
    key_utils: rust_crypto::DEFAULT_PROVIDER.key_utils.clone(),
});

/// Makes this provider the process's (once; later calls, e.g. from tests building several
/// applications, find it installed).
pub fn install() {
    let _ = CryptoProvider::install_default(&PROVIDER);
}

/// Builds what checking `key`'s signatures will need ahead of the first token: for an ES384
/// key its table, on the signature pool that will use it (about 30 ms; a thread of its own
/// for this cost 2 MiB more of resident memory). Called as the JWKS is read.
pub fn prepare(alg: Algorithm, key: &DecodingKey) {
    if let (Algorithm::ES384, DecodingKeyKind::SecretOrDer(point)) = (alg, key.kind()) {
        let point = point.clone();
        crate::sig_pool::submit(move || p384_verify::prepare(&point));
    }
}

/// A public key as the checks take it.
enum Key {
    /// An uncompressed EC point, or an RSA public key in PKCS#1 DER.
    Der(Vec<u8>),
    /// RSA modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// A P-384 key with its precomputed table (ES384, `p384_verify`).
    P384(Arc<p384_verify::VerifyingKey>),
}

struct LcVerifier {
    alg: Algorithm,
    params: &'static dyn rs::VerificationAlgorithm,
    rsa_params: Option<&'static rs::RsaParameters>,
    key: Key,
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let (family, params, rsa_params): (_, &'static dyn rs::VerificationAlgorithm, _) = match alg {
        Algorithm::ES256 => (AlgorithmFamily::Ec, &rs::ECDSA_P256_SHA256_FIXED, None),
        Algorithm::ES384 => (AlgorithmFamily::Ec, &rs::ECDSA_P384_SHA384_FIXED, None),
        Algorithm::RS256 => (
            AlgorithmFamily::Rsa,
            &rs::RSA_PKCS1_2048_8192_SHA256,
            Some(&rs::RSA_PKCS1_2048_8192_SHA256),
        ),
        Algorithm::RS384 => (
            AlgorithmFamily::Rsa,
            &rs::RSA_PKCS1_2048_8192_SHA384,
            Some(&rs::RSA_PKCS1_2048_8192_SHA384),
        ),
        Algorithm::RS512 => (
            AlgorithmFamily::Rsa,
            &rs::RSA_PKCS1_2048_8192_SHA512,
            Some(&rs::RSA_PKCS1_2048_8192_SHA512),
        ),
        _ => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(alg, key),
    };
    if key.family() != family {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(LcVerifier {
        alg: *alg,
        params,
        rsa_params,
        key: Key::new(*alg, key),
    }))
}

impl Key {
    fn new(alg: Algorithm, key: &DecodingKey) -> Key {
        match key.kind() {
            // A point that is not on the curve stays with AWS-LC, which refuses it as before.
            DecodingKeyKind::SecretOrDer(point) if alg == Algorithm::ES384 => {
                p384_verify::key(point).map_or_else(|| Key::Der(point.clone()), Key::P384)
            }
            DecodingKeyKind::SecretOrDer(der) => Key::Der(der.clone()),
            DecodingKeyKind::RsaModulusExponent { n, e } => Key::Rsa {
                n: n.clone(),
                e: e.clone(),
            },
        }
    }
}

impl Verifier<Vec<u8>> for LcVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> std::result::Result<(), SignatureError> {
        let ok = match (&self.key, self.rsa_params) {
            (Key::Der(der), _) => UnparsedPublicKey::new(self.params, der)
                .verify(msg, signature)
                .is_ok(),
            (Key::Rsa { n, e }, Some(params)) => RsaPublicKeyComponents { n, e }
                .verify(params, msg, signature)
                .is_ok(),
            (Key::Rsa { .. }, None) => false,
            (Key::P384(key), _) => key.verify(msg, signature),
        };
        if ok {
            Ok(())
        } else {
            Err(SignatureError::new())
        }
    }
}

impl JwtVerifier for LcVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{decode, encode, EncodingKey, Header, Validation};

    fn jwk_key(name: &str) -> DecodingKey {
        let path = format!(
            "{}/tests/fixtures/{name}.jwk.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let jwk: Jwk = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        DecodingKey::from_jwk(&jwk).unwrap()
    }

    #[test]
    fn es384_keys_from_a_jwks_get_a_table_and_es256_keys_stay_with_aws_lc() {
        assert!(matches!(
            Key::new(Algorithm::ES384, &jwk_key("es384")),
            Key::P384(_)
        ));
        assert!(matches!(
            Key::new(Algorithm::ES256, &jwk_key("es256")),
            Key::Der(_)
        ));
        assert!(matches!(
            Key::new(Algorithm::RS384, &jwk_key("rs384")),
            Key::Rsa { .. }
        ));
    }

    #[test]
    fn an_es384_token_checks_through_the_table_and_a_changed_one_does_not() {
        install();
        let pem = std::fs::read(format!(
            "{}/tests/fixtures/es384.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let signing = EncodingKey::from_ec_pem(&pem).unwrap();
        let sign = |sub: &str| {
            let claims = serde_json::json!({"sub": sub, "exp": 4_102_444_800u64});
            encode(&Header::new(Algorithm::ES384), &claims, &signing).unwrap()
        };
        let token = sign("ehr");
        let mut validation = Validation::new(Algorithm::ES384);
        validation.validate_aud = false;
        let key = jwk_key("es384");
        assert!(decode::<serde_json::Value>(&token, &key, &validation).is_ok());
        // Another payload under the same signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = sign("other");
        parts[1] = other.split('.').nth(1).unwrap();
        let forged = parts.join(".");
        let refused = decode::<serde_json::Value>(&forged, &key, &validation).unwrap_err();
        assert_eq!(refused.kind(), &ErrorKind::InvalidSignature);
    }
}
