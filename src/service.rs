//! The HTTP service: one request, top to bottom — normalise, route, authenticate, decide,
//! forward — with every outcome counted and logged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;

use crate::body::{self, BodyError, Relayed};
use crate::cors::Cors;
use crate::credentials::{Authenticator, Identity};
use crate::path;
use crate::policy::{self, Companions};
use crate::refusal::Refusal;
use crate::routes::{Companion, ErrorStyle, Route, RouteTable, Rule};
use crate::telemetry::{AccessLine, Metrics, NO_ROUTE, method_label};
use crate::upstream::{
    ForwardContext, IdentityHeaderNames, Upstream, prepare_request_headers, remove_hop_by_hop,
};

/// Body of every response: the upstream's (read ahead, then streamed), or one scopegate wrote.
pub type ProxyBody = Either<Relayed<Incoming>, Full<Bytes>>;

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as the `X-Forwarded-For` value, written once per connection.
    pub forwarded_for: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer,
            tls,
            forwarded_for: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP address is a header value"),
        }
    }
}

/// Gateway-wide settings that do not change on route reload.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub realm: String,
    pub max_request_body: usize,
    pub identity_headers: IdentityHeaderNames,
    pub access_log: bool,
    /// Bodies up to this size are read whole before they are passed on (`limits.buffer_body_bytes`).
    pub read_ahead: usize,
    pub request_body_timeout: std::time::Duration,
    pub cors: Option<Arc<Cors>>,
}

/// Everything a request needs: the current route table (swapped whole on reload), credentials,
/// upstreams and metrics.
#[derive(Debug)]
pub struct Gateway {
    table: ArcSwap<RouteTable>,
    auth: Authenticator,
    default_upstream: Option<Arc<Upstream>>,
    upstreams: HashMap<Arc<str>, Arc<Upstream>>,
    metrics: Arc<Metrics>,
    settings: GatewaySettings,
}

/// A request that may go upstream, with its canonical path.
struct Permit<'t, 'p> {
    route: &'t Route,
    identity: Option<Arc<Identity>>,
    path: Cow<'p, str>,
}

/// A request that may not go upstream: the route it matched (for labels and error style) and
/// the identity, when one was established (for the access log).
struct Denied<'t> {
    route: Option<&'t Route>,
    identity: Option<Arc<Identity>>,
    refusal: Refusal,
}

impl Denied<'_> {
    fn bare(refusal: Refusal) -> Self {
        Denied {
            route: None,
            identity: None,
            refusal,
        }
    }
}

impl Gateway {
    pub fn new(
        table: RouteTable,
        auth: Authenticator,
        upstreams: Vec<Upstream>,
        metrics: Arc<Metrics>,
        settings: GatewaySettings,
    ) -> Gateway {
        let upstreams: HashMap<Arc<str>, Arc<Upstream>> = upstreams
            .into_iter()
            .map(|u| (u.name.clone(), Arc::new(u)))
            .collect();
        Gateway {
            table: ArcSwap::from_pointee(table),
            auth,
            default_upstream: upstreams.get("default").cloned(),
            upstreams,
            metrics,
            settings,
        }
    }

    /// Swaps in a new route table; requests in flight finish on the old one.
    pub fn replace_table(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    pub fn upstream_names(&self) -> Vec<String> {
        self.upstreams.keys().map(|k| k.to_string()).collect()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub async fn handle(&self, request: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let table = self.table.load();
        let (mut parts, body) = request.into_parts();
        let cx = Ctx {
            table: &table,
            method: method_label(&parts.method),
            started: Instant::now(),
            conn,
            version: parts.version,
            origin: match self.settings.cors {
                Some(_) => parts.headers.get(header::ORIGIN).cloned(),
                None => None,
            },
        };
        if let Err(refusal) = check_framing(&parts) {
            return self.refuse(&cx, Denied::bare(refusal));
        }
        if let Some(cors) = &self.settings.cors
            && Cors::is_preflight(&parts.method, &parts.headers)
        {
            drain(body).await;
            return self.preflight(&cx, cors, &parts);
        }

        // Shadow mode (`enforce = false`): an authorization denial is counted and logged as
        // `would_deny`, and the request goes on. Never for malformed requests or unknown routes.
        let mut shadow: Option<&'static str> = None;
        let permit = match self.decide(&table, &parts).await {
            Ok(permit) => permit,
            Err(Denied {
                route: Some(route),
                identity,
                refusal,
            }) if !route.enforce && refusal.is_authorization() => {
                shadow = Some(refusal.reason());
                match path::normalise(parts.uri.path()) {
                    Ok(path) => Permit {
                        route,
                        identity,
                        path,
                    },
                    Err(e) => return self.refuse(&cx, Denied::bare(Refusal::BadTarget(e))),
                }
            }
            Err(denied) => {
                if !denied.refusal.closes_connection() {
                    drain(body).await;
                }
                return self.refuse(&cx, denied);
            }
        };
        let Permit {
            route,
            identity,
            path,
        } = permit;
        let upstream = self.upstream_for(route);
        let deny = |refusal| Denied {
            route: Some(route),
            identity: identity.clone(),
            refusal,
        };
        let uri = match upstream.uri(&path, parts.uri.query()) {
            Ok(uri) => uri,
            Err(refusal) => {
                drain(body).await;
                return self.refuse(&cx, deny(refusal));
            }
        };
        self.metrics
            .decision_seconds
            .observe(cx.started.elapsed().as_secs_f64());
        if content_length(&parts.headers).is_some_and(|n| n > self.settings.max_request_body as u64)
        {
            return self.refuse(&cx, deny(Refusal::BodyTooLarge));
        }
        let host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        prepare_request_headers(
            &mut parts.headers,
            &self.settings.identity_headers,
            &ForwardContext {
                forwarded_for: &cx.conn.forwarded_for,
                tls: cx.conn.tls,
                host,
                identity: identity.as_deref(),
                route: &route.template_header,
            },
        );
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        // The upstream sees the request only once its body (up to the read-ahead bound) is in.
        let body = match body::read_ahead(
            body,
            self.settings.read_ahead,
            self.settings.max_request_body as u64,
            self.settings.request_body_timeout,
        )
        .await
        {
            Ok(body) => body,
            Err(e) => return self.refuse(&cx, deny(request_body_refusal(&e))),
        };
        let request = Request::from_parts(parts, body);

        let (decision, reason) = match shadow {
            None => ("allow", "permitted"),
            Some(reason) => ("would_deny", reason),
        };
        let forwarded = Instant::now();
        // Should the client go away while the upstream works, this future is dropped here: the
        // upstream has the request, so the guard still counts and logs it.
        let mut in_flight = InFlight {
            gateway: self,
            cx: &cx,
            route: &route.template,
            identity: identity.as_deref(),
            decision,
            armed: true,
        };
        let result = upstream.send(request).await;
        in_flight.armed = false;
        self.metrics.observe_upstream(
            &route.template,
            &route.metrics,
            forwarded.elapsed().as_secs_f64(),
        );
        match result {
            Ok(mut response) => {
                remove_hop_by_hop(response.headers_mut());
                if let Some(cors) = &self.settings.cors {
                    cors.decorate(cx.origin.as_ref(), response.headers_mut());
                }
                if response.body().is_streaming() {
                    let failures = self
                        .metrics
                        .upstream_errors
                        .with_label_values(&[&route.template, "response_truncated"]);
                    response = response.map(|b| b.count_failures(failures));
                }
                self.metrics.count_request(
                    Some((&route.template, &route.metrics)),
                    cx.method,
                    decision,
                );
                self.log(
                    &cx,
                    &route.template,
                    identity.as_deref(),
                    response.status().as_u16(),
                    decision,
                    reason,
                );
                response.map(Either::Left)
            }
            Err(refusal) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[&route.template, refusal.reason()])
                    .inc();
                self.refuse(&cx, deny(refusal))
            }
        }
    }

    /// The decision for a request, without forwarding anything: what `scopegate explain` prints.
    /// Runs the same `decide` as live traffic.
    pub async fn explain(&self, parts: &Parts) -> Explanation {
        let table = self.table.load_full();
        let (route, identity, refusal, path) = match self.decide(&table, parts).await {
            Ok(permit) => (
                Some(permit.route),
                permit.identity,
                None,
                Some(permit.path.into_owned()),
            ),
            Err(denied) => (denied.route, denied.identity, Some(denied.refusal), None),
        };
        let held = identity.as_ref().zip(route).map(|(id, r)| {
            let vocabulary = &table.preset(r.preset).vocabulary;
            vocabulary.describe(&id.scopes_in(&table, r.preset))
        });
        let needed = route
            .and_then(|r| r.rule(&parts.method))
            .map(|rule| match &**rule {
                Rule::Public => "nothing (public)".to_owned(),
                Rule::Protected(requirement) => requirement.needed.to_string(),
            });
        Explanation {
            canonical_path: path,
            route: route.map(|r| {
                (
                    r.template.to_string(),
                    r.source.to_string(),
                    table.preset(r.preset).name.to_string(),
                )
            }),
            identity,
            held,
            needed,
            status: refusal.as_ref().map_or(200, |r| r.status().as_u16()),
            outcome: refusal.as_ref().map_or("forward", Refusal::decision),
            reason: refusal.as_ref().map_or("permitted", Refusal::reason),
        }
    }

    /// The decision alone, as live traffic makes it before forwarding (normalise, route,
    /// credentials, policy), with nothing forwarded or logged (the token cache counters still
    /// count): for benchmarks and tools.
    pub async fn judge(&self, parts: &Parts) -> Result<(), Refusal> {
        let table = self.table.load();
        match self.decide(&table, parts).await {
            Ok(_) => Ok(()),
            Err(denied) => Err(denied.refusal),
        }
    }

    /// Normalise, route and authorise. Default deny: only a satisfied rule returns `Ok`.
    async fn decide<'t, 'p>(
        &self,
        table: &'t RouteTable,
        parts: &'p Parts,
    ) -> Result<Permit<'t, 'p>, Denied<'t>> {
        check_authority(parts).map_err(Denied::bare)?;
        check_query(parts).map_err(Denied::bare)?;
        let path =
            path::normalise(parts.uri.path()).map_err(|e| Denied::bare(Refusal::BadTarget(e)))?;
        let Some(matched) = table.find(&path) else {
            return Err(Denied::bare(Refusal::NoRoute));
        };
        let route = matched.route;
        let deny = |identity, refusal| Denied {
            route: Some(route),
            identity,
            refusal,
        };
        let Some(rule) = route.rule(&parts.method) else {
            return Err(deny(
                None,
                Refusal::MethodNotAllowed {
                    allow: route.allow.clone(),
                },
            ));
        };
        let identity = match &**rule {
            Rule::Public => None,
            Rule::Protected(requirement) => {
                // The cache hit needs no await. The full path is boxed: its future (a JWKS
                // refresh, an introspection call) is large, and it would otherwise be built and
                // moved inside every request's future.
                let identity = match self.auth.cached(&parts.headers) {
                    Some(identity) => identity,
                    None => Box::pin(self.auth.authenticate(&parts.headers))
                        .await
                        .map_err(|e| deny(None, e.into()))?,
                };
                let held = identity.scopes_in(table, route.preset);
                if let Err(e) = policy::check_token(table.preset(route.preset), &identity, &held) {
                    return Err(deny(Some(identity), Refusal::InvalidToken(e)));
                }
                if let Some(binding) = &route.tenant {
                    let host = parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
                    if !binding.admits(&matched.params, host, identity.tenant.as_deref()) {
                        return Err(deny(Some(identity), Refusal::WrongTenant));
                    }
                }
                let companions: Companions = if requirement.uses_companions {
                    Companion::ALL.map(|kind| self.auth.companion(kind, &parts.headers))
                } else {
                    [None, None]
                };
                let (counted, gate) =
                    policy::apply_gates(table.preset(route.preset), &identity, held);
                if !policy::permits(requirement, &identity, &counted, &companions) {
                    if let Some(e) = policy::companion_problem(requirement, &identity, &companions)
                    {
                        return Err(deny(Some(identity), Refusal::InvalidToken(e)));
                    }
                    let needed = requirement.needed.clone();
                    let refusal = match gate {
                        // The token holds what is needed, but a gate took it away: say which.
                        Some(gate)
                            if policy::permits(requirement, &identity, &held, &companions) =>
                        {
                            Refusal::Gated { needed, gate }
                        }
                        _ => Refusal::InsufficientScope { needed },
                    };
                    return Err(deny(Some(identity), refusal));
                }
                Some(identity)
            }
        };
        Ok(Permit {
            route,
            identity,
            path,
        })
    }

    fn upstream_for(&self, route: &Route) -> &Arc<Upstream> {
        route
            .upstream
            .as_ref()
            .and_then(|name| self.upstreams.get(name))
            .or(self.default_upstream.as_ref())
            .expect("route upstreams are validated when the table is compiled")
    }

    fn refuse(&self, cx: &Ctx<'_>, denied: Denied<'_>) -> Response<ProxyBody> {
        let Denied {
            route,
            identity,
            refusal,
        } = denied;
        let label = route.map_or(NO_ROUTE, |r| &r.template);
        let decision = refusal.decision();
        let reason = refusal.reason();
        if decision != "upstream_error" {
            self.metrics
                .decision_seconds
                .observe(cx.started.elapsed().as_secs_f64());
            self.metrics.count_denial(reason);
        }
        self.metrics.count_request(
            route.map(|r| (&*r.template, &r.metrics)),
            cx.method,
            decision,
        );
        self.log(
            cx,
            label,
            identity.as_deref(),
            refusal.status().as_u16(),
            decision,
            reason,
        );
        let style = route.map_or(ErrorStyle::Problem, |r| {
            cx.table.preset(r.preset).error_style
        });
        let closes = refusal.closes_connection();
        let mut response = refusal.into_response(style, &self.settings.realm);
        if closes && cx.version <= http::Version::HTTP_11 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(cors) = &self.settings.cors {
            cors.decorate(cx.origin.as_ref(), response.headers_mut());
        }
        response.map(Either::Right)
    }

    /// A browser preflight, answered here from the route table; never forwarded.
    fn preflight(&self, cx: &Ctx<'_>, cors: &Cors, parts: &Parts) -> Response<ProxyBody> {
        let path = match path::normalise(parts.uri.path()) {
            Ok(path) => path,
            Err(e) => return self.refuse(cx, Denied::bare(Refusal::BadTarget(e))),
        };
        let Some(matched) = cx.table.find(&path) else {
            return self.refuse(cx, Denied::bare(Refusal::NoRoute));
        };
        let route = matched.route;
        match cors.preflight(route, &parts.headers) {
            Ok(response) => {
                self.metrics
                    .requests
                    .with_label_values(&[&route.template, cx.method, "preflight"])
                    .inc();
                self.log(
                    cx,
                    &route.template,
                    None,
                    204,
                    "preflight",
                    "cors_preflight",
                );
                response.map(Either::Right)
            }
            Err(why) => self.refuse(
                cx,
                Denied {
                    route: Some(route),
                    identity: None,
                    refusal: Refusal::CorsRejected(why),
                },
            ),
        }
    }

    /// One access-log line per decision; never the token, never an unmatched path.
    fn log(
        &self,
        cx: &Ctx<'_>,
        route: &str,
        identity: Option<&Identity>,
        status: u16,
        decision: &str,
        reason: &str,
    ) {
        if self.settings.access_log {
            AccessLine {
                route,
                method: cx.method,
                status,
                decision,
                reason,
                client: identity.and_then(|i| i.client.as_deref()),
                token_kind: identity.and_then(|i| i.token_kind.as_deref()),
                latency_us: cx.started.elapsed().as_micros() as u64,
                peer: cx.conn.peer.ip(),
            }
            .log();
        }
    }
}

/// A forwarded request still waiting for the upstream. Dropped armed (the client went away), it
/// counts the decision and logs it with status 499 and reason `client_closed`.
struct InFlight<'a> {
    gateway: &'a Gateway,
    cx: &'a Ctx<'a>,
    route: &'a str,
    identity: Option<&'a Identity>,
    decision: &'static str,
    armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.gateway
                .metrics
                .requests
                .with_label_values(&[self.route, self.cx.method, self.decision])
                .inc();
            self.gateway.log(
                self.cx,
                self.route,
                self.identity,
                499,
                self.decision,
                "client_closed",
            );
        }
    }
}

/// A decision explained (`scopegate explain`).
#[derive(Debug)]
pub struct Explanation {
    /// The path that would be forwarded (only when forwarded).
    pub canonical_path: Option<String>,
    /// Template, `file:line`, preset.
    pub route: Option<(String, String, String)>,
    pub identity: Option<Arc<Identity>>,
    /// Scopes held in the route's file, implication applied.
    pub held: Option<String>,
    /// What the method's rule needs.
    pub needed: Option<String>,
    /// 200 when it would be forwarded (the upstream then answers), else the refusal's status.
    pub status: u16,
    pub outcome: &'static str,
    pub reason: &'static str,
}

/// What every outcome of one request is recorded with.
struct Ctx<'a> {
    table: &'a RouteTable,
    method: &'static str,
    started: Instant,
    conn: ConnInfo,
    version: http::Version,
    /// `Origin`, kept only when `[cors]` is set.
    origin: Option<HeaderValue>,
}

/// Most of a refused request's body read before answering, and how long that may take.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_millis(500);

/// Reads (and drops) a small unread request body before a refusal, so that the client has
/// finished sending when the answer comes: otherwise HTTP/2 resets the stream under a client
/// still uploading and some clients lose the response, and HTTP/1.1 loses keep-alive. Bounded
/// in size and time; bodiless requests cost nothing.
async fn drain(body: Incoming) {
    use http_body_util::BodyExt;
    use hyper::body::Body;
    if body.is_end_stream() {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIME, Limited::new(body, DRAIN_LIMIT).collect()).await;
}

fn request_body_refusal(e: &BodyError) -> Refusal {
    match e {
        BodyError::Idle(_) => Refusal::BodyTimeout,
        BodyError::TooLarge(_) => Refusal::BodyTooLarge,
        BodyError::Broken(_) => Refusal::Malformed("bad_request_body"),
    }
}

/// What hyper's HTTP/1.1 parser lets through but scopegate will not relay. (Conflicting
/// lengths, bad chunk sizes, obs-fold, spaces before the colon and non-chunked transfer
/// codings never get this far: hyper refuses them with 400 and closes.)
fn check_framing(parts: &Parts) -> Result<(), Refusal> {
    let headers = &parts.headers;
    if parts.version <= http::Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if parts.version == http::Version::HTTP_11 => {
                return Err(Refusal::Malformed("missing_host"));
            }
            (Some(_), Some(_)) => return Err(Refusal::Malformed("multiple_host")),
            _ => {}
        }
        // Exactly one `Transfer-Encoding: chunked`, or none: `chunked, chunked`, a coding
        // before it, or the header twice are ways to make two parsers disagree.
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
        if let Some(first) = codings.next()
            && (codings.next().is_some()
                || !first
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"chunked"))
        {
            return Err(Refusal::Malformed("transfer_encoding"));
        }
    }
    // scopegate relays requests, not protocol switches (h2c, WebSocket).
    if headers.contains_key(header::UPGRADE) || headers.contains_key(&HTTP2_SETTINGS) {
        return Err(Refusal::Malformed("upgrade"));
    }
    Ok(())
}

static HTTP2_SETTINGS: http::HeaderName = http::HeaderName::from_static("http2-settings");

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// RFC 6750 2.3 puts tokens in the query (`access_token=`); scopegate refuses that form, which
/// leaks tokens into URLs and logs, rather than forward a credential it did not judge.
fn check_query(parts: &Parts) -> Result<(), Refusal> {
    let Some(query) = parts.uri.query() else {
        return Ok(());
    };
    let carries_token = query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        name.eq_ignore_ascii_case("access_token") || name.eq_ignore_ascii_case("access%5Ftoken")
    });
    if carries_token {
        Err(Refusal::Ambiguous("token_in_query"))
    } else {
        Ok(())
    }
}

/// An absolute-form target (HTTP/1.1) or `:authority` (HTTP/2) must agree with `Host`.
fn check_authority(parts: &Parts) -> Result<(), Refusal> {
    let Some(authority) = parts.uri.authority() else {
        return Ok(());
    };
    match parts.headers.get(header::HOST) {
        Some(host)
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(Refusal::Ambiguous("host_mismatch"))
        }
        _ if parts.method == Method::CONNECT => Err(Refusal::Ambiguous("connect_method")),
        _ => Ok(()),
    }
}
