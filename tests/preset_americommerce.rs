//! The AmeriCommerce (Cart.com) preset, `routes/americommerce.toml`, through the real proxy:
//! every resource scope (read with GET, write with POST), the specialised scopes, the
//! `read_order` / `order` aliases, supersession, the `no_expiry` exemption and the refused
//! `decrypt` + `no_expiry` pair.

mod common;

use common::{Harness, Reply, Version};
use http::StatusCode;
use serde_json::json;

const PRESET: &str = include_str!("../routes/americommerce.toml");

/// (read scope, read+write scope, resources), as in shared/reference/americommerce-scopes.md.
const RESOURCE_SCOPES: &[(&str, &str, &[&str])] = &[
    (
        "read_people",
        "people",
        &[
            "addresses",
            "customers",
            "customer_types",
            "customer_payment_methods",
            "profiles",
            "users",
        ],
    ),
    (
        "read_orders",
        "orders",
        &[
            "carts",
            "cart_items",
            "credit_cards",
            "orders",
            "order_addresses",
            "order_items",
            "order_payments",
            "order_shipments",
            "order_statuses",
            "quotes",
            "subscriptions",
        ],
    ),
    (
        "read_catalog",
        "catalog",
        &[
            "attributes",
            "attribute_groups",
            "categories",
            "manufacturers",
            "products",
            "product_lists",
            "product_pictures",
            "product_statuses",
            "product_variants",
            "shipping_rate_adjustments",
            "variant_groups",
            "variant_inventory",
        ],
    ),
    (
        "read_content",
        "content",
        &["blogs", "blog_categories", "blog_posts", "links", "pages"],
    ),
    (
        "read_marketing",
        "marketing",
        &[
            "adcodes",
            "affiliates",
            "coupon_codes",
            "discount_methods",
            "discount_rules",
            "drips",
            "email_templates",
            "gift_certificates",
            "gift_certificate_transactions",
            "mailing_lists",
        ],
    ),
];

/// (scope, method, path) for the specialised scopes.
const SPECIAL: &[(&str, &str, &str)] = &[
    ("email", "POST", "/api/v1/email_templates/3/send"),
    ("custom_fields", "GET", "/api/v1/custom_fields"),
    ("custom_fields", "POST", "/api/v1/custom_fields"),
    ("custom_fields", "DELETE", "/api/v1/custom_fields/4"),
    ("settings", "GET", "/api/v1/custom_shipping_methods"),
    ("settings", "POST", "/api/v1/payment_methods"),
    ("settings", "GET", "/api/v1/regions/2"),
    ("settings", "PUT", "/api/v1/shipping_providers/2"),
    ("settings", "GET", "/api/v1/tax_rates"),
    ("settings", "POST", "/api/v1/url_redirects"),
    ("settings", "PATCH", "/api/v1/warehouses/9"),
    ("system", "GET", "/api/v1/stores"),
    ("system", "PUT", "/api/v1/stores/1"),
    ("system", "POST", "/api/v1/sessions"),
    ("system", "POST", "/api/v1/upload"),
    ("decrypt", "GET", "/api/v1/credit_cards/7/decrypted"),
    ("decrypt", "GET", "/api/v1/order_payments/7/decrypted"),
];

/// A scope that unlocks none of the specialised endpoints (nor any resource of `read_people`).
const UNRELATED: &str = "catalog";

async fn call(h: &Harness, method: &str, path: &str, scope: Option<&str>) -> Reply {
    let token = scope.map(|s| h.token(json!({ "scope": s })));
    h.send(Version::H1, method, path, token.as_deref(), &[])
        .await
}

/// 200 and forwarded exactly once, to the same path.
async fn assert_forwarded(h: &Harness, method: &str, path: &str, scope: &str) {
    let before = h.upstream.count();
    let reply = call(h, method, path, Some(scope)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{method} {path} with `{scope}`: {:?}",
        reply.json()
    );
    assert_eq!(h.upstream.count(), before + 1, "{method} {path} forwarded");
    let seen = h.upstream.last();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), (method, path));
}

/// 403, not forwarded, and `WWW-Authenticate` names exactly `needed`.
async fn assert_forbidden(h: &Harness, method: &str, path: &str, scope: &str, needed: &str) {
    let before = h.upstream.count();
    let reply = call(h, method, path, Some(scope)).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{method} {path} with `{scope}`"
    );
    let auth = reply.header("www-authenticate");
    assert!(auth.contains(r#"error="insufficient_scope""#), "{auth}");
    assert!(
        auth.contains(&format!(r#"scope="{needed}""#)),
        "{method} {path} with `{scope}`: {auth}"
    );
    assert_eq!(reply.json()["scope"], needed);
    assert_eq!(h.upstream.count(), before, "{method} {path} not forwarded");
}

fn invalid_token(reply: &Reply) -> bool {
    reply.status == StatusCode::UNAUTHORIZED
        && reply
            .header("www-authenticate")
            .contains(r#"error="invalid_token""#)
}

#[tokio::test]
async fn every_resource_scope_reads_with_get_and_writes_with_post() {
    let h = Harness::start(PRESET).await;
    for (read, write, resources) in RESOURCE_SCOPES {
        for resource in *resources {
            let collection = format!("/api/v1/{resource}");
            let item = format!("/api/v1/{resource}/42");
            let nested = format!("/api/v1/{resource}/42/notes");
            for path in [&collection, &item, &nested] {
                // The read scope reads.
                assert_forwarded(&h, "GET", path, read).await;
                // The read+write scope writes.
                assert_forwarded(&h, "POST", path, write).await;
                // The read sibling may not write; the 403 names the read+write scope.
                assert_forbidden(&h, "POST", path, read, write).await;
                // An unrelated scope may not read; the 403 names the read scope.
                let other = if *read == "read_people" {
                    "catalog"
                } else {
                    "people"
                };
                assert_forbidden(&h, "GET", path, other, read).await;
            }
        }
    }
}

#[tokio::test]
async fn specialised_scopes_cover_their_own_endpoints() {
    let h = Harness::start(PRESET).await;
    for (scope, method, path) in SPECIAL {
        assert_forwarded(&h, method, path, scope).await;
        assert_forbidden(&h, method, path, UNRELATED, scope).await;
    }
    // Neither marketing (the templates' own scope) nor orders (the cards' own scope) reaches
    // sending or decrypting.
    assert_forbidden(
        &h,
        "POST",
        "/api/v1/email_templates/3/send",
        "marketing",
        "email",
    )
    .await;
    for path in [
        "/api/v1/credit_cards/7/decrypted",
        "/api/v1/order_payments/7/decrypted",
    ] {
        assert_forbidden(&h, "GET", path, "orders read_orders", "decrypt").await;
    }
    // The specialised scopes grant nothing beyond their endpoints.
    assert_forbidden(
        &h,
        "GET",
        "/api/v1/email_templates/3",
        "email",
        "read_marketing",
    )
    .await;
    assert_forbidden(
        &h,
        "GET",
        "/api/v1/credit_cards/7",
        "decrypt",
        "read_orders",
    )
    .await;
    assert_forbidden(&h, "GET", "/api/v1/stores", "settings", "system").await;
    assert_forbidden(&h, "POST", "/api/v1/upload", "custom_fields", "system").await;
    // Only the listed method: reading a send endpoint or writing a decrypted one is 405.
    let before = h.upstream.count();
    let reply = call(&h, "GET", "/api/v1/email_templates/3/send", Some("email")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = call(
        &h,
        "POST",
        "/api/v1/credit_cards/7/decrypted",
        Some("decrypt"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let reply = call(&h, "GET", "/api/v1/upload", Some("system")).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(h.upstream.count(), before);
}

#[tokio::test]
async fn singular_spellings_are_aliases_of_the_order_scopes() {
    let h = Harness::start(PRESET).await;
    // `read_order` is `read_orders`: reads, may not write, and the 403 names `orders`.
    assert_forwarded(&h, "GET", "/api/v1/orders", "read_order").await;
    assert_forwarded(&h, "GET", "/api/v1/order_items/5", "read_order").await;
    assert_forbidden(&h, "POST", "/api/v1/orders", "read_order", "orders").await;
    // `order` is `orders`: writes, and supersedes the read scope.
    assert_forwarded(&h, "POST", "/api/v1/orders", "order").await;
    assert_forwarded(&h, "DELETE", "/api/v1/carts/5", "order").await;
    assert_forwarded(&h, "GET", "/api/v1/orders/5", "order").await;
    // The canonical spellings work as well.
    assert_forwarded(&h, "GET", "/api/v1/orders", "read_orders").await;
    assert_forwarded(&h, "PUT", "/api/v1/orders/5", "orders").await;
}

#[tokio::test]
async fn read_write_scope_supersedes_the_read_scope() {
    let h = Harness::start(PRESET).await;
    for (read, write, resources) in RESOURCE_SCOPES {
        for resource in *resources {
            // The read+write scope alone also reads (GET and HEAD).
            assert_forwarded(&h, "GET", &format!("/api/v1/{resource}/1"), write).await;
            let reply = call(&h, "HEAD", &format!("/api/v1/{resource}"), Some(write)).await;
            assert_eq!(reply.status, StatusCode::OK, "HEAD {resource} with {write}");
            // Holding both is the same as holding the read+write scope.
            assert_forwarded(
                &h,
                "PATCH",
                &format!("/api/v1/{resource}/1"),
                &format!("{read} {write}"),
            )
            .await;
        }
    }
    // Supersession goes one way only, and does not cross areas.
    assert_forbidden(&h, "GET", "/api/v1/products", "orders", "read_catalog").await;
    assert_forbidden(&h, "POST", "/api/v1/products", "read_catalog", "catalog").await;
}

#[tokio::test]
async fn only_no_expiry_lets_a_token_lack_exp() {
    let h = Harness::start(PRESET).await;
    let before = h.upstream.count();
    for scope in [
        "read_orders",
        "orders",
        "decrypt",
        "system",
        "read_orders email",
    ] {
        let mortal = h.token(json!({ "scope": scope, "exp": null }));
        let reply = h.get("/api/v1/orders", Some(&mortal)).await;
        assert!(
            invalid_token(&reply),
            "{scope} without exp: {:?}",
            reply.status
        );
    }
    assert_eq!(h.upstream.count(), before);

    let forever = h.token(json!({ "scope": "read_orders no_expiry", "exp": null }));
    assert_eq!(
        h.get("/api/v1/orders", Some(&forever)).await.status,
        StatusCode::OK
    );
    // The exemption is about `exp` only: no_expiry still grants no resource.
    let reply = h.get("/api/v1/products", Some(&forever)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply
            .header("www-authenticate")
            .contains(r#"scope="read_catalog""#)
    );
    // A no_expiry token may still carry an exp.
    assert_forwarded(&h, "GET", "/api/v1/orders", "read_orders no_expiry").await;
    assert_eq!(h.upstream.count(), before + 2);
}

#[tokio::test]
async fn decrypt_with_no_expiry_is_an_invalid_token() {
    let h = Harness::start(PRESET).await;
    for claims in [
        json!({ "scope": "decrypt no_expiry" }),
        json!({ "scope": "decrypt no_expiry", "exp": null }),
        json!({ "scope": "decrypt no_expiry orders" }),
    ] {
        let token = h.token(claims.clone());
        for path in [
            "/api/v1/credit_cards/7/decrypted",
            "/api/v1/order_payments/7/decrypted",
            "/api/v1/orders",
        ] {
            let reply = h.get(path, Some(&token)).await;
            assert!(
                invalid_token(&reply),
                "{claims} on {path}: {:?}",
                reply.status
            );
        }
    }
    assert_eq!(h.upstream.count(), 0);
    // Each alone is fine.
    assert_forwarded(&h, "GET", "/api/v1/credit_cards/7/decrypted", "decrypt").await;
    assert_forwarded(&h, "GET", "/api/v1/orders", "read_orders no_expiry").await;
}

#[tokio::test]
async fn no_token_is_401_without_an_error_code() {
    let h = Harness::start(PRESET).await;
    let reply = call(&h, "GET", "/api/v1/orders", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!reply.header("www-authenticate").contains("error="));
    assert_eq!(
        reply.header("content-type"),
        "application/problem+json",
        "error_style = problem"
    );
    assert_eq!(h.upstream.count(), 0);
}

#[test]
fn the_tables_cover_every_route_in_the_preset() {
    let file: toml::Table = toml::from_str(PRESET).unwrap();
    let routes = file["route"].as_array().unwrap();
    let mut untested = Vec::new();
    for route in routes {
        let path = route["path"].as_str().unwrap();
        let resource = path
            .strip_prefix("/api/v1/")
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let in_resources = RESOURCE_SCOPES
            .iter()
            .any(|(_, _, rs)| rs.contains(&resource));
        let in_special = SPECIAL.iter().any(|(_, _, p)| {
            let special = p.strip_prefix("/api/v1/").unwrap();
            special.split('/').next() == Some(resource)
                && (path.ends_with("/send") == special.ends_with("/send"))
                && (path.ends_with("/decrypted") == special.ends_with("/decrypted"))
        });
        if !(in_resources || in_special) {
            untested.push(path.to_owned());
        }
    }
    assert!(
        untested.is_empty(),
        "routes without a test case: {untested:?}"
    );
    let resources: usize = RESOURCE_SCOPES.iter().map(|(_, _, rs)| rs.len()).sum();
    // One route per resource, two more for each of the three sub-resources (collection and
    // item split, plus the special path), 10 settings/system/custom_fields resources and upload.
    assert_eq!(routes.len(), resources + 3 * 2 + 10 + 1);
}
