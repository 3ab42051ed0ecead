//! Parameter names as web frameworks read them, in a query string or an
//! `application/x-www-form-urlencoded` body: so that scopegate refuses an RFC 6750 `access_token`
//! (2.2 form body, 2.3 query) however it is spelled, rather than forward a credential it did not
//! judge.
//!
//! One reading, the union of the common ones: pairs split on `&` and on `;` (Rack, older
//! servlet containers); the name is what comes before the first `=`, with `+` read as a space
//! and `%XX` decoded once; ASCII case folded; leading spaces dropped and a NUL ending the name
//! (PHP); `.` and space read as `_` (PHP); and a `[` read both as the start of an array suffix
//! (`access_token[]`, `access_token[x]`: Rails, PHP) and, when no `]` follows it, as `_` (PHP's
//! `access[token`). Nothing is allocated.

/// The parameter name refused wherever it appears, in its canonical form.
const ACCESS_TOKEN: &[u8] = b"access_token";

/// True when any parameter of `pairs` (a query string or a form body) is named `access_token`
/// as some framework would read it.
pub fn carries_access_token(pairs: &[u8]) -> bool {
    let plain = !pairs
        .iter()
        .any(|b| matches!(b, b'%' | b'+' | b'.' | b'[' | b';' | b' ' | 0));
    if plain {
        // Nothing to decode or mangle (the common query): a name is its bytes, case aside.
        return pairs
            .split(|b| *b == b'&')
            .any(|pair| name_of(pair).eq_ignore_ascii_case(ACCESS_TOKEN));
    }
    pairs
        .split(|b| matches!(b, b'&' | b';'))
        .any(|pair| names_access_token(name_of(pair)))
}

/// The name of a `name=value` pair (all of it without a `=`).
fn name_of(pair: &[u8]) -> &[u8] {
    pair.split(|b| *b == b'=').next().unwrap_or_default()
}

/// True when the raw parameter name `name` (still encoded) reads as `access_token`.
pub fn names_access_token(name: &[u8]) -> bool {
    let mut matched = 0;
    let mut started = false;
    for b in Decoded::new(name) {
        if b == 0 {
            // A C string ends here.
            break;
        }
        if b == b' ' && !started {
            continue;
        }
        started = true;
        // `access_token[...]`: the name before an array suffix.
        if b == b'[' && matched == ACCESS_TOKEN.len() {
            return true;
        }
        let b = match b.to_ascii_lowercase() {
            b' ' | b'.' | b'[' => b'_',
            b => b,
        };
        if ACCESS_TOKEN.get(matched) != Some(&b) {
            return false;
        }
        matched += 1;
    }
    matched == ACCESS_TOKEN.len()
}

/// The bytes of a form-encoded name, decoded: `+` is a space, a valid `%XX` its byte, anything
/// else (a `%` not followed by two hex digits included) as it is.
struct Decoded<'a> {
    rest: &'a [u8],
}

impl<'a> Decoded<'a> {
    fn new(raw: &'a [u8]) -> Decoded<'a> {
        Decoded { rest: raw }
    }
}

impl Iterator for Decoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        match b {
            b'+' => Some(b' '),
            b'%' => match rest {
                [hi, lo, tail @ ..] => match (hex(*hi), hex(*lo)) {
                    (Some(hi), Some(lo)) => {
                        self.rest = tail;
                        Some(hi << 4 | lo)
                    }
                    _ => Some(b'%'),
                },
                _ => Some(b'%'),
            },
            b => Some(b),
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when a `Content-Type` value names `application/x-www-form-urlencoded` (any case, any
/// parameters, and in any element of a comma-separated list, which some parsers read).
pub fn is_form_urlencoded(content_type: &[u8]) -> bool {
    content_type.split(|b| *b == b',').any(|element| {
        let media = element.split(|b| *b == b';').next().unwrap_or_default();
        media
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_access_token_is_found() {
        for query in [
            "access_token=x",
            "ACCESS_TOKEN=x",
            "Access_Token=x",
            "a=1&access_token=x",
            "a=1;access_token=x",
            "access_token",
            "access_token=",
            "%61ccess_token=x",
            "access%5Ftoken=x",
            "access%5ftoken=x",
            "%41CCESS%5FTOKEN=x",
            "access_token%00junk=x",
            "access.token=x",
            "access+token=x",
            "access%20token=x",
            "access%2Etoken=x",
            "+access_token=x",
            "%20%20access_token=x",
            "access_token[]=x",
            "access_token[0]=x",
            "access_token[a][b]=x",
            "access_token%5B%5D=x",
            "access[token=x",
            "access%5Btoken=x",
            "b=2&c=3;d=4&access.token[]=x",
        ] {
            assert!(carries_access_token(query.as_bytes()), "{query}");
        }
    }

    #[test]
    fn other_names_pass() {
        for query in [
            "",
            "a=access_token",
            "token=x",
            "access=x",
            "access_tokens=x",
            "xaccess_token=x",
            "access_token_=x",
            "access[token]=x",
            "access_token%3D=x",
            "access_to%6ben2=x",
            "access%2Btoken=x",
            "access%zztoken=x",
            "limit=10&offset=20",
            "q=%41&x=.",
        ] {
            assert!(!carries_access_token(query.as_bytes()), "{query}");
        }
    }

    #[test]
    fn form_content_types() {
        for yes in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-URLEncoded; charset=utf-8",
            " application/x-www-form-urlencoded ;x=y",
            "text/plain, application/x-www-form-urlencoded",
        ] {
            assert!(is_form_urlencoded(yes.as_bytes()), "{yes}");
        }
        for no in [
            "application/json",
            "multipart/form-data; boundary=x",
            "text/plain; x=application/x-www-form-urlencoded",
        ] {
            assert!(!is_form_urlencoded(no.as_bytes()), "{no}");
        }
    }
}
