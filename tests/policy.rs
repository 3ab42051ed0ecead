//! The decision alone, in-process: the app built from `TEST_ROUTES` and the test serve config,
//! no listener, no TLS, no upstream. Each test asks for a verdict on one request.

mod common;

use common::{Policy, TEST_ROUTES, Verdict};
use serde_json::json;

#[tokio::test]
async fn a_token_with_the_scope_is_forwarded() {
    let policy = Policy::new(TEST_ROUTES).build();
    let token = policy.token(json!({"scope": "read_orders"}));
    let verdict = policy
        .request("GET", "/shop/orders/7")
        .token(&token)
        .verdict()
        .await;
    assert_eq!(
        (verdict.status, verdict.outcome, verdict.reason),
        (200, "forward", "permitted"),
        "{verdict:?}"
    );
    // The implied scope (write_orders implies read_orders) is enough too.
    let writer = policy.token(json!({"scope": "write_orders"}));
    let verdict = policy
        .verdict(common::request("GET", "/shop/orders").token(&writer))
        .await;
    assert_eq!(verdict.status, 200, "{verdict:?}");
}

#[tokio::test]
async fn no_credentials_is_401() {
    let policy = Policy::new(TEST_ROUTES).build();
    let verdict = policy.request("GET", "/shop/orders").verdict().await;
    assert_eq!(
        (verdict.status, verdict.outcome, verdict.reason),
        (401, "unauthenticated", "no_credentials"),
        "{verdict:?}"
    );
    // A public route needs none.
    let verdict = policy.request("GET", "/shop/health").verdict().await;
    assert_eq!(verdict.status, 200, "{verdict:?}");
}

#[tokio::test]
async fn a_token_without_the_scope_is_403_insufficient_scope_naming_it() {
    let policy = Policy::new(TEST_ROUTES).build();
    let token = policy.token(json!({"scope": "read_products"}));
    let verdict = policy
        .request("GET", "/shop/orders")
        .token(&token)
        .verdict()
        .await;
    assert_eq!(
        verdict,
        Verdict {
            status: 403,
            outcome: "forbidden",
            reason: "insufficient_scope",
            needed: Some("read_orders".into()),
        }
    );
    // Writing needs write_orders, which read_orders does not imply.
    let reader = policy.token(json!({"scope": "read_orders"}));
    let verdict = policy
        .request("POST", "/shop/orders")
        .token(&reader)
        .h2()
        .verdict()
        .await;
    assert_eq!(
        (verdict.status, verdict.reason),
        (403, "insufficient_scope"),
        "{verdict:?}"
    );
    assert_eq!(verdict.needed.as_deref(), Some("write_orders"));
}

#[tokio::test]
async fn a_path_no_route_covers_is_404() {
    let policy = Policy::new(TEST_ROUTES).build();
    let token = policy.token(json!({"scope": "read_orders"}));
    let verdict = policy
        .request("GET", "/shop/nothing-here")
        .token(&token)
        .verdict()
        .await;
    assert_eq!(
        verdict,
        Verdict {
            status: 404,
            outcome: "no_route",
            reason: "no_route",
            needed: None,
        }
    );
}

// The config edits apply to the TOML value, and an edit that cannot apply fails loudly.

#[tokio::test]
async fn a_config_edit_applies_to_the_loaded_config() {
    let policy = Policy::new(TEST_ROUTES)
        .config(|t| common::set(t, "jwt.issuer", "someone-else"))
        .build();
    let token = policy.token(json!({"scope": "read_orders"}));
    let verdict = policy
        .request("GET", "/shop/orders")
        .token(&token)
        .verdict()
        .await;
    assert_eq!(
        (verdict.status, verdict.outcome),
        (401, "invalid_token"),
        "{verdict:?}"
    );
}

#[test]
#[should_panic(expected = "sets `reload.watch` = true, but the config already has false")]
fn a_fragment_changing_a_key_already_set_panics() {
    Policy::new(TEST_ROUTES)
        .toml("[reload]\nwatch = true\n")
        .build();
}

#[test]
#[should_panic(expected = "`realm.name`: `realm` is string \"test\", not a table")]
fn setting_a_path_through_a_value_panics() {
    Policy::new(TEST_ROUTES)
        .config(|t| common::set(t, "realm.name", "x"))
        .build();
}

#[test]
#[should_panic(expected = "the config has no `limits`")]
fn editing_a_missing_key_panics() {
    Policy::new(TEST_ROUTES)
        .config(|t| *common::get(t, "limits.max_connections") = 2.into())
        .build();
}
