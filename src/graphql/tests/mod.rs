//! Tests of the GraphQL analysis over the shipped Admin demo schema: helpers here, cases by
//! topic in the submodules.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::scopes::{ScopeSet, Vocabulary};

mod analysis;
mod limits;
mod schema;

const ADMIN: &str = include_str!("../../../routes/graphql/shopify-admin.graphql");

pub(super) struct Fixture {
    pub schema: Schema,
    pub req: Requirements,
    pub vocab: Vocabulary,
}

fn table(entries: &[(&str, &str)]) -> BTreeMap<String, RuleSpec> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), RuleSpec::Text((*v).to_owned())))
        .collect()
}

/// The Admin demo schema with the Shopify type table and write scopes on the mutations.
pub(super) fn admin() -> Fixture {
    let schema = Schema::from_sdl("shopify-admin.graphql", ADMIN).unwrap();
    let mut vocab = Vocabulary::default();
    let mut types = table(&[
        ("Product", "read_products"),
        ("ProductVariant", "read_products"),
        ("Collection", "read_products"),
        ("Order", "read_orders"),
        ("LineItem", "read_orders"),
        ("Customer", "read_customers"),
    ]);
    types.insert("Shop".into(), RuleSpec::All(Vec::new()));
    let fields = table(&[
        ("Mutation.productCreate", "write_products"),
        ("Mutation.productUpdate", "write_products"),
        ("Mutation.productDelete", "write_products"),
        ("Mutation.customerCreate", "write_customers"),
        ("Mutation.customerUpdate", "write_customers"),
        ("Mutation.customerDelete", "write_customers"),
    ]);
    let req = Requirements::compile(&schema, &mut vocab, &types, &fields).unwrap();
    let mut edges = Vec::new();
    for family in ["products", "orders", "customers"] {
        let write = vocab.intern(&format!("write_{family}")).unwrap();
        let read = vocab.intern(&format!("read_{family}")).unwrap();
        edges.push((write, read));
    }
    vocab.close(&edges).unwrap();
    Fixture { schema, req, vocab }
}

impl Fixture {
    pub fn run(
        &self,
        doc: &str,
        op: Option<&str>,
        vars: Option<&Value>,
    ) -> Result<Analysis, GraphqlError> {
        analyse(&self.schema, &self.req, doc, op, vars, &Limits::default())
    }

    pub fn with_limits(&self, doc: &str, limits: &Limits) -> Result<Analysis, GraphqlError> {
        analyse(&self.schema, &self.req, doc, None, None, limits)
    }

    pub fn held(&self, scopes: &[&str]) -> ScopeSet {
        self.vocab.grant(scopes.iter().copied())
    }

    /// The coordinates `scopes` do not cover, each with the scope names it lacks.
    pub fn refused(&self, analysis: &Analysis, scopes: &[&str]) -> Vec<String> {
        let held = self.held(scopes);
        analysis
            .missing(&held)
            .into_iter()
            .map(|(c, need)| {
                let mut names = ScopeSet::EMPTY;
                names.union_with(&need.all);
                need.any.iter().for_each(|g| names.union_with(g));
                let mut parts = vec![self.vocab.describe(&names)];
                if need.underivable {
                    parts.push("underivable".into());
                }
                parts.retain(|p| !p.is_empty());
                format!("{c}: {}", parts.join(" "))
            })
            .collect()
    }

    /// Analyse `doc` and list what `scopes` lack.
    pub fn refused_for(&self, doc: &str, scopes: &[&str]) -> Vec<String> {
        let a = self.run(doc, None, None).unwrap();
        self.refused(&a, scopes)
    }
}

pub(super) fn limit_of(e: GraphqlError) -> &'static str {
    match e {
        GraphqlError::Limit { limit, .. } => limit,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn cache_answers_a_repeated_document_with_the_same_analysis() {
    let f = admin();
    let cache = AnalysisCache::new(16);
    let doc = "{ products(first: 1) { nodes { id title } } }";
    let l = Limits::default();
    let first = cache
        .analyse(&f.schema, &f.req, doc, None, None, &l)
        .unwrap();
    let again = cache
        .analyse(&f.schema, &f.req, doc, None, None, &l)
        .unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    let other = cache
        .analyse(
            &f.schema,
            &f.req,
            "{ orders(first: 1) { nodes { id } } }",
            None,
            None,
            &l,
        )
        .unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!(cache.len(), 2);
}

#[test]
fn cache_keys_node_analyses_by_the_gid_variables() {
    let f = admin();
    let cache = AnalysisCache::new(16);
    let doc = "query($id: ID!) { node(id: $id) { id } }";
    let l = Limits::default();
    let product = json!({"id": "gid://shopify/Product/1"});
    let order = json!({"id": "gid://shopify/Order/1"});
    let a = cache
        .analyse(&f.schema, &f.req, doc, None, Some(&product), &l)
        .unwrap();
    let b = cache
        .analyse(&f.schema, &f.req, doc, None, Some(&order), &l)
        .unwrap();
    let a2 = cache
        .analyse(&f.schema, &f.req, doc, None, Some(&product), &l)
        .unwrap();
    assert!(Arc::ptr_eq(&a, &a2));
    assert!(f.refused(&a, &["read_products"]).is_empty());
    assert_eq!(
        f.refused(&b, &["read_products"]),
        ["Order.id: read_orders", "QueryRoot.node: read_orders"]
    );
}

#[test]
fn cache_stays_within_its_capacity() {
    let f = admin();
    let cache = AnalysisCache::new(8);
    for i in 0..50 {
        let doc = format!("{{ products(first: {i}) {{ nodes {{ id }} }} }}");
        cache
            .analyse(&f.schema, &f.req, &doc, None, None, &Limits::default())
            .unwrap();
    }
    assert!(cache.len() <= 8, "{}", cache.len());
}

#[test]
fn the_bench_query_is_valid_and_allowed_for_the_three_read_scopes() {
    let f = admin();
    let doc = include_str!("../../../tests/benches/graphql/admin-products-orders.graphql");
    assert!(doc.len() > 1900, "{}", doc.len());
    let a = f.run(doc, None, None).unwrap();
    assert!(
        f.refused(&a, &["read_products", "read_orders", "read_customers"])
            .is_empty()
    );
    assert!(
        f.refused(&a, &["read_products", "read_orders"])
            .iter()
            .any(|r| r.starts_with("Order.customer"))
    );
}

#[test]
fn cache_confirms_a_hit_by_the_variables_its_analysis_read() {
    let f = admin();
    let cache = AnalysisCache::new(16);
    let l = Limits::default();
    // $b is read only when $a names an order (whose customer is judged by $b's GID).
    let doc = "query($a: ID!, $b: ID!, $c: ID!) { node(id: $a) { ... on Order { id } } n2: node(id: $b) { id } n3: node(id: $c) { id } }";
    let run = |v: Value| {
        cache
            .analyse(&f.schema, &f.req, doc, None, Some(&v), &l)
            .unwrap()
    };
    let p = "gid://shopify/Product/1";
    let o = "gid://shopify/Order/1";
    let first = run(json!({"a": p, "b": p, "c": p}));
    assert!(f.refused(&first, &["read_products"]).is_empty());
    let changed = run(json!({"a": p, "b": p, "c": o}));
    assert!(
        !f.refused(&changed, &["read_products"]).is_empty(),
        "c names an order"
    );
}
