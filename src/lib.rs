//! # ymesh
//!
//! A sync node for Yjs documents. Unmodified Yjs clients (the y-websocket provider, yrs,
//! pycrdt) connect to `ws://HOST:3913/rooms/{room}` and sync; rooms are created on demand.
//!
//! ## Layout
//!
//! - [`protocol`]: the y-websocket wire format, free of I/O (encode/decode, message types).
//! - [`room`]: a room's document, awareness and sessions; the registry that creates and
//!   evicts rooms; fan-out of each change as one shared buffer.
//! - [`server`]: the axum router, WebSocket sessions, HTTP API, shutdown.
//! - [`config`]: the `mesh.toml` schema, defaults, and validation with file positions.
//!
//! ## Embedding
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ymesh::config::Config::default();
//! config.port = 0; // any free port
//! let node = ymesh::Node::start(config).await?;
//! println!("serving on {}", node.local_addr());
//! node.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod config;
pub mod protocol;
pub mod room;
pub mod server;

pub use server::{Node, ServerError};
