//! Credential sources beyond local keys, over real sockets: JWKS from a URL (start-up 503,
//! refresh on an unknown kid with a cooldown, rotation), RFC 7662 introspection (caching,
//! single-flight, negative answers, outage -> 503) and the static token file.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, TEST_ROUTES, Version};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Chooses `(status, body)` from the request body.
type Answer = Box<dyn Fn(&str) -> (u16, String) + Send>;

/// A local HTTP server answering every request with `(status, body)` chosen per request body,
/// counting hits.
#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
}

impl Fake {
    async fn start(answer: impl Fn(&str) -> (u16, String) + Send + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Fake {
            addr: listener.local_addr().unwrap(),
            hits: Arc::default(),
            answer: Arc::new(Mutex::new(Box::new(answer))),
        };
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let f = f.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let f = f.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            f.hits.fetch_add(1, Ordering::SeqCst);
                            // A little latency so concurrent requests overlap.
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            let (status, text) =
                                (f.answer.lock().unwrap())(&String::from_utf8_lossy(&body));
                            let mut response = Response::new(Full::new(Bytes::from(text)));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            response
                                .headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    fn set(&self, answer: impl Fn(&str) -> (u16, String) + Send + 'static) {
        *self.answer.lock().unwrap() = Box::new(answer);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

struct RsaKey {
    encoding: EncodingKey,
    jwks: Value,
}

fn rsa_key(kid: &str) -> RsaKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let pem = pair.serialize_pem();
    let mut jwks: Value =
        serde_json::from_str(&scopegate::demo::material::jwks_for(pem.as_bytes()).unwrap())
            .unwrap();
    jwks["keys"][0]["kid"] = kid.into();
    RsaKey {
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        jwks,
    }
}

fn sign(key: &RsaKey, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let claims = json!({"iss": "scopegate-demo", "aud": "commerce-api", "exp": scopegate::credentials::unix_now() + 600, "scope": "read_orders"});
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

/// A harness whose main key set is the JWKS at `url` instead of the demo file.
async fn with_jwks_url(url: &str) -> Harness {
    let mut keys = toml::Table::new();
    keys.insert("jwks_url".into(), url.into());
    keys.insert("refresh_interval".into(), "300ms".into());
    keys.insert("cooldown".into(), "2s".into());
    keys.insert("algorithms".into(), vec!["RS256"].into());
    Harness::new(TEST_ROUTES)
        .config(|t| {
            let main = common::get(t, "jwt.keys");
            assert!(main[0].get("jwks_file").is_some(), "{main}");
            *main = vec![keys].into();
        })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_rotation_and_unknown_kid_floods_cost_one_fetch() {
    let a = rsa_key("a");
    let b = rsa_key("b");
    let served = Arc::new(Mutex::new(a.jwks.to_string()));
    let s = served.clone();
    let jwks = Fake::start(move |_| (200, s.lock().unwrap().clone())).await;
    let h = with_jwks_url(&format!("http://{}/jwks.json", jwks.addr)).await;
    // Keys arrive in the background: wait for the first fetch.
    let token_a = sign(&a, "a");
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        status = h.get("/shop/orders", Some(&token_a)).await.status;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::OK);

    // Rotation: the server now publishes only key b.
    *served.lock().unwrap() = b.jwks.to_string();
    let before = jwks.hits();
    let token_b = sign(&b, "b");
    assert_eq!(
        h.get("/shop/orders", Some(&token_b)).await.status,
        StatusCode::OK,
        "unknown kid triggers a refresh"
    );
    assert!(jwks.hits() > before);
    // Key a was removed by the refresh; a not-yet-cached token signed with it is refused.
    let token_a2 = {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("a".into());
        let claims = json!({"iss": "scopegate-demo", "aud": "commerce-api", "exp": scopegate::credentials::unix_now() + 900, "scope": "read_orders"});
        jsonwebtoken::encode(&header, &claims, &a.encoding).unwrap()
    };
    assert_eq!(
        h.get("/shop/orders", Some(&token_a2)).await.status,
        StatusCode::UNAUTHORIZED
    );

    // A flood of random kids within the cooldown costs at most one fetch.
    let before = jwks.hits();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let token = sign(&b, &format!("random-{i}"));
        let client = h.client.clone();
        let addr = h.running.proxy_addr;
        tasks.push(tokio::spawn(async move {
            let req = Request::get("/shop/orders")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            client.send(addr, Version::H1, req).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    // The periodic refresh (300 ms) may add fetches of its own; the flood adds at most one.
    let periodic_allowance = 2;
    assert!(
        jwks.hits() - before <= 1 + periodic_allowance,
        "{} fetches",
        jwks.hits() - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_answer_503_until_keys_exist_and_garbage_keeps_the_last_good_keys() {
    let a = rsa_key("a");
    let good = a.jwks.to_string();
    let jwks = Fake::start(|_| (500, "down".into())).await;
    let h = with_jwks_url(&format!("http://{}/jwks.json", jwks.addr)).await;
    let token = sign(&a, "a");
    let reply = h.get("/shop/orders", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.get("/shop/health", None).await.status,
        StatusCode::OK,
        "public routes need no keys"
    );
    let readyz = format!("http://{}/readyz", h.running.admin_addr);
    let probe = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .unwrap()
    };
    assert_eq!(probe(readyz.clone()).await, "503", "not ready without keys");
    assert_eq!(h.upstream.count(), 1);
    jwks.set(move |_| (200, good.clone()));
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        status = h.get("/shop/orders", Some(&token)).await.status;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(probe(readyz).await, "200", "ready once keys exist");
    // Now the endpoint serves garbage: the last good keys stay.
    jwks.set(|_| (200, "{not json".into()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let fresh = sign(&a, "a");
    assert_eq!(
        h.get("/shop/orders", Some(&fresh)).await.status,
        StatusCode::OK
    );
    let m = h.metrics().await;
    assert!(
        m.contains(r#"scopegate_jwks_refreshes_total{result="failure"}"#),
        "{m}"
    );
}

fn introspection_config(url: &str) -> String {
    format!(
        "[opaque.introspection]\nurl = \"{url}\"\nclient_id = \"scopegate\"\ntimeout = \"300ms\"\nnegative_ttl = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_is_cached_single_flight_and_fails_closed() {
    let idp = Fake::start(|body| {
        if body.contains("token=good") {
            (200, json!({"active": true, "scope": "read_orders", "client_id": "shop-app", "exp": scopegate::credentials::unix_now() + 600}).to_string())
        } else if body.contains("token=string-active") {
            (200, json!({"active": "true", "scope": "read_orders"}).to_string())
        } else {
            (200, json!({"active": false}).to_string())
        }
    })
    .await;
    let h = Harness::new(TEST_ROUTES)
        .toml(&introspection_config(&format!(
            "http://{}/introspect",
            idp.addr
        )))
        .start()
        .await;

    // 20 concurrent requests with one new opaque token: one introspection call.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = h.client.clone();
        let addr = h.running.proxy_addr;
        tasks.push(tokio::spawn(async move {
            let req = Request::get("/shop/orders")
                .header("authorization", "Bearer good-1")
                .body(Full::new(Bytes::new()))
                .unwrap();
            client.send(addr, Version::H2, req).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(idp.hits(), 1, "single flight");
    assert_eq!(
        h.get("/shop/orders", Some("good-1")).await.status,
        StatusCode::OK
    );
    assert_eq!(idp.hits(), 1, "cached");
    assert_eq!(h.upstream.last().headers["x-scopegate-client"], "shop-app");

    // The Shopify header carries opaque tokens too.
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/shop/orders",
            None,
            &[("x-shopify-access-token", "good-2")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Both an Authorization header and a platform token header: ambiguous.
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/shop/orders",
            Some("good-1"),
            &[("x-shopify-access-token", "good-2")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // Inactive (and "active" as a string) are 401; the negative answer is remembered briefly.
    let hits = idp.hits();
    assert_eq!(
        h.get("/shop/orders", Some("revoked-1")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get("/shop/orders", Some("revoked-1")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(idp.hits(), hits + 1, "negative cache");
    assert_eq!(
        h.get("/shop/orders", Some("string-active")).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Introspection failing: 503, never forwarded, not cached.
    idp.set(|_| (500, "boom".into()));
    let forwarded = h.upstream.count();
    assert_eq!(
        h.get("/shop/orders", Some("good-3")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        h.get("/shop/orders", Some("good-3")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(h.upstream.count(), forwarded);
}

#[tokio::test]
async fn introspection_unreachable_is_503() {
    let down = common::closed_port().await;
    let h = Harness::new(TEST_ROUTES)
        .toml(&introspection_config(&format!("http://{down}/introspect")))
        .start()
        .await;
    assert_eq!(
        h.get("/shop/orders", Some("opaque-1")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(h.upstream.count(), 0);
}

#[tokio::test]
async fn static_token_file_holds_only_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let token = "shpat_0123456789abcdef";
    let hash: String = scopegate::credentials::cache::hash_token(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, format!("[[token]]\nsha256 = \"{hash}\"\nscope = \"read_orders\"\nclient_id = \"private-app\"\ntoken_type = \"shopify_admin\"\n")).unwrap();
    assert!(!std::fs::read_to_string(&file).unwrap().contains(token));
    let extra = format!(
        "[opaque]\nstatic_tokens_file = {}\n",
        toml::Value::from(file.display().to_string())
    );
    let h = Harness::new(TEST_ROUTES).toml(&extra).start().await;
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/shop/orders",
            None,
            &[("x-shopify-access-token", token)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.upstream.last().headers["x-scopegate-token-kind"],
        "shopify_admin"
    );
    let reply = h
        .send(
            Version::H1,
            "GET",
            "/shop/orders",
            None,
            &[("x-shopify-access-token", "shpat_unknown")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.get("/shop/orders", Some(token)).await.status,
        StatusCode::OK,
        "also as a bearer token"
    );
}
