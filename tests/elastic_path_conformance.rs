//! The Elastic Path preset against its source table: every principal x endpoint x {read, write}
//! cell of tests/elastic-path-permissions.csv (a copy of shared/reference/) is sent through the
//! proxy, and what was forwarded must be exactly what the table allows.

mod common;

use common::{Harness, Version};
use http::StatusCode;
use serde_json::json;

const TABLE: &str = include_str!("elastic-path-permissions.csv");
const PRESET: &str = include_str!("../routes/elastic-path.toml");

/// The request path for a table endpoint (SPEC: `/X` -> `/v2/X`; `/v2/`, `/catalog/`, `/pcm/`
/// as they are; `/orders` the collection, `/orders/:id` one order).
fn path_for(endpoint: &str) -> String {
    match endpoint {
        "/orders/:id" => "/v2/orders/ord-1".into(),
        e if e.starts_with("/v2/") || e.starts_with("/catalog/") || e.starts_with("/pcm/") => {
            e.into()
        }
        e => format!("/v2{e}"),
    }
}

struct Principal {
    bearer: String,
    headers: Vec<(&'static str, String)>,
}

fn principal(h: &Harness, name: &str) -> Principal {
    let implicit = || {
        h.token(json!({"token_type": "implicit", "store_id": "store-1", "client_id": "storefront"}))
    };
    match name {
        "implicit" => Principal { bearer: implicit(), headers: vec![] },
        "implicit+customer-token" => Principal {
            bearer: implicit(),
            headers: vec![(
                "x-moltin-customer-token",
                h.token(json!({"token_type": "customer", "store_id": "store-1", "sub": "cust-1"})),
            )],
        },
        "implicit+account-management-token" => Principal {
            bearer: implicit(),
            headers: vec![(
                "ep-account-management-authentication-token",
                h.token(json!({"token_type": "account_management", "store_id": "store-1", "sub": "acct-1"})),
            )],
        },
        other => {
            let role = other.strip_prefix("client_credentials:").expect("known principal");
            Principal {
                bearer: h.token(json!({"token_type": "client_credentials", "role": role, "client_id": "backend"})),
                headers: vec![],
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_of_the_table_is_enforced() {
    let h = Harness::start(PRESET).await;
    let mut rows = 0;
    let mut mismatches = Vec::new();
    for line in TABLE.lines().skip(1) {
        let cols: Vec<&str> = line.splitn(5, ',').collect();
        let [who, endpoint, read, write, _note] = cols[..] else {
            panic!("bad table line {line}")
        };
        rows += 1;
        let p = principal(&h, who);
        let headers: Vec<(&str, &str)> = p.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (method, want) in [("GET", read), ("POST", write)] {
            let mut paths = vec![path_for(endpoint)];
            if endpoint != "/orders" {
                paths.push(format!("{}/item-9", path_for(endpoint)));
            }
            for path in paths {
                let before = h.upstream.count();
                let reply = h
                    .send(Version::H1, method, &path, Some(&p.bearer), &headers)
                    .await;
                let forwarded = h.upstream.count() > before;
                let allowed = want == "allow";
                let status_ok = if allowed {
                    reply.status == StatusCode::OK
                } else {
                    reply.status == StatusCode::FORBIDDEN
                        || reply.status == StatusCode::METHOD_NOT_ALLOWED
                };
                if forwarded != allowed || !status_ok {
                    mismatches.push(format!("{who} {method} {path} ({endpoint}): table {want}, got {} forwarded={forwarded}", reply.status));
                }
            }
        }
    }
    assert_eq!(rows, 388, "the table has 388 rows (776 read/write cells)");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn companion_tokens_must_be_valid_of_their_kind_and_of_the_same_store() {
    let h = Harness::start(PRESET).await;
    let implicit = h.token(json!({"token_type": "implicit", "store_id": "store-1"}));
    let customer = h.token(json!({"token_type": "customer", "store_id": "store-1"}));
    let get = |bearer: String, headers: Vec<(&'static str, String)>| {
        let h = &h;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.send(Version::H2, "GET", "/v2/customers", Some(&bearer), &headers)
                .await
        }
    };
    assert_eq!(
        get(
            implicit.clone(),
            vec![("x-moltin-customer-token", customer.clone())]
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        get(implicit.clone(), vec![]).await.status,
        StatusCode::FORBIDDEN
    );

    // A companion token is never the bearer token, and a bearer token never a companion.
    let reply = get(customer.clone(), vec![]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("www-authenticate").contains("invalid_token"));
    let reply = get(
        implicit.clone(),
        vec![("x-moltin-customer-token", implicit.clone())],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // The account-management token does not stand in for a customer token.
    let account = h.token(json!({"token_type": "account_management", "store_id": "store-1"}));
    let reply = get(implicit.clone(), vec![("x-moltin-customer-token", account)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Another store's companion is refused without naming that store.
    let other_store = h.token(json!({"token_type": "customer", "store_id": "store-2"}));
    let reply = get(
        implicit.clone(),
        vec![("x-moltin-customer-token", other_store)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!String::from_utf8_lossy(&reply.body).contains("store-2"));
    // Garbage and expired companions.
    let reply = get(
        implicit.clone(),
        vec![("x-moltin-customer-token", "garbage".into())],
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let expired = h.token(json!({"token_type": "customer", "store_id": "store-1", "exp": 1000}));
    let reply = get(implicit, vec![("x-moltin-customer-token", expired)]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.upstream.count(), 1);
}

/// The store binding fails closed: a bearer token and a companion that both lack `store_id`
/// (or either one) are bound to no store, so they do not match (before, `None == None` let such
/// a pair through). The companion is refused as `token_companion_store_mismatch` (401).
/// Over a socket, with the upstream's log as the assertion, for both companion kinds.
#[tokio::test]
async fn companions_without_a_store_fail_closed() {
    let h = Harness::start(PRESET).await;
    let cases = [
        ("x-moltin-customer-token", "customer", "/v2/customers"),
        (
            "ep-account-management-authentication-token",
            "account_management",
            "/v2/accounts",
        ),
    ];
    for (header, kind, path) in cases {
        let with = |store: Option<&str>, kind: &str| {
            let mut claims = json!({"token_type": kind});
            if let Some(store) = store {
                claims["store_id"] = store.into();
            }
            h.token(claims)
        };
        let pairs = [
            (None, None),
            (Some("store-1"), None),
            (None, Some("store-1")),
        ];
        for (bearer, companion) in pairs {
            let before = h.upstream.count();
            let reply = h
                .request("GET", path)
                .token(&with(bearer, "implicit"))
                .header(header, &with(companion, kind))
                .send()
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{kind} {bearer:?} {companion:?}"
            );
            assert_eq!(
                reply.json()["type"],
                "urn:scopegate:problem:token_companion_store_mismatch",
                "{kind} {bearer:?} {companion:?}"
            );
            assert_eq!(
                h.upstream.count(),
                before,
                "{kind} {bearer:?} {companion:?} forwarded"
            );
        }
        // The same store on both: forwarded.
        let reply = h
            .request("GET", path)
            .token(&with(Some("store-1"), "implicit"))
            .header(header, &with(Some("store-1"), kind))
            .send()
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{kind}");
    }
    assert_eq!(h.upstream.count(), 2);
}

/// The same in-process, through the decision alone.
#[tokio::test]
async fn the_decision_binds_companions_to_a_store_that_is_named() {
    let policy = common::Policy::new(PRESET).build();
    let bare = policy.token(json!({"token_type": "implicit"}));
    let customer = policy.token(json!({"token_type": "customer"}));
    let verdict = policy
        .request("GET", "/v2/customers")
        .token(&bare)
        .header("x-moltin-customer-token", &customer)
        .verdict()
        .await;
    assert_eq!(
        (verdict.status, verdict.outcome, verdict.reason),
        (401, "invalid_token", "token_companion_store_mismatch"),
        "{verdict:?}"
    );
    let bound = policy.token(json!({"token_type": "implicit", "store_id": "s"}));
    let customer = policy.token(json!({"token_type": "customer", "store_id": "s"}));
    let verdict = policy
        .request("GET", "/v2/customers")
        .token(&bound)
        .header("x-moltin-customer-token", &customer)
        .verdict()
        .await;
    assert_eq!(verdict.status, 200, "{verdict:?}");
}
