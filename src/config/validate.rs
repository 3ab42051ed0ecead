//! What serde cannot check in a parsed config: every problem, each naming its key, all at once.

use std::time::Duration;

use super::{Config, KeyConfig};
use crate::forwarding::{UnderscoreHeaders, names};

/// Every problem of `config`, in file order; empty when it can be used.
pub(super) fn problems(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.listen.tls_cert.is_some() != config.listen.tls_key.is_some() {
        out.push("listen: give both `tls_cert` and `tls_key`, or neither for plaintext".into());
    }
    if config.admin.max_connections == 0 {
        out.push("admin.max_connections: must be greater than zero".into());
    }
    if config.routes.paths.is_empty() {
        out.push("routes.paths: list at least one route file or directory".into());
    }
    if config.upstreams.is_empty() {
        out.push("upstreams: at least one upstream is needed (name it `default`)".into());
    }
    for (prefix, keys) in config.key_sets() {
        key_set(prefix, keys, &mut out);
    }
    limits(config, &mut out);
    credential_headers(config, &mut out);
    if config.realm.contains('"') || config.realm.contains('\\') {
        out.push("realm: must not contain quotes or backslashes".into());
    }
    out
}

fn key_set(prefix: &str, keys: &[KeyConfig], out: &mut Vec<String>) {
    if keys.is_empty() {
        out.push(format!("{prefix}: at least one verification key is needed"));
    }
    for (i, k) in keys.iter().enumerate() {
        let sources = [
            k.pem.is_some(),
            k.jwks_file.is_some(),
            k.jwks_url.is_some(),
            k.hmac_secret_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            out.push(format!(
                "{prefix}[{i}]: give exactly one of `pem`, `jwks_file`, `jwks_url`, `hmac_secret_file`"
            ));
        }
        if (k.jwks_file.is_some() || k.jwks_url.is_some()) && k.kid.is_some() {
            out.push(format!("{prefix}[{i}]: `kid` comes from the JWKS itself"));
        }
        if let Some(url) = &k.jwks_url {
            let loopback = url.is_loopback();
            if !(url.is_https() || loopback) {
                out.push(format!(
                    "{prefix}[{i}].jwks_url: must be https (plain http only on loopback)"
                ));
            }
            if k.cooldown < Duration::from_secs(1) && !loopback
                || k.refresh_interval < Duration::from_millis(100)
            {
                out.push(format!(
                    "{prefix}[{i}]: refresh_interval must be at least 100ms and cooldown at least 1s"
                ));
            }
        }
    }
}

/// A credential header spelled with `_` or `.` would be dropped (or refused) before the decision
/// could read it.
fn credential_headers(config: &Config, out: &mut Vec<String>) {
    let mode = config.forwarding.underscore_headers;
    if mode == UnderscoreHeaders::Allow {
        return;
    }
    let (word, effect) = match mode {
        UnderscoreHeaders::Drop => ("drop", "drops it before the decision reads it"),
        _ => ("reject", "refuses every request that carries it"),
    };
    for (key, name) in config.credential_headers() {
        if names::is_ambiguous(name.as_str().as_bytes()) {
            out.push(format!(
                "{key}: `{name}` holds `_` or `.`, which forwarding.underscore_headers = \"{word}\" \
                 {effect} (rename it, or set underscore_headers = \"allow\")"
            ));
        }
    }
}

fn limits(config: &Config, out: &mut Vec<String>) {
    let limits = &config.limits;
    for (name, zero) in [
        ("max_request_body_bytes", limits.max_request_body_bytes == 0),
        ("max_headers", limits.max_headers == 0),
        ("max_connections", limits.max_connections == 0),
        (
            "h2_max_concurrent_streams",
            limits.h2_max_concurrent_streams == 0,
        ),
        ("header_read_timeout", limits.header_read_timeout.is_zero()),
        ("idle_timeout", limits.idle_timeout.is_zero()),
        (
            "request_body_timeout",
            limits.request_body_timeout.is_zero(),
        ),
    ] {
        if zero {
            out.push(format!("limits.{name}: must be greater than zero"));
        }
    }
    if limits.max_header_bytes < 8192 {
        out.push("limits.max_header_bytes: must be at least 8192".into());
    }
}
