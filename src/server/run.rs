//! A node as the `ymesh serve` process: which config file to read, the open-file limit,
//! the signal handlers, and the node's life from start to the first SIGINT or SIGTERM, with
//! a config reload at each SIGHUP.
//!
//! This is the part of `serve` that is not argument parsing or logging set-up (those stay
//! in the binary): the binary resolves a [`Config`], then hands it to
//! [`serve_until_signal`].

use std::future::Future;
use std::path::Path;

use super::{Node, ServerError};
use crate::config::{Config, ConfigError, FileConfig, Overrides};

/// Why `ymesh serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A signal handler could not be installed.
    #[error("installing {signal} handler")]
    Signal {
        /// `SIGTERM`, `SIGINT` or `SIGHUP`.
        signal: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The node could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// The node's configuration: the file at `path` (or ./mesh.toml when it exists, else none),
/// merged with `over` (flags and environment).
pub fn load_config(path: Option<&Path>, over: &Overrides) -> Result<Config, ConfigError> {
    Config::resolve(&FileConfig::locate(path)?, over)
}

/// Runs a node on `config` until SIGINT or SIGTERM (Ctrl-C off Unix), then shuts it down.
/// Raises the open-file limit first, and installs the signal handlers before the node
/// starts, so a signal sent right after the ready line is never fatal. With a `source`, each
/// SIGHUP (and `POST /reload`) re-reads the configuration from it (see [`Node::reload`]).
pub async fn serve_until_signal(
    config: Config,
    source: Option<super::ConfigSource>,
) -> Result<(), ServeError> {
    raise_fd_limit();
    let signal = shutdown_signal()?;
    let mut hangups = hangup_signal()?;
    let node = Node::start(config).await?;
    if let Some(source) = source {
        node.set_config_source(source);
    }
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            Some(()) = hangups.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                // The outcome is logged by the reload itself; a refusal keeps the node as it was.
                if let Err(e) = node.reload().await {
                    tracing::error!(error = %e, "reload refused");
                }
            }
        }
    }
    node.shutdown().await;
    Ok(())
}

/// SIGHUPs as a stream of `()` (never yields off Unix).
fn hangup_signal() -> Result<tokio::sync::mpsc::Receiver<()>, ServeError> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).map_err(|source| ServeError::Signal {
            signal: "SIGHUP",
            source,
        })?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // One pending reload is enough: a burst of signals coalesces.
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok(rx)
}

/// Raises the open-file limit to the hard limit so many connections fit, and says what it
/// got (one INFO line, `open-file limit`; a WARN line when it could not be raised). Returns
/// the soft limit in force afterwards (`None` where there is no such limit).
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
            return None;
        }
        let old = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            let mut raised = lim;
            raised.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            } else {
                tracing::warn!(
                    soft = old,
                    hard = lim.rlim_max,
                    error = %std::io::Error::last_os_error(),
                    "cannot raise the open-file limit"
                );
            }
        }
        let got = lim.rlim_cur;
        tracing::info!(
            limit = got,
            was = old,
            hard = lim.rlim_max,
            "open-file limit: {got} (each connection takes one; limits.max_connections is the cap)"
        );
        Some(got)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Installs the SIGINT/SIGTERM handlers now and returns a future that resolves on the first
/// signal (Ctrl-C off Unix).
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, ServeError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|source| ServeError::Signal {
            signal: "SIGTERM",
            source,
        })?;
        let mut int = signal(SignalKind::interrupt()).map_err(|source| ServeError::Signal {
            signal: "SIGINT",
            source,
        })?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
