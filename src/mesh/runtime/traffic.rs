//! Classifying link frames for the traffic counters ([`crate::metrics::LinkTraffic`], one per
//! peer, kept across reconnects): a frame's kind is read from its first bytes, without
//! decoding it.

use bytes::Bytes;

use crate::mesh::wire;
use crate::metrics::TrafficKind;
use crate::protocol;

/// The kind of a mesh frame: `varUint(len) · varUint(kind) · body`, where a room body is
/// `varString(room) · message`.
pub(crate) fn kind_of(frame: &Bytes) -> TrafficKind {
    let mut r = protocol::Reader::new(frame.clone());
    let kind = (|| {
        r.read_var_uint().ok()?;
        match r.read_var_uint().ok()? {
            wire::KIND_CONTROL => Some(TrafficKind::Control),
            wire::KIND_ROOM => {
                r.read_var_bytes().ok()?;
                match r.rest().first() {
                    Some(0) => Some(TrafficKind::Sync),
                    Some(1) => Some(TrafficKind::Awareness),
                    _ => Some(TrafficKind::Other),
                }
            }
            _ => Some(TrafficKind::Other),
        }
    })();
    kind.unwrap_or(TrafficKind::Other)
}
