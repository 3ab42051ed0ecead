//! The proxy end to end over real TLS: allow, deny, identity headers, upstream faults, metrics.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Behaviour, Harness, TEST_ROUTES, Upstream, Version, closed_port};
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn now() -> u64 {
    scopegate::credentials::unix_now()
}

#[tokio::test]
async fn allowed_request_reaches_upstream_with_normalised_path_and_identity() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"sub": "user-7", "client_id": "app-1", "scope": "read_orders", "token_type": "implicit"}));
    for version in [Version::H1, Version::H2] {
        let reply = h
            .send(
                version,
                "GET",
                "//shop/%6frders///42?limit=5",
                Some(&token),
                &[],
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{version:?}: {:?}",
            reply.body
        );
        assert_eq!(
            reply.version,
            if version == Version::H2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            }
        );
        let seen = h.upstream.last();
        assert_eq!(seen.path, "/shop/orders/42");
        assert_eq!(seen.query.as_deref(), Some("limit=5"));
        let header = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header("x-scopegate-subject").as_deref(), Some("user-7"));
        assert_eq!(header("x-scopegate-client").as_deref(), Some("app-1"));
        assert_eq!(header("x-scopegate-scopes").as_deref(), Some("read_orders"));
        assert_eq!(
            header("x-scopegate-token-kind").as_deref(),
            Some("implicit")
        );
        assert_eq!(
            header("x-scopegate-route").as_deref(),
            Some("/shop/orders/{*rest}")
        );
        assert_eq!(header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(header("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(header("x-forwarded-host").as_deref(), Some("localhost"));
        assert_eq!(header("host").as_deref(), Some("localhost"));
    }
    assert_eq!(h.upstream.count(), 2);
}

#[tokio::test]
async fn write_scope_implies_read_and_roles_are_forwarded() {
    let h = Harness::start(TEST_ROUTES).await;
    let writer = h.token(json!({"scope": "write_orders"}));
    assert_eq!(
        h.get("/shop/orders", Some(&writer)).await.status,
        StatusCode::OK
    );
    let admin = h.token(json!({"token_type": "client_credentials", "roles": ["seller-admin"]}));
    let reply = h.get("/shop/customers/9", Some(&admin)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.upstream.last().headers["x-scopegate-role"],
        "seller-admin"
    );
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_upstream() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let spoof = [
        ("x-scopegate-subject", "admin"),
        ("x-scopegate-scopes", "write_everything"),
        ("X-Scopegate-Role", "seller-admin"),
        ("x-scopegate-anything", "1"),
        ("x-forwarded-for", "10.0.0.1"),
        ("forwarded", "for=10.0.0.1"),
        ("connection", "x-keep-me"),
        ("x-keep-me", "hop"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
    ];
    let hop_by_hop = ["connection", "x-keep-me", "keep-alive", "proxy-connection"];
    for version in [Version::H1, Version::H2] {
        // HTTP/2 forbids connection-specific headers; send only the identity spoofs there.
        let headers: Vec<_> = spoof
            .iter()
            .copied()
            .filter(|(k, _)| version == Version::H1 || !hop_by_hop.contains(k))
            .collect();
        let reply = h
            .send(version, "GET", "/shop/orders", Some(&token), &headers)
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let seen = h.upstream.last();
        assert!(
            seen.headers.get("x-scopegate-subject").is_none(),
            "no sub claim, so no subject header"
        );
        assert_eq!(seen.headers["x-scopegate-scopes"], "read_orders");
        assert!(seen.headers.get("x-scopegate-role").is_none());
        assert!(seen.headers.get("x-scopegate-anything").is_none());
        assert!(seen.headers.get("forwarded").is_none());
        assert!(seen.headers.get("x-keep-me").is_none());
        assert!(seen.headers.get("connection").is_none());
        assert!(seen.headers.get("keep-alive").is_none());
        assert!(seen.headers.get("proxy-connection").is_none());
        assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    }
    // Even on a public route, client identity headers are stripped.
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/shop/health",
            None,
            &[("x-scopegate-subject", "root")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        h.upstream
            .last()
            .headers
            .get("x-scopegate-subject")
            .is_none()
    );
}

#[tokio::test]
async fn missing_token_is_401_without_error_code() {
    let h = Harness::start(TEST_ROUTES).await;
    for version in [Version::H1, Version::H2] {
        let reply = h.send(version, "GET", "/shop/orders", None, &[]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.header("www-authenticate"), r#"Bearer realm="test""#);
        assert_eq!(reply.header("content-type"), "application/problem+json");
        assert_eq!(reply.json()["status"], 401);
    }
    // Another scheme is not a bearer token.
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/shop/orders",
            None,
            &[("authorization", "Basic dXNlcjpwdw==")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header("www-authenticate"), r#"Bearer realm="test""#);
    assert_eq!(h.upstream.count(), 0);
}

fn sign_with(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": "scopegate-demo", "aud": "commerce-api", "exp": now() + 600, "scope": "read_orders"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token_and_never_forwarded() {
    let h = Harness::start(TEST_ROUTES).await;
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let other = EncodingKey::from_rsa_pem(other_key.serialize_pem().as_bytes()).unwrap();
    let demo_pem = std::fs::read_to_string(&h.material.signing_key).unwrap();
    let public_pem = rcgen::KeyPair::from_pem(&demo_pem)
        .unwrap()
        .public_key_pem();
    let none_token = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims(json!({})).to_string())
    );
    let cases: Vec<(&str, String)> = vec![
        ("garbage", "garbage".into()),
        ("three garbage parts", "a.b.c".into()),
        (
            "bad signature",
            sign_with(Algorithm::RS256, &other, Some("demo"), &claims(json!({}))),
        ),
        ("alg none", none_token),
        (
            "HS256 signed with the RSA public key",
            sign_with(
                Algorithm::HS256,
                &EncodingKey::from_secret(public_pem.as_bytes()),
                Some("demo"),
                &claims(json!({})),
            ),
        ),
        ("expired", h.token(claims(json!({"exp": now() - 3600})))),
        (
            "nbf in the future",
            h.token(claims(json!({"nbf": now() + 3600}))),
        ),
        ("wrong iss", h.token(claims(json!({"iss": "someone-else"})))),
        ("wrong aud", h.token(claims(json!({"aud": "another-api"})))),
        (
            "aud list without ours",
            h.token(claims(json!({"aud": ["a", "b"]}))),
        ),
        (
            "exp as a string",
            h.token(claims(json!({"exp": (now() + 600).to_string()}))),
        ),
        ("no exp", h.token(claims(json!({"exp": null})))),
        ("scope as a number", h.token(claims(json!({"scope": 7})))),
        (
            "unknown kid",
            sign_with(
                Algorithm::RS256,
                &other,
                Some("rotated-away"),
                &claims(json!({})),
            ),
        ),
    ];
    for (name, token) in &cases {
        for version in [Version::H1, Version::H2] {
            let reply = h
                .send(version, "GET", "/shop/orders", Some(token), &[])
                .await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{name} ({version:?})"
            );
            let challenge = reply.header("www-authenticate");
            assert!(
                challenge.starts_with(r#"Bearer realm="test", error="invalid_token""#),
                "{name}: {challenge}"
            );
            let body = String::from_utf8_lossy(&reply.body);
            assert!(
                !body.contains(token.as_str()),
                "{name}: body echoes the token"
            );
        }
    }
    // Empty bearer.
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/shop/orders",
            None,
            &[("authorization", "Bearer ")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("www-authenticate").contains("invalid_token"));
    assert_eq!(h.upstream.count(), 0, "no invalid token may be forwarded");
    // The token is good once its problem is fixed (the harness is not simply refusing everything).
    assert_eq!(
        h.get("/shop/orders", Some(&h.token(claims(json!({})))))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn missing_scope_is_403_naming_the_scope() {
    let h = Harness::start(TEST_ROUTES).await;
    let reader = h.token(json!({"scope": "read_orders read_products"}));
    for version in [Version::H1, Version::H2] {
        let reply = h
            .send(version, "POST", "/shop/orders", Some(&reader), &[])
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(
            reply.header("www-authenticate"),
            r#"Bearer realm="test", error="insufficient_scope", scope="write_orders""#
        );
        assert_eq!(reply.json()["scope"], "write_orders");
    }
    let nothing = h.token(json!({"scope": "read_customers"}));
    let reply = h.get("/shop/catalog", Some(&nothing)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply
            .header("www-authenticate")
            .contains(r#"scope="read_products write_products""#)
    );
    let support = h.token(json!({"token_type": "client_credentials", "role": "support"}));
    let reply = h.get("/shop/customers/1", Some(&support)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply
            .header("www-authenticate")
            .contains(r#"scope="seller-admin""#)
    );
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn no_route_is_404_and_wrong_method_is_405_and_neither_is_forwarded() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "write_orders", "token_type": "client_credentials", "role": "seller-admin"}));
    for version in [Version::H1, Version::H2] {
        for path in [
            "/",
            "/shop",
            "/shop/orders-archive",
            "/admin",
            "/shop/customers",
            "/Shop/orders",
        ] {
            let reply = h.send(version, "GET", path, Some(&token), &[]).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        }
        let reply = h
            .send(version, "DELETE", "/shop/customers/1", Some(&token), &[])
            .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(reply.header("allow"), "GET, HEAD", "HEAD is judged as GET");
        let reply = h
            .send(version, "TRACE", "/shop/orders", Some(&token), &[])
            .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(reply.header("allow"), "GET, HEAD, POST, PUT, PATCH, DELETE");
    }
    assert_eq!(h.upstream.count(), 0);
    let reply = h
        .send(Version::H1, "HEAD", "/shop/customers/1", Some(&token), &[])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "HEAD follows the GET rule");
    let other = h.token(json!({"token_type": "client_credentials", "role": "support"}));
    let reply = h
        .send(Version::H1, "HEAD", "/shop/customers/1", Some(&other), &[])
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ambiguous_targets_are_400_and_never_forwarded() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "write_orders"}));
    for path in [
        "/shop/orders/..%2f..%2fadmin",
        "/shop/orders/%2e%2e/x",
        "/shop/orders/a%00",
        "/shop/orders/%zz",
        "/shop/orders;x=1",
    ] {
        let reply = h.get(path, Some(&token)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
    }
    let two = [("authorization", "Bearer a"), ("authorization", "Bearer b")];
    let reply = h.send(Version::H1, "GET", "/shop/orders", None, &two).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn upstream_down_is_502_and_stalled_is_504() {
    let down = closed_port().await;
    let h = Harness::new(TEST_ROUTES).upstream_addr(down).start().await;
    let token = h.token(json!({"scope": "read_orders"}));
    assert_eq!(
        h.get("/shop/orders", Some(&token)).await.status,
        StatusCode::BAD_GATEWAY
    );

    let stall = Upstream::start(Behaviour::Stall).await;
    let h = Harness::new(TEST_ROUTES)
        .upstream(stall.clone())
        .start()
        .await;
    let token = h.token(json!({"scope": "read_orders"}));
    let started = std::time::Instant::now();
    let reply = h.get("/shop/orders", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        stall.count(),
        1,
        "the request did reach the stalled upstream"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"scopegate_upstream_errors_total{kind="upstream_timeout",route="/shop/orders"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_count_decisions_by_route_template_and_never_carry_paths_or_tokens() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders", "sub": "secret-subject-123"}));
    for _ in 0..3 {
        assert_eq!(
            h.get("/shop/orders/order-abc-999", Some(&token))
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_eq!(
        h.get("/shop/orders", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get("/nowhere/xyz-777", Some(&token)).await.status,
        StatusCode::NOT_FOUND
    );
    let m = h.metrics().await;
    for line in [
        r#"scopegate_requests_total{decision="allow",method="GET",route="/shop/orders/{*rest}"} 3"#,
        r#"scopegate_requests_total{decision="unauthenticated",method="GET",route="/shop/orders"} 1"#,
        r#"scopegate_requests_total{decision="no_route",method="GET",route="(none)"} 1"#,
        r#"scopegate_denials_total{reason="no_credentials"} 1"#,
        "scopegate_token_cache_hits_total 2",
        "scopegate_token_cache_misses_total 1",
        r#"scopegate_token_verifications_total{result="valid"} 1"#,
        "scopegate_token_cache_entries 1",
        r#"scopegate_config_reloads_total{result="success"} 1"#,
        r#"scopegate_open_connections{listener="https"}"#,
        "scopegate_decision_duration_seconds_count 5",
        r#"scopegate_upstream_duration_seconds_count{route="/shop/orders/{*rest}"} 3"#,
    ] {
        assert!(m.contains(line), "missing `{line}` in\n{m}");
    }
    for secret in [
        "order-abc-999",
        "xyz-777",
        "secret-subject-123",
        &token[..40],
    ] {
        assert!(!m.contains(secret), "metrics leak `{secret}`");
    }
}

#[tokio::test]
async fn method_override_headers_never_reach_upstream() {
    let h = Harness::start(TEST_ROUTES).await;
    let reader = h.token(json!({"scope": "read_orders"}));
    let overrides = [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
    ];
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/shop/orders/1",
            Some(&reader),
            &overrides,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = h.upstream.last();
    assert_eq!(seen.method, "GET");
    for (name, _) in overrides {
        assert!(seen.headers.get(name).is_none(), "{name} was forwarded");
    }
}

#[tokio::test]
async fn tokens_in_the_query_string_are_refused() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    for query in [
        format!("access_token={token}"),
        format!("limit=5&ACCESS_TOKEN={token}"),
        format!("access%5Ftoken={token}"),
    ] {
        let reply = h.get(&format!("/shop/orders?{query}"), Some(&token)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(!String::from_utf8_lossy(&reply.body).contains(&token[..20]));
    }
    assert_eq!(
        h.get("/shop/orders?token_hint=x", Some(&token))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(h.upstream.count(), 1);
}

#[tokio::test]
async fn public_routes_need_no_credentials() {
    let h = Harness::start(TEST_ROUTES).await;
    assert_eq!(h.get("/shop/health", None).await.status, StatusCode::OK);
    assert!(
        h.upstream
            .last()
            .headers
            .get("x-scopegate-scopes")
            .is_none()
    );
}
