//! Request hygiene, checked before anything is judged: framing that hyper's HTTP/1.1 parser
//! lets through but scopegate will not relay (a missing or second `Host`, `Transfer-Encoding`
//! other than one plain `chunked`, a protocol switch), each a 400 that closes the connection;
//! and header names the upstream could read otherwise than the decision (`X_Foo` as `X-Foo`, a
//! `Connection` naming a header that matters), each a 400.

use http::request::Parts;
use http::{HeaderMap, HeaderName, header};

use crate::forwarding::{HeaderRules, UnderscoreHeaders, names};
use crate::refusal::Refusal;

/// What hyper's HTTP/1.1 parser lets through but scopegate will not relay. (Conflicting
/// lengths, bad chunk sizes, obs-fold, spaces before the colon and non-chunked transfer
/// codings never get this far: hyper refuses them with 400 and closes.)
pub fn check_framing(parts: &Parts) -> Result<(), Refusal> {
    let headers = &parts.headers;
    if parts.version <= http::Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            // HTTP/1.0 too: it would go on as a Host-less HTTP/1.1 request.
            (None, _) => return Err(Refusal::Malformed("missing_host")),
            (Some(_), Some(_)) => return Err(Refusal::Malformed("multiple_host")),
            _ => {}
        }
        // Exactly one `Transfer-Encoding: chunked`, or none: `chunked, chunked`, a coding
        // before it, or the header twice are ways to make two parsers disagree.
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
        if let Some(first) = codings.next()
            && (codings.next().is_some()
                || !first
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"chunked"))
        {
            return Err(Refusal::Malformed("transfer_encoding"));
        }
    }
    // scopegate relays requests, not protocol switches (h2c, WebSocket).
    if headers.contains_key(header::UPGRADE) || headers.contains_key(&HTTP2_SETTINGS) {
        return Err(Refusal::Malformed("upgrade"));
    }
    Ok(())
}

/// Header names an upstream could read otherwise than the decision did. A name with `_` or `.`
/// (CGI, WSGI, Rack and PHP read `X_Foo` and `X.Foo` as `X-Foo`) is dropped, refused (400
/// `header_name_underscore`) or let through, by `[forwarding] underscore_headers`; dropped here,
/// before the decision, so that the decision and the upstream see the same headers. A
/// `Connection` that names a header the decision or the upstream relies on is refused (400
/// `connection_names_protected_header`) rather than obeyed. One pass over the names; nothing is
/// allocated unless a name is dropped.
pub fn check_header_names(headers: &mut HeaderMap, rules: &HeaderRules) -> Result<(), Refusal> {
    if rules.underscore != UnderscoreHeaders::Allow {
        let mut odd = headers
            .keys()
            .filter(|k| names::is_ambiguous(k.as_str().as_bytes()))
            .peekable();
        if odd.peek().is_some() {
            if rules.underscore == UnderscoreHeaders::Reject {
                return Err(Refusal::Ambiguous("header_name_underscore"));
            }
            let dropped: Vec<HeaderName> = odd.cloned().collect();
            for name in dropped {
                headers.remove(name);
            }
        }
    }
    for value in headers.get_all(header::CONNECTION) {
        let named = value.as_bytes().split(|b| *b == b',');
        if named.map(<[u8]>::trim_ascii).any(|n| rules.protected(n)) {
            return Err(Refusal::Ambiguous("connection_names_protected_header"));
        }
    }
    Ok(())
}

static HTTP2_SETTINGS: http::HeaderName = http::HeaderName::from_static("http2-settings");

/// The request's `Content-Length`, when it has a valid one.
pub fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forwarding::IdentityHeaderNames;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    }

    fn rules(mode: UnderscoreHeaders) -> HeaderRules {
        HeaderRules::new(
            IdentityHeaderNames::default(),
            vec![HeaderName::from_static("x-shopify-access-token")],
            mode,
        )
    }

    fn reason(r: Result<(), Refusal>) -> Option<&'static str> {
        r.err().map(|r| r.reason())
    }

    #[test]
    fn names_with_underscores_or_dots_are_dropped_refused_or_allowed() {
        let sent = [
            ("x_scopegate_role", "seller-admin"),
            ("x.forwarded.for", "10.0.0.1"),
            ("x-kept", "1"),
        ];
        let mut h = headers(&sent);
        assert_eq!(
            reason(check_header_names(&mut h, &rules(UnderscoreHeaders::Drop))),
            None
        );
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);

        let mut h = headers(&sent);
        let refused = check_header_names(&mut h, &rules(UnderscoreHeaders::Reject));
        assert_eq!(reason(refused), Some("header_name_underscore"));

        let mut h = headers(&sent);
        assert_eq!(
            reason(check_header_names(&mut h, &rules(UnderscoreHeaders::Allow))),
            None
        );
        assert_eq!(h.len(), 3);

        // Nothing odd: nothing changes in any mode.
        for mode in [UnderscoreHeaders::Drop, UnderscoreHeaders::Reject] {
            let mut h = headers(&[("x-kept", "1"), ("authorization", "Bearer a.b.c")]);
            assert_eq!(reason(check_header_names(&mut h, &rules(mode))), None);
            assert_eq!(h.len(), 2);
        }
    }

    #[test]
    fn connection_may_name_hop_by_hop_headers_but_not_protected_ones() {
        let r = rules(UnderscoreHeaders::Drop);
        for ok in ["keep-alive", "close", "TE, Upgrade", "x-private", " , "] {
            let mut h = headers(&[("connection", ok)]);
            assert_eq!(reason(check_header_names(&mut h, &r)), None, "{ok}");
        }
        for protected in [
            "Authorization",
            "keep-alive, host",
            "Content-Length",
            "content-type",
            "Cookie",
            "X-Scopegate-Role",
            "x_scopegate_subject",
            "x-scopegate-new",
            "Forwarded",
            "X-Forwarded-For",
            "x.forwarded.host",
            "X-Shopify-Access-Token",
        ] {
            let mut h = headers(&[("connection", protected)]);
            assert_eq!(
                reason(check_header_names(&mut h, &r)),
                Some("connection_names_protected_header"),
                "{protected}"
            );
        }
    }
}
