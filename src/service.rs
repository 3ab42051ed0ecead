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

use crate::credentials::{Authenticator, Identity};
use crate::path;
use crate::policy;
use crate::refusal::Refusal;
use crate::routes::{ErrorStyle, Route, RouteTable, Rule};
use crate::telemetry::{Metrics, NO_ROUTE, method_label};
use crate::upstream::{
    ForwardContext, IdentityHeaderNames, Upstream, prepare_request_headers, remove_hop_by_hop,
};

/// Body of every response: the upstream's, streamed, or one scopegate wrote.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Gateway-wide settings that do not change on route reload.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub realm: String,
    pub max_request_body: usize,
    pub identity_headers: IdentityHeaderNames,
    pub access_log: bool,
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

/// A request that may not, with the route it matched (if any) for labels and error style.
type Denied<'t> = (Option<&'t Route>, Refusal);

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
        let started = Instant::now();
        let table = self.table.load();
        let (mut parts, body) = request.into_parts();
        let method = method_label(&parts.method);

        let (route, identity, uri) = match self.decide(&table, &parts) {
            Ok(permit) => {
                let upstream = self.upstream_for(permit.route);
                match upstream.uri(&permit.path, parts.uri.query()) {
                    Ok(uri) => (permit.route, permit.identity, (upstream, uri)),
                    Err(refusal) => {
                        return self.refuse(&table, None, method, refusal, started, conn);
                    }
                }
            }
            Err((route, refusal)) => {
                return self.refuse(&table, route, method, refusal, started, conn);
            }
        };
        self.metrics
            .decision_seconds
            .observe(started.elapsed().as_secs_f64());
        let (upstream, uri) = uri;

        if content_length(&parts.headers).is_some_and(|n| n > self.settings.max_request_body as u64)
        {
            return self.refuse(
                &table,
                Some(route),
                method,
                Refusal::BodyTooLarge,
                started,
                conn,
            );
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
                peer: conn.peer,
                tls: conn.tls,
                host,
                identity: identity.as_deref(),
                route: &route.template_header,
            },
        );
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let request =
            Request::from_parts(parts, Limited::new(body, self.settings.max_request_body));

        let forwarded = Instant::now();
        let result = upstream.send(request).await;
        self.metrics
            .upstream_seconds
            .with_label_values(&[&route.template])
            .observe(forwarded.elapsed().as_secs_f64());
        match result {
            Ok(mut response) => {
                remove_hop_by_hop(response.headers_mut());
                let status = response.status().as_u16();
                self.metrics
                    .requests
                    .with_label_values(&[&route.template, method, "allow"])
                    .inc();
                if self.settings.access_log {
                    tracing::info!(
                        target: "scopegate::access",
                        route = &*route.template,
                        method,
                        status,
                        decision = "allow",
                        reason = "permitted",
                        client = identity.as_ref().and_then(|i| i.client.as_deref()),
                        token_kind = identity.as_ref().and_then(|i| i.token_kind.as_deref()),
                        latency_us = started.elapsed().as_micros() as u64,
                        peer = %conn.peer.ip(),
                    );
                }
                response.map(Either::Left)
            }
            Err(refusal) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[&route.template, refusal.reason()])
                    .inc();
                self.refuse(&table, Some(route), method, refusal, started, conn)
            }
        }
    }

    /// Normalise, route and authorise. Default deny: only a satisfied rule returns `Ok`.
    fn decide<'t, 'p>(
        &self,
        table: &'t RouteTable,
        parts: &'p Parts,
    ) -> Result<Permit<'t, 'p>, Denied<'t>> {
        check_authority(parts).map_err(|r| (None, r))?;
        let path = path::normalise(parts.uri.path()).map_err(|e| (None, Refusal::BadTarget(e)))?;
        let Some(matched) = table.find(&path) else {
            return Err((None, Refusal::NoRoute));
        };
        let route = matched.route;
        // HEAD is judged as GET unless the route says otherwise.
        let rule = match route.rule(&parts.method) {
            Some(rule) => rule,
            None => {
                return Err((
                    Some(route),
                    Refusal::MethodNotAllowed {
                        allow: route.allow.clone(),
                    },
                ));
            }
        };
        let identity = match &**rule {
            Rule::Public => None,
            Rule::Protected(requirement) => {
                let identity = self
                    .auth
                    .authenticate(&parts.headers)
                    .map_err(|e| (Some(route), e.into()))?;
                let held = identity.scopes_in(table, route.preset);
                if !policy::permits(requirement, &identity, &held) {
                    return Err((
                        Some(route),
                        Refusal::InsufficientScope {
                            needed: requirement.needed.clone(),
                        },
                    ));
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

    fn refuse(
        &self,
        table: &RouteTable,
        route: Option<&Route>,
        method: &'static str,
        refusal: Refusal,
        started: Instant,
        conn: ConnInfo,
    ) -> Response<ProxyBody> {
        let label = route.map_or(NO_ROUTE, |r| &r.template);
        let decision = refusal.decision();
        let reason = refusal.reason();
        if decision != "upstream_error" {
            self.metrics
                .decision_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.metrics
            .requests
            .with_label_values(&[label, method, decision])
            .inc();
        self.metrics.denials.with_label_values(&[reason]).inc();
        let status = refusal.status().as_u16();
        if self.settings.access_log {
            tracing::info!(
                target: "scopegate::access",
                route = label,
                method,
                status,
                decision,
                reason,
                latency_us = started.elapsed().as_micros() as u64,
                peer = %conn.peer.ip(),
            );
        }
        let style = route.map_or(ErrorStyle::Problem, |r| table.preset(r.preset).error_style);
        refusal
            .into_response(style, &self.settings.realm)
            .map(Either::Right)
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
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
