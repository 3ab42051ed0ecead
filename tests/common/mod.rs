//! Shared test plumbing: a recording upstream, the proxy started in-process on port 0, and a
//! real HTTP/1.1 + HTTP/2 client over TLS.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use scopegate::app::{App, Running};
use scopegate::config::Config;
use scopegate::demo::material::{self, DevMaterial};
use scopegate::mint::{Signer, with_demo_defaults};

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

/// How the test upstream behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    /// Answers after 400 ms.
    Slow,
    Stall,
}

/// A real upstream server on loopback that records every request.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        async move {
                            record.lock().unwrap().push(Seen {
                                method: req.method().to_string(),
                                path: req.uri().path().to_owned(),
                                query: req.uri().query().map(str::to_owned),
                                headers: req.headers().clone(),
                            });
                            match behaviour {
                                Behaviour::Answer => {}
                                Behaviour::Slow => {
                                    tokio::time::sleep(Duration::from_millis(400)).await
                                }
                                Behaviour::Stall => {
                                    tokio::time::sleep(Duration::from_secs(30)).await
                                }
                            }
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                b"{\"upstream\":true}",
                            ))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw a request")
    }
}

/// An address where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Route file used by most tests: scope rules, a principal rule and a public route.
pub const TEST_ROUTES: &str = r#"
[preset]
name = "test-shop"

[scopes]
implies = { write_orders = ["read_orders"] }

[principals.seller-admin]
token_type = "client_credentials"
roles = ["seller-admin"]

[[route]]
path = "/shop/orders"
below = true
read = { scopes = ["read_orders"] }
write = { scopes = ["write_orders"] }

[[route]]
path = "/shop/customers/{id}"
GET = { principals = ["seller-admin"] }

[[route]]
path = "/shop/health"
read = { public = true }

[[route]]
path = "/shop/catalog"
read = { any_scopes = ["read_products", "write_products"] }
"#;

/// A proxy running in-process with its dev material, upstream and signer.
pub struct Harness {
    pub running: Running,
    pub upstream: Upstream,
    pub signer: Signer,
    pub material: DevMaterial,
    pub dir: tempfile::TempDir,
    pub client: Client,
}

impl Harness {
    pub async fn start(routes: &str) -> Harness {
        let upstream = Upstream::start(Behaviour::Answer).await;
        Harness::with_upstream(routes, upstream.addr, upstream, "").await
    }

    /// Starts the proxy in front of `upstream_addr`; `extra` is appended to the config.
    pub async fn with_upstream(
        routes: &str,
        upstream_addr: SocketAddr,
        upstream: Upstream,
        extra: &str,
    ) -> Harness {
        Harness::build(routes, upstream_addr, upstream, extra, true).await
    }

    /// As `with_upstream`, choosing TLS or a plaintext listener.
    pub async fn build(
        routes: &str,
        upstream_addr: SocketAddr,
        upstream: Upstream,
        extra: &str,
        tls: bool,
    ) -> Harness {
        Harness::build_with(routes, upstream_addr, upstream, extra, tls, |c| c).await
    }

    /// As `build`, with a last edit of the config text.
    pub async fn build_with(
        routes: &str,
        upstream_addr: SocketAddr,
        upstream: Upstream,
        extra: &str,
        tls: bool,
        edit: impl FnOnce(String) -> String,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let material = material::ensure(&dir.path().join("certs")).unwrap();
        std::fs::create_dir_all(dir.path().join("routes")).unwrap();
        std::fs::write(dir.path().join("routes/test.toml"), routes).unwrap();
        let mut config = config_text(dir.path(), &material, upstream_addr, extra);
        if !tls {
            config = config
                .lines()
                .filter(|l| !l.starts_with("tls_"))
                .collect::<Vec<_>>()
                .join("\n");
        }
        let config = edit(config);
        let config_path = dir.path().join("scopegate.toml");
        std::fs::write(&config_path, config).unwrap();
        let app = App::build(Config::load(&config_path).unwrap()).unwrap();
        let running = app
            .start(
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
            .unwrap();
        let signer = Signer::demo(&material.signing_key).unwrap();
        let client = Client::new(&material.tls_cert);
        Harness {
            running,
            upstream,
            signer,
            material,
            dir,
            client,
        }
    }

    pub fn routes_dir(&self) -> PathBuf {
        self.dir.path().join("routes")
    }

    /// A demo-key token with demo defaults (iss, aud, exp) filled in.
    pub fn token(&self, claims: Value) -> String {
        self.signer
            .sign(&with_demo_defaults(claims, 3600).unwrap())
            .unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Version::H1, "GET", path, token, &[]).await
    }

    pub async fn send(
        &self,
        version: Version,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            builder = builder.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        self.client
            .send(
                self.running.proxy_addr,
                version,
                builder.body(Full::new(Bytes::new())).unwrap(),
            )
            .await
    }

    pub async fn metrics(&self) -> String {
        let stream = TcpStream::connect(self.running.admin_addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let response = sender
            .send_request(
                Request::builder()
                    .uri("/metrics")
                    .header("host", "admin")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }
}

pub fn config_text(
    dir: &Path,
    material: &DevMaterial,
    upstream: SocketAddr,
    extra: &str,
) -> String {
    let q = |p: &Path| toml::Value::from(p.display().to_string()).to_string();
    format!(
        r#"realm = "test"
[listen]
address = "127.0.0.1:0"
tls_cert = {cert}
tls_key = {key}
[routes]
paths = [{routes}]
[upstreams.default]
url = "http://{upstream}"
connect_timeout = "500ms"
response_timeout = "500ms"
[jwt]
issuer = "scopegate-demo"
audiences = ["commerce-api"]
leeway = "5s"
[[jwt.keys]]
jwks_file = {jwks}
algorithms = ["RS256"]
# Elastic Path companion tokens (demo: signed by the same key, told apart by token_type).
[jwt.companions.customer]
[[jwt.companions.customer.keys]]
jwks_file = {jwks}
algorithms = ["RS256"]

[jwt.companions.account_management]
[[jwt.companions.account_management.keys]]
jwks_file = {jwks}
algorithms = ["RS256"]
[log]
access = true
[reload]
watch = false
{extra}
"#,
        cert = q(&material.tls_cert),
        key = q(&material.tls_key),
        routes = q(&dir.join("routes")),
        jwks = q(&material.jwks),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    H1,
    H2,
}

/// A response, body collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// A TLS client that trusts exactly the proxy's dev certificate.
#[derive(Clone)]
pub struct Client {
    h1: tokio_rustls::TlsConnector,
    h2: tokio_rustls::TlsConnector,
}

impl Client {
    pub fn new(cert: &Path) -> Client {
        use rustls::pki_types::pem::PemObject;
        let pinned = CertificateDer::from_pem_file(cert).unwrap();
        let connector = |alpn: &[u8]| {
            let mut config = rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned(pinned.clone())))
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(config))
        };
        Client {
            h1: connector(b"http/1.1"),
            h2: connector(b"h2"),
        }
    }

    /// HTTP/1.1 without TLS (for the plaintext listener).
    pub async fn send_plain(&self, addr: SocketAddr, mut request: Request<Full<Bytes>>) -> Reply {
        request
            .headers_mut()
            .insert("host", "localhost".parse().unwrap());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let (parts, body) = sender.send_request(request).await.unwrap().into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
            version: parts.version,
        }
    }

    pub async fn connect(
        &self,
        addr: SocketAddr,
        version: Version,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = match version {
            Version::H1 => &self.h1,
            Version::H2 => &self.h2,
        };
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    pub async fn send(
        &self,
        addr: SocketAddr,
        version: Version,
        mut request: Request<Full<Bytes>>,
    ) -> Reply {
        let stream = self.connect(addr, version).await;
        let response: Response<Incoming> = match version {
            Version::H1 => {
                if !request.headers().contains_key("host") {
                    request
                        .headers_mut()
                        .insert("host", "localhost".parse().unwrap());
                }
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender.send_request(request).await.unwrap()
            }
            Version::H2 => {
                if request.uri().authority().is_none() {
                    let uri = format!("https://localhost{}", request.uri());
                    *request.uri_mut() = uri.parse().unwrap();
                }
                let (mut sender, conn) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender.send_request(request).await.unwrap()
            }
        };
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
            version: parts.version,
        }
    }
}

/// Accepts exactly one certificate; signatures are still checked.
#[derive(Debug)]
struct Pinned(CertificateDer<'static>);

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("unexpected certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
