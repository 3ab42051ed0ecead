//! Metrics (Prometheus) and the access log: every decision is counted and logged with its reason.
//! Labels carry route templates, methods and fixed reason names only — never paths, tokens or subjects.

use std::sync::OnceLock;

use http::Method;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Label value for requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric scopegate exports, registered in its own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `scopegate_requests_total{route, method, decision}`.
    pub requests: IntCounterVec,
    /// `scopegate_denials_total{reason}`.
    pub denials: IntCounterVec,
    /// `scopegate_decision_duration_seconds`: request arrival to decision.
    pub decision_seconds: Histogram,
    /// `scopegate_upstream_duration_seconds{route}`: forward to upstream response headers.
    pub upstream_seconds: HistogramVec,
    /// `scopegate_upstream_errors_total{route, kind}`.
    pub upstream_errors: IntCounterVec,
    pub token_cache_hits: IntCounter,
    pub token_cache_misses: IntCounter,
    pub token_cache_entries: IntGauge,
    /// `scopegate_token_cache_max_entries`: the configured bound (`cache.max_entries`).
    pub token_cache_max_entries: IntGauge,
    /// `scopegate_token_verifications_total{result}`.
    pub token_verifications: IntCounterVec,
    /// `scopegate_config_reloads_total{result}`.
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: prometheus::Gauge,
    /// `scopegate_open_connections{listener}`.
    pub open_connections: IntGaugeVec,
    pub tls_handshake_failures: IntCounter,
    /// `scopegate_tls_certificate_expiry_timestamp_seconds`: the served leaf's notAfter (0 when
    /// no certificate is served).
    pub tls_certificate_expiry: prometheus::Gauge,
    /// `scopegate_jwks_refreshes_total{result}`: remote JWKS fetches.
    pub jwks_refreshes: IntCounterVec,
    /// `scopegate_jwks_keys`: keys currently loaded from remote JWKS.
    pub jwks_keys: IntGauge,
    /// `scopegate_introspections_total{result}`: RFC 7662 calls.
    pub introspections: IntCounterVec,
    /// Handles of the commonest `denials` and `token_verifications` labels, resolved on first use.
    hot_denials: Hot<{ HOT_DENIALS.len() }>,
    hot_verifications: Hot<{ HOT_VERIFICATIONS.len() }>,
}

/// Method labels, in the order [`RouteHandles`] keeps them.
const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "OTHER",
];
/// Decisions counted per route without touching the label map once seen.
const HOT_DECISIONS: [&str; 6] = [
    "allow",
    "forbidden",
    "invalid_token",
    "unauthenticated",
    "would_deny",
    "method_not_allowed",
];
const HOT_DENIALS: [&str; 6] = [
    "insufficient_scope",
    "no_credentials",
    "token_expired",
    "token_bad_signature",
    "no_route",
    "method_not_allowed",
];
const HOT_VERIFICATIONS: [&str; 1] = ["valid"];

/// Counter handles for fixed label values of a one-label vector, each resolved on first use so
/// that no series appears before it is counted.
#[derive(Debug, Clone)]
struct Hot<const N: usize>([OnceLock<IntCounter>; N]);

impl<const N: usize> Hot<N> {
    fn new() -> Self {
        Hot(std::array::from_fn(|_| OnceLock::new()))
    }

    fn inc(&self, names: &[&'static str; N], vec: &IntCounterVec, label: &str) {
        match names.iter().position(|n| *n == label) {
            Some(i) => self.0[i]
                .get_or_init(|| vec.with_label_values(&[label]))
                .inc(),
            None => vec.with_label_values(&[label]).inc(),
        }
    }
}

/// Metric handles of one route, kept with the route and resolved on first use: counting a
/// request then costs an atomic add, not a label hash and the vector's lock. A route's handles
/// belong to the [`Metrics`] of the gateway that serves its table.
#[derive(Debug, Default)]
pub struct RouteHandles {
    requests: [[OnceLock<IntCounter>; HOT_DECISIONS.len()]; METHOD_LABELS.len()],
    upstream_seconds: OnceLock<Histogram>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "scopegate_requests_total",
                    "Requests by route template, method and decision.",
                ),
                &["route", "method", "decision"],
            )
            .expect("valid metric"),
            denials: IntCounterVec::new(
                Opts::new("scopegate_denials_total", "Requests refused, by reason."),
                &["reason"],
            )
            .expect("valid metric"),
            decision_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "scopegate_decision_duration_seconds",
                    "Time from request arrival to the allow/deny decision.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            upstream_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "scopegate_upstream_duration_seconds",
                    "Time from forwarding to the upstream's response headers.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid metric"),
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "scopegate_upstream_errors_total",
                    "Upstream failures by route and kind.",
                ),
                &["route", "kind"],
            )
            .expect("valid metric"),
            token_cache_hits: IntCounter::new(
                "scopegate_token_cache_hits_total",
                "Credentials answered from the token cache.",
            )
            .expect("valid metric"),
            token_cache_misses: IntCounter::new(
                "scopegate_token_cache_misses_total",
                "Credentials not in the token cache.",
            )
            .expect("valid metric"),
            token_cache_entries: IntGauge::new(
                "scopegate_token_cache_entries",
                "Verified tokens held in the cache.",
            )
            .expect("valid metric"),
            token_cache_max_entries: IntGauge::new(
                "scopegate_token_cache_max_entries",
                "Most verified tokens the cache holds (cache.max_entries; 0: cache off).",
            )
            .expect("valid metric"),
            token_verifications: IntCounterVec::new(
                Opts::new(
                    "scopegate_token_verifications_total",
                    "Token verifications by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "scopegate_config_reloads_total",
                    "Route and certificate reloads by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            config_last_reload_success: prometheus::Gauge::new(
                "scopegate_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load.",
            )
            .expect("valid metric"),
            open_connections: IntGaugeVec::new(
                Opts::new(
                    "scopegate_open_connections",
                    "Client connections open, by listener.",
                ),
                &["listener"],
            )
            .expect("valid metric"),
            tls_handshake_failures: IntCounter::new(
                "scopegate_tls_handshake_failures_total",
                "TLS handshakes that failed or timed out.",
            )
            .expect("valid metric"),
            tls_certificate_expiry: prometheus::Gauge::new(
                "scopegate_tls_certificate_expiry_timestamp_seconds",
                "Unix time when the served TLS leaf certificate expires (notAfter); 0 without TLS.",
            )
            .expect("valid metric"),
            jwks_refreshes: IntCounterVec::new(
                Opts::new(
                    "scopegate_jwks_refreshes_total",
                    "Remote JWKS fetches by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            jwks_keys: IntGauge::new("scopegate_jwks_keys", "Keys loaded from remote JWKS.")
                .expect("valid metric"),
            introspections: IntCounterVec::new(
                Opts::new(
                    "scopegate_introspections_total",
                    "Token introspection calls by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            hot_denials: Hot::new(),
            hot_verifications: Hot::new(),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.requests.clone()),
            Box::new(m.denials.clone()),
            Box::new(m.decision_seconds.clone()),
            Box::new(m.upstream_seconds.clone()),
            Box::new(m.upstream_errors.clone()),
            Box::new(m.token_cache_hits.clone()),
            Box::new(m.token_cache_misses.clone()),
            Box::new(m.token_cache_entries.clone()),
            Box::new(m.token_cache_max_entries.clone()),
            Box::new(m.token_verifications.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.config_last_reload_success.clone()),
            Box::new(m.open_connections.clone()),
            Box::new(m.tls_handshake_failures.clone()),
            Box::new(m.tls_certificate_expiry.clone()),
            Box::new(m.jwks_refreshes.clone()),
            Box::new(m.jwks_keys.clone()),
            Box::new(m.introspections.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric registered once");
        }
        m
    }

    /// Counts one request in `scopegate_requests_total`, through the route's handles when it
    /// has one.
    pub fn count_request(
        &self,
        route: Option<(&str, &RouteHandles)>,
        method: &'static str,
        decision: &'static str,
    ) {
        let Some((template, handles)) = route else {
            self.requests
                .with_label_values(&[NO_ROUTE, method, decision])
                .inc();
            return;
        };
        let m = METHOD_LABELS.iter().position(|l| *l == method);
        let d = HOT_DECISIONS.iter().position(|l| *l == decision);
        match m.zip(d) {
            Some((m, d)) => handles.requests[m][d]
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[template, method, decision])
                })
                .inc(),
            None => self
                .requests
                .with_label_values(&[template, method, decision])
                .inc(),
        }
    }

    /// Observes one upstream round trip of a route.
    pub fn observe_upstream(&self, template: &str, handles: &RouteHandles, seconds: f64) {
        handles
            .upstream_seconds
            .get_or_init(|| self.upstream_seconds.with_label_values(&[template]))
            .observe(seconds);
    }

    /// Counts one refusal by reason.
    pub fn count_denial(&self, reason: &str) {
        self.hot_denials.inc(&HOT_DENIALS, &self.denials, reason);
    }

    /// Counts one token verification by result.
    pub fn count_verification(&self, result: &str) {
        self.hot_verifications
            .inc(&HOT_VERIFICATIONS, &self.token_verifications, result);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A bounded label for a request method.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// Installs the global tracing subscriber: text or JSON lines on stderr, filtered by `level`
/// (an `EnvFilter` directive; `RUST_LOG` wins when set).
///
/// Lines are appended to a buffer in memory and written by a background thread every
/// [`LOG_FLUSH_EVERY`], so a request costs a copy under a short lock, not a `write` system
/// call nor a wake-up of another thread (with the proxy on one core, waking a log thread
/// per line cost ~15% of throughput). Nothing is dropped: a buffer past [`LOG_BUFFER_MAX`] is
/// written by the thread that filled it. Keep the guard until exit: dropping it writes what is
/// left.
pub fn init_logging(json: bool, level: &str) -> LogGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (sink, guard) = LogSink::start(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink);
    // A second call (tests) keeps the first subscriber.
    if json {
        if builder.json().flatten_event(true).try_init().is_ok() {
            let _ = JSON_ACCESS.set(guard.shared.clone());
        }
    } else {
        let _ = builder.try_init();
    }
    guard
}

/// Where JSON access lines go when [`init_logging`] installed the JSON format: straight into the
/// log buffer, formatted by [`AccessLine::write_json`] rather than by the subscriber.
static JSON_ACCESS: OnceLock<std::sync::Arc<LogShared>> = OnceLock::new();

/// One decision, as the access log records it (target `scopegate::access`).
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub decision: &'a str,
    pub reason: &'a str,
    pub client: Option<&'a str>,
    pub token_kind: Option<&'a str>,
    pub latency_us: u64,
    pub peer: std::net::IpAddr,
}

impl AccessLine<'_> {
    /// Logs the line when `scopegate::access` is enabled at INFO.
    ///
    /// In JSON format the line is written here, byte for byte what tracing-subscriber's JSON
    /// formatter writes for the same event (a unit test holds the two together), because the
    /// generic formatter (visitor, `fmt::Debug` per field, a `serde_json::Value` for the span
    /// list) cost ~10% of a cached request. Text format goes through the subscriber.
    pub fn log(&self) {
        if !tracing::enabled!(target: "scopegate::access", tracing::Level::INFO) {
            return;
        }
        match JSON_ACCESS.get() {
            Some(shared) => {
                let full = {
                    let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
                    self.write_json(&mut pending, std::time::SystemTime::now());
                    pending.len() >= LOG_BUFFER_MAX
                };
                if full {
                    shared.flush();
                }
            }
            None => self.event(),
        }
    }

    /// The access line as a tracing event, for the subscriber to format.
    fn event(&self) {
        tracing::info!(
            target: "scopegate::access",
            route = self.route,
            method = self.method,
            status = self.status,
            decision = self.decision,
            reason = self.reason,
            client = self.client,
            token_kind = self.token_kind,
            latency_us = self.latency_us,
            peer = %self.peer,
        );
    }

    /// Appends the JSON line (with its newline) to `out`.
    fn write_json(&self, out: &mut Vec<u8>, now: std::time::SystemTime) {
        use std::io::Write;
        fn string(out: &mut Vec<u8>, s: &str) {
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"route\":",
            humantime::format_rfc3339_micros(now)
        );
        string(out, self.route);
        out.extend_from_slice(b",\"method\":");
        string(out, self.method);
        let _ = write!(out, ",\"status\":{},\"decision\":", self.status);
        string(out, self.decision);
        out.extend_from_slice(b",\"reason\":");
        string(out, self.reason);
        if let Some(client) = self.client {
            out.extend_from_slice(b",\"client\":");
            string(out, client);
        }
        if let Some(kind) = self.token_kind {
            out.extend_from_slice(b",\"token_kind\":");
            string(out, kind);
        }
        let _ = writeln!(
            out,
            ",\"latency_us\":{},\"peer\":\"{}\",\"target\":\"scopegate::access\"}}",
            self.latency_us, self.peer
        );
    }
}

/// How long a log line may wait in memory before it is written.
pub const LOG_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// Buffered log bytes past which the writing thread writes them itself.
pub const LOG_BUFFER_MAX: usize = 256 * 1024;

struct LogShared {
    /// Lines not yet written.
    pending: std::sync::Mutex<Vec<u8>>,
    /// The output, locked for the whole swap-and-write so chunks keep their order.
    out: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
}

impl LogShared {
    fn flush(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let chunk = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                return;
            }
            std::mem::replace(&mut *pending, Vec::with_capacity(64 * 1024))
        };
        // A log that cannot be written has nowhere to report it; the request goes on.
        let _ = out.write_all(&chunk).and_then(|()| out.flush());
    }
}

/// The `MakeWriter` behind [`init_logging`]: each formatted event is one `write` into the
/// shared buffer.
pub struct LogSink {
    shared: std::sync::Arc<LogShared>,
}

/// Stops the log writer thread and writes what is buffered when dropped.
pub struct LogGuard {
    shared: std::sync::Arc<LogShared>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LogSink {
    /// A sink writing to `out`, and the guard of its writer thread.
    pub fn start(out: impl std::io::Write + Send + 'static) -> (LogSink, LogGuard) {
        let shared = std::sync::Arc::new(LogShared {
            pending: std::sync::Mutex::new(Vec::with_capacity(64 * 1024)),
            out: std::sync::Mutex::new(Box::new(out)),
        });
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("scopegate-log".into())
                .spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(LOG_FLUSH_EVERY)
                    {
                        shared.flush();
                    }
                    shared.flush();
                })
                .ok()
        };
        let guard = LogGuard {
            shared: shared.clone(),
            stop: Some(stop),
            thread,
        };
        (LogSink { shared }, guard)
    }
}

/// One event's writer: a reference to the sink, so no reference count moves per line.
pub struct LogLine<'a>(&'a LogShared);

impl std::io::Write for LogLine<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = self.0.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.extend_from_slice(line);
            pending.len() >= LOG_BUFFER_MAX
        };
        if full {
            self.0.flush();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> LogLine<'a> {
        LogLine(&self.shared)
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        match self.thread.take() {
            Some(thread) => {
                let _ = thread.join();
            }
            None => self.shared.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line tracing-subscriber's JSON formatter (as `init_logging` sets it up) writes for
    /// the access event the text path emits, with its timestamp.
    fn subscriber_line(line: &AccessLine<'_>) -> String {
        let out = Shared::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::with_default(subscriber, || line.event());
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_hand_written_access_line_is_the_subscribers_line() {
        let lines = [
            AccessLine {
                route: "/v2/orders/{id}",
                method: "GET",
                status: 200,
                decision: "allow",
                reason: "permitted",
                client: Some("bench \"quoted\" \\ \u{1}\n caf\u{e9} \u{1F600}"),
                token_kind: Some("client_credentials"),
                latency_us: 1397,
                peer: "127.0.0.1".parse().unwrap(),
            },
            AccessLine {
                route: NO_ROUTE,
                method: "OTHER",
                status: 404,
                decision: "deny",
                reason: "no_route",
                client: None,
                token_kind: None,
                latency_us: 0,
                peer: "2001:db8::1".parse().unwrap(),
            },
        ];
        for line in &lines {
            let theirs = subscriber_line(line);
            let stamp: serde_json::Value = serde_json::from_str(&theirs).unwrap();
            let stamp: std::time::SystemTime =
                humantime::parse_rfc3339(stamp["timestamp"].as_str().unwrap()).unwrap();
            let mut ours = Vec::new();
            line.write_json(&mut ours, stamp);
            assert_eq!(String::from_utf8(ours).unwrap(), theirs);
        }
    }

    #[test]
    fn log_lines_are_written_by_the_thread_without_waiting_for_exit() {
        let out = Shared::default();
        let (sink, _guard) = LogSink::start(out.clone());
        sink.make_writer().write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while out.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was never written"
            );
            std::thread::sleep(LOG_FLUSH_EVERY);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"one\n");
    }

    #[test]
    fn every_log_line_is_written_once_and_in_order_past_the_buffer_bound() {
        let out = Shared::default();
        let (sink, guard) = LogSink::start(out.clone());
        let lines = 3 * LOG_BUFFER_MAX / 16;
        for i in 0..lines {
            writeln!(sink.make_writer(), "{i:015}").unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let got: Vec<usize> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(got, (0..lines).collect::<Vec<_>>());
    }
}
