//! The one record of every outcome of every front end: the request counted by route, method and
//! decision, a refusal counted by reason, an upstream failure by kind, the decision time
//! observed, and the access line written. Callers say what happened; this decides what that
//! counts as.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access::AccessLine;
use super::metrics::{Metrics, RouteHandles};
use super::names::{NO_ROUTE, decision};

/// What became of one request.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// The matched route's template and metric handles; `None` before a route matched.
    pub route: Option<(&'a str, &'a RouteHandles)>,
    /// A bounded method label ([`super::method_label`]).
    pub method: &'static str,
    pub status: u16,
    /// One of [`decision`].
    pub decision: &'static str,
    /// A refusal's reason, an upstream failure's kind, or one of [`super::names::reason`].
    pub reason: &'static str,
    pub client: Option<&'a str>,
    pub token_kind: Option<&'a str>,
    pub peer: IpAddr,
    /// When the request arrived.
    pub started: Instant,
    /// Arrival to decision, when a decision was made (not for a CORS preflight).
    pub decided: Option<Duration>,
}

/// Where outcomes are recorded: the metrics, and whether access lines are written.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
}

impl Telemetry {
    pub fn record(&self, o: &Outcome<'_>) {
        let m = &self.metrics;
        if let Some(d) = o.decided {
            m.decision_seconds.observe(d.as_secs_f64());
        }
        if decision::is_denial(o.decision) {
            m.count_denial(o.reason);
        }
        let template = o.route.map_or(NO_ROUTE, |(t, _)| t);
        if o.decision == decision::UPSTREAM_ERROR {
            m.upstream_errors
                .with_label_values(&[template, o.reason])
                .inc();
        }
        m.count_request(o.route, o.method, o.decision);
        if self.access_log {
            AccessLine {
                route: template,
                method: o.method,
                status: o.status,
                decision: o.decision,
                reason: o.reason,
                client: o.client,
                token_kind: o.token_kind,
                latency_us: o.started.elapsed().as_micros() as u64,
                peer: o.peer,
            }
            .log();
        }
    }
}
