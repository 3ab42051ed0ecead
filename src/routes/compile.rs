//! Route files -> [`RouteTable`]: parse, validate, intern scopes, close implication, build the router.
//! Every error names the file, the line and what would be right; nothing is checked at request time.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, Method};
use toml::Spanned;

use super::file::{
    ExampleSpec, PresetSettings, PrincipalSpec, RouteFile, RouteSpec, RuleSpec, TenantSpec,
};
use super::{
    Example, Gates, Grant, METHODS, Preset, Requirement, Route, RouteTable, Rule, TenantBinding,
};
use crate::scopes::{ScopeSet, Vocabulary};
use crate::telemetry::RouteHandles;

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A route file's name (as shown in errors) and text.
#[derive(Debug, Clone)]
pub struct RouteSource {
    pub name: String,
    pub text: String,
}

/// One problem in one route file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message)?,
            None => write!(f, "{}: {}", self.file, self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

/// Reads route files: each path is a `.toml` file or a directory whose `*.toml` files are read
/// in name order.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<RouteSource>, CompileError> {
    let mut files = Vec::new();
    for path in paths {
        let io_error = |e: std::io::Error| CompileError {
            file: path.display().to_string(),
            line: None,
            message: format!("cannot read: {e}"),
            hint: None,
        };
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io_error)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(CompileError {
                    file: path.display().to_string(),
                    line: None,
                    message: "directory holds no *.toml route file".into(),
                    hint: None,
                });
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| CompileError {
                file: p.display().to_string(),
                line: None,
                message: format!("cannot read: {e}"),
                hint: None,
            })?;
            Ok(RouteSource {
                name: p.display().to_string(),
                text,
            })
        })
        .collect()
}

/// What the serve config adds to route files. `routes check` uses the default: any upstream
/// name, no operator settings.
#[derive(Debug, Default, Clone, Copy)]
pub struct CompileOptions<'a> {
    /// Upstream names a route may refer to.
    pub upstreams: Option<&'a [String]>,
    /// Operator settings per preset name.
    pub settings: Option<&'a BTreeMap<String, PresetSettings>>,
}

/// Compiles route files into one table.
pub fn compile(
    sources: &[RouteSource],
    options: &CompileOptions<'_>,
) -> Result<RouteTable, Vec<CompileError>> {
    let upstreams = options.upstreams;
    let no_settings = BTreeMap::new();
    let settings = options.settings.unwrap_or(&no_settings);
    let mut errors = Vec::new();
    let mut router = matchit::Router::new();
    let mut routes: Vec<Route> = Vec::new();
    let mut presets = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();

    for source in sources {
        let mut cx = FileCx {
            name: &source.name,
            text: &source.text,
            errors: &mut errors,
            declared: None,
        };
        let file: RouteFile = match toml::from_str(&source.text) {
            Ok(f) => f,
            Err(e) => {
                let line = e.span().map(|s| cx.line(s.start));
                cx.errors.push(CompileError {
                    file: source.name.clone(),
                    line,
                    message: e.message().trim().to_owned(),
                    hint: None,
                });
                continue;
            }
        };
        if let Some(other) = names.insert(file.preset.name.clone(), source.name.clone()) {
            cx.error(
                None,
                format!("preset name `{}` is also used by {other}", file.preset.name),
                None,
            );
        }
        let preset_index = presets.len() as u16;
        let Some(vocabulary) = cx.vocabulary(&file) else {
            continue;
        };
        for spec in &file.routes {
            let Some(route) = cx.route(spec, &file, &vocabulary, preset_index, upstreams) else {
                continue;
            };
            let line = cx.line(spec.span().start);
            let patterns = patterns(spec.get_ref());
            for pattern in &patterns {
                let r = route.clone_for(pattern);
                let index = routes.len() as u32;
                match router.insert(pattern.as_str(), index) {
                    Ok(()) => routes.push(r),
                    Err(e) => cx.error(
                        Some(line),
                        format!(
                            "route `{pattern}` cannot be added: {}",
                            conflict(&e, &routes)
                        ),
                        Some("each request path must match exactly one route".into()),
                    ),
                }
            }
        }
        let examples = file.examples.iter().filter_map(|e| cx.example(e)).collect();
        let mut expiry_exempt = ScopeSet::EMPTY;
        for name in &file.scopes.expiry_exempt {
            if let Some(bit) = vocabulary.bit(name.get_ref()) {
                expiry_exempt.insert(bit);
            }
        }
        let incompatible = file
            .scopes
            .incompatible
            .iter()
            .filter_map(|p| {
                let [a, b] = p.get_ref();
                Some((vocabulary.bit(a)?, vocabulary.bit(b)?))
            })
            .collect();
        let gates = cx.gates(&file, &vocabulary, settings.get(&file.preset.name));
        presets.push(Preset {
            name: file.preset.name.as_str().into(),
            file: source.name.as_str().into(),
            error_style: file.preset.error_style,
            vocabulary,
            expiry_exempt,
            incompatible,
            gates,
            examples,
        });
    }
    cross_preset_overlaps(&routes, &presets, &mut errors);
    for name in settings.keys() {
        if !names.contains_key(name) {
            errors.push(CompileError {
                file: "serve config".into(),
                line: None,
                message: format!("[presets.{name}] names no loaded route file"),
                hint: suggest(name, names.keys().map(String::as_str)),
            });
        }
    }
    if errors.is_empty() {
        Ok(RouteTable {
            router,
            routes: routes.into(),
            presets: presets.into(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
        })
    } else {
        Err(errors)
    }
}

/// Two files must never both claim a request path: matchit would settle it by specificity, so
/// which file judges a request would depend on the other file's patterns.
fn cross_preset_overlaps(routes: &[Route], presets: &[Preset], errors: &mut Vec<CompileError>) {
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if a.preset != b.preset && patterns_overlap(&a.template, &b.template) {
                let (file, line) = b.source.rsplit_once(':').unwrap_or((&b.source, ""));
                errors.push(CompileError {
                    file: file.to_owned(),
                    line: line.parse().ok(),
                    message: format!(
                        "route `{}` can match the same requests as `{}` of preset `{}` ({})",
                        b.template,
                        a.template,
                        presets.get(usize::from(a.preset)).map_or("?", |p| &*p.name),
                        a.source
                    ),
                    hint: Some("give each preset its own path prefix".into()),
                });
            }
        }
    }
}

/// One segment of a matchit pattern.
enum Segment<'a> {
    Static(&'a str),
    /// `prefix{name}suffix`
    Param(&'a str, &'a str),
    CatchAll,
}

fn segments(pattern: &str) -> Vec<Segment<'_>> {
    pattern
        .split('/')
        .skip(1)
        .map(|seg| match (seg.find('{'), seg.rfind('}')) {
            (Some(open), Some(_)) if seg[open..].starts_with("{*") => Segment::CatchAll,
            (Some(open), Some(close)) => Segment::Param(&seg[..open], &seg[close + 1..]),
            _ => Segment::Static(seg),
        })
        .collect()
}

/// True when some request path matches both patterns.
fn patterns_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (segments(a), segments(b));
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (None, None) => return true,
            // A catch-all needs at least one more segment, which the other can supply.
            (Some(Segment::CatchAll), Some(_)) | (Some(_), Some(Segment::CatchAll)) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) => {
                let fits = match (x, y) {
                    (Segment::Static(s), Segment::Static(t)) => s == t,
                    (Segment::Static(s), Segment::Param(p, x))
                    | (Segment::Param(p, x), Segment::Static(s)) => {
                        s.len() > p.len() + x.len() && s.starts_with(p) && s.ends_with(x)
                    }
                    (Segment::Param(p1, x1), Segment::Param(p2, x2)) => {
                        (p1.starts_with(p2) || p2.starts_with(p1))
                            && (x1.ends_with(x2) || x2.ends_with(x1))
                    }
                    (Segment::CatchAll, _) | (_, Segment::CatchAll) => true,
                };
                if !fits {
                    return false;
                }
            }
        }
    }
    unreachable!("the loop returns once both patterns end")
}

/// The matchit patterns one `[[route]]` inserts.
fn patterns(spec: &RouteSpec) -> Vec<String> {
    let path = spec.path.get_ref();
    if spec.below {
        let base = path.trim_end_matches('/');
        vec![path.clone(), format!("{base}/{{*rest}}")]
    } else {
        vec![path.clone()]
    }
}

fn conflict(e: &matchit::InsertError, routes: &[Route]) -> String {
    match e {
        matchit::InsertError::Conflict { with } => {
            let at = routes
                .iter()
                .find(|r| &*r.template == with)
                .map(|r| format!(" (defined at {})", r.source))
                .unwrap_or_default();
            format!("it overlaps `{with}`{at}")
        }
        other => other.to_string(),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

impl Route {
    fn clone_for(&self, pattern: &str) -> Route {
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

struct FileCx<'a> {
    name: &'a str,
    text: &'a str,
    errors: &'a mut Vec<CompileError>,
    /// The file's declared scope vocabulary (`[scopes] vocabulary`), when it has one.
    declared: Option<Vec<String>>,
}

impl FileCx<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn error(&mut self, line: Option<usize>, message: String, hint: Option<String>) {
        self.errors.push(CompileError {
            file: self.name.to_owned(),
            line,
            message,
            hint,
        });
    }

    fn vocabulary(&mut self, file: &RouteFile) -> Option<Vocabulary> {
        let before = self.errors.len();
        self.declared = file.scopes.vocabulary.as_ref().map(|names| {
            // Alias spellings are declared by `[scopes] aliases`.
            let mut all = names.get_ref().clone();
            all.extend(file.scopes.aliases.keys().cloned());
            all
        });
        let mut v = Vocabulary::default();
        for (alias, target) in &file.scopes.aliases {
            let line = self.line(target.span().start);
            self.check_declared(target.get_ref(), line);
            if let Err(e) = v.alias(alias, target.get_ref()) {
                let line = self.line(target.span().start);
                self.error(Some(line), e.to_string(), None);
            }
        }
        for known in &file.scopes.known {
            let line = self.line(known.span().start);
            self.intern(&mut v, known.get_ref(), line);
        }
        for name in file
            .scopes
            .needs_approval
            .iter()
            .chain(&file.scopes.not_for_private_apps)
        {
            let line = self.line(name.span().start);
            self.intern(&mut v, name.get_ref(), line);
        }
        for (scope, function) in &file.scopes.needs_function {
            let line = self.line(function.span().start);
            self.intern(&mut v, scope, line);
        }
        for exempt in &file.scopes.expiry_exempt {
            let line = self.line(exempt.span().start);
            self.intern(&mut v, exempt.get_ref(), line);
        }
        for pair in &file.scopes.incompatible {
            let line = self.line(pair.span().start);
            for s in pair.get_ref() {
                self.intern(&mut v, s, line);
            }
        }
        let mut edges = Vec::new();
        for (from, to) in &file.scopes.implies {
            let line = self.line(to.span().start);
            let Some(a) = self.intern(&mut v, from, line) else {
                continue;
            };
            for t in to.get_ref() {
                if let Some(b) = self.intern(&mut v, t, line) {
                    edges.push((a, b));
                }
            }
        }
        let rules = file.routes.iter().flat_map(|r| rule_specs(r.get_ref()));
        for rule in rules {
            let line = self.line(rule.span().start);
            for s in rule
                .get_ref()
                .scopes
                .iter()
                .chain(&rule.get_ref().any_scopes)
            {
                self.intern(&mut v, s, line);
            }
        }
        for p in file.principals.values() {
            let line = self.line(p.span().start);
            for s in &p.get_ref().scopes {
                self.intern(&mut v, s, line);
            }
        }
        if let Err(e) = v.close(&edges) {
            self.error(
                None,
                e.to_string(),
                Some("remove one edge of the cycle".into()),
            );
        }
        (self.errors.len() == before).then_some(v)
    }

    fn gates(
        &mut self,
        file: &RouteFile,
        v: &Vocabulary,
        settings: Option<&PresetSettings>,
    ) -> Gates {
        let set = |names: &[Spanned<String>]| {
            let mut s = ScopeSet::EMPTY;
            names
                .iter()
                .filter_map(|n| v.bit(n.get_ref()))
                .for_each(|b| s.insert(b));
            s
        };
        let empty = PresetSettings::default();
        let settings = settings.unwrap_or(&empty);
        let declared: Vec<&str> = file
            .scopes
            .needs_function
            .values()
            .map(|f| f.get_ref().as_str())
            .collect();
        for function in settings.enabled_functions.keys() {
            if !declared.contains(&function.as_str()) {
                self.error(
                    None,
                    format!("serve config enables business function `{function}`, which this file does not declare"),
                    suggest(function, declared.iter().copied()),
                );
            }
        }
        Gates {
            needs_approval: set(&file.scopes.needs_approval),
            approved_clients: settings
                .approved_clients
                .iter()
                .map(|c| c.as_str().into())
                .collect(),
            not_for_private_apps: set(&file.scopes.not_for_private_apps),
            needs_function: file
                .scopes
                .needs_function
                .iter()
                .filter_map(|(scope, function)| {
                    let stores = settings
                        .enabled_functions
                        .get(function.get_ref())
                        .map(|s| s.iter().map(|x| x.as_str().into()).collect())
                        .unwrap_or_default();
                    Some((v.bit(scope)?, stores))
                })
                .collect(),
        }
    }

    /// A file that declares its vocabulary may use no other scope name (catches misspellings).
    fn check_declared(&mut self, name: &str, line: usize) -> bool {
        let Some(declared) = &self.declared else {
            return true;
        };
        if declared.iter().any(|d| d == name) {
            return true;
        }
        let hint = suggest(name, declared.iter().map(String::as_str))
            .or_else(|| Some("add it to `[scopes] vocabulary`".into()));
        self.error(
            Some(line),
            format!("scope `{name}` is not in this file's vocabulary"),
            hint,
        );
        false
    }

    fn intern(&mut self, v: &mut Vocabulary, name: &str, line: usize) -> Option<u16> {
        if !self.check_declared(name, line) {
            return None;
        }
        if !is_scope_name(name) {
            self.error(
                Some(line),
                format!("`{name}` is not a valid scope name"),
                Some("scope names are 1-128 visible ASCII characters without spaces, quotes or backslashes".into()),
            );
            return None;
        }
        match v.intern(name) {
            Ok(bit) => Some(bit),
            Err(e) => {
                self.error(Some(line), e.to_string(), None);
                None
            }
        }
    }

    fn route(
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
        let tenant = match r.tenant.as_ref().or(file.preset.tenant.as_ref()) {
            None => None,
            Some(spec) => {
                let at = self.line(spec.span().start);
                match tenant_binding(spec.get_ref(), path) {
                    Ok(t) => Some(t),
                    Err(why) => {
                        self.error(Some(at), format!("tenant: {why}"), None);
                        None
                    }
                }
            }
        };
        if let (Some(name), Some(known)) = (&upstream, upstreams)
            && !known.iter().any(|k| k == name)
        {
            self.error(
                Some(line),
                format!("unknown upstream `{name}`"),
                suggest(name, known.iter().map(String::as_str)),
            );
        }
        let specs: [Option<&Spanned<RuleSpec>>; METHODS.len()] = [
            pick(&r.get, &r.read, &r.any),
            // HEAD is judged as GET unless the route gives HEAD its own rule.
            pick(&r.head, &r.read, &r.any).or(r.get.as_ref()),
            pick(&r.post, &r.write, &r.any),
            pick(&r.put, &r.write, &r.any),
            pick(&r.patch, &r.write, &r.any),
            pick(&r.delete, &r.write, &r.any),
            r.options.as_ref(),
        ];
        if specs.iter().all(Option::is_none) {
            self.error(
                Some(line),
                format!("route `{path}` allows no method"),
                Some("add `read`, `write`, `any` or a method such as `GET`".into()),
            );
        }
        // Compile each distinct rule once (and report its errors once), shared between methods.
        let mut compiled: Vec<(*const Spanned<RuleSpec>, Option<Arc<Rule>>)> = Vec::new();
        let mut rules: [Option<Arc<Rule>>; METHODS.len()] = Default::default();
        for (slot, spec) in rules.iter_mut().zip(specs) {
            let Some(spec) = spec else { continue };
            let key = spec as *const _;
            let rule = match compiled.iter().find(|(k, _)| *k == key) {
                Some((_, rule)) => rule.clone(),
                None => {
                    let rule = self.rule(spec, &file.principals, vocabulary).map(Arc::new);
                    compiled.push((key, rule.clone()));
                    rule
                }
            };
            *slot = rule;
        }
        let allow: Vec<&str> = METHODS
            .iter()
            .zip(&rules)
            .filter(|(_, r)| r.is_some())
            .map(|(m, _)| m.as_str())
            .collect();
        (self.errors.len() == before).then(|| Route {
            template: path.as_str().into(),
            source: format!("{}:{}", self.name, line).into(),
            preset,
            upstream: upstream.map(Into::into),
            rules,
            allow: header_value(&allow.join(", ")),
            template_header: header_value(path),
            tenant,
            enforce: r.enforce,
            metrics: RouteHandles::default(),
        })
    }

    fn rule(
        &mut self,
        spec: &Spanned<RuleSpec>,
        principals: &BTreeMap<String, Spanned<PrincipalSpec>>,
        v: &Vocabulary,
    ) -> Option<Rule> {
        let line = self.line(spec.span().start);
        let r = spec.get_ref();
        let requires_something = !(r.scopes.is_empty()
            && r.any_scopes.is_empty()
            && r.token_types.is_empty()
            && r.roles.is_empty()
            && r.principals.is_empty());
        if r.public {
            if requires_something {
                self.error(
                    Some(line),
                    "a public rule cannot also require scopes, roles, token types or principals"
                        .into(),
                    None,
                );
                return None;
            }
            return Some(Rule::Public);
        }
        if !requires_something {
            self.error(
                Some(line),
                "rule requires nothing".into(),
                Some("set `public = true` if no credentials are needed".into()),
            );
            return None;
        }
        let set = |names: &[String]| {
            let mut s = ScopeSet::EMPTY;
            for n in names {
                if let Some(b) = v.bit(n) {
                    s.insert(b);
                }
            }
            s
        };
        let boxed =
            |xs: &[String]| -> Box<[Box<str>]> { xs.iter().map(|x| x.as_str().into()).collect() };
        let base = Grant {
            scopes: set(&r.scopes),
            any_scopes: (!r.any_scopes.is_empty()).then(|| set(&r.any_scopes)),
            token_types: boxed(&r.token_types),
            roles: boxed(&r.roles),
            companion: None,
        };
        let mut needed: Vec<String> = Vec::new();
        let mut push = |s: String| {
            if !needed.contains(&s) {
                needed.push(s);
            }
        };
        r.scopes
            .iter()
            .chain(&r.any_scopes)
            .for_each(|s| push(v.name(v.bit(s).unwrap_or(0)).to_owned()));
        let mut grants = Vec::new();
        if r.principals.is_empty() {
            r.token_types
                .iter()
                .for_each(|t| push(format!("token_type:{t}")));
            r.roles.iter().for_each(|t| push(format!("role:{t}")));
            grants.push(base);
        } else {
            for name in &r.principals {
                let Some(p) = principals.get(name) else {
                    self.error(
                        Some(line),
                        format!("unknown principal `{name}`"),
                        suggest(name, principals.keys().map(String::as_str))
                            .or_else(|| Some("declare it under [principals]".into())),
                    );
                    continue;
                };
                push(name.clone());
                let p = p.get_ref();
                let mut scopes = base.scopes;
                scopes.union_with(&set(&p.scopes));
                let token_types = match (&p.token_type, base.token_types.is_empty()) {
                    (Some(t), true) => vec![t.as_str().into()].into(),
                    (Some(t), false) if base.token_types.iter().any(|b| **b == **t) => {
                        vec![t.as_str().into()].into()
                    }
                    (Some(t), false) => {
                        self.error(
                            Some(line),
                            format!("principal `{name}` has token type `{t}`, which `token_types` excludes"),
                            None,
                        );
                        continue;
                    }
                    (None, _) => base.token_types.clone(),
                };
                let roles: Box<[Box<str>]> = match (p.roles.is_empty(), base.roles.is_empty()) {
                    (true, _) => base.roles.clone(),
                    (false, true) => boxed(&p.roles),
                    (false, false) => {
                        let both: Box<[Box<str>]> = p
                            .roles
                            .iter()
                            .filter(|x| base.roles.iter().any(|b| **b == ***x))
                            .map(|x| x.as_str().into())
                            .collect();
                        if both.is_empty() {
                            self.error(
                                Some(line),
                                format!("principal `{name}` has no role that `roles` allows"),
                                None,
                            );
                            continue;
                        }
                        both
                    }
                };
                grants.push(Grant {
                    scopes,
                    any_scopes: base.any_scopes,
                    token_types,
                    roles,
                    companion: p.companion,
                });
            }
            if grants.is_empty() {
                return None;
            }
        }
        Some(Rule::Protected(Requirement {
            uses_companions: grants.iter().any(|g| g.companion.is_some()),
            grants: grants.into(),
            needed: needed.join(" ").into(),
        }))
    }

    fn example(&mut self, spec: &Spanned<ExampleSpec>) -> Option<Example> {
        let line = self.line(spec.span().start);
        let e = spec.get_ref();
        let method = match Method::from_bytes(e.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                self.error(
                    Some(line),
                    format!("example method `{}` is not a method", e.method),
                    None,
                );
                return None;
            }
        };
        if http::StatusCode::from_u16(e.expect).is_err() {
            self.error(
                Some(line),
                format!("example expects `{}`, not a status", e.expect),
                None,
            );
            return None;
        }
        let claims = match &e.claims {
            None => None,
            Some(t) => match serde_json::to_value(t) {
                Ok(v) => Some(v),
                Err(err) => {
                    self.error(Some(line), format!("example claims: {err}"), None);
                    return None;
                }
            },
        };
        Some(Example {
            title: e.title.clone(),
            method,
            path: e.path.clone(),
            claims,
            expect: e.expect,
        })
    }
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

/// Explicit methods win over classes, classes over `any`.
fn pick<'a>(
    explicit: &'a Option<Spanned<RuleSpec>>,
    class: &'a Option<Spanned<RuleSpec>>,
    any: &'a Option<Spanned<RuleSpec>>,
) -> Option<&'a Spanned<RuleSpec>> {
    explicit.as_ref().or(class.as_ref()).or(any.as_ref())
}

fn rule_specs(r: &RouteSpec) -> impl Iterator<Item = &Spanned<RuleSpec>> {
    [
        &r.read, &r.write, &r.any, &r.get, &r.head, &r.post, &r.put, &r.patch, &r.delete,
        &r.options,
    ]
    .into_iter()
    .flatten()
}

fn is_scope_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

fn check_pattern(path: &str, below: bool) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err("must not end with '/'".into());
    }
    if path.contains("//") {
        return Err("must not contain '//'".into());
    }
    if below && path.contains("{*") {
        return Err("`below = true` cannot follow a catch-all parameter".into());
    }
    for segment in path.split('/') {
        check_braces(segment)?;
    }
    // A pattern must itself be a canonical path, or it could never match a normalised request.
    let probe = path.replace(['{', '}', '*'], "x");
    match crate::path::normalise(&probe) {
        Ok(p) if p == probe => Ok(()),
        Ok(p) => Err(format!("is not in canonical form; write `{p}`")),
        Err(e) => Err(e.to_string()),
    }
}

/// A segment holds at most one parameter, `{name}` or `{*name}`, and no other brace: the matcher
/// would read `{{` / `}}` as one literal brace, so the route would match a path other than the
/// one written.
fn check_braces(segment: &str) -> Result<(), String> {
    let opens = segment.matches('{').count();
    let closes = segment.matches('}').count();
    if opens == 0 && closes == 0 {
        return Ok(());
    }
    let literal = || {
        format!(
            "segment `{segment}`: a path may hold a brace only as a parameter `{{name}}` or \
             `{{*name}}`, one per segment; percent-encode a literal brace as %7B / %7D"
        )
    };
    let (Some(open), Some(close)) = (segment.find('{'), segment.find('}')) else {
        return Err(literal());
    };
    if opens != 1 || closes != 1 || close < open {
        return Err(literal());
    }
    let name = segment[open + 1..close]
        .strip_prefix('*')
        .unwrap_or(&segment[open + 1..close]);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "segment `{segment}`: parameter name `{name}` must be letters, digits or `_`"
        ));
    }
    Ok(())
}

/// "did you mean `x`?" for a near miss.
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// Reads and compiles route files from disk.
pub fn compile_paths(
    paths: &[PathBuf],
    options: &CompileOptions<'_>,
) -> Result<RouteTable, Vec<CompileError>> {
    let sources = load_paths(paths).map_err(|e| vec![e])?;
    compile(&sources, options)
}

#[cfg(test)]
mod tests {
    use super::{check_pattern, patterns_overlap};
    use crate::routes::{CompileOptions, RouteSource, compile};

    #[test]
    fn a_brace_outside_a_parameter_is_refused() {
        for ok in [
            "/v2/orders/{id}",
            "/v2/{id}.json",
            "/files/{*rest}",
            "/a/v{version}",
        ] {
            assert_eq!(check_pattern(ok, false), Ok(()), "{ok}");
        }
        for bad in [
            "/v0/orders/}}}}",
            "/v0/orders/{{id}}",
            "/v0/{a}{b}",
            "/v0/}x{",
            "/v0/{}",
            "/v0/{a-b}",
            "/v0/x}",
        ] {
            let why = check_pattern(bad, false).expect_err(bad);
            assert!(why.contains("segment `"), "{bad}: {why}");
        }
    }

    #[test]
    fn literal_braces_fail_the_compile_at_their_line() {
        // Found by the route_compile fuzz target: matchit reads `}}` as one `}`, so this route
        // compiled and then matched a path other than the one written.
        let source = RouteSource {
            name: "braces.toml".into(),
            text: "[preset]\nname = \"broken\"\n\n[[route]]\npath = \"/v0/orders/}}}}\"\n\
                   write = { scopes = [\"write_orders\"] }\n"
                .into(),
        };
        let errors = compile(&[source], &CompileOptions::default()).expect_err("must not compile");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, Some(5), "{}", errors[0]);
        assert!(errors[0].to_string().contains("%7D"), "{}", errors[0]);
    }

    #[test]
    fn overlapping_patterns_are_found() {
        assert!(patterns_overlap(
            "/api/{version}/graphql.json",
            "/api/v1/graphql.json"
        ));
        assert!(patterns_overlap(
            "/api/v1/{*rest}",
            "/api/{version}/graphql.json"
        ));
        assert!(patterns_overlap("/a/{id}.json", "/a/{x}"));
        assert!(patterns_overlap("/a", "/a"));
        assert!(!patterns_overlap(
            "/api/{version}/graphql.json",
            "/api/v1/orders"
        ));
        assert!(!patterns_overlap(
            "/api/{version}/graphql.json",
            "/api/v1/orders/{*rest}"
        ));
        assert!(!patterns_overlap("/a/{id}.json", "/a/x.xml"));
        assert!(!patterns_overlap("/a/{*rest}", "/a"));
        assert!(!patterns_overlap("/v2/orders", "/v2/orders/{id}"));
    }
}
