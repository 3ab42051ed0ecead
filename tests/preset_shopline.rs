//! The SHOPLINE preset (routes/shopline.toml): every scope that gates an endpoint opens exactly its
//! endpoints, write_* implies read_*, "Apply to private application: false" scopes are refused to
//! private apps, and business-function scopes count only for stores that have the function.

mod common;

use std::collections::BTreeSet;

use common::{Harness, Reply, Version};
use http::StatusCode;
use serde_json::{Value, json};

const ROUTES: &str = include_str!("../routes/shopline.toml");

const SETTINGS: &str = r#"
[presets.shopline.enabled_functions]
payment_gateway = ["store-1"]
subscription = ["store-1"]
"#;

/// (scope, method, path, a scope that must not open it: the read sibling of a write scope, or an
/// unrelated scope for reads, since write_* implies read_*).
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "read_orders",
        "GET",
        "/admin/openapi/v20251201/orders.json",
        "read_products",
    ),
    (
        "read_orders",
        "GET",
        "/admin/openapi/v20251201/orders/123/risks.json",
        "read_products",
    ),
    (
        "write_orders",
        "POST",
        "/admin/openapi/v20251201/orders/123/refunds.json",
        "read_orders",
    ),
    (
        "read_orders",
        "GET",
        "/admin/openapi/v20251201/checkouts/count.json",
        "read_products",
    ),
    (
        "write_orders",
        "POST",
        "/admin/openapi/v20251201/checkouts/archive.json",
        "read_orders",
    ),
    (
        "write_orders",
        "GET",
        "/admin/openapi/v20251201/payment_slips/settings.json",
        "read_orders",
    ),
    (
        "write_orders",
        "POST",
        "/admin/openapi/v20251201/payment_slips.json",
        "read_orders",
    ),
    (
        "write_checkouts",
        "GET",
        "/admin/openapi/v20251201/tax_channels.json",
        "read_orders",
    ),
    (
        "write_checkouts",
        "DELETE",
        "/admin/openapi/v20251201/tax_channels/9.json",
        "read_orders",
    ),
    (
        "read_products",
        "GET",
        "/admin/openapi/v20251201/products/products.json",
        "read_orders",
    ),
    (
        "read_products",
        "GET",
        "/admin/openapi/v20251201/products/55/variants/7.json",
        "read_orders",
    ),
    (
        "write_products",
        "PUT",
        "/admin/openapi/v20251201/products/55.json",
        "read_products",
    ),
    (
        "write_products",
        "DELETE",
        "/admin/openapi/v20251201/products/55/images/3.json",
        "read_products",
    ),
    (
        "read_product_variant_images",
        "GET",
        "/admin/openapi/v20251201/products/variant_images",
        "read_products",
    ),
    (
        "read_product_variant_images",
        "GET",
        "/admin/openapi/v20251201/products/variant_images/list.json",
        "read_products",
    ),
    (
        "write_product_variant_images",
        "PUT",
        "/admin/openapi/v20251201/products/variant_images/batch.json",
        "read_product_variant_images",
    ),
    (
        "read_product_sizechart",
        "GET",
        "/admin/openapi/v20251201/size_charts.json",
        "read_products",
    ),
    (
        "write_product_sizechart",
        "POST",
        "/admin/openapi/v20251201/size_charts.json",
        "read_product_sizechart",
    ),
    (
        "read_products",
        "GET",
        "/admin/openapi/v20251201/custom_collections/count.json",
        "read_orders",
    ),
    (
        "write_products",
        "DELETE",
        "/admin/openapi/v20251201/smart_collections/4.json",
        "read_products",
    ),
    (
        "write_products",
        "POST",
        "/admin/openapi/v20251201/collects.json",
        "read_products",
    ),
    (
        "read_products",
        "GET",
        "/admin/openapi/v20251201/taxonomy/nodes.json",
        "read_orders",
    ),
    (
        "write_products",
        "POST",
        "/admin/openapi/v20251201/taxonomy/nodes.json",
        "read_products",
    ),
    (
        "read_product_listings",
        "GET",
        "/admin/openapi/v20251201/catalogs.json",
        "read_products",
    ),
    (
        "read_products",
        "GET",
        "/admin/openapi/v20251201/catalogs/12.json",
        "read_product_listings",
    ),
    (
        "write_products",
        "POST",
        "/admin/openapi/v20251201/catalogs.json",
        "read_products",
    ),
    (
        "read_product_listings",
        "GET",
        "/admin/openapi/v20251201/catalogs/products/list.json",
        "read_products",
    ),
    (
        "read_product_listings",
        "GET",
        "/admin/openapi/v20251201/product_listings.json",
        "read_products",
    ),
    (
        "write_product_listings",
        "PUT",
        "/admin/openapi/v20251201/product_listings/77.json",
        "read_product_listings",
    ),
    (
        "read_product_listings",
        "GET",
        "/admin/openapi/v20251201/collection_listings/5.json",
        "read_products",
    ),
    (
        "write_product_listings",
        "DELETE",
        "/admin/openapi/v20251201/collection_listings/5.json",
        "read_product_listings",
    ),
    (
        "read_markets",
        "GET",
        "/admin/openapi/v20251201/markets/3.json",
        "read_products",
    ),
    (
        "write_markets",
        "PUT",
        "/admin/openapi/v20251201/markets/3/currency.json",
        "read_markets",
    ),
    (
        "read_products",
        "GET",
        "/admin/openapi/v20251201/markets/products",
        "read_markets",
    ),
    (
        "write_products",
        "POST",
        "/admin/openapi/v20251201/markets/products/add.json",
        "write_markets",
    ),
    (
        "read_location",
        "GET",
        "/admin/openapi/v20251201/locations/list.json",
        "read_inventory",
    ),
    (
        "read_inventory",
        "GET",
        "/admin/openapi/v20251201/inventory_levels.json",
        "read_location",
    ),
    (
        "write_inventory",
        "POST",
        "/admin/openapi/v20251201/inventory_levels/set.json",
        "read_inventory",
    ),
    (
        "write_inventory",
        "PUT",
        "/admin/openapi/v20251201/inventory_items/8.json",
        "read_inventory",
    ),
    (
        "read_shipping",
        "GET",
        "/admin/openapi/v20251201/carrier_services.json",
        "read_orders",
    ),
    (
        "write_shipping",
        "POST",
        "/admin/openapi/v20251201/carrier_services.json",
        "read_shipping",
    ),
    (
        "read_shipping",
        "GET",
        "/admin/openapi/v20251201/countries/count.json",
        "read_orders",
    ),
    (
        "write_shipping",
        "POST",
        "/admin/openapi/v20251201/shipping/plans/batch.json",
        "read_shipping",
    ),
    (
        "read_content",
        "GET",
        "/admin/openapi/v20251201/themes.json",
        "read_themes",
    ),
    (
        "write_themes",
        "POST",
        "/admin/openapi/v20251201/themes.json",
        "read_themes",
    ),
    (
        "write_content",
        "PUT",
        "/admin/openapi/v20251201/themes/4",
        "read_content",
    ),
    (
        "read_themes",
        "GET",
        "/admin/openapi/v20251201/themes/4/assets",
        "read_content",
    ),
    (
        "write_themes",
        "PUT",
        "/admin/openapi/v20251201/themes/4/assets/batch.json",
        "read_themes",
    ),
    (
        "read_content",
        "GET",
        "/admin/openapi/v20251201/blogs/2/articles.json",
        "read_page",
    ),
    (
        "write_content",
        "POST",
        "/admin/openapi/v20251201/comments/6/spam.json",
        "read_content",
    ),
    (
        "write_content",
        "GET",
        "/admin/openapi/v20251201/redirects.json",
        "read_content",
    ),
    (
        "read_page",
        "GET",
        "/admin/openapi/v20251201/pages/count.json",
        "read_content",
    ),
    (
        "write_page",
        "POST",
        "/admin/openapi/v20251201/pages.json",
        "read_page",
    ),
    (
        "read_shop_policy",
        "GET",
        "/admin/openapi/v20251201/policies.json",
        "read_page",
    ),
    (
        "write_shop_policy",
        "PUT",
        "/admin/openapi/v20251201/policies/1.json",
        "read_shop_policy",
    ),
    (
        "read_script_tags",
        "GET",
        "/admin/openapi/v20251201/script_tags/count.json",
        "read_themes",
    ),
    (
        "write_script_tags",
        "POST",
        "/admin/openapi/v20251201/script_tags.json",
        "read_script_tags",
    ),
    (
        "read_files",
        "GET",
        "/admin/openapi/v20251201/files.json",
        "read_content",
    ),
    (
        "write_files",
        "POST",
        "/admin/openapi/v20251201/files/staged_uploads.json",
        "read_files",
    ),
    (
        "read_store_information",
        "GET",
        "/admin/openapi/v20251201/store/info.json",
        "read_store_log",
    ),
    (
        "write_store_information",
        "POST",
        "/admin/openapi/v20251201/store/languages.json",
        "read_store_information",
    ),
    (
        "read_store_log",
        "GET",
        "/admin/openapi/v20251201/store/operation_logs/count.json",
        "read_store_information",
    ),
    (
        "read_draft_orders",
        "GET",
        "/admin/openapi/v20251201/draft_orders/count.json",
        "read_orders",
    ),
    (
        "write_draft_orders",
        "POST",
        "/admin/openapi/v20251201/draft_orders/5/send_invoice.json",
        "read_draft_orders",
    ),
    (
        "read_price_rules",
        "GET",
        "/admin/openapi/v20251201/price_rules/count.json",
        "read_orders",
    ),
    (
        "write_price_rules",
        "DELETE",
        "/admin/openapi/v20251201/price_rules/5.json",
        "read_price_rules",
    ),
    (
        "read_returns",
        "GET",
        "/admin/openapi/v20251201/returns.json",
        "read_orders",
    ),
    (
        "write_return",
        "POST",
        "/admin/openapi/v20251201/returns/9/close.json",
        "read_returns",
    ),
    (
        "read_assigned_fulfillment_orders",
        "GET",
        "/admin/openapi/v20251201/fulfillment_orders.json",
        "read_orders",
    ),
    (
        "write_assigned_fulfillment_orders",
        "POST",
        "/admin/openapi/v20251201/fulfillment_orders/3/hold.json",
        "read_assigned_fulfillment_orders",
    ),
    (
        "write_assigned_fulfillment_orders",
        "PUT",
        "/admin/openapi/v20251201/fulfillments/3/tracking.json",
        "read_assigned_fulfillment_orders",
    ),
    (
        "read_fulfillment_service",
        "GET",
        "/admin/openapi/v20251201/fulfillment_services.json",
        "read_orders",
    ),
    (
        "write_fulfillment_service",
        "DELETE",
        "/admin/openapi/v20251201/fulfillment_services/2.json",
        "read_fulfillment_service",
    ),
    (
        "read_gift_card",
        "GET",
        "/admin/openapi/v20251201/gift_cards/count.json",
        "read_orders",
    ),
    (
        "write_gift_card",
        "POST",
        "/admin/openapi/v20251201/gift_cards/4/disable.json",
        "read_gift_card",
    ),
    (
        "read_marketing_event",
        "GET",
        "/admin/openapi/v20251201/marketing_events/count.json",
        "read_orders",
    ),
    (
        "write_marketing_event",
        "POST",
        "/admin/openapi/v20251201/marketing_events.json",
        "read_marketing_event",
    ),
    (
        "read_bulkoperation",
        "GET",
        "/admin/openapi/v20251201/bulk_operations/current.json",
        "read_orders",
    ),
    (
        "write_bulkoperation",
        "POST",
        "/admin/openapi/v20251201/bulk_operations/query.json",
        "read_bulkoperation",
    ),
    (
        "read_payment",
        "GET",
        "/admin/openapi/v20251201/payments/balance.json",
        "read_orders",
    ),
    (
        "read_data_report",
        "POST",
        "/admin/openapi/v20251201/data_report/events.json",
        "read_orders",
    ),
    (
        "read_selling_plan_group",
        "GET",
        "/admin/openapi/v20251201/selling_plan_groups/count.json",
        "read_products",
    ),
    (
        "write_selling_plan_group",
        "POST",
        "/admin/openapi/v20251201/selling_plan_groups/6/add_products.json",
        "read_selling_plan_group",
    ),
    (
        "read_subscription_contracts",
        "GET",
        "/admin/openapi/v20251201/subscription_contracts.json",
        "read_orders",
    ),
    (
        "write_subscription_contracts",
        "POST",
        "/admin/openapi/v20251201/subscription_contracts/6/skip.json",
        "read_subscription_contracts",
    ),
    (
        "write_payment_gateways",
        "POST",
        "/admin/openapi/v20251201/payments_apps/payment_success.json",
        "read_payment",
    ),
    (
        "unauthenticated_read_cart",
        "POST",
        "/storefront/graph/v20251201/graphql.json",
        "read_orders",
    ),
    (
        "unauthenticated_write_cart",
        "POST",
        "/storefront/graph/v20251201/graphql.json",
        "read_orders",
    ),
    (
        "unauthenticated_read_checkouts_info",
        "POST",
        "/storefront/graph/v20251201/graphql.json",
        "read_orders",
    ),
    (
        "unauthenticated_write_checkouts_info",
        "POST",
        "/storefront/graph/v20251201/graphql.json",
        "read_orders",
    ),
    (
        "unauthenticated_write_customer_information",
        "POST",
        "/storefront/graph/v20251201/graphql.json",
        "read_orders",
    ),
    (
        "unauthenticated_read_message",
        "POST",
        "/storefront/graph/v20251201/graphql.json",
        "read_orders",
    ),
    (
        "unauthenticated_write_message",
        "POST",
        "/storefront/graph/v20251201/graphql.json",
        "read_orders",
    ),
];

/// Scopes with "Apply to private application: false" in the seed.
const NOT_FOR_PRIVATE_APPS: &[&str] = &[
    "read_selling_plan_group",
    "write_selling_plan_group",
    "read_subscription_contracts",
    "write_subscription_contracts",
    "write_payment_gateways",
];

/// Scopes that need a business function (seed: "the app has no qualification").
const NEEDS_FUNCTION: &[(&str, &str)] = &[
    ("write_payment_gateways", "payment_gateway"),
    ("read_subscription_contracts", "subscription"),
    ("write_subscription_contracts", "subscription"),
];

async fn harness(settings: &str) -> Harness {
    Harness::new(ROUTES).toml(settings).start().await
}

async fn call(h: &Harness, method: &str, path: &str, claims: Value) -> Reply {
    let token = h.token(claims);
    h.send(Version::H1, method, path, Some(&token), &[]).await
}

/// The scopes named in `scope="..."` of a 403's WWW-Authenticate.
fn challenged(reply: &Reply) -> Vec<String> {
    let header = reply.header("www-authenticate");
    assert!(header.contains(r#"error="insufficient_scope""#), "{header}");
    let start = header.find(r#"scope=""#).expect("scope in challenge") + 7;
    let end = header[start..].find('"').unwrap() + start;
    header[start..end].split(' ').map(str::to_owned).collect()
}

fn cases_for(scope: &str) -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    CASES.iter().copied().filter(|c| c.0 == scope).collect()
}

/// Every scope that any route of the file requires.
fn route_scopes() -> BTreeSet<String> {
    let file: toml::Table = ROUTES.parse().unwrap();
    let mut out = BTreeSet::new();
    for route in file["route"].as_array().unwrap() {
        for (key, rule) in route.as_table().unwrap() {
            let Some(rule) = rule.as_table() else {
                continue;
            };
            for list in ["scopes", "any_scopes"] {
                if let Some(names) = rule.get(list).and_then(|v| v.as_array()) {
                    assert!(
                        ["read", "write", "any"].contains(&key.as_str()),
                        "unexpected rule key {key}"
                    );
                    out.extend(names.iter().map(|n| n.as_str().unwrap().to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn the_table_covers_every_scope_the_routes_require() {
    let tested: BTreeSet<String> = CASES.iter().map(|c| c.0.to_owned()).collect();
    let required = route_scopes();
    let untested: Vec<_> = required.difference(&tested).collect();
    assert!(untested.is_empty(), "scopes without a case: {untested:?}");
    let unrouted: Vec<_> = tested.difference(&required).collect();
    assert!(
        unrouted.is_empty(),
        "cases for scopes no route requires: {unrouted:?}"
    );
    for (scope, _) in NEEDS_FUNCTION {
        assert!(NOT_FOR_PRIVATE_APPS.contains(scope));
    }
}

#[tokio::test]
async fn each_scope_opens_its_endpoints_and_others_do_not() {
    let h = harness(SETTINGS).await;
    let mut forwarded = 0;
    for &(scope, method, path, deny) in CASES {
        let reply = call(
            &h,
            method,
            path,
            json!({"scope": scope, "store_id": "store-1"}),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{scope} {method} {path}: {:?}",
            reply.json()
        );
        forwarded += 1;
        assert_eq!(
            h.upstream.count(),
            forwarded,
            "{scope} {method} {path} not forwarded"
        );

        let reply = call(
            &h,
            method,
            path,
            json!({"scope": deny, "store_id": "store-1"}),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{deny} must not open {method} {path}"
        );
        let named = challenged(&reply);
        assert!(
            named.iter().any(|s| s == scope),
            "{method} {path}: {named:?} lacks {scope}"
        );
        if path.starts_with("/admin/") {
            assert_eq!(named, [scope], "{method} {path}");
        }
        assert_eq!(
            reply.json()["type"],
            "urn:scopegate:problem:insufficient_scope"
        );
        assert_eq!(
            h.upstream.count(),
            forwarded,
            "refused request was forwarded"
        );
    }
}

#[tokio::test]
async fn write_scopes_imply_their_read_scopes() {
    let h = harness(SETTINGS).await;
    let file: toml::Table = ROUTES.parse().unwrap();
    let implies = file["scopes"]["implies"].as_table().unwrap();
    let mut checked = 0;
    for (write, reads) in implies {
        assert!(write.contains("write_"), "{write}");
        for read in reads.as_array().unwrap() {
            let read = read.as_str().unwrap();
            assert!(read.contains("read_"), "{write} -> {read}");
            for (_, method, path, _) in cases_for(read) {
                let reply = call(
                    &h,
                    method,
                    path,
                    json!({"scope": write, "store_id": "store-1"}),
                )
                .await;
                assert_eq!(
                    reply.status,
                    StatusCode::OK,
                    "{write} should cover {read}: {method} {path}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "only {checked} implied reads checked");
    // Not the other way round.
    let reply = call(
        &h,
        "POST",
        "/admin/openapi/v20251201/orders.json",
        json!({"scope": "read_orders"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn private_apps_are_refused_scopes_not_for_private_apps() {
    let h = harness(SETTINGS).await;
    for scope in NOT_FOR_PRIVATE_APPS {
        let cases = cases_for(scope);
        assert!(!cases.is_empty(), "{scope}");
        for (_, method, path, _) in cases {
            let public = call(
                &h,
                method,
                path,
                json!({"scope": scope, "store_id": "store-1"}),
            )
            .await;
            assert_eq!(public.status, StatusCode::OK, "{scope} {method} {path}");
            let before = h.upstream.count();
            let private = call(
                &h,
                method,
                path,
                json!({"scope": scope, "store_id": "store-1", "app_type": "private"}),
            )
            .await;
            assert_eq!(
                private.status,
                StatusCode::FORBIDDEN,
                "{scope} {method} {path}"
            );
            let body = private.json();
            assert_eq!(
                body["type"], "urn:scopegate:problem:scope_not_for_private_apps",
                "{body}"
            );
            assert!(
                body["detail"].as_str().unwrap().contains("private apps"),
                "{body}"
            );
            assert!(challenged(&private).iter().any(|s| s == scope));
            assert_eq!(
                h.upstream.count(),
                before,
                "private-app request was forwarded"
            );
        }
    }
    // A private app keeps every scope the seed allows for private applications.
    for &(scope, method, path, _) in CASES {
        if NOT_FOR_PRIVATE_APPS.contains(&scope) {
            continue;
        }
        let reply = call(
            &h,
            method,
            path,
            json!({"scope": scope, "store_id": "store-1", "app_type": "private"}),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "private app with {scope}: {method} {path}"
        );
    }
    // Holding the write scope as a private app does not smuggle in the implied read scope.
    let reply = call(
        &h,
        "GET",
        "/admin/openapi/v20251201/selling_plan_groups.json",
        json!({"scope": "write_selling_plan_group", "app_type": "private"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn business_function_scopes_count_only_for_enabled_stores() {
    let h = harness(SETTINGS).await;
    for (scope, _function) in NEEDS_FUNCTION {
        let cases = cases_for(scope);
        assert!(!cases.is_empty(), "{scope}");
        for (_, method, path, _) in cases {
            let enabled = call(
                &h,
                method,
                path,
                json!({"scope": scope, "store_id": "store-1"}),
            )
            .await;
            assert_eq!(enabled.status, StatusCode::OK, "{scope} {method} {path}");
            let before = h.upstream.count();
            for claims in [
                json!({"scope": scope, "store_id": "store-2"}),
                json!({"scope": scope}),
            ] {
                let reply = call(&h, method, path, claims.clone()).await;
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{claims} {method} {path}"
                );
                let body = reply.json();
                assert_eq!(body["detail"], "the app has no qualification", "{body}");
                assert_eq!(body["type"], "urn:scopegate:problem:no_qualification");
                assert!(challenged(&reply).iter().any(|s| s == scope));
            }
            assert_eq!(
                h.upstream.count(),
                before,
                "unqualified request was forwarded"
            );
        }
    }
    // The write scope at an unqualified store does not bring in the gated read scope either.
    let reply = call(
        &h,
        "GET",
        "/admin/openapi/v20251201/subscription_contracts.json",
        json!({"scope": "write_subscription_contracts", "store_id": "store-2"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["detail"], "the app has no qualification");
    // Ordinary scopes do not depend on the store's functions.
    let reply = call(
        &h,
        "GET",
        "/admin/openapi/v20251201/orders.json",
        json!({"scope": "read_orders", "store_id": "store-2"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn without_enabled_functions_no_store_qualifies() {
    let h = harness("").await;
    for (scope, _) in NEEDS_FUNCTION {
        for (_, method, path, _) in cases_for(scope) {
            let reply = call(
                &h,
                method,
                path,
                json!({"scope": scope, "store_id": "store-1"}),
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{scope} {method} {path}"
            );
            assert_eq!(reply.json()["detail"], "the app has no qualification");
        }
    }
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn missing_tokens_and_read_only_or_write_only_resources() {
    let h = harness(SETTINGS).await;
    let reply = h.get("/admin/openapi/v20251201/orders.json", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // No write scope exists for locations or payments, and no read scope for payment apps.
    let writer = h.token(json!({"scope": "read_location read_payment write_payment_gateways", "store_id": "store-1"}));
    for (method, path) in [
        ("POST", "/admin/openapi/v20251201/locations/list.json"),
        ("DELETE", "/admin/openapi/v20251201/payments/balance.json"),
        (
            "GET",
            "/admin/openapi/v20251201/payments_apps/payment_success.json",
        ),
    ] {
        let reply = h.send(Version::H1, method, path, Some(&writer), &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }
    // Outside the mapped resources there is no route.
    let reply = h
        .get(
            "/admin/openapi/v20251201/unknown_things.json",
            Some(&writer),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(h.upstream.count(), 0);
}
