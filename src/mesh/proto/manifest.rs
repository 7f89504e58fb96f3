//! Room manifests: which rooms a link must sync, and which rooms a peer may see.
//!
//! This module owns the decision "which rooms need a SyncStep1 on this link", free of I/O.
//! After the handshake each side sends a manifest (every room it shares with the peer, name
//! and digest) and then deltas as rooms change. Comparing the peer's manifest with our own
//! rooms gives the rooms to sync: ours that the peer lacks, theirs that we lack, and those
//! whose digests differ. Each of them gets a SyncStep1 in each direction (each side computes
//! its own list and sends its own SyncStep1s, all at once, not one round trip after
//! another). Equal digests need nothing.
//!
//! A digest is the hex SHA-256 of a room's canonical state vector (from the store, without
//! loading the room). A state vector only counts insertions, so an update that only
//! deletes leaves the digest as it was: two rooms with equal digests can still differ in
//! what is deleted. Two escape hatches cover that:
//!
//! - every room in a received [`Control::ManifestDelta`] is synced whatever its digest
//!   (the peer says it changed, and that is reason enough), and
//! - [`PeerManifest::on_manifest`] takes a `forced` set: rooms that changed here since the
//!   last exchange with this peer (e.g. from [`crate::store::Store`]'s changed-since
//!   marker), synced even when the digests agree.
//!
//! Which rooms a peer may see is its [`SharePolicy`]: a room outside it is never announced
//! to the peer, and the peer's entries for it are ignored.

use std::collections::{BTreeMap, BTreeSet};

use crate::mesh::wire::{Control, ManifestEntry};

/// Default budget for one manifest chunk, in bytes of JSON.
pub const MANIFEST_CHUNK_BYTES: usize = 256 * 1024;

/// Which rooms are shared with one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SharePolicy {
    /// Every room (the default).
    #[default]
    All,
    /// Exactly these room names.
    List(Vec<String>),
    /// Rooms whose names match any of these patterns ([`glob_match`]).
    Globs(Vec<String>),
}

impl SharePolicy {
    /// Whether `room` is shared under this policy.
    pub fn allows(&self, room: &str) -> bool {
        match self {
            SharePolicy::All => true,
            SharePolicy::List(names) => names.iter().any(|n| n == room),
            SharePolicy::Globs(patterns) => patterns.iter().any(|p| glob_match(p, room)),
        }
    }
}

/// Matches `text` against a glob `pattern`: `*` matches any run of characters (including
/// none, and including `/`), `?` matches exactly one character, every other character
/// matches itself. The whole name must match. Runs in O(pattern × text) at worst.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it is currently standing in for.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Why a room is on the sync list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SyncReason {
    /// We hold the room and the peer does not.
    MissingOnPeer,
    /// The peer holds the room and we do not.
    MissingHere,
    /// Both hold it with different digests.
    DigestDiffers,
    /// It changed since the last exchange (a received delta, or a forced room), whatever
    /// the digests say.
    Changed,
}

/// One room to sync: send it a SyncStep1 (and answer the peer's).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomToSync {
    /// The room name.
    pub room: String,
    /// Why.
    pub reason: SyncReason,
}

/// Our rooms as the manifest functions take them (name → digest), from the store's
/// metadata ([`crate::store::Store`] lists it without loading documents).
pub fn digests<'a>(
    metas: impl IntoIterator<Item = &'a crate::store::RoomMeta>,
) -> BTreeMap<String, String> {
    metas
        .into_iter()
        .map(|m| (m.name.clone(), m.digest.clone()))
        .collect()
}

impl From<&crate::store::RoomMeta> for ManifestEntry {
    fn from(meta: &crate::store::RoomMeta) -> Self {
        ManifestEntry {
            name: meta.name.clone(),
            digest: meta.digest.clone(),
        }
    }
}

/// Rooms to sync between `ours` and `theirs` (both name → digest), limited to rooms that
/// `policy` allows, sorted by name. Rooms in `forced` that either side holds are synced
/// even when the digests agree.
pub fn diff(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
    forced: &BTreeSet<String>,
    policy: &SharePolicy,
) -> Vec<RoomToSync> {
    let names: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    names
        .into_iter()
        .filter(|name| policy.allows(name))
        .filter_map(|name| {
            let reason = match (ours.get(name), theirs.get(name)) {
                (Some(_), None) => SyncReason::MissingOnPeer,
                (None, Some(_)) => SyncReason::MissingHere,
                (Some(a), Some(b)) if a != b => SyncReason::DigestDiffers,
                _ if forced.contains(name) => SyncReason::Changed,
                _ => return None,
            };
            Some(RoomToSync {
                room: name.clone(),
                reason,
            })
        })
        .collect()
}

/// Splits a manifest into [`Control::Manifest`] messages of about `max_chunk_bytes` of JSON
/// each (at least one entry per chunk), `complete` set on the last. An empty manifest is one
/// empty, complete chunk.
pub fn manifest_chunks(
    entries: impl IntoIterator<Item = ManifestEntry>,
    max_chunk_bytes: usize,
) -> Vec<Control> {
    // {"type":"manifest","rooms":[],"complete":false}
    const OVERHEAD: usize = 48;
    let mut chunks = Vec::new();
    let mut rooms = Vec::new();
    let mut size = OVERHEAD;
    for entry in entries {
        let len = serde_json::to_string(&entry).map_or(0, |s| s.len()) + 1;
        if !rooms.is_empty() && size + len > max_chunk_bytes {
            chunks.push(std::mem::take(&mut rooms));
            size = OVERHEAD;
        }
        size += len;
        rooms.push(entry);
    }
    chunks.push(rooms);
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, rooms)| Control::Manifest {
            rooms,
            complete: i == last,
        })
        .collect()
}

/// What one link knows about its peer's rooms, and the peer's share policy.
///
/// Feed it the peer's `Manifest` chunks and `ManifestDelta`s; it answers with the rooms to
/// sync. It also builds what we announce to the peer, filtered by the policy.
#[derive(Debug, Clone, Default)]
pub struct PeerManifest {
    policy: SharePolicy,
    /// The peer's rooms as last heard: name → digest.
    theirs: BTreeMap<String, String>,
    /// A manifest being received in chunks.
    receiving: Option<BTreeMap<String, String>>,
    /// Whether a complete manifest arrived on this link.
    complete: bool,
}

impl PeerManifest {
    /// Nothing known yet about the peer; share by `policy`.
    pub fn new(policy: SharePolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// The share policy for this peer.
    pub fn policy(&self) -> &SharePolicy {
        &self.policy
    }

    /// Our manifest for this peer (`ours`: name → digest), filtered by the policy and
    /// chunked ([`MANIFEST_CHUNK_BYTES`]).
    pub fn outgoing_manifest(&self, ours: &BTreeMap<String, String>) -> Vec<Control> {
        manifest_chunks(
            ours.iter()
                .filter(|(name, _)| self.policy.allows(name))
                .map(|(name, digest)| ManifestEntry {
                    name: name.clone(),
                    digest: digest.clone(),
                }),
            MANIFEST_CHUNK_BYTES,
        )
    }

    /// A delta announcing our `changed` rooms, filtered by the policy; `None` if none is
    /// shared with this peer. Leave out rooms whose change came from this peer (split
    /// horizon): it has them already.
    pub fn outgoing_delta(
        &self,
        changed: impl IntoIterator<Item = ManifestEntry>,
    ) -> Option<Control> {
        let changed: Vec<_> = changed
            .into_iter()
            .filter(|e| self.policy.allows(&e.name))
            .collect();
        (!changed.is_empty()).then_some(Control::ManifestDelta { changed })
    }

    /// Takes one chunk of the peer's manifest. When `complete`, returns the rooms to sync
    /// against `ours` (and `forced`, see [`diff`]) and replaces what is known of the peer.
    /// Before that, returns `None`.
    pub fn on_manifest(
        &mut self,
        rooms: Vec<ManifestEntry>,
        complete: bool,
        ours: &BTreeMap<String, String>,
        forced: &BTreeSet<String>,
    ) -> Option<Vec<RoomToSync>> {
        let receiving = self.receiving.get_or_insert_with(BTreeMap::new);
        for entry in rooms {
            if self.policy.allows(&entry.name) {
                receiving.insert(entry.name, entry.digest);
            }
        }
        if !complete {
            return None;
        }
        self.theirs = self.receiving.take().unwrap_or_default();
        self.complete = true;
        Some(diff(ours, &self.theirs, forced, &self.policy))
    }

    /// Takes a delta from the peer: every changed room the policy allows is synced, whatever
    /// its digest (a delete-only change keeps the digest), and its new digest recorded.
    pub fn on_delta(&mut self, changed: Vec<ManifestEntry>) -> Vec<RoomToSync> {
        let mut out = BTreeSet::new();
        for entry in changed {
            if !self.policy.allows(&entry.name) {
                continue;
            }
            if let Some(receiving) = &mut self.receiving {
                receiving.insert(entry.name.clone(), entry.digest.clone());
            }
            self.theirs.insert(entry.name.clone(), entry.digest);
            out.insert(RoomToSync {
                room: entry.name,
                reason: SyncReason::Changed,
            });
        }
        out.into_iter().collect()
    }

    /// Whether a complete manifest from the peer has arrived.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The peer's last known digest of `room`.
    pub fn peer_digest(&self, room: &str) -> Option<&str> {
        self.theirs.get(room).map(String::as_str)
    }

    /// Whether the peer last reported `our_digest` for `room` (same inserted content; see
    /// the module docs about deletions).
    pub fn is_synced(&self, room: &str, our_digest: &str) -> bool {
        self.peer_digest(room) == Some(our_digest)
    }

    /// The peer's rooms as last heard, by name.
    pub fn peer_rooms(&self) -> &BTreeMap<String, String> {
        &self.theirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn entries(pairs: &[(&str, &str)]) -> Vec<ManifestEntry> {
        pairs
            .iter()
            .map(|(k, v)| ManifestEntry {
                name: k.to_string(),
                digest: v.to_string(),
            })
            .collect()
    }

    fn rooms(list: &[RoomToSync]) -> Vec<(&str, SyncReason)> {
        list.iter().map(|r| (r.room.as_str(), r.reason)).collect()
    }

    #[test]
    fn globs() {
        let cases = [
            ("*", "", true),
            ("*", "anything/at all", true),
            ("", "", true),
            ("", "a", false),
            ("notes", "notes", true),
            ("notes", "notes2", false),
            ("notes*", "notes", true),
            ("notes*", "notes/2024", true),
            ("*/draft", "team/a/draft", true),
            ("*/draft", "draft", false),
            ("team-?", "team-a", true),
            ("team-?", "team-ab", false),
            ("team-?", "team-é", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYcZ", false),
            ("a*b*c", "abcbc", true),
            ("*a*a*a*a*b", &"a".repeat(40), false),
            ("**", "x", true),
            ("?*?", "ab", true),
            ("?*?", "a", false),
            ("[abc]", "[abc]", true),
            ("[abc]", "a", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_match(pattern, text), want, "{pattern:?} vs {text:?}");
        }
    }

    #[test]
    fn policies() {
        assert!(SharePolicy::All.allows("x"));
        assert_eq!(SharePolicy::default(), SharePolicy::All);
        let list = SharePolicy::List(vec!["a".into(), "b*".into()]);
        assert!(list.allows("a"));
        assert!(list.allows("b*"));
        assert!(!list.allows("bc"), "a list is exact names, not patterns");
        let globs = SharePolicy::Globs(vec!["team/*".into(), "notes".into()]);
        assert!(globs.allows("team/x"));
        assert!(globs.allows("notes"));
        assert!(!globs.allows("private"));
        assert!(!SharePolicy::Globs(vec![]).allows("x"));
    }

    #[test]
    fn diff_finds_missing_and_differing_rooms() {
        let ours = map(&[
            ("both-same", "d1"),
            ("both-diff", "d2"),
            ("only-ours", "d3"),
        ]);
        let theirs = map(&[
            ("both-same", "d1"),
            ("both-diff", "XX"),
            ("only-theirs", "d4"),
        ]);
        let got = diff(&ours, &theirs, &BTreeSet::new(), &SharePolicy::All);
        assert_eq!(
            rooms(&got),
            vec![
                ("both-diff", SyncReason::DigestDiffers),
                ("only-ours", SyncReason::MissingOnPeer),
                ("only-theirs", SyncReason::MissingHere),
            ]
        );
        // Forced rooms are synced despite equal digests; a forced room nobody holds is not.
        let forced = ["both-same".to_string(), "ghost".to_string()].into();
        let got = diff(&ours, &theirs, &forced, &SharePolicy::All);
        assert!(rooms(&got).contains(&("both-same", SyncReason::Changed)));
        assert!(!rooms(&got).iter().any(|(r, _)| *r == "ghost"));
        // Identical manifests: nothing to do.
        assert!(diff(&ours, &ours, &BTreeSet::new(), &SharePolicy::All).is_empty());
    }

    #[test]
    fn diff_respects_the_policy() {
        let ours = map(&[("pub/a", "1"), ("secret", "2")]);
        let theirs = map(&[("pub/b", "3"), ("secret2", "4")]);
        let policy = SharePolicy::Globs(vec!["pub/*".into()]);
        let got = diff(&ours, &theirs, &BTreeSet::new(), &policy);
        assert_eq!(
            rooms(&got),
            vec![
                ("pub/a", SyncReason::MissingOnPeer),
                ("pub/b", SyncReason::MissingHere)
            ]
        );
    }

    #[test]
    fn chunks_split_by_size_and_mark_the_last() {
        assert_eq!(
            manifest_chunks(Vec::new(), 100),
            vec![Control::Manifest {
                rooms: vec![],
                complete: true
            }]
        );
        let many: Vec<_> = (0..1000)
            .map(|i| ManifestEntry {
                name: format!("room-{i:04}"),
                digest: "ab".repeat(32),
            })
            .collect();
        let chunks = manifest_chunks(many.clone(), 10_000);
        assert!(chunks.len() > 1);
        let mut all = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let Control::Manifest { rooms, complete } = c else {
                panic!()
            };
            assert_eq!(*complete, i == chunks.len() - 1);
            assert!(!rooms.is_empty());
            assert!(c.to_json().len() <= 10_000, "chunk {i} too big");
            all.extend(rooms.iter().cloned());
        }
        assert_eq!(all, many);
        // An entry bigger than the budget still goes out, alone.
        let big = manifest_chunks(entries(&[("x", "1"), ("y", "2")]), 1);
        assert_eq!(big.len(), 2);
    }

    #[test]
    fn peer_manifest_assembles_chunks_then_diffs() {
        let ours = map(&[("a", "1"), ("b", "2"), ("hidden", "9")]);
        let mut peer = PeerManifest::new(SharePolicy::Globs(vec!["?".into()]));
        // Our announcement leaves out what the policy hides.
        let out = peer.outgoing_manifest(&ours);
        assert_eq!(
            out,
            vec![Control::Manifest {
                rooms: entries(&[("a", "1"), ("b", "2")]),
                complete: true
            }]
        );
        assert!(peer
            .on_manifest(entries(&[("a", "1")]), false, &ours, &BTreeSet::new())
            .is_none());
        assert!(!peer.is_complete());
        let plan = peer
            .on_manifest(
                entries(&[("c", "3"), ("hidden2", "8")]),
                true,
                &ours,
                &BTreeSet::new(),
            )
            .unwrap();
        assert_eq!(
            rooms(&plan),
            vec![
                ("b", SyncReason::MissingOnPeer),
                ("c", SyncReason::MissingHere)
            ]
        );
        assert!(peer.is_complete());
        assert!(peer.is_synced("a", "1"));
        assert!(!peer.is_synced("b", "2"));
        assert_eq!(peer.peer_digest("hidden2"), None, "outside the policy");

        // A later full manifest replaces the old view.
        let plan = peer
            .on_manifest(entries(&[("b", "2")]), true, &ours, &BTreeSet::new())
            .unwrap();
        assert_eq!(rooms(&plan), vec![("a", SyncReason::MissingOnPeer)]);
        assert_eq!(peer.peer_digest("c"), None);
    }

    #[test]
    fn deltas_always_sync_even_with_equal_digests() {
        let ours = map(&[("a", "1")]);
        let mut peer = PeerManifest::new(SharePolicy::List(vec!["a".into(), "b".into()]));
        peer.on_manifest(entries(&[("a", "1")]), true, &ours, &BTreeSet::new());
        // Same digest as ours (a delete-only change at the peer): still synced.
        let got = peer.on_delta(entries(&[("a", "1"), ("b", "5"), ("z", "6"), ("a", "1")]));
        assert_eq!(
            rooms(&got),
            vec![("a", SyncReason::Changed), ("b", SyncReason::Changed)]
        );
        assert_eq!(peer.peer_digest("b"), Some("5"));
        assert_eq!(peer.peer_digest("z"), None);

        assert_eq!(
            peer.outgoing_delta(entries(&[("a", "2"), ("z", "3")])),
            Some(Control::ManifestDelta {
                changed: entries(&[("a", "2")])
            })
        );
        assert_eq!(peer.outgoing_delta(entries(&[("z", "3")])), None);
    }

    #[test]
    fn a_delta_during_a_chunked_manifest_is_kept() {
        let mut peer = PeerManifest::new(SharePolicy::All);
        let none = BTreeSet::new();
        let ours = BTreeMap::new();
        peer.on_manifest(entries(&[("a", "1")]), false, &ours, &none);
        peer.on_delta(entries(&[("b", "2")]));
        let plan = peer.on_manifest(vec![], true, &ours, &none).unwrap();
        assert_eq!(
            rooms(&plan),
            vec![
                ("a", SyncReason::MissingHere),
                ("b", SyncReason::MissingHere)
            ]
        );
    }
}
