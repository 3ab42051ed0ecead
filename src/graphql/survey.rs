//! One pass over every definition of a document before the walk: fragment names (duplicates
//! refused), spreads of unknown fragments, fragment cycles (the spec's NoFragmentCycles,
//! checked iteratively), and the alias count.

use std::collections::HashMap;

use cynic_parser::ExecutableDocument;
use cynic_parser::executable::{ExecutableDefinition, FragmentDefinition, Iter, Selection};

use super::{GraphqlError, Limits, over};

pub(super) struct Survey<'a> {
    /// Keyed by the client's names: a per-process random seed keeps collisions unchosen.
    pub fragments: HashMap<&'a str, FragmentDefinition<'a>, foldhash::fast::RandomState>,
}

impl<'a> Survey<'a> {
    pub fn new(doc: &'a ExecutableDocument, limits: &Limits) -> Result<Survey<'a>, GraphqlError> {
        let mut fragments = HashMap::default();
        let mut graph: Vec<(&'a str, Vec<&'a str>)> = Vec::new();
        let mut aliases = 0;
        let mut all_spreads = Vec::new();
        for def in doc.definitions() {
            let mut spreads = Vec::new();
            match def {
                ExecutableDefinition::Operation(op) => {
                    visit(op.selection_set(), &mut aliases, &mut spreads);
                }
                ExecutableDefinition::Fragment(f) => {
                    if fragments.insert(f.name(), f).is_some() {
                        let message = format!("fragment {} defined twice", f.name());
                        return Err(GraphqlError::Invalid(message));
                    }
                    visit(f.selection_set(), &mut aliases, &mut spreads);
                    graph.push((f.name(), spreads.clone()));
                }
            }
            over("max_aliases", aliases, limits.max_aliases)?;
            all_spreads.extend(spreads);
        }
        if let Some(name) = all_spreads.iter().find(|s| !fragments.contains_key(*s)) {
            return Err(GraphqlError::Unknown {
                what: "fragment",
                name: (*name).to_owned(),
            });
        }
        find_cycle(&graph)?;
        Ok(Survey { fragments })
    }
}

/// Aliases and spread names anywhere under `set`. Recursion is bounded by the nesting limit
/// [`super::scan`] checked (each level is a `{`).
fn visit<'a>(set: Iter<'a, Selection<'a>>, aliases: &mut usize, spreads: &mut Vec<&'a str>) {
    for sel in set {
        match sel {
            Selection::Field(f) => {
                *aliases += usize::from(f.alias().is_some());
                visit(f.selection_set(), aliases, spreads);
            }
            Selection::InlineFragment(i) => visit(i.selection_set(), aliases, spreads),
            Selection::FragmentSpread(s) => spreads.push(s.fragment_name()),
        }
    }
}

/// Depth-first over the spread graph with an explicit stack (no recursion to exhaust).
fn find_cycle(graph: &[(&str, Vec<&str>)]) -> Result<(), GraphqlError> {
    let index: HashMap<&str, usize, foldhash::fast::RandomState> = graph
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (*n, i))
        .collect();
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state = vec![0u8; graph.len()];
    for start in 0..graph.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        while let Some((node, next)) = stack.last_mut() {
            let (name, edges) = &graph[*node];
            let Some(target) = edges.get(*next) else {
                state[*node] = 2;
                stack.pop();
                continue;
            };
            *next += 1;
            let t = index[target];
            match state[t] {
                1 => {
                    let message = format!("fragment cycle through {name} and {target}");
                    return Err(GraphqlError::Invalid(message));
                }
                0 => {
                    state[t] = 1;
                    stack.push((t, 0));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
