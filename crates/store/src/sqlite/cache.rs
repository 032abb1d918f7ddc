//! A bounded in-memory cache of current versions, for read-by-id.
//!
//! Every SQLite read, however small, takes WAL shared-memory locks and resets a statement; profiles
//! of read-by-id put that above a quarter of the server's CPU. This process is the database's only
//! writer (the data directory is locked), so it can keep recently read current versions in memory
//! and stay exact:
//!
//! - the writer thread invalidates every resource it touched after the group commits and before it
//!   answers anyone, so a client always reads its own writes;
//! - a reader that missed only fills the cache if its shard's generation is unchanged since the
//!   miss, so a version read from SQLite just before a commit cannot land after that commit's
//!   invalidation.
//!
//! The budget counts resource bytes; when a shard is over it, arbitrary entries are evicted.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use crate::model::StoredVersion;

const SHARDS: usize = 16;

pub(crate) struct VersionCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
}

#[derive(Default)]
struct Shard {
    /// Keyed by the hash of (type, id); a key's list holds the (rare) colliding resources.
    entries: HashMap<u64, Vec<StoredVersion>>,
    bytes: usize,
    generation: u64,
}

/// What a miss remembers so that its fill can be refused if a write intervened.
#[derive(Debug)]
pub(crate) struct Miss {
    shard: usize,
    generation: u64,
}

fn key(resource_type: &str, id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    resource_type.hash(&mut hasher);
    id.hash(&mut hasher);
    hasher.finish()
}

fn size(v: &StoredVersion) -> usize {
    v.body.len() + v.id.len() + v.resource_type.len() + 64
}

impl VersionCache {
    pub fn new(budget_bytes: usize) -> VersionCache {
        VersionCache { shards: (0..SHARDS).map(|_| Mutex::default()).collect(), shard_budget: budget_bytes / SHARDS }
    }

    fn shard_of(hash: u64) -> usize {
        (hash % SHARDS as u64) as usize
    }

    /// The cached current version, or what a later [`VersionCache::fill`] needs.
    pub fn get(&self, resource_type: &str, id: &str) -> Result<StoredVersion, Miss> {
        let hash = key(resource_type, id);
        let shard = Self::shard_of(hash);
        let guard = self.shards[shard].lock().unwrap();
        let found = guard
            .entries
            .get(&hash)
            .and_then(|list| list.iter().find(|v| v.id == id && v.resource_type == resource_type));
        match found {
            Some(v) => Ok(v.clone()),
            None => Err(Miss { shard, generation: guard.generation }),
        }
    }

    /// Caches `version` as read from the database after `miss`, unless a write came in between.
    pub fn fill(&self, miss: Miss, version: &StoredVersion) {
        if self.shard_budget == 0 || size(version) > self.shard_budget / 4 {
            return;
        }
        let hash = key(&version.resource_type, &version.id);
        let mut guard = self.shards[miss.shard].lock().unwrap();
        if guard.generation != miss.generation {
            return;
        }
        let list = guard.entries.entry(hash).or_default();
        if list.iter().any(|v| v.id == version.id && v.resource_type == version.resource_type) {
            return;
        }
        list.push(version.clone());
        guard.bytes += size(version);
        while guard.bytes > self.shard_budget {
            let Some(&victim) = guard.entries.keys().next() else { break };
            if let Some(list) = guard.entries.remove(&victim) {
                guard.bytes -= list.iter().map(size).sum::<usize>();
            }
        }
    }

    /// Forgets the given resources (after their new versions are committed).
    pub fn invalidate<'a>(&self, touched: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (resource_type, id) in touched {
            let hash = key(resource_type, id);
            let mut guard = self.shards[Self::shard_of(hash)].lock().unwrap();
            guard.generation += 1;
            if let Some(list) = guard.entries.get_mut(&hash) {
                let before: usize = list.iter().map(size).sum();
                list.retain(|v| !(v.id == id && v.resource_type == resource_type));
                let after: usize = list.iter().map(size).sum();
                let empty = list.is_empty();
                guard.bytes -= before - after;
                if empty {
                    guard.entries.remove(&hash);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Method;

    fn version(id: &str, v: u64) -> StoredVersion {
        StoredVersion {
            resource_type: "Patient".into(),
            id: id.into(),
            version: v,
            last_updated: 0,
            deleted: false,
            method: Method::Put,
            body: bytes::Bytes::from(vec![b'x'; 100]),
        }
    }

    #[test]
    fn a_write_between_miss_and_fill_wins() {
        let cache = VersionCache::new(1 << 20);
        let miss = cache.get("Patient", "a").unwrap_err();
        cache.invalidate([("Patient", "a")]);
        cache.fill(miss, &version("a", 1));
        assert!(cache.get("Patient", "a").is_err(), "the stale version was not cached");
        let miss = cache.get("Patient", "a").unwrap_err();
        cache.fill(miss, &version("a", 2));
        assert_eq!(cache.get("Patient", "a").unwrap().version, 2);
        cache.invalidate([("Patient", "a")]);
        assert!(cache.get("Patient", "a").is_err());
    }

    #[test]
    fn stays_within_budget() {
        let cache = VersionCache::new(16 * 1024);
        for i in 0..1000 {
            let id = format!("p{i}");
            let miss = cache.get("Patient", &id).unwrap_err();
            cache.fill(miss, &version(&id, 1));
        }
        let total: usize = cache.shards.iter().map(|s| s.lock().unwrap().bytes).sum();
        assert!(total <= 16 * 1024, "{total}");
    }
}
