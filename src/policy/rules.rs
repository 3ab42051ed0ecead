//! The rule check: does this identity satisfy what the route requires? Default deny.

use std::sync::Arc;

use crate::credentials::{Identity, TokenError};
use crate::routes::{Companion, Gate, Grant, Preset, Requirement};
use crate::scopes::ScopeSet;

/// Companion tokens sent with a request, by [`Companion::index`]: absent, valid or refused.
pub type Companions = [Option<Result<Arc<Identity>, TokenError>>; 2];

/// Token rules of the route's file: a JWT needs `exp` unless it holds an expiry-exempt scope
/// (opaque tokens live as long as their source says), and no incompatible pair of scopes.
pub fn check_token(
    preset: &Preset,
    identity: &Identity,
    held: &ScopeSet,
) -> Result<(), TokenError> {
    if identity.expires_at.is_none() && !identity.opaque && !held.intersects(&preset.expiry_exempt)
    {
        return Err(TokenError::MissingExpiry);
    }
    if preset
        .incompatible
        .iter()
        .any(|(a, b)| held.contains(*a) && held.contains(*b))
    {
        return Err(TokenError::IncompatibleScopes);
    }
    Ok(())
}

/// The scopes that count for this identity under the file's gates, and the first gate that
/// removed one.
pub fn apply_gates(
    preset: &Preset,
    identity: &Identity,
    held: ScopeSet,
) -> (ScopeSet, Option<Gate>) {
    let gates = &preset.gates;
    if gates.is_empty() {
        return (held, None);
    }
    let mut counted = held;
    let mut gate = None;
    let mut remove = |set: &ScopeSet, why: Gate| {
        if held.intersects(set) {
            counted.remove_all(set);
            gate.get_or_insert(why);
        }
    };
    let approved = identity
        .client
        .as_deref()
        .is_some_and(|c| gates.approved_clients.contains(c));
    if !approved {
        remove(&gates.needs_approval, Gate::NotApproved);
    }
    if identity.private_app {
        remove(&gates.not_for_private_apps, Gate::PrivateApp);
    }
    for (bit, stores) in gates.needs_function.iter() {
        let enabled = identity
            .tenant
            .as_deref()
            .is_some_and(|t| stores.contains(t));
        if !enabled {
            let mut one = ScopeSet::EMPTY;
            one.insert(*bit);
            remove(&one, Gate::NoQualification);
        }
    }
    (counted, gate)
}

/// True when any one grant of `requirement` is satisfied by `identity`, whose scopes in the
/// route's vocabulary (implication applied) are `held`.
pub fn permits(
    requirement: &Requirement,
    identity: &Identity,
    held: &ScopeSet,
    companions: &Companions,
) -> bool {
    requirement
        .grants
        .iter()
        .any(|grant| grant_holds(grant, identity, held, companions))
}

/// Why a companion the requirement could use was refused, if one was: a request that sent a
/// bad companion token gets 401, not 403.
pub fn companion_problem(
    requirement: &Requirement,
    identity: &Identity,
    companions: &Companions,
) -> Option<TokenError> {
    Companion::ALL
        .into_iter()
        .filter(|k| requirement.grants.iter().any(|g| g.companion == Some(*k)))
        .find_map(|k| match &companions[k.index()] {
            Some(Err(e)) => Some(*e),
            Some(Ok(c)) if !same_store(c, identity) => Some(TokenError::CompanionStoreMismatch),
            _ => None,
        })
}

fn grant_holds(
    grant: &Grant,
    identity: &Identity,
    held: &ScopeSet,
    companions: &Companions,
) -> bool {
    held.contains_all(&grant.scopes)
        && grant
            .any_scopes
            .as_ref()
            .is_none_or(|any| held.intersects(any))
        && (grant.token_types.is_empty()
            || identity
                .token_kind
                .as_deref()
                .is_some_and(|kind| grant.token_types.iter().any(|t| &**t == kind)))
        && (grant.roles.is_empty() || identity.roles.iter().any(|r| grant.roles.contains(r)))
        && grant.companion.is_none_or(|kind| {
            // The companion must be valid and belong to the bearer token's store.
            matches!(&companions[kind.index()], Some(Ok(c)) if same_store(c, identity))
        })
}

/// The companion and the bearer token name the same store. Both must name one: two tokens
/// without `store_id` are not bound to anything, so they do not match (fail closed).
fn same_store(companion: &Identity, bearer: &Identity) -> bool {
    matches!((&companion.tenant, &bearer.tenant), (Some(c), Some(b)) if c == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{CompileOptions, RouteSource, Rule, compile};
    use http::Method;

    fn table(rule: &str) -> crate::routes::RouteTable {
        let text = format!(
            "[preset]\nname = \"t\"\n[scopes]\nimplies = {{ write_orders = [\"read_orders\"] }}\n\
             [principals.admin]\ntoken_type = \"client_credentials\"\nroles = [\"seller-admin\"]\n\
             [[route]]\npath = \"/o\"\nread = {rule}\n"
        );
        compile(
            &[RouteSource {
                name: "t.toml".into(),
                text,
            }],
            &CompileOptions::default(),
        )
        .unwrap()
    }

    fn decide(rule: &str, id: &Identity) -> bool {
        let t = table(rule);
        let route = t.find("/o").unwrap().route;
        let Rule::Protected(req) = &**route.rule(&Method::GET).unwrap() else {
            panic!("public")
        };
        permits(req, id, &id.scopes_in(&t, route.preset), &[None, None])
    }

    fn id(kind: Option<&str>, roles: &[&str], scopes: &[&str]) -> Identity {
        Identity::new(
            None,
            None,
            kind.map(Into::into),
            roles.iter().map(|r| (*r).into()).collect(),
            scopes.iter().map(|s| (*s).into()).collect(),
            None,
            None,
        )
    }

    #[test]
    fn all_of_needs_every_scope_after_implication() {
        let rule = r#"{ scopes = ["read_orders"] }"#;
        assert!(decide(rule, &id(None, &[], &["write_orders"])));
        assert!(decide(rule, &id(None, &[], &["read_orders"])));
        assert!(!decide(rule, &id(None, &[], &["read_products"])));
        assert!(!decide(rule, &id(None, &[], &[])));
    }

    #[test]
    fn any_of_needs_one_scope() {
        let rule = r#"{ any_scopes = ["a", "b"] }"#;
        assert!(decide(rule, &id(None, &[], &["b"])));
        assert!(!decide(rule, &id(None, &[], &["c"])));
    }

    #[test]
    fn principals_need_token_type_and_role() {
        let rule = r#"{ principals = ["admin"] }"#;
        assert!(decide(
            rule,
            &id(Some("client_credentials"), &["seller-admin"], &[])
        ));
        assert!(!decide(
            rule,
            &id(Some("client_credentials"), &["support"], &[])
        ));
        assert!(!decide(rule, &id(Some("implicit"), &["seller-admin"], &[])));
        assert!(!decide(rule, &id(None, &[], &[])));
    }
}
