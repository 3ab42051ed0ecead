//! `scopegate explain`: the decision and its reasons for a request, nothing sent upstream.

mod common;

use std::process::Command;

use common::Harness;
use serde_json::json;

const PRESET: &str = include_str!("../routes/elastic-path.toml");

fn explain(h: &Harness, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .arg("explain")
        .arg("--config")
        .arg(h.dir.path().join("scopegate.toml"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_route_needs_holdings_and_decision_without_forwarding() {
    let h = Harness::start(PRESET).await;
    let marketing = h.token(
        json!({"token_type": "client_credentials", "role": "marketing-sales", "client_id": "mkt"}),
    );
    let (code, out) = tokio::task::block_in_place(|| {
        explain(&h, &["--token", &marketing, "GET", "/v2/customers/c-1"])
    });
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("route        /v2/customers/{*rest}"), "{out}");
    assert!(
        out.contains("routes/test.toml:") && out.contains("preset elastic-path"),
        "{out}"
    );
    assert!(
        out.contains(
            "needs        implicit-with-customer-token seller-admin basic support ecommerce-admin"
        ),
        "{out}"
    );
    assert!(
        out.contains("credentials  kind=client_credentials roles=marketing-sales client=mkt"),
        "{out}"
    );
    assert!(
        out.contains("decision     DENY 403 forbidden (insufficient_scope)"),
        "{out}"
    );

    let admin = h.token(json!({"token_type": "client_credentials", "role": "seller-admin"}));
    let (code, out) = tokio::task::block_in_place(|| {
        explain(&h, &["--token", &admin, "GET", "//v2/%63ustomers"])
    });
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("decision     ALLOW: would forward GET /v2/customers"),
        "{out}"
    );

    // Both name the same store: a companion is bound to its bearer token's store, and two
    // tokens without one are bound to nothing (see `elastic_path_conformance.rs`).
    let implicit = h.token(json!({"token_type": "implicit", "store_id": "store-1"}));
    let customer = h.token(json!({"token_type": "customer", "store_id": "store-1"}));
    let header = format!("X-Moltin-Customer-Token: {customer}");
    let (code, out) = tokio::task::block_in_place(|| {
        explain(
            &h,
            &[
                "--token",
                &implicit,
                "--header",
                &header,
                "POST",
                "/v2/customers",
            ],
        )
    });
    assert_eq!(code, Some(0), "{out}");

    let (code, out) = tokio::task::block_in_place(|| explain(&h, &["GET", "/v2/../admin"]));
    assert_eq!(code, Some(1));
    assert!(
        out.contains("decision     DENY 400 bad_request (path_dot_segment)"),
        "{out}"
    );
    let (_, out) = tokio::task::block_in_place(|| {
        explain(&h, &["--token", "garbage", "GET", "/v2/customers"])
    });
    assert!(
        out.contains("DENY 401 invalid_token (token_malformed)"),
        "{out}"
    );
    assert!(
        !out.contains("garbage"),
        "explain never prints the token: {out}"
    );

    assert_eq!(h.upstream.count(), 0, "explain never contacts the upstream");
}

#[test]
fn the_example_config_loads_and_explains() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The example uses the demo material, created as `scopegate demo` would.
    let material = scopegate::demo::material::ensure(&root.join("certs/dev")).unwrap();
    let signer = scopegate::mint::Signer::demo(&material.signing_key).unwrap();
    let token = signer
        .sign(&scopegate::mint::with_demo_defaults(json!({"token_type": "implicit"}), 600).unwrap())
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .current_dir(root)
        .args([
            "explain",
            "--config",
            "deploy/scopegate.example.toml",
            "--token",
            &token,
            "GET",
            "/v2/customers",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("DENY 403 forbidden (insufficient_scope)"),
        "{text}"
    );
}

const SHADOW: &str = r#"
[preset]
name = "shadow"

[[route]]
path = "/new/orders"
read = { scopes = ["read_orders"] }
enforce = false
"#;

/// A shadow route (`enforce = false`): live traffic forwards a denied request and counts it
/// `would_deny`; explain says the same, and exits 0 because the request would be forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_live_traffic_agree_on_a_shadow_route() {
    let h = Harness::start(SHADOW).await;
    let token = h.token(json!({"scope": "read_products"}));

    let reply = h.get("/new/orders", Some(&token)).await;
    assert_eq!(reply.status, http::StatusCode::OK, "shadow mode forwards");
    assert_eq!(h.upstream.count(), 1);
    assert_eq!(h.upstream.last().path, "/new/orders");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"scopegate_requests_total{decision="would_deny",method="GET",route="/new/orders"} 1"#
        ),
        "{metrics}"
    );

    let (code, out) =
        tokio::task::block_in_place(|| explain(&h, &["--token", &token, "GET", "/new/orders"]));
    let decision = out
        .lines()
        .find(|l| l.starts_with("decision"))
        .unwrap_or_else(|| panic!("no decision line:\n{out}"));
    assert!(
        decision.contains("WOULD_DENY"),
        "live traffic forwarded this request as would_deny; explain said `{decision}`:\n{out}"
    );
    assert_eq!(
        decision,
        "decision     WOULD_DENY 403 forbidden (insufficient_scope): would forward GET /new/orders",
        "{out}"
    );
    assert_eq!(
        code,
        Some(0),
        "explain exits 0 for a request that would be forwarded:\n{out}"
    );
    assert_eq!(h.upstream.count(), 1, "explain never contacts the upstream");
}
