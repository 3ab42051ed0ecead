//! `scopegate demo`: the proxy with every preset, a built-in echo upstream, dev TLS and signing
//! material, and ready-to-paste curl lines (an allow, a 401 and a 403 per preset).

pub mod echo;
pub mod material;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::net::TcpListener;

use crate::app::{App, Running};
use crate::config::Config;
use crate::mint::{DEMO_AUDIENCE, DEMO_ISSUER, Signer, with_demo_defaults};
use crate::routes::RouteTable;
use material::DevMaterial;

/// Lifetime of the tokens printed by the demo.
const DEMO_TOKEN_TTL: u64 = 24 * 3600;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub routes: PathBuf,
    pub certs: PathBuf,
}

/// The demo's serve config, as TOML text (also a starting point for a real one).
pub fn config_text(options: &DemoOptions, material: &DevMaterial, upstream: SocketAddr) -> String {
    let q = |p: &Path| toml::Value::from(p.display().to_string()).to_string();
    format!(
        r#"realm = "scopegate-demo"

[listen]
address = "{listen}"
tls_cert = {cert}
tls_key = {key}

[admin]
address = "{admin}"

[routes]
paths = [{routes}]

[upstreams.default]
url = "http://{upstream}"
response_timeout = "10s"

[jwt]
issuer = "{DEMO_ISSUER}"
audiences = ["{DEMO_AUDIENCE}"]
leeway = "30s"

[[jwt.keys]]
jwks_file = {jwks}
algorithms = ["RS256"]
# Elastic Path companion tokens (demo: signed by the same key, told apart by token_type).
[jwt.companions.customer]
[[jwt.companions.customer.keys]]
jwks_file = {jwks}
algorithms = ["RS256"]

[jwt.companions.account_management]
[[jwt.companions.account_management.keys]]
jwks_file = {jwks}
algorithms = ["RS256"]
"#,
        listen = options.listen,
        admin = options.admin_listen,
        cert = q(&material.tls_cert),
        key = q(&material.tls_key),
        routes = q(&options.routes),
        jwks = q(&material.jwks),
    )
}

/// Prepares material and the echo upstream, starts the proxy and prints the curl lines.
pub async fn start(options: &DemoOptions) -> anyhow::Result<(Running, String)> {
    if !options.routes.is_dir() {
        anyhow::bail!(
            "{}: no route directory here; run from the repository root or pass --routes DIR",
            options.routes.display()
        );
    }
    let material = material::ensure(&options.certs)?;
    let upstream = echo::spawn(TcpListener::bind("127.0.0.1:0").await?);
    let config =
        Config::parse(&config_text(options, &material, upstream)).map_err(anyhow::Error::msg)?;
    let app = App::build(config)?;
    let running = app.bind_and_start().await?;
    let signer = Signer::demo(&material.signing_key)?;
    let lines = curl_lines(
        &running.table(),
        &signer,
        &material.tls_cert,
        running.proxy_addr,
    )?;
    Ok((running, lines))
}

/// One curl line per `[[example]]` of every loaded preset.
pub fn curl_lines(
    table: &RouteTable,
    signer: &Signer,
    ca: &Path,
    proxy: SocketAddr,
) -> anyhow::Result<String> {
    let ca = std::fs::canonicalize(ca).unwrap_or_else(|_| ca.to_path_buf());
    let host = if proxy.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], proxy.port()))
    } else {
        proxy
    };
    let mut out = String::new();
    for preset in table.presets() {
        writeln!(out, "\n## {} ({})", preset.name, preset.file)?;
        for example in preset.examples.iter() {
            writeln!(out, "# {} -> expect {}", example.title, example.expect)?;
            let mut line = format!("curl -si --cacert '{}'", ca.display());
            if example.method != http::Method::GET {
                write!(line, " -X {}", example.method)?;
                if example.method != http::Method::DELETE {
                    line.push_str(" -H 'Content-Type: application/json' -d '{}'");
                }
            }
            if let Some(claims) = &example.claims {
                let token = signer.sign(&with_demo_defaults(claims.clone(), DEMO_TOKEN_TTL)?)?;
                write!(line, " -H 'Authorization: Bearer {token}'")?;
            }
            writeln!(line, " 'https://{host}{}'", example.path)?;
            out.push_str(&line);
        }
    }
    Ok(out)
}

/// Claims of an example, with demo defaults (for tests that replay the examples).
pub fn example_claims(claims: &Value) -> anyhow::Result<serde_json::Map<String, Value>> {
    Ok(with_demo_defaults(claims.clone(), DEMO_TOKEN_TTL)?)
}
