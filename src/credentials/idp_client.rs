//! The outbound HTTP(S) connector for identity-provider calls (JWKS URLs, introspection):
//! aws-lc-rs, the system's root certificates, HTTP/1.1.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

/// A connector for `purpose` (named in the warning if the system roots cannot be loaded, in
/// which case https calls fail and plain http on loopback still works).
pub fn connector(purpose: &str, connect_timeout: Duration) -> HttpsConnector<HttpConnector> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(Arc::clone(&provider))
    {
        Ok(builder) => builder,
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the system's root certificates; https {purpose} calls will fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("aws-lc-rs supports the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    builder.https_or_http().enable_http1().wrap_connector(http)
}
