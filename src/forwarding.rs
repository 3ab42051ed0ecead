//! Header rewriting on the way through, in both directions: hop-by-hop headers out (and what
//! `Connection` names), the client's forwarding, identity and method-override headers out, the
//! proxy's own `X-Forwarded-*` and identity headers in. Used by every front end that passes a
//! request on or tells an ingress what to pass on.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::credentials::Identity;

/// Names of the identity headers scopegate sets (configurable).
#[derive(Debug, Clone)]
pub struct IdentityHeaderNames {
    pub subject: HeaderName,
    pub client: HeaderName,
    pub scopes: HeaderName,
    pub token_kind: HeaderName,
    pub role: HeaderName,
    pub route: HeaderName,
}

impl Default for IdentityHeaderNames {
    fn default() -> Self {
        IdentityHeaderNames {
            subject: HeaderName::from_static("x-scopegate-subject"),
            client: HeaderName::from_static("x-scopegate-client"),
            scopes: HeaderName::from_static("x-scopegate-scopes"),
            token_kind: HeaderName::from_static("x-scopegate-token-kind"),
            role: HeaderName::from_static("x-scopegate-role"),
            route: HeaderName::from_static("x-scopegate-route"),
        }
    }
}

impl IdentityHeaderNames {
    fn all(&self) -> [&HeaderName; 6] {
        [
            &self.subject,
            &self.client,
            &self.scopes,
            &self.token_kind,
            &self.role,
            &self.route,
        ]
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// Headers some frameworks read as "the real method" (a POST judged as POST would run as DELETE).
static METHOD_OVERRIDES: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];
const IDENTITY_PREFIX: &[u8] = b"x-scopegate-";

/// Hop-by-hop headers (RFC 9110 7.6.1).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Hop-by-hop headers (RFC 9110 7.6.1) and whatever `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present notes which listed ones occur; most requests carry none,
    // and most responses only `Connection: keep-alive`, so only those few are removed by hash.
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names `Connection` lists (`close` and the listed ones aside, which need nothing extra).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| {
            !n.eq_ignore_ascii_case("close")
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().eq_ignore_ascii_case(n))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// What the forwarded request says about the client and the decision.
#[derive(Debug)]
pub struct ForwardContext<'a> {
    /// The client's address, as `X-Forwarded-For` carries it.
    pub forwarded_for: &'a HeaderValue,
    pub tls: bool,
    pub host: Option<HeaderValue>,
    pub identity: Option<&'a Identity>,
    pub route: &'a HeaderValue,
}

/// Rewrites request headers for the upstream. Client-sent identity headers never pass.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    names: &IdentityHeaderNames,
    cx: &ForwardContext<'_>,
) {
    remove_hop_by_hop(headers);
    // One pass over the names present: identity headers the client sent (they never pass),
    // `Forwarded`, and method overrides (the method that was judged is the method the upstream
    // runs). Usually none, and then nothing is allocated.
    let stripped: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            k.as_str().as_bytes().starts_with(IDENTITY_PREFIX)
                || names.all().contains(k)
                || **k == FORWARDED
                || METHOD_OVERRIDES.contains(k)
        })
        .cloned()
        .collect();
    for name in stripped {
        headers.remove(name);
    }
    headers.insert(X_FORWARDED_FOR.clone(), cx.forwarded_for.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if cx.tls { "https" } else { "http" }),
    );
    match &cx.host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            headers.insert(header::HOST, host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
    headers.insert(names.route.clone(), cx.route.clone());
    if let Some(id) = cx.identity {
        let h = &id.headers;
        for (name, value) in [
            (&names.subject, &h.subject),
            (&names.client, &h.client),
            (&names.scopes, &h.scopes),
            (&names.token_kind, &h.token_kind),
            (&names.role, &h.roles),
        ] {
            if let Some(v) = value {
                headers.insert(name.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "Keep-Alive, X-Private ,close"),
            ("connection", "upgrade"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9v"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
            ("content-type", "application/json"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        remove_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);

        // Only `Connection: keep-alive`, as most upstream responses carry.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_LENGTH));

        // Nothing listed: nothing changes.
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }
}
