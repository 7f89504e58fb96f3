//! [`AwarenessTable`]: the awareness states of one room's clients (cursors, names,
//! selections), kept by the room itself.
//!
//! The node relays awareness; it never has a state of its own. It needs, per client id, the
//! newest clock it has seen and the state as JSON text, to decide whether an update is news
//! (and so is broadcast), to answer a joining client or a QueryAwareness with every present
//! state, and to remove the states a session or peer link introduced when it ends.
//!
//! The rules are y-protocols' as yrs applies them: an entry replaces what is known of its
//! client when its clock is higher, or when it has the same clock and removes a present
//! state; a client seen for the first time is taken whatever its clock. A removed client
//! stays known by its clock (a tombstone), so a delayed, older state cannot bring it back.
//!
//! This table replaced yrs' `Awareness`, whose `DashMap` costs one 128-byte cache-padded
//! shard per 4 cores' worth of shards (1 KiB per room on 2 cores, 8 KiB on 16) before the
//! first entry, and one hash table per shard a client lands in; here a room with no clients
//! holds nothing on the heap and each client costs one map slot.

use std::collections::HashMap;

use yrs::encoding::write::Write;

use super::fanout::AwarenessChange;
use super::ClientId;
use crate::protocol::scan::AwarenessEntry;

/// What the room knows of one client's awareness.
#[derive(Debug)]
struct ClientState {
    /// The newest clock seen for the client.
    clock: u32,
    /// The state as JSON text; `None` once the client is gone (a tombstone).
    state: Option<Box<str>>,
}

/// The awareness states of one room, by client id. See the module docs.
#[derive(Debug, Default)]
pub(super) struct AwarenessTable {
    clients: HashMap<ClientId, ClientState>,
}

impl AwarenessTable {
    /// Applies the entries of one update in wire order. Returns what changed, or `None` when
    /// nothing did (the update is then not news and is not forwarded).
    pub(super) fn apply(&mut self, entries: &[AwarenessEntry<'_>]) -> Option<AwarenessChange> {
        let mut change = AwarenessChange::default();
        for e in entries {
            let client = ClientId::new(e.client);
            let new = (!e.is_removal()).then_some(e.state);
            match self.clients.get_mut(&client) {
                Some(known) => {
                    let removes_present =
                        known.clock == e.clock && new.is_none() && known.state.is_some();
                    if known.clock >= e.clock && !removes_present {
                        continue;
                    }
                    known.clock = e.clock;
                    match new {
                        None => {
                            known.state = None;
                            change.removed.push(client);
                        }
                        Some(state) => {
                            if known.state.as_deref() != Some(state) {
                                known.state = Some(state.into());
                            }
                            change.present.push(client);
                        }
                    }
                }
                None => {
                    self.clients.insert(
                        client,
                        ClientState {
                            clock: e.clock,
                            state: new.map(Box::from),
                        },
                    );
                    if new.is_some() {
                        change.present.push(client);
                    }
                }
            }
        }
        (!change.present.is_empty() || !change.removed.is_empty()).then_some(change)
    }

    /// Removes the present states of `clients` (their clocks move one past the removed
    /// state, as a client's own removal does) and returns the update that announces it, or
    /// `None` when none of them had a state.
    pub(super) fn remove<'a>(
        &mut self,
        clients: impl IntoIterator<Item = &'a ClientId>,
    ) -> Option<Vec<u8>> {
        let mut removed: Vec<(ClientId, u32)> = Vec::new();
        for client in clients {
            if let Some(known) = self.clients.get_mut(client) {
                if known.state.take().is_some() {
                    known.clock = known.clock.saturating_add(1);
                    removed.push((*client, known.clock));
                }
            }
        }
        if removed.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(1 + removed.len() * 16);
        out.write_var(removed.len());
        for (client, clock) in removed {
            write_entry(&mut out, client, clock, "null");
        }
        Some(out)
    }

    /// Every present state as one update, or `None` when no client has one.
    pub(super) fn encode_present(&self) -> Option<Vec<u8>> {
        let present = || {
            self.clients
                .iter()
                .filter_map(|(c, s)| s.state.as_deref().map(|state| (*c, s.clock, state)))
        };
        let (count, bytes) =
            present().fold((0usize, 1), |(n, b), (_, _, s)| (n + 1, b + 16 + s.len()));
        if count == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(bytes);
        out.write_var(count);
        for (client, clock, state) in present() {
            write_entry(&mut out, client, clock, state);
        }
        Some(out)
    }

    /// How many clients have a present state.
    #[cfg(test)]
    pub(super) fn present(&self) -> usize {
        self.clients.values().filter(|s| s.state.is_some()).count()
    }
}

/// Past this many ids a [`ClientIds`] becomes a hash set.
const FEW_IDS: usize = 8;

/// The awareness client ids one session introduced and has not removed, to remove when it
/// leaves. A stock client introduces one, so this is a short vector (24 bytes, one small
/// allocation), becoming a hash set past [`FEW_IDS`] ids so that a client naming thousands
/// still costs O(1) per id.
#[derive(Debug)]
pub(super) enum ClientIds {
    Few(Vec<ClientId>),
    #[expect(
        clippy::box_collection,
        reason = "boxed, the set keeps the enum at a vector's 24 bytes (one per session)"
    )]
    Many(Box<std::collections::HashSet<ClientId>>),
}

impl Default for ClientIds {
    fn default() -> Self {
        ClientIds::Few(Vec::new())
    }
}

impl ClientIds {
    /// Adds `id` (once).
    pub(super) fn insert(&mut self, id: ClientId) {
        match self {
            ClientIds::Few(v) if v.contains(&id) => {}
            ClientIds::Few(v) if v.len() < FEW_IDS => v.push(id),
            ClientIds::Few(v) => {
                let mut set: std::collections::HashSet<ClientId> = v.drain(..).collect();
                set.insert(id);
                *self = ClientIds::Many(Box::new(set));
            }
            ClientIds::Many(set) => {
                set.insert(id);
            }
        }
    }

    /// Removes `id` if present.
    pub(super) fn remove(&mut self, id: &ClientId) {
        match self {
            ClientIds::Few(v) => v.retain(|c| c != id),
            ClientIds::Many(set) => {
                set.remove(id);
            }
        }
    }

    /// The ids, in no particular order.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = &ClientId> + '_> {
        match self {
            ClientIds::Few(v) => Box::new(v.iter()),
            ClientIds::Many(set) => Box::new(set.iter()),
        }
    }
}

/// `varUint client · varUint clock · varString state`.
fn write_entry(out: &mut Vec<u8>, client: ClientId, clock: u32, state: &str) {
    out.write_var(client.get());
    out.write_var(clock);
    out.write_string(state);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::scan::decode_awareness;

    fn entry(client: u64, clock: u32, state: &str) -> AwarenessEntry<'_> {
        AwarenessEntry {
            client,
            clock,
            state,
        }
    }

    fn ids(v: &[u64]) -> Vec<ClientId> {
        v.iter().map(|&c| ClientId::new(c)).collect()
    }

    #[test]
    fn a_newer_clock_replaces_an_older_or_equal_one_does_not() {
        let mut t = AwarenessTable::default();
        let c = t.apply(&[entry(1, 0, r#"{"a":1}"#)]).unwrap();
        assert_eq!(c.present, ids(&[1]));
        assert!(t.apply(&[entry(1, 0, r#"{"a":2}"#)]).is_none());
        // A renewal with the same state is news: stock clients wait for its echo.
        let c = t.apply(&[entry(1, 1, r#"{"a":1}"#)]).unwrap();
        assert_eq!(c.present, ids(&[1]));
        let c = t.apply(&[entry(1, 2, r#"{"a":2}"#)]).unwrap();
        assert_eq!(c.present, ids(&[1]));
        assert_eq!(t.present(), 1);
    }

    #[test]
    fn removal_leaves_a_tombstone_that_older_states_cannot_pass() {
        let mut t = AwarenessTable::default();
        t.apply(&[entry(1, 3, "{}")]);
        // Same clock, null: removes the present state.
        let c = t.apply(&[entry(1, 3, "null")]).unwrap();
        assert_eq!(c.removed, ids(&[1]));
        assert_eq!(t.present(), 0);
        // A delayed older state is not news, nor a repeated removal at the same clock.
        assert!(t.apply(&[entry(1, 2, "{}")]).is_none());
        assert!(t.apply(&[entry(1, 3, "null")]).is_none());
        assert!(t.encode_present().is_none());
        // A newer one brings the client back.
        let c = t.apply(&[entry(1, 4, "{}")]).unwrap();
        assert_eq!(c.present, ids(&[1]));
    }

    #[test]
    fn an_unknown_client_removed_is_remembered_but_not_news() {
        let mut t = AwarenessTable::default();
        assert!(t.apply(&[entry(9, 5, "null")]).is_none());
        assert!(t.apply(&[entry(9, 4, "{}")]).is_none());
        assert!(t.apply(&[entry(9, 6, "{}")]).is_some());
    }

    #[test]
    fn remove_bumps_the_clock_and_encodes_the_removal() {
        let mut t = AwarenessTable::default();
        t.apply(&[entry(1, 7, "{}"), entry(2, 1, r#"{"b":true}"#)]);
        assert!(
            t.remove(&ids(&[3])).is_none(),
            "unknown clients change nothing"
        );
        let update = t.remove(&ids(&[1, 3])).unwrap();
        assert_eq!(
            decode_awareness(&update).unwrap(),
            vec![entry(1, 8, "null")]
        );
        assert!(t.remove(&ids(&[1])).is_none(), "already removed");
        // The client's own removal at the old clock is stale now.
        assert!(t.apply(&[entry(1, 7, "null")]).is_none());
        let all = t.encode_present().unwrap();
        assert_eq!(
            decode_awareness(&all).unwrap(),
            vec![entry(2, 1, r#"{"b":true}"#)]
        );
    }

    #[test]
    fn encode_present_round_trips_every_present_state() {
        let mut t = AwarenessTable::default();
        assert!(t.encode_present().is_none());
        let states: Vec<String> = (0..50).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
        let entries: Vec<_> = (0..50u64)
            .map(|i| entry(i * 1_000_003, i as u32, &states[i as usize]))
            .collect();
        t.apply(&entries);
        t.apply(&[entry(0, 9, "null")]);
        let all = t.encode_present().unwrap();
        let mut back = decode_awareness(&all).unwrap();
        back.sort_by_key(|e| e.client);
        assert_eq!(back, entries[1..].to_vec());
    }

    #[test]
    fn client_ids_stay_a_set_past_the_short_vector() {
        let mut ids = ClientIds::default();
        for round in 0..2 {
            for c in 0..100u64 {
                ids.insert(ClientId::new(c % 20));
            }
            let mut all: Vec<u64> = ids.iter().map(|c| c.get()).collect();
            all.sort_unstable();
            assert_eq!(all, (0..20).collect::<Vec<_>>(), "round {round}");
        }
        assert!(matches!(ids, ClientIds::Many(_)));
        for c in 0..19u64 {
            ids.remove(&ClientId::new(c));
        }
        assert_eq!(ids.iter().map(|c| c.get()).collect::<Vec<_>>(), vec![19]);
        let mut few = ClientIds::default();
        few.insert(ClientId::new(7));
        few.insert(ClientId::new(7));
        assert!(matches!(&few, ClientIds::Few(v) if v.len() == 1));
        few.remove(&ClientId::new(7));
        assert_eq!(few.iter().count(), 0);
    }
}
