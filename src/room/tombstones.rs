//! Tombstones of deleted rooms, in memory: which content of a room name was deleted.
//!
//! A deleted room leaves a [`Tombstone`] holding the state vector of what was deleted. Every
//! update for that room name is checked against it before it is applied ([`Gate`]): an update
//! whose insertions are all covered (a stale copy from a client or a node that was offline)
//! is dropped, so the room does not come back; an update carrying an insertion the deleted
//! state never had is an edit made after (or concurrently with) the deletion, and since a
//! saved edit is never thrown away, it *resurrects* the room: the tombstone is removed and
//! the update applied. The store keeps the same tombstones on disk (see
//! [`crate::store::Store::delete_room`]); this is the copy the hot path reads.
//!
//! **Undelete** ([`with_undelete_marker`]) uses that same rule on purpose: an export of a
//! deleted room holds only content the tombstone covers, so it is dropped; merged with one
//! garbage-collected (invisible, contentless) block from a client id the tombstone has never
//! seen, it counts as newer than the deletion. The node that applies it clears its tombstone,
//! and every peer the change reaches (live, or when it links again) does the same, because
//! it runs the same gate. No wire message beyond an ordinary update is needed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use yrs::Update;

use crate::protocol::scan;
use crate::store::Tombstone;

/// What a tombstone says about an update for its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The room has no tombstone.
    Open,
    /// Everything the update inserts was deleted: drop it.
    Covered,
    /// The update inserts something the deleted state did not have: the tombstone is gone
    /// and the room lives again.
    Resurrect,
}

/// The tombstones of one node, by room name.
#[derive(Debug, Default)]
pub struct Tombstones {
    map: Mutex<HashMap<String, Tombstone>>,
    /// `map.len()`, readable without the lock (the common case is zero).
    len: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tombstones {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tombstone of `room`, if it has one.
    pub fn get(&self, room: &str) -> Option<Tombstone> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        lock(&self.map).get(room).cloned()
    }

    /// Records `t`, merged with an existing tombstone of the same room. Returns the result.
    pub fn merge(&self, t: Tombstone) -> Tombstone {
        let mut map = lock(&self.map);
        let out = match map.get_mut(&t.room) {
            Some(existing) => {
                existing.merge(&t);
                existing.clone()
            }
            None => {
                map.insert(t.room.clone(), t.clone());
                t
            }
        };
        self.len.store(map.len(), Ordering::Release);
        out
    }

    /// Removes `room`'s tombstone.
    pub fn remove(&self, room: &str) -> Option<Tombstone> {
        let mut map = lock(&self.map);
        let t = map.remove(room);
        self.len.store(map.len(), Ordering::Release);
        t
    }

    /// Every tombstone, by room name.
    pub fn all(&self) -> Vec<Tombstone> {
        let mut v: Vec<Tombstone> = lock(&self.map).values().cloned().collect();
        v.sort_by(|a, b| a.room.cmp(&b.room));
        v
    }

    /// Forgets tombstones of deletions before `before_ms`; returns how many.
    pub fn purge(&self, before_ms: u64) -> usize {
        let mut map = lock(&self.map);
        let n = map.len();
        map.retain(|_, t| t.deleted_ms >= before_ms);
        self.len.store(map.len(), Ordering::Release);
        n - map.len()
    }

    /// Checks `update` for `room` against its tombstone; on [`Gate::Resurrect`] the
    /// tombstone is removed here.
    pub fn gate(&self, room: &str, update: &Update) -> Gate {
        if self.len.load(Ordering::Acquire) == 0 {
            return Gate::Open;
        }
        let mut map = lock(&self.map);
        let Some(t) = map.get(room) else {
            return Gate::Open;
        };
        if update_covered(&t.state_vector, update) {
            return Gate::Covered;
        }
        map.remove(room);
        self.len.store(map.len(), Ordering::Release);
        Gate::Resurrect
    }
}

/// `update` merged with an undelete marker: one garbage-collected block (no content, no
/// type: a Yjs client integrates it without any visible change) of length 1 at clock 0 of a
/// random client id that neither `tombstone` nor `update` knows. The result passes the
/// [`Gate`] as [`Gate::Resurrect`] wherever a tombstone at most as new as `tombstone` stands.
pub fn with_undelete_marker(update: &[u8], tombstone: &Tombstone) -> Result<Vec<u8>, String> {
    let decoded = scan::decode_update(update).map_err(|e| e.to_string())?;
    let deleted = scan::decode_state_vector(&tombstone.state_vector).unwrap_or_default();
    let known = decoded.state_vector();
    let client = loop {
        // Yjs client ids are 32-bit; 0 is avoided only to keep the marker obviously synthetic.
        let c = u64::from(rand::random::<u32>().max(1));
        let id = yrs::block::ClientID::new(c);
        if deleted.get(&id) == 0 && known.get(&id) == 0 {
            break c;
        }
    };
    let marker = undelete_marker(client);
    yrs::merge_updates_v1([update, marker.as_slice()]).map_err(|e| e.to_string())
}

/// The Yjs v1 update holding one GC block of length 1 at clock 0 of `client`, and an empty
/// delete set.
fn undelete_marker(client: u64) -> Vec<u8> {
    fn var_uint(out: &mut Vec<u8>, mut n: u64) {
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    // Clients with blocks: 1; blocks of this client: 1; the client; first clock 0.
    let mut out = vec![1, 1];
    var_uint(&mut out, client);
    // Clock 0, then the block: info 0 (GC) and length 1; then an empty delete set.
    out.extend_from_slice(&[0, 0, 1, 0]);
    out
}

/// Whether every insertion of `update` (deleted or not) lies within the encoded state vector
/// `deleted`. Deletions alone never count: deleting content of a deleted room loses nothing.
pub fn update_covered(deleted: &[u8], update: &Update) -> bool {
    let sv = scan::decode_state_vector(deleted).unwrap_or_default();
    update
        .insertions(true)
        .iter()
        .all(|(client, ranges)| ranges.iter().all(|r| r.end <= sv.get(client)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::updates::encoder::Encode;
    use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact};

    fn tomb(room: &str, sv: Vec<u8>, at: u64) -> Tombstone {
        Tombstone {
            room: room.into(),
            deleted_ms: at,
            state_vector: sv,
            origin: "node".into(),
        }
    }

    fn edit(doc: &Doc, s: &str) -> Vec<u8> {
        let text = doc.get_or_insert_text("t");
        let before = doc.transact().state_vector();
        let mut txn = doc.transact_mut();
        let len = text.get_string(&txn).len() as u32;
        text.insert(&mut txn, len, s);
        drop(txn);
        doc.transact().encode_state_as_update_v1(&before)
    }

    #[test]
    fn stale_content_is_covered_and_new_edits_resurrect() {
        let doc = Doc::with_client_id(7);
        let first = edit(&doc, "hello");
        let deleted_sv = doc.transact().state_vector().encode_v1();
        let tombs = Tombstones::new();
        tombs.merge(tomb("r", deleted_sv, 1));

        // The whole deleted state, or part of it, is covered.
        let full = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let u = Update::decode_v1(&full).unwrap();
        assert_eq!(tombs.gate("r", &u), Gate::Covered);
        let u = Update::decode_v1(&first).unwrap();
        assert_eq!(tombs.gate("r", &u), Gate::Covered);
        // Other rooms are not affected.
        assert_eq!(tombs.gate("other", &u), Gate::Open);

        // A later edit (an incremental update starting past the deleted clock) resurrects.
        let later = edit(&doc, " again");
        let u = Update::decode_v1(&later).unwrap();
        assert_eq!(tombs.gate("r", &u), Gate::Resurrect);
        assert!(tombs.get("r").is_none());
        assert_eq!(tombs.gate("r", &u), Gate::Open);
    }

    #[test]
    fn another_clients_concurrent_edit_resurrects() {
        let a = Doc::with_client_id(1);
        edit(&a, "a");
        let tombs = Tombstones::new();
        tombs.merge(tomb("r", a.transact().state_vector().encode_v1(), 1));
        let b = Doc::with_client_id(2);
        let u = Update::decode_v1(&edit(&b, "b")).unwrap();
        assert_eq!(tombs.gate("r", &u), Gate::Resurrect);
    }

    #[test]
    fn deletion_only_updates_are_covered() {
        let doc = Doc::with_client_id(3);
        edit(&doc, "abc");
        let sv = doc.transact().state_vector();
        let tombs = Tombstones::new();
        tombs.merge(tomb("r", sv.encode_v1(), 1));
        let text = doc.get_or_insert_text("t");
        text.remove_range(&mut doc.transact_mut(), 0, 1);
        let del = doc.transact().encode_state_as_update_v1(&sv);
        let u = Update::decode_v1(&del).unwrap();
        assert_eq!(tombs.gate("r", &u), Gate::Covered);
    }

    #[test]
    fn an_undelete_marker_brings_back_covered_content_invisibly() {
        let doc = Doc::with_client_id(7);
        edit(&doc, "hello");
        let deleted_sv = doc.transact().state_vector().encode_v1();
        let tombs = Tombstones::new();
        let t = tomb("r", deleted_sv, 1);
        tombs.merge(t.clone());
        let export = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(
            tombs.gate("r", &Update::decode_v1(&export).unwrap()),
            Gate::Covered
        );
        let restored = with_undelete_marker(&export, &t).unwrap();
        let u = Update::decode_v1(&restored).unwrap();
        assert_eq!(tombs.gate("r", &u), Gate::Resurrect);
        // Applied, it gives exactly the exported content: the marker adds no type and no text.
        let back = Doc::new();
        back.transact_mut().apply_update(u).unwrap();
        let txn = back.transact();
        assert_eq!(txn.root_refs().count(), 1);
        assert_eq!(
            txn.get_text("t").map(|t| t.get_string(&txn)),
            Some("hello".to_string())
        );
        // One more client in the state vector, with clock 1.
        let sv = txn.state_vector();
        assert_eq!(sv.len(), 2);
        assert!(sv
            .iter()
            .any(|(c, clock)| *c != yrs::block::ClientID::new(7) && *clock == 1));
        assert!(with_undelete_marker(b"garbage", &t).is_err());
    }

    #[test]
    fn merge_keeps_the_union_and_the_latest_time() {
        let tombs = Tombstones::new();
        let a: StateVector = [(yrs::block::ClientID::new(1), 5u32)].into_iter().collect();
        let b: StateVector = [
            (yrs::block::ClientID::new(1), 3u32),
            (yrs::block::ClientID::new(2), 4u32),
        ]
        .into_iter()
        .collect();
        tombs.merge(tomb("r", a.encode_v1(), 10));
        let mut t2 = tomb("r", b.encode_v1(), 20);
        t2.origin = "other".into();
        let m = tombs.merge(t2);
        let sv = StateVector::decode_v1(&m.state_vector).unwrap();
        assert_eq!(sv.get(&yrs::block::ClientID::new(1)), 5);
        assert_eq!(sv.get(&yrs::block::ClientID::new(2)), 4);
        assert_eq!(m.deleted_ms, 20);
        assert_eq!(m.origin, "other");
        assert_eq!(tombs.purge(15), 0);
        assert_eq!(tombs.purge(25), 1);
        assert!(tombs.all().is_empty());
    }
}
