//! Criterion benches of the request hot path: path normalisation, route match over every preset,
//! the whole cached decision, JWT verification per algorithm, and the token cache under
//! contention. `cargo bench --bench hot_path`; numbers are read, never asserted.

use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http::request::Parts;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};
use serde_json::json;

use scopegate::app::App;
use scopegate::config::Config;
use scopegate::credentials::cache::{TokenCache, cache_key};
use scopegate::credentials::jwt::{ClaimRules, JwtVerifier};
use scopegate::credentials::keys::{self, KeySource};
use scopegate::credentials::{Identity, bearer_token, unix_now};
use scopegate::routes::{self, CompileOptions, RouteTable, Rule};
use scopegate::{path, policy};

const ISS: &str = "scopegate-demo";
const AUD: &str = "commerce-api";
/// A Shopify REST Admin read: the route needs `read_orders`.
const ORDER_PATH: &str = "/admin/api/2024-10/orders/450789469.json";

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn all_presets() -> RouteTable {
    routes::compile_paths(&[repo("routes")], &CompileOptions::default())
        .expect("the shipped presets compile")
}

/// A signing key and the file with its public half.
struct Key {
    alg: Algorithm,
    kid: &'static str,
    encoding: EncodingKey,
    public_pem: PathBuf,
}

fn keys(dir: &std::path::Path) -> Vec<Key> {
    let make = |alg, kid: &'static str, pair: KeyPair| {
        let public_pem = dir.join(format!("{kid}.pub.pem"));
        std::fs::write(&public_pem, pair.public_key_pem()).unwrap();
        let private = pair.serialize_pem();
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()),
            _ => EncodingKey::from_ed_pem(private.as_bytes()),
        }
        .unwrap();
        Key {
            alg,
            kid,
            encoding,
            public_pem,
        }
    };
    vec![
        make(
            Algorithm::RS256,
            "rs",
            KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap(),
        ),
        make(
            Algorithm::ES256,
            "es",
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        ),
        make(
            Algorithm::EdDSA,
            "ed",
            KeyPair::generate_for(&PKCS_ED25519).unwrap(),
        ),
    ]
}

fn sign(key: &Key, subject: &str, scope: &str) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.into());
    let claims = json!({
        "sub": subject, "client_id": "bench", "iss": ISS, "aud": AUD,
        "iat": unix_now(), "exp": unix_now() + 7200, "scope": scope,
    });
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn get(path: &str, token: &str) -> Parts {
    let (parts, ()) = Request::get(path)
        .header("host", "shop.example.com")
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json")
        .header("user-agent", "bench")
        .body(())
        .unwrap()
        .into_parts();
    parts
}

/// Polls a future that must finish without waiting (a cached decision never awaits).
fn now_or_never<T>(future: impl Future<Output = T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the cached decision awaited"),
    }
}

fn normalisation(c: &mut Criterion) {
    let mut g = c.benchmark_group("path_normalise");
    for (name, p) in [
        ("canonical", ORDER_PATH),
        (
            "canonical_long",
            "/v2/catalogs/0a1b2c3d/releases/4e5f6a7b/products/8c9d0e1f/children",
        ),
        ("rebuilt", "//admin/api/2024-10//orders/%34%35%30.json"),
    ] {
        g.bench_function(name, |b| b.iter(|| path::normalise(black_box(p)).is_ok()));
    }
    g.finish();
}

fn route_match(c: &mut Criterion) {
    let table = all_presets();
    let mut g = c.benchmark_group("route_match_all_presets");
    for (name, p) in [
        ("shopify_item", ORDER_PATH),
        ("elastic_path_below", "/v2/orders/123/items/456"),
        ("shopline", "/admin/openapi/v20240301/orders.json"),
        ("no_route", "/nowhere/at/all"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| table.find(black_box(p)).map(|m| m.route.preset))
        });
    }
    g.finish();
}

/// Route match + cache hit + scope check, from the pieces and through the gateway.
fn cached_decision(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path());
    let rs = &keys[0];
    let token = sign(rs, "user-1", "read_orders read_products");
    let mut g = c.benchmark_group("cached_decision");

    // The pieces, each check in full (the gateway itself skips the token's byte scan on a
    // cache hit, see `Authenticator::authenticate`).
    let table = all_presets();
    let cache = TokenCache::new(100_000, 3600);
    let identity = Arc::new(Identity::new(
        Some("user-1".into()),
        Some("bench".into()),
        None,
        Box::new([]),
        ["read_orders".into(), "read_products".into()].into(),
        None,
        Some(unix_now() + 7200),
    ));
    cache.insert(cache_key(&token), identity, unix_now());
    for i in 0..10_000 {
        cache.insert(
            cache_key(&format!("{token}{i}")),
            Arc::new(Identity::new(
                None,
                None,
                None,
                Box::new([]),
                Box::new([]),
                None,
                Some(unix_now() + 7200),
            )),
            unix_now(),
        );
    }
    let parts = get(ORDER_PATH, &token);
    let pieces = || {
        let path = path::normalise(parts.uri.path()).ok()?;
        let matched = table.find(&path)?;
        let route = matched.route;
        let Rule::Protected(requirement) = &**route.rule(&parts.method)? else {
            return None;
        };
        let token = bearer_token(&parts.headers).ok()?;
        let identity = cache.get(&cache_key(token), unix_now())?;
        let held = identity.scopes_in(&table, route.preset);
        policy::check_token(table.preset(route.preset), &identity, &held).ok()?;
        let (counted, _) = policy::apply_gates(table.preset(route.preset), &identity, held);
        policy::permits(requirement, &identity, &counted, &[None, None]).then_some(())
    };
    assert!(pieces().is_some(), "the benchmark request is allowed");
    g.bench_function("pieces_route_cache_scopes", |b| {
        b.iter(|| black_box(pieces()))
    });

    // The gateway's own decide(), every preset loaded, the token verified on first use.
    let config = Config::parse(&format!(
        r#"
[listen]
address = "127.0.0.1:0"
[routes]
paths = [{routes}]
[upstreams.default]
url = "http://127.0.0.1:9"
[jwt]
issuer = "{ISS}"
audiences = ["{AUD}"]
[[jwt.keys]]
pem = {pem}
kid = "rs"
algorithms = ["RS256"]
[reload]
watch = false
"#,
        routes = toml::Value::from(repo("routes").display().to_string()),
        pem = toml::Value::from(rs.public_pem.display().to_string()),
    ))
    .unwrap();
    let app = App::build(config).unwrap();
    let gateway = app.policy();
    assert!(now_or_never(gateway.judge(&parts)).is_ok());
    let denied = get(ORDER_PATH, &sign(rs, "user-2", "read_products"));
    assert!(now_or_never(gateway.judge(&denied)).is_err());
    g.bench_function("gateway_allow", |b| {
        b.iter(|| now_or_never(gateway.judge(black_box(&parts))).is_ok())
    });
    g.bench_function("gateway_forbidden", |b| {
        b.iter(|| now_or_never(gateway.judge(black_box(&denied))).is_err())
    });
    g.bench_function("cache_key_only", |b| {
        b.iter(|| cache_key(black_box(&token)))
    });
    g.finish();
}

fn verification(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("jwt_verify");
    for key in keys(dir.path()) {
        let loaded = keys::load(
            &KeySource::Pem {
                path: key.public_pem.clone(),
                kid: Some(key.kid.into()),
            },
            &[key.alg],
        )
        .unwrap();
        let verifier = JwtVerifier::new(
            loaded,
            Vec::new(),
            ClaimRules {
                issuer: Some(ISS.into()),
                audiences: vec![AUD.into()],
                leeway: 30,
            },
        );
        let token = sign(&key, "user-1", "read_orders read_products");
        assert!(verifier.verify(&token, unix_now()).is_ok());
        g.bench_function(BenchmarkId::from_parameter(format!("{:?}", key.alg)), |b| {
            b.iter(|| verifier.verify(black_box(&token), unix_now()).is_ok())
        });
    }
    g.finish();
}

/// Lookups of 10,000 cached tokens from several threads at once; time per lookup.
fn cache_contention(c: &mut Criterion) {
    let cache = TokenCache::new(100_000, 3600);
    let keys: Vec<u128> = (0..10_000)
        .map(|i| cache_key(&format!("eyJhbGciOiJSUzI1NiJ9.token-{i}.signature")))
        .collect();
    for k in &keys {
        let identity = Identity::new(
            None,
            None,
            None,
            Box::new([]),
            Box::new([]),
            None,
            Some(unix_now() + 7200),
        );
        cache.insert(*k, Arc::new(identity), unix_now());
    }
    let mut g = c.benchmark_group("token_cache_get");
    g.measurement_time(Duration::from_secs(3));
    for threads in [1usize, 2, 4] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("threads", threads), |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(threads as u64);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let (cache, keys) = (&cache, &keys);
                        s.spawn(move || {
                            let now = unix_now();
                            for i in 0..per {
                                let k = &keys[(i as usize * 7 + t * 1_237) % keys.len()];
                                black_box(cache.get(k, now));
                            }
                        });
                    }
                });
                // Wall time for `iters` lookups spread over the threads.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per * threads as u64) as f64)
            })
        });
    }
    g.finish();
}

/// The GraphQL analysis of a realistic ~2 KB Admin query (three fragments, eight levels):
/// cold (parse and walk every time) and repeated (the cache: a hash, a confirmed lookup and the
/// held-scope test).
fn graphql(c: &mut Criterion) {
    use scopegate::graphql::{AnalysisCache, Limits, Requirements, RuleSpec, Schema, analyse};
    use scopegate::scopes::Vocabulary;
    let sdl = std::fs::read_to_string(repo("routes/graphql/shopify-admin.graphql")).unwrap();
    let schema = Schema::from_sdl("shopify-admin.graphql", &sdl).unwrap();
    let rule = |s: &str| RuleSpec::Text(s.to_owned());
    let types = [
        ("Product", "read_products"),
        ("ProductVariant", "read_products"),
        ("Collection", "read_products"),
        ("Order", "read_orders"),
        ("LineItem", "read_orders"),
        ("Customer", "read_customers"),
    ];
    let mut types: std::collections::BTreeMap<_, _> = types
        .iter()
        .map(|(t, s)| ((*t).to_owned(), rule(s)))
        .collect();
    types.insert("Shop".to_owned(), RuleSpec::All(Vec::new()));
    let mut vocab = Vocabulary::default();
    let req = Requirements::compile(&schema, &mut vocab, &types, &Default::default()).unwrap();
    vocab.close(&[]).unwrap();
    let held = vocab.grant(["read_products", "read_orders", "read_customers"]);
    let doc = std::fs::read_to_string(repo("tests/benches/graphql/admin-products-orders.graphql"))
        .unwrap();
    let limits = Limits::default();
    let first = analyse(&schema, &req, &doc, None, None, &limits).unwrap();
    assert!(first.missing(&held).is_empty());
    let mut g = c.benchmark_group("graphql");
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("cold_admin_2kb", |b| {
        b.iter(|| black_box(analyse(&schema, &req, black_box(&doc), None, None, &limits).unwrap()))
    });
    // The parser's share of the cold number.
    g.bench_function("parse_only_admin_2kb", |b| {
        b.iter(|| black_box(cynic_parser::parse_executable_document(black_box(&doc)).unwrap()))
    });
    let cache = AnalysisCache::new(1024);
    g.bench_function("cached_admin_2kb", |b| {
        b.iter(|| {
            let a = cache
                .analyse(&schema, &req, black_box(&doc), None, None, &limits)
                .unwrap();
            black_box(a.missing(&held).is_empty())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    graphql,
    normalisation,
    route_match,
    cached_decision,
    verification,
    cache_contention
);
criterion_main!(benches);
