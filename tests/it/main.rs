//! ymesh's integration tests, built as one test binary so a test run links the crate once.
//!
//! Each module is one area (the file names are the areas); `common` holds the helpers they
//! share: in-process nodes on `127.0.0.1:0`, raw and syncing WebSocket clients, a small
//! HTTP client, fresh data directories and network namespaces (`common::netns`).
//!
//! Run one area with `cargo nextest run -E 'test(/^mesh::/)'` or `cargo test --test it
//! mesh::`. Nextest runs every test in its own process; `cargo test` runs them as threads of
//! one process, so nothing here may rely on process-wide state (data directories, namespace
//! names and subnets are unique per test). A test that needs a binary of its own (the mesh
//! simulator) sits beside this directory as `tests/NAME.rs`.

mod common;

mod auth;
mod bombs;
mod cli;
mod commands;
mod delete;
mod discovery;
mod discovery_mdns;
mod durability;
mod faults;
mod flood;
mod limits;
mod mesh;
mod metrics;
mod node;
mod ops;
mod p2p_relay;
mod proxy;
mod reload;
mod scoped;
mod surface;
mod tls;
