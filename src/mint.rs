//! `scopegate token mint`: signs test tokens (demo key or any PEM key) with given claims.

use std::path::Path;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::credentials::unix_now;

/// Issuer and audience of demo tokens.
pub const DEMO_ISSUER: &str = "scopegate-demo";
pub const DEMO_AUDIENCE: &str = "commerce-api";
pub const DEMO_KID: &str = "demo";

/// A signing key and how to name it in the header.
pub struct Signer {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: Option<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("{path}: {message}")]
    Key { path: String, message: String },
    #[error("claims must be a JSON object: {0}")]
    Claims(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

impl Signer {
    /// A signer from a PEM private key (or HMAC secret file for HS*).
    pub fn from_file(
        path: &Path,
        algorithm: Algorithm,
        kid: Option<String>,
    ) -> Result<Signer, MintError> {
        let err = |message: String| MintError::Key {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        use jsonwebtoken::AlgorithmFamily as F;
        let key = match algorithm.family() {
            F::Rsa => EncodingKey::from_rsa_pem(&bytes),
            F::Ec => EncodingKey::from_ec_pem(&bytes),
            F::Ed => EncodingKey::from_ed_pem(&bytes),
            F::Hmac => Ok(EncodingKey::from_secret(bytes.trim_ascii_end())),
        }
        .map_err(|e| err(format!("not a {algorithm:?} signing key: {e}")))?;
        Ok(Signer {
            key,
            algorithm,
            kid,
        })
    }

    /// The demo signer: `certs/dev/signing.pem`, RS256, `kid` demo.
    pub fn demo(signing_pem: &Path) -> Result<Signer, MintError> {
        Signer::from_file(signing_pem, Algorithm::RS256, Some(DEMO_KID.into()))
    }

    /// Signs `claims` exactly as given.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, MintError> {
        let mut header = Header::new(self.algorithm);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| MintError::Sign(e.to_string()))
    }
}

/// Demo defaults: `iss`, `aud` and `exp` (now + `ttl`) are filled in unless given; a claim given
/// as `null` is left out (e.g. `"exp": null` for a token without expiry).
pub fn with_demo_defaults(claims: Value, ttl_secs: u64) -> Result<Map<String, Value>, MintError> {
    let Value::Object(mut map) = claims else {
        return Err(MintError::Claims(claims.to_string()));
    };
    map.entry("iss").or_insert_with(|| DEMO_ISSUER.into());
    map.entry("aud").or_insert_with(|| DEMO_AUDIENCE.into());
    map.entry("exp")
        .or_insert_with(|| (unix_now() + ttl_secs).into());
    map.entry("iat").or_insert_with(|| unix_now().into());
    map.retain(|_, v| !v.is_null());
    Ok(map)
}
