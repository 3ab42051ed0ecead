//! The forwarding phases of the proxy: prepare the upstream request (body bound, headers
//! rewritten, the canonical target), send it, relay the answer, and record the outcome, even
//! when the client goes away while the upstream works.

use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version, header};
use http_body_util::Either;
use hyper::body::{Body, Incoming};

use super::{Ctx, Ending, Gateway, ProxyBody};
use crate::body::{self, Relayed};
use crate::credentials::Identity;
use crate::forwarding::{ForwardContext, prepare_request_headers, remove_hop_by_hop};
use crate::hygiene::content_length;
use crate::params;
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
        // Should the client reset its stream while the body is read, hyper drops this future
        // (at the first await after the reset): recorded by the guard, never forwarded.
        let reset = Ending::new(
            STATUS_CLIENT_CLOSED,
            decision::BAD_REQUEST,
            reason::REQUEST_BODY_RESET,
        );
        let mut unfinished = Unfinished {
            gateway: self,
            cx,
            permit: &permit,
            ending: Some(reset),
        };
        let prepared = self.prepare(cx, &permit, target, parts, body).await;
        unfinished.ending = None;
        let request = match prepared {
            Ok(request) => request,
            Err(refusal) => return self.refuse(cx, Some(route), identity, refusal),
        };
        let forwarded = Instant::now();
        // Should the client go away while the upstream works, this future is dropped here: the
        // upstream has the request, so the guard still records it, with its decision.
        let closed = Ending::new(
            STATUS_CLIENT_CLOSED,
            permit.labels().0,
            reason::CLIENT_CLOSED,
        );
        unfinished.ending = Some(closed);
        let result = permit.upstream.send(request).await;
        unfinished.ending = None;
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
        let version = std::mem::replace(&mut parts.version, Version::HTTP_11);
        let settings = &self.settings;
        let sent_body = !body.is_end_stream();
        let body = body::read_ahead(
            body,
            settings.read_ahead,
            max as u64,
            settings.request_body_timeout,
        )
        .await
        .map_err(|e| Refusal::from(e.fault()))?;
        judge_body(&parts.method, version, &parts.headers, &body)?;
        if sent_body && version == Version::HTTP_2 {
            // hyper ends an HTTP/2 body reset with NO_ERROR as if it were complete, and checks
            // for a reset only when this future waits: wait once before the request is handed
            // to a pooled connection, so that a reset stream is dropped here, not forwarded.
            tokio::task::yield_now().await;
        }
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

/// What a request body may not be, judged once it is read ahead (the decision reads only the
/// head). Bodiless requests, the common case, cost a pointer check.
///
/// - GET and HEAD carry no body: one is refused, never forwarded emptied or intact (an
///   upstream that ignores it would read its bytes as the next request).
/// - A form body (`application/x-www-form-urlencoded`, or a POST without `Content-Type`, which
///   Rack reads as a form) is checked for an `access_token` (RFC 6750 2.2) as the query is; one
///   too large to read whole, or content-encoded, cannot be checked and is refused.
/// - An HTTP/2 body past the read-ahead bound must declare its length (see
///   [`Refusal::LengthRequired`]).
fn judge_body(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    body: &UpstreamBody,
) -> Result<(), Refusal> {
    let streaming = body.is_streaming();
    let data = body.complete_data();
    if data.is_none() && !streaming {
        return Ok(());
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Err(Refusal::Malformed("body_on_get_or_head"));
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter().peekable();
    let form = match types.peek() {
        None => *method == Method::POST,
        Some(_) => types.any(|t| params::is_form_urlencoded(t.as_bytes())),
    };
    if form {
        let encoded = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .any(|e| !e.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"));
        match data {
            None => return Err(Refusal::FormTooLarge),
            Some(_) if encoded => return Err(Refusal::Ambiguous("form_body_encoded")),
            Some(data) if params::carries_access_token(data) => {
                return Err(Refusal::Ambiguous("token_in_body"));
            }
            Some(_) => {}
        }
    }
    if streaming && version == Version::HTTP_2 && content_length(headers).is_none() {
        return Err(Refusal::LengthRequired);
    }
    Ok(())
}

/// A prepared or forwarded request whose future is dropped before it ends: by hyper, when the
/// client resets its HTTP/2 stream before its body is in (never forwarded: 499
/// `request_body_reset`), or when the client goes away while the upstream works (the upstream
/// has it: 499 `client_closed`, with the decision). Records `ending` when dropped with one.
struct Unfinished<'a> {
    gateway: &'a Gateway,
    cx: &'a Ctx<'a>,
    permit: &'a Permit<'a>,
    ending: Option<Ending>,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(ending) = self.ending.take() {
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
