//! The bounded, expiring set of command ids a node or client has already handled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Default cap on remembered ids.
pub const DEFAULT_SEEN_CAPACITY: usize = 100_000;

/// Command ids seen recently, each kept until its expiry time (normally the command's
/// deadline), at most `capacity` of them; when full, the id inserted first is forgotten first.
///
/// Pure: the caller passes the time in. Every call first forgets the ids whose expiry is at or
/// before `now_ms`. Insert, lookup and expiry are `O(log n)`.
#[derive(Debug, Clone)]
pub struct SeenSet {
    capacity: usize,
    /// Insertion number counter; orders entries by age.
    next: u64,
    /// id -> (insertion number, expiry).
    entries: HashMap<Arc<str>, (u64, u64)>,
    /// (expiry, insertion number) -> id, for expiry.
    by_expiry: BTreeMap<(u64, u64), Arc<str>>,
    /// insertion number -> id, for eviction of the oldest.
    by_age: BTreeMap<u64, Arc<str>>,
}

impl Default for SeenSet {
    fn default() -> Self {
        SeenSet::new(DEFAULT_SEEN_CAPACITY)
    }
}

impl SeenSet {
    /// An empty set remembering at most `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        SeenSet {
            capacity: capacity.max(1),
            next: 0,
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    /// Records `id` until `expires_ms`. Returns `true` if it was not already present (the
    /// caller should act on the command), `false` for a duplicate. A duplicate keeps its
    /// original expiry and age.
    ///
    /// An id whose `expires_ms` is already past is still reported new, and forgotten at the
    /// next call.
    pub fn insert(&mut self, id: &str, expires_ms: u64, now_ms: u64) -> bool {
        self.expire(now_ms);
        if self.entries.contains_key(id) {
            return false;
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((age, expiry)) = self.entries.remove(&oldest) {
                self.by_expiry.remove(&(expiry, age));
            }
        }
        let age = self.next;
        self.next += 1;
        let id: Arc<str> = Arc::from(id);
        self.entries.insert(id.clone(), (age, expires_ms));
        self.by_expiry.insert((expires_ms, age), id.clone());
        self.by_age.insert(age, id);
        true
    }

    /// Whether `id` is remembered at `now_ms` (forgets expired ids first).
    pub fn contains(&mut self, id: &str, now_ms: u64) -> bool {
        self.expire(now_ms);
        self.entries.contains_key(id)
    }

    /// Forgets every id whose expiry is at or before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            let (expiry, age) = *entry.key();
            if expiry > now_ms {
                break;
            }
            let id = entry.remove();
            self.entries.remove(&id);
            self.by_age.remove(&age);
        }
    }

    /// Number of remembered ids (including any that expired since the last call).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cap on remembered ids.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
