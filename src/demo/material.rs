//! Dev material for the demo, created on first run if absent: a self-signed TLS certificate for
//! `localhost` and `127.0.0.1`, an RSA signing key (PKCS#8) and its JWKS (`kid` demo).

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256};

use crate::mint::DEMO_KID;

/// Paths of the dev files.
#[derive(Debug, Clone)]
pub struct DevMaterial {
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub signing_key: PathBuf,
    pub jwks: PathBuf,
}

impl DevMaterial {
    pub fn in_dir(dir: &Path) -> DevMaterial {
        DevMaterial {
            tls_cert: dir.join("tls.crt"),
            tls_key: dir.join("tls.key"),
            signing_key: dir.join("signing.pem"),
            jwks: dir.join("jwks.json"),
        }
    }
}

/// Creates whatever of the dev material is missing in `dir` and returns the paths.
pub fn ensure(dir: &Path) -> anyhow::Result<DevMaterial> {
    std::fs::create_dir_all(dir)?;
    let m = DevMaterial::in_dir(dir);
    if !m.tls_cert.exists() || !m.tls_key.exists() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let cert = params.self_signed(&key)?;
        write_private(&m.tls_key, key.serialize_pem().as_bytes())?;
        std::fs::write(&m.tls_cert, cert.pem())?;
    }
    if !m.signing_key.exists() || !m.jwks.exists() {
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256)?;
        let pem = key.serialize_pem();
        write_private(&m.signing_key, pem.as_bytes())?;
        std::fs::write(&m.jwks, jwks_for(pem.as_bytes())?)?;
    }
    Ok(m)
}

/// The public JWKS of an RSA private key in PEM form, `kid` demo, RS256.
pub fn jwks_for(private_pem: &[u8]) -> anyhow::Result<String> {
    let key = EncodingKey::from_rsa_pem(private_pem)?;
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256)?;
    jwk.common.key_id = Some(DEMO_KID.into());
    jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    Ok(serde_json::to_string_pretty(&JwkSet { keys: vec![jwk] })?)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
