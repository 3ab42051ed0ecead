//! The Prometheus metrics, with per-route handles so that counting a request is an atomic add.

use std::sync::OnceLock;

use super::names::{NO_ROUTE, decision, result};
use http::Method;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

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
    decision::ALLOW,
    decision::FORBIDDEN,
    decision::INVALID_TOKEN,
    decision::UNAUTHENTICATED,
    decision::WOULD_DENY,
    decision::METHOD_NOT_ALLOWED,
];
const HOT_DENIALS: [&str; 6] = [
    "insufficient_scope",
    "no_credentials",
    "token_expired",
    "token_bad_signature",
    "no_route",
    "method_not_allowed",
];
const HOT_VERIFICATIONS: [&str; 1] = [result::VALID];

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
