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

/// Builds the server TLS config from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
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
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| load(key, format!("no usable private key: {e}")))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Pair)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
