//! deploy/ against the real binary: every metric the Grafana dashboard and the Prometheus rules
//! name is exported by a running scopegate; the certificate-expiry and last-reload gauges follow
//! what is loaded; the Kubernetes serve configs load with the repository's route files.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Harness, TEST_ROUTES, Upstream};
use http::StatusCode;
use promql_parser::parser::{Expr, parse};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use scopegate::app::App;
use scopegate::config::Config;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Metric names a PromQL expression selects (functions, labels and keywords are not names).
fn selected_metrics(expr: &str) -> Result<BTreeSet<String>, String> {
    struct Names(BTreeSet<String>, Vec<String>);
    impl ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            let selector = match expr {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(vs) = selector {
                match &vs.name {
                    Some(name) => {
                        self.0.insert(name.clone());
                    }
                    None => self.1.push(format!("selector without a metric name: {vs}")),
                }
            }
            Ok(true)
        }
    }
    let ast = parse(expr).map_err(|e| format!("{expr}: {e}"))?;
    let mut names = Names(BTreeSet::new(), Vec::new());
    walk_expr(&mut names, &ast)?;
    match names.1.pop() {
        Some(e) => Err(e),
        None => Ok(names.0),
    }
}

/// Grafana variables replaced so that the expression is plain PromQL: `$__rate_interval` and
/// friends become a duration, `$job` / `${route}` a plain word (they sit inside label regexes).
fn without_grafana_variables(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let braced = after.starts_with('{');
        let body = if braced { &after[1..] } else { after };
        let len = body
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(body.len());
        let name = &body[..len];
        out.push_str(if name.starts_with("__") { "5m" } else { "x" });
        rest = &body[len + usize::from(braced)..];
    }
    out.push_str(rest);
    out
}

/// Every PromQL expression of the dashboard: panel targets (rows included) and the
/// `label_values(SELECTOR, label)` variable queries.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_owned());
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = var["query"]["query"].as_str().or(var["query"].as_str());
        if let Some(q) = query.filter(|_| var["type"] == "query") {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.rsplit_once(','))
                .map(|(selector, _label)| selector.to_owned())
                .unwrap_or_else(|| q.to_owned());
            out.push(inner);
        }
    }
    out.into_iter()
        .map(|e| without_grafana_variables(&e))
        .collect()
}

/// (expressions, recorded names) of a Prometheus rules file.
fn rule_exprs(path: &Path) -> (Vec<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
    let mut exprs = Vec::new();
    let mut records = BTreeSet::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr").to_owned());
            if let Some(r) = rule["record"].as_str() {
                records.insert(r.to_owned());
            }
        }
    }
    (exprs, records)
}

/// `# TYPE name kind` of a text exposition.
fn exported(metrics: &str) -> Vec<(String, String)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_owned(), k.to_owned()))
        .collect()
}

/// The names in `used` that the exposition does not have (histogram series resolved to their
/// family; `allowed` are names that come from elsewhere, such as recording rules).
fn missing(used: &BTreeSet<String>, metrics: &str, allowed: &BTreeSet<String>) -> Vec<String> {
    let families = exported(metrics);
    let has = |name: &str| families.iter().any(|(n, _)| n == name);
    let histogram = |name: &str| families.iter().any(|(n, k)| n == name && k == "histogram");
    used.iter()
        .filter(|name| {
            let series_of_histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(histogram));
            !(allowed.contains(*name) || has(name) || series_of_histogram)
        })
        .cloned()
        .collect()
}

/// A proxy that has seen one request of every kind, so that every labelled series exists: an
/// allow (twice: a cache miss, then a hit), 401, 403, an invalid token, 404, an upstream
/// failure, an opaque token whose introspection endpoint is down, a failed TLS handshake, and
/// a remote JWKS that cannot be fetched.
async fn scopegate_with_every_series() -> (Harness, String) {
    let upstream = Upstream::start(common::Behaviour::Answer).await;
    let down = common::closed_port().await;
    let jwks_down = common::closed_port().await;
    let idp_down = common::closed_port().await;
    let routes = format!(
        "{TEST_ROUTES}\n[[route]]\npath = \"/shop/down\"\nupstream = \"down\"\nread = {{ public = true }}\n"
    );
    let extra = format!(
        r#"
[upstreams.down]
url = "http://{down}"
connect_timeout = "200ms"

[[jwt.keys]]
jwks_url = "http://{jwks_down}/jwks.json"
refresh_interval = "100ms"
cooldown = "100ms"
algorithms = ["RS256"]

[opaque.introspection]
url = "http://{idp_down}/introspect"
timeout = "200ms"
"#
    );
    let h = Harness::new(&routes)
        .upstream(upstream)
        .toml(&extra)
        .start()
        .await;
    let allowed = h.token(json!({"scope": "read_orders"}));
    let other = h.token(json!({"scope": "read_products"}));
    assert_eq!(h.get("/shop/orders", Some(&allowed)).await.status, 200);
    assert_eq!(h.get("/shop/orders", Some(&allowed)).await.status, 200);
    assert_eq!(h.get("/shop/orders", None).await.status, 401);
    assert_eq!(h.get("/shop/orders", Some(&other)).await.status, 403);
    assert_eq!(h.get("/shop/orders", Some("a.b.c")).await.status, 401);
    assert_eq!(h.get("/nowhere", Some(&allowed)).await.status, 404);
    assert_eq!(h.get("/shop/down", None).await.status, 502);
    assert_eq!(
        h.get("/shop/orders", Some("opaque-token")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let mut raw = tokio::net::TcpStream::connect(h.running.proxy_addr)
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    drop(raw);
    // The remote JWKS is fetched in the background: wait for its (failed) refresh.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = h.metrics().await;
        if m.contains("scopegate_jwks_refreshes_total{") {
            return (h, m);
        }
        assert!(Instant::now() < deadline, "no JWKS refresh counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dashboard_and_rules_name_only_metrics_a_running_scopegate_exports() {
    let (_h, metrics) = scopegate_with_every_series().await;
    // Every family the binary registers is present, so a missing name below is a real typo.
    for family in [
        "scopegate_upstream_errors_total",
        "scopegate_introspections_total",
        "scopegate_jwks_refreshes_total",
        "scopegate_open_connections",
        "scopegate_token_verifications_total",
    ] {
        assert!(metrics.contains(&format!("# TYPE {family} ")), "{family}");
    }

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("deploy/grafana/scopegate.json")).unwrap(),
    )
    .unwrap();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 20, "only {} expressions found", exprs.len());
    let mut used = BTreeSet::new();
    for e in &exprs {
        used.extend(selected_metrics(e).unwrap());
    }
    let none = BTreeSet::new();
    assert_eq!(
        missing(&used, &metrics, &none),
        Vec::<String>::new(),
        "dashboard names metrics that scopegate does not export"
    );
    // What the dashboard is for.
    for needed in [
        "scopegate_requests_total",
        "scopegate_denials_total",
        "scopegate_decision_duration_seconds_bucket",
        "scopegate_upstream_duration_seconds_bucket",
        "scopegate_token_cache_hits_total",
        "scopegate_token_cache_misses_total",
        "scopegate_config_reloads_total",
        "scopegate_tls_certificate_expiry_timestamp_seconds",
    ] {
        assert!(used.contains(needed), "the dashboard shows no {needed}");
    }

    let (exprs, records) = rule_exprs(&repo("deploy/prometheus/scopegate-rules.yml"));
    let mut used = BTreeSet::new();
    for e in &exprs {
        used.extend(selected_metrics(e).unwrap());
    }
    // `up` is Prometheus' own series for every target.
    let mut allowed = records.clone();
    allowed.insert("up".to_owned());
    assert_eq!(
        missing(&used, &metrics, &allowed),
        Vec::<String>::new(),
        "rules name metrics that scopegate does not export"
    );
    // Every recording rule is used by an alert or is a dashboard-style aggregate, and none is
    // named like a raw metric.
    assert!(records.iter().all(|r| r.starts_with("scopegate:")));
}

#[test]
fn metric_names_come_from_selectors_only() {
    let names = selected_metrics(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(scopegate_upstream_duration_seconds_bucket{route=~"x"}[5m]))) > on (job) group_left scopegate_jwks_keys offset 5m"#,
    )
    .unwrap();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "scopegate_jwks_keys",
            "scopegate_upstream_duration_seconds_bucket"
        ]
    );
    assert_eq!(
        without_grafana_variables(r#"rate(m{job=~"$job",r="${route}"}[$__rate_interval])"#),
        r#"rate(m{job=~"x",r="x"}[5m])"#
    );
    assert!(selected_metrics("sum(rate(m[5m])").is_err());
    let families = "# TYPE a_seconds histogram\n# TYPE b_total counter\n";
    let used: BTreeSet<String> = ["a_seconds_bucket", "b_total", "b_total_count", "c"]
        .map(String::from)
        .into();
    assert_eq!(
        missing(&used, families, &BTreeSet::new()),
        ["b_total_count", "c"]
    );
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
        .parse()
        .unwrap()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64
}

const EXPIRY: &str = "scopegate_tls_certificate_expiry_timestamp_seconds";
const LAST_RELOAD: &str = "scopegate_config_last_reload_success_timestamp_seconds";

/// The expiry gauge is the served leaf's notAfter, at start and after each certificate reload;
/// a broken certificate keeps the old one and its expiry. The last-reload timestamp moves on
/// each successful load only.
#[tokio::test]
async fn certificate_expiry_and_last_reload_follow_what_is_loaded() {
    let started = unix_now();
    let h = Harness::start(TEST_ROUTES).await;
    let m = h.metrics().await;
    // The dev certificate is rcgen's default, valid until 4096-01-01.
    let default_not_after = rcgen::date_time_ymd(4096, 1, 1).unix_timestamp() as f64;
    assert_eq!(gauge(&m, EXPIRY), default_not_after);
    let first_load = gauge(&m, LAST_RELOAD);
    assert!(
        first_load >= started && first_load <= unix_now(),
        "{first_load}"
    );

    // A renewed certificate, valid until 2031-05-17.
    let not_after = rcgen::date_time_ymd(2031, 5, 17);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = not_after;
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(&h.material.tls_cert, cert.pem()).unwrap();
    std::fs::write(&h.material.tls_key, key.serialize_pem()).unwrap();
    // Timestamps are whole seconds: make the reload land in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.running.reload().unwrap();
    let m = h.metrics().await;
    assert_eq!(gauge(&m, EXPIRY), not_after.unix_timestamp() as f64);
    let second_load = gauge(&m, LAST_RELOAD);
    assert!(second_load > first_load, "{second_load} <= {first_load}");

    // A broken certificate: the reload fails, the served certificate and both gauges stay.
    std::fs::write(&h.material.tls_cert, "-----BEGIN CERTIFICATE-----\nnope\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(h.running.reload().is_err());
    let m = h.metrics().await;
    assert_eq!(gauge(&m, EXPIRY), not_after.unix_timestamp() as f64);
    assert_eq!(gauge(&m, LAST_RELOAD), second_load);
}

/// Without TLS (behind a terminating balancer) there is no certificate: the gauge is 0, which
/// the expiry alerts leave alone.
#[tokio::test]
async fn no_certificate_means_expiry_zero() {
    let h = Harness::new(TEST_ROUTES).plaintext().start().await;
    assert_eq!(gauge(&h.metrics().await, EXPIRY), 0.0);
}

/// The serve configs shipped for Kubernetes load with the real binary's parser and the
/// repository's route files, at the pod's paths (moved under a temporary directory), with the
/// cache bound exported for the saturation alert.
#[tokio::test]
async fn kubernetes_serve_configs_load_with_the_repository_routes() {
    for file in [
        "deploy/kubernetes/base/scopegate.toml",
        "deploy/kubernetes/overlays/production/scopegate.toml",
    ] {
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            config.routes.paths,
            [PathBuf::from("/etc/scopegate/routes")],
            "{file}"
        );
        let root = tempfile::tempdir().unwrap();
        let pod = |p: &str| root.path().join(p.trim_start_matches('/'));
        let tls = pod("/etc/scopegate/tls");
        scopegate::demo::material::ensure(&tls).unwrap();
        std::fs::create_dir_all(pod("/etc/scopegate/routes")).unwrap();
        for entry in std::fs::read_dir(repo("routes")).unwrap() {
            let entry = entry.unwrap();
            // Route files only: routes/graphql/ holds schemas, not yet part of the ConfigMap.
            if !entry.path().is_file() {
                continue;
            }
            std::fs::copy(
                entry.path(),
                pod("/etc/scopegate/routes").join(entry.file_name()),
            )
            .unwrap();
        }
        // The identity provider is a placeholder: point the key set at a closed loopback port
        // (nothing leaves the machine; readiness waits, the proxy still starts).
        let idp = common::closed_port().await;
        let mut moved = toml::Value::Table(text.parse().unwrap_or_else(|e| panic!("{file}: {e}")));
        let (mut paths, mut key_sets) = (0, Vec::new());
        each_string(&mut moved, None, &mut |key, s| {
            if s.starts_with("/etc/scopegate/") {
                *s = format!("{}{s}", root.path().display());
                paths += 1;
            }
            if key == Some("jwks_url") {
                if s == "https://idp.example.com/.well-known/jwks.json" {
                    *s = format!("http://{idp}/jwks.json");
                }
                key_sets.push(s.clone());
            }
        });
        assert!(paths > 0, "{file}: no pod path moved");
        assert!(
            !key_sets.iter().any(|url| url.starts_with("https")),
            "{file}: unexpected key set URL: {key_sets:?}"
        );
        let config_path = pod("/etc/scopegate/config/scopegate.toml");
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        std::fs::write(&config_path, toml::to_string(&moved).unwrap()).unwrap();
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let max_entries = config.cache.max_entries;
        let app = App::build(config).unwrap_or_else(|e| panic!("{file}: {e}"));
        let running = app
            .start(
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
            .unwrap();
        assert!(running.table().routes().len() > 100, "{file}");
        let m = admin_get(running.admin_addr, "/metrics").await;
        assert_eq!(
            gauge(&m, "scopegate_token_cache_max_entries"),
            max_entries as f64,
            "{file}"
        );
        running.shutdown().await;
    }
}

/// Calls `edit(key, string)` for every string in `value`; `key` is the table key it sits under
/// (for an array's items, the array's key).
fn each_string(
    value: &mut toml::Value,
    key: Option<&str>,
    edit: &mut impl FnMut(Option<&str>, &mut String),
) {
    match value {
        toml::Value::String(s) => edit(key, s),
        toml::Value::Array(items) => items.iter_mut().for_each(|v| each_string(v, key, edit)),
        toml::Value::Table(t) => t
            .iter_mut()
            .for_each(|(k, v)| each_string(v, Some(k.as_str()), edit)),
        _ => {}
    }
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nhost: admin\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
