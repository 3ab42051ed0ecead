//! Scope constraints declared in route files (expiry-exempt scopes, incompatible pairs,
//! aliases) and tenant binding, over real sockets.

mod common;

use common::{Harness, Version};
use http::StatusCode;
use serde_json::json;

const AMERICOMMERCE_LIKE: &str = r#"
[preset]
name = "ac"

[scopes]
aliases = { read_order = "read_orders", order = "orders" }
implies = { orders = ["read_orders"] }
expiry_exempt = ["no_expiry"]
incompatible = [["decrypt", "no_expiry"]]

[[route]]
path = "/api/v1/orders"
below = true
read = { scopes = ["read_orders"] }
write = { scopes = ["orders"] }

[[route]]
path = "/api/v1/credit_cards/{id}/decrypted"
GET = { scopes = ["decrypt"] }

[[route]]
path = "/stores/{store_id}/orders"
read = { scopes = ["read_orders"] }
tenant = { capture = "store_id" }

[[route]]
path = "/admin/orders"
read = { scopes = ["read_orders"] }
tenant = { host = "{tenant}.shop.test" }
"#;

const OTHER: &str = r#"
[preset]
name = "other"

[[route]]
path = "/other/orders"
read = { scopes = ["read_orders"] }
"#;

fn invalid(reply: &common::Reply) -> bool {
    reply.status == StatusCode::UNAUTHORIZED
        && reply.header("www-authenticate").contains("invalid_token")
}

#[tokio::test]
async fn expiry_exempt_scopes_are_honoured_only_by_their_own_file() {
    let h = Harness::start(AMERICOMMERCE_LIKE).await;
    std::fs::write(h.routes_dir().join("other.toml"), OTHER).unwrap();
    h.running.reload().unwrap();
    let forever = h.token(json!({"scope": "read_orders no_expiry", "exp": null}));
    assert_eq!(
        h.get("/api/v1/orders", Some(&forever)).await.status,
        StatusCode::OK
    );
    let reply = h.get("/other/orders", Some(&forever)).await;
    assert!(invalid(&reply), "{:?}", reply.status);
    assert!(reply.header("www-authenticate").contains("no expiry"));
    let mortal = h.token(json!({"scope": "read_orders", "exp": null}));
    assert!(invalid(&h.get("/api/v1/orders", Some(&mortal)).await));
    let with_exp = h.token(json!({"scope": "read_orders"}));
    assert_eq!(
        h.get("/other/orders", Some(&with_exp)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn incompatible_scopes_are_refused_as_invalid_tokens() {
    let h = Harness::start(AMERICOMMERCE_LIKE).await;
    let both = h.token(json!({"scope": "decrypt no_expiry read_orders"}));
    let reply = h.get("/api/v1/credit_cards/7/decrypted", Some(&both)).await;
    assert!(invalid(&reply));
    assert!(
        reply
            .header("www-authenticate")
            .contains("cannot be combined")
    );
    assert!(invalid(&h.get("/api/v1/orders", Some(&both)).await));
    let decrypt = h.token(json!({"scope": "decrypt"}));
    assert_eq!(
        h.get("/api/v1/credit_cards/7/decrypted", Some(&decrypt))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(h.upstream.count(), 1);
}

#[tokio::test]
async fn aliases_and_supersession_follow_the_file() {
    let h = Harness::start(AMERICOMMERCE_LIKE).await;
    let old_spelling = h.token(json!({"scope": "read_order"}));
    assert_eq!(
        h.get("/api/v1/orders", Some(&old_spelling)).await.status,
        StatusCode::OK
    );
    let reply = h
        .send(
            Version::H1,
            "POST",
            "/api/v1/orders",
            Some(&old_spelling),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply
            .header("www-authenticate")
            .contains(r#"scope="orders""#)
    );
    let writer = h.token(json!({"scope": "order"}));
    assert_eq!(
        h.send(Version::H1, "POST", "/api/v1/orders", Some(&writer), &[])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.get("/api/v1/orders/5", Some(&writer)).await.status,
        StatusCode::OK,
        "orders supersedes read_orders"
    );
}

#[tokio::test]
async fn path_tenant_must_be_the_token_store() {
    let h = Harness::start(AMERICOMMERCE_LIKE).await;
    let store1 = h.token(json!({"scope": "read_orders", "store_id": "store-1"}));
    assert_eq!(
        h.get("/stores/store-1/orders", Some(&store1)).await.status,
        StatusCode::OK
    );
    let reply = h.get("/stores/store-2/orders", Some(&store1)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let body = String::from_utf8_lossy(&reply.body);
    assert!(
        !body.contains("store-1") && !body.contains("store-2"),
        "{body}"
    );
    let numeric = h.token(json!({"scope": "read_orders", "store_id": 42}));
    assert_eq!(
        h.get("/stores/42/orders", Some(&numeric)).await.status,
        StatusCode::OK
    );
    let storeless = h.token(json!({"scope": "read_orders"}));
    assert_eq!(
        h.get("/stores/store-1/orders", Some(&storeless))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(h.upstream.count(), 2);
}

#[tokio::test]
async fn host_tenant_must_be_the_token_store() {
    let h = Harness::start(AMERICOMMERCE_LIKE).await;
    let store1 = h.token(json!({"scope": "read_orders", "store_id": "store-1"}));
    let send = |host: &'static str| {
        let h = &h;
        let t = store1.clone();
        async move {
            h.send(
                Version::H1,
                "GET",
                "/admin/orders",
                Some(&t),
                &[("host", host)],
            )
            .await
            .status
        }
    };
    assert_eq!(send("store-1.shop.test").await, StatusCode::OK);
    assert_eq!(send("STORE-1.shop.test:8443").await, StatusCode::OK);
    assert_eq!(send("store-2.shop.test").await, StatusCode::FORBIDDEN);
    assert_eq!(send("shop.test").await, StatusCode::FORBIDDEN);
    assert_eq!(send("store-1.shop.test.evil").await, StatusCode::FORBIDDEN);
    assert_eq!(h.upstream.count(), 2);
}

const GATED: &str = r#"
[preset]
name = "gated"

[scopes]
implies = { write_orders = ["read_orders"] }
needs_approval = ["read_all_orders"]
not_for_private_apps = ["write_payment_gateways"]
needs_function = { write_payment_gateways = "payment_gateway" }

[[route]]
path = "/orders/archive"
read = { scopes = ["read_orders", "read_all_orders"] }

[[route]]
path = "/payment_gateways"
write = { scopes = ["write_payment_gateways"] }
"#;

const GATED_SETTINGS: &str = r#"
[presets.gated]
approved_clients = ["approved-app"]
[presets.gated.enabled_functions]
payment_gateway = ["store-1"]
"#;

#[tokio::test]
async fn approval_private_app_and_business_function_gates() {
    let h = Harness::new(GATED).toml(GATED_SETTINGS).start().await;

    let approved =
        h.token(json!({"scope": "read_orders read_all_orders", "client_id": "approved-app"}));
    assert_eq!(
        h.get("/orders/archive", Some(&approved)).await.status,
        StatusCode::OK
    );
    let unapproved =
        h.token(json!({"scope": "read_orders read_all_orders", "client_id": "other-app"}));
    let reply = h.get("/orders/archive", Some(&unapproved)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.json()["detail"]
            .as_str()
            .unwrap()
            .contains("not approved"),
        "{:?}",
        reply.json()
    );

    let post = |token: String| {
        let h = &h;
        async move {
            h.send(Version::H1, "POST", "/payment_gateways", Some(&token), &[])
                .await
        }
    };
    let qualified = h.token(json!({"scope": "write_payment_gateways", "store_id": "store-1"}));
    assert_eq!(post(qualified).await.status, StatusCode::OK);
    let unqualified = h.token(json!({"scope": "write_payment_gateways", "store_id": "store-2"}));
    let reply = post(unqualified).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["detail"], "the app has no qualification");
    let private = h.token(
        json!({"scope": "write_payment_gateways", "store_id": "store-1", "app_type": "private"}),
    );
    let reply = post(private).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.json()["detail"]
            .as_str()
            .unwrap()
            .contains("private apps")
    );
    // Without the scope at all it is a plain insufficient_scope.
    let none = h.token(json!({"scope": "read_orders", "store_id": "store-1"}));
    let reply = post(none).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.json()["type"],
        "urn:scopegate:problem:insufficient_scope"
    );
    assert_eq!(h.upstream.count(), 2);
}

#[tokio::test]
async fn settings_for_unknown_presets_or_functions_fail_at_load() {
    for (settings, expected) in [
        (
            "[presets.gatd]\napproved_clients = []\n",
            "[presets.gatd] names no loaded route file (did you mean `gated`?)",
        ),
        (
            "[presets.gated.enabled_functions]\npayment_gateways = [\"s\"]\n",
            "enables business function `payment_gateways`, which this file does not declare (did you mean `payment_gateway`?)",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let material = scopegate::demo::material::ensure(&dir.path().join("certs")).unwrap();
        std::fs::create_dir_all(dir.path().join("routes")).unwrap();
        std::fs::write(dir.path().join("routes/g.toml"), GATED).unwrap();
        let text = common::config_text(
            dir.path(),
            &material,
            "127.0.0.1:1".parse().unwrap(),
            settings,
        );
        let err = scopegate::app::App::build(scopegate::config::Config::parse(&text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err}");
    }
}

const SHADOW: &str = r#"
[preset]
name = "shadow"

[[route]]
path = "/new/orders"
read = { scopes = ["read_orders"] }
enforce = false

[[route]]
path = "/old/orders"
read = { scopes = ["read_orders"] }
"#;

#[tokio::test]
async fn shadow_mode_counts_would_deny_but_forwards() {
    let h = Harness::start(SHADOW).await;
    let wrong = h.token(json!({"scope": "read_products"}));
    assert_eq!(
        h.get("/new/orders", Some(&wrong)).await.status,
        StatusCode::OK
    );
    assert_eq!(h.get("/new/orders", None).await.status, StatusCode::OK);
    assert_eq!(
        h.get("/new/orders", Some("garbage")).await.status,
        StatusCode::OK
    );
    assert!(
        h.upstream
            .last()
            .headers
            .get("x-scopegate-scopes")
            .is_none(),
        "no identity for a bad token"
    );
    // Malformed requests are still refused in shadow mode.
    assert_eq!(
        h.get("/new/orders/../x", Some(&wrong)).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.send(Version::H1, "POST", "/new/orders", Some(&wrong), &[])
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Enforcing routes are untouched.
    assert_eq!(
        h.get("/old/orders", Some(&wrong)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(h.upstream.count(), 3);
    let m = h.metrics().await;
    assert!(
        m.contains(
            r#"scopegate_requests_total{decision="would_deny",method="GET",route="/new/orders"} 3"#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"scopegate_requests_total{decision="forbidden",method="GET",route="/old/orders"} 1"#
        ),
        "{m}"
    );
}
