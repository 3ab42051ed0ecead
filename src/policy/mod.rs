//! The one decision. Every front end (the proxy, `explain`, the decision protocols) asks
//! [`Policy::decide`] and acts on its [`Decision`]: the request target checked and normalised,
//! the route matched, the method's rule found, the credentials verified (or taken from the
//! cache), the token rules, tenant, companions, rule and gates applied, and shadow mode
//! (`enforce = false`) turned into a forward that says what it would have refused. Default
//! deny: only a satisfied rule, or a shadow route, forwards.

mod explain;
pub mod rules;
mod target;

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use http::request::Parts;
use http::{HeaderMap, Method, Uri, Version, header};

use crate::credentials::{Authenticator, Identity};
use crate::path;
use crate::refusal::Refusal;
use crate::routes::{Companion, DoubleEncoding, Matched, Requirement, Route, RouteTable, Rule};
pub use explain::Explanation;
pub use rules::{Companions, apply_gates, check_token, companion_problem, permits};
use target::{check_authority, check_query};

/// What the decision reads of a request: no body, no connection.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// The target as sent: origin form, or absolute form with an authority.
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    pub fn of(parts: &'a Parts) -> RequestHead<'a> {
        RequestHead {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
        }
    }

    /// `Host`, else the target's authority.
    fn host(&self) -> Option<&'a str> {
        self.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| self.uri.authority().map(|a| a.as_str()))
    }
}

/// The verdict alone, as decision protocols and tests see it.
#[derive(Debug, Clone)]
pub enum Verdict {
    Allow,
    /// Forwarded on a shadow route, though the rule refused it for this reason.
    WouldDeny(Refusal),
    Deny(Refusal),
}

impl Verdict {
    /// The status the client sees from scopegate: 200 when forwarded (the upstream answers).
    pub fn status(&self) -> u16 {
        match self {
            Verdict::Allow | Verdict::WouldDeny(_) => 200,
            Verdict::Deny(r) => r.status().as_u16(),
        }
    }

    /// The `reason` of the access line.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Allow => crate::telemetry::names::reason::PERMITTED,
            Verdict::WouldDeny(r) | Verdict::Deny(r) => r.reason(),
        }
    }
}

/// The decision on one request.
#[derive(Debug)]
pub enum Decision<'t, 'p> {
    /// Forward `path` (canonical) for `route`: the rule held (`shadow` is `None`), or it did not
    /// on a shadow route (`shadow` says why).
    Forward {
        route: &'t Route,
        identity: Option<Arc<Identity>>,
        path: Cow<'p, str>,
        shadow: Option<Refusal>,
    },
    /// Answer `refusal`; `route` (for labels and error style) and `identity` (for the access
    /// log) when the request got that far.
    Refuse {
        route: Option<&'t Route>,
        identity: Option<Arc<Identity>>,
        refusal: Refusal,
    },
}

impl Decision<'_, '_> {
    pub fn verdict(&self) -> Verdict {
        match self {
            Decision::Forward { shadow: None, .. } => Verdict::Allow,
            Decision::Forward {
                shadow: Some(r), ..
            } => Verdict::WouldDeny(r.clone()),
            Decision::Refuse { refusal, .. } => Verdict::Deny(refusal.clone()),
        }
    }

    pub fn route(&self) -> Option<&Route> {
        match self {
            Decision::Forward { route, .. } => Some(route),
            Decision::Refuse { route, .. } => *route,
        }
    }

    pub fn identity(&self) -> Option<&Arc<Identity>> {
        match self {
            Decision::Forward { identity, .. } | Decision::Refuse { identity, .. } => {
                identity.as_ref()
            }
        }
    }
}

/// A refusal on the way, with what was established before it.
struct Denied<'t, 'p> {
    route: Option<&'t Route>,
    identity: Option<Arc<Identity>>,
    path: Option<Cow<'p, str>>,
    refusal: Refusal,
}

impl Denied<'_, '_> {
    fn bare(refusal: Refusal) -> Self {
        Denied {
            route: None,
            identity: None,
            path: None,
            refusal,
        }
    }
}

/// The route table (swapped whole on reload) and the credentials that decisions use.
#[derive(Debug)]
pub struct Policy {
    table: ArcSwap<RouteTable>,
    auth: Authenticator,
}

impl Policy {
    pub fn new(table: RouteTable, auth: Authenticator) -> Policy {
        Policy {
            table: ArcSwap::from_pointee(table),
            auth,
        }
    }

    /// Swaps in a new route table; requests in flight finish on the one they loaded.
    pub fn replace_table(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    /// The current table, for one request (no reference count moves).
    pub fn current(&self) -> Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// The current table, to keep.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// The decision on `request` against `table` (the one the caller loaded, so that what it
    /// records and answers comes from the same table).
    pub async fn decide<'t, 'p>(
        &self,
        table: &'t RouteTable,
        request: &RequestHead<'p>,
    ) -> Decision<'t, 'p> {
        match self.authorise(table, request).await {
            Ok((route, identity, path)) => Decision::Forward {
                route,
                identity,
                path,
                shadow: None,
            },
            // Shadow mode: a refusal about credentials or what they grant is forwarded and
            // counted as `would_deny`. Never a malformed request or an unknown route.
            Err(Denied {
                route: Some(route),
                identity,
                path: Some(path),
                refusal,
            }) if !route.enforce && refusal.is_authorization() => Decision::Forward {
                route,
                identity,
                path,
                shadow: Some(refusal),
            },
            Err(d) => Decision::Refuse {
                route: d.route,
                identity: d.identity,
                refusal: d.refusal,
            },
        }
    }

    /// The verdict on a request against the current table: for decision protocols, tools and
    /// tests. Nothing is forwarded or logged (the token cache counters still count).
    pub async fn verdict(&self, parts: &Parts) -> Verdict {
        let table = self.current();
        self.decide(&table, &RequestHead::of(parts)).await.verdict()
    }

    /// Allowed or not, as [`Policy::verdict`] without building the verdict (benchmarks).
    pub async fn judge(&self, parts: &Parts) -> Result<(), Refusal> {
        let table = self.current();
        match self.decide(&table, &RequestHead::of(parts)).await {
            Decision::Forward { .. } => Ok(()),
            Decision::Refuse { refusal, .. } => Err(refusal),
        }
    }

    /// Target, route, method, then the rule. Only a satisfied rule returns `Ok`.
    async fn authorise<'t, 'p>(
        &self,
        table: &'t RouteTable,
        request: &RequestHead<'p>,
    ) -> Result<(&'t Route, Option<Arc<Identity>>, Cow<'p, str>), Denied<'t, 'p>> {
        check_authority(request).map_err(Denied::bare)?;
        check_query(request).map_err(Denied::bare)?;
        let path =
            path::normalise(request.uri.path()).map_err(|e| Denied::bare(Refusal::BadTarget(e)))?;
        let Some(matched) = table.find(&path) else {
            return Err(Denied::bare(Refusal::NoRoute));
        };
        let route = matched.route;
        if table.preset(route.preset).paths.double_encoding == DoubleEncoding::Refuse
            && path::double_encoded(&path)
        {
            let refusal = Refusal::BadTarget(path::PathError::DoubleEncoded);
            return Err(denied(route, None, path, refusal));
        }
        let Some(rule) = route.rule(request.method) else {
            let refusal = Refusal::MethodNotAllowed {
                allow: route.allow.clone(),
            };
            return Err(denied(route, None, path, refusal));
        };
        let identity = match &**rule {
            Rule::Public => None,
            Rule::Protected(requirement) => {
                match self.grant(table, &matched, requirement, request).await {
                    Ok(identity) => Some(identity),
                    Err((identity, refusal)) => {
                        return Err(denied(route, identity, path, refusal));
                    }
                }
            }
        };
        Ok((route, identity, path))
    }

    /// The identity behind the credentials, when it satisfies `requirement` on this route.
    async fn grant(
        &self,
        table: &RouteTable,
        matched: &Matched<'_, '_>,
        requirement: &Requirement,
        request: &RequestHead<'_>,
    ) -> Result<Arc<Identity>, (Option<Arc<Identity>>, Refusal)> {
        let route = matched.route;
        let headers = request.headers;
        // The cache hit needs no await. The full path is boxed: its future (a JWKS refresh, an
        // introspection call) is large, and would otherwise be built inside every request's.
        let identity = match self.auth.cached(headers) {
            Some(identity) => identity,
            None => Box::pin(self.auth.authenticate(headers))
                .await
                .map_err(|e| (None, e.into()))?,
        };
        let preset = table.preset(route.preset);
        let held = identity.scopes_in(table, route.preset);
        if let Err(e) = check_token(preset, &identity, &held) {
            return Err((Some(identity), Refusal::InvalidToken(e)));
        }
        if let Some(binding) = &route.tenant
            && !binding.admits(matched, request.host(), identity.tenant.as_deref())
        {
            return Err((Some(identity), Refusal::WrongTenant));
        }
        let companions: Companions = if requirement.uses_companions {
            Companion::ALL.map(|kind| self.auth.companion(kind, headers))
        } else {
            [None, None]
        };
        let (counted, gate) = apply_gates(preset, &identity, held);
        if permits(requirement, &identity, &counted, &companions) {
            return Ok(identity);
        }
        if let Some(e) = companion_problem(requirement, &identity, &companions) {
            return Err((Some(identity), Refusal::InvalidToken(e)));
        }
        let needed = requirement.needed.clone();
        let refusal = match gate {
            // The token holds what is needed, but a gate took it away: say which.
            Some(gate) if permits(requirement, &identity, &held, &companions) => {
                Refusal::Gated { needed, gate }
            }
            _ => Refusal::InsufficientScope { needed },
        };
        Err((Some(identity), refusal))
    }
}

fn denied<'t, 'p>(
    route: &'t Route,
    identity: Option<Arc<Identity>>,
    path: Cow<'p, str>,
    refusal: Refusal,
) -> Denied<'t, 'p> {
    Denied {
        route: Some(route),
        identity,
        path: Some(path),
        refusal,
    }
}
