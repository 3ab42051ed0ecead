//! `Host` and `:authority` as an attacker writes them: userinfo, a path, spaces, a port out of
//! range, an address a resolver reads one way and a router another. Each is 400 `bad_host` and
//! never forwarded; a bare `host[:port]` passes, and `host_mismatch` still holds between two
//! well-formed names.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Harness, TEST_ROUTES};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

#[tokio::test]
async fn malformed_host_headers_and_targets_are_400_bad_host() {
    let h = Harness::new(TEST_ROUTES).plaintext().start().await;
    let token = h.token(json!({"scope": "read_orders"}));
    let get = |target: &str, host: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost:{host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
    };
    let o = "/shop/orders";
    let refused = [
        get(o, " user@localhost"),
        get(o, " user:secret@localhost"),
        get(o, " localhost/shop"),
        get(o, " localhost?x=1"),
        get(o, " local host"),
        get(o, " localhost:"),
        get(o, " localhost:0"),
        get(o, " localhost:65536"),
        get(o, " localhost:8o"),
        get(o, " localhost:80:80"),
        get(o, " loc%61lhost"),
        get(o, " localhost,evil.example"),
        get(o, " 127.1"),
        get(o, " 127.0.0.256"),
        get(o, " [::1"),
        get(o, " [::1]x"),
        get(o, " [v1.x]"),
        get(o, ""),
        // Absolute form: the authority is checked as well, even when `Host` repeats it.
        get("http://user@localhost/shop/orders", " user@localhost"),
        get("http://localhost:0/shop/orders", " localhost:0"),
        get("http://127.1/shop/orders", " 127.1"),
    ];
    for bytes in &refused {
        let response = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(status_of(&response), 400, "{bytes}: {response}");
        assert!(response.contains("bad_host"), "{bytes}: {response}");
        assert_eq!(h.upstream.count(), 0, "{bytes} reached the upstream");
    }
    let passed = [
        get(o, " localhost"),
        get(o, " LOCALHOST:8443"),
        get(o, " store-1.example.com"),
        get(o, " 127.0.0.1:65535"),
        get(o, " [::1]:443"),
        get("http://localhost:8080/shop/orders", " localhost:8080"),
    ];
    for bytes in &passed {
        let before = h.upstream.count();
        let response = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(status_of(&response), 200, "{bytes}: {response}");
        assert_eq!(h.upstream.count(), before + 1);
    }
    // Two well-formed names that disagree: still `host_mismatch`.
    let response = raw(
        h.running.proxy_addr,
        get("http://localhost/shop/orders", " evil.example").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&response), 400);
    assert!(response.contains("host_mismatch"), "{response}");
    let metrics = h.metrics().await;
    let want = format!(
        "scopegate_denials_total{{reason=\"bad_host\"}} {}",
        refused.len()
    );
    assert!(metrics.contains(&want), "{metrics}");
}

/// HTTP/2: `:authority` with userinfo or a bad port (no `Host` to disagree with), a bad `Host`
/// next to a good authority, and a second `Host` (HTTP/1.1's framing check does not see HTTP/2)
/// are refused.
#[tokio::test]
async fn malformed_http2_authorities_are_refused() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let stream = h
        .client
        .connect(h.running.proxy_addr, common::Version::H2)
        .await;
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    let _conn = tokio::spawn(conn);
    let send = |uri: &'static str, hosts: &'static [&'static str]| {
        let mut client = client.clone();
        let token = token.clone();
        async move {
            let mut request = http::Request::builder()
                .uri(uri)
                .header("authorization", format!("Bearer {token}"));
            for host in hosts {
                request = request.header("host", *host);
            }
            client = client.ready().await.unwrap();
            let (response, _) = client
                .send_request(request.body(()).unwrap(), true)
                .unwrap();
            response.await.unwrap().status().as_u16()
        }
    };
    assert_eq!(send("https://user@localhost/shop/orders/1", &[]).await, 400);
    assert_eq!(send("https://localhost:0/shop/orders/1", &[]).await, 400);
    assert_eq!(send("https://127.1/shop/orders/1", &[]).await, 400);
    assert_eq!(
        send("https://localhost/shop/orders/1", &["localhost/x"]).await,
        400
    );
    assert_eq!(
        send(
            "https://localhost/shop/orders/1",
            &["localhost", "evil.example"]
        )
        .await,
        400
    );
    assert_eq!(h.upstream.count(), 0, "a malformed authority was forwarded");
    assert_eq!(send("https://localhost:443/shop/orders/1", &[]).await, 200);
    assert_eq!(
        send("https://localhost/shop/orders/1", &["localhost"]).await,
        200
    );
    assert_eq!(h.upstream.count(), 2);
}
