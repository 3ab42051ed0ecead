//! Upstreams that fail in the ways real ones do: cut off mid-body, stall mid-body, send broken
//! framing, go away and come back. A client never takes a cut-off body for a complete answer.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, TEST_ROUTES, Version};
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
    Harness::new(TEST_ROUTES).upstream_addr(addr).start().await
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

/// A keep-alive upstream that counts the connections it accepted and those still open. Each
/// answer waits `delay`; a connection is closed, without a word, after `per_connection`
/// answers.
struct KeepAlive {
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    _task: JoinHandle<()>,
}

fn keep_alive_upstream(listener: TcpListener, per_connection: usize, delay: Duration) -> KeepAlive {
    let accepted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (a, o) = (accepted.clone(), open.clone());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            connections.spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                let mut answered = 0;
                'conn: while answered < per_connection {
                    let end = loop {
                        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break 'conn,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    pending.drain(..end);
                    tokio::time::sleep(delay).await;
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        break;
                    }
                    answered += 1;
                }
                drop(stream);
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    KeepAlive {
        accepted,
        open,
        _task: task,
    }
}

/// Forwards to `addr` with one pool setting of the default upstream changed.
async fn pool_harness(addr: SocketAddr, key: &str, value: impl Into<toml::Value>) -> Harness {
    let (path, value) = (format!("upstreams.default.{key}"), value.into());
    Harness::new(TEST_ROUTES)
        .upstream_addr(addr)
        .config(move |t| common::set(t, &path, value))
        .start()
        .await
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what}");
}

#[tokio::test]
async fn kept_connections_are_reused_and_let_go_when_closed_or_idle() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = keep_alive_upstream(listener, 3, Duration::ZERO);
    let h = pool_harness(addr, "pool_idle_timeout", "400ms").await;
    let token = h.token(json!({"scope": "read_orders"}));

    // One connection serves one request after another.
    for _ in 0..3 {
        let (status, body) = fetch(&h, Version::H1, &token).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);

    // The upstream closed it after its third answer: the next request takes a new one.
    eventually("the upstream closed its connection", || {
        up.open.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(fetch(&h, Version::H1, &token).await.0, StatusCode::OK);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);

    // Idle past `pool_idle_timeout`, the proxy closes it.
    assert_eq!(up.open.load(Ordering::SeqCst), 1);
    eventually("the idle connection was closed by the proxy", || {
        up.open.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(fetch(&h, Version::H1, &token).await.0, StatusCode::OK);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn no_more_than_pool_max_idle_connections_are_kept() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = keep_alive_upstream(listener, usize::MAX, Duration::from_millis(150));
    let h = pool_harness(addr, "pool_max_idle", 2).await;
    let token = h.token(json!({"scope": "read_orders"}));
    // Six at once: six connections, of which two are kept.
    let replies = futures_join_all((0..6).map(|_| fetch(&h, Version::H2, &token))).await;
    assert!(
        replies.iter().all(|(s, _)| *s == StatusCode::OK),
        "{replies:?}"
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 6);
    eventually("all but two connections were closed", || {
        up.open.load(Ordering::SeqCst) == 2
    })
    .await;
    // The kept two serve the next two at once.
    let replies = futures_join_all((0..2).map(|_| fetch(&h, Version::H1, &token))).await;
    assert!(
        replies.iter().all(|(s, _)| *s == StatusCode::OK),
        "{replies:?}"
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 6);
}

/// Runs the futures concurrently on this task, in order of their results.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}
