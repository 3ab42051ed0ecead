//! Credentials: find the bearer token in the request, verify it once, and cache who it speaks for.

pub mod cache;
mod identity;
pub mod idp_client;
pub mod jwks_remote;
pub mod jwt;
pub mod keys;
pub mod opaque;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, header};

use crate::routes::Companion;
use crate::telemetry::Metrics;
use cache::{TokenCache, cache_key, cache_key_bytes};
pub use identity::{Identity, IdentityHeaders, header_list, header_text};
use jwt::JwtVerifier;

/// Why a presented token was refused (401 `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not allowed for this key")]
    UnsupportedAlgorithm,
    #[error("no configured key matches the token")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token claims have the wrong type")]
    BadClaims,
    #[error("token has no expiry")]
    MissingExpiry,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("bearer token is empty")]
    Empty,
    #[error("token is not active")]
    Inactive,
    #[error("a companion token cannot be used as the bearer token")]
    CompanionAsBearer,
    #[error("companion token is not of the expected kind")]
    WrongCompanionKind,
    #[error("companion token belongs to another store")]
    CompanionStoreMismatch,
    #[error("token holds scopes that cannot be combined")]
    IncompatibleScopes,
    /// RFC 7515 4.1.11: the header names extensions the verifier must understand (`crit`),
    /// and scopegate implements none.
    #[error("token header has critical extensions that are not supported")]
    CritUnsupported,
}

impl TokenError {
    /// Stable machine-readable reason for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::UnsupportedAlgorithm => "token_algorithm",
            TokenError::UnknownKey => "token_unknown_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::BadClaims => "token_bad_claims",
            TokenError::MissingExpiry => "token_no_expiry",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongIssuer => "token_wrong_issuer",
            TokenError::WrongAudience => "token_wrong_audience",
            TokenError::Empty => "token_empty",
            TokenError::Inactive => "token_inactive",
            TokenError::CompanionAsBearer => "token_companion_as_bearer",
            TokenError::WrongCompanionKind => "token_wrong_companion_kind",
            TokenError::CompanionStoreMismatch => "token_companion_store_mismatch",
            TokenError::IncompatibleScopes => "token_incompatible_scopes",
            TokenError::CritUnsupported => "token_crit_unsupported",
        }
    }
}

/// Why a request has no usable credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No bearer credentials at all (401 without an error code).
    Missing,
    /// More than one `Authorization` header (400).
    Ambiguous,
    /// Credentials presented but refused (401 `invalid_token`).
    Invalid(TokenError),
    /// Credentials cannot be checked right now (keys not loaded, introspection down): 503.
    Unavailable(&'static str),
}

/// Verifies one kind of companion token (its own header, keys and cache).
#[derive(Debug)]
pub struct CompanionVerifier {
    pub header: HeaderName,
    verifier: JwtVerifier,
    cache: TokenCache,
}

impl CompanionVerifier {
    pub fn new(header: HeaderName, verifier: JwtVerifier, cache: TokenCache) -> CompanionVerifier {
        CompanionVerifier {
            header,
            verifier,
            cache,
        }
    }
}

/// Default header of each companion kind.
pub fn companion_header(kind: Companion) -> HeaderName {
    match kind {
        Companion::Customer => HeaderName::from_static("x-moltin-customer-token"),
        Companion::AccountManagement => {
            HeaderName::from_static("ep-account-management-authentication-token")
        }
    }
}

/// Where opaque (non-JWT) tokens are resolved, and which headers carry them.
#[derive(Debug, Default)]
pub struct OpaqueSources {
    pub static_tokens: Option<opaque::StaticTokens>,
    pub introspection: Option<opaque::Introspector>,
    /// Platform headers carrying a token instead of `Authorization` (`X-Shopify-Access-Token`).
    pub headers: Vec<HeaderName>,
}

/// Finds, verifies and caches bearer credentials.
#[derive(Debug)]
pub struct Authenticator {
    verifier: JwtVerifier,
    cache: TokenCache,
    companions: [Option<CompanionVerifier>; 2],
    opaque: OpaqueSources,
    metrics: Arc<Metrics>,
}

/// The one credential a request presents.
enum Presented<'a> {
    Jwt(&'a str),
    Opaque(&'a str),
}

impl Authenticator {
    pub fn new(
        verifier: JwtVerifier,
        cache: TokenCache,
        companions: [Option<CompanionVerifier>; 2],
        opaque: OpaqueSources,
        metrics: Arc<Metrics>,
    ) -> Authenticator {
        Authenticator {
            verifier,
            cache,
            companions,
            opaque,
            metrics,
        }
    }

    /// The credential of the request: one `Authorization: Bearer` or one platform token header,
    /// never both.
    fn presented<'h>(&self, headers: &'h HeaderMap) -> Result<Presented<'h>, AuthError> {
        let bearer = match bearer(headers) {
            Ok(token) => Some(token),
            Err(AuthError::Missing) => None,
            Err(e) => return Err(e),
        };
        let mut platform = None;
        for name in &self.opaque.headers {
            let mut values = headers.get_all(name).iter();
            if let Some(value) = values.next() {
                if platform.is_some() || values.next().is_some() {
                    return Err(AuthError::Ambiguous);
                }
                let token = value
                    .to_str()
                    .ok()
                    .filter(|t| !t.is_empty() && all_token68(t))
                    .ok_or(AuthError::Invalid(TokenError::Malformed))?;
                platform = Some(token);
            }
        }
        match (bearer, platform) {
            (Some(_), Some(_)) => Err(AuthError::Ambiguous),
            (None, None) => Err(AuthError::Missing),
            (None, Some(token)) => Ok(Presented::Opaque(token)),
            (Some((token, 2)), None) => Ok(Presented::Jwt(token)),
            (Some((token, _)), None) => Ok(Presented::Opaque(token)),
        }
    }

    /// An opaque token: the static token file first, then introspection.
    async fn resolve_opaque(&self, token: &str) -> Result<Arc<Identity>, AuthError> {
        if let Some(identity) = self
            .opaque
            .static_tokens
            .as_ref()
            .and_then(|s| s.get(token))
        {
            return not_a_companion(identity);
        }
        match &self.opaque.introspection {
            Some(introspector) => match introspector.resolve(token).await {
                Ok(identity) => not_a_companion(identity),
                Err(opaque::OpaqueError::Inactive) => Err(AuthError::Invalid(TokenError::Inactive)),
                Err(opaque::OpaqueError::Unavailable) => {
                    Err(AuthError::Unavailable("introspection_unavailable"))
                }
            },
            None if self.opaque.static_tokens.is_some() => {
                Err(AuthError::Invalid(TokenError::Inactive))
            }
            None => Err(AuthError::Invalid(TokenError::Malformed)),
        }
    }

    /// The companion token of `kind` sent with the request: `None` when absent (or companions
    /// of that kind are not configured), an error when present but not acceptable.
    pub fn companion(
        &self,
        kind: Companion,
        headers: &HeaderMap,
    ) -> Option<Result<Arc<Identity>, TokenError>> {
        let c = self.companions[kind.index()].as_ref()?;
        let mut values = headers.get_all(&c.header).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return Some(Err(TokenError::Malformed));
        }
        let token = match value.to_str() {
            Ok(t) if !t.is_empty() && all_token68(t) => t,
            _ => return Some(Err(TokenError::Malformed)),
        };
        let now = unix_now();
        let key = cache_key(token);
        if let Some(identity) = c.cache.get(&key, now) {
            return Some(Ok(identity));
        }
        let result = c.verifier.verify(token, now).and_then(|id| {
            if id.token_kind.as_deref() == Some(kind.token_type()) && id.expires_at.is_some() {
                Ok(id)
            } else if id.expires_at.is_none() {
                Err(TokenError::MissingExpiry)
            } else {
                Err(TokenError::WrongCompanionKind)
            }
        });
        let label = match &result {
            Ok(_) => "valid_companion",
            Err(e) => e.reason(),
        };
        self.metrics.count_verification(label);
        let identity = Arc::new(match result {
            Ok(id) => id,
            Err(e) => return Some(Err(e)),
        });
        c.cache.insert(key, identity.clone(), now);
        Some(Ok(identity))
    }

    /// The cache-hit path, with nothing to wait for; on `None`, [`Authenticator::authenticate`]
    /// decides. A token
    /// verified before is looked up before its bytes are checked: the cache holds only bearer
    /// JWTs that passed every check of the full path, and a hit means the same bytes (see
    /// `cache_key`), so those checks would pass again. Saves a pass over several hundred bytes.
    pub fn cached(&self, headers: &HeaderMap) -> Option<Arc<Identity>> {
        let raw = bearer_bytes(headers).ok()?;
        if carries_any(headers, &self.opaque.headers) {
            return None;
        }
        let identity = self.cache.get(&cache_key_bytes(raw), unix_now())?;
        self.metrics.token_cache_hits.inc();
        Some(identity)
    }

    /// The identity behind the request's credentials when [`Authenticator::cached`] had none:
    /// every check on the token's bytes, then the cache again (an opaque header may have been
    /// present), then verification or the opaque token's source, and the result cached.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, AuthError> {
        let token = match self.presented(headers)? {
            Presented::Jwt(token) => token,
            Presented::Opaque(token) => return self.resolve_opaque(token).await,
        };
        let now = unix_now();
        let key = cache_key(token);
        if let Some(identity) = self.cache.get(&key, now) {
            self.metrics.token_cache_hits.inc();
            return Ok(identity);
        }
        self.metrics.token_cache_misses.inc();
        if !self.verifier.has_keys() {
            return Err(AuthError::Unavailable("keys_not_loaded"));
        }
        let mut result = self.verifier.verify(token, now);
        if result.as_ref().err() == Some(&TokenError::UnknownKey)
            && self.verifier.refresh_for_unknown_kid().await
        {
            result = self.verifier.verify(token, now);
        }
        let result = result.and_then(|id| {
            if is_companion(&id) {
                Err(TokenError::CompanionAsBearer)
            } else {
                Ok(id)
            }
        });
        let label = match &result {
            Ok(_) => "valid",
            Err(e) => e.reason(),
        };
        self.metrics.count_verification(label);
        let identity = Arc::new(result.map_err(AuthError::Invalid)?);
        self.cache.insert(key, identity.clone(), now);
        self.metrics
            .token_cache_entries
            .set(self.cache.len() as i64);
        Ok(identity)
    }
}

/// Whether the request carries any of `names`. A request has a handful of header names: one
/// pass over them compares (a standard name by its tag, a custom one by length, then bytes),
/// where a lookup per listed name would hash each of them.
fn carries_any(headers: &HeaderMap, names: &[HeaderName]) -> bool {
    if names.is_empty() {
        return false;
    }
    if headers.keys_len() > 16 {
        return names.iter().any(|n| headers.contains_key(n));
    }
    headers.keys().any(|k| names.contains(k))
}

/// True for a companion token's identity, which is never accepted as the bearer token.
fn is_companion(identity: &Identity) -> bool {
    identity
        .token_kind
        .as_deref()
        .is_some_and(|kind| Companion::ALL.iter().any(|c| c.token_type() == kind))
}

/// An opaque bearer token's identity, unless it is a companion token's.
fn not_a_companion(identity: Arc<Identity>) -> Result<Arc<Identity>, AuthError> {
    if is_companion(&identity) {
        Err(AuthError::Invalid(TokenError::CompanionAsBearer))
    } else {
        Ok(identity)
    }
}

/// The token of the one `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    bearer(headers).map(|(token, _)| token)
}

/// The bearer token and how many dots it holds (two for a JWT), from one pass over its bytes.
fn bearer(headers: &HeaderMap) -> Result<(&str, usize), AuthError> {
    let token = bearer_bytes(headers)?;
    let dots = scan_token(token).ok_or(AuthError::Invalid(TokenError::Malformed))?;
    // b64token characters are ASCII, so this always succeeds.
    let token =
        std::str::from_utf8(token).map_err(|_| AuthError::Invalid(TokenError::Malformed))?;
    Ok((token, dots))
}

/// The bytes after `Bearer ` of the one `Authorization` header, not yet checked to be a token.
fn bearer_bytes(headers: &HeaderMap) -> Result<&[u8], AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::Ambiguous);
    }
    let bytes = value.as_bytes();
    let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        // Another scheme carries no bearer credentials; a value that is not visible ASCII is
        // malformed whatever its scheme.
        return Err(match value.to_str() {
            Ok(_) => AuthError::Missing,
            Err(_) => AuthError::Invalid(TokenError::Malformed),
        });
    }
    let token = trim_spaces(rest);
    if token.is_empty() {
        return Err(AuthError::Invalid(TokenError::Empty));
    }
    Ok(token)
}

fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    bytes
}

/// Checks that every byte is a `b64token` character and counts the dots, in one pass with no
/// early exit, so that it compiles to vector compares (a bearer JWT is several hundred bytes
/// and is checked on every request). `None` when a byte is not allowed.
fn scan_token(token: &[u8]) -> Option<usize> {
    let mut bad = 0u8;
    let mut dots = 0usize;
    let chunks = token.chunks_exact(32);
    let tail = chunks.remainder();
    for chunk in chunks {
        // Byte-wide accumulators over a fixed-size chunk: the shape that vectorises.
        let mut d = 0u8;
        for &b in chunk {
            bad |= u8::from(!is_token68(b));
            d += u8::from(b == b'.');
        }
        dots += usize::from(d);
    }
    for &b in tail {
        bad |= u8::from(!is_token68(b));
        dots += usize::from(b == b'.');
    }
    (bad == 0).then_some(dots)
}

/// True when every byte is a `b64token` character.
fn all_token68(token: &str) -> bool {
    scan_token(token.as_bytes()).is_some()
}

/// RFC 6750 `b64token` characters.
fn is_token68(b: u8) -> bool {
    let lower = b | 0x20;
    (b.wrapping_sub(b'0') < 10)
        | (lower.wrapping_sub(b'a') < 26)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
        | (b == b'=')
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
