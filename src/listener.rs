//! The client-facing listener: accept loop (bounded connections, survives accept errors such
//! as running out of file descriptors), TLS handshake with a deadline, HTTP/1.1 and HTTP/2 on
//! each connection with header and idle limits, graceful drain.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
    let slots = Arc::new(Semaphore::new(options.limits.max_connections));
    let idle_timeout = options.limits.idle_timeout;
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
        let stop = shutdown.clone();
        let metrics = metrics.clone();
        let tls = options.tls.as_ref().map(|t| t.load_full());
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let _open = OpenConnection::new(&metrics, label);
            let conn = ConnInfo::new(peer, tls.is_some());
            let serving = Serving {
                conn,
                gateway,
                builder,
                stop,
                idle_timeout,
            };
            match tls {
                None => serving.run(stream).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => serving.run(tls_stream).await,
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
    // Every connection holds a slot until it ends: all slots back means all drained.
    let all = u32::try_from(options.limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(options.limits.shutdown_drain, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("drain time over; closing remaining connections");
    }
}

/// One accepted connection and what serving it needs.
struct Serving {
    conn: ConnInfo,
    gateway: Arc<Gateway>,
    builder: auto::Builder<TokioExecutor>,
    stop: watch::Receiver<bool>,
    idle_timeout: Duration,
}

impl Serving {
    /// Serves requests until the client leaves, the connection sits idle (no bytes either way
    /// and nothing in flight) for the idle timeout, or shutdown asks it to finish what is in
    /// flight and close.
    async fn run<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Serving {
            conn,
            gateway,
            builder,
            mut stop,
            idle_timeout,
        } = self;
        let activity = Arc::new(Activity::default());
        let io = Tracked {
            inner: io,
            activity: activity.clone(),
        };
        let in_flight = activity.clone();
        let peer = conn.peer;
        let service = service_fn(move |request| {
            let gateway = gateway.clone();
            let busy = InFlight::enter(&in_flight);
            let conn = conn.clone();
            async move {
                let _busy = busy;
                Ok::<_, Infallible>(gateway.handle(request, conn).await)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        // Idle means no progress over IDLE_CHECKS consecutive checks.
        let mut ticks = tokio::time::interval(idle_timeout / IDLE_CHECKS);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = activity.bytes.load(Ordering::Relaxed);
        let mut quiet = 0;
        let mut closing = *stop.borrow();
        if closing {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, peer = %peer.ip(), "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = ticks.tick(), if !closing => {
                    let now = activity.bytes.load(Ordering::Relaxed);
                    let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
                    quiet = if now == last && !busy { quiet + 1 } else { 0 };
                    last = now;
                    if quiet > IDLE_CHECKS {
                        closing = true;
                        tracing::debug!(peer = %peer.ip(), "closing idle connection");
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

const IDLE_CHECKS: u32 = 4;

/// Progress on one connection: bytes moved either way, and requests being answered.
#[derive(Debug, Default)]
struct Activity {
    bytes: AtomicU64,
    in_flight: AtomicUsize,
}

/// Marks a request in flight while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection's byte stream, counting what moves.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.activity.bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            this.activity.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            this.activity.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

fn http_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
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
