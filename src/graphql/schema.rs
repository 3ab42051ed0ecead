//! The compiled, immutable schema: composite types with their fields (return named type and
//! argument names), the concrete object types each interface and union can be, and the root
//! operation types. Built from SDL (parsed by `cynic-parser`) or from introspection JSON (read
//! with serde) through one [`Draft`], so both give the same [`Schema`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cynic_parser::type_system::{Definition, TypeDefinition};

use super::GraphqlError;
use super::analyse::OperationKind;

mod introspection;

/// Name lookups: keys come from the schema (an operator's file), so a fixed hasher is safe.
pub(crate) type Names = HashMap<Box<str>, u32, foldhash::fast::FixedState>;

static GENERATION: AtomicU64 = AtomicU64::new(1);
const BUILTIN_SCALARS: [&str; 5] = ["Boolean", "Float", "ID", "Int", "String"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeKind {
    Object,
    Interface,
    Union,
    Scalar,
    Enum,
    InputObject,
}

impl TypeKind {
    pub fn is_composite(self) -> bool {
        matches!(
            self,
            TypeKind::Object | TypeKind::Interface | TypeKind::Union
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    pub name: Box<str>,
    /// The named type it returns (list and non-null wrappers dropped), an index into `types`.
    pub ty: u32,
    pub args: Vec<Box<str>>,
    /// `Type.field`, made once so an analysis lists it without formatting.
    pub coordinate: Arc<str>,
    /// Place of the name among its type's field names: with types sorted by name, sorting by
    /// (type, rank) sorts coordinates as strings.
    pub rank: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeDef {
    pub name: Box<str>,
    pub kind: TypeKind,
    pub fields: Vec<Field>,
    pub field_index: Names,
    /// The concrete object types a value of this type can be (an object: itself), sorted.
    pub possible: Vec<u32>,
}

/// A compiled schema. Its `generation` is unique per compilation (a cache key part).
#[derive(Debug)]
pub struct Schema {
    generation: u64,
    pub(crate) types: Vec<TypeDef>,
    index: Names,
    roots: [Option<u32>; 3],
}

/// What both schema readers produce: names unresolved, with the line each came from.
#[derive(Debug, Default)]
pub(crate) struct Draft {
    pub file: String,
    pub types: Vec<DraftType>,
    pub roots: [Option<String>; 3],
}

#[derive(Debug)]
pub(crate) struct DraftType {
    pub name: String,
    pub kind: TypeKind,
    pub line: usize,
    /// (name, named return type, argument names)
    pub fields: Vec<(String, String, Vec<String>)>,
    pub interfaces: Vec<String>,
    pub members: Vec<String>,
}

impl PartialEq for Schema {
    /// Same types, fields, possible types and roots (the generation is not compared).
    fn eq(&self, other: &Self) -> bool {
        self.types == other.types && self.roots == other.roots
    }
}

impl Schema {
    /// SDL or introspection JSON (`{"data": {"__schema": ..}}` or `{"__schema": ..}`), told
    /// apart by the first non-blank character; `file` names the source in errors.
    pub fn parse(file: &str, text: &str) -> Result<Schema, GraphqlError> {
        if text.trim_start().starts_with('{') {
            Schema::from_introspection(file, text)
        } else {
            Schema::from_sdl(file, text)
        }
    }

    pub fn load(path: &std::path::Path) -> Result<Schema, GraphqlError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| schema_error(&file, 0, e))?;
        Schema::parse(&file, &text)
    }

    pub fn from_sdl(file: &str, sdl: &str) -> Result<Schema, GraphqlError> {
        let lines = LineIndex::new(sdl);
        let doc = cynic_parser::parse_type_system_document(sdl).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            schema_error(file, lines.line(offset), e)
        })?;
        let mut draft = Draft {
            file: file.to_owned(),
            ..Draft::default()
        };
        for def in doc.definitions() {
            match def {
                Definition::Schema(s) | Definition::SchemaExtension(s) => {
                    for root in s.root_operations() {
                        let slot = OperationKind::from(root.operation_type()) as usize;
                        draft.roots[slot] = Some(root.named_type().to_owned());
                    }
                }
                Definition::Type(t) | Definition::TypeExtension(t) => {
                    draft.add(sdl_type(&t, lines.line(t.span().start)));
                }
                Definition::Directive(_) => {}
            }
        }
        draft.compile()
    }

    pub fn from_introspection(file: &str, json: &str) -> Result<Schema, GraphqlError> {
        introspection::draft(file, json)?.compile()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn root(&self, kind: OperationKind) -> Option<&str> {
        self.roots[kind as usize].map(|t| self.name(t))
    }

    pub fn kind(&self, type_name: &str) -> Option<TypeKind> {
        self.type_id(type_name).map(|t| self.types[t as usize].kind)
    }

    /// The named type `type_name.field` returns.
    pub fn field_type(&self, type_name: &str, field: &str) -> Option<&str> {
        let f = self.field(self.type_id(type_name)?, field)?;
        Some(self.name(f.ty))
    }

    pub fn field_args(&self, type_name: &str, field: &str) -> Option<Vec<&str>> {
        let f = self.field(self.type_id(type_name)?, field)?;
        Some(f.args.iter().map(|a| &**a).collect())
    }

    /// The concrete object types a value of `type_name` can be.
    pub fn possible_types(&self, type_name: &str) -> Vec<&str> {
        self.type_id(type_name).map_or_else(Vec::new, |t| {
            let possible = &self.types[t as usize].possible;
            possible.iter().map(|p| self.name(*p)).collect()
        })
    }

    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.types.iter().map(|t| &*t.name)
    }

    pub(crate) fn type_id(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub(crate) fn name(&self, ty: u32) -> &str {
        &self.types[ty as usize].name
    }

    pub(crate) fn def(&self, ty: u32) -> &TypeDef {
        &self.types[ty as usize]
    }

    pub(crate) fn field(&self, ty: u32, name: &str) -> Option<&Field> {
        let def = &self.types[ty as usize];
        def.field_index.get(name).map(|i| &def.fields[*i as usize])
    }

    pub(crate) fn root_id(&self, kind: OperationKind) -> Option<u32> {
        self.roots[kind as usize]
    }
}

fn sdl_type(t: &TypeDefinition<'_>, line: usize) -> DraftType {
    let field = |f: cynic_parser::type_system::FieldDefinition<'_>| {
        let args = f.arguments().map(|a| a.name().to_owned()).collect();
        (f.name().to_owned(), f.ty().name().to_owned(), args)
    };
    let mut out = DraftType::new(t.name(), TypeKind::Scalar, line);
    match t {
        TypeDefinition::Object(o) => {
            out.kind = TypeKind::Object;
            out.fields = o.fields().map(field).collect();
            out.interfaces = o.implements_interfaces().map(str::to_owned).collect();
        }
        TypeDefinition::Interface(i) => {
            out.kind = TypeKind::Interface;
            out.fields = i.fields().map(field).collect();
        }
        TypeDefinition::Union(u) => {
            out.kind = TypeKind::Union;
            out.members = u.members().map(|m| m.name().to_owned()).collect();
        }
        TypeDefinition::Enum(_) => out.kind = TypeKind::Enum,
        TypeDefinition::InputObject(_) => out.kind = TypeKind::InputObject,
        TypeDefinition::Scalar(_) => {}
    }
    out
}

impl DraftType {
    pub fn new(name: &str, kind: TypeKind, line: usize) -> DraftType {
        DraftType {
            name: name.to_owned(),
            kind,
            line,
            fields: Vec::new(),
            interfaces: Vec::new(),
            members: Vec::new(),
        }
    }
}

impl Draft {
    /// A definition, or an extension merged into the type of the same name and kind.
    pub fn add(&mut self, t: DraftType) {
        match self.types.iter_mut().find(|d| d.name == t.name) {
            Some(d) if d.kind == t.kind => {
                d.fields.extend(t.fields);
                d.interfaces.extend(t.interfaces);
                d.members.extend(t.members);
            }
            _ => self.types.push(t),
        }
    }

    fn err(&self, line: usize, message: impl std::fmt::Display) -> GraphqlError {
        schema_error(&self.file, line, message)
    }

    pub fn compile(mut self) -> Result<Schema, GraphqlError> {
        for s in BUILTIN_SCALARS {
            if !self.types.iter().any(|t| t.name == s) {
                self.types.push(DraftType::new(s, TypeKind::Scalar, 0));
            }
        }
        self.types.sort_by(|a, b| a.name.cmp(&b.name));
        let mut index = Names::default();
        for (i, t) in self.types.iter().enumerate() {
            if index
                .insert(t.name.clone().into_boxed_str(), i as u32)
                .is_some()
            {
                return Err(self.err(t.line, format!("type {} defined twice", t.name)));
            }
        }
        let mut types = Vec::with_capacity(self.types.len());
        for t in &self.types {
            types.push(self.type_def(t, &index)?);
        }
        self.possible_types(&mut types, &index)?;
        let roots = self.roots(&index)?;
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        Ok(Schema {
            generation,
            types,
            index,
            roots,
        })
    }

    fn type_def(&self, t: &DraftType, index: &Names) -> Result<TypeDef, GraphqlError> {
        let mut def = TypeDef {
            name: t.name.clone().into(),
            kind: t.kind,
            fields: Vec::with_capacity(t.fields.len()),
            field_index: Names::with_capacity_and_hasher(t.fields.len(), Default::default()),
            possible: Vec::new(),
        };
        for (name, ty, args) in &t.fields {
            let Some(ty) = index.get(ty.as_str()) else {
                return Err(self.err(
                    t.line,
                    format!("{}.{name} returns unknown type {ty}", t.name),
                ));
            };
            let at = def.fields.len() as u32;
            if def.field_index.insert(name.clone().into(), at).is_some() {
                return Err(self.err(t.line, format!("field {}.{name} defined twice", t.name)));
            }
            def.fields.push(Field {
                name: name.clone().into(),
                ty: *ty,
                args: args.iter().map(|a| a.clone().into()).collect(),
                coordinate: format!("{}.{name}", t.name).into(),
                rank: 0,
            });
        }
        let mut order: Vec<u32> = (0..def.fields.len() as u32).collect();
        order.sort_by(|a, b| {
            def.fields[*a as usize]
                .name
                .cmp(&def.fields[*b as usize].name)
        });
        for (rank, at) in order.into_iter().enumerate() {
            def.fields[at as usize].rank = rank as u32;
        }
        Ok(def)
    }

    fn possible_types(&self, types: &mut [TypeDef], index: &Names) -> Result<(), GraphqlError> {
        for (i, t) in self.types.iter().enumerate() {
            match t.kind {
                TypeKind::Object => {
                    types[i].possible.push(i as u32);
                    for iface in &t.interfaces {
                        let Some(&at) = index.get(iface.as_str()) else {
                            return Err(
                                self.err(t.line, format!("{} implements unknown {iface}", t.name))
                            );
                        };
                        types[at as usize].possible.push(i as u32);
                    }
                }
                TypeKind::Union => {
                    for m in &t.members {
                        let at = index.get(m.as_str()).copied();
                        if at.is_none_or(|at| self.types[at as usize].kind != TypeKind::Object) {
                            return Err(self.err(
                                t.line,
                                format!("union {} member {m} is not an object type", t.name),
                            ));
                        }
                        types[i].possible.extend(at);
                    }
                }
                _ => {}
            }
        }
        for t in types.iter_mut() {
            t.possible.sort_unstable();
            t.possible.dedup();
        }
        Ok(())
    }

    fn roots(&self, index: &Names) -> Result<[Option<u32>; 3], GraphqlError> {
        let defaults = ["Query", "Mutation", "Subscription"];
        let mut roots = [None; 3];
        for (slot, default) in defaults.iter().enumerate() {
            let explicit = self.roots[slot].as_deref();
            let name = explicit.unwrap_or(default);
            match index.get(name) {
                Some(&at) if self.types[at as usize].kind == TypeKind::Object => {
                    roots[slot] = Some(at)
                }
                _ if explicit.is_some() => {
                    return Err(self.err(
                        0,
                        format!("root type {name} is not an object type of the schema"),
                    ));
                }
                _ => {}
            }
        }
        if roots[0].is_none() {
            return Err(self.err(0, "the schema has no query root type"));
        }
        Ok(roots)
    }
}

pub(crate) fn schema_error(
    file: &str,
    line: usize,
    message: impl std::fmt::Display,
) -> GraphqlError {
    GraphqlError::Schema {
        file: file.to_owned(),
        line,
        message: message.to_string(),
    }
}

/// Byte offset to 1-based line.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = text.match_indices('\n').map(|(i, _)| i + 1);
        LineIndex(std::iter::once(0).chain(starts).collect())
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|start| *start <= offset)
    }
}
