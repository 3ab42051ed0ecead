//! A route file's scope vocabulary: every scope name it uses, checked, interned and closed.

use toml::Spanned;

use super::context::{FileCx, suggest};
use super::file::{RouteFile, RouteSpec, RuleSpec, ScopesSpec};
use crate::scopes::{ScopeSet, Vocabulary};

impl FileCx<'_> {
    /// Interns every scope the file names, in a fixed order (aliases, `[scopes]` lists,
    /// implications, then rules and principals), and closes implication; `None` on any error.
    pub(super) fn vocabulary(&mut self, file: &RouteFile) -> Option<Vocabulary> {
        let before = self.errors.len();
        self.declared = declared(file);
        let mut v = Vocabulary::default();
        self.aliases(&mut v, &file.scopes);
        self.intern_listed(&mut v, &file.scopes);
        let edges = self.implications(&mut v, &file.scopes);
        self.intern_required(&mut v, file);
        if let Err(e) = v.close(&edges) {
            self.error(
                None,
                e.to_string(),
                Some("remove one edge of the cycle".into()),
            );
        }
        (self.errors.len() == before).then_some(v)
    }

    fn aliases(&mut self, v: &mut Vocabulary, scopes: &ScopesSpec) {
        for (alias, target) in &scopes.aliases {
            let line = self.line(target.span().start);
            self.check_declared(target.get_ref(), line);
            if let Err(e) = v.alias(alias, target.get_ref()) {
                let line = self.line(target.span().start);
                self.error(Some(line), e.to_string(), None);
            }
        }
    }

    /// The names of the `[scopes]` lists: `known`, the gated ones, `expiry_exempt`, `incompatible`.
    fn intern_listed(&mut self, v: &mut Vocabulary, scopes: &ScopesSpec) {
        for name in scopes
            .known
            .iter()
            .chain(&scopes.needs_approval)
            .chain(&scopes.not_for_private_apps)
        {
            let line = self.line(name.span().start);
            self.intern(v, name.get_ref(), line);
        }
        for (scope, function) in &scopes.needs_function {
            let line = self.line(function.span().start);
            self.intern(v, scope, line);
        }
        for exempt in &scopes.expiry_exempt {
            let line = self.line(exempt.span().start);
            self.intern(v, exempt.get_ref(), line);
        }
        for pair in &scopes.incompatible {
            let line = self.line(pair.span().start);
            for s in pair.get_ref() {
                self.intern(v, s, line);
            }
        }
    }

    /// `[scopes] implies` as edges between interned scopes.
    fn implications(&mut self, v: &mut Vocabulary, scopes: &ScopesSpec) -> Vec<(u16, u16)> {
        let mut edges = Vec::new();
        for (from, to) in &scopes.implies {
            let line = self.line(to.span().start);
            let Some(a) = self.intern(v, from, line) else {
                continue;
            };
            for t in to.get_ref() {
                if let Some(b) = self.intern(v, t, line) {
                    edges.push((a, b));
                }
            }
        }
        edges
    }

    /// The scopes that rules and principals require.
    fn intern_required(&mut self, v: &mut Vocabulary, file: &RouteFile) {
        let rules = file.routes.iter().flat_map(|r| rule_specs(r.get_ref()));
        for rule in rules {
            let line = self.line(rule.span().start);
            for s in rule
                .get_ref()
                .scopes
                .iter()
                .chain(&rule.get_ref().any_scopes)
            {
                self.intern(v, s, line);
            }
        }
        for p in file.principals.values() {
            let line = self.line(p.span().start);
            for s in &p.get_ref().scopes {
                self.intern(v, s, line);
            }
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
}

/// The names `[scopes] vocabulary` declares, alias spellings (declared by `[scopes] aliases`)
/// included; `None` when the file declares no vocabulary.
fn declared(file: &RouteFile) -> Option<Vec<String>> {
    file.scopes.vocabulary.as_ref().map(|names| {
        let mut all = names.get_ref().clone();
        all.extend(file.scopes.aliases.keys().cloned());
        all
    })
}

/// The set of the named scopes that are in the vocabulary.
pub(super) fn scope_set<'a>(v: &Vocabulary, names: impl IntoIterator<Item = &'a str>) -> ScopeSet {
    let mut s = ScopeSet::EMPTY;
    for b in names.into_iter().filter_map(|n| v.bit(n)) {
        s.insert(b);
    }
    s
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
