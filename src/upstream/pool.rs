//! Keep-alive HTTP/1.1 connections to one upstream (hyper's client protocol; the pool is ours
//! because hyper-util's generic one spawned a task and a channel per response to learn when a
//! connection was free again). A connection goes back on the list as soon as its response head
//! is in; a request takes the most recently used one that is ready (hyper says so once the
//! previous exchange, body included, is over) and opens a new one when none is. Closed
//! connections are dropped on the way, and ready ones idle longer than the idle timeout, also
//! by a background sweep. At most `max_idle` are kept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::connector::Connector;
use super::{UpstreamBody, UpstreamError};
use crate::body::BodyError;

pub(super) struct Pool {
    connector: Connector,
    conns: Mutex<Vec<Pooled>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether the sweep task runs (started with the first connection, inside the runtime).
    reaping: AtomicBool,
}

struct Pooled {
    sender: http1::SendRequest<UpstreamBody>,
    /// When it went back on the list.
    since: Instant,
}

impl Pooled {
    /// On the list longer than `idle_timeout` (an idle timeout only once it is ready again).
    fn idle_past(&self, idle_timeout: Duration) -> bool {
        self.since.elapsed() >= idle_timeout
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", self.connector.origin())
            .field("max_idle", &self.max_idle)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(super) fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            connector,
            conns: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            reaping: AtomicBool::new(false),
        }
    }

    /// Sends `request` on a kept connection or a new one, until a response head is in.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut pooled = self.checkout();
        loop {
            let (mut sender, reused) = match pooled.take() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.put_back(sender);
                    return Ok(response);
                }
                // A kept connection that closed before the request went out (the upstream's
                // idle timeout raced this request): nothing was sent, so try another.
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        pooled = self.checkout();
                    }
                    _ => return Err(exchange_failed(&e.into_error())),
                },
            }
        }
    }

    fn checkout(&self) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = conns.iter().rposition(|c| c.sender.is_ready()) {
            let c = conns.remove(i);
            if !c.idle_past(self.idle_timeout) {
                return Some(c.sender);
            }
        }
        conns.retain(|c| !c.sender.is_closed());
        None
    }

    fn put_back(&self, sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if conns.len() < self.max_idle {
            conns.push(Pooled {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<http1::SendRequest<UpstreamBody>, UpstreamError> {
        let io = self.connector.connect().await.map_err(|e| {
            tracing::debug!(error = %e, "upstream connect failed");
            UpstreamError::Unreachable
        })?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| exchange_failed(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        if !self.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
        Ok(sender)
    }
}

/// Why an exchange got no response head: the client's request body failing on the way (which
/// is the client's fault, not the upstream's), or the upstream.
fn exchange_failed(e: &hyper::Error) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(body) = s.downcast_ref::<BodyError>() {
            return UpstreamError::RequestBody(body.fault());
        }
        source = s.source();
    }
    tracing::debug!(error = %e, "upstream exchange failed");
    UpstreamError::Failed
}

/// Closes kept connections idle longer than the idle timeout, and forgets closed ones, until
/// the pool is gone.
async fn sweep(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut conns = pool.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| {
            !(c.sender.is_closed() || (c.sender.is_ready() && c.idle_past(pool.idle_timeout)))
        });
    }
}
