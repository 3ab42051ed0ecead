//! Forwarding to the upstream: a keep-alive HTTP/1.1 connection pool per upstream, the request
//! rewritten (normalised path, hop-by-hop headers out, X-Forwarded-* and identity headers in),
//! bounded in time and body size.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Scheme;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::body::{self, BodyError, Relayed};
use crate::credentials::Identity;
use crate::refusal::Refusal;

/// Body sent upstream: the client's, read ahead and capped at the configured size.
pub type UpstreamBody = Relayed<Incoming>;

/// Settings of one upstream (from the serve config).
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    pub url: Uri,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Response bodies up to this size are read whole before the status goes to the client.
    pub read_ahead: usize,
}

/// One upstream origin and its connection pool.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    /// Path prefix of the upstream URL, without a trailing slash ("" for none).
    base_path: String,
    response_timeout: Duration,
    read_ahead: usize,
    pool: Arc<Pool>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("upstream `{name}`: url `{url}` must be http://host:port[/base]")]
    BadUrl { name: String, url: String },
}

impl Upstream {
    pub fn new(spec: &UpstreamSpec) -> Result<Upstream, UpstreamConfigError> {
        let bad = || UpstreamConfigError::BadUrl {
            name: spec.name.clone(),
            url: spec.url.to_string(),
        };
        let scheme = spec.url.scheme().cloned().ok_or_else(bad)?;
        if scheme != Scheme::HTTP || spec.url.query().is_some() {
            return Err(bad());
        }
        let authority = spec.url.authority().cloned().ok_or_else(bad)?;
        let origin = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|_| bad())?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(spec.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        Ok(Upstream {
            name: spec.name.as_str().into(),
            base_path: spec.url.path().trim_end_matches('/').to_owned(),
            response_timeout: spec.response_timeout,
            read_ahead: spec.read_ahead,
            pool: Arc::new(Pool {
                connector,
                origin,
                conns: Mutex::new(Vec::new()),
                max_idle: spec.pool_max_idle,
                idle_timeout: spec.pool_idle_timeout,
                reaping: AtomicBool::new(false),
            }),
        })
    }

    /// The request target sent upstream (origin form): the base path, the normalised path and
    /// the client's query.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, Refusal> {
        let mut pq = String::with_capacity(
            self.base_path.len() + path.len() + 1 + query.map_or(0, str::len),
        );
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::try_from(pq).map_err(|_| Refusal::Ambiguous("unforwardable_target"))
    }

    /// Sends the prepared request. The response head must come within the response timeout,
    /// and its body (up to the read-ahead bound) with no gap longer than that: a body that
    /// breaks or stalls there is a 502 or 504, not a cut-off 200.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Relayed<Incoming>>, Refusal> {
        let response =
            match tokio::time::timeout(self.response_timeout, self.pool.send(request)).await {
                Err(_) => return Err(Refusal::UpstreamTimeout),
                Ok(Ok(response)) => response,
                Ok(Err(e)) => return Err(e.refusal()),
            };
        let (parts, incoming) = response.into_parts();
        match body::read_ahead(incoming, self.read_ahead, u64::MAX, self.response_timeout).await {
            Ok(body) => Ok(Response::from_parts(parts, body)),
            Err(BodyError::Idle(_)) => Err(Refusal::UpstreamTimeout),
            Err(_) => Err(Refusal::UpstreamFailed),
        }
    }
}

/// Keep-alive HTTP/1.1 connections to one upstream (hyper's client protocol; the pool is ours
/// because hyper-util's generic one spawned a task and a channel per response to learn when a
/// connection was free again). A connection goes back on the list as soon as its response head
/// is in; a request takes the most recently used one that is ready (hyper says so once the
/// previous exchange, body included, is over) and opens a new one when none is. Closed
/// connections are dropped on the way, and ready ones idle longer than the idle timeout, also
/// by a background sweep. At most `max_idle` are kept.
struct Pool {
    connector: HttpConnector,
    /// `http://host:port/`, what the connector dials.
    origin: Uri,
    conns: Mutex<Vec<Pooled>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether the sweep task runs (started with the first connection, inside the runtime).
    reaping: AtomicBool,
}

struct Pooled {
    sender: http1::SendRequest<UpstreamBody>,
    /// When it went back on the list.
    since: Instant,
}

impl Pooled {
    /// On the list longer than `idle_timeout` (an idle timeout only once it is ready again).
    fn idle_past(&self, idle_timeout: Duration) -> bool {
        self.since.elapsed() >= idle_timeout
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .field("max_idle", &self.max_idle)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// Why a request got no response head.
#[derive(Debug)]
enum SendError {
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Http(hyper::Error),
}

impl SendError {
    fn refusal(&self) -> Refusal {
        match self {
            SendError::Connect(e) => {
                tracing::debug!(error = %e, "upstream connect failed");
                Refusal::UpstreamUnreachable
            }
            SendError::Http(e) => {
                let mut source: Option<&(dyn std::error::Error + 'static)> =
                    std::error::Error::source(e);
                while let Some(s) = source {
                    if let Some(e) = s.downcast_ref::<BodyError>() {
                        return match e {
                            BodyError::TooLarge(_) => Refusal::BodyTooLarge,
                            BodyError::Idle(_) => Refusal::BodyTimeout,
                            BodyError::Broken(_) => Refusal::Malformed("bad_request_body"),
                        };
                    }
                    source = s.source();
                }
                tracing::debug!(error = %e, "upstream exchange failed");
                Refusal::UpstreamFailed
            }
        }
    }
}

impl Pool {
    async fn send(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut pooled = self.checkout();
        loop {
            let (mut sender, reused) = match pooled.take() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.put_back(sender);
                    return Ok(response);
                }
                // A kept connection that closed before the request went out (the upstream's
                // idle timeout raced this request): nothing was sent, so try another.
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        pooled = self.checkout();
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    fn checkout(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = conns.iter().rposition(|c| c.sender.is_ready()) {
            let c = conns.remove(i);
            if !c.idle_past(self.idle_timeout) {
                return Some(c.sender);
            }
        }
        conns.retain(|c| !c.sender.is_closed());
        None
    }

    fn put_back(&self, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() < self.max_idle {
            conns.push(Pooled {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<http1::SendRequest<UpstreamBody>, SendError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(io.into_inner()))
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        if !self.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
        Ok(sender)
    }
}

/// Closes kept connections idle longer than the idle timeout, and forgets closed ones, until
/// the pool is gone.
async fn sweep(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut conns = pool.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| {
            !(c.sender.is_closed() || (c.sender.is_ready() && c.idle_past(pool.idle_timeout)))
        });
    }
}

/// Names of the identity headers scopegate sets (configurable).
#[derive(Debug, Clone)]
pub struct IdentityHeaderNames {
    pub subject: HeaderName,
    pub client: HeaderName,
    pub scopes: HeaderName,
    pub token_kind: HeaderName,
    pub role: HeaderName,
    pub route: HeaderName,
}

impl Default for IdentityHeaderNames {
    fn default() -> Self {
        IdentityHeaderNames {
            subject: HeaderName::from_static("x-scopegate-subject"),
            client: HeaderName::from_static("x-scopegate-client"),
            scopes: HeaderName::from_static("x-scopegate-scopes"),
            token_kind: HeaderName::from_static("x-scopegate-token-kind"),
            role: HeaderName::from_static("x-scopegate-role"),
            route: HeaderName::from_static("x-scopegate-route"),
        }
    }
}

impl IdentityHeaderNames {
    fn all(&self) -> [&HeaderName; 6] {
        [
            &self.subject,
            &self.client,
            &self.scopes,
            &self.token_kind,
            &self.role,
            &self.route,
        ]
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// Headers some frameworks read as "the real method" (a POST judged as POST would run as DELETE).
static METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];
const IDENTITY_PREFIX: &[u8] = b"x-scopegate-";

/// Hop-by-hop headers (RFC 9110 7.6.1).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Hop-by-hop headers (RFC 9110 7.6.1) and whatever `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present notes which listed ones occur; most requests carry none,
    // and most responses only `Connection: keep-alive`, so only those few are removed by hash.
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names `Connection` lists (`close` and the listed ones aside, which need nothing extra).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| {
            !n.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(n))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// What the forwarded request says about the client and the decision.
#[derive(Debug)]
pub struct ForwardContext<'a> {
    /// The client's address, as `X-Forwarded-For` carries it.
    pub forwarded_for: &'a HeaderValue,
    pub tls: bool,
    pub host: Option<HeaderValue>,
    pub identity: Option<&'a Identity>,
    pub route: &'a HeaderValue,
}

/// Rewrites request headers for the upstream. Client-sent identity headers never pass.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    names: &IdentityHeaderNames,
    cx: &ForwardContext<'_>,
) {
    remove_hop_by_hop(headers);
    // One pass over the names present: identity headers the client sent (they never pass),
    // `Forwarded`, and method overrides (the method that was judged is the method the upstream
    // runs). Usually none, and then nothing is allocated.
    let stripped: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            k.as_str().as_bytes().starts_with(IDENTITY_PREFIX)
                || names.all().contains(k)
                || **k == FORWARDED
                || METHOD_OVERRIDES.contains(k)
        })
        .cloned()
        .collect();
    for name in stripped {
        headers.remove(name);
    }
    headers.insert(X_FORWARDED_FOR.clone(), cx.forwarded_for.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if cx.tls { "https" } else { "http" }),
    );
    match &cx.host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            headers.insert(header::HOST, host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    headers.insert(names.route.clone(), cx.route.clone());
    if let Some(id) = cx.identity {
        let h = &id.headers;
        for (name, value) in [
            (&names.subject, &h.subject),
            (&names.client, &h.client),
            (&names.scopes, &h.scopes),
            (&names.token_kind, &h.token_kind),
            (&names.role, &h.roles),
        ] {
            if let Some(v) = value {
                headers.insert(name.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "Keep-Alive, X-Private ,close"),
            ("connection", "upgrade"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9v"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
            ("content-type", "application/json"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        remove_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);

        // Only `Connection: keep-alive`, as most upstream responses carry.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_LENGTH));

        // Nothing listed: nothing changes.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }
}
