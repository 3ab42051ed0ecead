//! The serve config (`scopegate serve --config FILE`): TOML read once into validated types
//! (header names, URLs and CORS are parsed by serde, not again by their users), unknown keys
//! refused, every problem of a file reported at once ([`validate`]), relative paths resolved
//! against the config file's directory.

mod validate;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cors::Cors;
use crate::forwarding::IdentityHeaderNames;
use crate::routes::PresetSettings;
use crate::upstream::UpstreamUrl;
pub use values::{HeaderNameValue, UriValue};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: ListenConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    pub routes: RoutesConfig,
    /// Named upstreams; `default` serves routes that name none.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub jwt: JwtConfig,
    /// Opaque (non-JWT) bearer tokens and platform token headers.
    #[serde(default)]
    pub opaque: OpaqueConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub forwarding: ForwardingConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Browser cross-origin access (`[cors]`); absent means no CORS headers and preflights are
    /// judged like any other OPTIONS request.
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Operator settings per preset name: approved clients, enabled business functions.
    #[serde(default)]
    pub presets: BTreeMap<String, PresetSettings>,
    /// `realm` of `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub address: SocketAddr,
    /// PEM certificate chain; with `tls_key`, TLS is terminated here. Without both, plaintext
    /// (behind a TLS-terminating load balancer).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin")]
    pub address: SocketAddr,
    /// Admin connections served at once (its own cap, so admin clients cannot starve the proxy).
    #[serde(default = "default_admin_connections")]
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: default_admin(),
            max_connections: default_admin_connections(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// Route files, or directories of `*.toml` route files.
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port` with an optional base path.
    pub url: UpstreamUrl,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    #[serde(default = "default_pool_idle", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub issuer: Option<String>,
    /// Accepted audiences; the token's `aud` must hold one. Empty: not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    pub keys: Vec<KeyConfig>,
    /// Elastic Path companion tokens, each verified with its own keys (`[jwt.companions.customer]`,
    /// `[jwt.companions.account_management]`). Unconfigured kinds are ignored, so rules that
    /// need them deny.
    #[serde(default)]
    pub companions: CompanionsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanionsConfig {
    pub customer: Option<CompanionConfig>,
    pub account_management: Option<CompanionConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanionConfig {
    /// Header carrying the token (default `X-Moltin-Customer-Token` or
    /// `EP-Account-Management-Authentication-Token`).
    pub header: Option<HeaderNameValue>,
    pub keys: Vec<KeyConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Public key in PEM form (RSA, EC or Ed25519).
    pub pem: Option<PathBuf>,
    /// JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// HMAC secret (raw bytes, at least 32).
    pub hmac_secret_file: Option<PathBuf>,
    /// JWKS fetched over HTTP(S): loaded at start (protected routes answer 503 until it is),
    /// refreshed every `refresh_interval` and on an unknown `kid` (at most once per `cooldown`).
    pub jwks_url: Option<UriValue>,
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    #[serde(default = "default_jwks_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
    /// `kid` for a PEM or HMAC key (JWKS keys carry their own).
    pub kid: Option<String>,
    /// Algorithms this key may verify (pinned; `none` does not exist).
    pub algorithms: Vec<String>,
}

/// Opaque tokens: a bearer token that is not a JWT, or a token in one of `headers`, is
/// looked up in `static_tokens_file` (SHA-256 hashes only), then by RFC 7662 introspection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpaqueConfig {
    pub static_tokens_file: Option<PathBuf>,
    pub introspection: Option<IntrospectionConfig>,
    /// Headers that carry an opaque token instead of `Authorization`.
    #[serde(default = "default_opaque_headers")]
    pub headers: Vec<HeaderNameValue>,
}

impl Default for OpaqueConfig {
    fn default() -> Self {
        OpaqueConfig {
            static_tokens_file: None,
            introspection: None,
            headers: default_opaque_headers(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    pub url: UriValue,
    pub client_id: Option<String>,
    /// File holding the client secret (HTTP Basic with `client_id`).
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_introspection_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest an active answer is trusted (never past the token's `exp`).
    #[serde(default = "default_introspection_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long an inactive answer is remembered.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most verified tokens held; 0 turns the cache off.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// Longest a verified token is trusted without re-verification.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: default_cache_entries(),
            max_ttl: default_cache_ttl(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_max_body")]
    pub max_request_body_bytes: usize,
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    #[serde(default = "default_h2_header_list")]
    pub h2_max_header_list_bytes: u32,
    #[serde(default = "default_drain", with = "humantime_serde")]
    pub shutdown_drain: Duration,
    /// Request line plus headers of one HTTP/1.1 request; larger is refused with 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// A connection with no bytes either way and no request in flight this long is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest wait for the next piece of a request body (408 when it does not come).
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub request_body_timeout: Duration,
    /// Request and response bodies up to this size are read whole before they are passed on,
    /// so that a broken or cut-off body is refused (400, 502) rather than half-delivered.
    /// Larger bodies stream.
    #[serde(default = "default_buffer_bytes")]
    pub buffer_body_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_body_bytes: default_max_body(),
            max_headers: default_max_headers(),
            header_read_timeout: default_header_read_timeout(),
            max_connections: default_max_connections(),
            h2_max_concurrent_streams: default_h2_streams(),
            h2_max_header_list_bytes: default_h2_header_list(),
            shutdown_drain: default_drain(),
            max_header_bytes: default_max_header_bytes(),
            idle_timeout: default_idle_timeout(),
            request_body_timeout: default_body_timeout(),
            buffer_body_bytes: default_buffer_bytes(),
        }
    }
}

/// Identity header names (`[forwarding.identity_headers]`); any header beginning with
/// `x-scopegate-` and each configured name is stripped from client requests.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardingConfig {
    #[serde(default)]
    pub identity_headers: IdentityHeadersConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersConfig {
    pub subject: Option<HeaderNameValue>,
    pub client: Option<HeaderNameValue>,
    pub scopes: Option<HeaderNameValue>,
    pub token_kind: Option<HeaderNameValue>,
    pub role: Option<HeaderNameValue>,
    pub route: Option<HeaderNameValue>,
}

impl IdentityHeadersConfig {
    /// The configured names, the default for each one not set.
    pub fn names(&self) -> IdentityHeaderNames {
        let mut names = IdentityHeaderNames::default();
        for (configured, slot) in [
            (&self.subject, &mut names.subject),
            (&self.client, &mut names.client),
            (&self.scopes, &mut names.scopes),
            (&self.token_kind, &mut names.token_kind),
            (&self.role, &mut names.role),
            (&self.route, &mut names.route),
        ] {
            if let Some(name) = configured {
                *slot = name.0.clone();
            }
        }
        names
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `scopegate=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// One line per decision on target `scopegate::access`.
    #[serde(default = "default_true")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
            access: true,
        }
    }
}

/// Reload on file change (besides SIGHUP): route files and the TLS certificate and key are
/// polled, by content, so a Kubernetes ConfigMap/Secret `..data` symlink swap is seen too.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    #[serde(default = "default_true")]
    pub watch: bool,
    #[serde(default = "default_watch_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            interval: default_watch_interval(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A config file that could not be used; each line of the message names the key or line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, line) in self.message.lines().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {line}", self.file)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads, parses and resolves relative paths against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError {
            file: file.clone(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses config text. A TOML or type error is reported with its line; once it parses,
    /// every remaining problem is reported, one per line.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            match line {
                Some(l) => format!("line {l}: {}", e.message().trim()),
                None => e.message().trim().to_owned(),
            }
        })?;
        let problems = validate::problems(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.join("\n"))
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.listen.tls_cert.iter_mut().for_each(fix);
        self.opaque.static_tokens_file.iter_mut().for_each(fix);
        if let Some(i) = &mut self.opaque.introspection {
            i.client_secret_file.iter_mut().for_each(fix);
        }
        self.listen.tls_key.iter_mut().for_each(fix);
        self.routes.paths.iter_mut().for_each(fix);
        let companions = &mut self.jwt.companions;
        let sets = [
            Some(&mut self.jwt.keys),
            companions.customer.as_mut().map(|c| &mut c.keys),
            companions.account_management.as_mut().map(|c| &mut c.keys),
        ];
        for k in sets.into_iter().flatten().flat_map(|keys| keys.iter_mut()) {
            k.pem.iter_mut().for_each(fix);
            k.jwks_file.iter_mut().for_each(fix);
            k.hmac_secret_file.iter_mut().for_each(fix);
        }
    }

    /// Every configured key set with the config key it comes from.
    pub fn key_sets(&self) -> Vec<(&'static str, &[KeyConfig])> {
        let mut sets = vec![("jwt.keys", self.jwt.keys.as_slice())];
        if let Some(c) = &self.jwt.companions.customer {
            sets.push(("jwt.companions.customer.keys", c.keys.as_slice()));
        }
        if let Some(c) = &self.jwt.companions.account_management {
            sets.push(("jwt.companions.account_management.keys", c.keys.as_slice()));
        }
        sets
    }
}

fn default_watch_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(300)
}
fn default_jwks_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_opaque_headers() -> Vec<HeaderNameValue> {
    vec![
        HeaderNameValue(http::HeaderName::from_static("x-shopify-access-token")),
        HeaderNameValue(http::HeaderName::from_static(
            "x-shopify-storefront-access-token",
        )),
    ]
}
fn default_introspection_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_introspection_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_realm() -> String {
    "scopegate".into()
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_admin_connections() -> usize {
    32
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(90)
}
fn default_pool_max_idle() -> usize {
    256
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_cache_entries() -> usize {
    100_000
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_body() -> usize {
    10 * 1024 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_h2_streams() -> u32 {
    128
}
fn default_h2_header_list() -> u32 {
    64 * 1024
}
fn default_drain() -> Duration {
    Duration::from_secs(20)
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_buffer_bytes() -> usize {
    64 * 1024
}
fn default_log_format() -> LogFormat {
    LogFormat::Text
}
fn default_log_level() -> String {
    "info".into()
}
fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listen]
address = "127.0.0.1:8443"
[routes]
paths = ["routes"]
[upstreams.default]
url = "http://127.0.0.1:8080"
[jwt]
[[jwt.keys]]
jwks_file = "jwks.json"
algorithms = ["RS256"]
"#;

    /// `text` with `from` replaced; panics when `from` is not there, so an edit cannot
    /// silently do nothing.
    fn edit(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "`{from}` is not in the config");
        text.replacen(from, to, 1)
    }

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.cache.max_entries, 100_000);
        assert_eq!(c.admin.address.port(), 9090);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let text = edit(MINIMAL, "[routes]", "[routes]\npathz = []");
        let err = Config::parse(&text).unwrap_err();
        assert!(err.starts_with("line 5:"), "{err}");
        assert!(err.contains("pathz"), "{err}");
    }

    #[test]
    fn companion_key_sets_are_validated_with_their_own_names() {
        let text = format!(
            "{MINIMAL}[jwt.companions.customer]\n[[jwt.companions.customer.keys]]\njwks_file = \"a.json\"\npem = \"b.pem\"\nalgorithms = [\"RS256\"]\n"
        );
        let err = Config::parse(&text).unwrap_err();
        assert!(
            err.starts_with("jwt.companions.customer.keys[0]: give exactly one of"),
            "{err}"
        );
        let text = format!("{MINIMAL}[jwt.companions.account_management]\nkeys = []\n");
        let err = Config::parse(&text).unwrap_err();
        assert!(
            err.contains("jwt.companions.account_management.keys: at least one"),
            "{err}"
        );
    }

    #[test]
    fn half_a_tls_pair_is_refused() {
        let text = edit(MINIMAL, "[listen]", "[listen]\ntls_cert = \"c.pem\"");
        assert!(Config::parse(&text).unwrap_err().contains("tls_key"));
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_once() {
        let text = edit(MINIMAL, "[listen]", "[listen]\ntls_cert = \"c.pem\"");
        let text = edit(
            &text,
            "[routes]\npaths = [\"routes\"]",
            "[routes]\npaths = []",
        );
        let text = format!("{text}[limits]\nmax_connections = 0\nmax_header_bytes = 100\n");
        let err = Config::parse(&text).unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines,
            [
                "listen: give both `tls_cert` and `tls_key`, or neither for plaintext",
                "routes.paths: list at least one route file or directory",
                "limits.max_connections: must be greater than zero",
                "limits.max_header_bytes: must be at least 8192",
            ],
            "{err}"
        );
        let shown = ConfigError {
            file: "scopegate.toml".into(),
            message: err,
        }
        .to_string();
        assert!(
            shown.lines().all(|l| l.starts_with("scopegate.toml: ")),
            "{shown}"
        );
    }

    #[test]
    fn header_names_urls_and_cors_are_checked_when_read() {
        for (from, to, want) in [
            (
                "url = \"http://127.0.0.1:8080\"",
                "url = \"https://127.0.0.1:8080\"",
                "must be http://host:port[/base]",
            ),
            (
                "[jwt]",
                "[forwarding.identity_headers]\nsubject = \"bad name\"\n[jwt]",
                "`bad name` is not a header name",
            ),
            (
                "[jwt]",
                "[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n[jwt]",
                "cors: allowed_origins: `*` cannot be combined with allow_credentials",
            ),
            (
                "jwks_file = \"jwks.json\"",
                "jwks_url = \"ftp://idp.example/jwks\"",
                "must be an http:// or https:// URL",
            ),
        ] {
            let err = Config::parse(&edit(MINIMAL, from, to)).unwrap_err();
            assert!(err.starts_with("line "), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }
}
