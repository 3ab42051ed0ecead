//! Verification keys of every supported kind, each pinned to its algorithm.

mod common;

use common::{Harness, TEST_ROUTES};
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};
use serde_json::json;

struct Keys {
    _dir: tempfile::TempDir,
    config: String,
    es: EncodingKey,
    ed: EncodingKey,
    rsa: EncodingKey,
    hs: EncodingKey,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        toml::Value::from(p.display().to_string()).to_string()
    };
    let es = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let rsa = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
    let secret = "0123456789abcdef0123456789abcdef-test-secret";
    let config = format!(
        r#"
[[jwt.keys]]
pem = {}
kid = "es"
algorithms = ["ES256"]
[[jwt.keys]]
pem = {}
kid = "ed"
algorithms = ["EdDSA"]
[[jwt.keys]]
pem = {}
kid = "ps"
algorithms = ["PS256"]
[[jwt.keys]]
hmac_secret_file = {}
kid = "hs"
algorithms = ["HS256"]
"#,
        write("es.pub.pem", &es.public_key_pem()),
        write("ed.pub.pem", &ed.public_key_pem()),
        write("rsa.pub.pem", &rsa.public_key_pem()),
        write("hs.secret", &format!("{secret}\n")),
    );
    Keys {
        config,
        es: EncodingKey::from_ec_pem(es.serialize_pem().as_bytes()).unwrap(),
        ed: EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
        rsa: EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap(),
        hs: EncodingKey::from_secret(secret.as_bytes()),
        _dir: dir,
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = json!({"iss": "scopegate-demo", "aud": "commerce-api", "exp": scopegate::credentials::unix_now() + 600, "scope": "read_orders"});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test]
async fn every_supported_algorithm_verifies_with_its_own_key_only() {
    let k = keys();
    let h = Harness::new(TEST_ROUTES).toml(&k.config).start().await;
    let good = [
        ("RS256 (JWKS)", h.token(json!({"scope": "read_orders"}))),
        ("ES256", sign(Algorithm::ES256, &k.es, "es")),
        ("EdDSA", sign(Algorithm::EdDSA, &k.ed, "ed")),
        ("PS256", sign(Algorithm::PS256, &k.rsa, "ps")),
        ("HS256", sign(Algorithm::HS256, &k.hs, "hs")),
    ];
    for (name, token) in &good {
        assert_eq!(
            h.get("/shop/orders", Some(token)).await.status,
            StatusCode::OK,
            "{name}"
        );
    }
    let bad = [
        // Right key, algorithm the key is not pinned to.
        (
            "RS256 on the PS256 key",
            sign(Algorithm::RS256, &k.rsa, "ps"),
        ),
        // A key presented under another key's kid.
        (
            "ES256 under the EdDSA kid",
            sign(Algorithm::ES256, &k.es, "ed"),
        ),
        (
            "HS256 under the RSA kid",
            sign(Algorithm::HS256, &k.hs, "ps"),
        ),
        (
            "EdDSA under the demo kid",
            sign(Algorithm::EdDSA, &k.ed, "demo"),
        ),
    ];
    // Every algorithm's signature, altered in its middle, fails against the right key.
    let tampered: Vec<(String, String)> = good
        .iter()
        .map(|(name, token)| {
            let dot = token.rfind('.').unwrap();
            let at = dot + (token.len() - dot) / 2;
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            (
                format!("{name} with an altered signature"),
                String::from_utf8(bytes).unwrap(),
            )
        })
        .collect();
    let bad = bad
        .iter()
        .map(|(name, token)| (name.to_string(), token.clone()))
        .chain(tampered);
    for (name, token) in bad {
        let reply = h.get("/shop/orders", Some(&token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{name}");
        assert!(
            reply.header("www-authenticate").contains("invalid_token"),
            "{name}"
        );
    }
    assert_eq!(h.upstream.count(), good.len());
}

#[tokio::test]
async fn verified_tokens_are_cached_by_hash_and_not_verified_again() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "read_orders"}));
    for _ in 0..20 {
        assert_eq!(
            h.get("/shop/orders", Some(&token)).await.status,
            StatusCode::OK
        );
    }
    let m = h.metrics().await;
    assert!(
        m.contains(r#"scopegate_token_verifications_total{result="valid"} 1"#),
        "{m}"
    );
    assert!(m.contains("scopegate_token_cache_hits_total 19"), "{m}");
    // A cached token is looked up before the header is checked in full; the checks still hold.
    let forwarded = h.upstream.count();
    let twice = format!("Bearer {token}");
    // Two credentials: a second Authorization header, or a platform token header (in any letter
    // case, among other headers) next to the cached bearer token.
    let ambiguous: [(&str, &[(&str, &str)]); 3] = [
        ("two Authorization headers", &[("authorization", &twice)]),
        (
            "cached token and x-shopify-access-token",
            &[
                ("accept", "application/json"),
                ("x-shopify-access-token", "shpat_other"),
            ],
        ),
        (
            "cached token and X-Shopify-Storefront-Access-Token",
            &[
                ("accept", "application/json"),
                ("X-Shopify-Storefront-Access-Token", "shpat_other"),
            ],
        ),
    ];
    for (what, extra) in ambiguous {
        let reply = h
            .send(
                common::Version::H1,
                "GET",
                "/shop/orders",
                Some(&token),
                extra,
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}");
    }
    let altered = format!("{token}!");
    assert_eq!(
        h.get("/shop/orders", Some(&altered)).await.status,
        StatusCode::UNAUTHORIZED,
        "the cached token with a byte that is not a token character"
    );
    assert_eq!(h.upstream.count(), forwarded);
}

#[tokio::test]
async fn bad_key_config_fails_at_load_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("not-a-key.pem");
    std::fs::write(&pem, "hello").unwrap();
    let extra = format!(
        "[[jwt.keys]]\npem = {}\nalgorithms = [\"ES256\"]\n",
        toml::Value::from(pem.display().to_string())
    );
    let h_dir = tempfile::tempdir().unwrap();
    let material = scopegate::demo::material::ensure(&h_dir.path().join("certs")).unwrap();
    std::fs::create_dir_all(h_dir.path().join("routes")).unwrap();
    std::fs::write(h_dir.path().join("routes/t.toml"), TEST_ROUTES).unwrap();
    let text = common::config_text(
        h_dir.path(),
        &material,
        "127.0.0.1:1".parse().unwrap(),
        &extra,
    );
    let config = scopegate::config::Config::parse(&text).unwrap();
    let err = scopegate::app::App::build(config).unwrap_err().to_string();
    assert!(
        err.contains("not-a-key.pem") && err.contains("not a Ec public key"),
        "{err}"
    );

    let weak = dir.path().join("short.secret");
    std::fs::write(&weak, "short").unwrap();
    let extra = format!(
        "[[jwt.keys]]\nhmac_secret_file = {}\nalgorithms = [\"HS256\"]\n",
        toml::Value::from(weak.display().to_string())
    );
    let text = common::config_text(
        h_dir.path(),
        &material,
        "127.0.0.1:1".parse().unwrap(),
        &extra,
    );
    let err = scopegate::app::App::build(scopegate::config::Config::parse(&text).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 32 bytes"), "{err}");

    let mut table = common::config_table(h_dir.path(), &material, "127.0.0.1:1".parse().unwrap());
    for keys in [
        "jwt.keys",
        "jwt.companions.customer.keys",
        "jwt.companions.account_management.keys",
    ] {
        let key = &mut common::get(&mut table, keys)[0];
        assert_eq!(key["algorithms"], vec!["RS256"].into(), "{keys}");
        key["algorithms"] = vec!["none"].into();
    }
    let text = toml::to_string(&table).unwrap();
    let err = scopegate::app::App::build(scopegate::config::Config::parse(&text).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown algorithm `none`"), "{err}");
}

/// A JWT signed by the demo key with `header` (raw JSON, as written) and demo claims.
fn signed_with_header(h: &Harness, header: &str) -> String {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let claims = scopegate::mint::with_demo_defaults(json!({"scope": "read_orders"}), 600).unwrap();
    let message = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    let pem = std::fs::read(&h.material.signing_key).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::RS256).unwrap();
    format!("{message}.{signature}")
}

/// RFC 7515 4.1.11: `crit` lists extensions the verifier must understand, and scopegate
/// implements none. A correctly signed token whose header has `crit` at all (a list of names,
/// an empty list, `null`, a string, a number, spelled with an escape, twice) is 401
/// `token_crit_unsupported` and never forwarded. (`decode_header` reads `crit` only when it is
/// a list of strings, and then nothing checked it.)
#[tokio::test]
async fn tokens_with_critical_header_extensions_are_refused() {
    let h = Harness::start(TEST_ROUTES).await;
    let mut typed = Header::new(Algorithm::RS256);
    typed.kid = Some("demo".into());
    typed.crit = Some(vec!["exp".into()]);
    let claims = scopegate::mint::with_demo_defaults(json!({"scope": "read_orders"}), 600).unwrap();
    let pem = std::fs::read(&h.material.signing_key).unwrap();
    let typed =
        jsonwebtoken::encode(&typed, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap();
    let mut refused = vec![("typed crit", typed)];
    for header in [
        r#"{"alg":"RS256","kid":"demo","crit":["exp"]}"#,
        r#"{"alg":"RS256","kid":"demo","crit":["b64"],"b64":false}"#,
        r#"{"alg":"RS256","kid":"demo","crit":[]}"#,
        r#"{"alg":"RS256","kid":"demo","crit":null}"#,
        r#"{"alg":"RS256","kid":"demo","crit":"exp"}"#,
        r#"{"alg":"RS256","kid":"demo","crit":5}"#,
        r#"{"alg":"RS256","kid":"demo","crit":[1]}"#,
        r#"{"alg":"RS256","kid":"demo","crit":{"exp":true}}"#,
        r#"{"alg":"RS256","kid":"demo","cr\u0069t":["x"]}"#,
        r#"{"crit":["x"],"alg":"RS256","kid":"demo","crit":["y"]}"#,
    ] {
        refused.push((header, signed_with_header(&h, header)));
    }
    for (what, token) in &refused {
        let reply = h.get("/shop/orders", Some(token)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(
            reply.header("www-authenticate").contains("invalid_token"),
            "{what}"
        );
        assert_eq!(
            reply.json()["type"],
            "urn:scopegate:problem:token_crit_unsupported",
            "{what}"
        );
    }
    assert_eq!(h.upstream.count(), 0);
    // Other members, whatever they hold, and the same claims without `crit`, pass.
    for header in [
        r#"{"alg":"RS256","kid":"demo"}"#,
        r#"{"alg":"RS256","kid":"demo","typ":"crit"}"#,
        r#"{"alg":"RS256","kid":"demo","x-crit":["exp"]}"#,
    ] {
        let token = signed_with_header(&h, header);
        assert_eq!(
            h.get("/shop/orders", Some(&token)).await.status,
            StatusCode::OK,
            "{header}"
        );
    }
    assert_eq!(h.upstream.count(), 3);
    let metrics = h.metrics().await;
    let want = format!(
        "scopegate_token_verifications_total{{result=\"token_crit_unsupported\"}} {}",
        refused.len()
    );
    assert!(metrics.contains(&want), "{metrics}");
}
