//! Verification keys from PEM files, JWKS files or HMAC secrets, each pinned to its algorithms.

use std::path::{Path, PathBuf};

use aws_lc_rs::{hmac, signature};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

/// Where a key set comes from (one `[[jwt.keys]]` entry of the config).
#[derive(Debug, Clone)]
pub enum KeySource {
    Pem { path: PathBuf, kid: Option<String> },
    JwksFile { path: PathBuf },
    HmacSecretFile { path: PathBuf, kid: Option<String> },
}

/// One key and the algorithms it may verify, parsed once at load: a verification is then only
/// the signature arithmetic (jsonwebtoken's `decode` rebuilt the key, and for RSA its Montgomery
/// context, on every call).
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub origin: String,
    /// One checker per algorithm in `algorithms`, in the same order.
    checkers: Vec<Checker>,
}

enum Checker {
    Public(signature::ParsedPublicKey),
    /// Boxed: the key holds its precomputed HMAC state (over a kilobyte).
    Hmac(Box<hmac::Key>),
}

impl VerifyKey {
    /// Whether `signature` is this key's signature of `message` under `alg`; false for an
    /// algorithm the key does not serve.
    pub fn verifies(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        let Some(i) = self.algorithms.iter().position(|a| *a == alg) else {
            return false;
        };
        match &self.checkers[i] {
            Checker::Public(key) => key.verify_sig(message, signature).is_ok(),
            Checker::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
        }
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .field("origin", &self.origin)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Parses algorithm names (`RS256`, `ES256`, `EdDSA`, ...). `none` is never accepted.
pub fn parse_algorithms(names: &[String], origin: &str) -> Result<Vec<Algorithm>, KeyError> {
    if names.is_empty() {
        return Err(invalid(
            origin,
            "`algorithms` must list at least one algorithm",
        ));
    }
    names
        .iter()
        .map(|n| {
            n.parse::<Algorithm>().map_err(|_| {
                invalid(
                    origin,
                    &format!(
                        "unknown algorithm `{n}` (use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384 or HS512)"
                    ),
                )
            })
        })
        .collect()
}

/// Loads every key of one source.
pub fn load(source: &KeySource, algorithms: &[Algorithm]) -> Result<Vec<VerifyKey>, KeyError> {
    match source {
        KeySource::Pem { path, kid } => {
            let origin = path.display().to_string();
            let family = one_family(algorithms, &origin)?;
            let pem = read(path)?;
            let key = match family {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
                AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
                AlgorithmFamily::Hmac => {
                    return Err(invalid(
                        &origin,
                        "HMAC algorithms take `hmac_secret_file`, not `pem`",
                    ));
                }
            }
            .map_err(|e| {
                invalid(
                    &origin,
                    &format!("not a {family:?} public key in PEM form: {e}"),
                )
            })?;
            Ok(vec![verify_key(
                kid.clone(),
                algorithms.to_vec(),
                key,
                origin,
            )?])
        }
        KeySource::HmacSecretFile { path, kid } => {
            let origin = path.display().to_string();
            if one_family(algorithms, &origin)? != AlgorithmFamily::Hmac {
                return Err(invalid(
                    &origin,
                    "`hmac_secret_file` needs HS256, HS384 or HS512",
                ));
            }
            let mut secret = read(path)?;
            while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                secret.pop();
            }
            if secret.len() < 32 {
                return Err(invalid(&origin, "HMAC secret must be at least 32 bytes"));
            }
            let key = DecodingKey::from_secret(&secret);
            Ok(vec![verify_key(
                kid.clone(),
                algorithms.to_vec(),
                key,
                origin,
            )?])
        }
        KeySource::JwksFile { path } => {
            let origin = path.display().to_string();
            let text = read(path)?;
            parse_jwks(&text, algorithms, &origin)
        }
    }
}

/// Parses a JWKS document; each key may verify the configured algorithms of its family
/// (narrowed to its own `alg` when it has one).
pub fn parse_jwks(
    text: &[u8],
    algorithms: &[Algorithm],
    origin: &str,
) -> Result<Vec<VerifyKey>, KeyError> {
    let set = jwk_set(text, origin)?;
    let keys = set
        .keys
        .iter()
        .enumerate()
        .map(|(i, jwk)| jwk_key(jwk, algorithms, format!("{origin} key #{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(invalid(origin, "JWKS holds no keys"));
    }
    Ok(keys)
}

/// As [`parse_jwks`], for documents scopegate does not control (a JWKS URL): keys that cannot
/// be used, are for encryption, or fit none of the configured algorithms are skipped with a
/// warning, so an identity provider publishing mixed key sets still works. At least one key
/// must be usable.
pub fn parse_jwks_skipping(
    text: &[u8],
    algorithms: &[Algorithm],
    origin: &str,
) -> Result<Vec<VerifyKey>, KeyError> {
    let set = jwk_set(text, origin)?;
    let keys: Vec<VerifyKey> = set
        .keys
        .iter()
        .enumerate()
        .filter(|(_, jwk)| jwk.common.public_key_use != Some(PublicKeyUse::Encryption))
        .filter_map(
            |(i, jwk)| match jwk_key(jwk, algorithms, format!("{origin} key #{i}")) {
                Ok(key) => Some(key),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a JWKS key");
                    None
                }
            },
        )
        .collect();
    if keys.is_empty() {
        return Err(invalid(
            origin,
            "JWKS holds no usable key for the configured algorithms",
        ));
    }
    Ok(keys)
}

fn jwk_set(text: &[u8], origin: &str) -> Result<JwkSet, KeyError> {
    serde_json::from_slice(text).map_err(|e| invalid(origin, &format!("not a JWKS document: {e}")))
}

fn jwk_key(jwk: &Jwk, algorithms: &[Algorithm], at: String) -> Result<VerifyKey, KeyError> {
    let key =
        DecodingKey::from_jwk(jwk).map_err(|e| invalid(&at, &format!("unusable key: {e}")))?;
    let mut algs: Vec<Algorithm> = algorithms
        .iter()
        .copied()
        .filter(|a| a.family() == key.family())
        .collect();
    if let Some(own) = jwk.common.key_algorithm {
        let own = Algorithm::try_from(own)
            .map_err(|_| invalid(&at, &format!("unsupported `alg` {own}")))?;
        algs.retain(|a| *a == own);
    }
    if algs.is_empty() {
        return Err(invalid(
            &at,
            &format!("none of the configured algorithms {algorithms:?} fits this key"),
        ));
    }
    verify_key(jwk.common.key_id.clone(), algs, key, at)
}

fn verify_key(
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
    origin: String,
) -> Result<VerifyKey, KeyError> {
    let checkers = algorithms
        .iter()
        .map(|alg| checker(*alg, &key))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&origin, &format!("unusable key: {e}")))?;
    Ok(VerifyKey {
        kid,
        algorithms,
        origin,
        checkers,
    })
}

/// The verification algorithm jsonwebtoken's aws-lc-rs backend uses for `alg` (RSA moduli of
/// 2048 to 8192 bits, fixed-size ECDSA signatures).
enum Params {
    Rsa(&'static signature::RsaParameters),
    Other(&'static dyn signature::VerificationAlgorithm),
    Hmac(hmac::Algorithm),
}

fn params(alg: Algorithm) -> Option<Params> {
    use signature::*;
    Some(match alg {
        Algorithm::RS256 => Params::Rsa(&RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Params::Rsa(&RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Params::Rsa(&RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Params::Rsa(&RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Params::Rsa(&RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Params::Rsa(&RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => Params::Other(&ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Params::Other(&ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Params::Other(&ED25519),
        Algorithm::HS256 => Params::Hmac(hmac::HMAC_SHA256),
        Algorithm::HS384 => Params::Hmac(hmac::HMAC_SHA384),
        Algorithm::HS512 => Params::Hmac(hmac::HMAC_SHA512),
        _ => return None,
    })
}

/// The parsed key for one algorithm.
fn checker(alg: Algorithm, key: &DecodingKey) -> Result<Checker, String> {
    if alg.family() != key.family() {
        return Err(format!("{alg:?} does not fit a {:?} key", key.family()));
    }
    let parsed = match (params(alg), key.kind()) {
        (Some(Params::Hmac(algorithm)), DecodingKeyKind::SecretOrDer(secret)) => {
            return Ok(Checker::Hmac(Box::new(hmac::Key::new(algorithm, secret))));
        }
        (Some(Params::Rsa(rsa)), DecodingKeyKind::SecretOrDer(der)) => {
            signature::ParsedPublicKey::new(rsa, der)
        }
        (Some(Params::Rsa(rsa)), DecodingKeyKind::RsaModulusExponent { n, e }) => {
            signature::RsaPublicKeyComponents { n, e }.to_parsed_public_key(rsa)
        }
        (Some(Params::Other(other)), DecodingKeyKind::SecretOrDer(bytes)) => {
            signature::ParsedPublicKey::new(other, bytes)
        }
        _ => return Err(format!("{alg:?} does not fit this key's form")),
    };
    parsed
        .map(Checker::Public)
        .map_err(|e| format!("{alg:?} key rejected: {e}"))
}

fn one_family(algorithms: &[Algorithm], origin: &str) -> Result<AlgorithmFamily, KeyError> {
    let first = algorithms
        .first()
        .ok_or_else(|| invalid(origin, "`algorithms` must list at least one algorithm"))?
        .family();
    if algorithms.iter().any(|a| a.family() != first) {
        return Err(invalid(
            origin,
            "one key cannot serve algorithms of different families",
        ));
    }
    Ok(first)
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn invalid(origin: &str, message: &str) -> KeyError {
    KeyError::Invalid {
        origin: origin.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_cannot_serve_its_algorithm_fails_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("es.pub.pem");
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(&path, p256.public_key_pem()).unwrap();
        let source = KeySource::Pem {
            path: path.clone(),
            kid: None,
        };
        assert!(load(&source, &[Algorithm::ES256]).is_ok());
        // A P-256 key listed for ES384 (P-384): refused here, not at the first token.
        let err = load(&source, &[Algorithm::ES384]).unwrap_err().to_string();
        assert!(err.contains("es.pub.pem") && err.contains("ES384"), "{err}");
    }

    #[test]
    fn remote_documents_skip_keys_that_do_not_fit_but_files_do_not() {
        let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let jwks = crate::demo::material::jwks_for(rsa.serialize_pem().as_bytes()).unwrap();
        let mut doc: serde_json::Value = serde_json::from_str(&jwks).unwrap();
        let rsa_key = doc["keys"][0].clone();
        let mut enc = rsa_key.clone();
        enc["kid"] = "enc".into();
        enc["use"] = "enc".into();
        let hmac = serde_json::json!({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "kid": "hs"});
        doc["keys"] = serde_json::json!([hmac, enc, rsa_key]);
        let text = doc.to_string();
        let keys = parse_jwks_skipping(text.as_bytes(), &[Algorithm::RS256], "idp").unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("demo"));
        assert!(parse_jwks(text.as_bytes(), &[Algorithm::RS256], "file").is_err());
        let err = parse_jwks_skipping(text.as_bytes(), &[Algorithm::ES256], "idp").unwrap_err();
        assert!(err.to_string().contains("no usable key"), "{err}");
    }
}
