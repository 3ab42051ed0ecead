//! Verification keys from PEM files, JWKS files or HMAC secrets, each pinned to its algorithms.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

/// Where a key set comes from (one `[[jwt.keys]]` entry of the config).
#[derive(Debug, Clone)]
pub enum KeySource {
    Pem { path: PathBuf, kid: Option<String> },
    JwksFile { path: PathBuf },
    HmacSecretFile { path: PathBuf, kid: Option<String> },
}

/// One key, the algorithms it may verify, and the validation that pins them.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    /// Signature-only validation: claims are checked by scopegate itself.
    pub validation: Validation,
    /// Where the key came from (for errors and `explain`).
    pub origin: String,
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
            )])
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
            )])
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
    Ok(verify_key(jwk.common.key_id.clone(), algs, key, at))
}

fn verify_key(
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
    origin: String,
) -> VerifyKey {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.clone();
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    VerifyKey {
        kid,
        algorithms,
        key,
        validation,
        origin,
    }
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
