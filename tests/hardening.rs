//! The request as an attacker writes it: raw bytes on a socket, where a client library would
//! refuse to send them. Every test holds the same line: the recording upstream sees nothing, or
//! exactly the canonical request that was judged.

mod common;
#[path = "hardening/headers.rs"]
mod headers;

use common::{Harness, TEST_ROUTES, raw, status_of};
use serde_json::json;

/// A proxy on a plaintext listener (the same HTTP stack as TLS, easier to write bytes to),
/// with `extra` merged into the serve config.
async fn plain(extra: &str) -> Harness {
    Harness::new(TEST_ROUTES)
        .plaintext()
        .toml(extra)
        .start()
        .await
}

/// Each of these would reach the upstream if framing were read loosely: all are refused, the
/// connection is closed, and nothing is forwarded.
#[tokio::test]
async fn malformed_framing_is_400_closes_the_connection_and_is_never_forwarded() {
    let h = plain("").await;
    let token = h.token(json!({"scope": "write_orders"}));
    let head = format!(
        "POST /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
    );
    let big = "a".repeat(20_000);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "differing duplicate lengths",
            format!("{head}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd"),
            400,
        ),
        (
            "length list",
            format!("{head}Content-Length: 4, 5\r\n\r\nabcd"),
            400,
        ),
        (
            "signed length",
            format!("{head}Content-Length: +4\r\n\r\nabcd"),
            400,
        ),
        (
            "hex length",
            format!("{head}Content-Length: 0x4\r\n\r\nabcd"),
            400,
        ),
        (
            "negative length",
            format!("{head}Content-Length: -1\r\n\r\n"),
            400,
        ),
        (
            "obfuscated coding",
            format!("{head}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunked not last",
            format!("{head}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunked twice in a list",
            format!("{head}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "coding header twice",
            format!(
                "{head}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "coding before chunked",
            format!("{head}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "space before colon",
            format!("{head}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "obs-fold coding",
            format!("{head}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
            400,
        ),
        (
            "obs-fold",
            format!("{head}X-Note: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
            400,
        ),
        (
            "bad chunk size",
            format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk size overflow",
            format!(
                "{head}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "chunk longer than its size",
            format!("{head}Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n"),
            400,
        ),
        (
            "h2c upgrade",
            format!(
                "{head}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 0\r\n\r\n"
            ),
            400,
        ),
        (
            "websocket upgrade",
            format!(
                "{head}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
            ),
            400,
        ),
        (
            "no Host",
            format!(
                "POST /shop/orders HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
            ),
            400,
        ),
        (
            "two Hosts",
            format!("{head}Host: other\r\nContent-Length: 0\r\n\r\n"),
            400,
        ),
        (
            "chunked in HTTP/1.0",
            format!(
                "POST /shop/orders HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
        ),
        (
            "NUL in a header",
            format!("{head}X-A: a\0b\r\nContent-Length: 0\r\n\r\n"),
            400,
        ),
        (
            "space in a header name",
            format!("{head}X A: b\r\nContent-Length: 0\r\n\r\n"),
            400,
        ),
        (
            "header too large",
            format!("{head}X-Big: {big}\r\nContent-Length: 0\r\n\r\n"),
            431,
        ),
        (
            "too many headers",
            format!("{head}{many}Content-Length: 0\r\n\r\n"),
            431,
        ),
    ];
    for (name, bytes, want) in cases {
        let (response, closed) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(status_of(&response), want, "{name}: {response}");
        assert!(closed, "{name}: connection left open");
        assert_eq!(h.upstream.count(), 0, "{name} reached the upstream");
    }
}

/// Content-Length with Transfer-Encoding: hyper frames by Transfer-Encoding, drops the length
/// and closes the connection after answering (RFC 9112 6.3). Whatever was smuggled behind the
/// first body is never parsed as a request; the upstream sees one request, re-framed.
#[tokio::test]
async fn length_and_chunked_together_cannot_smuggle_a_second_request() {
    let h = plain("").await;
    let token = h.token(json!({"scope": "write_orders"}));
    let head = format!(
        "POST /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
    );
    let smuggled = "GET /shop/customers/7 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let cl_te = format!(
        "{head}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let te_cl = format!(
        "{head}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    for (name, bytes) in [("CL.TE", cl_te), ("TE.CL", te_cl)] {
        let before = h.upstream.count();
        let (response, closed) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(
            response.matches("HTTP/1.1 ").count(),
            1,
            "{name}: {response}"
        );
        assert!(closed, "{name}: connection left open");
        assert_eq!(h.upstream.count(), before + 1, "{name}");
        let seen = h.upstream.last();
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("POST", "/shop/orders")
        );
        assert!(
            seen.headers.get("transfer-encoding").is_none(),
            "{name}: re-framed"
        );
    }
    assert!(
        h.upstream
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.path == "/shop/orders"),
        "a smuggled request reached the upstream"
    );
}

/// Pipelined requests are each judged on their own; a request in a body stays a body.
#[tokio::test]
async fn each_pipelined_request_is_authorised_on_its_own() {
    let h = plain("").await;
    let read = h.token(json!({"scope": "read_orders"}));
    let write = h.token(json!({"scope": "write_orders"}));
    let inner = "GET /shop/customers/7 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let bytes = format!(
        "GET /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {read}\r\n\r\n\
         GET /shop/orders HTTP/1.1\r\nHost: localhost\r\n\r\n\
         GET /shop/customers/7 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {read}\r\n\r\n\
         POST /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {write}\r\nContent-Length: {}\r\n\r\n{inner}\
         GET /shop/orders/9 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {read}\r\nConnection: close\r\n\r\n",
        inner.len()
    );
    let (response, _) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
    let statuses: Vec<u16> = response
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| response[i + 9..i + 12].parse().unwrap())
        .collect();
    assert_eq!(statuses, [200, 401, 403, 200, 200], "{response}");
    let seen: Vec<(String, String)> = h
        .upstream
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    let want = [
        ("GET", "/shop/orders"),
        ("POST", "/shop/orders"),
        ("GET", "/shop/orders/9"),
    ];
    assert_eq!(
        seen,
        want.map(|(m, p)| (m.to_owned(), p.to_owned())),
        "only the permitted requests, in order"
    );
}

/// Every path class of the README table, as raw request targets: either forwarded in exactly
/// one canonical form, or refused and not forwarded.
#[tokio::test]
async fn request_targets_are_forwarded_canonically_or_refused() {
    let h = plain("").await;
    let token = h.token(json!({"scope": "read_orders"}));
    let cases: &[(&str, Result<&str, u16>)] = &[
        ("/shop/orders/%41bc", Ok("/shop/orders/Abc")),
        ("/shop/orders/%7e%2D", Ok("/shop/orders/~-")),
        ("//shop///orders", Ok("/shop/orders")),
        ("/shop/orders/a%3ab", Ok("/shop/orders/a%3Ab")),
        ("/shop/orders/caf%C3%A9", Ok("/shop/orders/caf%C3%A9")),
        ("http://localhost/shop/orders/1", Ok("/shop/orders/1")),
        // The request-target grammar has no fragment: it is cut off when the target is parsed,
        // before anything is matched, and never forwarded.
        ("/shop/orders/1#/../../customers/7", Ok("/shop/orders/1")),
        ("/shop/orders/./x", Err(400)),
        ("/shop/orders/../customers/7", Err(400)),
        ("/shop/orders/%2e%2E/customers/7", Err(400)),
        ("/shop/orders/.%2e", Err(400)),
        ("/shop/orders;jsessionid=1", Err(400)),
        ("/shop/orders/x;y", Err(400)),
        ("/shop/orders/a%2fb", Err(400)),
        ("/shop/orders/a%5Cb", Err(400)),
        ("/shop/orders/a\\b", Err(400)),
        ("/shop/orders/%00", Err(400)),
        ("/shop/orders/%0d%0aX-Injected:%201", Err(400)),
        ("/shop/orders/%c0%af", Err(400)),
        ("/shop/orders/%e2%82", Err(400)),
        ("/shop/orders/%ff", Err(400)),
        ("/shop/orders/%zz", Err(400)),
        ("/shop/orders/%4", Err(400)),
        ("*", Err(400)),
        ("http://evil.example/shop/orders", Err(400)),
        ("/SHOP/orders", Err(404)),
        ("/shop/Orders", Err(404)),
        // A trailing slash does not count (the default `[preset.paths]`, as most frameworks
        // route): the same route judges it, and the path goes on as the client spelled it.
        ("/shop/health/", Ok("/shop/health/")),
        ("/shop/orders/", Ok("/shop/orders/")),
        ("/shop", Err(404)),
    ];
    for (target, want) in cases {
        let before = h.upstream.count();
        let bytes = format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let (response, _) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        match want {
            Ok(path) => {
                assert_eq!(status_of(&response), 200, "{target}: {response}");
                assert_eq!(h.upstream.count(), before + 1, "{target}");
                assert_eq!(&h.upstream.last().path, path, "{target}");
            }
            Err(status) => {
                assert_eq!(status_of(&response), *status, "{target}: {response}");
                assert_eq!(h.upstream.count(), before, "{target} was forwarded");
            }
        }
    }
}

/// TRACE, CONNECT and methods no route can name are refused and never forwarded; an OPTIONS
/// request is judged like any other when `[cors]` is not set.
#[tokio::test]
async fn unknown_methods_trace_and_connect_are_refused() {
    let h = plain("").await;
    let token = h.token(json!({"scope": "write_orders"}));
    for (request_line, want) in [
        ("TRACE /shop/orders HTTP/1.1", 405),
        ("TRACK /shop/orders HTTP/1.1", 405),
        ("PROPFIND /shop/orders HTTP/1.1", 405),
        ("FOO /shop/orders HTTP/1.1", 405),
        ("OPTIONS /shop/orders HTTP/1.1", 405),
        ("CONNECT localhost:443 HTTP/1.1", 400),
        ("TRACE /nowhere HTTP/1.1", 404),
    ] {
        let bytes = format!(
            "{request_line}\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nOrigin: https://admin.example.com\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n"
        );
        let (response, _) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(status_of(&response), want, "{request_line}: {response}");
        if want == 405 {
            assert!(response.contains("allow: "), "{response}");
        }
    }
    assert_eq!(h.upstream.count(), 0);
}

const CORS: &str = r#"
[cors]
allowed_origins = ["https://admin.example.com"]
allowed_headers = ["authorization", "content-type"]
expose_headers = ["x-request-id"]
max_age = "5m"
"#;

fn preflight(origin: &str, method: &str, headers: &str) -> String {
    format!(
        "OPTIONS /shop/orders/1 HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: {method}\r\nAccess-Control-Request-Headers: {headers}\r\n\
         Connection: close\r\n\r\n"
    )
}

/// Preflights are answered at the edge from the route table, never forwarded; allowed origins
/// can read every answer, refusals included.
#[tokio::test]
async fn cors_preflights_are_answered_at_the_edge_and_never_forwarded() {
    let h = plain(CORS).await;
    let addr = h.running.proxy_addr;
    let (ok, _) = raw(
        addr,
        preflight(
            "https://admin.example.com",
            "POST",
            "authorization, content-type",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&ok), 204, "{ok}");
    let lower = ok.to_ascii_lowercase();
    for expected in [
        "access-control-allow-origin: https://admin.example.com",
        "access-control-allow-methods: get, head, post, put, patch, delete",
        "access-control-allow-headers: authorization, content-type",
        "access-control-max-age: 300",
        "vary: origin",
    ] {
        assert!(lower.contains(expected), "missing {expected}: {ok}");
    }
    for (name, request) in [
        (
            "origin",
            preflight("https://evil.example", "GET", "authorization"),
        ),
        (
            "method",
            preflight("https://admin.example.com", "TRACE", "authorization"),
        ),
        (
            "header",
            preflight("https://admin.example.com", "GET", "x-scopegate-subject"),
        ),
    ] {
        let (response, _) = raw(addr, request.as_bytes()).await;
        assert_eq!(status_of(&response), 403, "{name}: {response}");
        assert!(
            !response
                .to_ascii_lowercase()
                .contains("access-control-allow-methods"),
            "{name}"
        );
    }
    assert_eq!(h.upstream.count(), 0, "a preflight reached the upstream");

    let token = h.token(json!({"scope": "read_orders"}));
    let get = |token: Option<&str>, origin: &str| {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        format!(
            "GET /shop/orders/1 HTTP/1.1\r\nHost: localhost\r\n{auth}Origin: {origin}\r\nConnection: close\r\n\r\n"
        )
    };
    let (allowed, _) = raw(
        addr,
        get(Some(&token), "https://admin.example.com").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&allowed), 200);
    let allowed = allowed.to_ascii_lowercase();
    assert!(
        allowed.contains("access-control-allow-origin: https://admin.example.com"),
        "{allowed}"
    );
    assert!(
        allowed.contains("access-control-expose-headers: x-request-id"),
        "{allowed}"
    );
    let (refused, _) = raw(addr, get(None, "https://admin.example.com").as_bytes()).await;
    assert_eq!(status_of(&refused), 401);
    assert!(
        refused
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{refused}"
    );
    let (foreign, _) = raw(addr, get(Some(&token), "https://evil.example").as_bytes()).await;
    assert_eq!(status_of(&foreign), 200);
    assert!(
        !foreign
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{foreign}"
    );
    let metrics = h.metrics().await;
    assert!(metrics.contains(r#"decision="preflight""#), "{metrics}");
    assert!(
        metrics.contains(r#"reason="cors_origin_not_allowed""#),
        "{metrics}"
    );
}

/// A request body that stops arriving is a 408 and the request never reaches the upstream; one
/// larger than the limit is a 413 whether its length was declared or not.
#[tokio::test]
async fn slow_and_oversized_bodies_are_refused_before_the_upstream() {
    let h =
        plain("[limits]\nrequest_body_timeout = \"500ms\"\nmax_request_body_bytes = 1000\n").await;
    let token = h.token(json!({"scope": "write_orders"}));
    let head = format!(
        "POST /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
    );
    let (response, closed) = raw(
        h.running.proxy_addr,
        format!("{head}Content-Length: 10\r\n\r\nabc").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 408, "{response}");
    assert!(closed);
    let (response, _) = raw(
        h.running.proxy_addr,
        format!("{head}Content-Length: 1001\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 413, "{response}");
    let chunk = "a".repeat(600);
    let (response, closed) = raw(
        h.running.proxy_addr,
        format!(
            "{head}Transfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 413, "{response}");
    assert!(closed);
    assert_eq!(h.upstream.count(), 0);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"scopegate_denials_total{reason="request_body_timeout"} 1"#),
        "{metrics}"
    );
}

/// HTTP/2 names the authority twice, in `:authority` and possibly in `Host`: when they disagree
/// the request is refused and never forwarded, so no tenant bound by Host can be talked around.
#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let stream = h
        .client
        .connect(h.running.proxy_addr, common::Version::H2)
        .await;
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    let _conn = tokio::spawn(conn);
    let send = |host: Option<&'static str>| {
        let mut client = client.clone();
        let token = token.clone();
        async move {
            let mut request = http::Request::builder()
                .uri("https://localhost/shop/orders/1")
                .header("authorization", format!("Bearer {token}"));
            if let Some(host) = host {
                request = request.header("host", host);
            }
            client = client.ready().await.unwrap();
            let (response, _) = client
                .send_request(request.body(()).unwrap(), true)
                .unwrap();
            response.await.unwrap().status().as_u16()
        }
    };
    assert_eq!(send(Some("evil.example")).await, 400);
    assert_eq!(send(Some("localhost:1")).await, 400);
    assert_eq!(h.upstream.count(), 0, "a disagreeing Host was forwarded");
    // Agreeing (case aside), or no Host at all: judged and forwarded as usual.
    assert_eq!(send(Some("LOCALHOST")).await, 200);
    assert_eq!(send(None).await, 200);
    assert_eq!(h.upstream.count(), 2);
}
