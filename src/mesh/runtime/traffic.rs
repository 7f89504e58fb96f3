//! Traffic counters of peer links: messages and bytes each way, per kind (control, sync,
//! awareness, other), kept per peer across reconnects. Relaxed atomics: counting costs a few
//! nanoseconds per frame and takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::mesh::wire;
use crate::protocol;

/// Messages and bytes one way, per kind.
#[derive(Debug, Default)]
pub(crate) struct DirCounters {
    control: [AtomicU64; 2],
    sync: [AtomicU64; 2],
    awareness: [AtomicU64; 2],
    other: [AtomicU64; 2],
}

impl DirCounters {
    pub(crate) fn add(&self, kind: Kind, bytes: usize) {
        let slot = match kind {
            Kind::Control => &self.control,
            Kind::Sync => &self.sync,
            Kind::Awareness => &self.awareness,
            Kind::Other => &self.other,
        };
        slot[0].fetch_add(1, Ordering::Relaxed);
        slot[1].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let pair = |a: &[AtomicU64; 2]| {
            serde_json::json!({
                "messages": a[0].load(Ordering::Relaxed),
                "bytes": a[1].load(Ordering::Relaxed),
            })
        };
        serde_json::json!({
            "control": pair(&self.control),
            "sync": pair(&self.sync),
            "awareness": pair(&self.awareness),
            "other": pair(&self.other),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Control,
    Sync,
    Awareness,
    Other,
}

/// Classifies a frame from its first bytes, without decoding it:
/// `varUint(len) · varUint(kind) · body`, where a room body is `varString(room) · message`.
pub(crate) fn kind_of(frame: &Bytes) -> Kind {
    let mut r = protocol::Reader::new(frame.clone());
    let kind = (|| {
        r.read_var_uint().ok()?;
        match r.read_var_uint().ok()? {
            wire::KIND_CONTROL => Some(Kind::Control),
            wire::KIND_ROOM => {
                r.read_var_bytes().ok()?;
                match r.rest().first() {
                    Some(0) => Some(Kind::Sync),
                    Some(1) => Some(Kind::Awareness),
                    _ => Some(Kind::Other),
                }
            }
            _ => Some(Kind::Other),
        }
    })();
    kind.unwrap_or(Kind::Other)
}

/// Traffic of one peer, both ways, kept across reconnects.
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub(crate) sent: DirCounters,
    pub(crate) received: DirCounters,
}

impl PeerCounters {
    /// Messages of every kind sent to this peer (all links so far).
    pub fn messages_sent(&self) -> u64 {
        let s = &self.sent;
        [&s.control, &s.sync, &s.awareness, &s.other]
            .iter()
            .map(|a| a[0].load(Ordering::Relaxed))
            .sum()
    }

    /// Room sync messages (step1/step2/update) sent to this peer.
    pub fn sync_messages_sent(&self) -> u64 {
        self.sent.sync[0].load(Ordering::Relaxed)
    }
}
