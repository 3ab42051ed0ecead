//! The upstream side: one [`Upstream`] per configured origin, with its own connection pool
//! ([`pool`]) and dialler ([`connector`]), bounded in time and response size. Failures are an
//! [`UpstreamError`]; what the client then sees is the refusal module's to say.

mod connector;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use crate::body::{self, BodyError, BodyFault, Relayed};
use connector::Connector;
use pool::Pool;

/// Body sent upstream: the client's, read ahead and capped at the configured size.
pub type UpstreamBody = Relayed<Incoming>;

/// Why a forwarded request got no usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connection could not be opened.
    Unreachable,
    /// The exchange failed: reset, broken framing, a response body cut off within the
    /// read-ahead bound.
    Failed,
    /// No response head within the response timeout, or a gap that long in its body.
    Timeout,
    /// The client's request body failed while it was being sent.
    RequestBody(BodyFault),
}

/// A normalised path and query that do not form a request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unforwardable;

/// An upstream URL as the config gives it, checked at load: `http://host:port[/base]`, no
/// query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct UpstreamUrl {
    origin: Uri,
    /// The base path, without a trailing slash ("" for none).
    base_path: String,
}

impl TryFrom<String> for UpstreamUrl {
    type Error = String;

    fn try_from(text: String) -> Result<UpstreamUrl, String> {
        let bad = || format!("`{text}` must be http://host:port[/base]");
        let url: Uri = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
        if url.scheme() != Some(&Scheme::HTTP) || url.query().is_some() {
            return Err(bad());
        }
        let authority = url.authority().cloned().ok_or_else(bad)?;
        let origin = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|_| bad())?;
        Ok(UpstreamUrl {
            origin,
            base_path: url.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// Settings of one upstream (from the serve config).
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: String,
    pub url: UpstreamUrl,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Response bodies up to this size are read whole before the status goes to the client.
    pub read_ahead: usize,
}

/// One upstream origin and its connection pool.
#[derive(Debug)]
pub struct Upstream {
    pub name: Arc<str>,
    base_path: String,
    response_timeout: Duration,
    read_ahead: usize,
    pool: Arc<Pool>,
}

impl Upstream {
    pub fn new(spec: &UpstreamSpec) -> Upstream {
        let connector = Connector::new(spec.url.origin.clone(), spec.connect_timeout);
        Upstream {
            name: spec.name.as_str().into(),
            base_path: spec.url.base_path.clone(),
            response_timeout: spec.response_timeout,
            read_ahead: spec.read_ahead,
            pool: Arc::new(Pool::new(
                connector,
                spec.pool_max_idle,
                spec.pool_idle_timeout,
            )),
        }
    }

    /// The request target sent upstream (origin form): the base path, the normalised path and
    /// the client's query.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, Unforwardable> {
        let mut pq = String::with_capacity(
            self.base_path.len() + path.len() + 1 + query.map_or(0, str::len),
        );
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::try_from(pq).map_err(|_| Unforwardable)
    }

    /// Sends the prepared request. The response head must come within the response timeout,
    /// and its body (up to the read-ahead bound) with no gap longer than that: a body that
    /// breaks or stalls there is a 502 or 504, not a cut-off 200.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Relayed<Incoming>>, UpstreamError> {
        let response = tokio::time::timeout(self.response_timeout, self.pool.send(request))
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        let (parts, incoming) = response.into_parts();
        match body::read_ahead(incoming, self.read_ahead, u64::MAX, self.response_timeout).await {
            Ok(body) => Ok(Response::from_parts(parts, body)),
            Err(BodyError::Idle(_)) => Err(UpstreamError::Timeout),
            Err(_) => Err(UpstreamError::Failed),
        }
    }
}
