//! Opaque (non-JWT) bearer tokens: RFC 7662 introspection against an authorization server,
//! and a static token file holding only SHA-256 hashes of tokens.
//!
//! Introspection results are cached by token hash (never the token): active tokens in a
//! [`TokenCache`] for at most `max_ttl` and never past `exp`, inactive tokens in a small
//! negative cache for `negative_ttl`. An unavailable authorization server is never cached and
//! never allows. Concurrent lookups of one token share a single HTTP call.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::cache::{CacheKey, TokenCache, TokenHash, cache_key, hash_token};
use super::{Identity, idp_client, unix_now};
use crate::telemetry::Metrics;

/// Largest introspection response read.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where and how to introspect tokens.
#[derive(Clone)]
pub struct IntrospectionSpec {
    pub url: Uri,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Whole call: connect, request, response body.
    pub timeout: Duration,
    /// Cap on how long an active token is cached (also capped by its `exp`).
    pub max_ttl: Duration,
    /// How long an inactive token is remembered.
    pub negative_ttl: Duration,
    /// Bound on each of the positive and negative caches.
    pub max_entries: usize,
}

impl std::fmt::Debug for IntrospectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionSpec")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .field("max_ttl", &self.max_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

/// Why an opaque token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpaqueError {
    /// The authorization server says the token is not active, or its answer is not usable as
    /// an identity (401 `invalid_token`).
    #[error("token is not active")]
    Inactive,
    /// The authorization server could not answer (503). Never allows, never cached.
    #[error("token introspection is unavailable")]
    Unavailable,
}

type Outcome = Result<Arc<Identity>, OpaqueError>;
type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Resolves opaque tokens through RFC 7662 introspection, with caching and single-flight.
pub struct Introspector {
    url: Uri,
    client_id: Option<String>,
    /// Pre-built `Authorization: Basic ...` (sensitive), when both id and secret are set.
    authorization: Option<HeaderValue>,
    timeout: Duration,
    negative_ttl: Duration,
    max_entries: usize,
    client: HttpsClient,
    positive: TokenCache,
    negative: DashMap<CacheKey, Instant>,
    inflight: DashMap<CacheKey, Arc<OnceCell<Outcome>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("authenticated", &self.authorization.is_some())
            .field("timeout", &self.timeout)
            .field("negative_ttl", &self.negative_ttl)
            .field("cached", &self.positive.len())
            .field("negative_cached", &self.negative.len())
            .finish()
    }
}

/// Removes a finished (or abandoned) in-flight lookup, if it is still the registered one.
struct InflightGuard<'a> {
    map: &'a DashMap<CacheKey, Arc<OnceCell<Outcome>>>,
    key: CacheKey,
    cell: Arc<OnceCell<Outcome>>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.map
            .remove_if(&self.key, |_, c| Arc::ptr_eq(c, &self.cell));
    }
}

impl Introspector {
    pub fn new(spec: IntrospectionSpec, metrics: Arc<Metrics>) -> Introspector {
        let connector = idp_client::connector("introspection", spec.timeout);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let authorization = match (&spec.client_id, &spec.client_secret) {
            (Some(id), Some(secret)) => {
                // RFC 6749 section 2.3.1: both parts form-encoded, then Basic.
                let pair = format!("{}:{}", form_encode(id), form_encode(secret));
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                HeaderValue::from_str(&format!("Basic {encoded}"))
                    .ok()
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
            }
            _ => None,
        };
        Introspector {
            url: spec.url,
            client_id: spec.client_id,
            authorization,
            timeout: spec.timeout,
            negative_ttl: spec.negative_ttl,
            max_entries: spec.max_entries,
            client,
            positive: TokenCache::new(spec.max_entries, spec.max_ttl.as_secs()),
            negative: DashMap::new(),
            inflight: DashMap::new(),
            metrics,
        }
    }

    /// The identity behind an opaque token: cached, or introspected once however many callers
    /// ask at the same time.
    pub async fn resolve(&self, token: &str) -> Result<Arc<Identity>, OpaqueError> {
        let key = cache_key(token);
        if let Some(cached) = self.cached(&key) {
            return cached;
        }
        let cell = self
            .inflight
            .entry(key)
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let _guard = InflightGuard {
            map: &self.inflight,
            key,
            cell: cell.clone(),
        };
        cell.get_or_init(|| async {
            // A lookup that finished between our cache check and joining it has cached its answer.
            if let Some(cached) = self.cached(&key) {
                return cached;
            }
            let outcome = self.introspect(token).await;
            match &outcome {
                Ok(identity) => self.positive.insert(key, identity.clone(), unix_now()),
                Err(OpaqueError::Inactive) => self.remember_inactive(key),
                Err(OpaqueError::Unavailable) => {}
            }
            outcome
        })
        .await
        .clone()
    }

    fn cached(&self, key: &CacheKey) -> Option<Outcome> {
        if let Some(identity) = self.positive.get(key, unix_now()) {
            return Some(Ok(identity));
        }
        let until = self.negative.get(key).map(|e| *e)?;
        if until > Instant::now() {
            Some(Err(OpaqueError::Inactive))
        } else {
            self.negative.remove_if(key, |_, u| *u <= Instant::now());
            None
        }
    }

    fn remember_inactive(&self, key: CacheKey) {
        if self.max_entries == 0 || self.negative_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if self.negative.len() >= self.max_entries {
            self.negative.retain(|_, until| *until > now);
            if self.negative.len() >= self.max_entries {
                self.negative.clear();
            }
        }
        self.negative.insert(key, now + self.negative_ttl);
    }

    /// One HTTP call to the introspection endpoint, counted by result.
    async fn introspect(&self, token: &str) -> Outcome {
        let outcome = match tokio::time::timeout(self.timeout, self.call(token)).await {
            Ok(Ok(body)) => match serde_json::from_slice::<Value>(&body) {
                Ok(json) => identity_from_response(&json, unix_now()).map(Arc::new),
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, "introspection: response is not JSON");
                    Err(OpaqueError::Unavailable)
                }
            },
            Ok(Err(reason)) => {
                tracing::warn!(url = %self.url, reason, "introspection failed");
                Err(OpaqueError::Unavailable)
            }
            Err(_) => {
                tracing::warn!(url = %self.url, timeout = ?self.timeout, "introspection timed out");
                Err(OpaqueError::Unavailable)
            }
        };
        let label = match &outcome {
            Ok(_) => "active",
            Err(OpaqueError::Inactive) => "inactive",
            Err(OpaqueError::Unavailable) => "unavailable",
        };
        self.metrics
            .introspections
            .with_label_values(&[label])
            .inc();
        outcome
    }

    /// POSTs the token; the 200 response body, or why there is none (never the token).
    async fn call(&self, token: &str) -> Result<Bytes, String> {
        let mut form = format!("token={}&token_type_hint=access_token", form_encode(token));
        if self.authorization.is_none()
            && let Some(id) = &self.client_id
        {
            // A public client identifies itself in the body (RFC 6749 section 2.3.1).
            form.push_str("&client_id=");
            form.push_str(&form_encode(id));
        }
        let mut request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| format!("cannot build request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(format!("status {status}"));
        }
        Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| format!("reading response: {e}"))
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The identity an RFC 7662 response describes. A response that is not a JSON object means
/// the server is misbehaving (`Unavailable`); anything other than `"active": true`, a past
/// `exp`, or a mapped field of the wrong type is `Inactive`.
fn identity_from_response(json: &Value, now: u64) -> Result<Identity, OpaqueError> {
    let Some(obj) = json.as_object() else {
        return Err(OpaqueError::Unavailable);
    };
    if obj.get("active") != Some(&Value::Bool(true)) {
        return Err(OpaqueError::Inactive);
    }
    let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
    let string = |name: &str| -> Result<Option<Box<str>>, OpaqueError> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str().into())),
            Some(_) => Err(OpaqueError::Inactive),
        }
    };
    let scopes: Box<[Box<str>]> = string("scope")?
        .map(|s| s.split_whitespace().map(Into::into).collect())
        .unwrap_or_default();
    let client = string("client_id")?;
    let subject = match string("sub")? {
        Some(s) => Some(s),
        None => string("username")?,
    };
    let token_kind = string("token_type")?;
    let expires_at = match field("exp") {
        None => None,
        Some(v) => {
            let exp = v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or(OpaqueError::Inactive)?;
            if exp <= now {
                return Err(OpaqueError::Inactive);
            }
            Some(exp)
        }
    };
    let roles: Box<[Box<str>]> = match field("roles") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| r.as_str().map(Into::into).ok_or(OpaqueError::Inactive))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(OpaqueError::Inactive),
        None => string("role")?.into_iter().collect(),
    };
    let tenant: Option<Box<str>> = match field("store_id") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str().into()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string().into()),
        Some(_) => return Err(OpaqueError::Inactive),
    };
    Ok(Identity::new(
        subject, client, token_kind, roles, scopes, tenant, expires_at,
    )
    .opaque())
}

/// Tokens configured in a file, held only as SHA-256 hashes.
pub struct StaticTokens {
    tokens: HashMap<TokenHash, Arc<Identity>>,
}

impl std::fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticTokens")
            .field("len", &self.tokens.len())
            .finish()
    }
}

/// A static token file that could not be used; names the file and, when known, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct StaticTokensError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<toml::Spanned<TokenEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    sha256: toml::Spanned<String>,
    #[serde(default)]
    scope: String,
    client_id: Option<String>,
    token_type: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    store_id: Option<String>,
    subject: Option<String>,
    expires_at: Option<u64>,
}

impl StaticTokens {
    pub fn load(path: &Path) -> Result<StaticTokens, StaticTokensError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| StaticTokensError {
            file: name.clone(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        StaticTokens::parse(&text, &name)
    }

    /// Parses token file text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<StaticTokens, StaticTokensError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let error = |line: Option<usize>, message: String| StaticTokensError {
            file: name.to_owned(),
            line,
            message,
        };
        let file: TokenFile = toml::from_str(text).map_err(|e| {
            error(
                e.span().map(|s| line_of(s.start)),
                e.message().trim().into(),
            )
        })?;
        let mut tokens = HashMap::with_capacity(file.token.len());
        let mut lines: HashMap<TokenHash, usize> = HashMap::new();
        for entry in file.token {
            let entry = entry.into_inner();
            let line = line_of(entry.sha256.span().start);
            let hash = parse_sha256(entry.sha256.get_ref()).ok_or_else(|| {
                error(
                    Some(line),
                    "`sha256` must be 64 lowercase hex digits (the SHA-256 of the token)".into(),
                )
            })?;
            if let Some(first) = lines.insert(hash, line) {
                return Err(error(
                    Some(line),
                    format!("duplicate `sha256`, already given on line {first}"),
                ));
            }
            let identity = Identity::new(
                entry.subject.map(Into::into),
                entry.client_id.map(Into::into),
                entry.token_type.map(Into::into),
                entry.roles.into_iter().map(Into::into).collect(),
                entry.scope.split_whitespace().map(Into::into).collect(),
                entry.store_id.map(Into::into),
                entry.expires_at,
            )
            .opaque();
            tokens.insert(hash, Arc::new(identity));
        }
        Ok(StaticTokens { tokens })
    }

    /// The identity of a configured, unexpired token.
    pub fn get(&self, token: &str) -> Option<Arc<Identity>> {
        let identity = self.tokens.get(&hash_token(token))?;
        match identity.expires_at {
            Some(exp) if exp <= unix_now() => None,
            _ => Some(identity.clone()),
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

fn parse_sha256(hex: &str) -> Option<TokenHash> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use tokio::net::TcpListener;

    const ID: &str = "scopegate";
    const SECRET: &str = "s3cret:&=";

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// Answers by token: `inactive-*`, `string-*` (`"active":"true"`), `expired-*`,
        /// `badtype-*`; anything else is active.
        Normal,
        Error500,
        Stall,
        NotJson,
    }

    struct Server {
        addr: SocketAddr,
        hits: Arc<AtomicUsize>,
        mode: Arc<Mutex<Mode>>,
        /// Requests whose form body or credentials were wrong.
        bad_requests: Arc<AtomicUsize>,
    }

    impl Server {
        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
    }

    fn form_value<'a>(body: &'a str, name: &str) -> Option<&'a str> {
        body.split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    fn form_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }

    async fn serve_on(listener: TcpListener) -> Server {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let mode = Arc::new(Mutex::new(Mode::Normal));
        let bad_requests = Arc::new(AtomicUsize::new(0));
        let (h, m, b) = (hits.clone(), mode.clone(), bad_requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, m, b) = (h.clone(), m.clone(), b.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (h, m, b) = (h.clone(), m.clone(), b.clone());
                        async move { Ok::<_, Infallible>(answer(req, &h, &m, &b).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            addr,
            hits,
            mode,
            bad_requests,
        }
    }

    async fn answer(
        req: Request<Incoming>,
        hits: &AtomicUsize,
        mode: &Mutex<Mode>,
        bad: &AtomicUsize,
    ) -> Response<Full<Bytes>> {
        hits.fetch_add(1, Ordering::SeqCst);
        let expected_auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{ID}:{}", form_encode(SECRET)))
        );
        let auth_ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected_auth.as_bytes());
        let type_ok = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/x-www-form-urlencoded");
        let method_ok = req.method() == http::Method::POST;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let token = form_value(&body, "token").map(form_decode);
        let hint_ok = form_value(&body, "token_type_hint") == Some("access_token");
        let reply = |status: StatusCode, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r
        };
        let (Some(token), true, true, true, true) = (token, auth_ok, type_ok, method_ok, hint_ok)
        else {
            bad.fetch_add(1, Ordering::SeqCst);
            return reply(StatusCode::BAD_REQUEST, "{}".into());
        };
        let current = *mode.lock().unwrap();
        match current {
            Mode::Error500 => return reply(StatusCode::INTERNAL_SERVER_ERROR, "{}".into()),
            Mode::Stall => tokio::time::sleep(Duration::from_secs(5)).await,
            Mode::NotJson => return reply(StatusCode::OK, "<html>".into()),
            Mode::Normal => {}
        }
        let now = unix_now();
        let json = if token.starts_with("inactive-") {
            json!({"active": false})
        } else if token.starts_with("string-") {
            json!({"active": "true", "scope": "read_orders"})
        } else if token.starts_with("expired-") {
            json!({"active": true, "scope": "read_orders", "exp": now - 10})
        } else if token.starts_with("badtype-") {
            json!({"active": true, "scope": ["read_orders"]})
        } else {
            // Slow enough that concurrent callers overlap.
            tokio::time::sleep(Duration::from_millis(100)).await;
            json!({
                "active": true,
                "scope": "read_orders  write_products",
                "client_id": "backend-1",
                "username": "svc",
                "token_type": "shopify_admin",
                "exp": now + 3600,
                "role": "seller-admin",
                "store_id": 42,
            })
        };
        reply(StatusCode::OK, json.to_string())
    }

    async fn server() -> Server {
        serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    fn spec(addr: SocketAddr) -> IntrospectionSpec {
        IntrospectionSpec {
            url: format!("http://{addr}/oauth/introspect").parse().unwrap(),
            client_id: Some(ID.into()),
            client_secret: Some(SECRET.into()),
            timeout: Duration::from_millis(500),
            max_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_millis(400),
            max_entries: 1_000,
        }
    }

    fn introspector(addr: SocketAddr) -> (Introspector, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (Introspector::new(spec(addr), metrics.clone()), metrics)
    }

    fn count(metrics: &Metrics, result: &str) -> u64 {
        metrics.introspections.with_label_values(&[result]).get()
    }

    fn strs(xs: &[Box<str>]) -> Vec<&str> {
        xs.iter().map(|x| &**x).collect()
    }

    #[tokio::test]
    async fn active_token_resolves_and_is_cached() {
        let server = server().await;
        let (intro, metrics) = introspector(server.addr);
        // Characters that need form encoding reach the server intact.
        let token = "tok+en/with=chars~";
        let id = intro.resolve(token).await.unwrap();
        assert_eq!(strs(&id.scopes), ["read_orders", "write_products"]);
        assert_eq!(id.client.as_deref(), Some("backend-1"));
        assert_eq!(id.subject.as_deref(), Some("svc"));
        assert_eq!(id.token_kind.as_deref(), Some("shopify_admin"));
        assert_eq!(strs(&id.roles), ["seller-admin"]);
        assert_eq!(id.tenant.as_deref(), Some("42"));
        assert!(id.expires_at.unwrap() > unix_now());
        assert_eq!(server.hits(), 1);
        assert_eq!(server.bad_requests.load(Ordering::SeqCst), 0);

        let again = intro.resolve(token).await.unwrap();
        assert!(Arc::ptr_eq(&id, &again));
        assert_eq!(server.hits(), 1, "a cached token makes no call");
        assert_eq!(count(&metrics, "active"), 1);
        // Debug never shows the secret.
        let debug = format!("{intro:?} {:?}", spec(server.addr));
        assert!(!debug.contains(SECRET), "{debug}");
    }

    #[tokio::test]
    async fn non_boolean_active_is_inactive() {
        let server = server().await;
        let (intro, _) = introspector(server.addr);
        assert_eq!(
            intro.resolve("string-1").await.unwrap_err(),
            OpaqueError::Inactive
        );
        assert_eq!(
            intro.resolve("badtype-1").await.unwrap_err(),
            OpaqueError::Inactive
        );
        assert_eq!(
            intro.resolve("expired-1").await.unwrap_err(),
            OpaqueError::Inactive
        );
        assert_eq!(server.bad_requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn inactive_tokens_are_remembered_for_negative_ttl() {
        let server = server().await;
        let (intro, metrics) = introspector(server.addr);
        assert_eq!(
            intro.resolve("inactive-1").await.unwrap_err(),
            OpaqueError::Inactive
        );
        assert_eq!(
            intro.resolve("inactive-1").await.unwrap_err(),
            OpaqueError::Inactive
        );
        assert_eq!(server.hits(), 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            intro.resolve("inactive-1").await.unwrap_err(),
            OpaqueError::Inactive
        );
        assert_eq!(server.hits(), 2);
        assert_eq!(count(&metrics, "inactive"), 2);
    }

    #[tokio::test]
    async fn failures_are_unavailable_and_not_cached() {
        let server = server().await;
        let (intro, metrics) = introspector(server.addr);
        for (mode, hits) in [(Mode::Error500, 1), (Mode::Stall, 2), (Mode::NotJson, 3)] {
            server.set(mode);
            let started = Instant::now();
            assert_eq!(
                intro.resolve("tok").await.unwrap_err(),
                OpaqueError::Unavailable,
                "{mode:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2), "{mode:?}");
            assert_eq!(server.hits(), hits, "{mode:?}");
        }
        assert_eq!(count(&metrics, "unavailable"), 3);
        server.set(Mode::Normal);
        assert!(intro.resolve("tok").await.is_ok());
        assert_eq!(server.hits(), 4, "unavailable was not cached");
        assert_eq!(count(&metrics, "active"), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_unavailable_and_not_cached() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let (intro, metrics) = introspector(addr);
        assert_eq!(
            intro.resolve("tok").await.unwrap_err(),
            OpaqueError::Unavailable
        );
        assert_eq!(count(&metrics, "unavailable"), 1);
        // The server comes up on the same address: the next call reaches it.
        let server = serve_on(TcpListener::bind(addr).await.unwrap()).await;
        assert!(intro.resolve("tok").await.is_ok());
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_resolves_share_one_call() {
        let server = server().await;
        let (intro, metrics) = introspector(server.addr);
        let intro = Arc::new(intro);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let intro = intro.clone();
            tasks.spawn(async move { intro.resolve("fresh-token").await });
        }
        let mut ok = 0;
        while let Some(result) = tasks.join_next().await {
            assert!(result.unwrap().is_ok());
            ok += 1;
        }
        assert_eq!(ok, 50);
        assert_eq!(server.hits(), 1);
        assert_eq!(count(&metrics, "active"), 1);
        assert!(intro.inflight.is_empty(), "finished lookups are removed");
    }

    #[test]
    fn response_mapping() {
        let now = 1_000;
        let ok = |v: Value| identity_from_response(&v, now);
        let id = ok(
            json!({"active": true, "sub": "u", "username": "x", "roles": ["a", "b"],
            "store_id": "s-1", "exp": 2_000}),
        )
        .unwrap();
        assert_eq!(id.subject.as_deref(), Some("u"));
        assert_eq!(strs(&id.roles), ["a", "b"]);
        assert_eq!(id.tenant.as_deref(), Some("s-1"));
        assert!(id.scopes.is_empty());
        for bad in [
            json!({"active": 1}),
            json!({"active": "true"}),
            json!({}),
            json!({"active": true, "exp": 1_000}),
            json!({"active": true, "exp": "2000"}),
            json!({"active": true, "roles": "a"}),
            json!({"active": true, "roles": [1]}),
            json!({"active": true, "role": ["a"]}),
            json!({"active": true, "store_id": 1.5}),
            json!({"active": true, "client_id": 7}),
            json!({"active": true, "sub": false}),
        ] {
            assert_eq!(ok(bad.clone()).unwrap_err(), OpaqueError::Inactive, "{bad}");
        }
        assert_eq!(ok(json!([true])).unwrap_err(), OpaqueError::Unavailable);
    }

    fn sha_hex(token: &str) -> String {
        hash_token(token)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn static_tokens_look_up_by_hash() {
        let text = format!(
            r#"
[[token]]
sha256 = "{}"
scope = "read_orders write_products"
client_id = "backend-1"
token_type = "shopify_admin"
roles = ["seller-admin"]
store_id = "store-1"
subject = "svc"
expires_at = 4102444800

[[token]]
sha256 = "{}"
scope = "read_orders"
client_id = "old"
expires_at = 1000
"#,
            sha_hex("good-token"),
            sha_hex("expired-token")
        );
        let tokens = StaticTokens::parse(&text, "tokens.toml").unwrap();
        assert_eq!(tokens.len(), 2);
        let id = tokens.get("good-token").unwrap();
        assert_eq!(strs(&id.scopes), ["read_orders", "write_products"]);
        assert_eq!(id.client.as_deref(), Some("backend-1"));
        assert_eq!(id.token_kind.as_deref(), Some("shopify_admin"));
        assert_eq!(strs(&id.roles), ["seller-admin"]);
        assert_eq!(id.tenant.as_deref(), Some("store-1"));
        assert_eq!(id.subject.as_deref(), Some("svc"));
        assert!(tokens.get("unknown-token").is_none());
        assert!(tokens.get("expired-token").is_none());
        // The file's hash is not itself a token.
        assert!(tokens.get(&sha_hex("good-token")).is_none());
    }

    #[test]
    fn static_token_errors_name_file_and_line() {
        let good = sha_hex("a");
        let unknown_key =
            format!("[[token]]\nsha256 = \"{good}\"\nscope = \"x\"\nscopes = \"y\"\n");
        let err = StaticTokens::parse(&unknown_key, "t.toml").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.to_string().starts_with("t.toml: line 4:"), "{err}");

        let bad_hex = format!("[[token]]\nscope = \"x\"\nsha256 = \"{}\"\n", &good[..63]);
        let err = StaticTokens::parse(&bad_hex, "t.toml").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(err.message.contains("64 lowercase hex"), "{err}");

        let upper = format!("[[token]]\nsha256 = \"{}\"\n", good.to_uppercase());
        assert_eq!(
            StaticTokens::parse(&upper, "t.toml").unwrap_err().line,
            Some(2)
        );

        let dup = format!("[[token]]\nsha256 = \"{good}\"\n\n[[token]]\nsha256 = \"{good}\"\n");
        let err = StaticTokens::parse(&dup, "t.toml").unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(err.message.contains("line 2"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, &unknown_key).unwrap();
        let err = StaticTokens::load(&path).unwrap_err();
        assert!(err.to_string().contains("tokens.toml: line 4:"), "{err}");
        assert!(StaticTokens::load(&dir.path().join("missing.toml")).is_err());
    }
}
