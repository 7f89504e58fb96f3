//! The node's live configuration and reloading it (SIGHUP, `POST /reload`) without dropping
//! connections.
//!
//! Everything a request or a session reads from the config goes through one snapshot,
//! [`Live`], behind a short std lock that is never held across an `.await`: a reload builds
//! a complete new snapshot and swaps it in, so a request sees either the old settings or the
//! new ones, never half of each. Sessions take the snapshot when they start; the limits in
//! force for a connection are those of the moment it opened.
//!
//! A reload ([`reload`]):
//! 1. re-reads the config (file, then the flags and environment given at start, which keep
//!    winning) through the node's [`ConfigSource`]; a file that no longer parses is refused
//!    with its file:line and the running config stays;
//! 2. sorts the changes ([`Reloaded`]): live settings are applied, the others keep their
//!    running value and are reported by name as needing a restart;
//! 3. re-reads the certificate and key (a renewed file at the same path takes effect) and
//!    the CA file; an unreadable one refuses the reload, again leaving everything as it was;
//! 4. swaps the snapshot, hands the mesh its new peers and admission, and closes each client
//!    whose credential no longer holds with 4401 ([`ClientCredentials`]).
//!
//! [`ClientCredentials`] is also the node's list of open client sessions that shutdown
//! closes (1001).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::access::AccessRules;
use super::AppState;
use crate::auth::proxy::TrustedProxies;
use crate::config::{Config, ConfigError, Reloaded};
use crate::net::tls::TlsError;
use crate::room::{CloseReason, Kick};

/// Re-reads the node's configuration; set by whoever started the node from a config file
/// and flags (`ymesh serve`).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// The settings in force, swapped whole by a reload.
pub(crate) struct Live {
    /// The config as it applies now (restart-only settings keep their start values).
    pub(crate) config: Config,
    /// Who may connect: host, origin and credential rules.
    pub(crate) access: AccessRules,
    /// Whose forwarding headers name the client.
    pub(crate) proxies: TrustedProxies,
    /// The limits of the client connections opened under this snapshot, shared by them.
    pub(crate) connection_limits: Arc<super::ws::ConnectionLimits>,
}

impl Live {
    /// The snapshot of `config`.
    pub(crate) fn new(config: Config) -> Live {
        let access = AccessRules {
            clients: crate::auth::ClientAuth::new(
                config.token.clone(),
                config.shared_secret.clone(),
                config.admin_token.clone(),
            ),
            origins: crate::auth::origin::OriginPolicy::new(config.allowed_origins.clone()),
            hosts: crate::auth::origin::HostPolicy::new(&config.host, config.allowed_hosts.clone()),
            mesh_needs_credential: config.mesh_open,
        };
        Live {
            proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            connection_limits: Arc::new(super::ws::ConnectionLimits::of(&config.limits)),
            access,
            config,
        }
    }
}

/// Why a reload was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The node was not started from a config source (an embedded node).
    #[error("this node has no config file to re-read (it was not started by `ymesh serve`)")]
    NoSource,
    /// The config does not parse or holds a bad value.
    #[error("the config was not reloaded: {0}")]
    Config(#[from] ConfigError),
    /// A certificate, key or CA file cannot be used.
    #[error("the config was not reloaded: {0}")]
    Tls(#[from] TlsError),
}

/// What a reload did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Settings whose new value is in force.
    pub applied: Vec<&'static str>,
    /// Settings whose value changed in the file but that take effect only after a restart
    /// (the running value stays).
    pub needs_restart: Vec<&'static str>,
    /// Client connections closed (4401) because their credential no longer holds.
    pub closed_clients: usize,
}

/// A session's credential (none when it presented none) and its close handle.
type Entry = (Option<Arc<str>>, Arc<Kick>);

/// The credential each open client session presented, to judge it again after a reload,
/// with its close handle: the node's one list of open client sessions, which shutdown
/// closes too (so a connection's task needs no shutdown future of its own).
#[derive(Default)]
pub(crate) struct ClientCredentials {
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    open: HashMap<u64, Entry>,
    /// The node is shutting down: sessions registered from now on are closed at once.
    closed: bool,
}

/// Removes a session from [`ClientCredentials`] when it ends.
pub(crate) struct Registered<'a> {
    owner: &'a ClientCredentials,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.owner.sessions.lock() {
            s.open.remove(&self.id);
        }
    }
}

impl ClientCredentials {
    /// Records session `id`'s credential (none when it presented none) until the guard drops.
    /// After [`ClientCredentials::close_all`] the session is closed (1001) at once.
    pub(crate) fn register(
        &self,
        id: u64,
        credential: Option<Arc<str>>,
        kick: Arc<Kick>,
    ) -> Registered<'_> {
        let refused = match self.sessions.lock() {
            Ok(mut s) if !s.closed => {
                s.open.insert(id, (credential, kick));
                None
            }
            _ => Some(kick),
        };
        if let Some(kick) = refused {
            kick.close(CloseReason::ShuttingDown);
        }
        Registered { owner: self, id }
    }

    /// Shutdown: closes every open session with 1001, and every one registered later.
    pub(crate) fn close_all(&self) {
        let kicks: Vec<Arc<Kick>> = {
            let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            s.closed = true;
            s.open.values().map(|(_, kick)| kick.clone()).collect()
        };
        for kick in kicks {
            kick.close(CloseReason::ShuttingDown);
        }
    }

    /// Closes (4401, with the reason) every session whose credential `access` refuses;
    /// returns how many.
    fn recheck(&self, access: &AccessRules) -> usize {
        let refused: Vec<(Arc<Kick>, String)> = match self.sessions.lock() {
            Ok(s) => s
                .open
                .values()
                .filter_map(|(credential, kick)| {
                    access
                        .clients
                        .check(credential.as_deref())
                        .err()
                        .map(|e| (kick.clone(), e.to_string()))
                })
                .collect(),
            Err(_) => return 0,
        };
        for (kick, reason) in &refused {
            kick.close(CloseReason::Unauthorized(format!(
                "credential no longer valid after a config reload: {reason}"
            )));
        }
        refused.len()
    }
}

/// Re-reads the config and applies it; see the module docs.
pub(crate) async fn reload(app: &AppState) -> Result<ReloadReport, ReloadError> {
    // One reload at a time (SIGHUP and POST /reload may race).
    let _one = app.reloading.lock().await;
    let fresh = {
        let source = app.config_source.lock().unwrap_or_else(|p| p.into_inner());
        match source.as_ref() {
            Some(read) => read()?,
            None => return Err(ReloadError::NoSource),
        }
    };
    apply(app, fresh)
}

/// Applies `fresh` to the running node (the part of [`reload`] after reading the config).
pub(crate) fn apply(app: &AppState, fresh: Config) -> Result<ReloadReport, ReloadError> {
    let running = app.live();
    let Reloaded {
        config,
        mut applied,
        needs_restart,
    } = Reloaded::between(&running.config, fresh);
    // Files first: an unreadable one refuses the whole reload.
    if let (Some(tls), Some(files)) = (&app.tls, &config.tls) {
        let renewed = tls.reload(&files.cert, &files.key)?;
        if renewed && !applied.contains(&"tls_cert") {
            applied.push("tls_cert");
        }
    }
    if let Some(ca) = &config.tls_ca {
        crate::net::tls::trust_ca_file(ca)?;
    }
    let mesh_changed = running.config.mesh_secret != config.mesh_secret
        || running.config.allow_peers != config.allow_peers
        || running.config.mesh_open != config.mesh_open
        || running.config.peers != config.peers;
    let live = Arc::new(Live::new(config));
    *app.live.write().unwrap_or_else(|p| p.into_inner()) = live.clone();
    if mesh_changed {
        app.mesh.reconfigure(
            live.config.peers.clone(),
            crate::mesh::Admission {
                secret: live.config.mesh_secret.clone(),
                allow: live.config.allow_peers.clone(),
                open: live.config.mesh_open,
            },
        );
    }
    let closed_clients = app.credentials.recheck(&live.access);
    let report = ReloadReport {
        applied,
        needs_restart,
        closed_clients,
    };
    tracing::info!(
        applied = ?report.applied,
        closed_clients = report.closed_clients,
        "config reloaded"
    );
    if !report.needs_restart.is_empty() {
        tracing::warn!(
            settings = ?report.needs_restart,
            "config reloaded, but these changed settings take effect only after a restart: {}",
            report.needs_restart.join(", ")
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_closes_open_sessions_and_every_later_one() {
        let sessions = ClientCredentials::default();
        let open = Arc::new(Kick::default());
        let _a = sessions.register(1, None, open.clone());
        assert!(!open.is_kicked());
        sessions.close_all();
        assert_eq!(open.reason().map(|c| c.code()), Some(1001));
        // A session admitted while the node was stopping is closed as it registers.
        let late = Arc::new(Kick::default());
        let _b = sessions.register(2, Some("t".into()), late.clone());
        assert_eq!(late.reason().map(|c| c.code()), Some(1001));
    }

    #[test]
    fn a_session_leaves_the_list_when_its_guard_drops() {
        let sessions = ClientCredentials::default();
        let kick = Arc::new(Kick::default());
        drop(sessions.register(1, None, kick.clone()));
        sessions.close_all();
        assert!(!kick.is_kicked(), "an ended session is not closed again");
    }
}
