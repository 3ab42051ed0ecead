//! The walk: the spec's CollectFields per concrete object type (fragments flattened, directives
//! ignored so `@skip`/`@include` count as included), each field checked against the schema
//! and given its need. A field returning an interface or union is walked once per concrete type
//! it can reach: those its selection narrows to, or (`node`/`nodes`) those its GIDs name.

use std::collections::HashMap;
use std::sync::Arc;

use cynic_parser::Value as Literal;
use cynic_parser::executable::{FieldSelection, Iter, OperationDefinition, Selection};
use serde_json::Value;

pub(super) use super::survey::Survey;

use super::requirements::{Need, Requirements};
use super::schema::{Field, Schema, TypeKind};
use super::{GraphqlError, Limits, OperationKind, over};

type Coordinate = (u32, u32);

/// What a walk found: sorted coordinates with their needs, their union, whether introspection
/// was selected, and the variables that decided GID types.
pub(super) type Finished = (Vec<(Arc<str>, Need)>, Need, bool, Vec<String>);

/// The concrete object types a composite field reaches.
enum Reach {
    One([u32; 1]),
    Many(Vec<u32>),
}

impl Reach {
    fn as_slice(&self) -> &[u32] {
        match self {
            Reach::One(one) => one,
            Reach::Many(many) => many,
        }
    }
}

pub(super) struct Walker<'s, 'a> {
    schema: &'s Schema,
    req: &'s Requirements,
    survey: &'s Survey<'a>,
    variables: Option<&'s Value>,
    limits: &'s Limits,
    op: OperationDefinition<'a>,
    kind: OperationKind,
    spreads: usize,
    selections: usize,
    index: HashMap<Coordinate, usize, foldhash::fast::FixedState>,
    found: Vec<(Coordinate, Need)>,
    introspection: bool,
    gid_variables: Vec<String>,
    /// Collected fields, used as a stack: each selection set pushes its fields, walks them
    /// and truncates back (one allocation per analysis, not one per field).
    stack: Vec<FieldSelection<'a>>,
}

impl<'s, 'a> Walker<'s, 'a> {
    pub fn new(
        schema: &'s Schema,
        req: &'s Requirements,
        survey: &'s Survey<'a>,
        variables: Option<&'s Value>,
        limits: &'s Limits,
        op: OperationDefinition<'a>,
    ) -> Self {
        Walker {
            op,
            kind: OperationKind::from(op.operation_type()),
            schema,
            req,
            survey,
            variables,
            limits,
            spreads: 0,
            selections: 0,
            index: HashMap::default(),
            found: Vec::new(),
            introspection: false,
            gid_variables: Vec::new(),
            stack: Vec::with_capacity(64),
        }
    }

    pub fn operation(
        &mut self,
        root: u32,
        set: Iter<'a, Selection<'a>>,
    ) -> Result<(), GraphqlError> {
        let start = self.stack.len();
        self.collect(root, set)?;
        over(
            "max_root_fields",
            self.stack.len() - start,
            self.limits.max_root_fields,
        )?;
        self.walk_collected(root, start, 1)
    }

    /// Walks the fields collected from `start` on, then drops them from the stack.
    fn walk_collected(
        &mut self,
        object: u32,
        start: usize,
        depth: usize,
    ) -> Result<(), GraphqlError> {
        let end = self.stack.len();
        for i in start..end {
            let f = self.stack[i];
            self.field(object, f, depth)?;
        }
        self.stack.truncate(start);
        Ok(())
    }

    /// Sorted coordinates, their union, introspection, GID variables.
    pub fn finish(self) -> Finished {
        let schema = self.schema;
        let mut total = Need::default();
        let mut found = self.found;
        let rank = |(t, f): Coordinate| (t, schema.def(t).fields[f as usize].rank);
        found.sort_unstable_by_key(|(at, _)| rank(*at));
        let out: Vec<(Arc<str>, Need)> = found
            .into_iter()
            .map(|((t, f), need)| {
                total.add(&need);
                let coordinate = Arc::clone(&schema.def(t).fields[f as usize].coordinate);
                (coordinate, need)
            })
            .collect();
        let mut gid_variables = self.gid_variables;
        gid_variables.sort_unstable();
        gid_variables.dedup();
        (out, total, self.introspection, gid_variables)
    }

    /// CollectFields for one concrete object type.
    fn collect(&mut self, object: u32, set: Iter<'a, Selection<'a>>) -> Result<(), GraphqlError> {
        for sel in set {
            match sel {
                Selection::Field(f) => self.stack.push(f),
                Selection::InlineFragment(i) => {
                    if self.applies(object, i.type_condition())? {
                        self.collect(object, i.selection_set())?;
                    }
                }
                Selection::FragmentSpread(s) => {
                    let fragment = self.survey.fragments[s.fragment_name()];
                    if self.applies(object, Some(fragment.type_condition()))? {
                        self.spreads += 1;
                        let max = self.limits.max_fragment_spreads;
                        over("max_fragment_spreads", self.spreads, max)?;
                        self.collect(object, fragment.selection_set())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn applies(&self, object: u32, condition: Option<&str>) -> Result<bool, GraphqlError> {
        let Some(name) = condition else {
            return Ok(true);
        };
        let ty = self
            .schema
            .type_id(name)
            .filter(|t| self.schema.def(*t).kind.is_composite());
        let Some(ty) = ty else {
            return Err(unknown("type", name.to_owned()));
        };
        Ok(self.schema.def(ty).possible.binary_search(&object).is_ok())
    }

    fn field(
        &mut self,
        parent: u32,
        sel: FieldSelection<'a>,
        depth: usize,
    ) -> Result<(), GraphqlError> {
        self.selections += 1;
        over(
            "max_selections",
            self.selections,
            self.limits.max_selections,
        )?;
        over("max_depth", depth, self.limits.max_depth)?;
        let schema = self.schema;
        let name = sel.name();
        if name == "__typename" {
            return Ok(());
        }
        if depth == 1 && self.kind == OperationKind::Query && matches!(name, "__schema" | "__type")
        {
            self.introspection = true;
            return Ok(());
        }
        let def = schema.def(parent);
        let Some(&fi) = def.field_index.get(name) else {
            return Err(unknown("field", format!("{}.{name}", def.name)));
        };
        let field = &def.fields[fi as usize];
        if let Some(arg) = sel
            .arguments()
            .find(|a| !field.args.iter().any(|n| **n == *a.name()))
        {
            return Err(unknown(
                "argument",
                format!("{}.{name}({}:)", def.name, arg.name()),
            ));
        }
        let reached = self.reach(field, &sel)?;
        let mut need = self.own_need(parent, fi, field.ty, reached.as_slice(), depth == 1);
        if let Some(rule) = self.req.type_rule(parent) {
            need.add_rule(rule);
        }
        self.record((parent, fi), need);
        for &object in reached.as_slice() {
            let start = self.stack.len();
            self.collect(object, sel.selection_set())?;
            self.walk_collected(object, start, depth + 1)?;
        }
        Ok(())
    }

    /// The concrete types a composite field reaches: itself for an object; for an interface or
    /// union the types its GIDs name, else those with a field selected on them.
    fn reach(&mut self, field: &Field, sel: &FieldSelection<'a>) -> Result<Reach, GraphqlError> {
        let target = self.schema.def(field.ty);
        match target.kind {
            TypeKind::Object => Ok(Reach::One([field.ty])),
            TypeKind::Interface | TypeKind::Union => {
                if let Some(named) = self.gid_types(field.ty, sel)? {
                    return Ok(Reach::Many(named));
                }
                let mut out = Vec::new();
                for &object in &target.possible {
                    let start = self.stack.len();
                    self.collect(object, sel.selection_set())?;
                    let selects = self.stack[start..].iter().any(|f| f.name() != "__typename");
                    self.stack.truncate(start);
                    if selects {
                        out.push(object);
                    }
                }
                Ok(Reach::Many(out))
            }
            _ => Ok(Reach::Many(Vec::new())),
        }
    }

    /// A field's own requirement, without its parent's type rule. A root field: its coordinate
    /// entry, or (query root) the rule of what it returns; none of these: underivable.
    fn own_need(&self, parent: u32, fi: u32, target: u32, reached: &[u32], root: bool) -> Need {
        let mut need = Need::default();
        if let Some(rule) = self.req.field_rule(parent, fi) {
            need.add_rule(rule);
            return need;
        }
        let kind = self.schema.def(target).kind;
        if root && (self.kind != OperationKind::Query || !kind.is_composite()) {
            need.underivable = true;
            return need;
        }
        if kind == TypeKind::Object {
            match self.req.type_rule(target) {
                Some(rule) => need.add_rule(rule),
                None => need.underivable = root,
            }
            return need;
        }
        for object in reached {
            match self.req.type_rule(*object) {
                Some(rule) => need.add_rule(rule),
                None => need.underivable |= root,
            }
        }
        need.underivable |= root && reached.is_empty();
        need
    }

    fn record(&mut self, at: Coordinate, need: Need) {
        match self.index.get(&at) {
            Some(&i) => self.found[i].1.add(&need),
            None => {
                self.index.insert(at, self.found.len());
                self.found.push((at, need));
            }
        }
    }

    /// For a field returning an interface or union: the object types named by the GIDs of its
    /// `id`/`ids` argument (literal or variable), or `None` when any of them is not a GID.
    fn gid_types(
        &mut self,
        target: u32,
        sel: &FieldSelection<'a>,
    ) -> Result<Option<Vec<u32>>, GraphqlError> {
        let Some(arg) = sel.arguments().find(|a| matches!(a.name(), "id" | "ids")) else {
            return Ok(None);
        };
        let mut gids: Vec<&str> = Vec::new();
        let complete = match arg.value() {
            Literal::Variable(v) => {
                let name = v.name();
                self.gid_variables.push(name.to_owned());
                match self.variables.and_then(|vars| vars.get(name)) {
                    Some(value) => json_strings(Some(value), &mut gids),
                    None => self.default_strings(name, &mut gids),
                }
            }
            value => literal_strings(&value, &mut gids),
        };
        if !complete || gids.is_empty() {
            return Ok(None);
        }
        let mut types = Vec::with_capacity(gids.len());
        for gid in gids {
            let Some(type_name) = gid_type(gid) else {
                return Ok(None);
            };
            let possible = &self.schema.def(target).possible;
            match self
                .schema
                .type_id(type_name)
                .filter(|t| possible.binary_search(t).is_ok())
            {
                Some(t) => types.push(t),
                None => {
                    let message = format!(
                        "GID {gid} names {type_name}, which {} cannot be",
                        self.schema.name(target)
                    );
                    return Err(GraphqlError::Invalid(message));
                }
            }
        }
        types.sort_unstable();
        types.dedup();
        Ok(Some(types))
    }
}

impl<'a> Walker<'_, 'a> {
    /// The strings of variable `name`'s default value, when the request does not give it.
    fn default_strings(&self, name: &str, out: &mut Vec<&'a str>) -> bool {
        let definition = self.op.variable_definitions().find(|d| d.name() == name);
        let Some(value) = definition.and_then(|d| d.default_value()) else {
            return false;
        };
        if let Some(s) = value.as_str() {
            out.push(s);
            return true;
        }
        match value.as_items() {
            Some(items) => items
                .into_iter()
                .all(|v| v.as_str().map(|s| out.push(s)).is_some()),
            None => false,
        }
    }
}

fn literal_strings<'a>(value: &Literal<'a>, out: &mut Vec<&'a str>) -> bool {
    if let Some(s) = value.as_str() {
        out.push(s);
        return true;
    }
    match value.as_items() {
        Some(items) => items
            .into_iter()
            .all(|v| v.as_str().map(|s| out.push(s)).is_some()),
        None => false,
    }
}

fn json_strings<'v>(value: Option<&'v Value>, out: &mut Vec<&'v str>) -> bool {
    match value {
        Some(Value::String(s)) => {
            out.push(s);
            true
        }
        Some(Value::Array(items)) => items
            .iter()
            .all(|v| v.as_str().map(|s| out.push(s)).is_some()),
        _ => false,
    }
}

/// `gid://shopify/Product/1` -> `Product`.
pub(super) fn gid_type(gid: &str) -> Option<&str> {
    let rest = gid.strip_prefix("gid://")?;
    let mut parts = rest.splitn(3, '/');
    let (_app, ty, id) = (parts.next()?, parts.next()?, parts.next()?);
    (!ty.is_empty() && !id.is_empty()).then_some(ty)
}

fn unknown(what: &'static str, name: String) -> GraphqlError {
    GraphqlError::Unknown { what, name }
}
