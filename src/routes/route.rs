//! One `[[route]]` compiled: its pattern, upstream, tenant binding and a rule per method.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderValue;
use toml::Spanned;

use super::context::{FileCx, suggest};
use super::file::{PrincipalSpec, RouteFile, RouteSpec, RuleSpec, TenantSpec};
use super::patterns::check_pattern;
use super::{METHODS, Route, Rule, TenantBinding};
use crate::scopes::Vocabulary;
use crate::telemetry::RouteHandles;

/// A rule per method, in [`METHODS`] order.
type MethodRules = [Option<Arc<Rule>>; METHODS.len()];

impl FileCx<'_> {
    /// The route `spec` declares (for its `path` pattern), or `None` after reporting why not.
    pub(super) fn route(
        &mut self,
        spec: &Spanned<RouteSpec>,
        file: &RouteFile,
        vocabulary: &Vocabulary,
        preset: u16,
        upstreams: Option<&[String]>,
    ) -> Option<Route> {
        let before = self.errors.len();
        let line = self.line(spec.span().start);
        let r = spec.get_ref();
        let path = r.path.get_ref();
        let path_line = self.line(r.path.span().start);
        if let Err(why) = check_pattern(path, r.below) {
            self.error(Some(path_line), format!("path `{path}`: {why}"), None);
        }
        let upstream = r.upstream.clone().or_else(|| file.preset.upstream.clone());
        let tenant = self.tenant(r.tenant.as_ref().or(file.preset.tenant.as_ref()), path);
        self.check_upstream(upstream.as_deref(), upstreams, line);
        let rules = self.method_rules(r, line, &file.principals, vocabulary);
        (self.errors.len() == before).then(|| Route {
            template: path.as_str().into(),
            source: format!("{}:{}", self.name, line).into(),
            preset,
            upstream: upstream.map(Into::into),
            allow: allow(&rules),
            rules,
            template_header: header_value(path),
            tenant,
            enforce: r.enforce,
            metrics: RouteHandles::default(),
        })
    }

    /// The tenant binding in effect for the route (its own, else the file's), checked against
    /// `path`.
    fn tenant(&mut self, spec: Option<&Spanned<TenantSpec>>, path: &str) -> Option<TenantBinding> {
        let spec = spec?;
        let at = self.line(spec.span().start);
        match tenant_binding(spec.get_ref(), path) {
            Ok(t) => Some(t),
            Err(why) => {
                self.error(Some(at), format!("tenant: {why}"), None);
                None
            }
        }
    }

    /// A route may name only an upstream the serve config defines (any, without a config).
    fn check_upstream(&mut self, name: Option<&str>, known: Option<&[String]>, line: usize) {
        if let (Some(name), Some(known)) = (name, known)
            && !known.iter().any(|k| k == name)
        {
            self.error(
                Some(line),
                format!("unknown upstream `{name}`"),
                suggest(name, known.iter().map(String::as_str)),
            );
        }
    }

    /// Each method's rule. A rule that serves several methods is compiled (and its errors
    /// reported) once, and shared between them.
    fn method_rules(
        &mut self,
        r: &RouteSpec,
        line: usize,
        principals: &BTreeMap<String, Spanned<PrincipalSpec>>,
        vocabulary: &Vocabulary,
    ) -> MethodRules {
        let specs = method_specs(r);
        if specs.iter().all(Option::is_none) {
            self.error(
                Some(line),
                format!("route `{}` allows no method", r.path.get_ref()),
                Some("add `read`, `write`, `any` or a method such as `GET`".into()),
            );
        }
        let mut compiled: Vec<(*const Spanned<RuleSpec>, Option<Arc<Rule>>)> = Vec::new();
        let mut rules: MethodRules = Default::default();
        for (slot, spec) in rules.iter_mut().zip(specs) {
            let Some(spec) = spec else { continue };
            let key = spec as *const _;
            let rule = match compiled.iter().find(|(k, _)| *k == key) {
                Some((_, rule)) => rule.clone(),
                None => {
                    let rule = self.rule(spec, principals, vocabulary).map(Arc::new);
                    compiled.push((key, rule.clone()));
                    rule
                }
            };
            *slot = rule;
        }
        rules
    }
}

/// The rule spec of each method, in [`METHODS`] order.
fn method_specs(r: &RouteSpec) -> [Option<&Spanned<RuleSpec>>; METHODS.len()] {
    [
        pick(&r.get, &r.read, &r.any),
        // HEAD is judged as GET unless the route gives HEAD its own rule.
        pick(&r.head, &r.read, &r.any).or(r.get.as_ref()),
        pick(&r.post, &r.write, &r.any),
        pick(&r.put, &r.write, &r.any),
        pick(&r.patch, &r.write, &r.any),
        pick(&r.delete, &r.write, &r.any),
        r.options.as_ref(),
    ]
}

/// Explicit methods win over classes, classes over `any`.
fn pick<'a>(
    explicit: &'a Option<Spanned<RuleSpec>>,
    class: &'a Option<Spanned<RuleSpec>>,
    any: &'a Option<Spanned<RuleSpec>>,
) -> Option<&'a Spanned<RuleSpec>> {
    explicit.as_ref().or(class.as_ref()).or(any.as_ref())
}

/// The `Allow` header value: the methods that have a rule.
fn allow(rules: &MethodRules) -> HeaderValue {
    let allowed: Vec<&str> = METHODS
        .iter()
        .zip(rules)
        .filter(|(_, r)| r.is_some())
        .map(|(m, _)| m.as_str())
        .collect();
    header_value(&allowed.join(", "))
}

fn tenant_binding(spec: &TenantSpec, path: &str) -> Result<TenantBinding, String> {
    match (&spec.capture, &spec.host) {
        (Some(name), None) => {
            if path.contains(&format!("{{{name}}}")) {
                Ok(TenantBinding::Capture(name.as_str().into()))
            } else {
                Err(format!("path `{path}` has no capture `{{{name}}}`"))
            }
        }
        (None, Some(host)) => match host.split_once("{tenant}") {
            Some((prefix, suffix)) if !suffix.contains("{tenant}") => Ok(TenantBinding::Host {
                prefix: prefix.into(),
                suffix: suffix.into(),
            }),
            _ => Err(format!(
                "host `{host}` must contain `{{tenant}}` exactly once"
            )),
        },
        _ => Err("give exactly one of `capture` or `host`".into()),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

impl Route {
    /// A copy of this route for another of its patterns (`below = true` adds `{*rest}`).
    pub(super) fn clone_for(&self, pattern: &str) -> Route {
        Route {
            template: pattern.into(),
            source: self.source.clone(),
            preset: self.preset,
            upstream: self.upstream.clone(),
            rules: self.rules.clone(),
            allow: self.allow.clone(),
            template_header: header_value(pattern),
            tenant: self.tenant.clone(),
            enforce: self.enforce,
            metrics: RouteHandles::default(),
        }
    }
}
