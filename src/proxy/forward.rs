//! The forwarding phases of the proxy: prepare the upstream request (body bound, headers
//! rewritten, the canonical target), send it, relay the answer, and record the outcome, even
//! when the client goes away while the upstream works.

use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::Either;
use hyper::body::Incoming;

use super::{Ctx, Ending, Gateway, ProxyBody};
use crate::body::{self, Relayed};
use crate::credentials::Identity;
use crate::forwarding::{ForwardContext, prepare_request_headers, remove_hop_by_hop};
use crate::hygiene::content_length;
use crate::refusal::Refusal;
use crate::routes::Route;
use crate::telemetry::names::{STATUS_CLIENT_CLOSED, decision, reason};
use crate::upstream::{Upstream, UpstreamBody};

/// A request the decision lets through.
pub(super) struct Permit<'a> {
    pub route: &'a Route,
    pub identity: Option<Arc<Identity>>,
    /// Shadow mode: what the rule would have refused.
    pub shadow: Option<Refusal>,
    pub upstream: &'a Arc<Upstream>,
}

impl Permit<'_> {
    /// The `decision` and `reason` an answered forward is recorded with.
    fn labels(&self) -> (&'static str, &'static str) {
        match &self.shadow {
            None => (decision::ALLOW, reason::PERMITTED),
            Some(r) => (decision::WOULD_DENY, r.reason()),
        }
    }
}

impl Gateway {
    /// Prepare, send, relay; every outcome recorded once.
    pub(super) async fn forward(
        &self,
        cx: &Ctx<'_>,
        permit: Permit<'_>,
        target: Uri,
        parts: Parts,
        body: Incoming,
    ) -> Response<ProxyBody> {
        let route = permit.route;
        let identity = permit.identity.as_deref();
        let request = match self.prepare(cx, &permit, target, parts, body).await {
            Ok(request) => request,
            Err(refusal) => return self.refuse(cx, Some(route), identity, refusal),
        };
        let forwarded = Instant::now();
        // Should the client go away while the upstream works, this future is dropped here: the
        // upstream has the request, so the guard still records it.
        let mut in_flight = InFlight {
            gateway: self,
            cx,
            permit: &permit,
            armed: true,
        };
        let result = permit.upstream.send(request).await;
        in_flight.armed = false;
        self.telemetry.metrics.observe_upstream(
            &route.template,
            &route.metrics,
            forwarded.elapsed().as_secs_f64(),
        );
        match result {
            Ok(response) => self.relay(cx, &permit, response),
            Err(e) => self.refuse(cx, Some(route), identity, Refusal::from(e)),
        }
    }

    /// The upstream request: within the size bound, headers rewritten, the canonical target,
    /// and the body read ahead (the upstream sees the request only once it is in).
    async fn prepare(
        &self,
        cx: &Ctx<'_>,
        permit: &Permit<'_>,
        target: Uri,
        mut parts: Parts,
        body: Incoming,
    ) -> Result<Request<UpstreamBody>, Refusal> {
        let max = self.settings.max_request_body;
        if content_length(&parts.headers).is_some_and(|n| n > max as u64) {
            return Err(Refusal::BodyTooLarge);
        }
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        prepare_request_headers(
            &mut parts.headers,
            &self.settings.headers,
            &ForwardContext {
                forwarded_for: &cx.conn.forwarded_for,
                tls: cx.conn.tls,
                host,
                identity: permit.identity.as_deref(),
                route: &permit.route.template_header,
            },
        );
        parts.uri = target;
        parts.version = http::Version::HTTP_11;
        let settings = &self.settings;
        let body = body::read_ahead(
            body,
            settings.read_ahead,
            max as u64,
            settings.request_body_timeout,
        )
        .await
        .map_err(|e| Refusal::from(e.fault()))?;
        Ok(Request::from_parts(parts, body))
    }

    /// The upstream's answer to the client: hop-by-hop headers out, CORS decorated, a body
    /// still streaming counted should it break.
    fn relay(
        &self,
        cx: &Ctx<'_>,
        permit: &Permit<'_>,
        mut response: Response<Relayed<Incoming>>,
    ) -> Response<ProxyBody> {
        let route = permit.route;
        remove_hop_by_hop(response.headers_mut());
        if let Some(cors) = &self.settings.cors {
            cors.decorate(cx.origin.as_ref(), response.headers_mut());
        }
        if response.body().is_streaming() {
            let failures = self
                .telemetry
                .metrics
                .upstream_errors
                .with_label_values(&[&route.template, reason::RESPONSE_TRUNCATED]);
            response = response.map(|b| b.count_failures(failures));
        }
        let (decision, reason) = permit.labels();
        let ending = Ending::new(response.status().as_u16(), decision, reason);
        self.record(
            cx,
            Some(route),
            permit.identity.as_deref(),
            ending,
            cx.decided,
        );
        response.map(Either::Left)
    }
}

/// A forwarded request still waiting for the upstream. Dropped armed (the client went away), it
/// records the decision with status 499 and reason `client_closed`.
struct InFlight<'a> {
    gateway: &'a Gateway,
    cx: &'a Ctx<'a>,
    permit: &'a Permit<'a>,
    armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            let decision = self.permit.labels().0;
            let ending = Ending::new(STATUS_CLIENT_CLOSED, decision, reason::CLIENT_CLOSED);
            self.gateway.record(
                self.cx,
                Some(self.permit.route),
                self.permit.identity.as_deref(),
                ending,
                self.cx.decided,
            );
        }
    }
}
