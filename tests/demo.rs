//! `scopegate demo` as a user runs it: every printed curl line, pasted into a real curl, gives
//! the status its preset promises; every preset shows an allow, a 401 and a 403.

mod common;

use std::process::Command;

use http::{Request, StatusCode};
use http_body_util::Full;
use scopegate::demo::{self, DemoOptions};

fn repo_routes() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("routes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_curl_lines_give_the_promised_statuses() {
    let certs = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        routes: repo_routes(),
        certs: certs.path().to_path_buf(),
    };
    let (running, lines) = demo::start(&options).await.unwrap();
    for file in ["tls.crt", "tls.key", "signing.pem", "jwks.json"] {
        assert!(
            certs.path().join(file).is_file(),
            "demo did not create {file}"
        );
    }
    let jwks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(certs.path().join("jwks.json")).unwrap()).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], "demo");

    let mut expected = Vec::new();
    let mut pasted = Vec::new();
    for line in lines.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let status: u16 = rest
                .rsplit("expect ")
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            expected.push(status);
        } else if line.starts_with("curl ") {
            let out = tokio::task::spawn_blocking({
                let line = line.to_owned();
                move || {
                    Command::new("bash")
                        .arg("-c")
                        .arg(format!(
                            "{line} -o /dev/null -w '%{{http_code}} %{{http_version}}'"
                        ))
                        .output()
                        .expect("curl runs")
                }
            })
            .await
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut parts = text.split(' ');
            let code: u16 = parts.next().unwrap().parse().unwrap_or(0);
            assert_eq!(
                parts.next(),
                Some("2"),
                "curl negotiates HTTP/2 via ALPN: {line}"
            );
            pasted.push(code);
        }
    }
    assert!(!pasted.is_empty());
    assert_eq!(pasted, expected, "{lines}");

    // Each preset shows an allow, a 401 and a 403.
    let table = running.table();
    for preset in table.presets() {
        for want in [200, 401, 403] {
            assert!(
                preset.examples.iter().any(|e| e.expect == want),
                "preset {} has no example answering {want}",
                preset.name
            );
        }
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mint_cli_signs_tokens_the_demo_accepts() {
    let certs = tempfile::tempdir().unwrap();
    let options = DemoOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        routes: repo_routes(),
        certs: certs.path().to_path_buf(),
    };
    let (running, _) = demo::start(&options).await.unwrap();
    let mint = |claims: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
            .args(["token", "mint", "--demo", "--certs"])
            .arg(certs.path())
            .args(["--claims", claims])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let client = common::Client::new(&certs.path().join("tls.crt"));
    let call = |token: String| {
        let client = client.clone();
        let addr = running.proxy_addr;
        async move {
            let request = Request::get("/v2/customers")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::default())
                .unwrap();
            client.send(addr, common::Version::H2, request).await.status
        }
    };
    let admin = mint(r#"{"token_type":"client_credentials","role":"seller-admin"}"#);
    assert_eq!(call(admin).await, StatusCode::OK);
    let marketing = mint(r#"{"token_type":"client_credentials","role":"marketing-sales"}"#);
    assert_eq!(call(marketing).await, StatusCode::FORBIDDEN);
    let expired = mint(r#"{"token_type":"client_credentials","role":"seller-admin","exp":1000}"#);
    assert_eq!(call(expired).await, StatusCode::UNAUTHORIZED);

    let bad = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["token", "mint", "--demo", "--certs"])
        .arg(certs.path())
        .args(["--claims", "[1,2]"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("JSON object"));
    running.shutdown().await;
}
