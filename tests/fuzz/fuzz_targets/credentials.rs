//! Credential extraction and JWT parsing: no header value or token is accepted unless it is
//! signed with a configured key for that key's algorithm and its claims pass every check.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use scopegate::credentials::jwt::{ClaimRules, JwtVerifier};
use scopegate::credentials::keys::{self, KeySource};
use scopegate::credentials::{AuthError, bearer_token};
use serde_json::Value;

const NOW: u64 = 1_800_000_000;
const LEEWAY: u64 = 30;
const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-fuzzing-secret";

struct Fixture {
    verifier: JwtVerifier,
    signer: EncodingKey,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("scopegate-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("hmac.secret");
    std::fs::write(&secret, SECRET).unwrap();
    let hmac = keys::load(
        &KeySource::HmacSecretFile {
            path: secret,
            kid: Some("h".into()),
        },
        &[Algorithm::HS256],
    )
    .unwrap();
    let rules = ClaimRules {
        issuer: Some("iss-ok".into()),
        audiences: vec!["aud-ok".into()],
        leeway: LEEWAY,
    };
    Fixture {
        verifier: JwtVerifier::new(hmac, Vec::new(), rules),
        signer: EncodingKey::from_secret(SECRET),
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = &*FIXTURE;
    match mode % 3 {
        // Whatever arrives in Authorization headers: extraction, then verification. Nothing
        // unsigned may pass.
        0 | 1 => {
            let mut headers = HeaderMap::new();
            let mut parts = rest.splitn(2, |b| *b == b'\n');
            for part in parts.by_ref().take(if mode % 3 == 1 { 2 } else { 1 }) {
                if let Ok(value) = HeaderValue::from_bytes(part) {
                    headers.append(header::AUTHORIZATION, value);
                }
            }
            match bearer_token(&headers) {
                Ok(token) => {
                    assert_eq!(headers.len(), 1, "a token taken from several headers");
                    assert!(!token.is_empty());
                    assert!(
                        fx.verifier.verify(token, NOW).is_err(),
                        "forged token accepted"
                    );
                }
                Err(AuthError::Ambiguous) => assert!(headers.len() > 1),
                Err(_) => {}
            }
        }
        // Arbitrary header and claims JSON, correctly HMAC-signed: accepted only when the
        // header names our key's algorithm, has no `crit`, and every claim check holds.
        _ => {
            let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let (head, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
            let message = format!("{}.{}", B64.encode(head), B64.encode(claims));
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &fx.signer, Algorithm::HS256)
                    .unwrap();
            let token = format!("{message}.{signature}");
            let Ok(identity) = fx.verifier.verify(&token, NOW) else {
                return;
            };
            // serde skips members it does not read without checking their escapes or the
            // range of their numbers, so an unread member may hold a lone surrogate
            // (`"x":"\ud800"`) or a number beyond f64 (`"x":1E999`) that `Value` refuses.
            let (Some(head), Some(claims)) = (json(head), json(claims)) else {
                return;
            };
            // RFC 7515 4.1.11: scopegate implements no extension, so a header naming any in
            // `crit` (or holding `crit` at all, of whatever type) is never accepted.
            assert!(
                head.get("crit").is_none(),
                "accepted a header with crit: {head}"
            );
            assert_eq!(head["alg"], "HS256", "accepted under another algorithm");
            assert!(
                head.get("kid").is_none_or(|k| k == "h"),
                "accepted under another kid"
            );
            assert_eq!(claims["iss"], "iss-ok");
            let aud_ok = match &claims["aud"] {
                Value::String(a) => a == "aud-ok",
                Value::Array(list) => list.iter().any(|a| a == "aud-ok"),
                _ => false,
            };
            assert!(aud_ok, "accepted without our audience: {claims}");
            if let Some(exp) = claims.get("exp") {
                let exp = exp.as_f64().expect("exp is a number");
                assert!(exp + LEEWAY as f64 > NOW as f64, "expired token accepted");
                assert_eq!(identity.expires_at.map(|e| e as f64), Some(exp.floor()));
            } else {
                assert_eq!(identity.expires_at, None);
            }
            if let Some(nbf) = claims.get("nbf") {
                let nbf = nbf.as_f64().expect("nbf is a number");
                assert!(nbf <= (NOW + LEEWAY) as f64, "token not yet valid accepted");
            }
            // Every scope held was in the token.
            let mut sent = String::new();
            if let Some(s) = claims["scope"].as_str() {
                sent.push_str(s);
            }
            match &claims["scp"] {
                Value::String(s) => sent.push_str(&format!(" {s}")),
                Value::Array(list) => {
                    for s in list.iter().filter_map(Value::as_str) {
                        sent.push_str(&format!(" {s}"));
                    }
                }
                _ => {}
            }
            for scope in identity.scopes.iter() {
                assert!(
                    sent.split(' ').any(|s| s == &**scope),
                    "scope {scope:?} not in the token"
                );
            }
        }
    }
});

/// The JSON value of an accepted part; `None` only for what serde skips unchecked in a
/// member it does not read: a lone surrogate escape (serde_json says "invalid unicode code
/// point" or "lone leading surrogate in hex escape") or a number out of f64's range.
fn json(bytes: &[u8]) -> Option<Value> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(e)
            if e.to_string().contains("unicode code point")
                || e.to_string().contains("surrogate")
                || e.to_string().contains("number out of range") =>
        {
            None
        }
        Err(e) => panic!("accepted a part that is not JSON: {e}"),
    }
}
