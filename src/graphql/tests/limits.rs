//! Each limit, exceeded by a document just over it, is named in the error.

use super::*;

fn tight(change: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    change(&mut l);
    l
}

#[test]
fn body_tokens_and_recursion_are_bounded_before_parsing() {
    let f = admin();
    let doc = "{ shop { name } }";
    assert_eq!(
        limit_of(
            f.with_limits(doc, &tight(|l| l.max_body_bytes = 10))
                .unwrap_err()
        ),
        "max_body_bytes"
    );
    assert_eq!(
        limit_of(
            f.with_limits(doc, &tight(|l| l.max_tokens = 5))
                .unwrap_err()
        ),
        "max_tokens"
    );
    assert!(f.with_limits(doc, &tight(|l| l.max_tokens = 6)).is_ok());
    let deep = format!(
        "{{ shop(x: {}1{}) {{ name }} }}",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(
        limit_of(f.with_limits(&deep, &Limits::default()).unwrap_err()),
        "max_recursion"
    );
    let unclosed = "{".repeat(100_000);
    let big = tight(|l| l.max_body_bytes = 1 << 20);
    assert_eq!(
        limit_of(f.with_limits(&unclosed, &big).unwrap_err()),
        "max_recursion"
    );
}

#[test]
fn depth_counts_with_fragments_flattened() {
    let f = admin();
    // Depth 5 through two fragments: products > nodes > variants > nodes > sku.
    let doc = "{ products { ...A } } fragment A on ProductConnection { nodes { ...B } }
        fragment B on Product { variants { nodes { sku } } }";
    assert!(f.with_limits(doc, &tight(|l| l.max_depth = 5)).is_ok());
    assert_eq!(
        limit_of(f.with_limits(doc, &tight(|l| l.max_depth = 4)).unwrap_err()),
        "max_depth"
    );
}

#[test]
fn aliases_and_root_fields_are_counted() {
    let f = admin();
    let doc = "{ a: shop { name } b: shop { name } c: shop { n: name } }";
    assert_eq!(
        limit_of(
            f.with_limits(doc, &tight(|l| l.max_aliases = 3))
                .unwrap_err()
        ),
        "max_aliases"
    );
    assert!(f.with_limits(doc, &tight(|l| l.max_aliases = 4)).is_ok());
    let roots = "{ ...R ...R } fragment R on QueryRoot { shop { name } __typename }";
    assert_eq!(
        limit_of(
            f.with_limits(roots, &tight(|l| l.max_root_fields = 3))
                .unwrap_err()
        ),
        "max_root_fields"
    );
    assert!(
        f.with_limits(roots, &tight(|l| l.max_root_fields = 4))
            .is_ok()
    );
}

#[test]
fn fragment_fan_out_stops_early() {
    let f = admin();
    // Ten levels of ten spreads each would be 10^10 expansions.
    let mut doc = String::from("{ shop { ...F0 } }\n");
    for i in 0..10 {
        let spreads = format!("...F{} ", i + 1).repeat(10);
        doc.push_str(&format!("fragment F{i} on Shop {{ {spreads} }}\n"));
    }
    doc.push_str("fragment F10 on Shop { name }\n");
    let started = std::time::Instant::now();
    let e = f.with_limits(&doc, &Limits::default()).unwrap_err();
    assert_eq!(limit_of(e), "max_fragment_spreads");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn selections_and_batches_are_bounded() {
    let f = admin();
    let doc = "{ shop { name email myshopifyDomain currencyCode } }";
    assert_eq!(
        limit_of(
            f.with_limits(doc, &tight(|l| l.max_selections = 4))
                .unwrap_err()
        ),
        "max_selections"
    );
    assert!(f.with_limits(doc, &tight(|l| l.max_selections = 5)).is_ok());
    let l = Limits::default();
    assert!(l.check_batch(l.max_batch).is_ok());
    assert_eq!(
        limit_of(l.check_batch(l.max_batch + 1).unwrap_err()),
        "max_batch"
    );
}
