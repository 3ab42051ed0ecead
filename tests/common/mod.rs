//! Shared test plumbing: a recording upstream, the proxy started in-process on port 0
//! (`Harness::new(routes)...start()`), a real HTTP/1.1 + HTTP/2 client over TLS
//! (`h.request(method, path)...send()`), the decision alone with no sockets
//! (`Policy::new(routes)...build()`, `policy.request(..)...verdict()`), and the serve config as
//! a TOML value (`set`, `get`, `remove`, `merge`).
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
use toml::Table;

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
    /// The body, once read: the bytes when it ended cleanly, else the error. `None` while it
    /// is still being read (the request is recorded as soon as its head is in).
    pub body: Option<Result<Bytes, String>>,
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
                            let index = {
                                let mut seen = record.lock().unwrap();
                                seen.push(Seen {
                                    method: req.method().to_string(),
                                    path: req.uri().path().to_owned(),
                                    query: req.uri().query().map(str::to_owned),
                                    headers: req.headers().clone(),
                                    body: None,
                                });
                                seen.len() - 1
                            };
                            match behaviour {
                                Behaviour::Answer => {}
                                Behaviour::Slow => {
                                    tokio::time::sleep(Duration::from_millis(400)).await
                                }
                                Behaviour::Stall => {
                                    tokio::time::sleep(Duration::from_secs(30)).await
                                }
                            }
                            let body = match req.into_body().collect().await {
                                Ok(collected) => Ok(collected.to_bytes()),
                                Err(e) => Err(e.to_string()),
                            };
                            if let Some(seen) = record.lock().unwrap().get_mut(index) {
                                seen.body = Some(body);
                            }
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
    /// Whether the proxy listener speaks TLS (see [`HarnessBuilder::plaintext`]).
    pub tls: bool,
}

/// One edit of the serve config, applied in order once the base config is built.
type Edit<'a> = Box<dyn FnOnce(&mut Table) + Send + 'a>;

/// What a test proxy's files are made from: the route file, TLS or not, and the config edits.
struct Setup<'a> {
    routes: &'a str,
    tls: bool,
    edits: Vec<Edit<'a>>,
}

/// The files of one test proxy on disk, and the config loaded from them.
struct Files {
    dir: tempfile::TempDir,
    material: DevMaterial,
    config: Config,
}

impl<'a> Setup<'a> {
    fn new(routes: &'a str) -> Setup<'a> {
        Setup {
            routes,
            tls: true,
            edits: Vec::new(),
        }
    }

    fn config(&mut self, edit: impl FnOnce(&mut Table) + Send + 'a) {
        self.edits.push(Box::new(edit));
    }

    #[track_caller]
    fn toml(&mut self, extra: &str) {
        let extra = parse_fragment(extra);
        self.config(move |table| merge_table(table, extra, ""));
    }

    /// Writes the dev material, `routes/test.toml` and `scopegate.toml` (the base config, then
    /// every edit in order) and loads the config the way `scopegate serve` does.
    fn write(self, upstream: SocketAddr) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let material = material::ensure(&dir.path().join("certs")).unwrap();
        std::fs::create_dir_all(dir.path().join("routes")).unwrap();
        std::fs::write(dir.path().join("routes/test.toml"), self.routes).unwrap();
        let mut table = config_table(dir.path(), &material, upstream);
        if !self.tls {
            plaintext(&mut table);
        }
        for edit in self.edits {
            edit(&mut table);
        }
        let path = dir.path().join("scopegate.toml");
        write_config(&path, &table);
        let config = Config::load(&path).unwrap_or_else(|e| {
            panic!(
                "the test config does not load: {e}\n{}",
                std::fs::read_to_string(&path).unwrap()
            )
        });
        Files {
            dir,
            material,
            config,
        }
    }
}

/// How a [`Harness`] is started: `Harness::new(routes)`, then any of the settings, then
/// `.start().await`.
pub struct HarnessBuilder<'a> {
    setup: Setup<'a>,
    upstream: Option<Upstream>,
    upstream_addr: Option<SocketAddr>,
}

impl Harness {
    /// A proxy serving `routes` (as `routes/test.toml`); see [`HarnessBuilder`].
    #[allow(clippy::new_ret_no_self)] // `Harness::new(routes)...start().await` reads as intended
    pub fn new(routes: &str) -> HarnessBuilder<'_> {
        HarnessBuilder {
            setup: Setup::new(routes),
            upstream: None,
            upstream_addr: None,
        }
    }

    /// TLS, a recording upstream that answers, the base config.
    pub async fn start(routes: &str) -> Harness {
        Harness::new(routes).start().await
    }
}

impl<'a> HarnessBuilder<'a> {
    /// No TLS on the proxy listener (as behind a terminating load balancer). Requests built
    /// with `h.request(..)` are then sent as plaintext HTTP/1.1.
    pub fn plaintext(mut self) -> Self {
        self.setup.tls = false;
        self
    }

    /// Forward to `upstream` (started by the test) instead of a fresh answering one.
    pub fn upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Forward to `addr`, where maybe nothing listens. `h.upstream` is still a recording
    /// upstream: the one given to [`Self::upstream`], else a fresh one that sees nothing.
    pub fn upstream_addr(mut self, addr: SocketAddr) -> Self {
        self.upstream_addr = Some(addr);
        self
    }

    /// Edits the serve config as a TOML value (edits run in order, after the base config and
    /// `.plaintext()`); see [`set`], [`get`], [`remove`], or index it:
    /// `t["limits"]["max_connections"] = 2.into()` (panics if `limits` is absent).
    pub fn config(mut self, edit: impl FnOnce(&mut Table) + Send + 'a) -> Self {
        self.setup.config(edit);
        self
    }

    /// Merges a TOML fragment into the serve config (see [`merge`]): new keys are added, a key
    /// already set to another value panics, `[[x]]` entries are appended.
    #[track_caller]
    pub fn toml(mut self, extra: &str) -> Self {
        self.setup.toml(extra);
        self
    }

    pub async fn start(self) -> Harness {
        let upstream = match self.upstream {
            Some(upstream) => upstream,
            None => Upstream::start(Behaviour::Answer).await,
        };
        let forward_to = self.upstream_addr.unwrap_or(upstream.addr);
        let tls = self.setup.tls;
        let Files {
            dir,
            material,
            config,
        } = self.setup.write(forward_to);
        let app = App::build(config).unwrap();
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
            tls,
        }
    }
}

impl Harness {
    pub fn routes_dir(&self) -> PathBuf {
        self.dir.path().join("routes")
    }

    /// A demo-key token with demo defaults (iss, aud, exp) filled in.
    pub fn token(&self, claims: Value) -> String {
        self.signer
            .sign(&with_demo_defaults(claims, 3600).unwrap())
            .unwrap()
    }

    /// A request to the proxy: `.token(..)`, `.header(..)`, `.h2()`, `.body(..)`, `.send().await`.
    pub fn request(&self, method: &str, path: &str) -> RequestBuilder<&Harness> {
        request(method, path).to(self)
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
        let mut request = self.request(method, path).version(version);
        if let Some(token) = token {
            request = request.token(token);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await
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

/// A request as a test writes it. `T` is where it goes: a [`Harness`] (`.send()`), a
/// [`Policy`] (`.verdict()`), or nowhere yet (`()`, from [`request`]).
pub struct RequestBuilder<T = ()> {
    to: T,
    method: String,
    path: String,
    version: Version,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// A request going nowhere yet: give it to [`Policy::verdict`].
pub fn request(method: &str, path: &str) -> RequestBuilder {
    RequestBuilder {
        to: (),
        method: method.to_owned(),
        path: path.to_owned(),
        version: Version::H1,
        headers: Vec::new(),
        body: Bytes::new(),
    }
}

impl<T> RequestBuilder<T> {
    /// `Authorization: Bearer <token>`.
    pub fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Adds a header (a name given twice is sent twice).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// HTTP/2 instead of HTTP/1.1.
    pub fn h2(self) -> Self {
        self.version(Version::H2)
    }

    pub fn version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    fn to<U>(self, to: U) -> RequestBuilder<U> {
        RequestBuilder {
            to,
            method: self.method,
            path: self.path,
            version: self.version,
            headers: self.headers,
            body: self.body,
        }
    }

    /// The request as written (the client adds `Host` or the authority when sending).
    fn http(self) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder.body(Full::new(self.body)).unwrap()
    }
}

impl RequestBuilder<&Harness> {
    /// Sends it over a new connection (TLS unless the harness is plaintext) and collects the
    /// reply.
    pub async fn send(self) -> Reply {
        let h = self.to;
        let version = self.version;
        let request = self.to(()).http();
        if h.tls {
            h.client.send(h.running.proxy_addr, version, request).await
        } else {
            assert_eq!(
                version,
                Version::H1,
                "the plaintext listener is sent HTTP/1.1 only"
            );
            h.client.send_plain(h.running.proxy_addr, request).await
        }
    }
}

/// The decision in-process, with no sockets: the app built from a route file and the test
/// serve config (plaintext, an upstream that is never contacted), nothing started.
pub struct Policy {
    pub app: App,
    pub signer: Signer,
    pub material: DevMaterial,
    pub dir: tempfile::TempDir,
}

/// How a [`Policy`] is built: `Policy::new(routes)`, any config edits, then `.build()`.
pub struct PolicyBuilder<'a> {
    setup: Setup<'a>,
}

/// What the decision says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// 200 when it would be forwarded, else the refusal's status.
    pub status: u16,
    /// `forward`, `would_deny` (shadow route), or the refusal's decision (`forbidden`, ...).
    pub outcome: &'static str,
    /// `permitted`, or the refusal's reason (`insufficient_scope`, `no_route`, ...).
    pub reason: &'static str,
    /// What the route's rule for the method needs (`None` without a route or rule).
    pub needed: Option<String>,
}

impl Policy {
    /// The decision for `routes` (as `routes/test.toml`); see [`PolicyBuilder`].
    #[allow(clippy::new_ret_no_self)] // `Policy::new(routes)...build()`, as `Harness::new`
    pub fn new(routes: &str) -> PolicyBuilder<'_> {
        let mut setup = Setup::new(routes);
        setup.tls = false;
        PolicyBuilder { setup }
    }

    /// A demo-key token with demo defaults (iss, aud, exp) filled in.
    pub fn token(&self, claims: Value) -> String {
        self.signer
            .sign(&with_demo_defaults(claims, 3600).unwrap())
            .unwrap()
    }

    /// A request to judge: `.token(..)`, `.header(..)`, then `.verdict().await`.
    pub fn request(&self, method: &str, path: &str) -> RequestBuilder<&Policy> {
        request(method, path).to(self)
    }

    /// The decision for `request` (its body is not read).
    pub async fn verdict<T>(&self, request: RequestBuilder<T>) -> Verdict {
        let version = request.version;
        let (mut parts, _) = request.to(()).http().into_parts();
        // As the client sends it: HTTP/1.1 with `Host: localhost` unless one is given, HTTP/2
        // with the authority `localhost`.
        match version {
            Version::H1 => {
                if !parts.headers.contains_key("host") {
                    parts.headers.insert("host", "localhost".parse().unwrap());
                }
            }
            Version::H2 => {
                parts.version = http::Version::HTTP_2;
                if parts.uri.authority().is_none() {
                    parts.uri = format!("https://localhost{}", parts.uri).parse().unwrap();
                }
            }
        }
        // The one call into the decision.
        let e = self.app.policy().explain(&parts).await;
        let outcome = match &e.verdict {
            scopegate::policy::Verdict::Allow => "forward",
            scopegate::policy::Verdict::WouldDeny(_) => "would_deny",
            scopegate::policy::Verdict::Deny(r) => r.decision(),
        };
        Verdict {
            status: e.verdict.status(),
            outcome,
            reason: e.verdict.reason(),
            needed: e.needed,
        }
    }
}

impl RequestBuilder<&Policy> {
    pub async fn verdict(self) -> Verdict {
        let policy = self.to;
        policy.verdict(self).await
    }
}

impl<'a> PolicyBuilder<'a> {
    /// As [`HarnessBuilder::config`].
    pub fn config(mut self, edit: impl FnOnce(&mut Table) + Send + 'a) -> Self {
        self.setup.config(edit);
        self
    }

    /// As [`HarnessBuilder::toml`].
    #[track_caller]
    pub fn toml(mut self, extra: &str) -> Self {
        self.setup.toml(extra);
        self
    }

    /// `App::build` on the loaded config; no listener is bound.
    pub fn build(self) -> Policy {
        // Never contacted: the decision alone forwards nothing.
        let Files {
            dir,
            material,
            config,
        } = self.setup.write(SocketAddr::from(([127, 0, 0, 1], 9)));
        let app = App::build(config).unwrap();
        let signer = Signer::demo(&material.signing_key).unwrap();
        Policy {
            app,
            signer,
            material,
            dir,
        }
    }
}

/// The serve config every test proxy starts from, as a TOML value (edit it with [`set`],
/// [`get`], [`remove`], [`merge`]; write it with [`write_config`]).
pub fn config_table(dir: &Path, material: &DevMaterial, upstream: SocketAddr) -> Table {
    let q = |p: &Path| toml::Value::from(p.display().to_string()).to_string();
    let text = format!(
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
"#,
        cert = q(&material.tls_cert),
        key = q(&material.tls_key),
        routes = q(&dir.join("routes")),
        jwks = q(&material.jwks),
    );
    text.parse().unwrap()
}

/// [`config_table`] with the fragment `extra` merged in (see [`merge`]), as text.
pub fn config_text(
    dir: &Path,
    material: &DevMaterial,
    upstream: SocketAddr,
    extra: &str,
) -> String {
    let mut table = config_table(dir, material, upstream);
    merge(&mut table, extra);
    toml::to_string(&table).unwrap()
}

/// Writes `table` as the TOML file `Config::load` reads.
pub fn write_config(path: &Path, table: &Table) {
    std::fs::write(path, toml::to_string(table).unwrap()).unwrap();
}

/// No TLS on the proxy listener: removes `listen.tls_cert` and `listen.tls_key`.
pub fn plaintext(table: &mut Table) {
    remove(table, "listen.tls_cert");
    remove(table, "listen.tls_key");
}

/// Splits `a.b.c` into the tables to walk and the last key.
fn split_path(path: &str) -> (Vec<&str>, &str) {
    let mut keys: Vec<&str> = path.split('.').collect();
    let last = keys.pop().unwrap();
    assert!(
        !last.is_empty() && keys.iter().all(|k| !k.is_empty()),
        "`{path}`: empty key"
    );
    (keys, last)
}

/// The table at `keys` under `table`; `create` adds missing ones, else a missing one panics.
/// Panics when a key on the way holds something other than a table.
#[track_caller]
fn walk<'t>(table: &'t mut Table, keys: &[&str], path: &str, create: bool) -> &'t mut Table {
    let mut at = table;
    for (i, key) in keys.iter().enumerate() {
        let walked = keys[..=i].join(".");
        let next = if create {
            at.entry(key.to_string())
                .or_insert_with(|| toml::Value::Table(Table::new()))
        } else {
            at.get_mut(*key)
                .unwrap_or_else(|| panic!("`{path}`: the config has no `{walked}`"))
        };
        at = match next {
            toml::Value::Table(t) => t,
            other => panic!(
                "`{path}`: `{walked}` is {} {other}, not a table",
                other.type_str()
            ),
        };
    }
    at
}

/// Sets `path` (dotted: `limits.max_connections`) to `value`, creating missing tables on the
/// way. Panics if the path goes through something that is not a table.
#[track_caller]
pub fn set(table: &mut Table, path: &str, value: impl Into<toml::Value>) {
    let (keys, last) = split_path(path);
    walk(table, &keys, path, true).insert(last.to_owned(), value.into());
}

/// The value at `path`, to edit in place. Panics if it is absent.
#[track_caller]
pub fn get<'t>(table: &'t mut Table, path: &str) -> &'t mut toml::Value {
    let (keys, last) = split_path(path);
    walk(table, &keys, path, false)
        .get_mut(last)
        .unwrap_or_else(|| panic!("the config has no `{path}`"))
}

/// Removes `path` and returns what it held. Panics if it is absent.
#[track_caller]
pub fn remove(table: &mut Table, path: &str) -> toml::Value {
    let (keys, last) = split_path(path);
    walk(table, &keys, path, false)
        .remove(last)
        .unwrap_or_else(|| panic!("the config has no `{path}` to remove"))
}

/// Merges the TOML fragment `extra` into `table`, as if appended to the file but without
/// duplicate-table errors: tables merge key by key, a new key is added, a key already set must
/// have the same value (else this panics, naming it: change it with [`set`] instead), and an
/// array of tables (`[[jwt.keys]]`) gets the fragment's entries appended.
#[track_caller]
pub fn merge(table: &mut Table, extra: &str) {
    merge_table(table, parse_fragment(extra), "");
}

#[track_caller]
fn parse_fragment(extra: &str) -> Table {
    extra
        .parse()
        .unwrap_or_else(|e| panic!("the TOML fragment does not parse: {e}\n{extra}"))
}

fn is_array_of_tables(values: &[toml::Value]) -> bool {
    !values.is_empty() && values.iter().all(toml::Value::is_table)
}

fn merge_table(into: &mut Table, from: Table, at: &str) {
    for (key, value) in from {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match (into.get_mut(&key), value) {
            (None, value) => {
                into.insert(key, value);
            }
            (Some(toml::Value::Table(existing)), toml::Value::Table(new)) => {
                merge_table(existing, new, &path)
            }
            (Some(toml::Value::Array(existing)), toml::Value::Array(new))
                if is_array_of_tables(existing) && is_array_of_tables(&new) =>
            {
                existing.extend(new)
            }
            (Some(existing), value) => assert!(
                *existing == value,
                "the TOML fragment sets `{path}` = {value}, but the config already has {existing} \
                 (change it with `set` / `.config(..)` instead)"
            ),
        }
    }
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
        if !request.headers().contains_key("host") {
            request
                .headers_mut()
                .insert("host", "localhost".parse().unwrap());
        }
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

/// What came back for `bytes` written on a raw socket, and whether the proxy closed the
/// connection afterwards (within 3 s).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The status of a raw HTTP/1.1 response.
pub fn status_of(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}
