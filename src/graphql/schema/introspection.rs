//! The JSON an introspection query returns, read with serde into a [`Draft`].

use serde::Deserialize;

use super::{Draft, DraftType, TypeKind, schema_error};
use crate::graphql::GraphqlError;

#[derive(Deserialize)]
struct Envelope {
    data: Option<Data>,
    #[serde(rename = "__schema")]
    schema: Option<IntroSchema>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "__schema")]
    schema: IntroSchema,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IntroSchema {
    query_type: Option<Named>,
    mutation_type: Option<Named>,
    subscription_type: Option<Named>,
    types: Vec<IntroType>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IntroType {
    kind: String,
    name: String,
    fields: Option<Vec<IntroField>>,
    interfaces: Option<Vec<Named>>,
    possible_types: Option<Vec<Named>>,
}

#[derive(Deserialize)]
struct IntroField {
    name: String,
    #[serde(default)]
    args: Vec<Named>,
    #[serde(rename = "type")]
    ty: TypeRef,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeRef {
    name: Option<String>,
    of_type: Option<Box<TypeRef>>,
}

impl TypeRef {
    /// The named type inside the list and non-null wrappers.
    fn named(&self) -> Option<&str> {
        let mut at = self;
        loop {
            if let Some(name) = &at.name {
                return Some(name);
            }
            at = at.of_type.as_deref()?;
        }
    }
}

pub(super) fn draft(file: &str, json: &str) -> Result<Draft, GraphqlError> {
    let envelope: Envelope =
        serde_json::from_str(json).map_err(|e| schema_error(file, e.line(), e))?;
    let schema = envelope
        .data
        .map(|d| d.schema)
        .or(envelope.schema)
        .ok_or_else(|| {
            schema_error(
                file,
                1,
                "no __schema (expected {\"data\": {\"__schema\": ..}} or {\"__schema\": ..})",
            )
        })?;
    let mut draft = Draft {
        file: file.to_owned(),
        types: Vec::with_capacity(schema.types.len()),
        roots: [
            schema.query_type,
            schema.mutation_type,
            schema.subscription_type,
        ]
        .map(|r| r.map(|n| n.name)),
    };
    for t in schema.types {
        if t.name.starts_with("__") {
            continue;
        }
        draft.add(intro_type(file, t)?);
    }
    Ok(draft)
}

fn intro_type(file: &str, t: IntroType) -> Result<DraftType, GraphqlError> {
    let kind = match t.kind.as_str() {
        "OBJECT" => TypeKind::Object,
        "INTERFACE" => TypeKind::Interface,
        "UNION" => TypeKind::Union,
        "SCALAR" => TypeKind::Scalar,
        "ENUM" => TypeKind::Enum,
        "INPUT_OBJECT" => TypeKind::InputObject,
        other => {
            return Err(schema_error(
                file,
                0,
                format!("type {}: unknown kind {other}", t.name),
            ));
        }
    };
    let mut out = DraftType::new(&t.name, kind, 0);
    for f in t.fields.unwrap_or_default() {
        let Some(ty) = f.ty.named() else {
            return Err(schema_error(
                file,
                0,
                format!("{}.{}: type has no name", t.name, f.name),
            ));
        };
        let args = f.args.into_iter().map(|a| a.name).collect();
        out.fields.push((f.name, ty.to_owned(), args));
    }
    if kind == TypeKind::Object {
        out.interfaces = t
            .interfaces
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.name)
            .collect();
    }
    if kind == TypeKind::Union {
        out.members = t
            .possible_types
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.name)
            .collect();
    }
    Ok(out)
}
