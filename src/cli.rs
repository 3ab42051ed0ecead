//! The command line: `demo`, `serve`, `routes check`, `token mint`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::{App, Running};
use crate::config::{Config, LogFormat};
use crate::demo::{self, DemoOptions};
use crate::mint::{self, Signer};
use crate::policy::{Explanation, Verdict};
use crate::routes;
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "scopegate",
    version,
    about = "Scope- and role-enforcing reverse proxy for commerce APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Proxy + echo upstream + dev TLS and keys + every preset in routes/; prints curl lines.
    Demo(DemoArgs),
    /// Production mode.
    Serve(ServeArgs),
    /// Route-file tools.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// Token tools.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Prints the decision for a request and why, without sending anything upstream.
    /// Exit 0 when it would be forwarded, 1 when refused.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
struct ExplainArgs {
    #[arg(long)]
    config: PathBuf,
    /// Bearer token (sent as `Authorization: Bearer T`).
    #[arg(long)]
    token: Option<String>,
    /// Extra request header, `'Name: value'` (repeatable), e.g. a companion token.
    #[arg(long = "header")]
    headers: Vec<String>,
    method: String,
    /// Path with optional query, as a client would send it.
    path: String,
}

#[derive(Debug, Args)]
struct RuntimeArgs {
    /// Worker threads (default: one per CPU; 1 runs everything on one thread).
    #[arg(long, env = "SCOPEGATE_WORKERS")]
    workers: Option<usize>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// Directory of route files to load.
    #[arg(long, default_value = "routes")]
    routes: PathBuf,
    /// Where dev material lives (created if absent).
    #[arg(long, default_value = "certs/dev")]
    certs: PathBuf,
    /// JSON log lines.
    #[arg(long)]
    json_logs: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[arg(long)]
    config: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Debug, Subcommand)]
enum RoutesCommand {
    /// Validates route files (default: routes/); errors name file and line; exit 1 on any error.
    Check { paths: Vec<PathBuf> },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Signs a test token and prints it.
    Mint(MintArgs),
}

#[derive(Debug, Args)]
struct MintArgs {
    /// Sign with the demo key (certs/dev/signing.pem, kid demo); fills iss, aud, exp.
    #[arg(long, conflicts_with_all = ["key", "alg", "kid"])]
    demo: bool,
    /// Directory of the demo material.
    #[arg(long, default_value = "certs/dev")]
    certs: PathBuf,
    /// Private key (PEM) or HMAC secret file.
    #[arg(long, required_unless_present = "demo")]
    key: Option<PathBuf>,
    #[arg(long, default_value = "RS256")]
    alg: Option<String>,
    #[arg(long)]
    kid: Option<String>,
    /// Claims as a JSON object; `null` values are left out.
    #[arg(long)]
    claims: String,
    /// Lifetime for a filled-in `exp` (demo), e.g. 1h.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => demo_command(args),
        Command::Serve(args) => Config::load(&args.config)
            .map_or_else(config_error, |config| serve_command(config, args.runtime)),
        Command::Routes(RoutesCommand::Check { paths }) => routes_check(paths),
        Command::Explain(args) => Config::load(&args.config)
            .map_or_else(config_error, |config| explain_command(config, args)),
        Command::Token(TokenCommand::Mint(args)) => mint_command(args),
    }
}

/// `demo`: the proxy with dev material and every preset; prints curl lines, serves until a signal.
fn demo_command(args: DemoArgs) -> ExitCode {
    let _log = telemetry::init_logging(args.json_logs, "info");
    let options = DemoOptions {
        listen: args.listen,
        admin_listen: args.admin_listen,
        routes: args.routes,
        certs: args.certs,
    };
    run_async(args.runtime.workers, async move {
        let (running, lines) = demo::start(&options).await?;
        println!(
            "scopegate demo: proxy https://{} (HTTP/1.1 and HTTP/2), admin http://{}/metrics",
            running.proxy_addr, running.admin_addr
        );
        println!("Paste any of these (tokens valid 24h):{lines}");
        println!("\nCtrl-C stops; SIGHUP reloads routes/ and certificates.");
        wait_for_signals(running).await;
        Ok(())
    })
}

/// `serve`: production mode, until a signal stops it.
fn serve_command(config: Config, runtime: RuntimeArgs) -> ExitCode {
    let _log = telemetry::init_logging(config.log.format == LogFormat::Json, &config.log.level);
    run_async(runtime.workers, async move {
        let running = App::build(config)?.bind_and_start().await?;
        tracing::info!(proxy = %running.proxy_addr, admin = %running.admin_addr, "scopegate serving");
        wait_for_signals(running).await;
        Ok(())
    })
}

/// `explain`: exit 0 when the request would be forwarded, 1 when refused.
fn explain_command(config: Config, args: ExplainArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return config_error(e),
    };
    match runtime.block_on(explain(config, args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => config_error(format!("{e:#}")),
    }
}

/// `token mint`: prints the signed token.
fn mint_command(args: MintArgs) -> ExitCode {
    match mint_token(args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code 64 (EX_USAGE) for a config that cannot be used.
fn config_error(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(64)
}

/// One worker thread is a current-thread runtime: every task on the thread that polls the
/// sockets, with no work-stealing queues or cross-thread wake-ups to pay for. More workers (by
/// default one per CPU) are the multi-thread runtime.
fn run_async(workers: Option<usize>, main: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let mut builder = match workers {
        Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => config_error(format!("{e:#}")),
    }
}

/// Serves until SIGINT/SIGTERM (then drains); SIGHUP reloads.
async fn wait_for_signals(running: Running) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot install signal handlers");
        let _ = tokio::signal::ctrl_c().await;
        running.shutdown().await;
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => { let _ = running.reload(); }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("shutting down; draining connections");
    running.shutdown().await;
}

async fn explain(config: Config, args: ExplainArgs) -> anyhow::Result<bool> {
    let app = App::build(config)?;
    app.load_remote_keys().await;
    let parts = explain_request(&args)?;
    let e = app.policy().explain(&parts).await;
    println!("request      {} {}", parts.method, args.path);
    print_route(&e);
    println!("needs        {}", e.needed.clone().unwrap_or_else(dash));
    print_credentials(&e, args.token.is_some());
    print_decision(&e, &parts.method);
    Ok(e.canonical_path.is_some())
}

/// The request `explain` judges, as a client would send it.
fn explain_request(args: &ExplainArgs) -> anyhow::Result<http::request::Parts> {
    let mut request = http::Request::builder()
        .method(args.method.as_str())
        .uri(args.path.as_str())
        .header(http::header::HOST, "localhost");
    if let Some(token) = &args.token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header `{h}`: expected 'Name: value'"))?;
        request = request.header(name.trim(), value.trim());
    }
    let (parts, ()) = request.body(())?.into_parts();
    Ok(parts)
}

/// What `explain` prints for a value that is absent.
fn dash() -> String {
    "-".to_owned()
}

fn print_route(e: &Explanation) {
    match &e.route {
        Some((template, source, preset)) => {
            println!("route        {template}  ({source}, preset {preset})")
        }
        None => println!("route        none"),
    }
}

fn print_credentials(e: &Explanation, sent_token: bool) {
    let Some(id) = &e.identity else {
        println!(
            "credentials  {}",
            if sent_token {
                "not accepted (see decision)"
            } else {
                "none"
            }
        );
        return;
    };
    let show = |v: &Option<Box<str>>| v.as_deref().unwrap_or("-").to_owned();
    let roles: Vec<&str> = id.roles.iter().map(|r| &**r).collect();
    println!(
        "credentials  kind={} roles={} client={} subject={} store={} exp={}",
        show(&id.token_kind),
        if roles.is_empty() {
            dash()
        } else {
            roles.join(",")
        },
        show(&id.client),
        show(&id.subject),
        show(&id.tenant),
        id.expires_at.map_or_else(dash, |t| t.to_string()),
    );
    println!(
        "holds        {}",
        e.held
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(dash)
    );
}

fn print_decision(e: &Explanation, method: &http::Method) {
    let path = e.canonical_path.as_deref().unwrap_or("-");
    match &e.verdict {
        Verdict::Allow => println!("decision     ALLOW: would forward {method} {path}"),
        // Shadow mode: live traffic forwards this and counts it as would_deny.
        Verdict::WouldDeny(r) => println!(
            "decision     WOULD_DENY {} {} ({}): would forward {method} {path}",
            r.status().as_u16(),
            r.decision(),
            r.reason(),
        ),
        Verdict::Deny(r) => println!(
            "decision     DENY {} {} ({})",
            r.status().as_u16(),
            r.decision(),
            r.reason()
        ),
    }
}

fn routes_check(paths: Vec<PathBuf>) -> ExitCode {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("routes")]
    } else {
        paths
    };
    let sources = match routes::load_paths(&paths) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match routes::compile(&sources, &routes::CompileOptions::default()) {
        Ok(table) => {
            for preset in table.presets() {
                let count = table
                    .routes()
                    .iter()
                    .filter(|r| table.preset(r.preset).name == preset.name)
                    .count();
                println!(
                    "{}: ok ({} routes, {} scopes)",
                    preset.file,
                    count,
                    preset.vocabulary.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.len());
            ExitCode::FAILURE
        }
    }
}

fn mint_token(args: MintArgs) -> anyhow::Result<String> {
    let claims: serde_json::Value = serde_json::from_str(&args.claims)
        .map_err(|e| anyhow::anyhow!("--claims is not JSON: {e}"))?;
    if args.demo {
        let material = demo::material::ensure(&args.certs)?;
        let signer = Signer::demo(&material.signing_key)?;
        return Ok(signer.sign(&mint::with_demo_defaults(claims, args.ttl.as_secs())?)?);
    }
    let alg: jsonwebtoken::Algorithm = args
        .alg
        .as_deref()
        .unwrap_or("RS256")
        .parse()
        .map_err(|_| anyhow::anyhow!("--alg: unknown algorithm"))?;
    let key = args
        .key
        .ok_or_else(|| anyhow::anyhow!("--key is required without --demo"))?;
    let signer = Signer::from_file(&key, alg, args.kid)?;
    let serde_json::Value::Object(map) = claims else {
        anyhow::bail!("--claims must be a JSON object");
    };
    Ok(signer.sign(&map)?)
}
