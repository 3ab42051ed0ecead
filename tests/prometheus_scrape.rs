//! A real Prometheus server (the `prometheus` binary, loopback only) scrapes a running
//! scopegate's admin port with deploy/prometheus/scopegate-rules.yml loaded: the request
//! counters it stores are exactly the requests sent, and every rule evaluates without error.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Harness, TEST_ROUTES};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// The Prometheus process, killed (by its PID) and reaped when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a Prometheus HTTP API path; None while it is not answering yet.
    async fn api(&self, path_and_query: &str) -> Option<Value> {
        let stream = TcpStream::connect(self.addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .uri(path_and_query)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let value: Value = serde_json::from_slice(&body).ok()?;
        (value["status"] == "success").then(|| value["data"].clone())
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Starts Prometheus scraping `target` every second, or None when the binary is missing
/// outside CI (under CI=true a missing binary fails the test).
fn start_prometheus(dir: &Path, target: SocketAddr) -> Option<Prometheus> {
    if Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("the prometheus binary is missing (apt-get install prometheus)");
        }
        eprintln!("skipped: no prometheus binary; install it with `apt-get install prometheus`");
        return None;
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/scopegate-rules.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: scopegate\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules = rules.display()
        ),
    )
    .unwrap();
    let addr = free_port();
    let log = dir.join("prometheus.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("start prometheus");
    Some(Prometheus { child, addr, log })
}

/// `scopegate_requests_total` as Prometheus has it: (route, method, decision) -> value.
fn requests_by_series(data: &Value) -> BTreeMap<(String, String, String), f64> {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let m = &r["metric"];
            let label = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            ((label("route"), label("method"), label("decision")), value)
        })
        .collect()
}

#[tokio::test]
async fn prometheus_scrapes_exactly_the_requests_sent_and_every_rule_evaluates() {
    let h = Harness::start(TEST_ROUTES).await;
    let dir = tempfile::tempdir().unwrap();
    let Some(prometheus) = start_prometheus(dir.path(), h.running.admin_addr) else {
        return;
    };

    let allowed = h.token(json!({"scope": "read_orders"}));
    let other = h.token(json!({"scope": "read_products"}));
    for _ in 0..3 {
        assert_eq!(h.get("/shop/orders", Some(&allowed)).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(h.get("/shop/orders", Some(&other)).await.status, 403);
    }
    assert_eq!(h.get("/shop/orders", None).await.status, 401);
    assert_eq!(h.get("/shop/health", None).await.status, 200);
    let expected: BTreeMap<(String, String, String), f64> = [
        ("/shop/orders", "allow", 3.0),
        ("/shop/orders", "forbidden", 2.0),
        ("/shop/orders", "unauthenticated", 1.0),
        ("/shop/health", "allow", 1.0),
    ]
    .into_iter()
    .map(|(r, d, v)| ((r.to_owned(), "GET".to_owned(), d.to_owned()), v))
    .collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = BTreeMap::new();
    while Instant::now() < deadline {
        if let Some(data) = prometheus
            .api("/api/v1/query?query=scopegate_requests_total")
            .await
        {
            seen = requests_by_series(&data);
            if seen == expected {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        seen,
        expected,
        "Prometheus did not store exactly the requests sent; its log:\n{}",
        prometheus.log()
    );

    // The deploy rules, loaded by the real server, evaluate against real scopegate series.
    let mut rules = Vec::new();
    while Instant::now() < deadline + Duration::from_secs(15) {
        if let Some(data) = prometheus.api("/api/v1/rules").await {
            rules = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            if !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        rules.len() >= 10,
        "rules not loaded: {rules:?}\n{}",
        prometheus.log()
    );
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // A recording rule has output from the scraped counters.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let data = prometheus
            .api("/api/v1/query?query=scopegate:requests:rate5m")
            .await;
        if data.is_some_and(|d| d["result"].as_array().is_some_and(|r| r.len() == 4)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scopegate:requests:rate5m never had the 4 series"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
