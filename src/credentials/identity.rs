//! Who a verified token speaks for, and the identity header values describing it to the
//! upstream, each encoded so that it reads one way.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::routes::RouteTable;
use crate::scopes::ScopeSet;

/// Who a verified token speaks for. Built once per token and shared from the cache.
#[derive(Debug)]
pub struct Identity {
    pub subject: Option<Box<str>>,
    pub client: Option<Box<str>>,
    pub token_kind: Option<Box<str>>,
    pub roles: Box<[Box<str>]>,
    pub scopes: Box<[Box<str>]>,
    pub tenant: Option<Box<str>>,
    /// `exp`, unix seconds.
    pub expires_at: Option<u64>,
    /// The token is for a private app (`app_type` claim `private`).
    pub private_app: bool,
    /// Resolved from an opaque token: its lifetime is the source's (static file, introspection),
    /// so a missing `exp` is not held against it.
    pub opaque: bool,
    /// Identity headers for the upstream, built once.
    pub headers: IdentityHeaders,
    /// Scopes resolved against one route table, so a cached token is resolved once per reload.
    resolved: ArcSwapOption<Resolved>,
}

#[derive(Debug)]
struct Resolved {
    generation: u64,
    per_preset: Box<[ScopeSet]>,
}

/// Header values describing an identity to the upstream.
#[derive(Debug, Default)]
pub struct IdentityHeaders {
    pub subject: Option<HeaderValue>,
    pub client: Option<HeaderValue>,
    pub scopes: Option<HeaderValue>,
    pub token_kind: Option<HeaderValue>,
    pub roles: Option<HeaderValue>,
}

impl Identity {
    pub fn new(
        subject: Option<Box<str>>,
        client: Option<Box<str>>,
        token_kind: Option<Box<str>>,
        roles: Box<[Box<str>]>,
        scopes: Box<[Box<str>]>,
        tenant: Option<Box<str>>,
        expires_at: Option<u64>,
    ) -> Identity {
        let join = |xs: &[Box<str>], sep: u8| {
            (!xs.is_empty()).then(|| header_list(xs.iter().map(|x| &**x), sep))
        };
        let headers = IdentityHeaders {
            subject: subject.as_deref().map(header_text),
            client: client.as_deref().map(header_text),
            scopes: join(&scopes, b' '),
            token_kind: token_kind.as_deref().map(header_text),
            roles: join(&roles, b','),
        };
        Identity {
            subject,
            client,
            token_kind,
            roles,
            scopes,
            tenant,
            expires_at,
            private_app: false,
            opaque: false,
            headers,
            resolved: ArcSwapOption::empty(),
        }
    }

    /// Marks the identity as resolved from an opaque token.
    pub fn opaque(mut self) -> Identity {
        self.opaque = true;
        self
    }

    /// Marks the identity as a private app's.
    pub fn with_private_app(mut self, private: bool) -> Identity {
        self.private_app = private;
        self
    }

    /// The scopes this identity holds in `preset`'s vocabulary, implication applied.
    /// Computed once per route table and memoised.
    pub fn scopes_in(&self, table: &RouteTable, preset: u16) -> ScopeSet {
        if let Some(r) = &*self.resolved.load()
            && r.generation == table.generation()
        {
            return r.per_preset[usize::from(preset)];
        }
        let per_preset: Box<[ScopeSet]> = table
            .presets()
            .iter()
            .map(|p| p.vocabulary.grant(self.scopes.iter().map(|s| &**s)))
            .collect();
        let set = per_preset[usize::from(preset)];
        self.resolved.store(Some(Arc::new(Resolved {
            generation: table.generation(),
            per_preset,
        })));
        set
    }
}

/// A claim byte passed on as it is: visible ASCII, except `%` (which only ever starts an escape
/// scopegate wrote) and `,` (which only ever separates values scopegate joined).
fn kept(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'%' && b != b','
}

/// `s` into `out`, every byte not [`kept`] percent-encoded (`%25`, `%2C`, `%20`, `%C3%A9`).
fn encode_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if kept(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// The encoded bytes as a header value: only visible ASCII, so always one.
fn value_of(out: Vec<u8>) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A claim value as a header value that reads one way: visible ASCII kept; `%`, `,`, space and
/// anything not visible ASCII percent-encoded.
pub fn header_text(s: &str) -> HeaderValue {
    if s.bytes().all(kept)
        && let Ok(v) = HeaderValue::from_str(s)
    {
        return v;
    }
    let mut out = Vec::with_capacity(s.len() * 3);
    encode_into(&mut out, s);
    value_of(out)
}

/// Claim values joined with `sep` (`,` for roles, ` ` for scopes), each encoded as
/// [`header_text`] first, so a separator in the value is always one scopegate put there.
pub fn header_list<'a>(xs: impl IntoIterator<Item = &'a str>, sep: u8) -> HeaderValue {
    let mut out = Vec::new();
    for (i, x) in xs.into_iter().enumerate() {
        if i > 0 {
            out.push(sep);
        }
        encode_into(&mut out, x);
    }
    value_of(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_values_are_encoded_so_they_read_one_way() {
        for (claim, header) in [
            ("user-7", "user-7"),
            ("a%2Cb", "a%252Cb"),
            ("100%", "100%25"),
            ("a,b", "a%2Cb"),
            ("two words", "two%20words"),
            (" padded ", "%20padded%20"),
            ("caf\u{e9}", "caf%C3%A9"),
            ("tab\there", "tab%09here"),
            ("cr\r\nX-Injected: 1", "cr%0D%0AX-Injected:%201"),
            ("\u{7f}", "%7F"),
            ("", ""),
        ] {
            assert_eq!(header_text(claim), header, "{claim:?}");
        }
    }

    #[test]
    fn lists_are_joined_after_each_element_is_encoded() {
        let roles = header_list(["seller-admin", "viewer,seller-admin", "50%"], b',');
        assert_eq!(roles, "seller-admin,viewer%2Cseller-admin,50%25");
        let scopes = header_list(["read_orders", "write_orders read_all"], b' ');
        assert_eq!(scopes, "read_orders write_orders%20read_all");
        assert_eq!(header_list(["only"], b','), "only");

        let id = Identity::new(
            Some("sub,1".into()),
            None,
            None,
            vec!["a,b".into(), "c".into()].into(),
            vec!["s 1".into(), "s%2".into()].into(),
            None,
            None,
        );
        assert_eq!(id.headers.subject.as_ref().unwrap(), "sub%2C1");
        assert_eq!(id.headers.roles.as_ref().unwrap(), "a%2Cb,c");
        assert_eq!(id.headers.scopes.as_ref().unwrap(), "s%201 s%252");
        assert!(id.headers.client.is_none() && id.headers.token_kind.is_none());
    }
}
