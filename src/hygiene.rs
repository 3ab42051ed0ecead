//! Request hygiene: framing that hyper's HTTP/1.1 parser lets through but scopegate will not
//! relay (a missing or second `Host`, `Transfer-Encoding` other than one plain `chunked`, a
//! protocol switch). Checked before anything is judged; each is a 400 that closes the
//! connection.

use http::header;
use http::request::Parts;

use crate::refusal::Refusal;

/// What hyper's HTTP/1.1 parser lets through but scopegate will not relay. (Conflicting
/// lengths, bad chunk sizes, obs-fold, spaces before the colon and non-chunked transfer
/// codings never get this far: hyper refuses them with 400 and closes.)
pub fn check_framing(parts: &Parts) -> Result<(), Refusal> {
    let headers = &parts.headers;
    if parts.version <= http::Version::HTTP_11 {
        let mut hosts = headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (None, _) if parts.version == http::Version::HTTP_11 => {
                return Err(Refusal::Malformed("missing_host"));
            }
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
