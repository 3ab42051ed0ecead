//! Request-target normalisation: one canonical path, used both to decide and to forward.
//!
//! Per class (README "Path handling"):
//! - percent-encoded unreserved characters (`%41`, `%7E`) are decoded; other escapes are kept,
//!   upper-cased (`%2a` -> `%2A`);
//! - repeated slashes are collapsed (`//v2///orders` -> `/v2/orders`);
//! - refused with 400: encoded `/` or `\`, a raw `\`, dot segments (`.`/`..`, also as `%2E`),
//!   `;` path parameters, NUL and other control bytes (raw or encoded), a raw space, malformed
//!   escapes, escapes that do not decode to valid UTF-8 (overlong forms included), anything that
//!   does not start with `/`, and a `#` fragment.

use std::borrow::Cow;

/// Why a request target was refused. Each is a 400 and is never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request target must be an absolute path")]
    NotAbsolute,
    #[error("encoded '/' or '\\' in path")]
    EncodedSeparator,
    #[error("backslash in path")]
    Backslash,
    #[error("dot segment in path")]
    DotSegment,
    #[error("';' path parameter")]
    PathParameter,
    #[error("control character in path")]
    ControlCharacter,
    #[error("malformed percent-encoding in path")]
    BadPercentEncoding,
    #[error("percent-encoding does not decode to valid UTF-8")]
    InvalidUtf8,
    #[error("fragment in request target")]
    Fragment,
    #[error("unencoded space in path")]
    Space,
    #[error("double-encoded escape of a refused character in path")]
    DoubleEncoded,
}

impl PathError {
    /// Stable machine-readable reason for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::EncodedSeparator => "path_encoded_separator",
            PathError::Backslash => "path_backslash",
            PathError::DotSegment => "path_dot_segment",
            PathError::PathParameter => "path_parameter",
            PathError::ControlCharacter => "path_control_character",
            PathError::BadPercentEncoding => "path_bad_percent_encoding",
            PathError::InvalidUtf8 => "path_invalid_utf8",
            PathError::Fragment => "path_fragment",
            PathError::Space => "path_space",
            PathError::DoubleEncoded => "path_double_encoded",
        }
    }
}

/// Whether a canonical path holds `%25` followed by the escape of a character the path rules
/// refuse (`%252e` is `%2e` to an upstream that decodes once more: a dot segment to one that
/// decodes twice): `.`, `/`, `\`, `;`, `#`, `%` and control bytes. `%2520` (a space) is fine.
pub fn double_encoded(canonical: &str) -> bool {
    let bytes = canonical.as_bytes();
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(3).position(|w| w == b"%25") {
        let rest = &bytes[i + at + 3..];
        if let [hi, lo, ..] = rest
            && let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo))
            && refused_when_decoded(hi << 4 | lo)
        {
            return true;
        }
        i += at + 3;
    }
    false
}

fn refused_when_decoded(b: u8) -> bool {
    matches!(b, b'.' | b'/' | b'\\' | b';' | b'#' | b'%') || b < 0x20 || b == 0x7f
}

/// Returns the canonical form of `path`, borrowing it when it is already canonical.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    rebuild(bytes).map(Cow::Owned)
}

/// Byte classes of the fast path.
const PLAIN: u8 = 0;
const SLASH: u8 = 1;
const DOT: u8 = 2;
/// An escape, `\`, `;`, `#`, a control byte, a space or a non-ASCII byte: `rebuild` decides.
const OTHER: u8 = 3;

static CLASS: [u8; 256] = {
    let mut class = [OTHER; 256];
    let mut b = 0x21;
    while b < 0x7f {
        class[b] = match b as u8 {
            b'%' | b'\\' | b';' | b'#' => OTHER,
            b'/' => SLASH,
            b'.' => DOT,
            _ => PLAIN,
        };
        b += 1;
    }
    class
};

/// Fast path: plain segments with no escapes, no empty segments and no dot segments, checked
/// in one pass, one table load per byte. `bytes` starts with `/`.
fn is_canonical(bytes: &[u8]) -> bool {
    // Length of the current segment, and how many of its bytes are dots.
    let (mut len, mut dots) = (0usize, 0usize);
    let dot_segment = |len: usize, dots: usize| len <= 2 && dots == len;
    for &b in &bytes[1..] {
        match CLASS[usize::from(b)] {
            PLAIN => len += 1,
            DOT => {
                len += 1;
                dots += 1;
            }
            // An empty segment (`//`) is a dot segment of length 0 here.
            SLASH if !dot_segment(len, dots) => (len, dots) = (0, 0),
            _ => return false,
        }
    }
    // A trailing slash (an empty last segment) is canonical.
    len == 0 || !dot_segment(len, dots)
}

fn rebuild(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    for raw in bytes.split(|b| *b == b'/').skip(1) {
        if raw.is_empty() {
            continue; // repeated or trailing slash; trailing is restored below
        }
        out.push('/');
        out.push_str(&decode_segment(raw)?);
    }
    if out.is_empty() || bytes.ends_with(b"/") {
        out.push('/');
    }
    Ok(out)
}

/// One non-empty segment in canonical form: unreserved escapes decoded, other escapes kept
/// upper-cased; refused when it holds what [`refuse`] refuses or is a dot segment.
fn decode_segment(raw: &[u8]) -> Result<String, PathError> {
    let mut segment = String::with_capacity(raw.len());
    // Decoded bytes of non-ASCII escapes, checked as UTF-8 per run.
    let mut run: Vec<u8> = Vec::new();
    let mut decoded_len = 0usize;
    let mut only_dots = true;
    let mut i = 0;
    while i < raw.len() {
        let (value, escaped) = next_byte(raw, &mut i)?;
        refuse(value, escaped)?;
        decoded_len += 1;
        if value >= 0x80 {
            if !escaped {
                return Err(PathError::InvalidUtf8);
            }
            run.push(value);
            push_escape(&mut segment, value);
            only_dots = false;
            continue;
        }
        if !run.is_empty() {
            check_utf8(&mut run)?;
        }
        only_dots &= value == b'.';
        if is_unreserved(value) || !escaped {
            segment.push(value as char);
        } else {
            push_escape(&mut segment, value);
        }
    }
    if !run.is_empty() {
        check_utf8(&mut run)?;
    }
    if only_dots && decoded_len <= 2 {
        return Err(PathError::DotSegment);
    }
    Ok(segment)
}

/// The byte at `raw[*i]`, percent-decoded (then `true`), and `*i` moved past it.
fn next_byte(raw: &[u8], i: &mut usize) -> Result<(u8, bool), PathError> {
    if raw[*i] != b'%' {
        *i += 1;
        return Ok((raw[*i - 1], false));
    }
    let hi = raw.get(*i + 1).and_then(|c| hex(*c));
    let lo = raw.get(*i + 2).and_then(|c| hex(*c));
    match (hi, lo) {
        (Some(hi), Some(lo)) => {
            *i += 3;
            Ok((hi << 4 | lo, true))
        }
        _ => Err(PathError::BadPercentEncoding),
    }
}

/// ASCII bytes a path must not hold, raw or (`escaped`) percent-encoded.
fn refuse(value: u8, escaped: bool) -> Result<(), PathError> {
    match value {
        b'/' if escaped => Err(PathError::EncodedSeparator),
        b'\\' if escaped => Err(PathError::EncodedSeparator),
        b'\\' => Err(PathError::Backslash),
        b';' if !escaped => Err(PathError::PathParameter),
        b'#' if !escaped => Err(PathError::Fragment),
        b' ' if !escaped => Err(PathError::Space),
        v if v < 0x20 || v == 0x7f => Err(PathError::ControlCharacter),
        _ => Ok(()),
    }
}

fn check_utf8(run: &mut Vec<u8>) -> Result<(), PathError> {
    let ok = std::str::from_utf8(run).is_ok();
    run.clear();
    if ok {
        Ok(())
    } else {
        Err(PathError::InvalidUtf8)
    }
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        normalise(p).unwrap().into_owned()
    }

    /// The table-driven fast path agrees with the full rebuild on every path of up to seven
    /// bytes after the leading `/` over an alphabet of the bytes it classifies: what it takes
    /// as canonical, the rebuild returns unchanged, and every escape-free path the rebuild
    /// returns unchanged, it takes.
    #[test]
    fn fast_path_agrees_with_rebuild() {
        const ALPHABET: &[u8] = b"/.a%;\\ ~";
        let mut path = vec![b'/'];
        let mut checked = 0usize;
        fn walk(path: &mut Vec<u8>, depth: usize, checked: &mut usize) {
            let fast = is_canonical(path);
            let full = rebuild(path);
            let unchanged = full
                .as_deref()
                .is_ok_and(|s| s.as_bytes() == path.as_slice());
            if fast {
                assert!(
                    unchanged,
                    "{:?}: fast path took it, rebuild gives {full:?}",
                    path.escape_ascii().to_string()
                );
            } else if !path.contains(&b'%') {
                assert!(
                    !unchanged,
                    "{:?}: canonical but the fast path refused it",
                    path.escape_ascii().to_string()
                );
            }
            *checked += 1;
            if depth == 0 {
                return;
            }
            for &b in ALPHABET {
                path.push(b);
                walk(path, depth - 1, checked);
                path.pop();
            }
        }
        walk(&mut path, 7, &mut checked);
        assert_eq!(
            checked,
            (0..=7).map(|d| ALPHABET.len().pow(d)).sum::<usize>()
        );
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        assert!(matches!(normalise("/v2/orders/123"), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalise("/"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        assert_eq!(ok("/v2/%6Frders"), "/v2/orders");
        assert_eq!(ok("/a/%7e%2d"), "/a/~-");
        assert_eq!(ok("/a/b%2ac"), "/a/b%2Ac");
        assert_eq!(ok("/a/%20"), "/a/%20");
    }

    #[test]
    fn repeated_slashes_collapse_and_trailing_slash_is_kept() {
        assert_eq!(ok("//v2///orders"), "/v2/orders");
        assert_eq!(ok("/v2/orders//"), "/v2/orders/");
        assert_eq!(ok("//"), "/");
    }

    #[test]
    fn ambiguous_targets_are_refused() {
        let cases = [
            ("/v2/a%2fb", PathError::EncodedSeparator),
            ("/v2/a%2Fb", PathError::EncodedSeparator),
            ("/v2/a%5cb", PathError::EncodedSeparator),
            ("/v2/a\\b", PathError::Backslash),
            ("/v2/../admin", PathError::DotSegment),
            ("/v2/./orders", PathError::DotSegment),
            ("/v2/%2e%2e/admin", PathError::DotSegment),
            ("/v2/.%2E", PathError::DotSegment),
            ("/v2/..", PathError::DotSegment),
            ("/v2/orders;jsessionid=1", PathError::PathParameter),
            ("/v2/a%00", PathError::ControlCharacter),
            ("/v2/a%0a", PathError::ControlCharacter),
            ("/v2/a%zz", PathError::BadPercentEncoding),
            ("/v2/a%4", PathError::BadPercentEncoding),
            ("/v2/%c0%ae%c0%ae/x", PathError::InvalidUtf8),
            ("/v2/%ff", PathError::InvalidUtf8),
            ("/v2/a b", PathError::Space),
            ("v2/orders", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
        ];
        for (input, want) in cases {
            assert_eq!(normalise(input), Err(want), "{input}");
        }
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert_eq!(
            ok("/admin/api/2024-01/orders.json"),
            "/admin/api/2024-01/orders.json"
        );
        assert_eq!(ok("/a/...b"), "/a/...b");
        assert_eq!(ok("/a/..."), "/a/...");
    }

    #[test]
    fn valid_utf8_escapes_are_kept_encoded() {
        assert_eq!(ok("/p/%c3%a9t%C3%A9"), "/p/%C3%A9t%C3%A9");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for p in ["/v2//%6frders/", "/a/%7e/b%2a", "/p/%c3%a9"] {
            let once = ok(p);
            assert_eq!(ok(&once), once);
        }
    }

    #[test]
    fn double_encoded_escapes_of_refused_characters_are_found() {
        for bad in [
            "/a/%252e%252e/b",
            "/a/%252E",
            "/a/b%252fc",
            "/a/%255c",
            "/a/%2500",
            "/a/%253b",
            "/a/%2523",
            "/a/%2525",
            "/a/%251F",
        ] {
            let canonical = ok(bad);
            assert!(double_encoded(&canonical), "{bad}");
        }
        for fine in [
            "/a/%2520", "/a/%2541", "/a/%25", "/a/%25z", "/a/b", "/a/%2a",
        ] {
            let canonical = normalise(fine).map(Cow::into_owned).unwrap_or_default();
            assert!(!double_encoded(&canonical), "{fine}");
        }
    }
}
