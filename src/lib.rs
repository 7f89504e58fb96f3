//! # ymesh
//!
//! A sync node for Yjs documents. Unmodified Yjs clients (the y-websocket provider, yrs,
//! pycrdt) connect to `ws://HOST:3913/rooms/{room}` and sync; rooms are created on demand.
//!
//! ## Layout
//!
//! Dependencies run one way, from the top (`server`, `ops`) down to the leaves (`protocol`,
//! `net`, `metrics`, `auth`); docs/architecture.md has the module map.
//!
//! - [`protocol`]: the y-websocket wire format, free of I/O (encode/decode, message types).
//! - [`room`]: a room's document, awareness and sessions (each a [`room::Session`] carrying
//!   the client's [`room::Grant`]); the registry that creates and evicts rooms; fan-out of
//!   each change as one shared buffer; close reasons ([`room::CloseReason`]).
//! - [`server`]: the axum router, WebSocket sessions, HTTP API, shutdown.
//! - [`config`]: the `mesh.toml` schema, defaults, and validation with file positions.
//! - [`store`]: the durable store: the [`store::Store`] trait and its SQLite backend (update
//!   log + snapshots, group commit, compaction, one node per data directory).
//! - [`auth`]: authentication decisions, free of I/O: the admin-route rule (bearer admin
//!   token, or loopback only when none is configured).
//! - [`ops`]: operator tools behind `ymesh export`, `import`, `compact`, `delete`, `backup`,
//!   `restore-backup`, `status`, `rooms` and `command`, on a stopped node's data directory
//!   or a running node over HTTP, one module per operation.
//! - [`queue`]: outbound frame queues bounded in bytes as well as frames, and the byte
//!   budget behind them; a leaf the room layer, the server and the mesh use.
//! - [`net`]: the one HTTP client (hyper-util over hyper, TCP and Unix socket), used by
//!   `ops`, the mesh's peer probe and tailnet discovery.
//! - [`mesh`]: server-to-server replication: [`mesh::proto`], a pure state machine that
//!   makes every mesh decision (dialing, the duplicate-link tie-break, admission, manifests
//!   and share policies, sync state, backoff, resync markers, command dedup), and
//!   [`mesh::runtime`], thin I/O shells that carry out its actions (dials, links, the bridge
//!   between rooms and links); node identity, the frame format, transports, discovery.
//! - [`command`]: maintenance commands (type 103): the command and result documents and
//!   frames, the expiring seen-set, the aggregation of results on the issuing node, the
//!   node's command center, and the port through which it reaches the mesh.
//! - [`metrics`]: the node's counters in one home (connections, refusals, store writer,
//!   per-peer traffic, client traffic per message type, refusals, limits, latencies), the
//!   typed snapshots that `GET /`, `GET /peers` and `ymesh status` read, and the Prometheus
//!   exposition of `GET /metrics`; a leaf every layer may use.
//! - [`ui`]: the live status page at `GET /ui` (assets embedded in the binary), the node's
//!   view that `GET /metrics` and the page's charts read, and the sampler behind the charts.
//! - [`client`]: a Rust client for one room: syncs a `yrs::Doc` over y-websocket and, when
//!   opted in with `commands=1`, answers maintenance commands with registered handlers.
//!
//! ## Embedding
//!
//! A node runs inside another program: start it, reach a room's document, hear about room
//! events, stop it.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use ymesh::room::Hooks;
//! use yrs::{GetString, Text, Transact};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let changed = Arc::new(Mutex::new(Vec::new()));
//! let seen = changed.clone();
//! let hooks = Hooks::new()
//!     .on_room_created(|room| println!("room {room} created"))
//!     .on_room_evicted(|room| println!("room {room} evicted"))
//!     .on_room_changed(move |room, update| {
//!         seen.lock().unwrap().push((room.to_string(), update.len()))
//!     });
//!
//! let mut config = ymesh::config::Config::default();
//! config.port = 0; // any free port on 127.0.0.1
//! config.memory = true; // or set `config.data_dir` to keep rooms on disk
//! let node = ymesh::Node::start_with_hooks(config, hooks).await?;
//! println!("clients connect to ws://{}/rooms/notes", node.local_addr());
//!
//! // Edit a room's document; connected clients receive the change like any other update.
//! let room = node.room("notes").await?;
//! room.with_doc(|doc| {
//!     let text = doc.get_or_insert_text("content");
//!     text.insert(&mut doc.transact_mut(), 0, "hello from Rust");
//! });
//! let content = room.with_doc(|doc| {
//!     let text = doc.get_or_insert_text("content");
//!     let txn = doc.transact();
//!     text.get_string(&txn)
//! });
//! assert_eq!(content, "hello from Rust");
//! assert_eq!(changed.lock().unwrap()[0].0, "notes");
//!
//! node.shutdown().await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod command;
pub mod config;
pub mod mesh;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod protocol;
pub mod queue;
pub mod room;
pub mod server;
pub mod store;
pub mod ui;

pub use server::{Node, ServerError};
