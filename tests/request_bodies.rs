//! Request bodies as an attacker shapes them: on GET and HEAD, and cut off by an HTTP/2 stream
//! reset. Raw bytes on a socket for HTTP/1.1, the `h2` crate for HTTP/2 (it sends a reset with
//! any code, mid-body, where a client library would not). The recording upstream's log is the
//! assertion: it sees the exact bytes that were sent, or nothing, and never a cut-off body that
//! ended cleanly.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Harness, TEST_ROUTES, raw, status_of};
use serde_json::json;

/// GET and HEAD carry no body through scopegate: whatever the framing (a length, chunks that fit
/// the read-ahead bound, chunks past it), a body is refused with 400 `body_on_get_or_head`, the
/// connection is closed (its bytes are never read as a next request), and the upstream sees
/// nothing. (Before: a body that fit the bound was forwarded, one past it was silently dropped
/// and the GET forwarded without it.) Without a body they are forwarded as ever.
#[tokio::test]
async fn get_and_head_with_a_body_are_refused_never_emptied() {
    let h = Harness::new(TEST_ROUTES)
        .plaintext()
        .toml("[limits]\nbuffer_body_bytes = 16\n")
        .start()
        .await;
    let token = h.token(json!({"scope": "read_orders"}));
    let big = "b".repeat(40);
    let smuggled = "GET /shop/customers/7 HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for method in ["GET", "HEAD"] {
        let head = format!(
            "{method} /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
        );
        let cases = [
            ("length", format!("{head}Content-Length: 5\r\n\r\nhello")),
            (
                "request as body",
                format!("{head}Content-Length: {}\r\n\r\n{smuggled}", smuggled.len()),
            ),
            (
                "chunked",
                format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ),
            (
                "chunked past the bound",
                format!("{head}Transfer-Encoding: chunked\r\n\r\n28\r\n{big}\r\n0\r\n\r\n"),
            ),
            (
                "length past the bound",
                format!("{head}Content-Length: 40\r\n\r\n{big}"),
            ),
        ];
        for (name, bytes) in cases {
            let (response, closed) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
            assert_eq!(status_of(&response), 400, "{method} {name}: {response}");
            if method == "GET" {
                assert!(response.contains("body_on_get_or_head"), "{response}");
            }
            assert!(closed, "{method} {name}: connection left open");
            assert_eq!(
                h.upstream.count(),
                0,
                "{method} {name} reached the upstream"
            );
        }
    }
    // No body, an empty length or no chunks: forwarded, and with nothing.
    for framing in [
        "",
        "Content-Length: 0\r\n",
        "Transfer-Encoding: chunked\r\n",
    ] {
        let end = if framing.starts_with("Transfer") {
            "0\r\n\r\n"
        } else {
            ""
        };
        let bytes = format!(
            "GET /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n{framing}Connection: close\r\n\r\n{end}"
        );
        let before = h.upstream.count();
        let (response, _) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(status_of(&response), 200, "{framing:?}: {response}");
        assert_eq!(h.upstream.count(), before + 1);
        assert_eq!(
            h.upstream.last().body,
            Some(Ok(Bytes::new())),
            "{framing:?}"
        );
    }
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"scopegate_denials_total{reason="body_on_get_or_head"} 10"#),
        "{metrics}"
    );
}

/// HTTP/2 likewise: HEADERS without END_STREAM, then DATA, on a GET.
#[tokio::test]
async fn an_http2_get_with_data_is_refused() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let mut client = h2_client(&h).await;
    for declared in [None, Some("5")] {
        let (response, mut send) = open(&mut client, "GET", &token, declared, None).await;
        send.send_data(Bytes::from_static(b"hello"), true).unwrap();
        let status = response.await.unwrap().status();
        assert_eq!(status, 400, "{declared:?}");
    }
    assert_eq!(h.upstream.count(), 0);
}

async fn h2_client(h: &Harness) -> h2::client::SendRequest<Bytes> {
    let stream = h
        .client
        .connect(h.running.proxy_addr, common::Version::H2)
        .await;
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(conn);
    client.ready().await.unwrap()
}

/// Opens a request stream and sends its HEADERS without END_STREAM.
async fn open(
    client: &mut h2::client::SendRequest<Bytes>,
    method: &str,
    token: &str,
    content_length: Option<&str>,
    content_type: Option<&str>,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut request = http::Request::builder()
        .method(method)
        .uri("https://localhost/shop/orders")
        .header("authorization", format!("Bearer {token}"));
    if let Some(n) = content_length {
        request = request.header("content-length", n);
    }
    if let Some(t) = content_type {
        request = request.header("content-type", t);
    }
    *client = client.clone().ready().await.unwrap();
    client
        .send_request(request.body(()).unwrap(), false)
        .unwrap()
}

/// Waits until the upstream has finished reading the body of request `index`, if it saw one.
async fn body_seen(h: &Harness, index: usize) -> Option<Result<Bytes, String>> {
    for _ in 0..100 {
        if let Some(seen) = h.upstream.seen.lock().unwrap().get(index) {
            if let Some(body) = &seen.body {
                return Some(body.clone());
            }
        } else {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream never finished reading request {index}'s body");
}

/// HEADERS, part of the body, then RST_STREAM, with and without a declared length. hyper reads
/// RST_STREAM(NO_ERROR) as the end of the body: before, a truncated body that fit the read-ahead
/// bound was forwarded as complete whenever a kept upstream connection took it before hyper
/// noticed the reset (about one attempt in three on a multi-threaded runtime). Now a declared
/// length not reached is a broken body, and an HTTP/2 request with a body waits once before it
/// is handed on, so hyper drops it first. Each shape is tried many times, each after a request
/// that leaves a kept connection in the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_reset_mid_body_never_reaches_the_upstream() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "write_orders"}));
    let mut warmed = 0;
    for reason in [h2::Reason::NO_ERROR, h2::Reason::CANCEL] {
        for declared in [None, Some("10")] {
            for attempt in 0..30 {
                let warm = h
                    .request("POST", "/shop/orders")
                    .token(&token)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await;
                assert_eq!(warm.status, 200);
                warmed += 1;
                let before = h.upstream.count();
                let mut client = h2_client(&h).await;
                let (response, mut send) = open(
                    &mut client,
                    "POST",
                    &token,
                    declared,
                    Some("application/json"),
                )
                .await;
                send.send_data(Bytes::from_static(b"{\"a\""), false)
                    .unwrap();
                if attempt % 2 == 1 {
                    // Let the proxy start reading before the reset.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                send.send_reset(reason);
                let _ = tokio::time::timeout(Duration::from_secs(2), response).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
                assert_eq!(
                    body_seen(&h, before).await,
                    None,
                    "{reason:?}, length {declared:?}, attempt {attempt}: forwarded"
                );
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.upstream.count(),
        warmed,
        "only the warm-up requests were forwarded"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"reason="request_body_reset""#),
        "the dropped requests are recorded: {metrics}"
    );
}

/// Past the read-ahead bound the body streams to the upstream, so the head is already there
/// when the reset comes: with a declared length, the upstream's body read must fail, never end
/// cleanly. Without one, the end of a streamed HTTP/2 body could not be told from a reset, so
/// such a body is refused with 411 `length_required` before anything is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streamed_body_cut_off_by_a_reset_never_ends_cleanly_upstream() {
    let h = Harness::new(TEST_ROUTES)
        .toml("[limits]\nbuffer_body_bytes = 16\n")
        .start()
        .await;
    let token = h.token(json!({"scope": "write_orders"}));
    let json = Some("application/json");
    let chunk = Bytes::from(vec![b' '; 40]);
    for reason in [h2::Reason::NO_ERROR, h2::Reason::CANCEL] {
        for attempt in 0..10 {
            let before = h.upstream.count();
            let mut client = h2_client(&h).await;
            let (response, mut send) = open(&mut client, "POST", &token, Some("100"), json).await;
            send.send_data(chunk.clone(), false).unwrap();
            // The head reaches the upstream once the bound is passed.
            for _ in 0..100 {
                if h.upstream.count() > before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            send.send_reset(reason);
            let _ = tokio::time::timeout(Duration::from_secs(2), response).await;
            let body = body_seen(&h, before).await;
            assert!(
                matches!(body, Some(Err(_))),
                "{reason:?} attempt {attempt}: the upstream saw {body:?}"
            );
        }
        for attempt in 0..10 {
            let before = h.upstream.count();
            let mut client = h2_client(&h).await;
            let (response, mut send) = open(&mut client, "POST", &token, None, json).await;
            send.send_data(chunk.clone(), false).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            send.send_reset(reason);
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), response).await {
                assert_eq!(response.status(), 411);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert_eq!(
                h.upstream.count(),
                before,
                "{reason:?} attempt {attempt}: an unsized streamed body was forwarded"
            );
        }
    }
    // Complete bodies pass as they are: sized and streamed, or unsized within the bound.
    let mut client = h2_client(&h).await;
    let (response, mut send) = open(&mut client, "POST", &token, Some("40"), json).await;
    send.send_data(chunk.clone(), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    assert_eq!(body_seen(&h, h.upstream.count() - 1).await, Some(Ok(chunk)));
    let (response, mut send) = open(&mut client, "POST", &token, None, json).await;
    send.send_data(Bytes::from_static(b"{}"), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    let last = h.upstream.count() - 1;
    assert_eq!(
        body_seen(&h, last).await,
        Some(Ok(Bytes::from_static(b"{}")))
    );
    // An unsized body past the bound, complete or not, is 411 and not forwarded.
    let before = h.upstream.count();
    let (response, mut send) = open(&mut client, "POST", &token, None, json).await;
    send.send_data(Bytes::from(vec![b' '; 40]), true).unwrap();
    assert_eq!(response.await.unwrap().status(), 411);
    assert_eq!(h.upstream.count(), before);
}
