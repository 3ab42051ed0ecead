//! Config values that serde parses into checked types at load: a header name, a URL.

use http::{HeaderName, Uri};
use serde::Deserialize;

/// A header name, written in any case.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HeaderNameValue(pub HeaderName);

impl TryFrom<String> for HeaderNameValue {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map(HeaderNameValue)
            .map_err(|_| format!("`{name}` is not a header name"))
    }
}

/// An absolute `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct UriValue(pub Uri);

impl UriValue {
    /// Plain http allowed only here: the host is this machine.
    pub fn is_loopback(&self) -> bool {
        matches!(self.0.host(), Some("localhost" | "127.0.0.1" | "[::1]"))
    }

    pub fn is_https(&self) -> bool {
        self.0.scheme_str() == Some("https")
    }
}

impl TryFrom<String> for UriValue {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let uri: Uri = text.parse().map_err(|e| format!("`{text}`: {e}"))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(UriValue(uri)),
            _ => Err(format!("`{text}` must be an http:// or https:// URL")),
        }
    }
}
