//! Dialling an upstream: TCP with a connect deadline, no Nagle, keep-alive probes.

use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::net::TcpStream;
use tower_service::Service;

/// Opens connections to one origin (`http://host:port/`).
#[derive(Debug, Clone)]
pub struct Connector {
    http: HttpConnector,
    origin: Uri,
}

impl Connector {
    pub fn new(origin: Uri, connect_timeout: Duration) -> Connector {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        Connector { http, origin }
    }

    pub fn origin(&self) -> &Uri {
        &self.origin
    }

    /// A new connection (name resolution, then TCP within the connect timeout).
    pub async fn connect(&self) -> Result<TcpStream, Box<dyn std::error::Error + Send + Sync>> {
        let io = self.http.clone().call(self.origin.clone()).await?;
        Ok(io.into_inner())
    }
}
