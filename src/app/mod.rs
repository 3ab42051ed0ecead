//! Wiring: a [`Config`] becomes the policy, the proxy and the admin endpoints ([`build`]),
//! served by the listeners; reload and shutdown.

mod build;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin::{Admin, Readiness};
use crate::config::Config;
use crate::credentials::jwks_remote::RemoteJwks;
use crate::credentials::unix_now;
use crate::listener::{self, ListenerOptions, TlsSettings, tls};
use crate::policy::Policy;
use crate::proxy::Gateway;
use crate::routes::{self, RouteTable};
use crate::shutdown::{self, Shutdown, Trigger};
use crate::telemetry::Metrics;
use crate::telemetry::names::{listener as listener_label, result};
use build::{authenticator, gateway_settings, http_limits, upstreams};

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
    policy: Arc<Policy>,
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
        let upstreams = upstreams(&config);
        let names: Vec<String> = config.upstreams.keys().cloned().collect();
        let table = compile_routes(&config, &names)?;
        if !names.iter().any(|n| n == "default")
            && table.routes().iter().any(|r| r.upstream.is_none())
        {
            return Err(StartError::one(
                "upstreams: some routes name no upstream, so an upstream called `default` is needed",
            ));
        }
        let (auth, remote_keys) = authenticator(&config, &metrics)?;
        let policy = Arc::new(Policy::new(table, auth));
        let tls = match (&config.listen.tls_cert, &config.listen.tls_key) {
            (Some(cert), Some(key)) => {
                let loaded = tls::load(cert, key).map_err(StartError::one)?;
                set_certificate_expiry(&metrics, &loaded);
                Some(Arc::new(ArcSwap::new(loaded.config)))
            }
            _ => None,
        };
        metrics
            .config_reloads
            .with_label_values(&[result::SUCCESS])
            .inc();
        metrics.config_last_reload_success.set(unix_now() as f64);
        let gateway = Arc::new(Gateway::new(
            policy.clone(),
            upstreams,
            metrics.clone(),
            gateway_settings(&config),
        ));
        Ok(App {
            config,
            policy,
            gateway,
            tls,
            metrics,
            remote_keys,
        })
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The decision, for tools and tests that ask without sockets.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
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
        let (trigger, shutdown) = shutdown::channel();
        let ready = Arc::new(Readiness {
            serving: AtomicBool::new(true),
            remote_keys: self.remote_keys.clone(),
        });
        let (proxy_options, admin_options) = self.listener_options();
        let admin = Arc::new(Admin {
            metrics: self.metrics.clone(),
            ready: ready.clone(),
        });
        let mut tasks = vec![
            tokio::spawn(listener::run(
                proxy,
                self.gateway.clone(),
                proxy_options,
                self.metrics.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(listener::run(
                admin_listener,
                admin,
                admin_options,
                self.metrics.clone(),
                shutdown.clone(),
            )),
        ];
        for remote in &self.remote_keys {
            tasks.push(remote.spawn_refresher(shutdown.clone()));
        }
        let app = Arc::new(self);
        if app.config.reload.watch {
            // The baseline is what was loaded, taken now, not when the task first runs.
            let loaded = fingerprint(&app.config);
            tasks.push(tokio::spawn(watch_files(app.clone(), loaded, shutdown)));
        }
        Ok(Running {
            app,
            proxy_addr,
            admin_addr,
            trigger,
            ready,
            tasks,
        })
    }

    /// The proxy's and the admin listener's settings: the same HTTP limits, each its own
    /// connection cap; TLS only on the proxy.
    fn listener_options(&self) -> (ListenerOptions, ListenerOptions) {
        let limits = &self.config.limits;
        let proxy = ListenerOptions {
            tls: self.tls.clone(),
            handshake_timeout: self.config.listen.handshake_timeout,
            http: http_limits(limits),
            max_connections: limits.max_connections,
            shutdown_drain: limits.shutdown_drain,
            label: match self.tls {
                Some(_) => listener_label::HTTPS,
                None => listener_label::HTTP,
            },
        };
        let admin = ListenerOptions {
            tls: None,
            max_connections: self.config.admin.max_connections,
            label: listener_label::ADMIN,
            ..proxy.clone()
        };
        (proxy, admin)
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
        let label = if result.is_ok() {
            result::SUCCESS
        } else {
            result::FAILURE
        };
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
                    generation = self.policy.table().generation(),
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
        self.policy.replace_table(table);
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
    trigger: Trigger,
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

    pub fn policy(&self) -> &Arc<Policy> {
        &self.app.policy
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.app.policy.table()
    }

    /// Stops accepting, reports not ready, and drains connections (bounded by the drain time).
    pub async fn shutdown(self) {
        self.ready.serving.store(false, Ordering::Release);
        self.trigger.fire();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Reloads when the content of a route file, the certificate or the key changes. Content, not
/// mtime: a Kubernetes `..data` symlink swap changes what the paths read, whatever the times.
async fn watch_files(app: Arc<App>, loaded: u64, mut shutdown: Shutdown) {
    let mut seen = loaded;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(app.config.reload.interval) => {}
            _ = shutdown.wait() => return,
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
