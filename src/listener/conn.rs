//! One connection: HTTP/1.1 or HTTP/2 served until the client leaves, the connection sits idle,
//! or shutdown asks it to finish what is in flight.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{ConnInfo, Handler};
use crate::shutdown::Shutdown;
use crate::telemetry::Metrics;

/// One accepted connection and what serving it needs.
pub(super) struct Serving<H> {
    pub(super) conn: ConnInfo,
    pub(super) handler: Arc<H>,
    pub(super) builder: auto::Builder<TokioExecutor>,
    pub(super) shutdown: Shutdown,
    pub(super) idle_timeout: Duration,
    /// A connection that sends nothing at all for this long is closed (the HTTP/1.1 parser's
    /// header timeout starts only once the protocol is known, which takes a first byte).
    pub(super) first_byte_timeout: Duration,
}

impl<H: Handler> Serving<H> {
    /// The TLS handshake within its deadline, then [`Serving::run`]; a failure is counted.
    pub(super) async fn handshake(
        self,
        stream: TcpStream,
        config: Arc<ServerConfig>,
        deadline: Duration,
        metrics: &Metrics,
    ) {
        let peer = self.conn.peer;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => self.run(tls_stream).await,
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

    /// Serves requests until the client leaves, the connection sits idle (no bytes either way
    /// and nothing in flight) for the idle timeout, or shutdown asks it to finish what is in
    /// flight and close.
    pub(super) async fn run<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Serving {
            conn,
            handler,
            builder,
            mut shutdown,
            idle_timeout,
            first_byte_timeout,
        } = self;
        let peer = conn.peer;
        let activity = Arc::new(Activity::default());
        let io = Tracked {
            inner: io,
            activity: activity.clone(),
        };
        let service = service(handler, conn, activity.clone());
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut idle = IdleWatch::new(&activity, idle_timeout);
        let first_byte = tokio::time::sleep(first_byte_timeout);
        tokio::pin!(first_byte);
        let mut greeted = false;
        let mut closing = shutdown.is_set();
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
                _ = shutdown.wait(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                _ = &mut first_byte, if !closing && !greeted => {
                    greeted = true;
                    if activity.bytes.load(Ordering::Relaxed) == 0 {
                        closing = true;
                        tracing::debug!(peer = %peer.ip(), "closing a connection that sent nothing");
                        connection.as_mut().graceful_shutdown();
                    }
                }
                _ = idle.ticks.tick(), if !closing => {
                    if idle.is_idle(&activity) {
                        closing = true;
                        tracing::debug!(peer = %peer.ip(), "closing idle connection");
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// The connection's service: each request to the handler, counted in flight while it lives.
fn service<H: Handler>(
    handler: Arc<H>,
    conn: ConnInfo,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<H::Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<H::Body>, Infallible>> + Send + 'static,
> + Clone {
    service_fn(move |request| {
        let handler = handler.clone();
        let busy = InFlight::enter(&activity);
        let conn = conn.clone();
        async move {
            let _busy = busy;
            Ok::<_, Infallible>(handler.handle(request, conn).await)
        }
    })
}

const IDLE_CHECKS: u32 = 4;

/// The idle checks: their timer, the progress seen at the last one, and how many checks in a
/// row saw none.
struct IdleWatch {
    ticks: tokio::time::Interval,
    last: u64,
    quiet: u32,
}

impl IdleWatch {
    fn new(activity: &Activity, idle_timeout: Duration) -> IdleWatch {
        let mut ticks = tokio::time::interval(idle_timeout / IDLE_CHECKS);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        IdleWatch {
            ticks,
            last: activity.bytes.load(Ordering::Relaxed),
            quiet: 0,
        }
    }

    /// One check: true once no byte moved and no request was in flight for long enough.
    fn is_idle(&mut self, activity: &Activity) -> bool {
        let now = activity.bytes.load(Ordering::Relaxed);
        let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
        self.quiet = if now == self.last && !busy {
            self.quiet + 1
        } else {
            0
        };
        self.last = now;
        self.quiet > IDLE_CHECKS
    }
}

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
