//! The Prometheus metrics, with per-route handles so that counting a request is an atomic add.

use std::sync::OnceLock;

use super::names::{NO_ROUTE, decision, result};
use http::Method;
use prometheus::core::Collector;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    pub config_last_reload_success: Gauge,
    /// `scopegate_open_connections{listener}`.
    pub open_connections: IntGaugeVec,
    pub tls_handshake_failures: IntCounter,
    /// `scopegate_tls_certificate_expiry_timestamp_seconds`: the served leaf's notAfter (0 when
    /// no certificate is served).
    pub tls_certificate_expiry: Gauge,
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

/// A metric's name and help text.
struct Spec {
    name: &'static str,
    help: &'static str,
}

const REQUESTS: Spec = Spec {
    name: "scopegate_requests_total",
    help: "Requests by route template, method and decision.",
};
const DENIALS: Spec = Spec {
    name: "scopegate_denials_total",
    help: "Requests refused, by reason.",
};
const DECISION_SECONDS: Spec = Spec {
    name: "scopegate_decision_duration_seconds",
    help: "Time from request arrival to the allow/deny decision.",
};
const UPSTREAM_SECONDS: Spec = Spec {
    name: "scopegate_upstream_duration_seconds",
    help: "Time from forwarding to the upstream's response headers.",
};
const UPSTREAM_ERRORS: Spec = Spec {
    name: "scopegate_upstream_errors_total",
    help: "Upstream failures by route and kind.",
};
const TOKEN_CACHE_HITS: Spec = Spec {
    name: "scopegate_token_cache_hits_total",
    help: "Credentials answered from the token cache.",
};
const TOKEN_CACHE_MISSES: Spec = Spec {
    name: "scopegate_token_cache_misses_total",
    help: "Credentials not in the token cache.",
};
const TOKEN_CACHE_ENTRIES: Spec = Spec {
    name: "scopegate_token_cache_entries",
    help: "Verified tokens held in the cache.",
};
const TOKEN_CACHE_MAX_ENTRIES: Spec = Spec {
    name: "scopegate_token_cache_max_entries",
    help: "Most verified tokens the cache holds (cache.max_entries; 0: cache off).",
};
const TOKEN_VERIFICATIONS: Spec = Spec {
    name: "scopegate_token_verifications_total",
    help: "Token verifications by result.",
};
const CONFIG_RELOADS: Spec = Spec {
    name: "scopegate_config_reloads_total",
    help: "Route and certificate reloads by result.",
};
const CONFIG_LAST_RELOAD_SUCCESS: Spec = Spec {
    name: "scopegate_config_last_reload_success_timestamp_seconds",
    help: "Unix time of the last successful configuration load.",
};
const OPEN_CONNECTIONS: Spec = Spec {
    name: "scopegate_open_connections",
    help: "Client connections open, by listener.",
};
const TLS_HANDSHAKE_FAILURES: Spec = Spec {
    name: "scopegate_tls_handshake_failures_total",
    help: "TLS handshakes that failed or timed out.",
};
const TLS_CERTIFICATE_EXPIRY: Spec = Spec {
    name: "scopegate_tls_certificate_expiry_timestamp_seconds",
    help: "Unix time when the served TLS leaf certificate expires (notAfter); 0 without TLS.",
};
const JWKS_REFRESHES: Spec = Spec {
    name: "scopegate_jwks_refreshes_total",
    help: "Remote JWKS fetches by result.",
};
const JWKS_KEYS: Spec = Spec {
    name: "scopegate_jwks_keys",
    help: "Keys loaded from remote JWKS.",
};
const INTROSPECTIONS: Spec = Spec {
    name: "scopegate_introspections_total",
    help: "Token introspection calls by result.",
};

fn counter(Spec { name, help }: Spec) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

fn counter_vec(Spec { name, help }: Spec, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn int_gauge(Spec { name, help }: Spec) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

fn int_gauge_vec(Spec { name, help }: Spec, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(Spec { name, help }: Spec) -> Gauge {
    Gauge::new(name, help).expect("valid metric")
}

fn latency(Spec { name, help }: Spec) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
}

fn histogram(spec: Spec) -> Histogram {
    Histogram::with_opts(latency(spec)).expect("valid metric")
}

fn histogram_vec(spec: Spec, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(latency(spec), labels).expect("valid metric")
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            requests: counter_vec(REQUESTS, &["route", "method", "decision"]),
            denials: counter_vec(DENIALS, &["reason"]),
            decision_seconds: histogram(DECISION_SECONDS),
            upstream_seconds: histogram_vec(UPSTREAM_SECONDS, &["route"]),
            upstream_errors: counter_vec(UPSTREAM_ERRORS, &["route", "kind"]),
            token_cache_hits: counter(TOKEN_CACHE_HITS),
            token_cache_misses: counter(TOKEN_CACHE_MISSES),
            token_cache_entries: int_gauge(TOKEN_CACHE_ENTRIES),
            token_cache_max_entries: int_gauge(TOKEN_CACHE_MAX_ENTRIES),
            token_verifications: counter_vec(TOKEN_VERIFICATIONS, &["result"]),
            config_reloads: counter_vec(CONFIG_RELOADS, &["result"]),
            config_last_reload_success: gauge(CONFIG_LAST_RELOAD_SUCCESS),
            open_connections: int_gauge_vec(OPEN_CONNECTIONS, &["listener"]),
            tls_handshake_failures: counter(TLS_HANDSHAKE_FAILURES),
            tls_certificate_expiry: gauge(TLS_CERTIFICATE_EXPIRY),
            jwks_refreshes: counter_vec(JWKS_REFRESHES, &["result"]),
            jwks_keys: int_gauge(JWKS_KEYS),
            introspections: counter_vec(INTROSPECTIONS, &["result"]),
            hot_denials: Hot::new(),
            hot_verifications: Hot::new(),
        };
        for c in m.collectors() {
            m.registry.register(c).expect("metric registered once");
        }
        m
    }

    /// Every metric, for registering.
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.denials.clone()),
            Box::new(self.decision_seconds.clone()),
            Box::new(self.upstream_seconds.clone()),
            Box::new(self.upstream_errors.clone()),
            Box::new(self.token_cache_hits.clone()),
            Box::new(self.token_cache_misses.clone()),
            Box::new(self.token_cache_entries.clone()),
            Box::new(self.token_cache_max_entries.clone()),
            Box::new(self.token_verifications.clone()),
            Box::new(self.config_reloads.clone()),
            Box::new(self.config_last_reload_success.clone()),
            Box::new(self.open_connections.clone()),
            Box::new(self.tls_handshake_failures.clone()),
            Box::new(self.tls_certificate_expiry.clone()),
            Box::new(self.jwks_refreshes.clone()),
            Box::new(self.jwks_keys.clone()),
            Box::new(self.introspections.clone()),
        ]
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
