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

/// `extra` merged into the serve config; `tls: false` for a plaintext listener.
async fn harness(extra: &str, tls: bool) -> Harness {
    let builder = Harness::new(TEST_ROUTES).toml(extra);
    let builder = if tls { builder } else { builder.plaintext() };
    builder.start().await
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
    let mut config = common::config_table(dir.path(), &material, upstream.addr);
    common::plaintext(&mut config);
    let proxy_port = free_port().await;
    config["listen"]["address"] = format!("127.0.0.1:{proxy_port}").into();
    common::set(&mut config, "admin.address", "127.0.0.1:0");
    common::write_config(&dir.path().join("scopegate.toml"), &config);
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

/// Drains a child's stderr into a shared buffer (a full pipe would stall the child's logging).
fn collect_stderr(child: &mut tokio::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let mut stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    log
}

/// The last lines of a collected log, for a failure message.
fn log_tail(log: &std::sync::Mutex<String>) -> String {
    let log = log.lock().unwrap();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); the raw response, or why
/// there was none within `wait`.
async fn raw_exchange(addr: SocketAddr, head: &str, wait: Duration) -> Result<Vec<u8>, String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok(out)
    };
    match tokio::time::timeout(wait, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {wait:?}")),
    }
}

/// `scopegate serve` under `ulimit -n 64`, plaintext proxy and admin on fixed loopback ports:
/// the admin listener's own cap (`[admin] max_connections`) and the header deadline keep a
/// flood of idle admin connections from taking every descriptor the proxy needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_flood_of_idle_connections_leaves_the_proxy_serving() {
    let dir = tempfile::tempdir().unwrap();
    let material = scopegate::demo::material::ensure(&dir.path().join("certs")).unwrap();
    std::fs::create_dir_all(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("routes/test.toml"), TEST_ROUTES).unwrap();
    let upstream = Upstream::start(Behaviour::Answer).await;
    let (proxy_port, admin_port) = (free_port().await, free_port().await);
    // Edited as a TOML table: plaintext proxy on a fixed port, admin on another with its cap.
    let mut config: toml::Table = common::config_text(dir.path(), &material, upstream.addr, "")
        .parse()
        .unwrap();
    let listen = config["listen"].as_table_mut().unwrap();
    listen.remove("tls_cert");
    listen.remove("tls_key");
    listen.insert("address".into(), format!("127.0.0.1:{proxy_port}").into());
    let admin_table: toml::Table =
        format!("address = \"127.0.0.1:{admin_port}\"\nmax_connections = 8")
            .parse()
            .unwrap();
    config.insert("admin".into(), admin_table.into());
    let limits: toml::Table = "header_read_timeout = \"1s\"".parse().unwrap();
    config.insert("limits".into(), limits.into());
    let config = toml::to_string(&config).unwrap();
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
    let log = collect_stderr(&mut child);
    let proxy: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    // Any HTTP answer proves the proxy is serving (a public route: 200 from the upstream).
    let proxy_get = "GET /shop/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let healthz = "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";

    let mut up = false;
    for _ in 0..40 {
        if raw_exchange(proxy, proxy_get, Duration::from_secs(2))
            .await
            .is_ok_and(|r| r.starts_with(b"HTTP/1.1 "))
        {
            up = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        child.start_kill().unwrap();
        let _ = child.wait().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        panic!("scopegate did not start:\n{}", log_tail(&log));
    }

    // 120 idle connections to the admin port against 64 descriptors, nothing sent on them.
    let mut idle = Vec::new();
    for _ in 0..120 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(admin)).await
        {
            idle.push(s);
        }
    }
    assert!(
        idle.len() > 64,
        "only {} admin connections opened",
        idle.len()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The proxy keeps answering while the flood is open.
    for n in 1..=20 {
        let started = Instant::now();
        let reply = raw_exchange(proxy, proxy_get, Duration::from_secs(5)).await;
        assert!(
            reply.as_ref().is_ok_and(|r| r.starts_with(b"HTTP/1.1 ")),
            "proxy request {n} of 20 while {} idle admin connections were open: {:?} after \
             {:?} (did the admin listener take the descriptors the proxy needs?); log tail:\n{}",
            idle.len(),
            reply.map(|r| String::from_utf8_lossy(&r).into_owned()),
            started.elapsed(),
            log_tail(&log)
        );
    }
    assert!(child.try_wait().unwrap().is_none(), "scopegate exited");

    // Idle admin connections are cut at the header deadline: the server closes some of ours.
    let cut = async {
        loop {
            for s in &mut idle {
                let mut buf = [0u8; 256];
                let read = tokio::time::timeout(Duration::from_millis(5), s.read(&mut buf)).await;
                if let Ok(Ok(0) | Err(_)) = read {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(5), cut)
            .await
            .is_ok(),
        "none of {} idle admin connections was closed within 5 s (header_read_timeout = 1s)",
        idle.len()
    );

    // Once the flood ends, a fresh admin request is answered.
    drop(idle);
    let started = Instant::now();
    let mut last = Err(String::new());
    while started.elapsed() < Duration::from_secs(5) {
        last = raw_exchange(admin, healthz, Duration::from_secs(5) - started.elapsed()).await;
        if last.as_ref().is_ok_and(|r| r.starts_with(b"HTTP/1.1 200")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last.as_ref().is_ok_and(|r| r.starts_with(b"HTTP/1.1 200")),
        "GET /healthz after the flood: {:?}",
        last.map(|r| String::from_utf8_lossy(&r).into_owned())
    );
    assert!(child.try_wait().unwrap().is_none(), "scopegate exited");
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn a_partial_request_head_on_the_admin_port_is_cut_at_the_header_timeout() {
    let h = harness("[limits]\nheader_read_timeout = \"1s\"\n", false).await;
    let mut stream = TcpStream::connect(h.running.admin_addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let after = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        after.is_some(),
        "an admin connection with an unfinished request head was still open after 5 s \
         (header_read_timeout = 1s)"
    );
    assert!(
        after.unwrap() >= Duration::from_millis(500),
        "closed after {after:?}, before the header deadline"
    );
}

/// A request to the admin listener; status, headers and body.
async fn admin_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    use http_body_util::BodyExt;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        sender.send_request(
            Request::builder()
                .method(method)
                .uri(path)
                .header("host", "admin")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within 5 s"))
    .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

#[tokio::test]
async fn admin_endpoints_answer_get_and_head_only() {
    let h = harness("", false).await;
    let admin = h.running.admin_addr;
    let (status, _, body) = admin_call(admin, "GET", "/healthz").await;
    assert_eq!(status, StatusCode::OK, "GET /healthz");
    assert!(!body.is_empty(), "GET /healthz has a body");
    let (status, _, body) = admin_call(admin, "HEAD", "/healthz").await;
    assert_eq!(status, StatusCode::OK, "HEAD /healthz");
    assert!(body.is_empty(), "HEAD /healthz sent a body: {body:?}");
    for (method, path) in [("POST", "/healthz"), ("DELETE", "/metrics")] {
        let (status, headers, body) = admin_call(admin, method, path).await;
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            headers
                .get(http::header::ALLOW)
                .and_then(|v| v.to_str().ok()),
            Some("GET, HEAD"),
            "{method} {path}: Allow header"
        );
    }
}
