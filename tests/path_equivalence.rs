//! One resource, several spellings: each preset declares how its upstream routes paths
//! (`[preset.paths]`), and a spelling the upstream serves from the same handler is judged by the
//! same route, never by a weaker parent's. Written as an attacker would: the stricter child
//! route of a `below = true` parent, reached by a trailing slash, letter case or a format suffix.

mod common;

use std::path::PathBuf;

use common::{Harness, Version};
use http::StatusCode;
use scopegate::routes::{
    Case, CompileOptions, RouteSource, RouteTable, TrailingSlash, compile, compile_paths,
};
use serde_json::json;

fn shipped() -> RouteTable {
    let routes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("routes");
    compile_paths(&[routes], &CompileOptions::default()).expect("the shipped presets compile")
}

/// A request path for a pattern: each parameter filled with a value no static sibling has.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| match (segment.find('{'), segment.find('}')) {
            (Some(open), Some(_)) if segment[open..].starts_with("{*") => "p7q/r8s".to_owned(),
            (Some(open), Some(close)) => {
                format!("{}p7q{}", &segment[..open], &segment[close + 1..])
            }
            _ => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The spellings of `path` that the preset's upstream treats as `path` itself.
fn spellings(table: &RouteTable, preset: u16, path: &str) -> Vec<String> {
    let rules = &table.preset(preset).paths;
    let mut out = Vec::new();
    if rules.trailing_slash == TrailingSlash::Ignored {
        out.push(format!("{path}/"));
    }
    if rules.case == Case::Insensitive {
        out.push(path.to_ascii_uppercase());
        let mixed: String = path
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        out.push(mixed);
    }
    if let Some(suffix) = rules.optional_suffix.as_deref() {
        let last = path.rsplit('/').next().unwrap_or("");
        if let Some(bare) = path
            .strip_suffix(suffix)
            .filter(|_| last.len() > suffix.len())
        {
            out.push(bare.to_owned());
            out.push(format!("{bare}/"));
        } else {
            out.push(format!("{path}{suffix}"));
        }
    }
    out
}

#[test]
fn every_route_of_every_preset_is_reached_by_each_spelling_its_upstream_treats_as_one() {
    let table = shipped();
    let mut checked = 0;
    for route in table.routes() {
        let path = concrete(&route.template);
        let found = table.find(&path).map(|m| m.route.template.clone());
        assert_eq!(found.as_deref(), Some(&*route.template), "{path}");
        for spelling in spellings(&table, route.preset, &path) {
            let found = table.find(&spelling).map(|m| m.route.template.clone());
            assert_eq!(
                found.as_deref(),
                Some(&*route.template),
                "`{spelling}` is the same resource as `{path}` for preset `{}`",
                table.preset(route.preset).name
            );
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} spellings checked");
}

#[test]
fn the_shipped_presets_declare_how_their_upstreams_route() {
    let table = shipped();
    let rules = |name: &str| {
        let preset = table.presets().iter().find(|p| &*p.name == name).unwrap();
        (
            preset.paths.trailing_slash,
            preset.paths.case,
            preset.paths.optional_suffix.as_deref().map(str::to_owned),
        )
    };
    let json = Some(".json".to_owned());
    assert_eq!(
        rules("shopify"),
        (TrailingSlash::Ignored, Case::Sensitive, json.clone())
    );
    assert_eq!(
        rules("shopline"),
        (TrailingSlash::Ignored, Case::Sensitive, json)
    );
    assert_eq!(
        rules("americommerce"),
        (TrailingSlash::Ignored, Case::Insensitive, None)
    );
    assert_eq!(
        rules("elastic-path"),
        (TrailingSlash::Ignored, Case::Sensitive, None)
    );
}

fn compiled(text: &str) -> Result<RouteTable, String> {
    let source = RouteSource {
        name: "same.toml".into(),
        text: text.into(),
    };
    compile(&[source], &CompileOptions::default()).map_err(|e| {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[test]
fn routes_check_refuses_two_spellings_of_one_resource_with_different_rules() {
    let head = "[preset]\nname = \"s\"\n[preset.paths]\noptional_suffix = \".json\"\n";
    let different = format!(
        "{head}[[route]]\npath = \"/a/items.json\"\nread = {{ scopes = [\"x\"] }}\n\
         [[route]]\npath = \"/a/items\"\nread = {{ scopes = [\"y\"] }}\n"
    );
    let err = compiled(&different).unwrap_err();
    assert!(
        err.starts_with(
            "same.toml:8: route `/a/items` is the same resource as `/a/items.json` (same.toml:5)"
        ),
        "{err}"
    );
    assert!(err.contains("the suffix `.json` is optional"), "{err}");
    // Judged alike: one resource, one rule; the first spelling names it.
    let alike = different.replace("[\"y\"]", "[\"x\"]");
    let table = compiled(&alike).unwrap();
    assert_eq!(
        &*table.find("/a/items").unwrap().route.template,
        "/a/items.json"
    );
    // Case, when the upstream ignores it.
    let case = "[preset]\nname = \"c\"\n[preset.paths]\ncase = \"insensitive\"\n\
                [[route]]\npath = \"/A\"\nread = { scopes = [\"x\"] }\n\
                [[route]]\npath = \"/a\"\nread = { scopes = [\"y\"] }\n";
    assert!(
        compiled(case)
            .unwrap_err()
            .contains("letter case does not count")
    );
    let bad = "[preset]\nname = \"b\"\n[preset.paths]\noptional_suffix = \"json\"\n";
    assert!(
        compiled(bad)
            .unwrap_err()
            .contains("optional_suffix `json`")
    );
}

#[test]
fn two_presets_may_not_share_a_spelling() {
    let sources = [
        RouteSource {
            name: "a.toml".into(),
            text: "[preset]\nname = \"a\"\n[preset.paths]\ncase = \"insensitive\"\n\
                   [[route]]\npath = \"/Shop/orders\"\nread = { scopes = [\"x\"] }\n"
                .into(),
        },
        RouteSource {
            name: "b.toml".into(),
            text: "[preset]\nname = \"b\"\n[[route]]\npath = \"/shop/orders\"\nread = { scopes = [\"x\"] }\n"
                .into(),
        },
    ];
    let errors = compile(&sources, &CompileOptions::default()).unwrap_err();
    assert!(
        errors[0]
            .to_string()
            .contains("can match the same requests"),
        "{errors:?}"
    );
}

/// Status of `GET path` with a token holding `scope`, and whether the upstream saw it.
async fn get(h: &Harness, path: &str, claims: serde_json::Value) -> (StatusCode, bool) {
    let before = h.upstream.count();
    let token = h.token(claims);
    let reply = h.send(Version::H1, "GET", path, Some(&token), &[]).await;
    (reply.status, h.upstream.count() > before)
}

#[tokio::test]
async fn americommerce_decrypted_card_is_judged_by_its_own_route_in_any_case_or_slash() {
    let h = Harness::start(include_str!("../routes/americommerce.toml")).await;
    for path in [
        "/api/v1/credit_cards/1/decrypted/",
        "/api/v1/credit_cards/1/Decrypted",
        "/API/V1/CREDIT_CARDS/1/DECRYPTED/",
        "/api/v1/order_payments/9/DeCrypted",
    ] {
        // The parent's scope is not enough: `decrypt` is.
        assert_eq!(
            get(&h, path, json!({"scope": "orders"})).await,
            (StatusCode::FORBIDDEN, false),
            "{path}"
        );
        let (status, seen) = get(&h, path, json!({"scope": "decrypt"})).await;
        assert_eq!((status, seen), (StatusCode::OK, true), "{path}");
        // Forwarded as the client spelled it: the upstream reads it as the same action.
        assert_eq!(h.upstream.last().path, path);
    }
}

#[tokio::test]
async fn shopify_archived_orders_need_read_all_orders_with_or_without_the_suffix() {
    let h = Harness::new(include_str!("../routes/shopify.toml"))
        .toml("[presets.shopify]\napproved_clients = [\"app-1\"]\n")
        .start()
        .await;
    let reader = json!({"scope": "read_orders", "client_id": "app-1"});
    for path in [
        "/admin/api/2025-01/orders/archived.json",
        "/admin/api/2025-01/orders/archived",
        "/admin/api/2025-01/orders/archived/",
    ] {
        assert_eq!(
            get(&h, path, reader.clone()).await,
            (StatusCode::FORBIDDEN, false),
            "{path}"
        );
    }
    let all = json!({"scope": "read_orders read_all_orders", "client_id": "app-1"});
    assert_eq!(
        get(&h, "/admin/api/2025-01/orders/archived", all).await,
        (StatusCode::OK, true)
    );
    // The plain spelling of a suffixed route is the same resource.
    assert_eq!(
        get(&h, "/admin/api/2025-01/orders/7", reader).await,
        (StatusCode::OK, true)
    );
    assert_eq!(h.upstream.last().path, "/admin/api/2025-01/orders/7");
}

#[tokio::test]
async fn elastic_path_read_only_settings_cannot_be_written_through_a_trailing_slash() {
    let h = Harness::start(include_str!("../routes/elastic-path.toml")).await;
    let admin = h.token(json!({"token_type": "client_credentials", "role": "seller-admin"}));
    for path in [
        "/v2/settings/account-authentication-settings",
        "/v2/settings/account-authentication-settings/",
    ] {
        let before = h.upstream.count();
        let reply = h.send(Version::H1, "PUT", path, Some(&admin), &[]).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(h.upstream.count(), before, "{path} was forwarded");
    }
}

#[tokio::test]
async fn double_encoded_escapes_are_refused_unless_the_preset_allows_them() {
    let routes = "[preset]\nname = \"d\"\n[[route]]\npath = \"/files\"\nbelow = true\n\
                  read = { public = true }\n";
    let h = Harness::start(routes).await;
    for path in [
        "/files/%252e%252e/secret",
        "/files/a%252fb",
        "/files/%255cx",
        "/files/%2500",
    ] {
        let before = h.upstream.count();
        let reply = h.get(path, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(h.upstream.count(), before, "{path} was forwarded");
    }
    assert_eq!(h.get("/files/a%2520b", None).await.status, StatusCode::OK);
    let allowing = routes.replace(
        "[[route]]",
        "[preset.paths]\ndouble_encoding = \"allow\"\n[[route]]",
    );
    assert_ne!(allowing, routes);
    let h = Harness::start(&allowing).await;
    assert_eq!(
        h.get("/files/%252e%252e/x", None).await.status,
        StatusCode::OK
    );
    assert_eq!(h.upstream.last().path, "/files/%252e%252e/x");
}
