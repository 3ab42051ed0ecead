//! The path normaliser: whatever it accepts is canonical, means what was sent, and is the same
//! string however often it is normalised again (the proxy decides on and forwards that string).
//! A canonical path without a refused double-encoded escape stays free of traversal for an
//! upstream that decodes once more; and a path's matching key under any preset's path rules is
//! a prefix of it, lower-cased at most.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use scopegate::path::{PathError, double_encoded, normalise};
use scopegate::routes::{Case, PathRules, TrailingSlash};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text);
    }
    // The same bytes as hyper would hand them over: through `http::Uri`.
    if let Ok(uri) = http::Uri::try_from(data)
        && uri.path_and_query().is_some()
    {
        check(uri.path());
    }
});

fn check(input: &str) {
    let Ok(canonical) = normalise(input) else {
        return;
    };
    let c = canonical.as_ref();
    assert!(c.starts_with('/'), "{input:?} -> {c:?}");
    assert!(!c.contains("//"), "{input:?} -> {c:?}");
    assert!(
        !c.split('/').any(|s| s == "." || s == ".."),
        "{input:?} -> {c:?}"
    );
    let bytes = c.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        assert!((0x21..0x7f).contains(&b), "{input:?} -> {c:?}: byte {b:#x}");
        assert!(!matches!(b, b'\\' | b';' | b'#'), "{input:?} -> {c:?}");
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(upper_hex);
            let lo = bytes.get(i + 2).copied().and_then(upper_hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                panic!("{input:?} -> {c:?}: escape not two upper-case hex digits");
            };
            let value = hi << 4 | lo;
            assert!(
                !(value.is_ascii_alphanumeric() || b"-._~".contains(&value)),
                "{input:?} -> {c:?}: unreserved character left encoded"
            );
            assert!(
                !matches!(value, b'/' | b'\\') && value >= 0x20 && value != 0x7f,
                "{input:?} -> {c:?}: {value:#x} accepted encoded"
            );
        }
    }
    // Idempotent; and a path without escapes is taken as it is, without a copy.
    match normalise(c) {
        Ok(again) => {
            assert_eq!(again, c, "{input:?} -> {c:?} -> {again:?}");
            if !c.contains('%') {
                assert!(matches!(again, Cow::Borrowed(_)), "{c:?} copied");
            }
        }
        Err(e) => panic!("{input:?} -> {c:?} -> {e:?}"),
    }
    // Same meaning: the decoded non-empty segments are those that were sent.
    assert_eq!(segments(input), segments(c), "{input:?} -> {c:?}");
    assert_eq!(
        input.ends_with('/'),
        c.ends_with('/'),
        "{input:?} -> {c:?}: trailing slash"
    );
    // Decoded, the path is valid UTF-8 (overlong forms and stray bytes are refused).
    for segment in segments(c) {
        assert!(std::str::from_utf8(&segment).is_ok(), "{input:?} -> {c:?}");
    }
    decoded_twice(c);
    keys(c);
}

/// What an upstream that decodes `%25` once more sees: no dot segment, encoded separator,
/// control byte, `;` or `#`, unless `double_encoded` refused the path.
fn decoded_twice(c: &str) {
    if double_encoded(c) || !c.contains("%25") {
        return;
    }
    let once = c.replace("%25", "%");
    if let Err(e) = normalise(&once) {
        assert!(
            matches!(
                e,
                PathError::BadPercentEncoding | PathError::InvalidUtf8 | PathError::Space
            ),
            "{c:?} decodes once more to {once:?}: {e:?}"
        );
    }
}

/// A key is a prefix of the path (lower-cased when case does not count), so captures keep
/// their places; case-sensitive keys borrow.
fn keys(c: &str) {
    for slash in [TrailingSlash::Ignored, TrailingSlash::Significant] {
        for case in [Case::Sensitive, Case::Insensitive] {
            for suffix in [None, Some(".json")] {
                let rules = PathRules {
                    trailing_slash: slash,
                    case,
                    optional_suffix: suffix.map(Into::into),
                    ..PathRules::default()
                };
                let key = rules.key(c);
                assert!(key.len() <= c.len() && !key.is_empty(), "{c:?} -> {key:?}");
                let prefix = &c[..key.len()];
                match case {
                    Case::Sensitive => assert_eq!(&*key, prefix),
                    Case::Insensitive => assert_eq!(*key, prefix.to_ascii_lowercase()),
                }
            }
        }
    }
}

fn segments(path: &str) -> Vec<Vec<u8>> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode(s.as_bytes()))
        .collect()
}

fn decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                s.get(i + 1).copied().and_then(any_hex),
                s.get(i + 2).copied().and_then(any_hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn upper_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn any_hex(c: u8) -> Option<u8> {
    upper_hex(c.to_ascii_uppercase())
}
