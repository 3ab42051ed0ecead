//! Header names as an upstream may read them. CGI, WSGI, Rack and PHP turn a header name into a
//! variable (`HTTP_X_FOO`), so `X-Foo`, `X_Foo` and `X.Foo` are one name there. Every name
//! scopegate strips or protects is compared in that normalised form (lowercase, `_` and `.`
//! read as `-`), so no spelling gets past a list its canonical spelling is on. The comparison
//! maps bytes as it goes: nothing is allocated per request.

use http::HeaderName;
use serde::Deserialize;

use super::IdentityHeaderNames;

/// `[forwarding] underscore_headers`: what the admit phase does with a request header whose
/// name holds `_` or `.`, which the upstream may read as the same name with `-`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnderscoreHeaders {
    /// Removed before the decision (nginx's default), so decision and upstream see one set.
    #[default]
    Drop,
    /// 400 `header_name_underscore`.
    Reject,
    /// Passed on; the strip lists still apply to the normalised name.
    Allow,
}

/// Client-address headers: what an upstream may take for the client's address, scheme, host,
/// port or path. Never passed on from a client; with any other `X-Forwarded-*` name
/// ([`FORWARDED_PREFIX`]; scopegate sets its own `X-Forwarded-For`, `-Proto` and `-Host`).
/// This is the one list: there is no trusted proxy in front of scopegate yet, and a trusted-proxy
/// setting would decide here which of them to keep.
pub static CLIENT_ADDRESS: [&str; 15] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-uri",
    "x-original-forwarded-for",
    // IIS routes on these two: a path the decision never saw.
    "x-original-url",
    "x-rewrite-url",
];

/// Headers some frameworks read as "the real method" (a POST judged as POST would run as DELETE).
pub static METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Hop-by-hop names with a `-`, so that another spelling of them is not passed on either
/// (the canonical ones are removed with the rest of the hop-by-hop headers).
static HOP_BY_HOP_SPELLED: [&str; 5] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
];

/// What the decision or the upstream relies on, so `Connection` may not name it (with the
/// identity, forwarding and credential headers).
static RELIED_ON: [&str; 5] = [
    "authorization",
    "host",
    "content-length",
    "content-type",
    "cookie",
];

/// Every client header starting with this is an identity header, and never passes.
pub const IDENTITY_PREFIX: &[u8] = b"x-scopegate-";
/// Every client `X-Forwarded-*` header is stripped.
pub const FORWARDED_PREFIX: &[u8] = b"x-forwarded-";

/// A byte of a name as the upstream reads it.
fn normal(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// True when `name` holds `_` or `.`: the upstream may read it as another name.
pub fn is_ambiguous(name: &[u8]) -> bool {
    name.iter().any(|&b| b == b'_' || b == b'.')
}

/// `name` (any spelling) read as the upstream does equals `normalised`.
pub fn same_normalised(name: &[u8], normalised: &[u8]) -> bool {
    name.len() == normalised.len() && name.iter().zip(normalised).all(|(&a, &b)| normal(a) == b)
}

/// `name` (any spelling) read as the upstream does starts with `prefix`.
fn starts_normalised(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && same_normalised(&name[..prefix.len()], prefix)
}

/// Names held normalised, with a mask of their lengths: a name of a length none has costs one
/// test, the usual case for most of a request's headers.
#[derive(Debug, Clone, Default)]
struct NameSet {
    names: Vec<Box<[u8]>>,
    lengths: u128,
}

impl NameSet {
    fn insert(&mut self, name: &[u8]) {
        let normalised: Box<[u8]> = name.iter().map(|&b| normal(b)).collect();
        self.lengths |= 1 << normalised.len().min(127);
        if !self.names.contains(&normalised) {
            self.names.push(normalised);
        }
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.lengths & (1 << name.len().min(127)) != 0
            && self.names.iter().any(|n| same_normalised(name, n))
    }
}

/// What the admit phase and the forwarding rewrite know about header names: the identity
/// headers scopegate sets, the credential headers the decision reads, what happens to a name
/// with `_` or `.`, and every list of names compared normalised. Built once at start.
#[derive(Debug, Clone)]
pub struct HeaderRules {
    pub identity: IdentityHeaderNames,
    pub underscore: UnderscoreHeaders,
    /// Platform token headers (`opaque.headers`) and companion token headers, as configured:
    /// passed on as sent, but under no other spelling.
    credentials: Vec<HeaderName>,
    /// Never passed on from a client: the configured identity names, client-address headers,
    /// method overrides, hop-by-hop names spelled otherwise.
    stripped: NameSet,
    /// `credentials`, normalised.
    credential_names: NameSet,
    /// What `Connection` may not name.
    protected: NameSet,
}

impl Default for HeaderRules {
    fn default() -> Self {
        HeaderRules::new(
            IdentityHeaderNames::default(),
            Vec::new(),
            UnderscoreHeaders::default(),
        )
    }
}

impl HeaderRules {
    pub fn new(
        identity: IdentityHeaderNames,
        credentials: Vec<HeaderName>,
        underscore: UnderscoreHeaders,
    ) -> HeaderRules {
        let mut stripped = NameSet::default();
        let mut protected = NameSet::default();
        let mut credential_names = NameSet::default();
        for name in identity.all() {
            stripped.insert(name.as_str().as_bytes());
            protected.insert(name.as_str().as_bytes());
        }
        for name in CLIENT_ADDRESS
            .iter()
            .chain(&METHOD_OVERRIDES)
            .chain(&HOP_BY_HOP_SPELLED)
        {
            stripped.insert(name.as_bytes());
        }
        for name in RELIED_ON.iter().chain(&["forwarded"]) {
            protected.insert(name.as_bytes());
        }
        for name in &credentials {
            credential_names.insert(name.as_str().as_bytes());
            protected.insert(name.as_str().as_bytes());
        }
        HeaderRules {
            identity,
            underscore,
            credentials,
            stripped,
            credential_names,
            protected,
        }
    }

    /// A client header that is never passed on, whatever its spelling: an identity header
    /// (configured or `x-scopegate-*`), `Forwarded`, `X-Forwarded-*` and the other
    /// client-address headers, a method override, a hop-by-hop name spelled otherwise, or a
    /// credential header spelled otherwise than the one the decision read.
    pub fn strips(&self, name: &HeaderName) -> bool {
        let n = name.as_str().as_bytes();
        starts_normalised(n, IDENTITY_PREFIX)
            || starts_normalised(n, FORWARDED_PREFIX)
            || self.stripped.contains(n)
            || (self.credential_names.contains(n) && !self.credentials.contains(name))
    }

    /// A name (any case and spelling, as `Connection` lists it) that the decision or the
    /// upstream relies on: `Authorization`, `Host`, `Content-Length`, `Content-Type`, `Cookie`,
    /// an identity header, `Forwarded` or `X-Forwarded-*`, a credential header.
    pub fn protected(&self, name: &[u8]) -> bool {
        starts_normalised(name, IDENTITY_PREFIX)
            || starts_normalised(name, FORWARDED_PREFIX)
            || self.protected.contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HeaderRules {
        HeaderRules::new(
            IdentityHeaderNames::default(),
            vec![HeaderName::from_static("x-shopify-access-token")],
            UnderscoreHeaders::Allow,
        )
    }

    fn strips(name: &str) -> bool {
        rules().strips(&HeaderName::from_bytes(name.as_bytes()).unwrap())
    }

    #[test]
    fn every_spelling_of_a_stripped_name_is_stripped() {
        for name in [
            "x-scopegate-role",
            "x_scopegate_role",
            "x.scopegate.role",
            "X_Scopegate-Anything",
            "x-forwarded-for",
            "x.forwarded.for",
            "x_forwarded_ssl",
            "forwarded",
            "x_real_ip",
            "x-original-url",
            "x.rewrite.url",
            "cf_connecting_ip",
            "x_http_method_override",
            "proxy_authorization",
            "x_shopify_access_token",
        ] {
            assert!(strips(name), "{name} passed");
        }
        for name in [
            "x-shopify-access-token",
            "authorization",
            "content-type",
            "x-request-id",
            "x_request_id",
            "x-scopegate",
            "x-forwarded",
        ] {
            assert!(!strips(name), "{name} stripped");
        }
    }

    #[test]
    fn protected_names_are_recognised_in_any_case_and_spelling() {
        let r = rules();
        for name in [
            "Authorization",
            "HOST",
            "content_length",
            "Content.Type",
            "cookie",
            "X_Scopegate_Role",
            "x-scopegate-whatever",
            "Forwarded",
            "X-Forwarded-For",
            "x_forwarded_anything",
            "X-Shopify-Access-Token",
        ] {
            assert!(r.protected(name.as_bytes()), "{name}");
        }
        for name in ["keep-alive", "te", "upgrade", "close", "x-private", ""] {
            assert!(!r.protected(name.as_bytes()), "{name}");
        }
    }
}
