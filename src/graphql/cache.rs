//! A bounded cache of [`Analysis`] so a repeated document costs a hash and a lookup.
//!
//! The key is a seeded 128-bit XXH3 of (schema generation, limits, operation name, document);
//! an analysis whose `node`/`nodes` types came from variables is stored a second time under a
//! key that adds those variables' values. A hit is confirmed by comparing the stored document,
//! name and values byte for byte, so no hash collision, chosen or chance, can lend one
//! document another's judgement. Errors are not cached.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use dashmap::DashMap;
use serde_json::Value;
use xxhash_rust::xxh3::Xxh3;

use super::{Analysis, GraphqlError, Limits, Requirements, Schema, analyse};

struct Entry {
    generation: u64,
    limits: Limits,
    document: Box<str>,
    operation: Option<Box<str>>,
    /// The values of `analysis.gid_variables`, empty for the entry without them.
    values: Vec<Option<Value>>,
    analysis: Arc<Analysis>,
}

pub struct AnalysisCache {
    map: DashMap<u128, Arc<Entry>, foldhash::fast::FixedState>,
    capacity: usize,
    seed: u64,
}

impl std::fmt::Debug for AnalysisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalysisCache")
            .field("len", &self.map.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A `Hasher` over XXH3-128, for hashing `Limits` and JSON values into the key.
struct Wide(Xxh3);

impl Hasher for Wide {
    fn finish(&self) -> u64 {
        self.0.digest()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl AnalysisCache {
    /// Holds at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> AnalysisCache {
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).expect("the operating system provides random bytes");
        AnalysisCache {
            map: DashMap::with_hasher(foldhash::fast::FixedState::default()),
            capacity: capacity.max(1),
            seed: u64::from_le_bytes(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// [`analyse`], answered from the cache when this document was judged before.
    pub fn analyse(
        &self,
        schema: &Schema,
        requirements: &Requirements,
        document: &str,
        operation_name: Option<&str>,
        variables: Option<&Value>,
        limits: &Limits,
    ) -> Result<Arc<Analysis>, GraphqlError> {
        let generation = schema.generation();
        let key = self.key(generation, limits, operation_name, document);
        let same = |e: &Entry| {
            e.generation == generation
                && e.limits == *limits
                && *e.document == *document
                && e.operation.as_deref() == operation_name
        };
        if let Some(entry) = self.map.get(&key).map(|e| Arc::clone(e.value()))
            && same(&entry)
        {
            if entry.analysis.gid_variables.is_empty() {
                return Ok(Arc::clone(&entry.analysis));
            }
            let values = values_of(&entry.analysis.gid_variables, variables);
            let vkey = self.value_key(key, &values);
            if let Some(hit) = self.map.get(&vkey).map(|e| Arc::clone(e.value()))
                && same(&hit)
                // Confirmed against the variables that analysis itself consulted (a GID deciding
                // an outer type can change which inner variables are read).
                && hit.values == values_of(&hit.analysis.gid_variables, variables)
            {
                return Ok(Arc::clone(&hit.analysis));
            }
        }
        let analysis = Arc::new(analyse(
            schema,
            requirements,
            document,
            operation_name,
            variables,
            limits,
        )?);
        let entry = |values| Entry {
            generation,
            limits: *limits,
            document: document.into(),
            operation: operation_name.map(Into::into),
            values,
            analysis: Arc::clone(&analysis),
        };
        self.insert(key, entry(Vec::new()));
        if !analysis.gid_variables.is_empty() {
            let values = values_of(&analysis.gid_variables, variables);
            self.insert(self.value_key(key, &values), entry(values));
        }
        Ok(analysis)
    }

    fn key(
        &self,
        generation: u64,
        limits: &Limits,
        operation: Option<&str>,
        document: &str,
    ) -> u128 {
        let mut h = Wide(Xxh3::with_seed(self.seed));
        generation.hash(&mut h);
        limits.hash(&mut h);
        operation.hash(&mut h);
        h.0.update(document.as_bytes());
        h.0.digest128()
    }

    fn value_key(&self, key: u128, values: &[Option<Value>]) -> u128 {
        let mut h = Wide(Xxh3::with_seed(self.seed ^ 0x9e37_79b9_7f4a_7c15));
        key.hash(&mut h);
        for v in values {
            let text = v.as_ref().map(Value::to_string);
            text.hash(&mut h);
        }
        h.0.digest128()
    }

    /// Full: drop about an eighth of the entries (whichever come first) before inserting.
    fn insert(&self, key: u128, entry: Entry) {
        if self.map.len() >= self.capacity {
            let mut budget = (self.capacity / 8).max(1);
            self.map.retain(|_, _| {
                let drop = budget > 0;
                budget = budget.saturating_sub(1);
                !drop
            });
        }
        self.map.insert(key, Arc::new(entry));
    }
}

fn values_of(names: &[String], variables: Option<&Value>) -> Vec<Option<Value>> {
    names
        .iter()
        .map(|n| variables.and_then(|v| v.get(n)).cloned())
        .collect()
}
