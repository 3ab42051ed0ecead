//! Verified tokens, keyed by a SHA-256 of the token (never the token), bounded and expiring
//! no later than the token. Two generations: inserts go to the young map; when it reaches half
//! the bound it becomes the old map and the previous old map is dropped whole, so eviction is
//! O(1) and the total stays within the bound.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::Mutex;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::Identity;

/// SHA-256 of a token.
pub type TokenHash = [u8; 32];

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Clone)]
struct Entry {
    identity: Arc<Identity>,
    /// Unix seconds after which the entry is stale.
    expires_at: u64,
}

type Map = DashMap<TokenHash, Entry, BuildHasherDefault<PrefixHasher>>;

pub struct TokenCache {
    young: ArcSwap<Map>,
    old: ArcSwap<Map>,
    /// Entries per generation; the cache holds at most twice this.
    half: usize,
    /// Longest an entry may live, whatever the token says.
    max_ttl: u64,
    rotation: Mutex<()>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .finish()
    }
}

impl TokenCache {
    /// A cache holding at most `max_entries` tokens (0 disables caching).
    pub fn new(max_entries: usize, max_ttl: u64) -> TokenCache {
        TokenCache {
            young: ArcSwap::from_pointee(Map::default()),
            old: ArcSwap::from_pointee(Map::default()),
            half: max_entries / 2,
            max_ttl,
            rotation: Mutex::new(()),
        }
    }

    pub fn get(&self, key: &TokenHash, now: u64) -> Option<Arc<Identity>> {
        if self.half == 0 {
            return None;
        }
        let young = self.young.load();
        if let Some(e) = young.get(key) {
            if e.expires_at > now {
                return Some(e.identity.clone());
            }
            drop(e);
            young.remove(key);
            return None;
        }
        let old = self.old.load();
        let entry = old.get(key).map(|e| e.clone())?;
        old.remove(key);
        if entry.expires_at > now {
            let identity = entry.identity.clone();
            self.insert_entry(*key, entry);
            Some(identity)
        } else {
            None
        }
    }

    pub fn insert(&self, key: TokenHash, identity: Arc<Identity>, now: u64) {
        if self.half == 0 {
            return;
        }
        let cap = now.saturating_add(self.max_ttl);
        let expires_at = identity.expires_at.map_or(cap, |exp| exp.min(cap));
        self.insert_entry(
            key,
            Entry {
                identity,
                expires_at,
            },
        );
    }

    fn insert_entry(&self, key: TokenHash, entry: Entry) {
        let young = self.young.load_full();
        young.insert(key, entry);
        if young.len() >= self.half {
            // One thread rotates; the others keep inserting into whichever map is young.
            if let Ok(_guard) = self.rotation.try_lock()
                && Arc::ptr_eq(&young, &self.young.load())
            {
                let retired = self.old.swap(young);
                self.young.store(Arc::new(Map::default()));
                drop(retired);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.young.load().len() + self.old.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key is already a uniform hash: use its first eight bytes as the map hash.
#[derive(Default)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().take(8) {
            self.0 = self.0 << 8 | u64::from(*b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp: Option<u64>) -> Arc<Identity> {
        Arc::new(Identity::new(
            None,
            None,
            None,
            Box::new([]),
            Box::new([]),
            None,
            exp,
        ))
    }

    #[test]
    fn entries_expire_with_the_token() {
        let cache = TokenCache::new(100, 3600);
        let k = hash_token("t");
        cache.insert(k, identity(Some(1_000)), 900);
        assert!(cache.get(&k, 999).is_some());
        assert!(cache.get(&k, 1_000).is_none());
    }

    #[test]
    fn entries_never_outlive_max_ttl() {
        let cache = TokenCache::new(100, 60);
        let k = hash_token("t");
        cache.insert(k, identity(None), 1_000);
        assert!(cache.get(&k, 1_059).is_some());
        assert!(cache.get(&k, 1_060).is_none());
    }

    #[test]
    fn size_stays_within_the_bound() {
        let cache = TokenCache::new(1_000, 3600);
        for i in 0..100_000 {
            cache.insert(hash_token(&i.to_string()), identity(Some(10_000)), 0);
            assert!(cache.len() <= 1_000);
        }
        // Recent tokens survive eviction.
        assert!(cache.get(&hash_token("99999"), 1).is_some());
    }

    #[test]
    fn a_million_distinct_tokens_never_exceed_the_bound() {
        const BOUND: usize = 10_000;
        let cache = TokenCache::new(BOUND, 3600);
        let shared = identity(Some(10_000));
        let mut peak = 0;
        for i in 0..1_000_000u32 {
            cache.insert(hash_token(&format!("token-{i}")), shared.clone(), 0);
            if i % 997 == 0 {
                peak = peak.max(cache.len());
            }
        }
        peak = peak.max(cache.len());
        assert!(peak <= BOUND, "peak {peak} entries over the bound {BOUND}");
        assert!(
            cache.len() >= BOUND / 2,
            "the cache still holds the recent half"
        );
        // Only the map entries and one shared identity remain: old generations were dropped.
        assert_eq!(Arc::strong_count(&shared), cache.len() + 1);
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let cache = TokenCache::new(0, 3600);
        cache.insert(hash_token("t"), identity(Some(10)), 0);
        assert!(cache.get(&hash_token("t"), 1).is_none());
    }
}
