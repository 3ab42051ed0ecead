//! [`analyse`]: one document, one operation, every selected coordinate with what it needs.
//!
//! Order of work: limits on the raw bytes ([`super::scan`]), parse, operation selection as
//! the spec's GetOperation defines it (never "the first one"), a survey of every definition
//! (duplicate names, unknown spreads, fragment cycles, aliases), then the walk.

use std::sync::Arc;

use cynic_parser::ExecutableDocument;
use cynic_parser::common::OperationType;
use cynic_parser::executable::OperationDefinition;
use serde_json::Value;

use super::requirements::{Need, Requirements};
use super::schema::Schema;
use super::walk::{Survey, Walker};
use super::{GraphqlError, Limits, scan};
use crate::scopes::ScopeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    Query = 0,
    Mutation = 1,
    Subscription = 2,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Query => "query",
            OperationKind::Mutation => "mutation",
            OperationKind::Subscription => "subscription",
        }
    }
}

impl From<OperationType> for OperationKind {
    fn from(t: OperationType) -> Self {
        match t {
            OperationType::Query => OperationKind::Query,
            OperationType::Mutation => OperationKind::Mutation,
            OperationType::Subscription => OperationKind::Subscription,
        }
    }
}

/// What one operation of one document selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub operation: OperationKind,
    pub operation_name: Option<String>,
    /// `__schema` or `__type` selected on the query root (under any alias or fragment).
    pub introspection: bool,
    /// Every selected `Type.field` (fields reached through an interface or union listed on each
    /// concrete type), sorted, each with the union of what its occurrences need.
    pub coordinates: Vec<(Arc<str>, Need)>,
    /// The union of every coordinate's need: a held set meeting it is allowed at once.
    pub total: Need,
    /// Variables whose values decided a `node`/`nodes` GID type (part of the cache key).
    pub gid_variables: Vec<String>,
}

impl Analysis {
    /// Every coordinate `held` does not satisfy, with what it lacks; empty means allowed.
    pub fn missing(&self, held: &ScopeSet) -> Vec<(&str, Need)> {
        if self.total.missing(held).is_none() {
            return Vec::new();
        }
        self.coordinates
            .iter()
            .filter_map(|(c, need)| need.missing(held).map(|m| (&**c, m)))
            .collect()
    }

    pub fn need(&self, coordinate: &str) -> Option<&Need> {
        self.coordinates
            .binary_search_by(|(c, _)| (**c).cmp(coordinate))
            .ok()
            .map(|i| &self.coordinates[i].1)
    }

    /// The scopes named by any missing coordinate (for `WWW-Authenticate: ... scope="..."`):
    /// all-of scopes lacked, plus every member of each unmet any-of group.
    pub fn missing_scopes(&self, held: &ScopeSet) -> ScopeSet {
        let mut out = ScopeSet::EMPTY;
        for (_, m) in self.missing(held) {
            out.union_with(&m.all);
            m.any.iter().for_each(|g| out.union_with(g));
        }
        out
    }
}

/// Judges `document`'s operation `operation_name` against `schema` and `requirements`.
/// `variables` are read only for `node(id:)`/`nodes(ids:)` GIDs.
pub fn analyse(
    schema: &Schema,
    requirements: &Requirements,
    document: &str,
    operation_name: Option<&str>,
    variables: Option<&Value>,
    limits: &Limits,
) -> Result<Analysis, GraphqlError> {
    if requirements.generation != schema.generation() {
        return Err(GraphqlError::Invalid(
            "requirements were compiled against another schema".into(),
        ));
    }
    scan::scan(document, limits)?;
    let doc =
        cynic_parser::parse_executable_document(document).map_err(|e| GraphqlError::Syntax {
            offset: e.span().map_or(0, |s| s.start),
            message: e.to_string(),
        })?;
    let op = select_operation(&doc, operation_name)?;
    let survey = Survey::new(&doc, limits)?;
    let kind = OperationKind::from(op.operation_type());
    let root = schema
        .root_id(kind)
        .ok_or(GraphqlError::NoRoot(kind.as_str()))?;
    let mut walker = Walker::new(schema, requirements, &survey, variables, limits, op);
    walker.operation(root, op.selection_set())?;
    let (coordinates, total, introspection, gid_variables) = walker.finish();
    Ok(Analysis {
        operation: kind,
        operation_name: op.name().map(str::to_owned),
        introspection,
        coordinates,
        total,
        gid_variables,
    })
}

/// GetOperation: the named operation, or the only one. Duplicate names and an anonymous
/// operation beside others make the document invalid (the upstream could pick differently).
fn select_operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Result<OperationDefinition<'a>, GraphqlError> {
    let ops: Vec<OperationDefinition<'a>> = doc.operations().collect();
    if ops.len() > 1 && ops.iter().any(|o| o.name().is_none()) {
        return Err(GraphqlError::Operation(
            "an anonymous operation must be the only one in its document".into(),
        ));
    }
    for (i, a) in ops.iter().enumerate() {
        if ops[..i].iter().any(|b| b.name() == a.name()) {
            let dup = a.name().unwrap_or_default();
            return Err(GraphqlError::Operation(format!(
                "operation {dup} defined twice"
            )));
        }
    }
    match name {
        Some(n) => ops
            .into_iter()
            .find(|o| o.name() == Some(n))
            .ok_or_else(|| GraphqlError::Operation(format!("no operation named {n}"))),
        None if ops.len() == 1 => Ok(ops[0]),
        None if ops.is_empty() => Err(GraphqlError::Operation(
            "the document has no operation".into(),
        )),
        None => Err(GraphqlError::Operation(
            "several operations and no operationName".into(),
        )),
    }
}
