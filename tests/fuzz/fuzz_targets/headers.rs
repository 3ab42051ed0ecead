//! Request headers through the admit-phase checks and the forwarding rewrite, with an identity:
//! no client header that an upstream reads as an identity, forwarding, client-address,
//! method-override or credential header gets through under another spelling; in `drop` mode no
//! name with `_` or `.` gets through; every identity value decodes back to exactly its claims.
//!
//! Input: a mode byte, then lines (`\n`): the subject, the roles (`|`-separated), the scopes
//! (`|`-separated), then `name:value` headers. The harness reads names its own way (lowercase,
//! `_` and `.` as `-`), not with scopegate's code.
#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use scopegate::credentials::Identity;
use scopegate::forwarding::{
    ForwardContext, HeaderRules, IdentityHeaderNames, UnderscoreHeaders, prepare_request_headers,
};
use scopegate::hygiene::check_header_names;

const CREDENTIALS: [&str; 4] = [
    "x-shopify-access-token",
    "x-shopify-storefront-access-token",
    "x-moltin-customer-token",
    "ep-account-management-authentication-token",
];
/// Client headers never passed on under any spelling (with the `x-scopegate-` and
/// `x-forwarded-` prefixes).
const STRIPPED: [&str; 18] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-scopegate-subject",
    "x-scopegate-client",
    "x-scopegate-scopes",
    "x-scopegate-token-kind",
    "x-scopegate-role",
];
/// What `Connection` may not name (with the prefixes and the credential headers).
const PROTECTED: [&str; 6] = [
    "authorization",
    "host",
    "content-length",
    "content-type",
    "cookie",
    "forwarded",
];

static RULES: LazyLock<[HeaderRules; 3]> = LazyLock::new(|| {
    let credentials: Vec<HeaderName> = CREDENTIALS
        .iter()
        .map(|n| HeaderName::from_static(*n))
        .collect();
    [
        UnderscoreHeaders::Drop,
        UnderscoreHeaders::Reject,
        UnderscoreHeaders::Allow,
    ]
    .map(|mode| HeaderRules::new(IdentityHeaderNames::default(), credentials.clone(), mode))
});

fn normalised(name: &[u8]) -> String {
    name.iter()
        .map(|&b| match b {
            b'_' | b'.' => '-',
            b => char::from(b.to_ascii_lowercase()),
        })
        .collect()
}

fn odd(name: &str) -> bool {
    name.contains(['_', '.'])
}

fn stripped(n: &str) -> bool {
    n.starts_with("x-scopegate-") || n.starts_with("x-forwarded-") || STRIPPED.contains(&n)
}

fn protected(n: &str) -> bool {
    n.starts_with("x-scopegate-")
        || n.starts_with("x-forwarded-")
        || PROTECTED.contains(&n)
        || CREDENTIALS.contains(&n)
}

/// `value` split on `sep` and percent-decoded: every `%` must start an escape of two upper-case
/// hex digits, every other byte be visible ASCII other than `,` and `%`.
fn decode(value: &HeaderValue, sep: u8) -> Vec<String> {
    value
        .as_bytes()
        .split(|b| *b == sep)
        .map(|part| {
            let mut out = Vec::new();
            let mut i = 0;
            while i < part.len() {
                let b = part[i];
                if b == b'%' {
                    let hex = part.get(i + 1..i + 3).expect("a cut-off escape");
                    assert!(
                        hex.iter()
                            .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                        "not an escape: {value:?}"
                    );
                    out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                    i += 3;
                } else {
                    assert!(
                        b.is_ascii_graphic() && b != b',',
                        "raw {:?} in {value:?}",
                        char::from(b)
                    );
                    out.push(b);
                    i += 1;
                }
            }
            String::from_utf8(out).expect("decodes to the claim's UTF-8")
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let rules = &RULES[usize::from(mode % 3)];
    let mut lines = rest.split(|b| *b == b'\n');
    let text = |l: Option<&[u8]>| String::from_utf8_lossy(l.unwrap_or_default()).into_owned();
    let subject = text(lines.next());
    let list = |s: String| -> Vec<String> {
        s.split('|')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let roles = list(text(lines.next()));
    let scopes = list(text(lines.next()));
    let mut headers = HeaderMap::new();
    for line in lines {
        let split = line.iter().position(|b| *b == b':').unwrap_or(line.len());
        let (name, value) = (&line[..split], line.get(split + 1..).unwrap_or_default());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let sent = headers.clone();

    // Admit.
    let admitted = check_header_names(&mut headers, rules);
    let any_odd = sent.keys().any(|k| odd(k.as_str()));
    let connection_protected = sent
        .get_all("connection")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|n| protected(&normalised(n.trim_ascii())));
    match admitted {
        Ok(()) => {
            assert!(!connection_protected, "Connection named a protected header");
            assert!(
                !(any_odd && rules.underscore == UnderscoreHeaders::Reject),
                "an odd name admitted in reject mode"
            );
        }
        Err(refusal) => {
            match refusal.reason() {
                "header_name_underscore" => {
                    assert!(any_odd && rules.underscore == UnderscoreHeaders::Reject)
                }
                "connection_names_protected_header" => assert!(connection_protected),
                other => panic!("unexpected refusal {other}"),
            }
            return;
        }
    }
    if rules.underscore == UnderscoreHeaders::Drop {
        assert!(
            !headers.keys().any(|k| odd(k.as_str())),
            "odd name admitted"
        );
    }

    // Forward, with an identity.
    let identity = Identity::new(
        Some(subject.clone().into()),
        None,
        None,
        roles.iter().map(|r| r.as_str().into()).collect(),
        scopes.iter().map(|s| s.as_str().into()).collect(),
        None,
        None,
    );
    let ip = HeaderValue::from_static("127.0.0.1");
    let route = HeaderValue::from_static("/v2/orders/{id}");
    let host = HeaderValue::from_static("shop.example");
    let with_host = mode & 0x80 != 0;
    prepare_request_headers(
        &mut headers,
        rules,
        &ForwardContext {
            forwarded_for: &ip,
            tls: mode & 0x40 != 0,
            host: with_host.then(|| host.clone()),
            identity: Some(&identity),
            route: &route,
        },
    );

    // Only scopegate's own values under a stripped name.
    let ours: [(&str, Option<&HeaderValue>); 8] = [
        ("x-forwarded-for", Some(&ip)),
        ("x-forwarded-proto", None),
        ("x-forwarded-host", with_host.then_some(&host)),
        ("x-scopegate-route", Some(&route)),
        ("x-scopegate-subject", identity.headers.subject.as_ref()),
        ("x-scopegate-scopes", identity.headers.scopes.as_ref()),
        ("x-scopegate-role", identity.headers.roles.as_ref()),
        ("x-scopegate-client", None),
    ];
    for name in headers.keys() {
        let n = normalised(name.as_str().as_bytes());
        if stripped(&n) {
            let set = ours.iter().find(|(o, _)| *o == name.as_str());
            let Some((_, want)) = set else {
                panic!("{name} passed (reads as {n})");
            };
            let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
            assert_eq!(values.len(), 1, "{name} twice");
            if let Some(want) = want {
                assert_eq!(values[0], *want, "{name} is not scopegate's");
            } else if name == "x-forwarded-proto" {
                assert!(values[0] == "http" || values[0] == "https");
            } else {
                panic!("{name} set without a claim");
            }
        }
        if CREDENTIALS.contains(&n.as_str()) {
            assert_eq!(
                name.as_str(),
                n,
                "a credential header spelled otherwise passed"
            );
            let passed: Vec<_> = headers.get_all(name).iter().collect();
            let as_sent: Vec<_> = sent.get_all(name).iter().collect();
            assert_eq!(passed, as_sent, "{name} changed");
        }
    }
    assert!(
        headers.get_all("cookie").iter().count() <= 1,
        "several Cookie headers"
    );

    // Identity values read back as exactly the claims, split only where scopegate joined.
    let subject_header = identity.headers.subject.as_ref().unwrap();
    assert_eq!(decode(subject_header, b','), [subject]);
    match &identity.headers.roles {
        Some(v) => assert_eq!(decode(v, b','), roles),
        None => assert!(roles.is_empty()),
    }
    match &identity.headers.scopes {
        Some(v) => assert_eq!(decode(v, b' '), scopes),
        None => assert!(scopes.is_empty()),
    }
});
