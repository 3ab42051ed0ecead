//! The client-facing listener: accept loop (bounded connections, survives accept errors),
//! TLS handshake with a deadline, HTTP/1.1 and HTTP/2 on each connection, graceful drain.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::config::LimitsConfig;
use crate::service::{ConnInfo, Gateway};
use crate::telemetry::Metrics;

/// Current TLS settings; swapped whole when certificates are reloaded.
pub type TlsSettings = Arc<ArcSwap<ServerConfig>>;

/// What the accept loop needs besides the socket.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    pub tls: Option<TlsSettings>,
    pub handshake_timeout: Duration,
    pub limits: LimitsConfig,
}

/// Serves connections until `shutdown` turns true, then drains for at most the configured time.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    options: ListenerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = http_builder(&options.limits);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.limits.max_connections));
    let metrics = gateway.metrics().clone();
    let label = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("semaphore never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off and keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let metrics = metrics.clone();
        let tls = options.tls.as_ref().map(|t| t.load_full());
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let _open = OpenConnection::new(&metrics, label);
            let conn = ConnInfo {
                peer,
                tls: tls.is_some(),
            };
            match tls {
                None => serve_io(stream, conn, gateway, builder, watcher).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_io(tls_stream, conn, gateway, builder, watcher).await
                        }
                        Ok(Err(e)) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(error = %e, peer = %peer.ip(), "TLS handshake failed");
                        }
                        Err(_) => {
                            metrics.tls_handshake_failures.inc();
                            tracing::debug!(peer = %peer.ip(), "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.limits.shutdown_drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain time over; closing remaining connections");
    }
}

async fn serve_io<I>(
    io: I,
    conn: ConnInfo,
    gateway: Arc<Gateway>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let gateway = gateway.clone();
        async move { Ok::<_, Infallible>(gateway.handle(request, conn).await) }
    });
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, peer = %conn.peer.ip(), "connection ended with an error");
    }
}

fn http_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(Some(64))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Counts a connection in `scopegate_open_connections` while it lives.
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(metrics: &Metrics, listener: &str) -> OpenConnection {
        let gauge = metrics.open_connections.with_label_values(&[listener]);
        gauge.inc();
        OpenConnection(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
