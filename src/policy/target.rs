//! The request target before anything is matched: the authority (`Host`, an absolute-form
//! target, `:authority`) well formed and agreeing, and no bearer token in the query.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::{Method, header};

use super::RequestHead;
use crate::params;
use crate::refusal::Refusal;

/// RFC 6750 2.3 puts tokens in the query (`access_token=`); scopegate refuses that form, which
/// leaks tokens into URLs and logs, rather than forward a credential it did not judge. The name
/// is read as frameworks read it (see [`params`]): `%61ccess_token`, `access.token`,
/// `access_token[]` and `;`-separated pairs are all `access_token`.
pub(super) fn check_query(request: &RequestHead<'_>) -> Result<(), Refusal> {
    match request.uri.query() {
        Some(query) if params::carries_access_token(query.as_bytes()) => {
            Err(Refusal::Ambiguous("token_in_query"))
        }
        _ => Ok(()),
    }
}

/// `Host` and an absolute-form target (HTTP/1.1) or `:authority` (HTTP/2) must each be a bare
/// `host[:port]` (see [`valid_authority`]), and agree when both are present. HTTP/2 has no
/// framing check for a second `Host` (that is HTTP/1.1's, in `hygiene`): it is refused here.
pub(super) fn check_authority(request: &RequestHead<'_>) -> Result<(), Refusal> {
    let mut hosts = request.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::Malformed("multiple_host"));
    }
    if host.is_some_and(|h| !valid_authority(h.as_bytes())) {
        return Err(Refusal::Ambiguous("bad_host"));
    }
    let Some(authority) = request.uri.authority() else {
        return Ok(());
    };
    if !valid_authority(authority.as_str().as_bytes()) {
        return Err(Refusal::Ambiguous("bad_host"));
    }
    match host {
        Some(host)
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            Err(Refusal::Ambiguous("host_mismatch"))
        }
        _ if request.method == Method::CONNECT => Err(Refusal::Ambiguous("connect_method")),
        _ => Ok(()),
    }
}

/// `host [ ":" port ]` and nothing else: no userinfo, path, query, space or empty part. The host
/// is `[IPv6]`, a dotted-quad IPv4 address (a name of digits and dots must be one), or a name of
/// letters, digits, `-`, `.`, `_` and `~` (RFC 3986 unreserved characters: percent-escapes and
/// sub-delims, which upstreams decode or split on differently, are refused). The port is 1 to
/// 65535, in decimal digits.
fn valid_authority(authority: &[u8]) -> bool {
    let (host, port) = match authority {
        [b'[', rest @ ..] => {
            let Some(close) = rest.iter().position(|b| *b == b']') else {
                return false;
            };
            let literal = &rest[..close];
            if !parses::<Ipv6Addr>(literal) {
                return false;
            }
            (None, &rest[close + 1..])
        }
        _ => {
            let end = authority
                .iter()
                .position(|b| *b == b':')
                .unwrap_or(authority.len());
            (Some(&authority[..end]), &authority[end..])
        }
    };
    if let Some(host) = host
        && !valid_name(host)
    {
        return false;
    }
    match port {
        [] => true,
        [b':', digits @ ..] => valid_port(digits),
        _ => false,
    }
}

fn valid_name(host: &[u8]) -> bool {
    if host.is_empty()
        || !host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return false;
    }
    // `127.1`, `1.2.3.999` and `010.0.0.1` are read as addresses, differently by different
    // resolvers: only the dotted quad is one.
    !host.iter().all(|b| b.is_ascii_digit() || *b == b'.') || parses::<Ipv4Addr>(host)
}

fn valid_port(digits: &[u8]) -> bool {
    (1..=5).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u16>().ok())
            .is_some_and(|p| p != 0)
}

fn parses<T: std::str::FromStr>(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| s.parse::<T>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::valid_authority;

    #[test]
    fn authorities() {
        for ok in [
            "localhost",
            "LOCALHOST",
            "localhost:8443",
            "store-1.example.com",
            "a_b.internal:1",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:65535",
            "[::1]",
            "[::1]:443",
            "[2001:db8::ffff:1.2.3.4]",
        ] {
            assert!(valid_authority(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            ":443",
            "localhost:",
            "localhost:0",
            "localhost:65536",
            "localhost:080000",
            "localhost:+80",
            "localhost:80:80",
            "user@localhost",
            "user:pw@localhost",
            "localhost/path",
            "localhost?x",
            "localhost#x",
            "local host",
            "localhost\t",
            "loc%61lhost",
            "a,b",
            "a;b",
            "evil.example\\@localhost",
            "127.1",
            "1.2.3.999",
            "010.0.0.1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[v1.x]",
            "[fe80::1%25eth0]",
            "[127.0.0.1]",
            "caf\u{e9}.example",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad:?}");
        }
    }
}
