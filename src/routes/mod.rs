//! The compiled route table: matchit router over every loaded route file, immutable once built.

mod compile;
mod context;
mod equivalence;
pub mod file;
mod load;
mod patterns;
mod preset;
mod route;
mod rule;
mod vocabulary;

use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderValue, Method};

use crate::scopes::{ScopeSet, Vocabulary};
use crate::telemetry::RouteHandles;
pub use compile::{CompileOptions, compile, compile_paths};
pub use context::CompileError;
pub use equivalence::{Case, DoubleEncoding, PathRules, TrailingSlash};
pub use file::{Companion, ErrorStyle, PresetSettings};
pub use load::{RouteSource, load_paths};

/// Methods a route can allow. Anything else is refused with 405.
pub const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Index of `method` in [`METHODS`].
pub fn method_index(method: &Method) -> Option<usize> {
    METHODS.iter().position(|m| m == method)
}

/// Every route of every loaded file, compiled.
#[derive(Debug)]
pub struct RouteTable {
    /// One router per distinct [`PathRules`] among the presets, keyed by that rule's keys.
    groups: Box<[Group]>,
    /// Which groups can hold a path, by its first segment.
    dispatch: Dispatch,
    routes: Box<[Route]>,
    presets: Box<[Preset]>,
    /// Distinguishes tables across reloads (for per-table memoisation on cached tokens).
    generation: u64,
}

/// Which groups can hold a path: most requests are one router lookup, whatever the number of
/// groups (the presets' path prefixes are disjoint).
#[derive(Debug, Default)]
struct Dispatch {
    /// Lower-cased first segment of the patterns of two or more segments that begin with a
    /// literal one, and the groups with such a pattern (a handful: a scan beats a hash).
    by_first: Vec<(Box<str>, Vec<u16>)>,
    /// Groups with a pattern of one segment, or beginning with a parameter: always tried.
    always: Vec<u16>,
}

impl Dispatch {
    /// Notes that `group` holds a pattern with this key.
    fn add(&mut self, group: u16, key: &str) {
        let list = match key.strip_prefix('/').and_then(|k| k.split_once('/')) {
            Some((first, _)) if !first.contains('{') => {
                let first = first.to_ascii_lowercase();
                match self.by_first.iter().position(|(f, _)| **f == *first) {
                    Some(i) => &mut self.by_first[i].1,
                    None => {
                        self.by_first.push((first.into(), Vec::new()));
                        &mut self.by_first.last_mut().expect("just pushed").1
                    }
                }
            }
            _ => &mut self.always,
        };
        if !list.contains(&group) {
            list.push(group);
        }
    }

    /// The groups listed for the first segment of `path` (of two or more segments), in any
    /// case; `None` for a path of one segment.
    fn listed(&self, path: &str) -> Option<&[u16]> {
        let (first, _) = path.strip_prefix('/')?.split_once('/')?;
        let found = self
            .by_first
            .iter()
            .find(|(f, _)| f.len() == first.len() && f.eq_ignore_ascii_case(first));
        Some(found.map_or(&[][..], |(_, groups)| groups.as_slice()))
    }
}

/// The routes of the presets that share one [`PathRules`], under its keys.
#[derive(Debug)]
struct Group {
    rules: PathRules,
    router: matchit::Router<u32>,
}

/// One route file's settings and scope vocabulary.
#[derive(Debug)]
pub struct Preset {
    pub name: Arc<str>,
    pub file: Arc<str>,
    /// How its upstream routes paths.
    pub paths: PathRules,
    pub error_style: ErrorStyle,
    pub vocabulary: Vocabulary,
    /// Holding any of these lets a token lack `exp`.
    pub expiry_exempt: ScopeSet,
    /// Pairs a token must not hold together.
    pub incompatible: Box<[(u16, u16)]>,
    /// Scopes that count only under conditions outside the token.
    pub gates: Gates,
    pub examples: Box<[Example]>,
}

/// Why a held scope did not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The client is not on the approval list for the scope.
    NotApproved,
    /// The scope is not available to private apps.
    PrivateApp,
    /// The store does not have the scope's business function enabled.
    NoQualification,
}

/// Scopes that count only for approved clients, non-private apps, or stores with a business
/// function enabled.
#[derive(Debug, Default)]
pub struct Gates {
    pub needs_approval: ScopeSet,
    pub approved_clients: HashSet<Box<str>>,
    pub not_for_private_apps: ScopeSet,
    /// (scope bit, stores with the scope's business function enabled).
    pub needs_function: Box<[(u16, HashSet<Box<str>>)]>,
}

impl Gates {
    pub fn is_empty(&self) -> bool {
        self.needs_approval.is_empty()
            && self.not_for_private_apps.is_empty()
            && self.needs_function.is_empty()
    }
}

/// A sample request from a route file (`[[example]]`).
#[derive(Debug, Clone)]
pub struct Example {
    pub title: String,
    pub method: Method,
    pub path: String,
    pub claims: Option<serde_json::Value>,
    pub expect: u16,
}

#[derive(Debug)]
pub struct Route {
    /// The pattern as written (`/v2/orders/{id}`); the only path that reaches metric labels.
    pub template: Arc<str>,
    /// `file:line` of the `[[route]]`.
    pub source: Arc<str>,
    pub preset: u16,
    pub upstream: Option<Arc<str>>,
    pub rules: [Option<Arc<Rule>>; METHODS.len()],
    /// `Allow` header value for 405 answers.
    pub allow: HeaderValue,
    /// The template as a header value (`X-Scopegate-Route`).
    pub template_header: HeaderValue,
    pub tenant: Option<TenantBinding>,
    /// `false`: shadow mode (authorization denials are counted and forwarded).
    pub enforce: bool,
    /// This route's metric handles, resolved on first use.
    pub metrics: RouteHandles,
}

/// Where the request names its store, which must equal the token's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantBinding {
    /// A capture of the path pattern.
    Capture(Box<str>),
    /// The Host (port removed, case-insensitive) as `prefix{tenant}suffix`.
    Host { prefix: Box<str>, suffix: Box<str> },
}

impl TenantBinding {
    /// True when the request names exactly the token's store (`tenant`).
    pub fn admits(
        &self,
        matched: &Matched<'_, '_>,
        host: Option<&str>,
        tenant: Option<&str>,
    ) -> bool {
        match (self.requested(matched, host), tenant) {
            (Some(asked), Some(held)) => match self {
                TenantBinding::Capture(_) => asked == held,
                // Host names are case-insensitive.
                TenantBinding::Host { .. } => asked.eq_ignore_ascii_case(held),
            },
            _ => false,
        }
    }

    /// The store the request names, if it names one in the bound place.
    fn requested<'a>(&self, matched: &Matched<'_, 'a>, host: Option<&'a str>) -> Option<&'a str> {
        match self {
            TenantBinding::Capture(name) => matched.param(name),
            TenantBinding::Host { prefix, suffix } => {
                let host = host?;
                let host = host
                    .rsplit_once(':')
                    .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                    .map_or(host, |(h, _)| h);
                let lower = host.len() >= prefix.len() + suffix.len();
                (lower
                    && host[..prefix.len()].eq_ignore_ascii_case(prefix)
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix))
                .then(|| &host[prefix.len()..host.len() - suffix.len()])
                .filter(|t| !t.is_empty())
            }
        }
    }
}

/// What one method of one route requires.
#[derive(Debug, PartialEq)]
pub enum Rule {
    Public,
    Protected(Requirement),
}

/// Any one grant satisfies the requirement.
#[derive(Debug, PartialEq)]
pub struct Requirement {
    pub grants: Box<[Grant]>,
    /// Some grant needs a companion token (so companion headers are worth verifying).
    pub uses_companions: bool,
    /// What is needed, for `WWW-Authenticate: ... scope="..."` and problem bodies.
    pub needed: Arc<str>,
}

/// A conjunction: every condition given must hold.
#[derive(Debug, Default, PartialEq)]
pub struct Grant {
    pub scopes: ScopeSet,
    pub any_scopes: Option<ScopeSet>,
    /// One of these token kinds, when not empty.
    pub token_types: Box<[Box<str>]>,
    /// One of these roles, when not empty.
    pub roles: Box<[Box<str>]>,
    /// A companion token of this kind must accompany the bearer token.
    pub companion: Option<Companion>,
}

/// A route found for a path.
#[derive(Debug)]
pub struct Matched<'t, 'p> {
    pub route: &'t Route,
    /// The canonical path that was matched.
    pub path: &'p str,
    /// Its key under the route's path rules.
    key: std::borrow::Cow<'p, str>,
    router: &'t matchit::Router<u32>,
}

impl<'p> Matched<'_, 'p> {
    /// The value of the pattern's parameter `name`, as the request spelled it (a key may be
    /// lower-cased; it is a prefix of the path, so the parameter's place is the same in both).
    pub fn param(&self, name: &str) -> Option<&'p str> {
        let m = self.router.at(&self.key).ok()?;
        let value = m.params.get(name)?;
        let start = value.as_ptr() as usize - self.key.as_ptr() as usize;
        self.path.get(start..start + value.len())
    }
}

impl RouteTable {
    /// The route for a canonical path: the one whose pattern has the path's key under its
    /// preset's path rules. Patterns of different presets never share a key (checked at load),
    /// so at most one group matches.
    pub fn find<'t, 'p>(&'t self, path: &'p str) -> Option<Matched<'t, 'p>> {
        let listed = match self.dispatch.listed(path) {
            Some(listed) if self.groups.len() > 1 => listed,
            _ => return self.groups.iter().find_map(|g| self.in_group(g, path)),
        };
        listed
            .iter()
            .chain(&self.dispatch.always)
            .find_map(|&g| self.in_group(&self.groups[usize::from(g)], path))
    }

    fn in_group<'t, 'p>(&'t self, group: &'t Group, path: &'p str) -> Option<Matched<'t, 'p>> {
        let key = group.rules.key(path);
        let index = *group.router.at(&key).ok()?.value;
        Some(Matched {
            route: &self.routes[index as usize],
            path,
            key,
            router: &group.router,
        })
    }

    pub fn preset(&self, index: u16) -> &Preset {
        &self.presets[usize::from(index)]
    }

    pub fn presets(&self) -> &[Preset] {
        &self.presets
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Route {
    pub fn rule(&self, method: &Method) -> Option<&Arc<Rule>> {
        method_index(method).and_then(|i| self.rules[i].as_ref())
    }

    /// Whether `other` decides every request as this route does: the same rule for every
    /// method, tenant binding, upstream and enforcement.
    fn judges_like(&self, other: &Route) -> bool {
        let same_rules = self
            .rules
            .iter()
            .zip(&other.rules)
            .all(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => a == b,
                (None, None) => true,
                _ => false,
            });
        same_rules
            && self.tenant == other.tenant
            && self.upstream == other.upstream
            && self.enforce == other.enforce
    }
}
