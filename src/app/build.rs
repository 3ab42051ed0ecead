//! The parts an [`super::App`] is built from, each from its section of the config: upstreams,
//! the authenticator (keys, companions, opaque sources, cache), the proxy's settings, the
//! listeners' HTTP limits.

use std::sync::Arc;
use std::time::Duration;

use super::StartError;
use crate::config::{CompanionConfig, Config, KeyConfig, LimitsConfig};
use crate::credentials::cache::TokenCache;
use crate::credentials::jwks_remote::{RemoteJwks, RemoteJwksSpec};
use crate::credentials::jwt::{ClaimRules, JwtVerifier};
use crate::credentials::keys::{self, KeySource};
use crate::credentials::opaque::{IntrospectionSpec, Introspector, StaticTokens};
use crate::credentials::{Authenticator, CompanionVerifier, OpaqueSources, companion_header};
use crate::forwarding::HeaderRules;
use crate::listener::HttpLimits;
use crate::proxy::GatewaySettings;
use crate::routes::Companion;
use crate::telemetry::Metrics;
use crate::upstream::{Upstream, UpstreamSpec};

pub(super) fn upstreams(config: &Config) -> Vec<Upstream> {
    config
        .upstreams
        .iter()
        .map(|(name, u)| {
            Upstream::new(&UpstreamSpec {
                name: name.clone(),
                url: u.url.clone(),
                connect_timeout: u.connect_timeout,
                response_timeout: u.response_timeout,
                pool_idle_timeout: u.pool_idle_timeout,
                pool_max_idle: u.pool_max_idle,
                read_ahead: config.limits.buffer_body_bytes,
            })
        })
        .collect()
}

pub(super) fn gateway_settings(config: &Config) -> GatewaySettings {
    GatewaySettings {
        realm: config.realm.clone(),
        max_request_body: config.limits.max_request_body_bytes,
        headers: HeaderRules::new(
            config.forwarding.identity_headers.names(),
            config
                .credential_headers()
                .into_iter()
                .map(|(_, name)| name)
                .collect(),
            config.forwarding.underscore_headers,
        ),
        access_log: config.log.access,
        read_ahead: config.limits.buffer_body_bytes,
        request_body_timeout: config.limits.request_body_timeout,
        cors: config.cors.clone().map(Arc::new),
    }
}

pub(super) fn http_limits(limits: &LimitsConfig) -> HttpLimits {
    HttpLimits {
        header_read_timeout: limits.header_read_timeout,
        max_headers: limits.max_headers,
        max_header_bytes: limits.max_header_bytes,
        h2_max_concurrent_streams: limits.h2_max_concurrent_streams,
        h2_max_header_list_bytes: limits.h2_max_header_list_bytes,
        idle_timeout: limits.idle_timeout,
    }
}

/// The authenticator, and the remote key sets it uses (refreshed once started).
pub(super) fn authenticator(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<(Authenticator, Vec<Arc<RemoteJwks>>), StartError> {
    let mut remote = Vec::new();
    let (keys, sources) = load_keys("jwt.keys", &config.jwt.keys, metrics)?;
    remote.extend(sources.iter().cloned());
    let verifier = JwtVerifier::new(keys, sources, claim_rules(config));
    let mut companion = |kind: Companion, c: &Option<CompanionConfig>| {
        let Some(c) = c else { return Ok(None) };
        let prefix = format!("jwt.companions.{}", kind.token_type());
        let header = c
            .header
            .as_ref()
            .map_or_else(|| companion_header(kind), |h| h.0.clone());
        let (keys, sources) = load_keys(&format!("{prefix}.keys"), &c.keys, metrics)?;
        remote.extend(sources.iter().cloned());
        Ok::<_, StartError>(Some(CompanionVerifier::new(
            header,
            JwtVerifier::new(keys, sources, claim_rules(config)),
            cache(config),
        )))
    };
    let companions = [
        companion(Companion::Customer, &config.jwt.companions.customer)?,
        companion(
            Companion::AccountManagement,
            &config.jwt.companions.account_management,
        )?,
    ];
    let opaque = opaque_sources(config, metrics)?;
    let auth = Authenticator::new(verifier, cache(config), companions, opaque, metrics.clone());
    Ok((auth, remote))
}

fn cache(config: &Config) -> TokenCache {
    TokenCache::new(
        config.cache.max_entries,
        config.cache.max_ttl.as_secs().max(1),
    )
}

/// Local keys, and the remote JWKS sources (fetched once started).
type KeySets = (Vec<keys::VerifyKey>, Vec<Arc<RemoteJwks>>);

fn load_keys(
    prefix: &str,
    configured: &[KeyConfig],
    metrics: &Arc<Metrics>,
) -> Result<KeySets, StartError> {
    let mut all = Vec::new();
    let mut remote = Vec::new();
    for (i, k) in configured.iter().enumerate() {
        let origin = format!("{prefix}[{i}]");
        let algorithms = keys::parse_algorithms(&k.algorithms, &origin).map_err(StartError::one)?;
        if let Some(url) = &k.jwks_url {
            // https (or loopback) and the intervals were checked with the config.
            remote.push(Arc::new(RemoteJwks::new(
                RemoteJwksSpec {
                    url: url.0.clone(),
                    algorithms,
                    refresh_interval: k.refresh_interval,
                    cooldown: k.cooldown,
                    timeout: Duration::from_secs(5),
                },
                metrics.clone(),
            )));
            continue;
        }
        let source = if let Some(path) = &k.pem {
            KeySource::Pem {
                path: path.clone(),
                kid: k.kid.clone(),
            }
        } else if let Some(path) = &k.jwks_file {
            KeySource::JwksFile { path: path.clone() }
        } else if let Some(path) = &k.hmac_secret_file {
            KeySource::HmacSecretFile {
                path: path.clone(),
                kid: k.kid.clone(),
            }
        } else {
            return Err(StartError::one(format!("{origin}: no key source")));
        };
        all.extend(keys::load(&source, &algorithms).map_err(StartError::one)?);
    }
    Ok((all, remote))
}

fn opaque_sources(config: &Config, metrics: &Arc<Metrics>) -> Result<OpaqueSources, StartError> {
    let o = &config.opaque;
    let static_tokens = match &o.static_tokens_file {
        Some(path) => Some(StaticTokens::load(path).map_err(StartError::one)?),
        None => None,
    };
    let introspection = match &o.introspection {
        None => None,
        Some(i) => {
            let client_secret = match &i.client_secret_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| {
                            StartError::one(format!("{}: cannot read: {e}", path.display()))
                        })?
                        .trim_end()
                        .to_owned(),
                ),
                None => None,
            };
            Some(Introspector::new(
                IntrospectionSpec {
                    url: i.url.0.clone(),
                    client_id: i.client_id.clone(),
                    client_secret,
                    timeout: i.timeout,
                    max_ttl: i.max_ttl,
                    negative_ttl: i.negative_ttl,
                    max_entries: config.cache.max_entries,
                },
                metrics.clone(),
            ))
        }
    };
    Ok(OpaqueSources {
        static_tokens,
        introspection,
        headers: o.headers.iter().map(|h| h.0.clone()).collect(),
    })
}

fn claim_rules(config: &Config) -> ClaimRules {
    ClaimRules {
        issuer: config.jwt.issuer.clone(),
        audiences: config.jwt.audiences.clone(),
        leeway: config.jwt.leeway.as_secs(),
    }
}
