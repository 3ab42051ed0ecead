//! Wiring: a [`Config`] becomes a running proxy and admin listener; reload and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderName;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Readiness};
use crate::config::{CompanionConfig, Config, KeyConfig};
use crate::credentials::cache::TokenCache;
use crate::credentials::jwks_remote::{RemoteJwks, RemoteJwksSpec};
use crate::credentials::jwt::{ClaimRules, JwtVerifier};
use crate::credentials::keys::{self, KeySource};
use crate::credentials::opaque::{IntrospectionSpec, Introspector, StaticTokens};
use crate::credentials::{
    Authenticator, CompanionVerifier, OpaqueSources, companion_header, unix_now,
};
use crate::listener::{self, ListenerOptions, TlsSettings};
use crate::routes::{self, Companion, RouteTable};
use crate::service::{Gateway, GatewaySettings};
use crate::telemetry::Metrics;
use crate::tls;
use crate::upstream::{IdentityHeaderNames, Upstream, UpstreamSpec};

/// A config that cannot start, with every reason.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct StartError(pub Vec<String>);

impl StartError {
    fn one(message: impl ToString) -> StartError {
        StartError(vec![message.to_string()])
    }
}

/// Everything built from a config, before any socket is bound.
#[derive(Debug)]
pub struct App {
    config: Config,
    gateway: Arc<Gateway>,
    tls: Option<TlsSettings>,
    metrics: Arc<Metrics>,
    /// Remote JWKS sources, refreshed in the background once started.
    remote_keys: Vec<Arc<RemoteJwks>>,
}

impl App {
    /// Loads keys, certificates and route files; any error stops here, at load time.
    pub fn build(config: Config) -> Result<App, StartError> {
        let metrics = Arc::new(Metrics::new());
        metrics
            .token_cache_max_entries
            .set(i64::try_from(config.cache.max_entries).unwrap_or(i64::MAX));
        let upstreams = config
            .upstreams
            .iter()
            .map(|(name, u)| {
                let url = u
                    .url
                    .parse()
                    .map_err(|e| StartError::one(format!("upstreams.{name}.url: {e}")))?;
                Upstream::new(&UpstreamSpec {
                    name: name.clone(),
                    url,
                    connect_timeout: u.connect_timeout,
                    response_timeout: u.response_timeout,
                    pool_idle_timeout: u.pool_idle_timeout,
                    pool_max_idle: u.pool_max_idle,
                    read_ahead: config.limits.buffer_body_bytes,
                })
                .map_err(StartError::one)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = config.upstreams.keys().cloned().collect();
        let table = compile_routes(&config, &names)?;
        if !names.iter().any(|n| n == "default")
            && table.routes().iter().any(|r| r.upstream.is_none())
        {
            return Err(StartError::one(
                "upstreams: some routes name no upstream, so an upstream called `default` is needed",
            ));
        }
        let mut remote = Vec::new();
        let (keys, sources) = load_keys("jwt.keys", &config.jwt.keys, &metrics)?;
        remote.extend(sources.iter().cloned());
        let verifier = JwtVerifier::new(keys, sources, claim_rules(&config));
        let cache = || {
            TokenCache::new(
                config.cache.max_entries,
                config.cache.max_ttl.as_secs().max(1),
            )
        };
        let mut companion =
            |kind: Companion, c: &Option<CompanionConfig>| -> Result<_, StartError> {
                let Some(c) = c else { return Ok(None) };
                let prefix = format!("jwt.companions.{}", kind.token_type());
                let header = match &c.header {
                    Some(h) => {
                        HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                            StartError::one(format!("{prefix}.header: `{h}` is not a header name"))
                        })?
                    }
                    None => companion_header(kind),
                };
                let (keys, sources) = load_keys(&format!("{prefix}.keys"), &c.keys, &metrics)?;
                remote.extend(sources.iter().cloned());
                Ok(Some(CompanionVerifier::new(
                    header,
                    JwtVerifier::new(keys, sources, claim_rules(&config)),
                    cache(),
                )))
            };
        let companions = [
            companion(Companion::Customer, &config.jwt.companions.customer)?,
            companion(
                Companion::AccountManagement,
                &config.jwt.companions.account_management,
            )?,
        ];
        let opaque = opaque_sources(&config, &metrics)?;
        let auth = Authenticator::new(verifier, cache(), companions, opaque, metrics.clone());
        let settings = GatewaySettings {
            realm: config.realm.clone(),
            max_request_body: config.limits.max_request_body_bytes,
            identity_headers: identity_header_names(&config)?,
            access_log: config.log.access,
            read_ahead: config.limits.buffer_body_bytes,
            request_body_timeout: config.limits.request_body_timeout,
            cors: match &config.cors {
                Some(c) => Some(Arc::new(
                    crate::cors::Cors::new(c).map_err(|e| StartError::one(format!("cors: {e}")))?,
                )),
                None => None,
            },
        };
        let tls = match (&config.listen.tls_cert, &config.listen.tls_key) {
            (Some(cert), Some(key)) => {
                let loaded = tls::load(cert, key).map_err(StartError::one)?;
                set_certificate_expiry(&metrics, &loaded);
                Some(Arc::new(ArcSwap::new(loaded.config)))
            }
            _ => None,
        };
        metrics.config_reloads.with_label_values(&["success"]).inc();
        metrics.config_last_reload_success.set(unix_now() as f64);
        let gateway = Arc::new(Gateway::new(
            table,
            auth,
            upstreams,
            metrics.clone(),
            settings,
        ));
        Ok(App {
            config,
            gateway,
            tls,
            metrics,
            remote_keys: remote,
        })
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Fetches every remote key set once (for one-shot commands such as `explain`).
    pub async fn load_remote_keys(&self) {
        for remote in &self.remote_keys {
            if let Err(e) = remote.refresh().await {
                tracing::warn!(error = %e, "JWKS URL did not answer");
            }
        }
    }

    /// Starts serving on already-bound listeners (tests bind port 0).
    pub fn start(
        self,
        proxy: TcpListener,
        admin_listener: TcpListener,
    ) -> Result<Running, StartError> {
        let proxy_addr = proxy.local_addr().map_err(StartError::one)?;
        let admin_addr = admin_listener.local_addr().map_err(StartError::one)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let ready = Arc::new(Readiness {
            serving: AtomicBool::new(true),
            remote_keys: self.remote_keys.clone(),
        });
        let options = ListenerOptions {
            tls: self.tls.clone(),
            handshake_timeout: self.config.listen.handshake_timeout,
            limits: self.config.limits.clone(),
        };
        let proxy_task = tokio::spawn(listener::serve(
            proxy,
            self.gateway.clone(),
            options,
            shutdown_rx.clone(),
        ));
        let admin_task = tokio::spawn(admin::serve(
            admin_listener,
            self.metrics.clone(),
            ready.clone(),
            shutdown_rx.clone(),
        ));
        let mut tasks = vec![proxy_task, admin_task];
        for remote in &self.remote_keys {
            tasks.push(remote.spawn_refresher(shutdown_rx.clone()));
        }
        let app = Arc::new(self);
        if app.config.reload.watch {
            // The baseline is what was loaded, taken now, not when the task first runs.
            let loaded = fingerprint(&app.config);
            tasks.push(tokio::spawn(watch_files(app.clone(), loaded, shutdown_rx)));
        }
        Ok(Running {
            app,
            proxy_addr,
            admin_addr,
            shutdown: shutdown_tx,
            ready,
            tasks,
        })
    }

    /// Binds the configured addresses and starts.
    pub async fn bind_and_start(self) -> Result<Running, StartError> {
        let proxy = bind(self.config.listen.address).await?;
        let admin_listener = bind(self.config.admin.address).await?;
        self.start(proxy, admin_listener)
    }

    /// Re-reads route files and certificates. A file that fails leaves what is running as it
    /// was; the result is counted and logged.
    pub fn reload(&self) -> Result<(), StartError> {
        let result = self.try_reload();
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(()) => {
                self.metrics
                    .config_last_reload_success
                    .set(unix_now() as f64);
                tracing::info!(
                    generation = self.gateway.table().generation(),
                    "configuration reloaded"
                );
            }
            Err(e) => {
                tracing::error!(errors = %e, "reload failed; keeping the running configuration")
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(), StartError> {
        let table = compile_routes(&self.config, &self.gateway.upstream_names())?;
        let tls = match (&self.config.listen.tls_cert, &self.config.listen.tls_key) {
            (Some(cert), Some(key)) => Some(tls::load(cert, key).map_err(StartError::one)?),
            _ => None,
        };
        // Only swap once everything loaded.
        self.gateway.replace_table(table);
        if let (Some(current), Some(new)) = (&self.tls, tls) {
            set_certificate_expiry(&self.metrics, &new);
            current.store(new.config);
        }
        Ok(())
    }
}

/// A started proxy.
#[derive(Debug)]
pub struct Running {
    app: Arc<App>,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    ready: Arc<Readiness>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn reload(&self) -> Result<(), StartError> {
        self.app.reload()
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.app.gateway
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.app.gateway.table()
    }

    /// Stops accepting, reports not ready, and drains connections (bounded by the drain time).
    pub async fn shutdown(self) {
        self.ready.serving.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Reloads when the content of a route file, the certificate or the key changes. Content, not
/// mtime: a Kubernetes `..data` symlink swap changes what the paths read, whatever the times.
async fn watch_files(app: Arc<App>, loaded: u64, mut shutdown: watch::Receiver<bool>) {
    let mut seen = loaded;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(app.config.reload.interval) => {}
            _ = shutdown.changed() => return,
        }
        let now = fingerprint(&app.config);
        if now != seen {
            seen = now;
            tracing::info!("configuration files changed; reloading");
            // A failed reload keeps the running table (and is counted); the next change retries.
            let _ = app.reload();
        }
    }
}

/// A hash of every watched file's name and content (unreadable files hash as absent).
fn fingerprint(config: &Config) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match routes::load_paths(&config.routes.paths) {
        Ok(sources) => {
            for s in sources {
                s.name.hash(&mut h);
                s.text.hash(&mut h);
            }
        }
        Err(e) => e.to_string().hash(&mut h),
    }
    for path in [&config.listen.tls_cert, &config.listen.tls_key]
        .into_iter()
        .flatten()
    {
        std::fs::read(path).ok().hash(&mut h);
    }
    h.finish()
}

/// `scopegate_tls_certificate_expiry_timestamp_seconds` from the certificate being served.
fn set_certificate_expiry(metrics: &Metrics, cert: &tls::ServerCert) {
    if let Some(not_after) = cert.not_after {
        metrics.tls_certificate_expiry.set(not_after as f64);
    }
}

/// Pending connections the kernel holds for us (capped by `net.core.somaxconn`): bursts and
/// moments without free file descriptors wait here instead of being refused.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    let fail = |e: std::io::Error| StartError::one(format!("cannot listen on {address}: {e}"));
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(address).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}

fn compile_routes(config: &Config, upstreams: &[String]) -> Result<RouteTable, StartError> {
    let options = routes::CompileOptions {
        upstreams: Some(upstreams),
        settings: Some(&config.presets),
    };
    routes::compile_paths(&config.routes.paths, &options)
        .map_err(|errors| StartError(errors.iter().map(ToString::to_string).collect()))
}

/// Local keys, and the remote JWKS sources (fetched once started).
type KeySets = (Vec<keys::VerifyKey>, Vec<Arc<RemoteJwks>>);

fn load_keys(
    prefix: &str,
    configured: &[KeyConfig],
    metrics: &Arc<Metrics>,
) -> Result<KeySets, StartError> {
    let mut all = Vec::new();
    let mut remote = Vec::new();
    for (i, k) in configured.iter().enumerate() {
        let origin = format!("{prefix}[{i}]");
        let algorithms = keys::parse_algorithms(&k.algorithms, &origin).map_err(StartError::one)?;
        if let Some(url) = &k.jwks_url {
            let url: http::Uri = url
                .parse()
                .map_err(|e| StartError::one(format!("{origin}.jwks_url: {e}")))?;
            let loopback = matches!(url.host(), Some("localhost" | "127.0.0.1" | "[::1]"));
            match url.scheme_str() {
                Some("https") => {}
                Some("http") if loopback => {}
                _ => {
                    return Err(StartError::one(format!(
                        "{origin}.jwks_url: must be https (plain http only on loopback)"
                    )));
                }
            }
            if k.cooldown < Duration::from_secs(1) && !loopback
                || k.refresh_interval < Duration::from_millis(100)
            {
                return Err(StartError::one(format!(
                    "{origin}: refresh_interval must be at least 100ms and cooldown at least 1s"
                )));
            }
            remote.push(Arc::new(RemoteJwks::new(
                RemoteJwksSpec {
                    url,
                    algorithms,
                    refresh_interval: k.refresh_interval,
                    cooldown: k.cooldown,
                    timeout: Duration::from_secs(5),
                },
                metrics.clone(),
            )));
            continue;
        }
        let source = if let Some(path) = &k.pem {
            KeySource::Pem {
                path: path.clone(),
                kid: k.kid.clone(),
            }
        } else if let Some(path) = &k.jwks_file {
            KeySource::JwksFile { path: path.clone() }
        } else if let Some(path) = &k.hmac_secret_file {
            KeySource::HmacSecretFile {
                path: path.clone(),
                kid: k.kid.clone(),
            }
        } else {
            return Err(StartError::one(format!("{origin}: no key source")));
        };
        all.extend(keys::load(&source, &algorithms).map_err(StartError::one)?);
    }
    Ok((all, remote))
}

fn opaque_sources(config: &Config, metrics: &Arc<Metrics>) -> Result<OpaqueSources, StartError> {
    let o = &config.opaque;
    let static_tokens = match &o.static_tokens_file {
        Some(path) => Some(StaticTokens::load(path).map_err(StartError::one)?),
        None => None,
    };
    let introspection = match &o.introspection {
        None => None,
        Some(i) => {
            let url: http::Uri = i
                .url
                .parse()
                .map_err(|e| StartError::one(format!("opaque.introspection.url: {e}")))?;
            let client_secret = match &i.client_secret_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            StartError::one(format!("{}: cannot read: {e}", path.display()))
                        })?
                        .trim_end()
                        .to_owned(),
                ),
                None => None,
            };
            Some(Introspector::new(
                IntrospectionSpec {
                    url,
                    client_id: i.client_id.clone(),
                    client_secret,
                    timeout: i.timeout,
                    max_ttl: i.max_ttl,
                    negative_ttl: i.negative_ttl,
                    max_entries: config.cache.max_entries,
                },
                metrics.clone(),
            ))
        }
    };
    let headers = o
        .headers
        .iter()
        .map(|h| {
            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| StartError::one(format!("opaque.headers: `{h}` is not a header name")))
        })
        .collect::<Result<_, _>>()?;
    Ok(OpaqueSources {
        static_tokens,
        introspection,
        headers,
    })
}

fn claim_rules(config: &Config) -> ClaimRules {
    ClaimRules {
        issuer: config.jwt.issuer.clone(),
        audiences: config.jwt.audiences.clone(),
        leeway: config.jwt.leeway.as_secs(),
    }
}

fn identity_header_names(config: &Config) -> Result<IdentityHeaderNames, StartError> {
    let c = &config.forwarding.identity_headers;
    let mut names = IdentityHeaderNames::default();
    for (configured, slot, key) in [
        (&c.subject, &mut names.subject, "subject"),
        (&c.client, &mut names.client, "client"),
        (&c.scopes, &mut names.scopes, "scopes"),
        (&c.token_kind, &mut names.token_kind, "token_kind"),
        (&c.role, &mut names.role, "role"),
        (&c.route, &mut names.route, "route"),
    ] {
        if let Some(name) = configured {
            *slot = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                StartError::one(format!(
                    "forwarding.identity_headers.{key}: `{name}` is not a header name"
                ))
            })?;
        }
    }
    Ok(names)
}
