//! GraphQL documents judged per field: a [`Schema`] compiled once from SDL or introspection JSON,
//! [`Requirements`] compiled from per-type and per-field-coordinate scope tables, and
//! [`analyse`], which selects the operation exactly as the GraphQL spec does, flattens fragments,
//! sees through aliases and directives, and lists every selected coordinate with what it needs.
//! [`AnalysisCache`] makes a repeated document cost a hash and a lookup.
//!
//! Fail closed: a root field whose requirement cannot be derived is listed as underivable and
//! [`Analysis::missing`] always reports it. Every [`Limits`] bound is checked before or while
//! the document is walked, so hostile documents cost bounded work.
//!
//! Parsing uses `cynic-parser` (an LR parser with an arena AST: no recursion to overflow); the
//! token and nesting limits it lacks are enforced by [`scan`] before it runs.

mod analyse;
mod cache;
mod requirements;
pub mod scan;
mod schema;
mod survey;
mod walk;

#[cfg(test)]
mod tests;

pub use analyse::{Analysis, OperationKind, analyse};
pub use cache::AnalysisCache;
pub use requirements::{CheckReport, Need, Requirements, Rule, RuleSpec, UnknownEntry};
pub use schema::{Schema, TypeKind};

/// Why a schema, a table or a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphqlError {
    /// A schema file could not be read or compiled (`line` 0: no line applies).
    #[error("{file}:{line}: {message}")]
    Schema {
        file: String,
        line: usize,
        message: String,
    },
    /// A requirement table entry could not be compiled.
    #[error("requirement {entry}: {message}")]
    Table { entry: String, message: String },
    /// The document is not syntactically GraphQL.
    #[error("syntax error at byte {offset}: {message}")]
    Syntax { offset: usize, message: String },
    /// A configured limit was exceeded; `limit` is its name in [`Limits`].
    #[error("limit {limit} exceeded ({max})")]
    Limit { limit: &'static str, max: usize },
    /// No operation, several and no name, an unknown name, or a duplicate name.
    #[error("operation: {0}")]
    Operation(String),
    /// The operation type has no root in the schema (e.g. a mutation on a read-only API).
    #[error("the schema has no {0} root")]
    NoRoot(&'static str),
    /// A field, argument, type or fragment the schema or document does not define.
    #[error("unknown {what} {name}")]
    Unknown { what: &'static str, name: String },
    /// The document is valid GraphQL but cannot be judged (e.g. a GID naming a type the field
    /// cannot return).
    #[error("{0}")]
    Invalid(String),
}

/// Bounds on one document, each with a safe default. Names match [`GraphqlError::Limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of the document (the caller also bounds the whole body).
    pub max_body_bytes: usize,
    /// Lexical tokens of the document.
    pub max_tokens: usize,
    /// Nesting of `{`, `(` and `[`: what the parser would recurse on.
    pub max_recursion: usize,
    /// Selection depth with fragments flattened (a root field is depth 1).
    pub max_depth: usize,
    /// Aliased fields in the document.
    pub max_aliases: usize,
    /// Fields selected on the operation's root, fragments flattened.
    pub max_root_fields: usize,
    /// Fragment spreads expanded while walking (stops fragment fan-out early).
    pub max_fragment_spreads: usize,
    /// Field selections visited while walking, fragments flattened.
    pub max_selections: usize,
    /// Operations in one batched request (checked by the caller: [`Limits::check_batch`]).
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_tokens: 10_000,
            max_recursion: 64,
            max_depth: 15,
            max_aliases: 30,
            max_root_fields: 20,
            max_fragment_spreads: 500,
            max_selections: 5_000,
            max_batch: 10,
        }
    }
}

impl Limits {
    /// A batched request of `operations` documents.
    pub fn check_batch(&self, operations: usize) -> Result<(), GraphqlError> {
        over("max_batch", operations, self.max_batch)
    }
}

pub(crate) fn over(limit: &'static str, value: usize, max: usize) -> Result<(), GraphqlError> {
    if value > max {
        Err(GraphqlError::Limit { limit, max })
    } else {
        Ok(())
    }
}
