//! The decision: does this identity satisfy what the route requires? Default deny.

use crate::credentials::Identity;
use crate::routes::{Grant, Requirement};
use crate::scopes::ScopeSet;

/// True when any one grant of `requirement` is satisfied by `identity`, whose scopes in the
/// route's vocabulary (implication applied) are `held`.
pub fn permits(requirement: &Requirement, identity: &Identity, held: &ScopeSet) -> bool {
    requirement
        .grants
        .iter()
        .any(|grant| grant_holds(grant, identity, held))
}

fn grant_holds(grant: &Grant, identity: &Identity, held: &ScopeSet) -> bool {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{RouteSource, Rule, compile};
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
            None,
        )
        .unwrap()
    }

    fn decide(rule: &str, id: &Identity) -> bool {
        let t = table(rule);
        let route = t.find("/o").unwrap().route;
        let Rule::Protected(req) = &**route.rule(&Method::GET).unwrap() else {
            panic!("public")
        };
        permits(req, id, &id.scopes_in(&t, route.preset))
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
