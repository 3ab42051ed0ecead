//! Operating the proxy: reload keeps the old table on failure, graceful drain, plaintext
//! listener behind a load balancer, health endpoints.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Behaviour, Harness, TEST_ROUTES, Upstream, Version};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

#[tokio::test]
async fn reload_swaps_the_table_and_a_broken_file_keeps_the_old_one() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders read_invoices"}));
    assert_eq!(
        h.get("/shop/invoices", Some(&token)).await.status,
        StatusCode::NOT_FOUND
    );

    let extended = format!(
        "{TEST_ROUTES}\n[[route]]\npath = \"/shop/invoices\"\nread = {{ scopes = [\"read_invoices\"] }}\n"
    );
    std::fs::write(h.routes_dir().join("test.toml"), &extended).unwrap();
    h.running.reload().unwrap();
    assert_eq!(
        h.get("/shop/invoices", Some(&token)).await.status,
        StatusCode::OK
    );

    let broken =
        format!("{extended}\n[[route]]\npath = \"/shop/broken\"\nread = {{ scopez = [\"x\"] }}\n");
    std::fs::write(h.routes_dir().join("test.toml"), broken).unwrap();
    let err = h.running.reload().unwrap_err().to_string();
    assert!(
        err.contains("test.toml:") && err.contains("unknown field `scopez`"),
        "{err}"
    );
    // The running table is untouched.
    assert_eq!(
        h.get("/shop/invoices", Some(&token)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.get("/shop/orders", Some(&token)).await.status,
        StatusCode::OK
    );
    let m = h.metrics().await;
    assert!(
        m.contains(r#"scopegate_config_reloads_total{result="failure"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"scopegate_config_reloads_total{result="success"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn cached_tokens_are_judged_against_the_new_table_after_reload() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    assert_eq!(
        h.get("/shop/orders", Some(&token)).await.status,
        StatusCode::OK
    );
    let stricter = TEST_ROUTES.replace(
        r#"read = { scopes = ["read_orders"] }"#,
        r#"read = { scopes = ["read_orders", "read_all_orders"] }"#,
    );
    std::fs::write(h.routes_dir().join("test.toml"), stricter).unwrap();
    h.running.reload().unwrap();
    let reply = h.get("/shop/orders", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply
            .header("www-authenticate")
            .contains(r#"scope="read_orders read_all_orders""#)
    );
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let slow = Upstream::start(Behaviour::Slow).await;
    let h = Harness::new(TEST_ROUTES)
        .upstream(slow.clone())
        .start()
        .await;
    let token = h.token(json!({"scope": "read_orders"}));
    let client = h.client.clone();
    let addr = h.running.proxy_addr;
    let in_flight = tokio::spawn(async move {
        let request = Request::get("/shop/orders")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        client.send(addr, Version::H2, request).await.status
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(slow.count(), 1, "request is at the upstream");
    let Harness { running, .. } = h;
    running.shutdown().await;
    assert_eq!(in_flight.await.unwrap(), StatusCode::OK);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn plaintext_listener_serves_behind_a_load_balancer() {
    let upstream = Upstream::start(Behaviour::Answer).await;
    let h = Harness::new(TEST_ROUTES)
        .upstream(upstream.clone())
        .plaintext()
        .start()
        .await;
    let token = h.token(json!({"scope": "read_orders"}));
    let request = Request::get("/shop/orders")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = h.client.send_plain(h.running.proxy_addr, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(upstream.last().headers["x-forwarded-proto"], "http");
    let request = Request::get("/shop/orders")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        h.client
            .send_plain(h.running.proxy_addr, request)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn health_and_readiness_answer_on_the_admin_port() {
    let h = Harness::start(TEST_ROUTES).await;
    for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        let url = format!("http://{}{path}", h.running.admin_addr);
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(url)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want.to_string(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn failed_tls_handshakes_are_counted() {
    let h = Harness::start(TEST_ROUTES).await;
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(h.running.proxy_addr)
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut buf),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = h.metrics().await;
    assert!(
        m.contains("scopegate_tls_handshake_failures_total 1"),
        "{m}"
    );
}

/// A harness that polls its files every 100 ms.
async fn watching() -> Harness {
    Harness::new(TEST_ROUTES)
        .config(|t| {
            t["reload"]["watch"] = true.into();
            common::set(t, "reload.interval", "100ms");
        })
        .start()
        .await
}

async fn eventually(h: &Harness, path: &str, token: &str, want: StatusCode) {
    for _ in 0..100 {
        if h.get(path, Some(token)).await.status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("{path} never answered {want}");
}

#[tokio::test]
async fn a_changed_route_file_is_picked_up_and_a_broken_one_is_not() {
    let h = watching().await;
    let token = h.token(json!({"scope": "read_orders"}));
    let extended = format!(
        "{TEST_ROUTES}\n[[route]]\npath = \"/shop/invoices\"\nread = {{ scopes = [\"read_orders\"] }}\n"
    );
    std::fs::write(h.routes_dir().join("test.toml"), &extended).unwrap();
    eventually(&h, "/shop/invoices", &token, StatusCode::OK).await;
    std::fs::write(h.routes_dir().join("test.toml"), "[[route]\nbroken").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        h.get("/shop/invoices", Some(&token)).await.status,
        StatusCode::OK,
        "broken file keeps the table"
    );
    let m = h.metrics().await;
    assert!(
        m.contains(r#"scopegate_config_reloads_total{result="failure"} 1"#),
        "{m}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_configmap_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let h = watching().await;
    let token = h.token(json!({"scope": "read_orders"}));
    let dir = h.routes_dir();
    // The layout a ConfigMap volume has: file -> ..data/file, ..data -> ..<timestamp>/.
    std::fs::create_dir(dir.join("..2026_11_22_v1")).unwrap();
    std::fs::write(dir.join("..2026_11_22_v1/test.toml"), TEST_ROUTES).unwrap();
    symlink("..2026_11_22_v1", dir.join("..data")).unwrap();
    std::fs::remove_file(dir.join("test.toml")).unwrap();
    symlink("..data/test.toml", dir.join("test.toml")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.get("/shop/invoices", Some(&token)).await.status,
        StatusCode::NOT_FOUND
    );
    // The kubelet writes a new directory and swaps `..data` atomically.
    let extended = format!(
        "{TEST_ROUTES}\n[[route]]\npath = \"/shop/invoices\"\nread = {{ scopes = [\"read_orders\"] }}\n"
    );
    std::fs::create_dir(dir.join("..2026_11_22_v2")).unwrap();
    std::fs::write(dir.join("..2026_11_22_v2/test.toml"), extended).unwrap();
    symlink("..2026_11_22_v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    eventually(&h, "/shop/invoices", &token, StatusCode::OK).await;
}

/// A certificate reload with a broken file keeps serving the old certificate; the failure is
/// counted. Once the file is whole again, the new one is served.
#[tokio::test]
async fn a_broken_certificate_on_reload_keeps_the_old_one() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    let cert = std::fs::read(&h.material.tls_cert).unwrap();
    std::fs::write(
        &h.material.tls_cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = h.running.reload().unwrap_err().to_string();
    assert!(err.contains("tls.crt"), "{err}");
    // New TLS connections still handshake with the pinned (old) certificate.
    assert_eq!(
        h.get("/shop/orders", Some(&token)).await.status,
        StatusCode::OK
    );
    let m = h.metrics().await;
    assert!(
        m.contains(r#"scopegate_config_reloads_total{result="failure"} 1"#),
        "{m}"
    );
    std::fs::write(&h.material.tls_cert, cert).unwrap();
    h.running.reload().unwrap();
    assert_eq!(
        h.get("/shop/orders", Some(&token)).await.status,
        StatusCode::OK
    );
}

/// Reloads while requests are in flight: every answer comes from one whole table or the other
/// (200 under the first, 403 under the second), never an error or a half-swapped mix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_swaps_atomically() {
    let h = std::sync::Arc::new(Harness::start(TEST_ROUTES).await);
    let token = h.token(json!({"scope": "read_orders"}));
    let tightened = TEST_ROUTES.replace(
        "read = { scopes = [\"read_orders\"] }",
        "read = { scopes = [\"read_all_orders\"] }",
    );
    assert_ne!(tightened, TEST_ROUTES);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (h, token, stop) = (h.clone(), token.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut forbidden) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match h.get("/shop/orders/1", Some(&token)).await.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::FORBIDDEN => forbidden += 1,
                    other => panic!("mid-reload answer {other}"),
                }
            }
            (ok, forbidden)
        }));
    }
    let routes = h.routes_dir().join("test.toml");
    for i in 0..40 {
        let text = if i % 2 == 0 { &tightened } else { TEST_ROUTES };
        std::fs::write(&routes, text).unwrap();
        h.running.reload().unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut forbidden) = (0, 0);
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        forbidden += f;
    }
    assert!(ok > 0 && forbidden > 0, "ok {ok}, forbidden {forbidden}");
    assert_eq!(
        h.upstream.count(),
        ok,
        "only permitted requests were forwarded"
    );
}
