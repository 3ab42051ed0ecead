//! The Shopify preset (`routes/shopify.toml`) over real sockets: every access scope with a REST
//! Admin endpoint admits exactly its holder (and `write_X` holders on `read_X` endpoints), a
//! sibling or unrelated scope gets 403 naming the needed scope, the GraphQL Admin, Storefront and
//! Customer Account endpoints are gated by their scope families, `read_all_orders` and the other
//! protected scopes count only for approved clients, refusals use Shopify's `{"errors": ...}`
//! body, and opaque admin tokens in `X-Shopify-Access-Token` resolve through the static file.

mod common;

use common::{Harness, Version};
use http::StatusCode;
use serde_json::json;

const ROUTES: &str = include_str!("../routes/shopify.toml");
const SETTINGS: &str = "[presets.shopify]\napproved_clients = [\"approved-app\"]\n";
const APPROVED: &str = "approved-app";
const OTHER_APP: &str = "some-app";

/// Scopes listed in `[scopes] needs_approval`.
const NEEDS_APPROVAL: &[&str] = &[
    "read_all_orders",
    "read_customer_payment_methods",
    "read_own_subscription_contracts",
    "write_own_subscription_contracts",
    "customer_read_own_subscription_contracts",
    "customer_write_own_subscription_contracts",
];

/// (scope, method, path) for every scope that has a REST Admin endpoint. Paths after `/v/` are
/// under `/admin/api/2024-10/`.
const REST: &[(&str, &str, &str)] = &[
    // Orders, their nested resources, abandoned checkouts, fulfillments.
    ("read_orders", "GET", "orders.json"),
    ("read_orders", "GET", "orders/450789469.json"),
    ("read_orders", "GET", "orders/450789469/transactions.json"),
    (
        "read_orders",
        "GET",
        "orders/450789469/refunds/509562969.json",
    ),
    ("read_orders", "GET", "checkouts.json"),
    ("write_orders", "POST", "orders.json"),
    ("write_orders", "PUT", "orders/450789469.json"),
    ("write_orders", "DELETE", "orders/450789469.json"),
    ("write_orders", "POST", "orders/450789469/refunds.json"),
    ("write_orders", "POST", "fulfillments.json"),
    ("write_orders", "POST", "fulfillments/255858046/cancel.json"),
    // Sales-channel checkouts.
    (
        "read_checkouts",
        "GET",
        "checkouts/b490a9220cd14d7344024f4874f640a6.json",
    ),
    ("write_checkouts", "POST", "checkouts.json"),
    (
        "write_checkouts",
        "PUT",
        "checkouts/b490a9220cd14d7344024f4874f640a6.json",
    ),
    // Draft orders.
    ("read_draft_orders", "GET", "draft_orders.json"),
    ("read_draft_orders", "GET", "draft_orders/994118539.json"),
    (
        "write_draft_orders",
        "PUT",
        "draft_orders/994118539/complete.json",
    ),
    // Products, variants, images, collects, collections.
    ("read_products", "GET", "products.json"),
    ("read_products", "GET", "products/632910392/variants.json"),
    (
        "read_products",
        "GET",
        "products/632910392/images/850703190.json",
    ),
    ("read_products", "GET", "variants/808950810.json"),
    ("read_products", "GET", "collects.json"),
    ("read_products", "GET", "custom_collections.json"),
    ("read_products", "GET", "smart_collections/482865238.json"),
    (
        "read_products",
        "GET",
        "collections/841564295/products.json",
    ),
    ("write_products", "POST", "products.json"),
    ("write_products", "PUT", "variants/808950810.json"),
    (
        "write_products",
        "DELETE",
        "custom_collections/841564295.json",
    ),
    (
        "write_products",
        "PUT",
        "smart_collections/482865238/order.json",
    ),
    // Customers and saved searches.
    ("read_customers", "GET", "customers.json"),
    (
        "read_customers",
        "GET",
        "customers/207119551/addresses.json",
    ),
    ("read_customers", "GET", "customer_saved_searches.json"),
    ("write_customers", "POST", "customers.json"),
    (
        "write_customers",
        "PUT",
        "customers/207119551/addresses/1053317291/default.json",
    ),
    // Inventory.
    ("read_inventory", "GET", "inventory_levels.json"),
    ("read_inventory", "GET", "inventory_items/808950810.json"),
    ("write_inventory", "POST", "inventory_levels/set.json"),
    ("write_inventory", "POST", "inventory_levels/adjust.json"),
    ("write_inventory", "PUT", "inventory_items/808950810.json"),
    // Locations (read-only in REST).
    ("read_locations", "GET", "locations.json"),
    (
        "read_locations",
        "GET",
        "locations/487838322/inventory_levels.json",
    ),
    // Fulfillment services.
    ("read_fulfillments", "GET", "fulfillment_services.json"),
    ("write_fulfillments", "POST", "fulfillment_services.json"),
    (
        "write_fulfillments",
        "DELETE",
        "fulfillment_services/755357713.json",
    ),
    // Fulfillment orders: any one of the fulfillment-order scopes.
    (
        "read_assigned_fulfillment_orders",
        "GET",
        "fulfillment_orders/1046000778.json",
    ),
    (
        "read_merchant_managed_fulfillment_orders",
        "GET",
        "orders/450789469/fulfillment_orders.json",
    ),
    (
        "read_third_party_fulfillment_orders",
        "GET",
        "fulfillment_orders/1046000778/locations_for_move.json",
    ),
    (
        "read_marketplace_fulfillment_orders",
        "GET",
        "fulfillment_orders/1046000778.json",
    ),
    (
        "write_assigned_fulfillment_orders",
        "POST",
        "fulfillment_orders/1046000778/fulfillment_request.json",
    ),
    (
        "write_merchant_managed_fulfillment_orders",
        "POST",
        "fulfillment_orders/1046000778/hold.json",
    ),
    (
        "write_third_party_fulfillment_orders",
        "POST",
        "fulfillment_orders/1046000778/move.json",
    ),
    // Price rules and discount codes.
    ("read_price_rules", "GET", "price_rules.json"),
    (
        "read_price_rules",
        "GET",
        "price_rules/507328175/discount_codes.json",
    ),
    ("read_price_rules", "GET", "discount_codes/lookup.json"),
    ("write_price_rules", "POST", "price_rules.json"),
    (
        "write_price_rules",
        "POST",
        "price_rules/507328175/discount_codes.json",
    ),
    // Themes and assets.
    ("read_themes", "GET", "themes.json"),
    ("read_themes", "GET", "themes/828155753/assets.json"),
    ("write_themes", "PUT", "themes/828155753/assets.json"),
    ("write_themes", "DELETE", "themes/828155753.json"),
    // Script tags.
    ("read_script_tags", "GET", "script_tags.json"),
    ("read_script_tags", "GET", "script_tags/421379493.json"),
    ("write_script_tags", "POST", "script_tags.json"),
    // Shipping.
    ("read_shipping", "GET", "carrier_services.json"),
    ("read_shipping", "GET", "countries/879921427/provinces.json"),
    ("read_shipping", "GET", "shipping_zones.json"),
    ("write_shipping", "POST", "carrier_services.json"),
    (
        "write_shipping",
        "PUT",
        "countries/879921427/provinces/224293623.json",
    ),
    // Online store content.
    ("read_content", "GET", "blogs.json"),
    ("read_content", "GET", "blogs/241253187/articles.json"),
    ("read_content", "GET", "articles/authors.json"),
    ("read_content", "GET", "comments.json"),
    ("read_content", "GET", "pages.json"),
    ("read_content", "GET", "redirects.json"),
    ("write_content", "POST", "blogs/241253187/articles.json"),
    ("write_content", "POST", "comments/118373535/approve.json"),
    ("write_content", "POST", "pages.json"),
    ("write_content", "POST", "redirects.json"),
    ("read_online_store_pages", "GET", "pages/131092082.json"),
    (
        "read_online_store_navigation",
        "GET",
        "redirects/668809255.json",
    ),
    (
        "write_online_store_navigation",
        "PUT",
        "redirects/668809255.json",
    ),
    // Gift cards.
    ("read_gift_cards", "GET", "gift_cards.json"),
    ("read_gift_cards", "GET", "gift_cards/search.json"),
    (
        "write_gift_cards",
        "POST",
        "gift_cards/1035197676/disable.json",
    ),
    // Marketing events.
    ("read_marketing_events", "GET", "marketing_events.json"),
    (
        "write_marketing_events",
        "POST",
        "marketing_events/998730532/engagements.json",
    ),
    // Sales-channel listings.
    ("read_product_listings", "GET", "product_listings.json"),
    (
        "read_product_listings",
        "GET",
        "collection_listings/482865238/product_ids.json",
    ),
    (
        "write_product_listings",
        "PUT",
        "product_listings/921728736.json",
    ),
    // Reports.
    ("read_reports", "GET", "reports.json"),
    ("write_reports", "POST", "reports.json"),
    // Resource feedback.
    ("read_resource_feedbacks", "GET", "resource_feedback.json"),
    (
        "write_resource_feedbacks",
        "POST",
        "products/632910392/resource_feedback.json",
    ),
    // Users, policies, Shopify Payments (read-only).
    ("read_users", "GET", "users.json"),
    ("read_users", "GET", "users/current.json"),
    ("read_legal_policies", "GET", "policies.json"),
    (
        "read_shopify_payments_payouts",
        "GET",
        "shopify_payments/payouts.json",
    ),
    (
        "read_shopify_payments_payouts",
        "GET",
        "shopify_payments/balance/transactions.json",
    ),
    (
        "read_shopify_payments_disputes",
        "GET",
        "shopify_payments/disputes/598735659.json",
    ),
    (
        "read_shopify_payments_dispute_evidences",
        "GET",
        "shopify_payments/disputes/598735659/dispute_evidences.json",
    ),
];

/// Scopes that only have GraphQL objects, plus one of each REST family: each alone opens
/// `POST /admin/api/{version}/graphql.json`.
const ADMIN_GRAPHQL: &[&str] = &[
    "read_cart_transforms",
    "write_cart_transforms",
    "read_checkout_branding_settings",
    "read_customer_merge",
    "read_customer_events",
    "write_pixels",
    "read_customer_payment_methods",
    "read_delivery_customizations",
    "read_discounts",
    "write_discounts",
    "read_files",
    "write_files",
    "read_locales",
    "read_markets",
    "read_merchant_approval_signals",
    "read_metaobject_definitions",
    "read_metaobjects",
    "read_order_edits",
    "read_own_subscription_contracts",
    "write_own_subscription_contracts",
    "read_payment_customizations",
    "read_payment_gateways",
    "write_payment_gateways",
    "read_payment_mandate",
    "write_payment_sessions",
    "read_payment_terms",
    "read_privacy_settings",
    "read_publications",
    "read_purchase_options",
    "read_returns",
    "read_store_credit_accounts",
    "read_store_credit_account_transactions",
    "read_translations",
    "read_validations",
    "read_orders",
    "write_products",
];

const STOREFRONT: &[&str] = &[
    "unauthenticated_read_checkouts",
    "unauthenticated_write_checkouts",
    "unauthenticated_read_customers",
    "unauthenticated_write_customers",
    "unauthenticated_read_customer_tags",
    "unauthenticated_read_content",
    "unauthenticated_read_metaobjects",
    "unauthenticated_read_product_inventory",
    "unauthenticated_read_product_listings",
    "unauthenticated_read_product_pickup_locations",
    "unauthenticated_read_product_tags",
    "unauthenticated_read_selling_plans",
];

const CUSTOMER_ACCOUNT: &[&str] = &[
    "customer_read_customers",
    "customer_write_customers",
    "customer_read_orders",
    "customer_write_orders",
    "customer_read_draft_orders",
    "customer_read_markets",
    "customer_read_store_credit_accounts",
    "customer_read_own_subscription_contracts",
    "customer_write_own_subscription_contracts",
    "customer_write_subscription_contracts",
    "customer_read_companies",
    "customer_write_companies",
    "customer_read_locations",
    "customer_write_locations",
];

async fn harness(extra: &str) -> Harness {
    Harness::new(ROUTES)
        .toml(SETTINGS)
        .toml(extra)
        .start()
        .await
}

fn client_for(scope: &str) -> &'static str {
    if NEEDS_APPROVAL.contains(&scope) {
        APPROVED
    } else {
        OTHER_APP
    }
}

/// The space-separated names in `scope="..."` of a 403's `WWW-Authenticate`.
fn needed(reply: &common::Reply) -> Vec<String> {
    let header = reply.header("www-authenticate");
    assert!(header.contains(r#"error="insufficient_scope""#), "{header}");
    let start = header.find("scope=\"").expect("scope=") + 7;
    let end = start + header[start..].find('"').unwrap();
    header[start..end].split(' ').map(str::to_owned).collect()
}

/// A Shopify-style refusal: `{"errors": "[API] ..."}` and nothing else.
fn assert_shopify_body(reply: &common::Reply) {
    let body = reply.json();
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("{:?}", reply.body));
    assert_eq!(object.len(), 1, "{body}");
    let errors = body["errors"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert!(errors.starts_with("[API] "), "{errors}");
}

async fn send(h: &Harness, method: &str, path: &str, scope: &str, client: &str) -> common::Reply {
    let token = h.token(json!({"scope": scope, "client_id": client}));
    h.send(Version::H1, method, path, Some(&token), &[]).await
}

/// Asserts 200 and forwarded for `scope`, then 403 naming `scope` for `wrong`.
async fn allow_then_deny(h: &Harness, scope: &str, method: &str, path: &str, wrong: &str) {
    allow_then_deny_naming(h, scope, method, path, wrong, scope).await
}

/// On `any_scopes` endpoints that list only `read_X` (write_X is admitted because it implies
/// read_X), the 403 names `read_X` for a write_X holder.
fn listed_name(scope: &str) -> String {
    let implied = scope.replacen("write_", "read_", 1);
    // The preset's `[scopes.implies]` line for this scope, if any.
    if ROUTES.contains(&format!("\n{scope} = [\"{implied}\"]\n")) {
        implied
    } else {
        scope.to_owned()
    }
}

async fn allow_then_deny_naming(
    h: &Harness,
    scope: &str,
    method: &str,
    path: &str,
    wrong: &str,
    named: &str,
) {
    let before = h.upstream.count();
    let reply = send(h, method, path, scope, client_for(scope)).await;
    assert_eq!(reply.status, StatusCode::OK, "{scope} {method} {path}");
    assert_eq!(h.upstream.count(), before + 1, "{scope} {method} {path}");
    let seen = h.upstream.last();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), (method, path));

    let reply = send(h, method, path, wrong, APPROVED).await;
    assert_eq!(
        reply.status,
        StatusCode::FORBIDDEN,
        "{wrong} on {method} {path}"
    );
    let names = needed(&reply);
    assert!(
        names.iter().any(|n| n == named),
        "{method} {path}: scope={names:?} should name {named}"
    );
    assert_shopify_body(&reply);
    assert_eq!(h.upstream.count(), before + 1, "a 403 is never forwarded");
}

#[tokio::test]
async fn every_rest_scope_admits_its_holder_and_refuses_siblings() {
    let h = harness("").await;
    for &(scope, method, rest) in REST {
        let path = format!("/admin/api/2024-10/{rest}");
        // Sibling: write_X is refused with read_X. read_X has no sibling that lacks it (write_X
        // implies it), so an unrelated scope is used.
        let wrong = match scope.strip_prefix("write_") {
            Some(object) => format!("read_{object}"),
            None if scope == "read_products" => "read_orders".to_owned(),
            None => "read_products".to_owned(),
        };
        allow_then_deny(&h, scope, method, &path, &wrong).await;
        // write_X implies read_X.
        if let Some(object) = scope.strip_prefix("read_") {
            let writer = format!("write_{object}");
            if REST.iter().any(|(s, _, _)| *s == writer) {
                let reply = send(&h, method, &path, &writer, OTHER_APP).await;
                assert_eq!(reply.status, StatusCode::OK, "{writer} implies {scope}");
            }
        }
    }
}

#[tokio::test]
async fn rest_single_scope_routes_name_exactly_their_scope() {
    let h = harness("").await;
    let reply = send(
        &h,
        "POST",
        "/admin/api/2025-01/products.json",
        "read_products",
        OTHER_APP,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.header("www-authenticate"),
        r#"Bearer realm="test", error="insufficient_scope", scope="write_products""#
    );
    // Read-only REST resources answer 405 to writes, with Allow.
    for path in [
        "locations.json",
        "users.json",
        "policies.json",
        "shopify_payments/payouts.json",
    ] {
        let reply = send(
            &h,
            "POST",
            &format!("/admin/api/2024-10/{path}"),
            "write_locations",
            OTHER_APP,
        )
        .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert!(reply.header("allow").contains("GET"), "{path}");
    }
    // Unknown REST resources are not routed.
    let reply = send(
        &h,
        "GET",
        "/admin/api/2024-10/no_such_thing.json",
        "read_orders",
        OTHER_APP,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn graphql_admin_endpoint_admits_any_authenticated_scope() {
    let h = harness("").await;
    let path = "/admin/api/2024-10/graphql.json";
    // Every scope the route lists, each alone, plus the write_ scopes admitted through their
    // read_ sibling.
    let file: toml::Value = toml::from_str(ROUTES).unwrap();
    let listed: Vec<String> = file["route"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"].as_str() == Some("/admin/api/{version}/graphql.json"))
        .unwrap()["POST"]["any_scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(listed.len() >= 50, "{}", listed.len());
    let scopes = listed
        .iter()
        .map(String::as_str)
        .chain(ADMIN_GRAPHQL.iter().copied());
    for scope in scopes {
        allow_then_deny_naming(
            &h,
            scope,
            "POST",
            path,
            "unauthenticated_read_product_listings",
            &listed_name(scope),
        )
        .await;
    }
    // A storefront or customer-account scope is no admin scope.
    for wrong in ["customer_read_orders", "read_all_orders"] {
        let reply = send(&h, "POST", path, wrong, APPROVED).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{wrong}");
    }
}

#[tokio::test]
async fn storefront_endpoint_needs_an_unauthenticated_scope() {
    let h = harness("").await;
    let path = "/api/2024-10/graphql.json";
    for &scope in STOREFRONT {
        allow_then_deny_naming(
            &h,
            scope,
            "POST",
            path,
            "read_products",
            &listed_name(scope),
        )
        .await;
    }
    let reply = send(&h, "POST", path, "customer_read_customers", OTHER_APP).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        needed(&reply).len(),
        STOREFRONT.iter().filter(|s| s.contains("_read_")).count(),
        "every unauthenticated read scope is named"
    );
    let reply = send(&h, "GET", path, "unauthenticated_read_content", OTHER_APP).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn customer_account_endpoint_needs_a_customer_scope() {
    let h = harness("").await;
    let path = "/customer/api/2025-01/graphql";
    for &scope in CUSTOMER_ACCOUNT {
        allow_then_deny_naming(
            &h,
            scope,
            "POST",
            path,
            "unauthenticated_read_customers",
            &listed_name(scope),
        )
        .await;
    }
    let reply = send(&h, "POST", path, "read_customers", OTHER_APP).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // The subscription-contract scopes are protected: unapproved clients hold them in vain.
    let reply = send(
        &h,
        "POST",
        path,
        "customer_read_own_subscription_contracts",
        OTHER_APP,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.json()["errors"]
            .as_str()
            .unwrap()
            .contains("not approved"),
        "{:?}",
        reply.json()
    );
}

#[tokio::test]
async fn read_all_orders_counts_only_for_approved_clients_with_an_orders_scope() {
    let h = harness("").await;
    let archive = "/admin/api/2024-10/orders/archived.json";
    for scopes in [
        "read_orders read_all_orders",
        "write_orders read_all_orders",
    ] {
        let reply = send(&h, "GET", archive, scopes, APPROVED).await;
        assert_eq!(reply.status, StatusCode::OK, "{scopes}");
        assert_eq!(h.upstream.last().path, archive);
    }
    let forwarded = h.upstream.count();

    // An unapproved client holds read_all_orders in vain.
    let reply = send(&h, "GET", archive, "read_orders read_all_orders", OTHER_APP).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_shopify_body(&reply);
    assert!(
        reply.json()["errors"]
            .as_str()
            .unwrap()
            .contains("not approved"),
        "{:?}",
        reply.json()
    );

    // read_all_orders alone, or read_orders alone, is not enough, even when approved; the
    // archive path is not mistaken for an order id.
    for scopes in ["read_all_orders", "read_orders"] {
        let reply = send(&h, "GET", archive, scopes, APPROVED).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{scopes}");
        assert_eq!(needed(&reply), ["read_orders", "read_all_orders"]);
    }
    // read_all_orders opens no ordinary orders endpoint on its own.
    let reply = send(
        &h,
        "GET",
        "/admin/api/2024-10/orders.json",
        "read_all_orders",
        APPROVED,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(h.upstream.count(), forwarded);
}

#[tokio::test]
async fn protected_customer_payment_methods_scope_needs_approval() {
    let h = harness("").await;
    let path = "/admin/api/2024-10/graphql.json";
    for scope in [
        "read_customer_payment_methods",
        "read_own_subscription_contracts",
        "write_own_subscription_contracts",
    ] {
        assert_eq!(
            send(&h, "POST", path, scope, APPROVED).await.status,
            StatusCode::OK,
            "{scope}"
        );
        let reply = send(&h, "POST", path, scope, OTHER_APP).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{scope}");
        assert_shopify_body(&reply);
    }
}

#[tokio::test]
async fn refusals_use_the_shopify_error_body() {
    let h = harness("").await;
    let reply = send(
        &h,
        "GET",
        "/admin/api/2024-10/orders.json",
        "read_products",
        OTHER_APP,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.header("content-type").starts_with("application/json"),
        "{}",
        reply.header("content-type")
    );
    assert_eq!(reply.header("cache-control"), "no-store");
    assert_shopify_body(&reply);
    assert!(
        reply.json()["errors"]
            .as_str()
            .unwrap()
            .contains("read_orders")
    );

    let reply = h.get("/admin/api/2024-10/orders.json", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), r#"Bearer realm="test""#);
    assert_shopify_body(&reply);
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn admin_access_token_header_reaches_an_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let token = "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00";
    let hash: String = scopegate::credentials::cache::hash_token(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = dir.path().join("tokens.toml");
    std::fs::write(
        &file,
        format!("[[token]]\nsha256 = \"{hash}\"\nscope = \"write_products read_orders\"\nclient_id = \"custom-app\"\ntoken_type = \"shopify_admin\"\n"),
    )
    .unwrap();
    let extra = format!(
        "[opaque]\nstatic_tokens_file = {}\n",
        toml::Value::from(file.display().to_string())
    );
    let h = harness(&extra).await;
    let header = |t: &'static str| [("x-shopify-access-token", t)];

    let reply = h
        .send(
            Version::H1,
            "GET",
            "/admin/api/2024-10/products/632910392.json",
            None,
            &header(token),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = h.upstream.last();
    assert_eq!(seen.headers["x-scopegate-token-kind"], "shopify_admin");
    assert_eq!(seen.headers["x-scopegate-client"], "custom-app");
    let reply = h
        .send(
            Version::H2,
            "POST",
            "/admin/api/2024-10/products.json",
            None,
            &header(token),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // The same token lacks write_orders.
    let reply = h
        .send(
            Version::H1,
            "POST",
            "/admin/api/2024-10/orders.json",
            None,
            &header(token),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(needed(&reply), ["write_orders"]);
    assert_shopify_body(&reply);

    // An unknown opaque token is refused.
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/admin/api/2024-10/products.json",
            None,
            &header("shpat_unknown"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.upstream.count(), 2);
}

#[test]
fn the_rest_table_covers_every_scope_the_rest_routes_require() {
    let file: toml::Value = toml::from_str(ROUTES).unwrap();
    let mut required = std::collections::BTreeSet::new();
    for route in file["route"].as_array().unwrap() {
        let path = route["path"].as_str().unwrap();
        if !path.starts_with("/admin/api/") || path.ends_with("/graphql.json") {
            continue;
        }
        for (key, rule) in route.as_table().unwrap() {
            if ["path", "below"].contains(&key.as_str()) {
                continue;
            }
            for list in ["scopes", "any_scopes"] {
                for scope in rule
                    .get(list)
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                {
                    required.insert(scope.as_str().unwrap().to_owned());
                }
            }
        }
    }
    // read_all_orders only counts together with read_orders; it has its own test.
    required.remove("read_all_orders");
    let tested: std::collections::BTreeSet<String> =
        REST.iter().map(|(s, _, _)| (*s).to_owned()).collect();
    let missing: Vec<_> = required.difference(&tested).collect();
    assert!(
        missing.is_empty(),
        "REST scopes without a test case: {missing:?}"
    );
    assert!(required.len() >= 40, "{}", required.len());
}
