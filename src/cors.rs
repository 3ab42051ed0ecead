//! Cross-origin requests from browsers (`[cors]`). A preflight is answered here from the route
//! table and never forwarded, so it never reaches the upstream with identity headers; answers
//! to allowed origins, the upstream's and scopegate's own refusals alike, carry
//! `Access-Control-Allow-Origin`, so a script can read a 401 or 403.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::routes::Route;

/// `[cors]` as written: which browser origins may call the API. Preflights are answered by
/// scopegate itself and never forwarded.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://admin.example.com`), or `"*"` for any (not with credentials).
    pub allowed_origins: Vec<String>,
    /// Request headers a browser may send (case-insensitive).
    #[serde(default = "default_cors_headers")]
    pub allowed_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(default = "default_cors_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, client certificates).
    #[serde(default)]
    pub allow_credentials: bool,
}

fn default_cors_headers() -> Vec<String> {
    vec!["authorization".into(), "content-type".into()]
}

fn default_cors_max_age() -> Duration {
    DEFAULT_MAX_AGE
}

/// The compiled `[cors]` section, checked when the config is read.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(try_from = "CorsConfig")]
pub struct Cors {
    any_origin: bool,
    /// Lower-cased `scheme://host[:port]`.
    origins: Vec<String>,
    allowed_headers: Vec<HeaderName>,
    allow_headers_value: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

/// Why a preflight was refused (the `reason` label).
pub type Rejection = &'static str;

impl TryFrom<CorsConfig> for Cors {
    type Error = String;

    fn try_from(config: CorsConfig) -> Result<Cors, String> {
        Cors::new(&config).map_err(|e| format!("cors: {e}"))
    }
}

impl Cors {
    /// Checks the section; every error names the offending entry.
    pub fn new(config: &CorsConfig) -> Result<Cors, String> {
        if config.allowed_origins.is_empty() {
            return Err("allowed_origins: list at least one origin".into());
        }
        let mut origins = Vec::new();
        let mut any_origin = false;
        for origin in &config.allowed_origins {
            if origin == "*" {
                any_origin = true;
                continue;
            }
            check_origin(origin)
                .map_err(|why| format!("allowed_origins: `{origin}` is not an origin: {why}"))?;
            origins.push(origin.to_ascii_lowercase());
        }
        if any_origin && config.allow_credentials {
            return Err(
                "allowed_origins: `*` cannot be combined with allow_credentials = true".into(),
            );
        }
        let allowed_headers = config
            .allowed_headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| format!("allowed_headers: `{h}` is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let joined = |names: &[HeaderName]| {
            (!names.is_empty()).then(|| {
                let text = names
                    .iter()
                    .map(HeaderName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                HeaderValue::from_str(&text).expect("header names are valid header values")
            })
        };
        let expose = config
            .expose_headers
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| format!("expose_headers: `{h}` is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cors {
            any_origin,
            origins,
            allow_headers_value: joined(&allowed_headers),
            allowed_headers,
            expose: joined(&expose),
            max_age: HeaderValue::from(config.max_age.as_secs()),
            credentials: config.allow_credentials,
        })
    }

    /// `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    fn allows_origin(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }

    /// The answer to a preflight for `route`: 204 with the allowances, or why not.
    pub fn preflight(
        &self,
        route: &Route,
        headers: &HeaderMap,
    ) -> Result<Response<Full<Bytes>>, Rejection> {
        let origin = headers
            .get(header::ORIGIN)
            .filter(|o| self.allows_origin(o))
            .ok_or("cors_origin_not_allowed")?;
        headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .filter(|m| route.rule(m).is_some())
            .ok_or("cors_method_not_allowed")?;
        for value in headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            let listed = value.to_str().map_err(|_| "cors_header_not_allowed")?;
            for name in listed.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !self
                    .allowed_headers
                    .iter()
                    .any(|a| a.as_str().eq_ignore_ascii_case(name))
                {
                    return Err("cors_header_not_allowed");
                }
            }
        }
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        self.allow_origin(origin, out);
        // The route's methods, not only the one asked for: one preflight serves them all.
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, route.allow.clone());
        if let Some(h) = &self.allow_headers_value {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
        }
        out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Ok(response)
    }

    /// Adds the allowance to an answer for a request from an allowed origin. The upstream's own
    /// `Access-Control-*` headers are removed: with `[cors]` set, scopegate owns them.
    pub fn decorate(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        for name in [
            &header::ACCESS_CONTROL_ALLOW_ORIGIN,
            &header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            &header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &header::ACCESS_CONTROL_ALLOW_METHODS,
            &header::ACCESS_CONTROL_ALLOW_HEADERS,
            &header::ACCESS_CONTROL_MAX_AGE,
        ] {
            out.remove(name);
        }
        if let Some(origin) = origin.filter(|o| self.allows_origin(o)) {
            self.allow_origin(origin, out);
            if let Some(expose) = &self.expose {
                out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
    }

    fn allow_origin(&self, origin: &HeaderValue, out: &mut HeaderMap) {
        if self.any_origin {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.append(header::VARY, HeaderValue::from_static("origin"));
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// `scheme://host[:port]` with nothing after it.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    let uri: http::Uri = origin.parse().map_err(|_| "cannot be parsed")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("scheme must be http or https"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host");
    }
    if origin.ends_with('/') || uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err("an origin has no path (drop the trailing `/`)");
    }
    Ok(())
}

/// How long a browser may cache a preflight answer unless `max_age` says otherwise.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str], credentials: bool) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: vec![],
            max_age: DEFAULT_MAX_AGE,
            allow_credentials: credentials,
        }
    }

    #[test]
    fn origins_are_checked_at_load() {
        assert!(Cors::new(&config(&["https://admin.example.com"], true)).is_ok());
        assert!(Cors::new(&config(&["http://localhost:3000"], false)).is_ok());
        for bad in [
            "admin.example.com",
            "https://a.example/",
            "ftp://a",
            "https://a/x",
        ] {
            let e = Cors::new(&config(&[bad], false)).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let e = Cors::new(&config(&["*"], true)).unwrap_err();
        assert!(e.contains("allow_credentials"), "{e}");
        assert!(Cors::new(&config(&[], false)).is_err());
    }

    #[test]
    fn decorate_adds_only_for_allowed_origins_and_replaces_upstream_headers() {
        let cors = Cors::new(&config(&["https://admin.example.com"], false)).unwrap();
        let mut out = HeaderMap::new();
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".parse().unwrap());
        cors.decorate(Some(&"https://evil.example".parse().unwrap()), &mut out);
        assert!(out.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        cors.decorate(
            Some(&"https://ADMIN.example.com".parse().unwrap()),
            &mut out,
        );
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://ADMIN.example.com"
        );
        assert_eq!(out[header::VARY], "origin");
    }
}
