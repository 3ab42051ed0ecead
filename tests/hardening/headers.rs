//! Header names and values as an attacker writes them (issue "Hardening, round 2"): spellings
//! an upstream reads as another name, client-address headers, a `Connection` that names what
//! matters, HTTP/1.0 without `Host`, claim values that would read as two, HTTP/2 cookie crumbs.
//! The recording upstream's log is the assertion.

use serde_json::json;

use super::common::{Harness, TEST_ROUTES, Version, set};
use super::{raw, status_of};

/// A plaintext proxy with `[forwarding] underscore_headers = mode`.
async fn with_mode(mode: &'static str) -> Harness {
    Harness::new(TEST_ROUTES)
        .plaintext()
        .config(move |t| set(t, "forwarding.underscore_headers", mode))
        .start()
        .await
}

/// `GET path` with the bearer token and `lines` (each `Name: value\r\n`), closing after.
fn get(path: &str, token: &str, lines: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n{lines}Connection: close\r\n\r\n"
    )
}

/// A header name as CGI, WSGI, Rack and PHP read it.
fn normalised(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '.'], "-")
}

/// The header names the upstream saw that, read as it reads them, are one scopegate strips from
/// clients, other than the ones scopegate set itself.
fn smuggled(seen: &http::HeaderMap) -> Vec<String> {
    let set_by_scopegate = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-scopegate-scopes",
        "x-scopegate-route",
    ];
    let stripped = [
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
        "x-original-forwarded-for",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-shopify-access-token",
        "x-moltin-customer-token",
    ];
    seen.keys()
        .map(|k| k.as_str())
        .filter(|k| !set_by_scopegate.contains(k))
        .filter(|k| {
            let n = normalised(k);
            n.starts_with("x-scopegate-")
                || n.starts_with("x-forwarded-")
                || stripped.contains(&n.as_str())
        })
        .map(str::to_owned)
        .collect()
}

/// The default (`drop`): `X_Scopegate_Role: seller-admin` would reach a CGI/WSGI/Rack/PHP
/// upstream as `HTTP_X_SCOPEGATE_ROLE`, a role the token never held. Every name with `_` or `.`
/// is gone before the decision, so the upstream sees exactly the headers that were judged.
#[tokio::test]
async fn names_with_underscores_or_dots_are_dropped_before_the_decision() {
    let h = with_mode("drop").await;
    let token = h.token(json!({"scope": "read_orders"}));
    let lines = "X_Scopegate_Role: seller-admin\r\nX.Scopegate.Subject: root\r\n\
                 X_Forwarded_For: 10.0.0.1\r\nX_Shopify_Access_Token: stolen\r\n\
                 X_Request_Id: 7\r\nX-Request-Id: 8\r\n";
    let (response, _) = raw(
        h.running.proxy_addr,
        get("/shop/orders", &token, lines).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = h.upstream.last();
    let odd: Vec<&str> = seen
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.contains(['_', '.']))
        .collect();
    assert!(odd.is_empty(), "reached the upstream: {odd:?}");
    assert!(seen.headers.get("x-scopegate-role").is_none());
    assert!(seen.headers.get("x-scopegate-subject").is_none());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-request-id"], "8");
    // The decision never saw them either: a platform token header spelled with `_` is no
    // credential, and nothing is forwarded.
    let before = h.upstream.count();
    let bytes = "GET /shop/orders HTTP/1.1\r\nHost: localhost\r\nX_Shopify_Access_Token: t\r\nConnection: close\r\n\r\n";
    let (response, _) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
    assert_eq!(status_of(&response), 401, "{response}");
    assert_eq!(h.upstream.count(), before);
}

/// `reject`: any such name is a 400 `header_name_underscore`, never forwarded.
#[tokio::test]
async fn reject_mode_refuses_a_name_with_an_underscore_or_dot() {
    let h = with_mode("reject").await;
    let token = h.token(json!({"scope": "read_orders"}));
    for line in ["X_Scopegate_Role: seller-admin\r\n", "X.Custom: 1\r\n"] {
        let (response, _) = raw(
            h.running.proxy_addr,
            get("/shop/orders", &token, line).as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), 400, "{line}: {response}");
        assert!(response.contains("header_name_underscore"), "{response}");
    }
    assert_eq!(h.upstream.count(), 0, "a refused name reached the upstream");
    let (response, _) = raw(
        h.running.proxy_addr,
        get("/shop/orders", &token, "X-Custom: 1\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"scopegate_denials_total{reason="header_name_underscore"} 2"#),
        "{metrics}"
    );
}

/// `allow`: such names pass, but every strip list is applied to the name as the upstream reads
/// it, so no spelling of an identity, forwarding, client-address, method-override or credential
/// header gets through.
#[tokio::test]
async fn allow_mode_still_strips_every_spelling_of_a_stripped_header() {
    let h = with_mode("allow").await;
    let token = h.token(json!({"scope": "read_orders"}));
    let lines = "X_Scopegate_Role: seller-admin\r\nX.Scopegate.Scopes: write_everything\r\n\
                 x_scopegate_anything: 1\r\nX.Forwarded.For: 10.0.0.1\r\n\
                 X_Forwarded_Host: evil.example\r\nX_Forwarded_Proto: https\r\nX_Real_IP: 10.0.0.1\r\n\
                 X_Original_URL: /shop/customers/7\r\nX_HTTP_Method_Override: DELETE\r\n\
                 X_Shopify_Access_Token: stolen\r\nX.Moltin.Customer.Token: stolen\r\n\
                 X_Request_Id: 7\r\n";
    let (response, _) = raw(
        h.running.proxy_addr,
        get("/shop/orders", &token, lines).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = h.upstream.last();
    assert_eq!(smuggled(&seen.headers), Vec::<String>::new());
    assert_eq!(seen.headers["x_request_id"], "7", "allowed names pass");
    assert_eq!(seen.headers["x-scopegate-scopes"], "read_orders");
    assert!(seen.headers.get("x-scopegate-role").is_none());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-host"], "localhost");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.method, "GET");
}

/// Headers an upstream may take for the client's address, scheme or path (IIS routes on
/// `X-Original-URL` and `X-Rewrite-URL`) are never passed on; scopegate's own `X-Forwarded-*`
/// replace the client's.
#[tokio::test]
async fn client_address_headers_never_reach_the_upstream() {
    let h = with_mode("drop").await;
    let token = h.token(json!({"scope": "read_orders"}));
    let lines: String = [
        "X-Real-IP",
        "True-Client-IP",
        "X-Client-IP",
        "X-Cluster-Client-IP",
        "CF-Connecting-IP",
        "Fastly-Client-IP",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X-Forwarded-Server",
        "X-Forwarded-Scheme",
        "X-Forwarded-Uri",
        "X-Forwarded-Ssl",
        "X-Original-Forwarded-For",
        "X-Original-URL",
        "X-Rewrite-URL",
        "Forwarded",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
    ]
    .iter()
    .map(|name| format!("{name}: /shop/customers/7\r\n"))
    .collect();
    let (response, _) = raw(
        h.running.proxy_addr,
        get("/shop/orders/1", &token, &lines).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = h.upstream.last();
    assert_eq!(smuggled(&seen.headers), Vec::<String>::new());
    assert_eq!(seen.path, "/shop/orders/1");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "localhost");
}

/// `Connection: Authorization` would have the decision made on a header the upstream never
/// sees (hop-by-hop names are removed before forwarding); the same for `Host`, the framing and
/// cookie headers, identity, forwarding and credential headers. Refused, not obeyed.
#[tokio::test]
async fn connection_naming_a_protected_header_is_refused() {
    let h = with_mode("drop").await;
    let token = h.token(json!({"scope": "read_orders"}));
    let named = [
        "Authorization",
        "keep-alive, Host",
        "Content-Length",
        "Content-Type",
        "Cookie",
        "X-Scopegate-Role",
        "x-scopegate-anything",
        "X_Scopegate_Subject",
        "Forwarded",
        "X-Forwarded-For",
        "x.forwarded.host",
        "X-Shopify-Access-Token",
        "X-Moltin-Customer-Token",
        "EP-Account-Management-Authentication-Token",
    ];
    for value in named {
        let lines = format!("Connection: {value}\r\nCookie: a=1\r\nContent-Type: text/plain\r\n");
        let (response, _) = raw(
            h.running.proxy_addr,
            get("/shop/orders", &token, &lines).as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), 400, "{value}: {response}");
        assert!(
            response.contains("connection_names_protected_header"),
            "{response}"
        );
    }
    assert_eq!(
        h.upstream.count(),
        0,
        "a request obeying Connection was forwarded"
    );
    // Hop-by-hop names stay allowed.
    let lines = "Connection: keep-alive, TE, X-Private\r\nTE: trailers\r\nX-Private: 1\r\n";
    let (response, _) = raw(
        h.running.proxy_addr,
        get("/shop/orders", &token, lines).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = h.upstream.last();
    assert!(seen.headers.get("x-private").is_none() && seen.headers.get("te").is_none());
    let metrics = h.metrics().await;
    let want = format!(
        r#"scopegate_denials_total{{reason="connection_names_protected_header"}} {}"#,
        named.len()
    );
    assert!(metrics.contains(&want), "{metrics}");
}

/// An HTTP/1.0 request without `Host` would go on as a Host-less HTTP/1.1 request: refused like
/// HTTP/1.1 without one.
#[tokio::test]
async fn http10_without_host_is_refused() {
    let h = with_mode("drop").await;
    let token = h.token(json!({"scope": "read_orders"}));
    let bare = format!("GET /shop/orders HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n");
    let (response, closed) = raw(h.running.proxy_addr, bare.as_bytes()).await;
    assert_eq!(status_of(&response), 400, "{response}");
    assert!(response.contains("missing_host"), "{response}");
    assert!(closed);
    assert_eq!(h.upstream.count(), 0, "a Host-less request was forwarded");
    let hosted = format!(
        "GET /shop/orders HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let (response, _) = raw(h.running.proxy_addr, hosted.as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert_eq!(h.upstream.last().headers["host"], "localhost");
}

/// Claims are the attacker's text when the token comes from a lax issuer: a `,` in a role
/// would read as a second role, a `%` as an escape, a space as a second scope. Each is
/// percent-encoded inside its element; only scopegate's own separators remain.
#[tokio::test]
async fn identity_values_read_one_way() {
    let h = with_mode("drop").await;
    let token = h.token(json!({
        "sub": "u%2Cadmin",
        "client_id": "app 1",
        "scope": "read_orders 100%",
        "roles": ["viewer,seller-admin", "50%"],
    }));
    let (response, _) = raw(
        h.running.proxy_addr,
        get("/shop/orders", &token, "").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = h.upstream.last();
    assert_eq!(seen.headers["x-scopegate-subject"], "u%252Cadmin");
    assert_eq!(seen.headers["x-scopegate-client"], "app%201");
    assert_eq!(seen.headers["x-scopegate-scopes"], "100%25 read_orders");
    assert_eq!(
        seen.headers["x-scopegate-role"],
        "50%25,viewer%2Cseller-admin"
    );
}

/// HTTP/2 sends each cookie as its own `cookie` field (RFC 9113 8.2.3). Over HTTP/1.1 the
/// upstream gets them joined into one `Cookie` header, never several to choose from.
#[tokio::test]
async fn http2_cookie_crumbs_reach_the_upstream_as_one_cookie_header() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let stream = h.client.connect(h.running.proxy_addr, Version::H2).await;
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    let _conn = tokio::spawn(conn);
    let request = http::Request::builder()
        .uri("https://localhost/shop/orders")
        .header("authorization", format!("Bearer {token}"))
        .header("cookie", "session=abc")
        .header("cookie", "role=viewer")
        .body(())
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let seen = h.upstream.last();
    let cookies: Vec<&str> = seen
        .headers
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["session=abc; role=viewer"]);
}
