//! TLS termination settings: certificate chain and key from PEM, ALPN `h2` and `http/1.1`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
    #[error("certificate and key do not form a usable pair: {0}")]
    Pair(rustls::Error),
}

/// A loaded server certificate: the TLS config and when its leaf expires.
#[derive(Debug)]
pub struct ServerCert {
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's notAfter, unix seconds; `None` if it could not be read.
    pub not_after: Option<i64>,
}

/// Builds the server TLS config from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    load(cert, key).map(|c| c.config)
}

/// The notAfter of a DER certificate, unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// As [`server_config`], also reading the leaf certificate's expiry.
pub fn load(cert: &Path, key: &Path) -> Result<ServerCert, TlsError> {
    let load = |path: &Path, message: String| TlsError::Load {
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| load(cert, format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| load(cert, format!("bad certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(load(cert, "no CERTIFICATE block".into()));
    }
    let leaf_not_after = not_after(&chain[0]);
    if leaf_not_after.is_none() {
        tracing::warn!(path = %cert.display(), "cannot read the certificate's notAfter");
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| load(key, format!("no usable private key: {e}")))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Pair)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerCert {
        config: Arc::new(config),
        not_after: leaf_not_after,
    })
}
