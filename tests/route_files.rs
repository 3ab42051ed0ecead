//! `scopegate routes check`: the shipped presets pass; broken files fail with file:line messages.

use std::process::Command;

fn check(paths: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["routes", "check"])
        .args(paths)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn shipped_presets_pass() {
    let (ok, text) = check(&["routes/"]);
    assert!(ok, "{text}");
    assert!(text.contains("routes/elastic-path.toml: ok"), "{text}");
}

#[test]
fn broken_files_fail_with_file_line_and_reason() {
    let cases = [
        (
            "unknown-key.toml",
            "tests/routes-broken/unknown-key.toml:7: unknown field `methods`",
        ),
        (
            "requires-nothing.toml",
            "tests/routes-broken/requires-nothing.toml:6: rule requires nothing (set `public = true` if no credentials are needed)",
        ),
        (
            "unknown-principal.toml",
            "tests/routes-broken/unknown-principal.toml:10: unknown principal `seler-admin` (did you mean `seller-admin`?)",
        ),
        (
            "overlap.toml",
            "tests/routes-broken/overlap.toml:8: route `/v2/orders/{order_id}` cannot be added: it overlaps `/v2/orders/{id}` (defined at tests/routes-broken/overlap.toml:4)",
        ),
        (
            "cycle.toml",
            "tests/routes-broken/cycle.toml: implication cycle: orders -> read_orders -> orders",
        ),
        (
            "bad-path.toml",
            "tests/routes-broken/bad-path.toml:5: path `v2/orders`: must start with '/'",
        ),
        (
            "bad-path.toml",
            "tests/routes-broken/bad-path.toml:9: path `/v2/../admin`: dot segment in path",
        ),
        (
            "public-with-scopes.toml",
            "tests/routes-broken/public-with-scopes.toml:6: a public rule cannot also require",
        ),
        (
            "no-method.toml",
            "tests/routes-broken/no-method.toml:4: route `/v2/orders` allows no method",
        ),
        ("not-toml.toml", "tests/routes-broken/not-toml.toml:1:"),
        (
            "misspelt-scope.toml",
            "tests/routes-broken/misspelt-scope.toml:10: scope `read_oders` is not in this file's vocabulary (did you mean `read_orders`?)",
        ),
        (
            "tenant-capture.toml",
            "tests/routes-broken/tenant-capture.toml:7: tenant: path `/stores/{id}/orders` has no capture `{store_id}`",
        ),
    ];
    for (file, expected) in cases {
        let path = format!("tests/routes-broken/{file}");
        let (ok, text) = check(&[&path]);
        assert!(!ok, "{file} passed the check");
        assert!(
            text.contains(expected),
            "{file}: expected `{expected}` in\n{text}"
        );
    }
}

#[test]
fn one_broken_file_fails_the_whole_set() {
    let (ok, text) = check(&["routes/", "tests/routes-broken/requires-nothing.toml"]);
    assert!(!ok);
    assert!(text.contains("1 error(s)"), "{text}");
}

#[test]
fn missing_files_are_reported() {
    let (ok, text) = check(&["tests/routes-broken/does-not-exist.toml"]);
    assert!(!ok);
    assert!(text.contains("does-not-exist.toml: cannot read"), "{text}");
}

#[test]
fn two_files_claiming_the_same_paths_fail() {
    let (ok, text) = check(&["tests/routes-broken/cross/"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("tests/routes-broken/cross/b.toml:4: route `/api/v1/{*rest}` can match the same requests as `/api/{version}/graphql.json` of preset `storefront` (tests/routes-broken/cross/a.toml:4) (give each preset its own path prefix)"),
        "{text}"
    );
}
