//! Analysis cases: each one fails if its bypass works.

use super::*;

#[test]
fn aliases_are_seen_through() {
    let f = admin();
    let doc = "{ catalogue: orders(first: 1) { items: nodes { key: id } } }";
    assert_eq!(
        f.refused_for(doc, &["read_products"]),
        [
            "Order.id: read_orders",
            "OrderConnection.nodes: read_orders",
            "QueryRoot.orders: read_orders"
        ]
    );
    assert!(f.refused_for(doc, &["read_orders"]).is_empty());
}

#[test]
fn named_inline_and_nested_fragments_are_flattened() {
    let f = admin();
    let doc = "query { ...Outer }
        fragment Outer on QueryRoot { ... on QueryRoot { ...Inner } ... { shop { id } } }
        fragment Inner on QueryRoot { customers(first: 1) { nodes { ...C } } }
        fragment C on Customer { email }";
    assert_eq!(
        f.refused_for(doc, &["read_products"]),
        [
            "Customer.email: read_customers",
            "CustomerConnection.nodes: read_customers",
            "QueryRoot.customers: read_customers"
        ]
    );
    assert!(f.refused_for(doc, &["read_customers"]).is_empty());
}

#[test]
fn a_fragment_cycle_is_refused() {
    let f = admin();
    let doc = "{ ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { ...A }";
    let e = f.run(doc, None, None).unwrap_err();
    assert!(e.to_string().contains("fragment cycle"), "{e}");
    let deep = "{ products { nodes { ...P } } } fragment P on Product { variants { nodes { product { ...P } } } }";
    assert!(
        f.run(deep, None, None)
            .unwrap_err()
            .to_string()
            .contains("fragment cycle")
    );
    assert!(matches!(
        f.run("{ ...Nope }", None, None),
        Err(GraphqlError::Unknown {
            what: "fragment",
            ..
        })
    ));
}

#[test]
fn nested_traversal_into_another_familys_type_needs_its_scope() {
    let f = admin();
    let doc = "{ products(first: 5) { nodes { id title variants(first: 2) { edges { node { sku } } } } }
        customers(first: 1) { nodes { displayName orders(first: 3) { edges { node { name } } } } } }";
    let refused = f.refused_for(doc, &["read_products", "read_customers"]);
    // Customer.orders returns OrderConnection, which pages over Order: it needs read_orders too.
    assert_eq!(
        refused,
        [
            "Customer.orders: read_orders",
            "Order.name: read_orders",
            "OrderConnection.edges: read_orders",
            "OrderEdge.node: read_orders"
        ]
    );
    assert!(
        f.refused_for(doc, &["read_products", "read_customers", "read_orders"])
            .is_empty()
    );
    let line_items =
        "{ orders { nodes { lineItems { nodes { variant { product { title } } } } } } }";
    assert_eq!(
        f.refused_for(line_items, &["read_orders"]),
        [
            "LineItem.variant: read_products",
            "Product.title: read_products",
            "ProductVariant.product: read_products"
        ]
    );
}

#[test]
fn an_interface_needs_every_type_it_can_reach_unless_narrowed() {
    let f = admin();
    let wide = f.refused_for(
        "query($id: ID!) { node(id: $id) { id } }",
        &["read_products", "read_orders", "read_customers"],
    );
    assert!(
        wide.contains(&"QueryRoot.node: underivable".to_owned()),
        "{wide:?}"
    );
    let narrowed = "query($id: ID!) { node(id: $id) { __typename ... on Product { title } } }";
    assert!(f.refused_for(narrowed, &["read_products"]).is_empty());
    assert_eq!(
        f.refused_for(narrowed, &["read_orders"]),
        [
            "Product.title: read_products",
            "QueryRoot.node: read_products"
        ]
    );
    let via_fragment = "{ node(id: \"1\") { ...O } } fragment O on Order { name }";
    assert_eq!(
        f.refused_for(via_fragment, &["read_products"]),
        ["Order.name: read_orders", "QueryRoot.node: read_orders"]
    );
}

#[test]
fn node_and_nodes_are_judged_by_the_gid_type_in_literals_and_variables() {
    let f = admin();
    let literal = "{ node(id: \"gid://shopify/Order/450789469\") { id } }";
    assert_eq!(
        f.refused_for(literal, &["read_products"]),
        ["Order.id: read_orders", "QueryRoot.node: read_orders"]
    );
    assert!(f.refused_for(literal, &["read_orders"]).is_empty());
    // Selecting only Product fields does not hide that the GID names an order.
    let disguised = "{ node(id: \"gid://shopify/Order/1\") { ... on Product { title } } }";
    assert_eq!(
        f.refused_for(disguised, &["read_products"]),
        ["QueryRoot.node: read_orders"]
    );
    let list = "{ nodes(ids: [\"gid://shopify/Product/1\", \"gid://shopify/Customer/2\"]) { id } }";
    assert_eq!(
        f.refused_for(list, &["read_products"]),
        [
            "Customer.id: read_customers",
            "QueryRoot.nodes: read_customers"
        ]
    );
    let doc = "query($ids: [ID!]!) { nodes(ids: $ids) { id } }";
    let vars = json!({"ids": ["gid://shopify/Customer/2"]});
    let a = f.run(doc, None, Some(&vars)).unwrap();
    assert_eq!(a.gid_variables, ["ids"]);
    assert_eq!(
        f.refused(&a, &["read_products"]),
        [
            "Customer.id: read_customers",
            "QueryRoot.nodes: read_customers"
        ]
    );
    let defaulted = "query($id: ID! = \"gid://shopify/Order/1\") { node(id: $id) { ... on Product { title } } }";
    assert_eq!(
        f.refused_for(defaulted, &["read_products"]),
        ["QueryRoot.node: read_orders"]
    );
    let bad = json!({"ids": ["gid://shopify/PageInfo/1"]});
    assert!(matches!(
        f.run(doc, None, Some(&bad)),
        Err(GraphqlError::Invalid(_))
    ));
    // An escaped GID is either decoded (an order) or names no type (refused): never a product.
    let escaped = "{ node(id: \"gid://shopify/Ord\\u0065r/1\") { ... on Product { id } } }";
    assert!(
        f.run(escaped, None, None)
            .map_or(true, |a| !f.refused(&a, &["read_products"]).is_empty())
    );
    let unknown = "{ node(id: \"gid://shopify/DiscountCode/1\") { id } }";
    assert!(matches!(
        f.run(unknown, None, None),
        Err(GraphqlError::Invalid(_))
    ));
}

#[test]
fn operation_selection_follows_the_spec() {
    let f = admin();
    let anonymous = f.run("{ shop { name } }", None, None).unwrap();
    assert_eq!(
        (anonymous.operation, anonymous.operation_name.as_deref()),
        (OperationKind::Query, None)
    );
    let two = "query A { shop { name } } query B { orders { nodes { id } } }";
    let b = f.run(two, Some("B"), None).unwrap();
    assert_eq!(
        f.refused(&b, &[]),
        [
            "Order.id: read_orders",
            "OrderConnection.nodes: read_orders",
            "QueryRoot.orders: read_orders"
        ]
    );
    assert!(
        f.refused(&f.run(two, Some("A"), None).unwrap(), &[])
            .is_empty()
    );
    let op_err = |doc, name| matches!(f.run(doc, name, None), Err(GraphqlError::Operation(_)));
    assert!(op_err(two, None), "several and no name");
    assert!(op_err(two, Some("C")), "unknown name");
    assert!(
        op_err("{ shop { name } }", Some("A")),
        "a name for an anonymous operation"
    );
    assert!(
        op_err("{ shop { name } } query A { shop { name } }", Some("A")),
        "anonymous beside others"
    );
    assert!(
        op_err(
            "query A { shop { name } } query A { orders { nodes { id } } }",
            Some("A")
        ),
        "duplicate"
    );
    assert!(op_err("fragment F on Shop { name }", None), "no operation");
    let e = f
        .run("subscription { shop { name } }", None, None)
        .unwrap_err();
    assert_eq!(e, GraphqlError::NoRoot("subscription"));
}

#[test]
fn skip_and_include_are_judged_as_if_included() {
    let f = admin();
    let doc = "query($no: Boolean = false) { shop { name }
        orders @skip(if: true) { nodes { id } }
        ... @include(if: $no) { customers { nodes { id } } } }";
    let refused = f.refused_for(doc, &[]);
    assert!(
        refused.contains(&"QueryRoot.orders: read_orders".to_owned()),
        "{refused:?}"
    );
    assert!(
        refused.contains(&"QueryRoot.customers: read_customers".to_owned()),
        "{refused:?}"
    );
}

#[test]
fn introspection_is_detected_structurally() {
    let f = admin();
    for doc in [
        "{ __schema { types { name } } }",
        "{ hidden: __schema { queryType { name } } }",
        "{ ...F } fragment F on QueryRoot { __type(name: \"Order\") { fields { name } } }",
        "{ ... on QueryRoot { t: __type(name: \"Order\") { name } } }",
    ] {
        let a = f.run(doc, None, None).unwrap();
        assert!(a.introspection, "{doc}");
        assert!(a.missing(&f.held(&[])).is_empty(), "{doc}");
    }
    let plain = f
        .run("{ __typename shop { __typename name } }", None, None)
        .unwrap();
    assert!(!plain.introspection);
    assert!(
        f.refused(&plain, &[]).is_empty(),
        "__typename is always allowed; Shop is public"
    );
    let nested = f
        .run("{ shop { __schema { types { name } } } }", None, None)
        .unwrap_err();
    assert!(matches!(
        nested,
        GraphqlError::Unknown { what: "field", .. }
    ));
}

#[test]
fn unknown_fields_arguments_and_types_are_refused_by_name() {
    let f = admin();
    let e = f
        .run("{ products { nodes { secretCost } } }", None, None)
        .unwrap_err();
    assert_eq!(
        e,
        GraphqlError::Unknown {
            what: "field",
            name: "Product.secretCost".into()
        }
    );
    let e = f
        .run("{ order(id: \"1\", withDeleted: true) { id } }", None, None)
        .unwrap_err();
    assert_eq!(
        e,
        GraphqlError::Unknown {
            what: "argument",
            name: "QueryRoot.order(withDeleted:)".into()
        }
    );
    let e = f
        .run("{ node(id: \"1\") { ... on Secret { id } } }", None, None)
        .unwrap_err();
    assert_eq!(
        e,
        GraphqlError::Unknown {
            what: "type",
            name: "Secret".into()
        }
    );
    assert!(matches!(
        f.run("{ shop { ", None, None),
        Err(GraphqlError::Syntax { .. })
    ));
}

#[test]
fn a_mutation_root_field_needs_its_write_scope() {
    let f = admin();
    let doc = "mutation { productCreate(product: {title: \"Hat\"}) { product { id title } userErrors { message } } }";
    let a = f.run(doc, None, None).unwrap();
    assert_eq!(a.operation, OperationKind::Mutation);
    assert_eq!(
        f.refused(&a, &["read_products"]),
        ["Mutation.productCreate: write_products"]
    );
    assert!(
        f.refused(&a, &["write_products"]).is_empty(),
        "write implies read"
    );
    let untabled = "mutation { orderUpdate(input: {id: \"1\"}) { order { id } } }";
    assert_eq!(
        f.refused_for(untabled, &["write_orders", "read_orders"]),
        ["Mutation.orderUpdate: underivable"]
    );
    assert_eq!(
        f.run(doc, None, None)
            .unwrap()
            .need("Mutation.productCreate")
            .map(|n| n.underivable),
        Some(false)
    );
}
