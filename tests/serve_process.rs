//! `scopegate serve` as a real process: JSON access log (one line per decision, no tokens),
//! SIGHUP reload, SIGTERM graceful exit.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Behaviour, TEST_ROUTES, Upstream, Version};
use http::{Request, StatusCode};
use http_body_util::Full;
use scopegate::mint::{Signer, with_demo_defaults};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(v) = probe() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_every_decision_reloads_on_sighup_and_exits_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let material = scopegate::demo::material::ensure(&dir.path().join("certs")).unwrap();
    std::fs::create_dir_all(dir.path().join("routes")).unwrap();
    std::fs::write(dir.path().join("routes/test.toml"), TEST_ROUTES).unwrap();
    let upstream = Upstream::start(Behaviour::Answer).await;
    let mut config = common::config_table(dir.path(), &material, upstream.addr);
    common::set(&mut config, "log.format", "json");
    common::set(&mut config, "admin.address", "127.0.0.1:0");
    common::write_config(&dir.path().join("scopegate.toml"), &config);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["serve", "--workers", "1", "--config"])
        .arg(dir.path().join("scopegate.toml"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = lines.clone();
    let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            let value = serde_json::from_str(&line).unwrap_or_else(|_| json!({"unparsed": line}));
            sink.lock().unwrap().push(value);
        }
    });
    let find = |message: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l["message"] == message)
            .cloned()
    };
    let serving = wait_for("the serving line", || find("scopegate serving")).await;
    let proxy: std::net::SocketAddr = serving["proxy"].as_str().unwrap().parse().unwrap();

    let client = common::Client::new(&material.tls_cert);
    let signer = Signer::demo(&material.signing_key).unwrap();
    let token = signer
        .sign(
            &with_demo_defaults(
                json!({"scope": "read_orders", "client_id": "app-9", "token_type": "implicit"}),
                600,
            )
            .unwrap(),
        )
        .unwrap();
    let send = |path: &'static str, token: Option<String>| {
        let client = client.clone();
        async move {
            let mut request = Request::get(path);
            if let Some(t) = token {
                request = request.header("authorization", format!("Bearer {t}"));
            }
            client
                .send(
                    proxy,
                    Version::H1,
                    request.body(Full::new(Bytes::new())).unwrap(),
                )
                .await
                .status
        }
    };
    assert_eq!(
        send("/shop/orders", Some(token.clone())).await,
        StatusCode::OK
    );
    assert_eq!(send("/shop/orders", None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send("/shop/catalog", Some(token.clone())).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send("/shop/invoices", Some(token.clone())).await,
        StatusCode::NOT_FOUND
    );

    let access = || -> Vec<Value> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["target"] == "scopegate::access")
            .cloned()
            .collect()
    };
    let logged = wait_for("four access lines", || {
        Some(access()).filter(|a| a.len() >= 4)
    })
    .await;
    assert_eq!(logged.len(), 4);
    assert_eq!(logged[0]["decision"], "allow");
    assert_eq!(logged[0]["route"], "/shop/orders");
    assert_eq!(logged[0]["status"], 200);
    assert_eq!(logged[0]["client"], "app-9");
    assert_eq!(logged[0]["token_kind"], "implicit");
    assert_eq!(logged[1]["decision"], "unauthenticated");
    assert_eq!(logged[1]["reason"], "no_credentials");
    assert_eq!(logged[2]["decision"], "forbidden");
    assert_eq!(
        logged[2]["client"], "app-9",
        "denials name the client once the token is verified"
    );
    assert_eq!(logged[3]["decision"], "no_route");
    assert_eq!(logged[3]["route"], "(none)");
    let all = format!("{:?}", lines.lock().unwrap());
    assert!(!all.contains(&token[..30]), "a log line carries the token");
    assert!(
        !all.contains("/shop/invoices"),
        "a log line carries a raw unmatched path"
    );

    // SIGHUP picks up a changed route file.
    let extended = format!(
        "{TEST_ROUTES}\n[[route]]\npath = \"/shop/invoices\"\nread = {{ scopes = [\"read_orders\"] }}\n"
    );
    std::fs::write(dir.path().join("routes/test.toml"), extended).unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the reload line", || find("configuration reloaded")).await;
    assert_eq!(
        send("/shop/invoices", Some(token.clone())).await,
        StatusCode::OK
    );

    // SIGTERM drains and exits cleanly.
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn serve_refuses_a_bad_config_with_exit_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[listen]\naddress = \"127.0.0.1:0\"\nport = 1\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: line 3: unknown field `port`"),
        "{err}"
    );
}
