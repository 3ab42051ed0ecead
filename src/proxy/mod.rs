//! The proxy front end: one request in phases, each a step into its own module, answered and
//! recorded once (see `src/LIFECYCLE.md`):
//!
//! admit (framing, header names, CORS preflight) -> decide ([`Policy::decide`]) -> prepare the
//! upstream request ([`forward`]: target, headers, body read ahead) -> forward
//! ([`crate::upstream`]) -> record ([`Telemetry::record`]).

mod forward;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;

use crate::body::Relayed;
use crate::cors::Cors;
use crate::credentials::Identity;
use crate::forwarding::HeaderRules;
use crate::hygiene::{check_framing, check_header_names};
use crate::listener::{ConnInfo, Handler};
use crate::policy::{Decision, Policy, RequestHead};
use crate::refusal::Refusal;
use crate::routes::{ErrorStyle, Route, RouteTable};
use crate::telemetry::names::{decision, reason};
use crate::telemetry::{AccessLine, Metrics, NO_ROUTE, Outcome, Telemetry, method_label};
use crate::upstream::Upstream;

/// Body of every response: the upstream's (read ahead, then streamed), or one scopegate wrote.
pub type ProxyBody = Either<Relayed<Incoming>, Full<Bytes>>;

/// Gateway-wide settings that do not change on route reload.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub realm: String,
    pub max_request_body: usize,
    /// Identity headers set, credential headers read, and what `[forwarding]` says about
    /// header names with `_` or `.`.
    pub headers: HeaderRules,
    pub access_log: bool,
    /// Bodies up to this size are read whole before they are passed on (`limits.buffer_body_bytes`).
    pub read_ahead: usize,
    pub request_body_timeout: Duration,
    pub cors: Option<Arc<Cors>>,
}

/// The proxy: the policy that decides, the upstreams it forwards to, where it records.
#[derive(Debug)]
pub struct Gateway {
    policy: Arc<Policy>,
    upstreams: Upstreams,
    telemetry: Telemetry,
    settings: GatewaySettings,
}

/// Upstreams by name; `default` serves routes that name none.
#[derive(Debug)]
struct Upstreams {
    default: Option<Arc<Upstream>>,
    named: std::collections::HashMap<Arc<str>, Arc<Upstream>>,
}

impl Upstreams {
    fn new(upstreams: Vec<Upstream>) -> Upstreams {
        let named: std::collections::HashMap<Arc<str>, Arc<Upstream>> = upstreams
            .into_iter()
            .map(|u| (u.name.clone(), Arc::new(u)))
            .collect();
        Upstreams {
            default: named.get("default").cloned(),
            named,
        }
    }

    fn of(&self, route: &Route) -> &Arc<Upstream> {
        route
            .upstream
            .as_ref()
            .and_then(|name| self.named.get(name))
            .or(self.default.as_ref())
            .expect("route upstreams are validated when the table is compiled")
    }
}

/// What every outcome of one request is recorded with.
struct Ctx<'a> {
    table: &'a RouteTable,
    method: &'static str,
    started: Instant,
    /// Arrival to decision, once decided.
    decided: Option<Duration>,
    conn: ConnInfo,
    version: http::Version,
    /// `Origin`, kept only when `[cors]` is set.
    origin: Option<HeaderValue>,
}

/// How a request ended, for [`Gateway::record`].
struct Ending {
    status: u16,
    decision: &'static str,
    reason: &'static str,
}

impl Ending {
    fn new(status: u16, decision: &'static str, reason: &'static str) -> Ending {
        Ending {
            status,
            decision,
            reason,
        }
    }

    fn of(refusal: &Refusal) -> Ending {
        Ending::new(
            refusal.status().as_u16(),
            refusal.decision(),
            refusal.reason(),
        )
    }
}

impl Handler for Gateway {
    type Body = ProxyBody;

    async fn handle(&self, request: Request<Incoming>, conn: ConnInfo) -> Response<ProxyBody> {
        let table = self.policy.current();
        let (mut parts, body) = request.into_parts();
        let mut cx = self.context(&table, &parts, conn);
        match self.admit(&mut parts) {
            Admit::Go => {}
            Admit::Refuse(refusal) => return self.refuse(&cx, None, None, refusal),
            Admit::Preflight(cors) => {
                drain(body).await;
                return self.preflight(&cx, cors, &parts);
            }
        }
        let decision = self.policy.decide(&table, &RequestHead::of(&parts)).await;
        cx.decided = Some(cx.started.elapsed());
        let (route, identity, refusal) = match decision {
            Decision::Forward {
                route,
                identity,
                path,
                shadow,
            } => {
                let upstream = self.upstreams.of(route);
                match upstream.uri(&path, parts.uri.query()) {
                    Ok(target) => {
                        let permit = forward::Permit {
                            route,
                            identity,
                            shadow,
                            upstream,
                        };
                        return self.forward(&cx, permit, target, parts, body).await;
                    }
                    Err(e) => (Some(route), identity, Refusal::from(e)),
                }
            }
            Decision::Refuse {
                route,
                identity,
                refusal,
            } => (route, identity, refusal),
        };
        drain_unless_closing(&refusal, body).await;
        self.refuse(&cx, route, identity.as_deref(), refusal)
    }
}

/// What the admit phase lets through.
enum Admit<'a> {
    Go,
    /// Framing scopegate will not relay.
    Refuse(Refusal),
    /// A CORS preflight, answered here.
    Preflight(&'a Cors),
}

impl Gateway {
    pub fn new(
        policy: Arc<Policy>,
        upstreams: Vec<Upstream>,
        metrics: Arc<Metrics>,
        settings: GatewaySettings,
    ) -> Gateway {
        Gateway {
            policy,
            upstreams: Upstreams::new(upstreams),
            telemetry: Telemetry {
                metrics,
                access_log: settings.access_log,
            },
            settings,
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn upstream_names(&self) -> Vec<String> {
        self.upstreams.named.keys().map(|k| k.to_string()).collect()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.telemetry.metrics
    }
}

impl Gateway {
    fn context<'t>(&self, table: &'t RouteTable, parts: &Parts, conn: ConnInfo) -> Ctx<'t> {
        Ctx {
            table,
            method: method_label(&parts.method),
            started: Instant::now(),
            decided: None,
            conn,
            version: parts.version,
            origin: match self.settings.cors {
                Some(_) => parts.headers.get(header::ORIGIN).cloned(),
                None => None,
            },
        }
    }

    /// Framing first, then header names (some dropped here, so that the decision sees what
    /// the upstream will), then a CORS preflight is answered before anything is judged.
    fn admit(&self, parts: &mut Parts) -> Admit<'_> {
        if let Err(refusal) = check_framing(parts)
            .and_then(|()| check_header_names(&mut parts.headers, &self.settings.headers))
        {
            return Admit::Refuse(refusal);
        }
        match &self.settings.cors {
            Some(cors) if Cors::is_preflight(&parts.method, &parts.headers) => {
                Admit::Preflight(cors)
            }
            _ => Admit::Go,
        }
    }

    /// A browser preflight, answered here from the route table; never forwarded.
    fn preflight(&self, cx: &Ctx<'_>, cors: &Cors, parts: &Parts) -> Response<ProxyBody> {
        let path = match crate::path::normalise(parts.uri.path()) {
            Ok(path) => path,
            Err(e) => return self.refuse(cx, None, None, Refusal::BadTarget(e)),
        };
        let Some(matched) = cx.table.find(&path) else {
            return self.refuse(cx, None, None, Refusal::NoRoute);
        };
        let route = matched.route;
        match cors.preflight(route, &parts.headers) {
            Ok(response) => {
                let ending = Ending::new(204, decision::PREFLIGHT, reason::CORS_PREFLIGHT);
                self.record(cx, Some(route), None, ending, None);
                response.map(Either::Right)
            }
            Err(why) => self.refuse(cx, Some(route), None, Refusal::CorsRejected(why)),
        }
    }

    /// Answers with `refusal`, recorded.
    fn refuse(
        &self,
        cx: &Ctx<'_>,
        route: Option<&Route>,
        identity: Option<&Identity>,
        refusal: Refusal,
    ) -> Response<ProxyBody> {
        // A decision taken in the admit phase is the refusal itself.
        let decided = cx.decided.or_else(|| Some(cx.started.elapsed()));
        self.record(cx, route, identity, Ending::of(&refusal), decided);
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

    /// The one record of this request's outcome.
    fn record(
        &self,
        cx: &Ctx<'_>,
        route: Option<&Route>,
        identity: Option<&Identity>,
        ending: Ending,
        decided: Option<Duration>,
    ) {
        self.telemetry.record(&Outcome {
            line: AccessLine {
                route: route.map_or(NO_ROUTE, |r| &r.template),
                method: cx.method,
                status: ending.status,
                decision: ending.decision,
                reason: ending.reason,
                client: identity.and_then(|i| i.client.as_deref()),
                token_kind: identity.and_then(|i| i.token_kind.as_deref()),
                latency_us: 0,
                peer: cx.conn.peer.ip(),
            },
            handles: route.map(|r| &r.metrics),
            started: cx.started,
            decided,
        });
    }
}

/// Most of a refused request's body read before answering, and how long that may take.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_millis(500);

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

/// [`drain`], unless the answer closes the connection anyway.
async fn drain_unless_closing(refusal: &Refusal, body: Incoming) {
    if !refusal.closes_connection() {
        drain(body).await;
    }
}
