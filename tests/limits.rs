//! Bounded resources: slow headers, idle connections, connection count, HTTP/2 streams, header
//! lists and reset floods, and an accept loop that outlives running out of file descriptors.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Behaviour, Harness, TEST_ROUTES, Upstream, Version};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn harness(extra: &str, tls: bool) -> Harness {
    let upstream = Upstream::start(Behaviour::Answer).await;
    Harness::build(TEST_ROUTES, upstream.addr, upstream, extra, tls).await
}

/// Reads until the proxy closes the connection; `None` if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + wait).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_are_cut_off() {
    let h = harness("[limits]\nheader_read_timeout = \"500ms\"\n", false).await;
    let token = h.token(json!({"scope": "read_orders"}));
    // Slowloris: one header byte every 100 ms, never finishing.
    let mut stream = TcpStream::connect(h.running.proxy_addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        for _ in 0..40 {
            if stream.write_all(b"X").await.is_err() {
                return Some(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    let cut = tokio::time::timeout(Duration::from_secs(3), dripping).await;
    assert!(
        matches!(cut, Ok(Ok(Some(())))),
        "a slowloris client was kept"
    );

    // Idle keep-alive after a served request: closed by the same header deadline.
    let mut stream = TcpStream::connect(h.running.proxy_addr).await.unwrap();
    stream
        .write_all(format!("GET /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let after = closed_within(&mut stream, Duration::from_secs(3)).await;
    assert!(after.is_some(), "idle HTTP/1.1 connection kept open");
    assert_eq!(h.upstream.count(), 1);
}

#[tokio::test]
async fn idle_http2_connections_are_closed() {
    let h = harness("[limits]\nidle_timeout = \"400ms\"\n", true).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let stream = h.client.connect(h.running.proxy_addr, Version::H2).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::builder()
                .uri("https://localhost/shop/orders")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection kept open");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn connections_past_the_limit_wait_for_a_slot() {
    let h = harness("[limits]\nmax_connections = 2\n", false).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let request = format!(
        "GET /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let first = TcpStream::connect(h.running.proxy_addr).await.unwrap();
    let second = TcpStream::connect(h.running.proxy_addr).await.unwrap();
    let mut third = TcpStream::connect(h.running.proxy_addr).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a third connection was served past the limit of two"
    );
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(second);
}

#[tokio::test]
async fn http2_streams_and_header_lists_are_bounded_and_reset_floods_end_the_connection() {
    let h = harness(
        "[limits]\nh2_max_concurrent_streams = 8\nh2_max_header_list_bytes = 16384\n",
        true,
    )
    .await;
    let token = h.token(json!({"scope": "read_orders"}));
    let stream = h.client.connect(h.running.proxy_addr, Version::H2).await;
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // The server's SETTINGS arrive with the connection's first frames.
    for _ in 0..100 {
        if client.current_max_send_streams() == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.current_max_send_streams(), 8);

    // A header list over the limit: refused, never forwarded.
    let big = "a".repeat(20_000);
    let request = Request::builder()
        .uri("https://localhost/shop/orders")
        .header("authorization", format!("Bearer {token}"))
        .header("x-big", big)
        .body(())
        .unwrap();
    if let Ok((response, _)) = client.send_request(request, true) {
        match response.await {
            Ok(r) => assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            Err(e) => assert!(e.is_reset() || e.is_go_away() || e.is_io(), "{e}"),
        }
    }
    assert_eq!(h.upstream.count(), 0);

    // Rapid reset (CVE-2023-44487): open and cancel streams as fast as possible.
    let stream = h.client.connect(h.running.proxy_addr, Version::H2).await;
    let (client, conn2) = h2::client::handshake(stream).await.unwrap();
    let conn2 = tokio::spawn(conn2);
    let mut client = client;
    let mut opened = 0;
    for _ in 0..5_000 {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        let request = Request::builder()
            .uri("https://localhost/shop/orders")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        match client.send_request(request, false) {
            Ok((_response, mut send)) => {
                send.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => break,
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn2).await;
    let error = match ended {
        Ok(Ok(Err(e))) => e,
        other => panic!("the flood ({opened} streams) did not end the connection: {other:?}"),
    };
    // GOAWAY (ENHANCE_YOUR_CALM), or the socket closed under the client's writes.
    assert!(
        error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || error.is_io(),
        "{error}"
    );
    assert!(
        h.upstream.count() < opened,
        "every one of {opened} reset streams was forwarded"
    );
    drop(conn);
    // The proxy still serves.
    let reply = h.get("/shop/orders", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// `scopegate serve` with a file-descriptor limit far below the connections thrown at it: the
/// accept loop backs off instead of dying, and serves again once descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_survives_running_out_of_file_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let material = scopegate::demo::material::ensure(&dir.path().join("certs")).unwrap();
    std::fs::create_dir_all(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("routes/test.toml"), TEST_ROUTES).unwrap();
    let upstream = Upstream::start(Behaviour::Answer).await;
    let config: String = common::config_text(dir.path(), &material, upstream.addr, "")
        .lines()
        .filter(|l| !l.starts_with("tls_"))
        .map(|l| format!("{l}\n"))
        .collect();
    let proxy_port = free_port().await;
    let config = config.replace(
        "address = \"127.0.0.1:0\"",
        &format!("address = \"127.0.0.1:{proxy_port}\""),
    ) + "[admin]\naddress = \"127.0.0.1:0\"\n";
    std::fs::write(dir.path().join("scopegate.toml"), config).unwrap();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec '{}' serve --workers 1 --config '{}'",
            env!("CARGO_BIN_EXE_scopegate"),
            dir.path().join("scopegate.toml").display()
        ))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let signer = scopegate::mint::Signer::demo(&material.signing_key).unwrap();
    let token = signer
        .sign(&scopegate::mint::with_demo_defaults(json!({"scope": "read_orders"}), 600).unwrap())
        .unwrap();
    let get = format!(
        "GET /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let status = |addr| {
        let get = get.clone();
        async move {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(get.as_bytes()).await.ok()?;
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out))
                .await
                .ok()?
                .ok()?;
            Some(out.starts_with(b"HTTP/1.1 200"))
        }
    };
    let mut up = false;
    for _ in 0..40 {
        if status(addr).await == Some(true) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        child.start_kill().unwrap();
        let _ = child.wait().await;
        let mut log = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut log).await;
        panic!("scopegate did not start: {log}");
    }

    // 150 connections against 64 descriptors: the rest wait in the backlog while accept fails.
    let mut hogs = Vec::new();
    for _ in 0..150 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        {
            hogs.push(s);
        }
    }
    assert!(hogs.len() > 64, "only {} connections", hogs.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.try_wait().unwrap().is_none(), "scopegate exited");
    drop(hogs);
    let mut served = false;
    for _ in 0..60 {
        if status(addr).await == Some(true) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "no longer serving after descriptors ran out");
    assert!(child.try_wait().unwrap().is_none(), "scopegate exited");
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let mut log = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut log).await;
    assert!(log.contains("accept failed"), "{log}");
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}
