//! Node configuration: the `mesh.toml` schema, its defaults, and validation.
//!
//! Settings come from four places, highest precedence first: command-line flags,
//! environment variables, the config file, built-in defaults. The module is split by
//! concern, one way (each file uses only those listed after it):
//!
//! - `merge`: [`Overrides`] (flags and environment) and [`Config::resolve`], which applies
//!   defaults, then the file, then the overrides, checking each value on the way;
//! - `load`: the file schema ([`FileConfig`], strict: an unknown key is an error), reading
//!   and parsing it, [`ConfigError`] (every error names the file, line and column and the
//!   key), and the checks on single values ([`validate_route`]);
//! - `settings`: the [`SETTINGS`] table that docs/configuration.md and mesh.toml are checked
//!   against, and that names flags and environment variables in errors;
//! - `reload`: what a reload of a running node applies and which changed settings need a
//!   restart ([`Reloaded`]);
//! - `schema`: the resolved [`Config`] that the node runs with, and the built-in defaults,
//!   each written once.
//!
//! Outside this module it uses the room-name check (`crate::room`) and the mesh's peer and
//! discovery types and checks (`crate::mesh`): it is wiring, above both.

mod load;
mod merge;
mod reload;
mod schema;
mod settings;

#[cfg(test)]
mod tests;

pub use load::{
    validate_route, ConfigError, FileConfig, LimitsSection, PeerSection, RoomsSection, StoreSection,
};
pub use merge::Overrides;
pub use reload::{Reloaded, LIVE};
pub use schema::{
    Config, Discovery, Limits, LogFormat, StoreTuning, TlsFiles, DEFAULT_DATA_DIR, DEFAULT_HOST,
    DEFAULT_PORT, DEFAULT_ROUTES,
};
pub use settings::{reference_markdown, SettingDoc, Status, SETTINGS};
