//! The label values of the counters the hot paths bump: a client frame's message type,
//! why a request was refused, which limit was hit, why a mesh handshake was refused, and a
//! command result's status. Each is a closed enum whose slot indexes the handles resolved
//! once in `prom.rs`, so counting one is an index, never a label lookup.

/// The y-websocket message type of a client frame, for the traffic counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// SYNC step 1 (type 0, sub-type 0).
    SyncStep1,
    /// SYNC step 2 (type 0, sub-type 1).
    SyncStep2,
    /// SYNC update (type 0, sub-type 2).
    SyncUpdate,
    /// AWARENESS (1).
    Awareness,
    /// AUTH (2).
    Auth,
    /// QUERY_AWARENESS (3).
    QueryAwareness,
    /// SYNC_STATUS (102).
    SyncStatus,
    /// COMMAND (103).
    Command,
    /// Anything else.
    Other,
}

impl MessageType {
    /// Every type, in slot order.
    pub const ALL: [MessageType; 9] = [
        MessageType::SyncStep1,
        MessageType::SyncStep2,
        MessageType::SyncUpdate,
        MessageType::Awareness,
        MessageType::Auth,
        MessageType::QueryAwareness,
        MessageType::SyncStatus,
        MessageType::Command,
        MessageType::Other,
    ];

    /// The type of a frame, from its first one or two bytes (a frame's first message; the
    /// stock clients send one message per frame). Types below 128 are one byte each.
    pub fn of(frame: &[u8]) -> MessageType {
        match frame {
            [0, 0, ..] => MessageType::SyncStep1,
            [0, 1, ..] => MessageType::SyncStep2,
            [0, 2, ..] => MessageType::SyncUpdate,
            [1, ..] => MessageType::Awareness,
            [2, ..] => MessageType::Auth,
            [3, ..] => MessageType::QueryAwareness,
            [102, ..] => MessageType::SyncStatus,
            [103, ..] => MessageType::Command,
            _ => MessageType::Other,
        }
    }

    /// The `type` label.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::SyncStep1 => "sync_step1",
            MessageType::SyncStep2 => "sync_step2",
            MessageType::SyncUpdate => "sync_update",
            MessageType::Awareness => "awareness",
            MessageType::Auth => "auth",
            MessageType::QueryAwareness => "query_awareness",
            MessageType::SyncStatus => "sync_status",
            MessageType::Command => "command",
            MessageType::Other => "other",
        }
    }
}

/// Why a request or connection was refused before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid client credential (HTTP 401, close 4401).
    Auth,
    /// An `Origin` the node does not allow (403, 4403).
    Origin,
    /// A `Host` a loopback node does not answer (DNS rebinding; 403).
    Host,
    /// A limit refused a connection or request before it was served: connections
    /// (`limits.max_connections`, per address, half-open per address, inbound peer links;
    /// close 1013 or 4429, a dropped socket, 503) or document bytes in flight (503).
    Limit,
}

impl Refusal {
    /// Every reason, in slot order.
    pub const ALL: [Refusal; 4] = [
        Refusal::Auth,
        Refusal::Origin,
        Refusal::Host,
        Refusal::Limit,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Auth => "auth",
            Refusal::Origin => "origin",
            Refusal::Host => "host",
            Refusal::Limit => "limit",
        }
    }
}

/// A limit that refused a connection or request, or closed one: client connections and
/// their messages, HTTP connections and requests, and peer links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.max_connections` (1013).
    Connections,
    /// `limits.max_connections_per_address` (4429).
    ConnectionsPerAddress,
    /// `limits.max_rooms`, or a room that could not be opened for capacity (1013).
    Rooms,
    /// `limits.max_message_bytes` (1009).
    MessageSize,
    /// The session's outbound queue or write deadline (4429).
    OutboundQueue,
    /// `limits.message_rate` (4429).
    MessageRate,
    /// A storage quota refused an update (4403 or HTTP 403).
    StorageQuota,
    /// A deadline: first message, ping answer (4408).
    Timeout,
    /// `limits.max_half_open_per_address`: a new HTTP connection dropped at accept.
    HalfOpenPerAddress,
    /// `limits.http_header_timeout_s`: a connection whose request headers (or TLS
    /// handshake) did not arrive in time, dropped.
    HeaderTimeout,
    /// `limits.http_body_timeout_s`: a request body that did not arrive in time (408).
    BodyTimeout,
    /// `limits.http_response_bytes`: a document response refused while others are being
    /// sent (503).
    ResponseBytes,
    /// The cap of established inbound peer links (503 on `/_mesh`).
    InboundLinks,
    /// `limits.mesh_preauth_total` / `_per_address`: an inbound `/_mesh` socket still in its
    /// handshake that gave way to a newer one (4408).
    MeshPreauth,
    /// `limits.mesh_handshake_timeout_s`: a mesh handshake not finished in time (4408).
    MeshHandshakeTimeout,
    /// A peer link whose send queue was full: closed to resync (4429).
    PeerLinkQueue,
    /// A peer link whose peer took no bytes for `limits.write_timeout_s`: closed to resync
    /// (4429).
    PeerWriteTimeout,
}

impl Limit {
    /// Every limit, in slot order.
    pub const ALL: [Limit; 17] = [
        Limit::Connections,
        Limit::ConnectionsPerAddress,
        Limit::Rooms,
        Limit::MessageSize,
        Limit::OutboundQueue,
        Limit::MessageRate,
        Limit::StorageQuota,
        Limit::Timeout,
        Limit::HalfOpenPerAddress,
        Limit::HeaderTimeout,
        Limit::BodyTimeout,
        Limit::ResponseBytes,
        Limit::InboundLinks,
        Limit::MeshPreauth,
        Limit::MeshHandshakeTimeout,
        Limit::PeerLinkQueue,
        Limit::PeerWriteTimeout,
    ];

    /// The `limit` label.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::ConnectionsPerAddress => "max_connections_per_address",
            Limit::Rooms => "max_rooms",
            Limit::MessageSize => "max_message_bytes",
            Limit::OutboundQueue => "outbound_queue",
            Limit::MessageRate => "message_rate",
            Limit::StorageQuota => "storage_quota",
            Limit::Timeout => "timeout",
            Limit::HalfOpenPerAddress => "max_half_open_per_address",
            Limit::HeaderTimeout => "http_header_timeout",
            Limit::BodyTimeout => "http_body_timeout",
            Limit::ResponseBytes => "http_response_bytes",
            Limit::InboundLinks => "max_inbound_links",
            Limit::MeshPreauth => "mesh_preauth",
            Limit::MeshHandshakeTimeout => "mesh_handshake_timeout",
            Limit::PeerLinkQueue => "peer_link_queue",
            Limit::PeerWriteTimeout => "peer_write_timeout",
        }
    }
}

/// Why this node refused a peer in the mesh handshake (the `Refused` message it sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The peer speaks another mesh protocol version.
    Version,
    /// The hello named another node than the secure channel proved.
    NodeIdMismatch,
    /// A malformed hello.
    InvalidHello,
    /// Not admitted: a node the operator denied, or too many waiting for approval.
    NotAdmitted,
    /// A message the handshake does not allow at that point.
    Protocol,
    /// A libp2p relay reservation from a node this node does not admit (as a relay server,
    /// `p2p_relay_server`).
    RelayReservation,
}

impl Denial {
    /// Every reason, in slot order.
    pub const ALL: [Denial; 6] = [
        Denial::Version,
        Denial::NodeIdMismatch,
        Denial::InvalidHello,
        Denial::NotAdmitted,
        Denial::Protocol,
        Denial::RelayReservation,
    ];

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Denial::Version => "version",
            Denial::NodeIdMismatch => "node_id_mismatch",
            Denial::InvalidHello => "invalid_hello",
            Denial::NotAdmitted => "not_admitted",
            Denial::Protocol => "protocol",
            Denial::RelayReservation => "relay_reservation",
        }
    }
}

/// The status of a command result, as `GET /commands/{id}` names it (`timeout`: a responder
/// that did not answer by the deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    /// Done.
    Ok,
    /// Failed.
    Error,
    /// The responder refused it.
    Refused,
    /// The responder does not know the command.
    Unsupported,
    /// No answer by the deadline.
    Timeout,
}

impl ResultStatus {
    /// Every status, in slot order.
    pub const ALL: [ResultStatus; 5] = [
        ResultStatus::Ok,
        ResultStatus::Error,
        ResultStatus::Refused,
        ResultStatus::Unsupported,
        ResultStatus::Timeout,
    ];

    /// The `status` label.
    pub fn name(self) -> &'static str {
        match self {
            ResultStatus::Ok => "ok",
            ResultStatus::Error => "error",
            ResultStatus::Refused => "refused",
            ResultStatus::Unsupported => "unsupported",
            ResultStatus::Timeout => "timeout",
        }
    }

    /// The status named `name`, if it is one.
    pub fn parse(name: &str) -> Option<ResultStatus> {
        ResultStatus::ALL.into_iter().find(|s| s.name() == name)
    }
}
