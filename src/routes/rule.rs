//! One method's rule compiled: public, or the grants (one per principal) that satisfy it.

use std::collections::BTreeMap;

use toml::Spanned;

use super::context::{FileCx, suggest};
use super::file::{PrincipalSpec, RuleSpec};
use super::vocabulary::scope_set;
use super::{Grant, Requirement, Rule};
use crate::scopes::{ScopeSet, Vocabulary};

/// Token kinds or roles, as a grant holds them.
type Names = Box<[Box<str>]>;

impl FileCx<'_> {
    /// The rule `spec` gives a method, or `None` after reporting why it cannot hold.
    pub(super) fn rule(
        &mut self,
        spec: &Spanned<RuleSpec>,
        principals: &BTreeMap<String, Spanned<PrincipalSpec>>,
        v: &Vocabulary,
    ) -> Option<Rule> {
        let line = self.line(spec.span().start);
        let r = spec.get_ref();
        if r.public || !requires_something(r) {
            return self.unconditional(r, line);
        }
        let base = Grant {
            scopes: scopes_of(v, &r.scopes),
            any_scopes: (!r.any_scopes.is_empty()).then(|| scopes_of(v, &r.any_scopes)),
            token_types: boxed(&r.token_types),
            roles: boxed(&r.roles),
            companion: None,
        };
        let mut needed: Vec<String> = Vec::new();
        for s in r.scopes.iter().chain(&r.any_scopes) {
            push_new(&mut needed, v.name(v.bit(s).unwrap_or(0)).to_owned());
        }
        let grants = if r.principals.is_empty() {
            for t in &r.token_types {
                push_new(&mut needed, format!("token_type:{t}"));
            }
            for t in &r.roles {
                push_new(&mut needed, format!("role:{t}"));
            }
            vec![base]
        } else {
            let grants = self.principal_grants(r, &base, principals, v, line, &mut needed);
            if grants.is_empty() {
                return None;
            }
            grants
        };
        Some(Rule::Protected(Requirement {
            uses_companions: grants.iter().any(|g| g.companion.is_some()),
            grants: grants.into(),
            needed: needed.join(" ").into(),
        }))
    }

    /// A rule that is public or requires nothing: `public = true` alone is [`Rule::Public`];
    /// anything else is an error.
    fn unconditional(&mut self, r: &RuleSpec, line: usize) -> Option<Rule> {
        match (r.public, requires_something(r)) {
            (true, false) => Some(Rule::Public),
            (true, true) => {
                self.error(
                    Some(line),
                    "a public rule cannot also require scopes, roles, token types or principals"
                        .into(),
                    None,
                );
                None
            }
            (false, _) => {
                self.error(
                    Some(line),
                    "rule requires nothing".into(),
                    Some("set `public = true` if no credentials are needed".into()),
                );
                None
            }
        }
    }

    /// One grant per principal the rule names: the rule's conditions and the principal's, both.
    /// Each principal's name is added to `needed`.
    fn principal_grants(
        &mut self,
        r: &RuleSpec,
        base: &Grant,
        principals: &BTreeMap<String, Spanned<PrincipalSpec>>,
        v: &Vocabulary,
        line: usize,
        needed: &mut Vec<String>,
    ) -> Vec<Grant> {
        let mut grants = Vec::new();
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
            push_new(needed, name.clone());
            let p = p.get_ref();
            let narrowed = token_types(name, p, base)
                .and_then(|token_types| Ok((token_types, roles(name, p, base)?)));
            let (token_types, roles) = match narrowed {
                Ok(both) => both,
                Err(message) => {
                    self.error(Some(line), message, None);
                    continue;
                }
            };
            let mut scopes = base.scopes;
            scopes.union_with(&scopes_of(v, &p.scopes));
            grants.push(Grant {
                scopes,
                any_scopes: base.any_scopes,
                token_types,
                roles,
                companion: p.companion,
            });
        }
        grants
    }
}

/// The principal's token type, which the rule's `token_types` (if any) must allow.
fn token_types(name: &str, p: &PrincipalSpec, base: &Grant) -> Result<Names, String> {
    match (&p.token_type, base.token_types.is_empty()) {
        (Some(t), true) => Ok(vec![t.as_str().into()].into()),
        (Some(t), false) if base.token_types.iter().any(|b| **b == **t) => {
            Ok(vec![t.as_str().into()].into())
        }
        (Some(t), false) => Err(format!(
            "principal `{name}` has token type `{t}`, which `token_types` excludes"
        )),
        (None, _) => Ok(base.token_types.clone()),
    }
}

/// The principal's roles, narrowed to those the rule's `roles` (if any) allow.
fn roles(name: &str, p: &PrincipalSpec, base: &Grant) -> Result<Names, String> {
    match (p.roles.is_empty(), base.roles.is_empty()) {
        (true, _) => Ok(base.roles.clone()),
        (false, true) => Ok(boxed(&p.roles)),
        (false, false) => {
            let both: Names = p
                .roles
                .iter()
                .filter(|x| base.roles.iter().any(|b| **b == ***x))
                .map(|x| x.as_str().into())
                .collect();
            if both.is_empty() {
                return Err(format!(
                    "principal `{name}` has no role that `roles` allows"
                ));
            }
            Ok(both)
        }
    }
}

fn requires_something(r: &RuleSpec) -> bool {
    !(r.scopes.is_empty()
        && r.any_scopes.is_empty()
        && r.token_types.is_empty()
        && r.roles.is_empty()
        && r.principals.is_empty())
}

fn scopes_of(v: &Vocabulary, names: &[String]) -> ScopeSet {
    scope_set(v, names.iter().map(String::as_str))
}

fn boxed(xs: &[String]) -> Names {
    xs.iter().map(|x| x.as_str().into()).collect()
}

/// Adds `s` unless it is there already.
fn push_new(needed: &mut Vec<String>, s: String) {
    if !needed.contains(&s) {
        needed.push(s);
    }
}
