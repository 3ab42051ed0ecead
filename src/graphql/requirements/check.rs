//! What `routes check` reports about a pair of tables: root fields with no derivable
//! requirement (refused at run time) and entries naming what the schema lacks ("did you mean").

use super::Requirements;
use crate::graphql::OperationKind;
use crate::graphql::schema::{Schema, TypeKind};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// `Type.field` of root fields that every request selecting them is refused for.
    pub underivable_roots: Vec<String>,
    pub unknown_entries: Vec<UnknownEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEntry {
    /// The table key as written.
    pub entry: String,
    pub suggestion: Option<String>,
}

impl std::fmt::Display for UnknownEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: not in the schema", self.entry)?;
        match &self.suggestion {
            Some(s) => write!(f, " (did you mean {s}?)"),
            None => Ok(()),
        }
    }
}

fn closest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::normalized_damerau_levenshtein(wanted, c), c))
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

pub(super) fn unknown_type(schema: &Schema, name: &str) -> UnknownEntry {
    UnknownEntry {
        entry: name.to_owned(),
        suggestion: closest(name, schema.type_names()).map(str::to_owned),
    }
}

/// `Type.field` to (type id, field index), or the entry to report.
pub(super) fn resolve_coordinate(
    schema: &Schema,
    coordinate: &str,
) -> Result<(u32, u32), UnknownEntry> {
    let Some((type_name, field)) = coordinate.split_once('.') else {
        return Err(UnknownEntry {
            entry: coordinate.to_owned(),
            suggestion: None,
        });
    };
    let Some(t) = schema.type_id(type_name) else {
        let suggestion = closest(type_name, schema.type_names()).map(|s| format!("{s}.{field}"));
        return Err(UnknownEntry {
            entry: coordinate.to_owned(),
            suggestion,
        });
    };
    let def = schema.def(t);
    match def.field_index.get(field) {
        Some(&i) => Ok((t, i)),
        None => Err(UnknownEntry {
            entry: coordinate.to_owned(),
            suggestion: closest(field, def.fields.iter().map(|f| &*f.name))
                .map(|s| format!("{type_name}.{s}")),
        }),
    }
}

/// Root fields no table derives a requirement for. A query root field returning an interface
/// or union is derivable when every type it can be has a rule.
pub(super) fn underivable_roots(schema: &Schema, req: &Requirements) -> Vec<String> {
    let mut out = Vec::new();
    for kind in [
        OperationKind::Query,
        OperationKind::Mutation,
        OperationKind::Subscription,
    ] {
        let Some(root) = schema.root_id(kind) else {
            continue;
        };
        let def = schema.def(root);
        for (i, field) in def.fields.iter().enumerate() {
            if req.root_rule(schema, kind, root, i as u32).is_some() {
                continue;
            }
            let target = schema.def(field.ty);
            let abstract_covered = kind == OperationKind::Query
                && matches!(target.kind, TypeKind::Interface | TypeKind::Union)
                && !target.possible.is_empty()
                && target.possible.iter().all(|p| req.type_rule(*p).is_some());
            if !abstract_covered {
                out.push(format!("{}.{}", def.name, field.name));
            }
        }
    }
    out
}
