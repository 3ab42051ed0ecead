//! Verification keys fetched from a remote JWKS endpoint (an identity provider's
//! `jwks_uri`), refreshed in the background and on demand when a token names an unknown `kid`.
//!
//! The loaded set is swapped atomically: readers never block and, whatever goes wrong with a
//! fetch, the last good set stays in place until a later fetch succeeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Algorithm;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::idp_client;
use super::keys::{self, KeyError, VerifyKey};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// Largest JWKS document accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// First retry delay of the initial fetch; doubles up to the refresh interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// One remote JWKS source.
#[derive(Debug, Clone)]
pub struct RemoteJwksSpec {
    /// `http` or `https` URL of the JWKS document.
    pub url: Uri,
    /// Algorithms the keys may verify (each key is narrowed to its family and its own `alg`).
    pub algorithms: Vec<Algorithm>,
    /// Time between background refreshes.
    pub refresh_interval: Duration,
    /// Minimum time between fetches triggered by unknown `kid`s.
    pub cooldown: Duration,
    /// Limit on one whole fetch: connect, response head and body.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("{url}: unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url}: answered HTTP {status}, expected 200")]
    Status { url: String, status: StatusCode },
    #[error("{url}: no complete answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: JWKS document larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("invalid JWKS document: {0}")]
    Invalid(#[from] KeyError),
}

/// Keys of one remote JWKS, kept fresh.
pub struct RemoteJwks {
    spec: RemoteJwksSpec,
    /// The URL without user info or query, for errors, logs and key origins.
    shown_url: String,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    keys: ArcSwap<Vec<VerifyKey>>,
    metrics: Arc<Metrics>,
    /// Serialises fetches so an older answer never replaces a newer one.
    fetching: Mutex<()>,
    /// Single-flight and cooldown state of fetches triggered by unknown `kid`s.
    on_demand: Mutex<OnDemand>,
    /// Count of completed on-demand fetches (mirrors `OnDemand::generation`, readable unlocked).
    on_demand_generation: AtomicU64,
}

#[derive(Debug, Default)]
struct OnDemand {
    /// When the last on-demand fetch started.
    last: Option<Instant>,
    /// Whether it succeeded.
    last_ok: bool,
    generation: u64,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.load();
        let kids: Vec<Option<&str>> = keys.iter().map(|k| k.kid.as_deref()).collect();
        f.debug_struct("RemoteJwks")
            .field("url", &self.shown_url)
            .field("algorithms", &self.spec.algorithms)
            .field("refresh_interval", &self.spec.refresh_interval)
            .field("cooldown", &self.spec.cooldown)
            .field("timeout", &self.spec.timeout)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    pub fn new(spec: RemoteJwksSpec, metrics: Arc<Metrics>) -> RemoteJwks {
        let shown_url = shown_url(&spec.url);
        RemoteJwks {
            client: Client::builder(TokioExecutor::new())
                .build(idp_client::connector("JWKS", spec.timeout)),
            shown_url,
            spec,
            keys: ArcSwap::from_pointee(Vec::new()),
            metrics,
            fetching: Mutex::new(()),
            on_demand: Mutex::new(OnDemand::default()),
            on_demand_generation: AtomicU64::new(0),
        }
    }

    /// The current keys; empty before the first successful fetch. Lock-free.
    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.load_full()
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.load().is_empty()
    }

    /// The URL as shown in errors and logs (no user info, no query).
    pub fn url(&self) -> &str {
        &self.shown_url
    }

    /// Fetches, parses and installs the whole key set (keys missing from the new document are
    /// gone). On any failure the previous keys stay. Returns the number of keys installed.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _serial = self.fetching.lock().await;
        match self.fetch().await {
            Ok(keys) => {
                let n = keys.len();
                self.keys.store(Arc::new(keys));
                self.metrics
                    .jwks_refreshes
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.jwks_keys.set(n as i64);
                tracing::debug!(url = %self.shown_url, keys = n, "JWKS refreshed");
                Ok(n)
            }
            Err(e) => {
                self.metrics
                    .jwks_refreshes
                    .with_label_values(&["failure"])
                    .inc();
                Err(e)
            }
        }
    }

    /// Called when a token names a `kid` we do not have. Fetches at most once per cooldown;
    /// callers arriving while a fetch runs wait for it and share its outcome. Returns true if
    /// a fetch happened (this caller's or the one it waited for) and succeeded.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let seen = self.on_demand_generation.load(Ordering::Acquire);
        let mut state = self.on_demand.lock().await;
        if state.generation != seen {
            // A fetch completed while we waited for the lock: share it.
            return state.last_ok;
        }
        if state
            .last
            .is_some_and(|at| at.elapsed() < self.spec.cooldown)
        {
            return false;
        }
        // Stamped before fetching, so a caller cancelled mid-fetch still uses up the cooldown.
        state.last = Some(Instant::now());
        let ok = match self.refresh().await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh for an unknown kid failed");
                false
            }
        };
        state.last_ok = ok;
        state.generation += 1;
        self.on_demand_generation
            .store(state.generation, Ordering::Release);
        ok
    }

    /// Background refresher: fetches at once, retrying with backoff (100ms doubling up to the
    /// refresh interval) until the first success, then every `refresh_interval`. Stops when
    /// `shutdown` turns true or its sender is dropped.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        mut shutdown: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let interval = this.spec.refresh_interval.max(Duration::from_millis(1));
            let mut backoff = FIRST_BACKOFF.min(interval);
            // Initial load, retried.
            loop {
                let Some(result) = until_shutdown(&mut shutdown, this.refresh()).await else {
                    return;
                };
                match result {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "initial JWKS fetch failed")
                    }
                }
                if until_shutdown(&mut shutdown, tokio::time::sleep(backoff))
                    .await
                    .is_none()
                {
                    return;
                }
                backoff = (backoff * 2).min(interval);
            }
            // Steady state.
            loop {
                if until_shutdown(&mut shutdown, tokio::time::sleep(interval))
                    .await
                    .is_none()
                {
                    return;
                }
                match until_shutdown(&mut shutdown, this.refresh()).await {
                    None => return,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys")
                    }
                }
            }
        })
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, JwksError> {
        let timeout = self.spec.timeout;
        match tokio::time::timeout(timeout, self.fetch_body()).await {
            Ok(body) => {
                let body = body?;
                Ok(keys::parse_jwks_skipping(
                    &body,
                    &self.spec.algorithms,
                    &self.shown_url,
                )?)
            }
            Err(_) => Err(JwksError::Timeout {
                url: self.shown_url.clone(),
                timeout,
            }),
        }
    }

    async fn fetch_body(&self) -> Result<Bytes, JwksError> {
        let unreachable = |message: String| JwksError::Unreachable {
            url: self.shown_url.clone(),
            message,
        };
        let too_large = || JwksError::TooLarge {
            url: self.shown_url.clone(),
            limit: MAX_BODY_BYTES,
        };
        let request = Request::builder()
            .method(Method::GET)
            .uri(self.spec.url.clone())
            .header(header::ACCEPT, "application/json, application/jwk-set+json")
            .header(
                header::USER_AGENT,
                concat!("scopegate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| unreachable(format!("bad request: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        if response.status() != StatusCode::OK {
            return Err(JwksError::Status {
                url: self.shown_url.clone(),
                status: response.status(),
            });
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        match Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
            Err(e) => Err(unreachable(format!(
                "reading the body: {}",
                error_chain(&*e)
            ))),
        }
    }
}

/// Runs `work` unless `shutdown` turns true (or its sender goes away) first.
async fn until_shutdown<F: Future>(shutdown: &mut Shutdown, work: F) -> Option<F::Output> {
    if shutdown.is_set() {
        return None;
    }
    tokio::select! {
        out = work => Some(out),
        _ = shutdown.wait() => None,
    }
}

/// `scheme://host[:port]/path`: no user info, no query (either may carry a secret).
fn shown_url(url: &Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("?");
    let host = url.host().unwrap_or("?");
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", url.path())
}

/// An error and its sources, `a: b: c` (hyper's top-level messages alone say little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::AtomicUsize;

    use http::Response;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rcgen::{KeyPair, PKCS_RSA_SHA256};
    use serde_json::Value;
    use tokio::net::TcpListener;

    use super::*;

    /// A JWKS server whose answer can change mid-test and which counts requests.
    struct Server {
        addr: SocketAddr,
        state: Arc<ServerState>,
    }

    struct ServerState {
        answer: StdMutex<(StatusCode, Bytes)>,
        delay: StdMutex<Duration>,
        hits: AtomicUsize,
    }

    impl Server {
        async fn start(body: String) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let state = Arc::new(ServerState {
                answer: StdMutex::new((StatusCode::OK, Bytes::from(body))),
                delay: StdMutex::new(Duration::ZERO),
                hits: AtomicUsize::new(0),
            });
            let shared = Arc::clone(&state);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let service = service_fn(move |_req: Request<Incoming>| {
                            let state = Arc::clone(&state);
                            async move {
                                state.hits.fetch_add(1, Ordering::SeqCst);
                                let delay = *state.delay.lock().unwrap();
                                if !delay.is_zero() {
                                    tokio::time::sleep(delay).await;
                                }
                                let (status, body) = state.answer.lock().unwrap().clone();
                                let mut response = Response::new(Full::new(body));
                                *response.status_mut() = status;
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Server { addr, state }
        }

        fn answer(&self, status: StatusCode, body: impl Into<Bytes>) {
            *self.state.answer.lock().unwrap() = (status, body.into());
        }

        fn hits(&self) -> usize {
            self.state.hits.load(Ordering::SeqCst)
        }

        fn jwks(
            &self,
            interval: Duration,
            cooldown: Duration,
            timeout: Duration,
        ) -> Arc<RemoteJwks> {
            let spec = RemoteJwksSpec {
                url: format!("http://{}/.well-known/jwks.json?secret=x", self.addr)
                    .parse()
                    .unwrap(),
                algorithms: vec![Algorithm::RS256],
                refresh_interval: interval,
                cooldown,
                timeout,
            };
            Arc::new(RemoteJwks::new(spec, Arc::new(Metrics::new())))
        }
    }

    /// A JWKS with one fresh RSA key under `kid`.
    fn jwks_with_kid(kid: &str) -> String {
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
        let text = crate::demo::material::jwks_for(key.serialize_pem().as_bytes()).unwrap();
        let mut doc: Value = serde_json::from_str(&text).unwrap();
        doc["keys"][0]["kid"] = Value::from(kid);
        doc.to_string()
    }

    fn kids(jwks: &RemoteJwks) -> Vec<String> {
        jwks.keys()
            .iter()
            .map(|k| k.kid.clone().unwrap_or_default())
            .collect()
    }

    fn count(jwks: &RemoteJwks, result: &str) -> u64 {
        jwks.metrics
            .jwks_refreshes
            .with_label_values(&[result])
            .get()
    }

    const LONG: Duration = Duration::from_secs(60);
    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn keys_load_on_refresh() {
        let server = Server::start(jwks_with_kid("k1")).await;
        let jwks = server.jwks(LONG, LONG, TIMEOUT);
        assert!(!jwks.has_keys());
        assert!(jwks.keys().is_empty());

        assert_eq!(jwks.refresh().await.unwrap(), 1);
        assert!(jwks.has_keys());
        assert_eq!(kids(&jwks), ["k1"]);
        assert_eq!(jwks.keys()[0].algorithms, [Algorithm::RS256]);
        assert_eq!(server.hits(), 1);
        assert_eq!(count(&jwks, "success"), 1);
        assert_eq!(jwks.metrics.jwks_keys.get(), 1);
        // Neither the query (a possible secret) nor key material shows.
        let debug = format!("{jwks:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("k1"), "{debug}");
        assert!(jwks.keys()[0].origin.starts_with(jwks.url()));
    }

    #[tokio::test]
    async fn failures_keep_the_previous_keys() {
        let server = Server::start(jwks_with_kid("k1")).await;
        let jwks = server.jwks(LONG, LONG, Duration::from_millis(300));
        jwks.refresh().await.unwrap();

        server.answer(StatusCode::INTERNAL_SERVER_ERROR, "oops");
        let e = jwks.refresh().await.unwrap_err();
        assert!(
            matches!(e, JwksError::Status { status, .. } if status == StatusCode::INTERNAL_SERVER_ERROR),
            "{e}"
        );
        assert_eq!(kids(&jwks), ["k1"]);

        server.answer(StatusCode::OK, "<html>not json</html>");
        let e = jwks.refresh().await.unwrap_err();
        assert!(matches!(e, JwksError::Invalid(_)), "{e}");
        assert_eq!(kids(&jwks), ["k1"]);

        server.answer(StatusCode::OK, r#"{"keys":[]}"#);
        assert!(matches!(jwks.refresh().await, Err(JwksError::Invalid(_))));

        server.answer(StatusCode::OK, vec![b' '; MAX_BODY_BYTES + 1]);
        let e = jwks.refresh().await.unwrap_err();
        assert!(matches!(e, JwksError::TooLarge { .. }), "{e}");

        server.answer(StatusCode::OK, jwks_with_kid("k2"));
        *server.state.delay.lock().unwrap() = Duration::from_secs(2);
        let e = jwks.refresh().await.unwrap_err();
        assert!(matches!(e, JwksError::Timeout { .. }), "{e}");

        assert_eq!(kids(&jwks), ["k1"]);
        assert_eq!(count(&jwks, "success"), 1);
        assert_eq!(count(&jwks, "failure"), 5);
        assert_eq!(jwks.metrics.jwks_keys.get(), 1);
    }

    #[tokio::test]
    async fn unreachable_server_is_a_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let spec = RemoteJwksSpec {
            url: format!("http://{addr}/jwks").parse().unwrap(),
            algorithms: vec![Algorithm::RS256],
            refresh_interval: LONG,
            cooldown: LONG,
            timeout: TIMEOUT,
        };
        let jwks = RemoteJwks::new(spec, Arc::new(Metrics::new()));
        let e = jwks.refresh().await.unwrap_err();
        assert!(matches!(e, JwksError::Unreachable { .. }), "{e}");
        assert!(!jwks.has_keys());
        assert_eq!(count(&jwks, "failure"), 1);
    }

    #[tokio::test]
    async fn rotation_replaces_the_whole_set() {
        let server = Server::start(jwks_with_kid("old")).await;
        let jwks = server.jwks(LONG, LONG, TIMEOUT);
        jwks.refresh().await.unwrap();
        assert_eq!(kids(&jwks), ["old"]);

        server.answer(StatusCode::OK, jwks_with_kid("new"));
        assert_eq!(jwks.refresh().await.unwrap(), 1);
        assert_eq!(kids(&jwks), ["new"]);
        assert_eq!(count(&jwks, "success"), 2);
    }

    #[tokio::test]
    async fn unknown_kid_fetches_are_single_flight_and_cooled_down() {
        let server = Server::start(jwks_with_kid("k1")).await;
        let jwks = server.jwks(LONG, Duration::from_millis(200), TIMEOUT);
        // Slow answers, so all callers arrive while the one fetch runs.
        *server.state.delay.lock().unwrap() = Duration::from_millis(100);

        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let jwks = Arc::clone(&jwks);
            callers.spawn(async move { jwks.refresh_for_unknown_kid().await });
        }
        let outcomes = callers.join_all().await;
        assert_eq!(server.hits(), 1);
        assert_eq!(outcomes.len(), 50);
        assert!(outcomes.iter().all(|ok| *ok), "{outcomes:?}");
        assert_eq!(kids(&jwks), ["k1"]);

        // Within the cooldown: no fetch.
        assert!(!jwks.refresh_for_unknown_kid().await);
        assert_eq!(server.hits(), 1);

        // After it: one more, which sees a rotated set.
        server.answer(StatusCode::OK, jwks_with_kid("k2"));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(jwks.refresh_for_unknown_kid().await);
        assert_eq!(server.hits(), 2);
        assert_eq!(kids(&jwks), ["k2"]);
    }

    #[tokio::test]
    async fn failed_unknown_kid_fetch_also_cools_down() {
        let server = Server::start(jwks_with_kid("k1")).await;
        server.answer(StatusCode::SERVICE_UNAVAILABLE, "");
        let jwks = server.jwks(LONG, LONG, TIMEOUT);
        assert!(!jwks.refresh_for_unknown_kid().await);
        assert!(!jwks.refresh_for_unknown_kid().await);
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn refresher_fetches_at_start_then_every_interval_and_stops() {
        let server = Server::start(jwks_with_kid("k1")).await;
        let jwks = server.jwks(Duration::from_millis(100), LONG, TIMEOUT);
        let (stop, shutdown) = crate::shutdown::channel();
        let task = jwks.spawn_refresher(shutdown);

        wait_for(|| jwks.has_keys()).await;
        assert!(server.hits() >= 1);
        let first = server.hits();
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(server.hits() >= first + 2, "hits {}", server.hits());

        stop.fire();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("refresher stops on shutdown")
            .unwrap();
        let stopped = server.hits();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(server.hits(), stopped);
    }

    #[tokio::test]
    async fn refresher_retries_the_first_fetch() {
        let server = Server::start(jwks_with_kid("k1")).await;
        server.answer(StatusCode::BAD_GATEWAY, "");
        let jwks = server.jwks(LONG, LONG, TIMEOUT);
        let (stop, shutdown) = crate::shutdown::channel();
        let task = jwks.spawn_refresher(shutdown);

        wait_for(|| server.hits() >= 3).await;
        assert!(!jwks.has_keys());
        server.answer(StatusCode::OK, jwks_with_kid("k1"));
        wait_for(|| jwks.has_keys()).await;
        assert_eq!(kids(&jwks), ["k1"]);

        // Dropping the sender also stops it.
        drop(stop);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("refresher stops when the sender goes away")
            .unwrap();
    }

    async fn wait_for(mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "condition not met in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
