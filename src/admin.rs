//! The admin listener's requests: `/metrics` (Prometheus text), `/healthz`, `/readyz`; GET and
//! HEAD only. Served by the same accept loop as the proxy, with its own connection cap, so a
//! client holding admin connections cannot use up what the proxy needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::credentials::jwks_remote::RemoteJwks;
use crate::listener::{ConnInfo, Handler};
use crate::telemetry::Metrics;

/// Ready to take traffic: started, not shutting down, and every remote key set loaded.
#[derive(Debug)]
pub struct Readiness {
    pub serving: AtomicBool,
    pub remote_keys: Vec<Arc<RemoteJwks>>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.serving.load(Ordering::Acquire) && self.remote_keys.iter().all(|r| r.has_keys())
    }
}

/// The admin endpoints.
#[derive(Debug)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<Readiness>,
}

impl Handler for Admin {
    type Body = Full<Bytes>;

    async fn handle(&self, request: Request<Incoming>, _: ConnInfo) -> Response<Full<Bytes>> {
        self.answer(request.method(), request.uri().path())
    }
}

impl Admin {
    fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let (status, content_type, body) = if method != Method::GET && method != Method::HEAD {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n".to_owned(),
            )
        } else {
            match path {
                "/metrics" => (
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                ),
                "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
                "/readyz" if self.ready.is_ready() => {
                    (StatusCode::OK, "text/plain", "ready\n".to_owned())
                }
                "/readyz" => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".to_owned(),
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    "not found\n".to_owned(),
                ),
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        response
    }
}
