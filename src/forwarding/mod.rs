//! Header rewriting on the way through, in both directions: hop-by-hop headers out (and what
//! `Connection` names), the client's forwarding, client-address, identity and method-override
//! headers out under any spelling ([`names`]), cookie crumbs joined, the proxy's own
//! `X-Forwarded-*` and identity headers in. Used by every front end that passes a request on or
//! tells an ingress what to pass on.

pub mod names;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::credentials::Identity;
pub use names::{HeaderRules, UnderscoreHeaders};

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
    pub fn all(&self) -> [&HeaderName; 6] {
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

/// Rewrites request headers for the upstream. Client-sent identity, forwarding and
/// client-address headers never pass, whatever their spelling.
pub fn prepare_request_headers(
    headers: &mut HeaderMap,
    rules: &HeaderRules,
    cx: &ForwardContext<'_>,
) {
    remove_hop_by_hop(headers);
    join_cookie_crumbs(headers);
    // One pass over the names present, each compared as the upstream reads it: identity headers
    // the client sent (they never pass), `Forwarded`, `X-Forwarded-*` and the other
    // client-address headers, method overrides (the method that was judged is the method the
    // upstream runs), and credential headers spelled otherwise than the decision read them.
    // Usually none, and then nothing is allocated.
    let stripped: Vec<HeaderName> = headers
        .keys()
        .filter(|k| rules.strips(k))
        .cloned()
        .collect();
    for name in stripped {
        headers.remove(name);
    }
    let names = &rules.identity;
    headers.insert(X_FORWARDED_FOR.clone(), cx.forwarded_for.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if cx.tls { "https" } else { "http" }),
    );
    // Without a host there is no `X-Forwarded-Host`: the client's was stripped above.
    if let Some(host) = &cx.host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        headers.insert(header::HOST, host.clone());
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

/// Several `Cookie` fields (HTTP/2 sends each cookie as its own field, RFC 9113 8.2.3; an
/// HTTP/1.1 client may repeat the header) joined into one with `"; "`, so the upstream, spoken to
/// over HTTP/1.1, sees one `Cookie` header and cannot pick one of several. One lookup when
/// there is one or none.
pub fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for crumb in headers.get_all(header::COOKIE) {
        if crumb.is_empty() {
            continue;
        }
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    // Each crumb is a valid value and `; ` joins them, so the whole is one too.
    match HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        Ok(value) if !value.is_empty() => {
            headers.insert(header::COOKIE, value);
        }
        _ => {
            headers.remove(header::COOKIE);
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

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    /// Every strip list is applied to the name as the upstream reads it.
    #[test]
    fn client_headers_are_stripped_in_every_spelling() {
        let rules = HeaderRules::new(
            IdentityHeaderNames::default(),
            vec![HeaderName::from_static("x-shopify-access-token")],
            UnderscoreHeaders::Allow,
        );
        let mut h = map(&[
            ("X_Scopegate_Role", "seller-admin"),
            ("x.scopegate.subject", "root"),
            ("X.Forwarded.For", "10.0.0.1"),
            ("x_forwarded_host", "evil.example"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Ssl", "on"),
            ("X-Real-IP", "10.0.0.1"),
            ("True-Client-IP", "10.0.0.1"),
            ("x_original_url", "/admin"),
            ("X-Rewrite-URL", "/admin"),
            ("X_HTTP_Method_Override", "DELETE"),
            ("X_Shopify_Access_Token", "other"),
            ("X-Shopify-Access-Token", "judged"),
            ("x_request_id", "kept"),
        ]);
        let ip = HeaderValue::from_static("127.0.0.1");
        let route = HeaderValue::from_static("/shop/orders");
        let cx = ForwardContext {
            forwarded_for: &ip,
            tls: false,
            host: None,
            identity: None,
            route: &route,
        };
        prepare_request_headers(&mut h, &rules, &cx);
        let mut left: Vec<(&str, &str)> = h
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-proto", "http"),
                ("x-scopegate-route", "/shop/orders"),
                ("x-shopify-access-token", "judged"),
                ("x_request_id", "kept"),
            ]
        );
    }

    #[test]
    fn cookie_crumbs_are_joined_into_one_header() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", ""), ("cookie", "b=2; c=3")]);
        join_cookie_crumbs(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
        let mut h = map(&[("cookie", "a=1")]);
        join_cookie_crumbs(&mut h);
        assert_eq!(h[header::COOKIE], "a=1");
    }
}
