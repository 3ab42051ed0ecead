//! Upstreams that fail in the ways real ones do: cut off mid-body, stall mid-body, send broken
//! framing, go away and come back. A client never takes a cut-off body for a complete answer.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Behaviour, Harness, TEST_ROUTES, Upstream, Version};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An upstream speaking raw bytes: reads a request head, writes `answer`, then stalls for
/// `then_wait` (or closes at once) without reading further.
async fn raw_upstream(answer: Vec<u8>, then_wait: Duration) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, serve_raw(listener, answer, then_wait))
}

fn serve_raw(listener: TcpListener, answer: Vec<u8>, then_wait: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Connections live in this set: aborting the server closes them too.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            connections.spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(&answer).await;
                tokio::time::sleep(then_wait).await;
            });
        }
    })
}

async fn harness(addr: SocketAddr) -> Harness {
    let unused = Upstream::start(Behaviour::Answer).await;
    Harness::with_upstream(TEST_ROUTES, addr, unused, "").await
}

/// Sends a GET and collects the whole body: `Err` when the body did not end cleanly.
async fn fetch(h: &Harness, version: Version, token: &str) -> (StatusCode, Result<Bytes, String>) {
    let stream = h.client.connect(h.running.proxy_addr, version).await;
    let request = |uri: &str| {
        Request::builder()
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let response = match version {
        Version::H1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = request("/shop/orders");
            req.headers_mut()
                .insert("host", "localhost".parse().unwrap());
            sender.send_request(req).await.unwrap()
        }
        Version::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender
                .send_request(request("https://localhost/shop/orders"))
                .await
                .unwrap()
        }
    };
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .map_err(|_| "body never ended".to_owned())
        .and_then(|r| r.map(|c| c.to_bytes()).map_err(|e| e.to_string()));
    (status, body)
}

#[tokio::test]
async fn a_small_body_cut_off_or_stalled_is_a_502_or_504_not_a_short_200() {
    let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":".to_vec();
    let (addr, _task) = raw_upstream(cut.clone(), Duration::ZERO).await;
    let h = harness(addr).await;
    let token = h.token(json!({"scope": "read_orders"}));
    for version in [Version::H1, Version::H2] {
        let (status, _) = fetch(&h, version, &token).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{version:?}");
    }

    let (addr, _task) = raw_upstream(cut, Duration::from_secs(30)).await;
    let h = harness(addr).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let (status, _) = fetch(&h, Version::H1, &token).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn a_large_body_cut_off_mid_stream_never_ends_cleanly() {
    // Past the read-ahead bound (64 KiB), the status is already sent when the upstream fails.
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    answer.extend(std::iter::repeat_n(b'x', 200_000));
    let (addr, _task) = raw_upstream(answer, Duration::ZERO).await;
    let h = harness(addr).await;
    let token = h.token(json!({"scope": "read_orders"}));
    for version in [Version::H1, Version::H2] {
        let (status, body) = fetch(&h, version, &token).await;
        assert_eq!(status, StatusCode::OK, "{version:?}");
        assert!(body.is_err(), "{version:?}: a cut-off body ended cleanly");
    }

    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 10_000).as_bytes());
        chunked.extend(std::iter::repeat_n(b'y', 10_000));
        chunked.extend_from_slice(b"\r\n");
    }
    let (addr, _task) = raw_upstream(chunked, Duration::from_secs(30)).await;
    let h = harness(addr).await;
    let token = h.token(json!({"scope": "read_orders"}));
    for version in [Version::H1, Version::H2] {
        let (status, body) = fetch(&h, version, &token).await;
        assert_eq!(status, StatusCode::OK, "{version:?}");
        assert!(body.is_err(), "{version:?}: a stalled body ended cleanly");
    }
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"scopegate_upstream_errors_total{kind="response_truncated",route="/shop/orders"} 2"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn broken_upstream_framing_is_a_502() {
    let token_for = |h: &Harness| h.token(json!({"scope": "read_orders"}));
    for (name, answer) in [
        (
            "two lengths",
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        ),
        ("not HTTP", b"HELLO THERE\r\n\r\n"),
        (
            "bad chunk",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "bad status",
            b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            "obs-fold",
            b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        ),
    ] {
        let (addr, _task) = raw_upstream(answer.to_vec(), Duration::ZERO).await;
        let h = harness(addr).await;
        let (status, _) = fetch(&h, Version::H1, &token_for(&h)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{name}");
    }
}

#[tokio::test]
async fn the_pool_recovers_when_the_upstream_comes_back() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = serve_raw(listener, ok.clone(), Duration::from_secs(30));
    let h = harness(addr).await;
    let token = h.token(json!({"scope": "read_orders"}));
    assert_eq!(fetch(&h, Version::H1, &token).await.0, StatusCode::OK);

    // Gone: its listener closed and its connections dropped.
    task.abort();
    let _ = task.await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        fetch(&h, Version::H1, &token).await.0,
        StatusCode::BAD_GATEWAY
    );

    // Back on the same port: the next request is served, with no restart of the proxy.
    let listener = TcpListener::bind(addr).await.unwrap();
    let _task = serve_raw(listener, ok, Duration::from_secs(30));
    let mut status = StatusCode::BAD_GATEWAY;
    for _ in 0..20 {
        status = fetch(&h, Version::H1, &token).await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_upstream_that_resets_the_connection_is_a_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // SO_LINGER 0: close with RST, before any answer.
            let _ = stream.set_zero_linger();
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    let h = harness(addr).await;
    let token = h.token(json!({"scope": "read_orders"}));
    assert_eq!(
        fetch(&h, Version::H1, &token).await.0,
        StatusCode::BAD_GATEWAY
    );
    let _ = TcpStream::connect(addr).await;
}

/// A client that hangs up while the upstream is still working: the upstream has the request,
/// so the decision is still counted and logged (status 499, `client_closed`).
#[tokio::test]
async fn a_request_whose_client_hangs_up_is_still_counted() {
    // Reads the head, never answers.
    let (addr, _task) = raw_upstream(Vec::new(), Duration::from_secs(30)).await;
    let h = harness(addr).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let stream = h.client.connect(h.running.proxy_addr, Version::H1).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::builder()
        .uri("/shop/orders")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let pending = tokio::spawn(async move { sender.send_request(request).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pending.abort();
    conn.abort();
    let want = r#"scopegate_requests_total{decision="allow",method="GET",route="/shop/orders"} 1"#;
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = h.metrics().await;
        if metrics.contains(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.contains(want), "{metrics}");
}
