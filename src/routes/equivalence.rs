//! How a preset's upstream routes paths (`[preset.paths]`): which spellings of one path its
//! framework serves from the same handler. Requests are matched, and route patterns compiled,
//! by the same key, so no spelling reaches a route other than the one the upstream runs.

use std::borrow::Cow;

use serde::Deserialize;

/// `[preset.paths]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRulesSpec {
    /// `ignored` (default; most frameworks route `/a/` as `/a`) or `significant`.
    #[serde(default)]
    pub trailing_slash: TrailingSlash,
    /// `sensitive` (default) or `insensitive` (ASP.NET, IIS, some Java routers).
    #[serde(default)]
    pub case: Case,
    /// A format suffix the upstream treats as optional on the last segment (Rails' `.json`).
    pub optional_suffix: Option<String>,
    /// `refuse` (default): `%25` followed by the escape of a character the path rules refuse
    /// (`%252e`, `%252f`, `%255c`, `%2500`, ...) is 400, since an upstream that decodes twice
    /// would see the traversal; `allow` for an upstream known to decode once.
    #[serde(default)]
    pub double_encoding: DoubleEncoding,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrailingSlash {
    #[default]
    Ignored,
    Significant,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Case {
    #[default]
    Sensitive,
    Insensitive,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DoubleEncoding {
    #[default]
    Refuse,
    Allow,
}

/// The compiled rules: what makes two spellings one path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PathRules {
    pub trailing_slash: TrailingSlash,
    pub case: Case,
    pub optional_suffix: Option<Box<str>>,
    pub double_encoding: DoubleEncoding,
}

impl PathRules {
    /// The rules of `spec`, or why they cannot be used.
    pub fn new(spec: &PathRulesSpec) -> Result<PathRules, String> {
        if let Some(suffix) = &spec.optional_suffix {
            let valid = suffix.len() >= 2
                && suffix.starts_with('.')
                && suffix[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(format!(
                    "optional_suffix `{suffix}` must be a dot and letters, digits, `_` or `-` (`.json`)"
                ));
            }
        }
        Ok(PathRules {
            trailing_slash: spec.trailing_slash,
            case: spec.case,
            optional_suffix: spec.optional_suffix.as_deref().map(Into::into),
            double_encoding: spec.double_encoding,
        })
    }

    /// The rules under which two paths are one for either of `self` and `other`: used to find
    /// patterns of two presets that could claim one request.
    pub fn union(&self, other: &PathRules) -> PathRules {
        let either_ignored = self.trailing_slash == TrailingSlash::Ignored
            || other.trailing_slash == TrailingSlash::Ignored;
        PathRules {
            trailing_slash: if either_ignored {
                TrailingSlash::Ignored
            } else {
                TrailingSlash::Significant
            },
            case: if self.case == Case::Insensitive || other.case == Case::Insensitive {
                Case::Insensitive
            } else {
                Case::Sensitive
            },
            optional_suffix: self
                .optional_suffix
                .clone()
                .or_else(|| other.optional_suffix.clone()),
            double_encoding: self.double_encoding,
        }
    }

    /// The key a canonical request path is matched by. It is a prefix of the path, lower-cased
    /// when case does not count, so a capture's offsets in the key are its offsets in the path.
    /// Borrowed unless it must be lower-cased.
    pub fn key<'p>(&self, path: &'p str) -> Cow<'p, str> {
        let mut key = path;
        if self.trailing_slash == TrailingSlash::Ignored && key.len() > 1 {
            key = key.strip_suffix('/').unwrap_or(key);
        }
        if let Some(suffix) = &self.optional_suffix {
            key = strip_last_suffix(key, suffix);
        }
        match self.case {
            Case::Insensitive if key.bytes().any(|b| b.is_ascii_uppercase()) => {
                Cow::Owned(key.to_ascii_lowercase())
            }
            _ => Cow::Borrowed(key),
        }
    }

    /// The key a route pattern is inserted under: the same transformation, applied to the
    /// pattern's literal text (parameter names keep their case).
    pub fn pattern_key(&self, pattern: &str) -> String {
        let mut key = pattern;
        if let Some(suffix) = &self.optional_suffix {
            key = strip_last_suffix(key, suffix);
        }
        match self.case {
            Case::Sensitive => key.to_owned(),
            Case::Insensitive => lower_outside_braces(key),
        }
    }

    /// What makes spellings equivalent, for error messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.trailing_slash == TrailingSlash::Ignored {
            parts.push("a trailing slash does not count".to_owned());
        }
        if self.case == Case::Insensitive {
            parts.push("letter case does not count".to_owned());
        }
        if let Some(s) = &self.optional_suffix {
            parts.push(format!("the suffix `{s}` is optional"));
        }
        parts.join(", ")
    }
}

/// `path` without `suffix` at the end of its last segment, when the segment is longer than it.
fn strip_last_suffix<'p>(path: &'p str, suffix: &str) -> &'p str {
    let last = path.rsplit('/').next().unwrap_or("");
    if last.len() > suffix.len() && last.ends_with(suffix) {
        &path[..path.len() - suffix.len()]
    } else {
        path
    }
}

fn lower_outside_braces(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut depth = 0usize;
    for c in pattern.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(if depth == 0 {
            c.to_ascii_lowercase()
        } else {
            c
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(slash: TrailingSlash, case: Case, suffix: Option<&str>) -> PathRules {
        PathRules {
            trailing_slash: slash,
            case,
            optional_suffix: suffix.map(Into::into),
            double_encoding: DoubleEncoding::Refuse,
        }
    }

    #[test]
    fn request_keys_fold_exactly_the_declared_spellings() {
        let r = rules(TrailingSlash::Ignored, Case::Insensitive, Some(".json"));
        for spelling in ["/a/B/c.json", "/a/b/c/", "/A/b/C.json/", "/a/b/c"] {
            assert_eq!(r.key(spelling), "/a/b/c", "{spelling}");
        }
        assert_eq!(r.key("/"), "/");
        assert_eq!(r.key("/a/.json"), "/a/.json", "a bare suffix is a name");
        assert_eq!(r.key("/a.json/b"), "/a.json/b", "only the last segment");
        let strict = rules(TrailingSlash::Significant, Case::Sensitive, None);
        assert_eq!(strict.key("/A/b/"), "/A/b/");
        assert!(matches!(strict.key("/a/b"), Cow::Borrowed(_)));
    }

    #[test]
    fn pattern_keys_keep_parameter_names() {
        let r = rules(TrailingSlash::Ignored, Case::Insensitive, Some(".json"));
        assert_eq!(r.pattern_key("/API/{Id}/Orders.json"), "/api/{Id}/orders");
        assert_eq!(r.pattern_key("/a/{id}.json"), "/a/{id}");
        assert_eq!(r.pattern_key("/a/{*Rest}"), "/a/{*Rest}");
    }

    #[test]
    fn a_suffix_must_look_like_one() {
        for bad in [".", "json", ".js on", "./x"] {
            let spec = PathRulesSpec {
                optional_suffix: Some(bad.into()),
                ..PathRulesSpec::default()
            };
            assert!(PathRules::new(&spec).is_err(), "{bad}");
        }
    }
}
