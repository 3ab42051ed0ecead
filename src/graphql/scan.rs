//! One pass over a document's bytes before it is parsed: counts lexical tokens and the deepest
//! nesting of `{`, `(` and `[`, so the token and recursion limits hold before the parser runs.
//! Lexing follows the GraphQL spec's ignored tokens (whitespace, commas, `#` comments, BOM),
//! strings (with escapes) and block strings (with `\"""`); the parser stays the authority on
//! syntax, this pass only bounds the work.

use super::{GraphqlError, Limits, over};

/// What [`scan`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub tokens: usize,
    pub nesting: usize,
}

/// Checks `max_body_bytes`, `max_tokens` and `max_recursion`, stopping at the first one exceeded.
pub fn scan(doc: &str, limits: &Limits) -> Result<Scanned, GraphqlError> {
    over("max_body_bytes", doc.len(), limits.max_body_bytes)?;
    let b = doc.as_bytes();
    let (mut i, mut tokens, mut depth, mut nesting) = (0, 0usize, 0usize, 0usize);
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            0xEF if b[i..].starts_with(&[0xEF, 0xBB, 0xBF]) => {
                i += 3;
                continue;
            }
            b'#' => {
                i = skip_line(b, i);
                continue;
            }
            b'"' => i = skip_string(b, i),
            b'{' | b'(' | b'[' => {
                depth += 1;
                nesting = nesting.max(depth);
                over("max_recursion", nesting, limits.max_recursion)?;
                i += 1;
            }
            b'}' | b')' | b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'.' if b[i..].starts_with(b"...") => i += 3,
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' => i = skip_word(b, i),
            _ => i += 1,
        }
        tokens += 1;
        over("max_tokens", tokens, limits.max_tokens)?;
    }
    Ok(Scanned { tokens, nesting })
}

fn skip_line(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
        i += 1;
    }
    i
}

/// A name or a number (`-1.5e+3`): one token.
fn skip_word(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        let c = b[i];
        let exponent_sign = (c == b'+' || c == b'-') && matches!(b[i - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || exponent_sign {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// From an opening `"` to just past the closing quote (or the end: the parser reports it).
fn skip_string(b: &[u8], i: usize) -> usize {
    if b[i..].starts_with(b"\"\"\"") {
        let mut j = i + 3;
        while j < b.len() {
            if b[j..].starts_with(b"\\\"\"\"") {
                j += 4;
            } else if b[j..].starts_with(b"\"\"\"") {
                return j + 3;
            } else {
                j += 1;
            }
        }
        return j;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return j + 1,
            b'\n' | b'\r' => return j,
            _ => j += 1,
        }
    }
    j.min(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_tokens_and_nesting() {
        let s = scan(
            "# c\nquery Q($a: [ID!]) { a(x: \"}{\") { b ... on T { c } } }",
            &Limits::default(),
        )
        .unwrap();
        // query Q ( $ a : [ ID ! ] ) { a ( x : "" ) { b ... on T { c } } }
        assert_eq!(s.tokens, 28);
        assert_eq!(s.nesting, 3);
        let block = scan("{ a(x: \"\"\"a \\\"\"\" {{{ \"\"\") }", &Limits::default()).unwrap();
        assert_eq!(block.nesting, 2);
    }
}
