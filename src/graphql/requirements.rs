//! Scope requirements per type and per field coordinate, compiled against one [`Schema`].
//!
//! A rule is all-of scopes plus at most one any-of group; a coordinate's [`Need`] is the
//! conjunction of every rule that applies to it (all-of sets merge, any-of groups stay apart).
//! A type with no rule of its own that is a Relay connection or edge of a ruled object type
//! (`edges { node }` or `nodes`) takes that type's rule, so `Query.products` is derivable from
//! `Product`. A mutation or subscription root field is derivable only from its own coordinate
//! entry: the type table says what reading needs, never what writing does.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::schema::{Schema, TypeKind};
use super::{GraphqlError, OperationKind};
use crate::scopes::{ScopeSet, Vocabulary};

mod check;

pub use check::{CheckReport, UnknownEntry};

/// All of `all`, and (when present) at least one of `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rule {
    pub all: ScopeSet,
    pub any: Option<ScopeSet>,
}

/// A rule as a table spells it: `"read_products"`, Shopify's `"X or Y"` and
/// `"X as well as any of Y, Z"`, a list (all of), or `{ scopes = [..], any_scopes = [..] }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RuleSpec {
    Text(String),
    All(Vec<String>),
    Table {
        #[serde(default)]
        scopes: Vec<String>,
        #[serde(default)]
        any_scopes: Vec<String>,
    },
}

/// What one selected coordinate needs: every scope of `all`, one of each `any` group; an
/// underivable coordinate is refused whatever is held.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Need {
    pub all: ScopeSet,
    pub any: Vec<ScopeSet>,
    pub underivable: bool,
}

impl Need {
    pub fn add_rule(&mut self, rule: &Rule) {
        self.all.union_with(&rule.all);
        if let Some(any) = rule.any
            && !self.any.contains(&any)
        {
            self.any.push(any);
        }
    }

    pub fn add(&mut self, other: &Need) {
        self.all.union_with(&other.all);
        for group in &other.any {
            if !self.any.contains(group) {
                self.any.push(*group);
            }
        }
        self.underivable |= other.underivable;
    }

    /// What `held` lacks of this need, or `None` when it is met.
    pub fn missing(&self, held: &ScopeSet) -> Option<Need> {
        let mut all = self.all;
        all.remove_all(held);
        let any: Vec<ScopeSet> = self
            .any
            .iter()
            .filter(|g| !held.intersects(g))
            .copied()
            .collect();
        let lacking = Need {
            all,
            any,
            underivable: self.underivable,
        };
        (lacking.underivable || !lacking.all.is_empty() || !lacking.any.is_empty())
            .then_some(lacking)
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty() && self.any.is_empty() && !self.underivable
    }
}

/// The compiled tables, for the schema generation they were compiled against.
#[derive(Debug)]
pub struct Requirements {
    pub(crate) generation: u64,
    /// Indexed by type id: explicit or inherited (connection / edge) rule.
    pub(crate) types: Vec<Option<Rule>>,
    /// (type id, field index) -> rule.
    pub(crate) fields: HashMap<(u32, u32), Rule, foldhash::fast::FixedState>,
    report: CheckReport,
}

impl Requirements {
    /// Compiles both tables; scope names are interned into `vocab`. Entries naming a type or
    /// field the schema lacks are not an error here: they are in [`Requirements::report`].
    pub fn compile(
        schema: &Schema,
        vocab: &mut Vocabulary,
        types: &BTreeMap<String, RuleSpec>,
        fields: &BTreeMap<String, RuleSpec>,
    ) -> Result<Requirements, GraphqlError> {
        let mut report = CheckReport::default();
        let mut type_rules = vec![None; schema.types.len()];
        for (name, spec) in types {
            let rule = spec.compile(name, vocab)?;
            match schema.type_id(name) {
                Some(t) => type_rules[t as usize] = Some(rule),
                None => report
                    .unknown_entries
                    .push(check::unknown_type(schema, name)),
            }
        }
        inherit_connections(schema, &mut type_rules);
        let mut field_rules = HashMap::default();
        for (coordinate, spec) in fields {
            let rule = spec.compile(coordinate, vocab)?;
            match check::resolve_coordinate(schema, coordinate) {
                Ok(at) => spread_field_rule(schema, &mut field_rules, at, rule),
                Err(unknown) => report.unknown_entries.push(unknown),
            }
        }
        let mut req = Requirements {
            generation: schema.generation(),
            types: type_rules,
            fields: field_rules,
            report,
        };
        req.report.underivable_roots = check::underivable_roots(schema, &req);
        Ok(req)
    }

    pub fn report(&self) -> &CheckReport {
        &self.report
    }

    pub(crate) fn type_rule(&self, ty: u32) -> Option<&Rule> {
        self.types[ty as usize].as_ref()
    }

    pub(crate) fn field_rule(&self, ty: u32, field: u32) -> Option<&Rule> {
        self.fields.get(&(ty, field))
    }

    /// A root field's own requirement when the tables give one without looking at the
    /// selection: its coordinate entry, or (query root only) its return type's rule.
    pub(crate) fn root_rule(
        &self,
        schema: &Schema,
        kind: OperationKind,
        root: u32,
        field: u32,
    ) -> Option<Rule> {
        if let Some(rule) = self.field_rule(root, field) {
            return Some(*rule);
        }
        if kind != OperationKind::Query {
            return None;
        }
        let ty = schema.def(root).fields[field as usize].ty;
        self.type_rule(ty).copied()
    }
}

/// An entry on an interface field applies to each implementation without its own entry.
fn spread_field_rule(
    schema: &Schema,
    rules: &mut HashMap<(u32, u32), Rule, foldhash::fast::FixedState>,
    at: (u32, u32),
    rule: Rule,
) {
    rules.insert(at, rule);
    let def = schema.def(at.0);
    if def.kind != TypeKind::Interface {
        return;
    }
    let name = &def.fields[at.1 as usize].name;
    for &object in &def.possible {
        if let Some(&i) = schema.def(object).field_index.get(name) {
            rules.entry((object, i)).or_insert(rule);
        }
    }
}

/// Edge types (`node: T`) then connection types (`edges: E` or `nodes: T`) without a rule of
/// their own take the rule of the object type they page over. Root types never inherit.
fn inherit_connections(schema: &Schema, rules: &mut [Option<Rule>]) {
    let roots: Vec<u32> = [
        OperationKind::Query,
        OperationKind::Mutation,
        OperationKind::Subscription,
    ]
    .into_iter()
    .filter_map(|k| schema.root_id(k))
    .collect();
    for pass_field in [&["node"][..], &["edges", "nodes"][..]] {
        let snapshot = rules.to_vec();
        for (t, def) in schema.types.iter().enumerate() {
            if def.kind != TypeKind::Object || rules[t].is_some() || roots.contains(&(t as u32)) {
                continue;
            }
            let inherited = pass_field.iter().find_map(|f| {
                let field = schema.field(t as u32, f)?;
                let target = schema.def(field.ty);
                (target.kind == TypeKind::Object).then(|| snapshot[field.ty as usize])?
            });
            rules[t] = inherited;
        }
    }
}

impl RuleSpec {
    pub fn compile(&self, entry: &str, vocab: &mut Vocabulary) -> Result<Rule, GraphqlError> {
        let (all, any): (Vec<&str>, Vec<&str>) = match self {
            RuleSpec::Text(text) => parse_text(text)
                .ok_or_else(|| table_error(entry, format!("cannot read rule {text:?}")))?,
            RuleSpec::All(all) => (all.iter().map(String::as_str).collect(), Vec::new()),
            RuleSpec::Table { scopes, any_scopes } => (
                scopes.iter().map(String::as_str).collect(),
                any_scopes.iter().map(String::as_str).collect(),
            ),
        };
        let mut set = |names: &[&str]| -> Result<ScopeSet, GraphqlError> {
            let mut set = ScopeSet::EMPTY;
            for name in names {
                let bit = vocab.intern(name).map_err(|e| table_error(entry, e))?;
                set.insert(bit);
            }
            Ok(set)
        };
        let rule = Rule {
            all: set(&all)?,
            any: if any.is_empty() {
                None
            } else {
                Some(set(&any)?)
            },
        };
        Ok(rule)
    }
}

/// `X`, `X or Y or Z`, `X as well as any of Y, Z`, `any of Y, Z` (names may carry backticks).
fn parse_text(text: &str) -> Option<(Vec<&str>, Vec<&str>)> {
    let text = text.trim();
    if let Some((all, any)) = text.split_once(" as well as any of ") {
        return Some((names(all)?, names(any)?));
    }
    if let Some(any) = text.strip_prefix("any of ") {
        return Some((Vec::new(), names(any)?));
    }
    if text.contains(" or ") {
        return Some((Vec::new(), names(text)?));
    }
    let one = text.trim_matches('`');
    is_scope_name(one).then(|| (vec![one], Vec::new()))
}

/// Scope names separated by commas or ` or `.
fn names(list: &str) -> Option<Vec<&str>> {
    let out: Vec<&str> = list
        .split(',')
        .flat_map(|p| p.split(" or "))
        .map(|n| n.trim().trim_matches('`'))
        .collect();
    out.iter().all(|n| is_scope_name(n)).then_some(out)
}

fn is_scope_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.' | b'/'))
}

fn table_error(entry: &str, message: impl std::fmt::Display) -> GraphqlError {
    GraphqlError::Table {
        entry: entry.to_owned(),
        message: message.to_string(),
    }
}
