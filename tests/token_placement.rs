//! RFC 6750 2.2 and 2.3 put bearer tokens in a form body or the query (`access_token=`).
//! scopegate refuses both rather than forward a credential it did not judge, whatever spelling
//! a framework behind it would still read as `access_token`. Raw bytes on a socket; the
//! recording upstream sees nothing of a refused request, and exactly the bytes of one passed.

mod common;

use bytes::Bytes;
use common::{Harness, Policy, TEST_ROUTES, raw, status_of};
use serde_json::json;

/// Query names that PHP, Rails, Rack or a servlet container reads as `access_token`.
const SPELLINGS: &[&str] = &[
    "access_token=x",
    "ACCESS_TOKEN=x",
    "Access_Token=x",
    "a=1&access_token=x",
    "a=1;access_token=x",
    "access_token",
    "%61ccess_token=x",
    "access%5Ftoken=x",
    "access%5ftoken=x",
    "%41CCESS%5fTOKEN=x",
    "access.token=x",
    "access+token=x",
    "access%20token=x",
    "access%2etoken=x",
    "+access_token=x",
    "access_token%00=x",
    "access_token[]=x",
    "access_token[0]=x",
    "access_token%5B%5D=x",
    "access[token=x",
    "access%5Btoken=x",
];

#[tokio::test]
async fn access_token_in_the_query_however_spelled_is_refused() {
    let h = Harness::new(TEST_ROUTES).plaintext().start().await;
    let token = h.token(json!({"scope": "read_orders"}));
    for query in SPELLINGS {
        let bytes = format!(
            "GET /shop/orders?{query} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let (response, _) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(status_of(&response), 400, "{query}: {response}");
        assert!(response.contains("token_in_query"), "{query}: {response}");
        assert_eq!(h.upstream.count(), 0, "{query} reached the upstream");
    }
    // Names that only look alike pass, with the query exactly as sent.
    for query in [
        "token=access_token",
        "access_tokens=x",
        "access[token]=x",
        "access%2Btoken=x",
        "v=1.2&q=a+b",
    ] {
        let bytes = format!(
            "GET /shop/orders?{query} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let (response, _) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(status_of(&response), 200, "{query}: {response}");
        assert_eq!(h.upstream.last().query.as_deref(), Some(query));
    }
    let metrics = h.metrics().await;
    let want = format!(
        "scopegate_denials_total{{reason=\"token_in_query\"}} {}",
        SPELLINGS.len()
    );
    assert!(metrics.contains(&want), "{metrics}");
}

/// The decision alone says the same, over HTTP/1.1 and HTTP/2 (no socket).
#[tokio::test]
async fn the_decision_refuses_every_spelling() {
    let policy = Policy::new(TEST_ROUTES).build();
    let token = policy.token(json!({"scope": "read_orders"}));
    for query in SPELLINGS {
        for h2 in [false, true] {
            let mut request = policy
                .request("GET", &format!("/shop/orders?{query}"))
                .token(&token);
            if h2 {
                request = request.h2();
            }
            let verdict = request.verdict().await;
            assert_eq!(
                (verdict.status, verdict.reason),
                (400, "token_in_query"),
                "{query} h2={h2}"
            );
        }
    }
}

/// A form-encoded body is read ahead and checked with the same reading of names: any
/// `Content-Type` spelling of `application/x-www-form-urlencoded` (or a POST without one, which
/// Rack reads as a form). A form too large to read whole is 413 `form_body_too_large`, a
/// content-encoded one 400 `form_body_encoded`: neither can be checked.
#[tokio::test]
async fn access_token_in_a_form_body_is_refused() {
    let h = Harness::new(TEST_ROUTES)
        .plaintext()
        .toml("[limits]\nbuffer_body_bytes = 64\n")
        .start()
        .await;
    let token = h.token(json!({"scope": "write_orders"}));
    let post = |headers: &str, body: &str| {
        format!(
            "POST /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let long = format!("a={}", "x".repeat(100));
    let cases: Vec<(String, u16, &str)> = vec![
        (post(form, "access_token=x"), 400, "token_in_body"),
        (post(form, "a=1&access%5Ftoken=x"), 400, "token_in_body"),
        (post(form, "a=1; access.token=x"), 400, "token_in_body"),
        (post(form, "access_token[]=x&b=2"), 400, "token_in_body"),
        (
            post(
                "Content-Type: Application/X-WWW-Form-URLEncoded; Charset=UTF-8\r\n",
                "ACCESS_TOKEN=x",
            ),
            400,
            "token_in_body",
        ),
        (
            post(
                &format!("Content-Type: application/json\r\n{form}"),
                "access_token=x",
            ),
            400,
            "token_in_body",
        ),
        (post("", "access_token=x"), 400, "token_in_body"),
        (post(form, &long), 413, "form_body_too_large"),
        (
            post(&format!("{form}Content-Encoding: gzip\r\n"), "a=1"),
            400,
            "form_body_encoded",
        ),
    ];
    for (bytes, status, reason) in &cases {
        let (response, _) = raw(h.running.proxy_addr, bytes.as_bytes()).await;
        assert_eq!(status_of(&response), *status, "{bytes}: {response}");
        assert!(response.contains(reason), "{bytes}: {response}");
        assert_eq!(h.upstream.count(), 0, "{bytes} reached the upstream");
    }
    // A chunked form past the bound as well.
    let chunked = format!(
        "POST /shop/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n{form}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{long}\r\n0\r\n\r\n",
        long.len()
    );
    let (response, closed) = raw(h.running.proxy_addr, chunked.as_bytes()).await;
    assert_eq!(status_of(&response), 413, "{response}");
    assert!(closed);
    assert_eq!(h.upstream.count(), 0);
    // Forms without one, and other types holding the name, pass byte for byte.
    for (headers, body) in [
        (form.to_owned(), "a=1&token=access_token".to_owned()),
        (
            "Content-Type: application/json\r\n".to_owned(),
            r#"{"access_token":"x"}"#.to_owned(),
        ),
        (
            "Content-Type: application/json\r\n".to_owned(),
            format!("access_token={}", "x".repeat(100)),
        ),
    ] {
        let before = h.upstream.count();
        let (response, _) = raw(h.running.proxy_addr, post(&headers, &body).as_bytes()).await;
        assert_eq!(status_of(&response), 200, "{body}: {response}");
        assert_eq!(h.upstream.count(), before + 1);
        assert_eq!(h.upstream.last().body, Some(Ok(Bytes::from(body))));
    }
}

/// Over HTTP/2 as well.
#[tokio::test]
async fn access_token_in_an_http2_form_body_is_refused() {
    let h = Harness::start(TEST_ROUTES).await;
    let token = h.token(json!({"scope": "write_orders"}));
    let reply = h
        .request("POST", "/shop/orders")
        .token(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("note=1&%61ccess_token=x")
        .h2()
        .send()
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json()["type"],
        "urn:scopegate:problem:token_in_body",
        "{reply:?}"
    );
    assert_eq!(h.upstream.count(), 0);
}
