//! Every listener (proxy, admin): the one accept loop. The caller binds the socket and says what
//! serves a request ([`Handler`]); [`run`] accepts with a connection cap (further connections
//! wait in the kernel's backlog), survives accept errors such as running out of descriptors
//! (backing off), completes TLS within a deadline, serves HTTP/1.1 and HTTP/2 on each
//! connection with header-read and idle timeouts ([`conn`]), and drains on shutdown.

mod conn;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// Current TLS settings; swapped whole when certificates are reloaded.
pub type TlsSettings = Arc<ArcSwap<ServerConfig>>;

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer's address as the `X-Forwarded-For` value, written once per connection.
    pub forwarded_for: HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        ConnInfo {
            peer,
            tls,
            forwarded_for: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP address is a header value"),
        }
    }
}

/// What answers the requests of a listener.
pub trait Handler: Send + Sync + 'static {
    type Body: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;

    fn handle(
        &self,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// HTTP limits of every connection of a listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// HTTP/1.1: a request head must arrive within this; an idle keep-alive connection is
    /// closed after it.
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    /// Request line plus headers of one HTTP/1.1 request; larger gets 431.
    pub max_header_bytes: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_bytes: u32,
    /// No bytes either way and nothing in flight this long: closed.
    pub idle_timeout: Duration,
}

/// What the accept loop needs besides the socket and the handler.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    pub tls: Option<TlsSettings>,
    pub handshake_timeout: Duration,
    pub http: HttpLimits,
    /// Connections served at once; more wait in the backlog.
    pub max_connections: usize,
    /// Longest graceful drain once shutdown begins.
    pub shutdown_drain: Duration,
    /// `listener` label of `scopegate_open_connections`.
    pub label: &'static str,
}

/// Pause after a failed `accept` (EMFILE and friends) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves connections until `shutdown`, then drains for at most `shutdown_drain`.
pub async fn run<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    options: ListenerOptions,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let acceptor = Acceptor {
        handler,
        builder: http_builder(&options.http),
        options,
        metrics,
        shutdown: shutdown.clone(),
    };
    let label = acceptor.options.label;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("semaphore never closed"),
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: keep serving the connections we have.
                    tracing::warn!(error = %e, listener = label, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        acceptor.spawn(stream, peer, slot);
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means all drained.
    let options = &acceptor.options;
    let all = u32::try_from(options.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(options.shutdown_drain, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = label,
            "drain time over; closing remaining connections"
        );
    }
}

/// What every connection of one listener is served with.
struct Acceptor<H> {
    handler: Arc<H>,
    builder: auto::Builder<TokioExecutor>,
    options: ListenerOptions,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl<H: Handler> Acceptor<H> {
    /// Serves one accepted connection in its own task, holding its slot until it ends.
    fn spawn(&self, stream: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let serving = conn::Serving {
            conn: ConnInfo::new(peer, self.options.tls.is_some()),
            handler: self.handler.clone(),
            builder: self.builder.clone(),
            shutdown: self.shutdown.clone(),
            idle_timeout: self.options.http.idle_timeout,
            first_byte_timeout: self.options.http.header_read_timeout,
        };
        let tls = self.options.tls.as_ref().map(|t| t.load_full());
        let (metrics, label) = (self.metrics.clone(), self.options.label);
        let handshake_timeout = self.options.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let _open = OpenConnection::new(&metrics, label);
            match tls {
                None => serving.run(stream).await,
                Some(config) => {
                    serving
                        .handshake(stream, config, handshake_timeout, &metrics)
                        .await
                }
            }
        });
    }
}

fn http_builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        // The whole read buffer: a request head that does not fit gets 431.
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256));
    // No HTTP/2 keep-alive pings: they would keep an idle connection from ever looking idle;
    // the idle timeout closes connections to peers that went away.
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
