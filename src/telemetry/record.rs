//! The one record of every outcome of every front end: the request counted by route, method and
//! decision, a refusal counted by reason, an upstream failure by kind, the decision time
//! observed, and the access line written. Callers say what happened; this decides what that
//! counts as.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access::AccessLine;
use super::metrics::{Metrics, RouteHandles};
use super::names::decision;

/// What became of one request: its access line (`latency_us` is filled in when recorded), the
/// matched route's metric handles, and its times.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// `route` is the matched route's template, or [`NO_ROUTE`]; `decision` one of
    /// [`decision`]; `reason` a refusal's reason, an upstream failure's kind, or one of
    /// [`super::names::reason`].
    pub line: AccessLine<'a>,
    /// The matched route's handles; `None` before a route matched.
    pub handles: Option<&'a RouteHandles>,
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
        let (m, line) = (&self.metrics, &o.line);
        if let Some(d) = o.decided {
            m.decision_seconds.observe(d.as_secs_f64());
        }
        if decision::is_denial(line.decision) {
            m.count_denial(line.reason);
        }
        if line.decision == decision::UPSTREAM_ERROR {
            m.upstream_errors
                .with_label_values(&[line.route, line.reason])
                .inc();
        }
        let route = o.handles.map(|h| (line.route, h));
        m.count_request(route, line.method, line.decision);
        if self.access_log {
            AccessLine {
                latency_us: o.started.elapsed().as_micros() as u64,
                ..*line
            }
            .log();
        }
    }
}
