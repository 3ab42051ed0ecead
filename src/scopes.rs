//! Scope names interned to bits, per route file, with implication closed at load time.

use std::collections::HashMap;
use std::fmt;

/// Most scopes one route file may name (aliases share a bit).
pub const MAX_SCOPES: usize = 512;
const WORDS: usize = MAX_SCOPES / 64;

/// A set of interned scopes: a fixed bitset, so checking never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeSet([u64; WORDS]);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet([0; WORDS]);

    pub fn insert(&mut self, bit: u16) {
        self.0[usize::from(bit) / 64] |= 1 << (bit % 64);
    }

    pub fn contains(&self, bit: u16) -> bool {
        self.0[usize::from(bit) / 64] & (1 << (bit % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn union_with(&mut self, other: &ScopeSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
    }

    pub fn remove_all(&mut self, other: &ScopeSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a &= !b;
        }
    }

    /// True when every scope of `needed` is in `self`.
    pub fn contains_all(&self, needed: &ScopeSet) -> bool {
        self.0
            .iter()
            .zip(needed.0.iter())
            .all(|(held, need)| held & need == *need)
    }

    pub fn intersects(&self, other: &ScopeSet) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..MAX_SCOPES as u16).filter(|b| self.contains(*b))
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The scope names of one route file: name -> bit, bit -> canonical name,
/// and for every bit the closed set of scopes it grants (itself plus everything implied).
#[derive(Debug, Default, Clone)]
pub struct Vocabulary {
    bits: HashMap<Box<str>, u16>,
    names: Vec<Box<str>>,
    closure: Vec<ScopeSet>,
}

/// Errors building a vocabulary; the route compiler adds file and line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VocabularyError {
    #[error("more than {MAX_SCOPES} distinct scopes in one route file")]
    TooMany,
    #[error("alias `{alias}` is also a scope of its own")]
    AliasShadowsScope { alias: String },
    #[error("implication cycle: {cycle}")]
    Cycle { cycle: String },
}

impl Vocabulary {
    /// Interns `name` as a canonical scope and returns its bit.
    pub fn intern(&mut self, name: &str) -> Result<u16, VocabularyError> {
        if let Some(bit) = self.bits.get(name) {
            return Ok(*bit);
        }
        if self.names.len() >= MAX_SCOPES {
            return Err(VocabularyError::TooMany);
        }
        let bit = self.names.len() as u16;
        self.bits.insert(name.into(), bit);
        self.names.push(name.into());
        Ok(bit)
    }

    /// Makes `alias` another spelling of `target`.
    pub fn alias(&mut self, alias: &str, target: &str) -> Result<(), VocabularyError> {
        if self.bits.contains_key(alias) {
            return Err(VocabularyError::AliasShadowsScope {
                alias: alias.to_owned(),
            });
        }
        let bit = self.intern(target)?;
        self.bits.insert(alias.into(), bit);
        Ok(())
    }

    pub fn bit(&self, name: &str) -> Option<u16> {
        self.bits.get(name).copied()
    }

    pub fn name(&self, bit: u16) -> &str {
        &self.names[usize::from(bit)]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Closes the implication graph (`edges`: scope -> scopes it implies) so that each
    /// bit's closure holds everything reachable from it. Cycles are configuration errors.
    pub fn close(&mut self, edges: &[(u16, u16)]) -> Result<(), VocabularyError> {
        let n = self.names.len();
        let mut direct = vec![Vec::new(); n];
        for (from, to) in edges {
            direct[usize::from(*from)].push(*to);
        }
        // Depth-first search with colours finds cycles and names them.
        let mut state = vec![0u8; n]; // 0 new, 1 on stack, 2 done
        let mut stack = Vec::new();
        for start in 0..n {
            self.visit(start as u16, &direct, &mut state, &mut stack)?;
        }
        self.closure = (0..n)
            .map(|b| {
                let mut set = ScopeSet::EMPTY;
                let mut todo = vec![b as u16];
                while let Some(x) = todo.pop() {
                    if !set.contains(x) {
                        set.insert(x);
                        todo.extend(direct[usize::from(x)].iter().copied());
                    }
                }
                set
            })
            .collect();
        Ok(())
    }

    fn visit(
        &self,
        node: u16,
        direct: &[Vec<u16>],
        state: &mut [u8],
        stack: &mut Vec<u16>,
    ) -> Result<(), VocabularyError> {
        match state[usize::from(node)] {
            2 => return Ok(()),
            1 => {
                let from = stack.iter().position(|s| *s == node).unwrap_or(0);
                let mut cycle: Vec<&str> = stack[from..].iter().map(|b| self.name(*b)).collect();
                cycle.push(self.name(node));
                return Err(VocabularyError::Cycle {
                    cycle: cycle.join(" -> "),
                });
            }
            _ => {}
        }
        state[usize::from(node)] = 1;
        stack.push(node);
        for next in &direct[usize::from(node)] {
            self.visit(*next, direct, state, stack)?;
        }
        stack.pop();
        state[usize::from(node)] = 2;
        Ok(())
    }

    /// What a token holding these scope names is granted, implication applied.
    /// Names this file does not know grant nothing.
    pub fn grant<'a>(&self, held: impl IntoIterator<Item = &'a str>) -> ScopeSet {
        let mut set = ScopeSet::EMPTY;
        for name in held {
            if let Some(bit) = self.bits.get(name) {
                set.union_with(&self.closure[usize::from(*bit)]);
            }
        }
        set
    }

    /// The canonical names of a set, space-separated (for `scope="..."`).
    pub fn describe(&self, set: &ScopeSet) -> String {
        set.iter()
            .map(|b| self.name(b))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(edges: &[(&str, &str)]) -> Result<Vocabulary, VocabularyError> {
        let mut v = Vocabulary::default();
        let mut e = Vec::new();
        for (a, b) in edges {
            e.push((v.intern(a)?, v.intern(b)?));
        }
        v.close(&e)?;
        Ok(v)
    }

    #[test]
    fn write_implies_read_but_not_the_other_way() {
        let v = vocab(&[("write_orders", "read_orders")]).unwrap();
        let read = v.grant(["read_orders"]);
        let write = v.grant(["write_orders"]);
        let need_read = v.grant(["read_orders"]);
        let need_write = v.grant(["write_orders"]);
        assert!(write.contains_all(&need_read));
        assert!(!read.contains_all(&need_write));
    }

    #[test]
    fn implication_is_transitive() {
        let v = vocab(&[("a", "b"), ("b", "c")]).unwrap();
        assert!(v.grant(["a"]).contains(v.bit("c").unwrap()));
    }

    #[test]
    fn cycles_are_named() {
        let err = vocab(&[("a", "b"), ("b", "a")]).unwrap_err();
        assert_eq!(
            err,
            VocabularyError::Cycle {
                cycle: "a -> b -> a".into()
            }
        );
    }

    #[test]
    fn aliases_share_a_bit_and_unknown_names_grant_nothing() {
        let mut v = Vocabulary::default();
        v.intern("read_orders").unwrap();
        v.alias("read_order", "read_orders").unwrap();
        v.close(&[]).unwrap();
        assert_eq!(v.grant(["read_order"]), v.grant(["read_orders"]));
        assert!(v.grant(["nope"]).is_empty());
    }

    #[test]
    fn sets_over_sixty_four_bits_work() {
        let mut s = ScopeSet::EMPTY;
        s.insert(300);
        assert!(s.contains(300));
        assert!(!s.contains(44));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![300]);
    }
}
