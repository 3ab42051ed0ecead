//! Bearer JWT verification: key by `kid` and pinned algorithm, signature, then strictly typed
//! claims (`exp` required, `nbf`, `iss`, `aud`) checked by scopegate itself.

use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;

use std::sync::Arc;

use super::jwks_remote::RemoteJwks;
use super::keys::VerifyKey;
use super::{Identity, TokenError};

/// Claim checks that apply to every key.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    pub issuer: Option<String>,
    /// The token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
}

/// Verifies bearer JWTs against a fixed key set.
#[derive(Debug)]
pub struct JwtVerifier {
    keys: Vec<VerifyKey>,
    remote: Vec<Arc<RemoteJwks>>,
    rules: ClaimRules,
}

impl JwtVerifier {
    pub fn new(
        keys: Vec<VerifyKey>,
        remote: Vec<Arc<RemoteJwks>>,
        rules: ClaimRules,
    ) -> JwtVerifier {
        JwtVerifier {
            keys,
            remote,
            rules,
        }
    }

    /// False while every key source is a JWKS URL that has not answered yet.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty() || self.remote.iter().any(|r| r.has_keys())
    }

    /// Refreshes the remote key sets for a token naming an unknown `kid` (each at most once per
    /// cooldown). True when a refresh happened, so verifying again may succeed.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let mut refreshed = false;
        for remote in &self.remote {
            refreshed |= remote.refresh_for_unknown_kid().await;
        }
        refreshed
    }

    /// Verifies `token` at unix time `now` against every key source and returns who it
    /// speaks for.
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        if self.remote.is_empty() {
            return self.verify_among(self.keys.iter(), token, now);
        }
        let remote: Vec<Arc<Vec<VerifyKey>>> = self.remote.iter().map(|r| r.keys()).collect();
        let all = self.keys.iter().chain(remote.iter().flat_map(|k| k.iter()));
        self.verify_among(all, token, now)
    }

    fn verify_among<'k>(
        &self,
        keys: impl Iterator<Item = &'k VerifyKey>,
        token: &str,
        now: u64,
    ) -> Result<Identity, TokenError> {
        // Before the header is read: `decode_header` reads `crit` only when it is an array of
        // strings, and a `null` one as none.
        if token
            .split('.')
            .next()
            .and_then(b64)
            .is_some_and(|h| names_crit(&h))
        {
            return Err(TokenError::CritUnsupported);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) if header_alg_is_none(token) => TokenError::UnsupportedAlgorithm,
            _ => TokenError::Malformed,
        })?;
        // header.payload.signature; `decode_header` has refused a header part holding a dot.
        let (message, signature_part) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (_, payload_part) = message.rsplit_once('.').ok_or(TokenError::Malformed)?;
        // Decoded once, for the first key that may check it.
        let mut signature: Option<Vec<u8>> = None;
        let mut saw_kid = false;
        let mut saw_alg = false;
        let mut last = TokenError::UnknownKey;
        let candidates = keys.filter(|k| match &header.kid {
            Some(want) => k.kid.as_deref() == Some(want.as_str()),
            None => true,
        });
        for key in candidates {
            saw_kid = true;
            if !key.algorithms.contains(&header.alg) {
                continue;
            }
            saw_alg = true;
            if signature.is_none() {
                signature = Some(b64(signature_part).ok_or(TokenError::Malformed)?);
            }
            let sig = signature.as_deref().unwrap_or_default();
            if !key.verifies(header.alg, message.as_bytes(), sig) {
                last = TokenError::BadSignature;
                continue;
            }
            let payload = b64(payload_part).ok_or(TokenError::Malformed)?;
            let claims: Claims =
                serde_json::from_slice(&payload).map_err(|_| TokenError::BadClaims)?;
            return self.check(claims, now);
        }
        Err(match (saw_kid, saw_alg) {
            (false, _) => TokenError::UnknownKey,
            (true, false) => TokenError::UnsupportedAlgorithm,
            (true, true) => last,
        })
    }

    fn check(&self, c: Claims, now: u64) -> Result<Identity, TokenError> {
        let leeway = self.rules.leeway;
        let exp = c.exp.map(|d| d.0);
        // A missing `exp` is judged per route file (expiry-exempt scopes), at decision time.
        if exp.is_some_and(|exp| exp.saturating_add(leeway) <= now) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = c.nbf
            && nbf.0 > now.saturating_add(leeway)
        {
            return Err(TokenError::NotYetValid);
        }
        if let Some(want) = &self.rules.issuer
            && c.iss.as_deref() != Some(want.as_str())
        {
            return Err(TokenError::WrongIssuer);
        }
        if !self.rules.audiences.is_empty() {
            let held = c.aud.as_ref().map(OneOrMany::as_slice).unwrap_or_default();
            if !held.iter().any(|a| self.rules.audiences.contains(a)) {
                return Err(TokenError::WrongAudience);
            }
        }
        let mut scopes: Vec<Box<str>> = Vec::new();
        if let Some(s) = &c.scope {
            scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(Into::into));
        }
        if let Some(scp) = &c.scp {
            for s in scp.as_slice() {
                scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(Into::into));
            }
        }
        scopes.sort();
        scopes.dedup();
        let mut roles: Vec<Box<str>> = c
            .roles
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect();
        if let Some(r) = c.role {
            roles.push(r.into());
        }
        roles.sort();
        roles.dedup();
        Ok(Identity::new(
            c.sub.map(Into::into),
            c.client_id.or(c.azp).map(Into::into),
            c.token_type.map(Into::into),
            roles.into(),
            scopes.into(),
            c.store_id.map(|s| s.0.into()),
            exp,
        )
        .with_private_app(c.app_type.as_deref() == Some("private")))
    }
}

/// A token part: base64url without padding, as RFC 7515 writes it.
fn b64(part: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
}

/// True when the header JSON is an object with a member named `crit` (escaped or not, once or
/// more, whatever its value). RFC 7515 4.1.11: a verifier must understand every extension
/// `crit` lists, and scopegate implements none, so a header that has one at all is refused.
/// Other members are skipped unread; a header that is not a JSON object is left to
/// `decode_header`.
fn names_crit(header: &[u8]) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    /// An object key: whether it is `crit`.
    struct IsCrit(bool);
    impl<'de> Deserialize<'de> for IsCrit {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IsCrit, D::Error> {
            struct Key;
            impl Visitor<'_> for Key {
                type Value = IsCrit;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a member name")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IsCrit, E> {
                    Ok(IsCrit(v == "crit"))
                }
            }
            d.deserialize_str(Key)
        }
    }
    struct Members;
    impl<'de> Visitor<'de> for Members {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut crit = false;
            while let Some(IsCrit(is)) = map.next_key()? {
                crit |= is;
                map.next_value::<IgnoredAny>()?;
            }
            Ok(crit)
        }
    }
    serde_json::Deserializer::from_slice(header)
        .deserialize_map(Members)
        .unwrap_or(false)
}

/// `{"alg":"none"}` fails to parse as a header; tell it apart from garbage for the log.
fn header_alg_is_none(token: &str) -> bool {
    let Some(head) = token.split('.').next() else {
        return false;
    };
    b64(head)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.get("alg")
                .and_then(|a| a.as_str())
                .map(|a| a.eq_ignore_ascii_case("none"))
        })
        .unwrap_or(false)
}

/// The claims scopegate reads. Wrong JSON types are errors, not absences.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    iss: Option<String>,
    aud: Option<OneOrMany>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    scope: Option<String>,
    scp: Option<OneOrMany>,
    roles: Option<Vec<String>>,
    role: Option<String>,
    token_type: Option<String>,
    client_id: Option<String>,
    azp: Option<String>,
    store_id: Option<StringOrNumber>,
    app_type: Option<String>,
}

/// A JSON string or an array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// RFC 7519 NumericDate: a JSON number of seconds (fractions truncated); strings are rejected.
#[derive(Debug)]
struct NumericDate(u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a NumericDate (JSON number of seconds)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<NumericDate, E> {
                Ok(NumericDate(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<NumericDate, E> {
                u64::try_from(v)
                    .map(NumericDate)
                    .map_err(|_| E::custom("negative NumericDate"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
                    Ok(NumericDate(v as u64))
                } else {
                    Err(E::custom("NumericDate out of range"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A tenant id may be a JSON string or number.
#[derive(Debug)]
struct StringOrNumber(String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(StringOrNumber(s)),
            serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => {
                Ok(StringOrNumber(n.to_string()))
            }
            _ => Err(serde::de::Error::custom(
                "store_id must be a string or an integer",
            )),
        }
    }
}
