//! Path patterns: each one well formed and canonical, and no two files claiming the same path.

use super::context::CompileError;
use super::file::RouteSpec;
use super::{Preset, Route};

/// Why `path` cannot be a route pattern (with `below`), if it cannot.
pub(super) fn check_pattern(path: &str, below: bool) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".into());
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err("must not end with '/'".into());
    }
    if path.contains("//") {
        return Err("must not contain '//'".into());
    }
    if below && path.contains("{*") {
        return Err("`below = true` cannot follow a catch-all parameter".into());
    }
    for segment in path.split('/') {
        check_braces(segment)?;
    }
    // A pattern must itself be a canonical path, or it could never match a normalised request.
    let probe = path.replace(['{', '}', '*'], "x");
    match crate::path::normalise(&probe) {
        Ok(p) if p == probe => Ok(()),
        Ok(p) => Err(format!("is not in canonical form; write `{p}`")),
        Err(e) => Err(e.to_string()),
    }
}

/// A segment holds at most one parameter, `{name}` or `{*name}`, and no other brace: the matcher
/// would read `{{` / `}}` as one literal brace, so the route would match a path other than the
/// one written.
fn check_braces(segment: &str) -> Result<(), String> {
    let opens = segment.matches('{').count();
    let closes = segment.matches('}').count();
    if opens == 0 && closes == 0 {
        return Ok(());
    }
    let literal = || {
        format!(
            "segment `{segment}`: a path may hold a brace only as a parameter `{{name}}` or \
             `{{*name}}`, one per segment; percent-encode a literal brace as %7B / %7D"
        )
    };
    let (Some(open), Some(close)) = (segment.find('{'), segment.find('}')) else {
        return Err(literal());
    };
    if opens != 1 || closes != 1 || close < open {
        return Err(literal());
    }
    let name = segment[open + 1..close]
        .strip_prefix('*')
        .unwrap_or(&segment[open + 1..close]);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "segment `{segment}`: parameter name `{name}` must be letters, digits or `_`"
        ));
    }
    Ok(())
}

/// Two files must never both claim a request path (in any spelling either upstream treats as
/// one): matchit would settle it by specificity, so which file judges a request would depend on
/// the other file's patterns.
pub(super) fn cross_preset_overlaps(
    routes: &[Route],
    presets: &[Preset],
    errors: &mut Vec<CompileError>,
) {
    let rules = |r: &Route| presets.get(usize::from(r.preset)).map(|p| &p.paths);
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if a.preset == b.preset {
                continue;
            }
            // Under the rules of either preset: a spelling one upstream treats as its own path
            // must not be a path of the other file.
            let either = match (rules(a), rules(b)) {
                (Some(x), Some(y)) => x.union(y),
                _ => Default::default(),
            };
            let (ka, kb) = (
                either.pattern_key(&a.template),
                either.pattern_key(&b.template),
            );
            if patterns_overlap(&ka, &kb) {
                let (file, line) = b.source.rsplit_once(':').unwrap_or((&b.source, ""));
                errors.push(CompileError {
                    file: file.to_owned(),
                    line: line.parse().ok(),
                    message: format!(
                        "route `{}` can match the same requests as `{}` of preset `{}` ({})",
                        b.template,
                        a.template,
                        presets.get(usize::from(a.preset)).map_or("?", |p| &*p.name),
                        a.source
                    ),
                    hint: Some("give each preset its own path prefix".into()),
                });
            }
        }
    }
}

/// One segment of a matchit pattern.
enum Segment<'a> {
    Static(&'a str),
    /// `prefix{name}suffix`
    Param(&'a str, &'a str),
    CatchAll,
}

fn segments(pattern: &str) -> Vec<Segment<'_>> {
    pattern
        .split('/')
        .skip(1)
        .map(|seg| match (seg.find('{'), seg.rfind('}')) {
            (Some(open), Some(_)) if seg[open..].starts_with("{*") => Segment::CatchAll,
            (Some(open), Some(close)) => Segment::Param(&seg[..open], &seg[close + 1..]),
            _ => Segment::Static(seg),
        })
        .collect()
}

/// True when some request path matches both patterns.
fn patterns_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (segments(a), segments(b));
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (None, None) => return true,
            // A catch-all needs at least one more segment, which the other can supply.
            (Some(Segment::CatchAll), Some(_)) | (Some(_), Some(Segment::CatchAll)) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) => {
                let fits = match (x, y) {
                    (Segment::Static(s), Segment::Static(t)) => s == t,
                    (Segment::Static(s), Segment::Param(p, x))
                    | (Segment::Param(p, x), Segment::Static(s)) => {
                        s.len() > p.len() + x.len() && s.starts_with(p) && s.ends_with(x)
                    }
                    (Segment::Param(p1, x1), Segment::Param(p2, x2)) => {
                        (p1.starts_with(p2) || p2.starts_with(p1))
                            && (x1.ends_with(x2) || x2.ends_with(x1))
                    }
                    (Segment::CatchAll, _) | (_, Segment::CatchAll) => true,
                };
                if !fits {
                    return false;
                }
            }
        }
    }
    unreachable!("the loop returns once both patterns end")
}

/// The matchit patterns one `[[route]]` inserts.
pub(super) fn patterns(spec: &RouteSpec) -> Vec<String> {
    let path = spec.path.get_ref();
    if spec.below {
        let base = path.trim_end_matches('/');
        vec![path.clone(), format!("{base}/{{*rest}}")]
    } else {
        vec![path.clone()]
    }
}

/// Why matchit refused a pattern, naming where the route it clashes with is defined.
pub(super) fn conflict(e: &matchit::InsertError, routes: &[Route]) -> String {
    match e {
        matchit::InsertError::Conflict { with } => {
            let at = routes
                .iter()
                .find(|r| &*r.template == with)
                .map(|r| format!(" (defined at {})", r.source))
                .unwrap_or_default();
            format!("it overlaps `{with}`{at}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_pattern, patterns_overlap};
    use crate::routes::{CompileOptions, RouteSource, compile};

    #[test]
    fn a_brace_outside_a_parameter_is_refused() {
        for ok in [
            "/v2/orders/{id}",
            "/v2/{id}.json",
            "/files/{*rest}",
            "/a/v{version}",
        ] {
            assert_eq!(check_pattern(ok, false), Ok(()), "{ok}");
        }
        for bad in [
            "/v0/orders/}}}}",
            "/v0/orders/{{id}}",
            "/v0/{a}{b}",
            "/v0/}x{",
            "/v0/{}",
            "/v0/{a-b}",
            "/v0/x}",
        ] {
            let why = check_pattern(bad, false).expect_err(bad);
            assert!(why.contains("segment `"), "{bad}: {why}");
        }
    }

    #[test]
    fn literal_braces_fail_the_compile_at_their_line() {
        // Found by the route_compile fuzz target: matchit reads `}}` as one `}`, so this route
        // compiled and then matched a path other than the one written.
        let source = RouteSource {
            name: "braces.toml".into(),
            text: "[preset]\nname = \"broken\"\n\n[[route]]\npath = \"/v0/orders/}}}}\"\n\
                   write = { scopes = [\"write_orders\"] }\n"
                .into(),
        };
        let errors = compile(&[source], &CompileOptions::default()).expect_err("must not compile");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, Some(5), "{}", errors[0]);
        assert!(errors[0].to_string().contains("%7D"), "{}", errors[0]);
    }

    #[test]
    fn overlapping_patterns_are_found() {
        assert!(patterns_overlap(
            "/api/{version}/graphql.json",
            "/api/v1/graphql.json"
        ));
        assert!(patterns_overlap(
            "/api/v1/{*rest}",
            "/api/{version}/graphql.json"
        ));
        assert!(patterns_overlap("/a/{id}.json", "/a/{x}"));
        assert!(patterns_overlap("/a", "/a"));
        assert!(!patterns_overlap(
            "/api/{version}/graphql.json",
            "/api/v1/orders"
        ));
        assert!(!patterns_overlap(
            "/api/{version}/graphql.json",
            "/api/v1/orders/{*rest}"
        ));
        assert!(!patterns_overlap("/a/{id}.json", "/a/x.xml"));
        assert!(!patterns_overlap("/a/{*rest}", "/a"));
        assert!(!patterns_overlap("/v2/orders", "/v2/orders/{id}"));
    }
}
