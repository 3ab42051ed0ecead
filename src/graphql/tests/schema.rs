//! Schemas from SDL and introspection JSON; requirement tables and their check report.

use std::collections::BTreeMap;

use super::*;

const SMALL_SDL: &str = "
schema { query: Q }
interface Node { id: ID! }
type Q { node(id: ID!): Node  item(id: ID!, locale: String): Item  search: [Result!]! }
type Item implements Node { id: ID! name: String }
type Other implements Node { id: ID! }
union Result = Item | Other
enum Color { RED }
";

const SMALL_JSON: &str = r#"{"__schema": {
  "queryType": {"name": "Q"}, "mutationType": null, "subscriptionType": null,
  "types": [
    {"kind": "INTERFACE", "name": "Node", "fields": [
      {"name": "id", "args": [], "type": {"kind": "NON_NULL", "name": null, "ofType": {"kind": "SCALAR", "name": "ID", "ofType": null}}}],
      "interfaces": null, "possibleTypes": [{"name": "Item"}, {"name": "Other"}]},
    {"kind": "OBJECT", "name": "Q", "fields": [
      {"name": "node", "args": [{"name": "id"}], "type": {"kind": "INTERFACE", "name": "Node", "ofType": null}},
      {"name": "item", "args": [{"name": "id"}, {"name": "locale"}], "type": {"kind": "OBJECT", "name": "Item", "ofType": null}},
      {"name": "search", "args": [], "type": {"kind": "NON_NULL", "name": null, "ofType": {"kind": "LIST", "name": null,
        "ofType": {"kind": "NON_NULL", "name": null, "ofType": {"kind": "UNION", "name": "Result", "ofType": null}}}}}],
      "interfaces": []},
    {"kind": "OBJECT", "name": "Item", "fields": [
      {"name": "id", "args": [], "type": {"kind": "NON_NULL", "name": null, "ofType": {"kind": "SCALAR", "name": "ID", "ofType": null}}},
      {"name": "name", "args": [], "type": {"kind": "SCALAR", "name": "String", "ofType": null}}],
      "interfaces": [{"name": "Node"}]},
    {"kind": "OBJECT", "name": "Other", "fields": [
      {"name": "id", "args": [], "type": {"kind": "NON_NULL", "name": null, "ofType": {"kind": "SCALAR", "name": "ID", "ofType": null}}}],
      "interfaces": [{"name": "Node"}]},
    {"kind": "UNION", "name": "Result", "fields": null, "possibleTypes": [{"name": "Item"}, {"name": "Other"}]},
    {"kind": "ENUM", "name": "Color", "fields": null},
    {"kind": "SCALAR", "name": "ID"}, {"kind": "SCALAR", "name": "String"}, {"kind": "SCALAR", "name": "Boolean"},
    {"kind": "OBJECT", "name": "__Schema", "fields": []}
  ]}}"#;

#[test]
fn sdl_and_introspection_json_give_the_same_schema() {
    let sdl = Schema::parse("small.graphql", SMALL_SDL).unwrap();
    let json = Schema::parse("small.json", SMALL_JSON).unwrap();
    assert_eq!(sdl, json);
    assert_ne!(sdl.generation(), json.generation());
    let wrapped = format!("{{\"data\": {SMALL_JSON}}}");
    assert_eq!(
        Schema::from_introspection("wrapped.json", &wrapped).unwrap(),
        sdl
    );
    assert_eq!(sdl.possible_types("Node"), ["Item", "Other"]);
    assert_eq!(sdl.possible_types("Result"), ["Item", "Other"]);
    assert_eq!(sdl.field_type("Q", "search"), Some("Result"));
    assert_eq!(sdl.field_args("Q", "item").unwrap(), ["id", "locale"]);
    assert_eq!(sdl.root(OperationKind::Query), Some("Q"));
    assert_eq!(sdl.root(OperationKind::Mutation), None);
    assert_eq!(sdl.kind("Color"), Some(TypeKind::Enum));
}

#[test]
fn schema_errors_name_the_file_and_line() {
    let e = Schema::from_sdl(
        "bad.graphql",
        "type Query {\n  a: Int\n}\ntype B {\n  c: Missing\n}\n",
    )
    .unwrap_err();
    assert!(
        matches!(&e, GraphqlError::Schema { file, line: 4, .. } if file == "bad.graphql"),
        "{e}"
    );
    assert!(
        e.to_string().contains("B.c returns unknown type Missing"),
        "{e}"
    );
    let e = Schema::from_sdl("syntax.graphql", "type Query {\n  a: Int\n  b(: Int\n}").unwrap_err();
    assert!(matches!(e, GraphqlError::Schema { line: 3, .. }), "{e}");
    let e = Schema::parse("bad.json", "{\n \"__schema\": [\n}").unwrap_err();
    assert!(matches!(e, GraphqlError::Schema { line: 3, .. }), "{e}");
    let e = Schema::from_sdl("noquery.graphql", "type A { b: Int }").unwrap_err();
    assert!(e.to_string().contains("no query root"), "{e}");
}

#[test]
fn the_three_demo_schemas_compile_with_the_fields_they_must_cover() {
    let admin = "shop product products productVariants collection collections order orders customer \
        customers node nodes | productCreate productUpdate productDelete orderUpdate customerCreate \
        customerUpdate customerDelete";
    let storefront = "shop products product collections cart customer | cartCreate cartLinesAdd";
    let account = "customer order | customerUpdate";
    for (file, fields) in [
        ("shopify-admin.graphql", admin),
        ("shopify-storefront.graphql", storefront),
        ("shopify-customer-account.graphql", account),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("routes/graphql")
            .join(file);
        let schema = Schema::load(&path).unwrap();
        let (queries, mutations) = fields.split_once('|').unwrap();
        for (kind, names) in [
            (OperationKind::Query, queries),
            (OperationKind::Mutation, mutations),
        ] {
            let root = schema.root(kind).unwrap().to_owned();
            for name in names.split_whitespace() {
                assert!(
                    schema.field_type(&root, name).is_some(),
                    "{file}: {root}.{name}"
                );
            }
        }
    }
    let admin = Schema::from_sdl("shopify-admin.graphql", ADMIN).unwrap();
    for (t, f) in [
        ("Product", "variants"),
        ("Product", "collections"),
        ("Collection", "products"),
        ("Order", "customer"),
        ("Order", "lineItems"),
        ("Customer", "orders"),
    ] {
        assert!(admin.field_type(t, f).is_some(), "{t}.{f}");
    }
    assert!(admin.possible_types("Node").contains(&"Order"));
    let storefront = include_str!("../../../routes/graphql/shopify-storefront.graphql");
    let storefront = Schema::from_sdl("shopify-storefront.graphql", storefront).unwrap();
    assert_eq!(
        storefront.field_args("QueryRoot", "customer").unwrap(),
        ["customerAccessToken"]
    );
}

#[test]
fn rule_text_takes_shopifys_shapes() {
    let mut v = Vocabulary::default();
    let rule = |v: &mut Vocabulary, text: &str| RuleSpec::Text(text.into()).compile("e", v);
    let one = rule(&mut v, "read_orders").unwrap();
    let either = rule(&mut v, "read_orders or read_marketplace_orders").unwrap();
    let mixed = rule(
        &mut v,
        "write_orders as well as any of read_customers, write_customers",
    )
    .unwrap();
    let bit = |v: &Vocabulary, n: &str| v.bit(n).unwrap();
    assert!(one.all.contains(bit(&v, "read_orders")) && one.any.is_none());
    assert!(either.all.is_empty());
    assert!(
        either
            .any
            .unwrap()
            .contains(bit(&v, "read_marketplace_orders"))
    );
    assert!(mixed.all.contains(bit(&v, "write_orders")));
    assert!(mixed.any.unwrap().contains(bit(&v, "write_customers")));
    assert!(rule(&mut v, "read orders, maybe").is_err());
    let table: RuleSpec =
        serde_json::from_str(r#"{"scopes": ["a"], "any_scopes": ["b", "c"]}"#).unwrap();
    let compiled = table.compile("t", &mut v).unwrap();
    assert!(compiled.all.contains(bit(&v, "a")) && compiled.any.unwrap().contains(bit(&v, "c")));
}

#[test]
fn check_report_lists_underivable_roots_and_unknown_entries_with_suggestions() {
    let schema = Schema::from_sdl("shopify-admin.graphql", ADMIN).unwrap();
    let mut vocab = Vocabulary::default();
    let types = table(&[("Prodcut", "read_products"), ("Order", "read_orders")]);
    let mut fields = table(&[
        ("Mutation.productCreat", "write_products"),
        ("Mutation.orderUpdate", "write_orders"),
    ]);
    fields.insert("Zzzz.field".into(), RuleSpec::All(vec!["x".into()]));
    let req = Requirements::compile(&schema, &mut vocab, &types, &fields).unwrap();
    let report = req.report();
    let unknown: BTreeMap<&str, Option<&str>> = report
        .unknown_entries
        .iter()
        .map(|u| (u.entry.as_str(), u.suggestion.as_deref()))
        .collect();
    assert_eq!(unknown["Prodcut"], Some("Product"));
    assert_eq!(
        unknown["Mutation.productCreat"],
        Some("Mutation.productCreate")
    );
    assert_eq!(unknown["Zzzz.field"], None);
    let roots = &report.underivable_roots;
    assert!(
        roots.contains(&"QueryRoot.products".to_owned()),
        "{roots:?}"
    );
    assert!(roots.contains(&"Mutation.productCreate".to_owned()));
    assert!(roots.contains(&"QueryRoot.node".to_owned()));
    assert!(
        !roots.contains(&"QueryRoot.orders".to_owned()),
        "OrderConnection inherits Order"
    );
    assert!(!roots.contains(&"QueryRoot.order".to_owned()));
    assert!(!roots.contains(&"Mutation.orderUpdate".to_owned()));
    let shown = report
        .unknown_entries
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    assert!(shown.contains(&"Prodcut: not in the schema (did you mean Product?)".to_owned()));
}

#[test]
fn requirements_refuse_a_schema_they_were_not_compiled_for() {
    let f = admin();
    let other = Schema::from_sdl("shopify-admin.graphql", ADMIN).unwrap();
    let e = analyse(
        &other,
        &f.req,
        "{ shop { id } }",
        None,
        None,
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, GraphqlError::Invalid(_)));
}
