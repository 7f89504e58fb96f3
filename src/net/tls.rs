//! TLS for the crate, both ways, with rustls and its `ring` provider (no C build, no second
//! crypto library).
//!
//! - **Serving** ([`ServerTls`]): the listener's certificate chain and key, read from PEM
//!   files. The certificate sits behind a slot the handshake reads, so a reload swaps it for
//!   the next connection while open connections keep theirs. HTTP/1.1 only (ALPN
//!   `http/1.1`), as the listener speaks nothing else.
//! - **Dialing** ([`client_config`], [`connect`]): `https://` nodes and `wss://` peers are
//!   verified against the system's trust store (read once, `rustls-native-certs`) plus any
//!   CA file the process was told to trust ([`trust_ca_file`]: the `tls_ca` setting, or
//!   `YMESH_TLS_CA` for the command-line client). Trusted CAs are process-wide and only ever
//!   added: a process that runs several nodes trusts the CAs of all of them.
//!
//! Files are read with blocking I/O: they are small, and read at start and on reload only.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// A stream secured by TLS, as a client sees it.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A certificate file holds no certificate.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key does not belong to the certificate, or is of a kind rustls cannot use.
    #[error("the key in {} does not fit the certificate in {}: {message}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS set-up: {0}")]
    Config(String),
}

/// The ring provider, as the design asks (no C toolchain for aws-lc-rs). rustls 0.23.48
/// deprecated its constructor because ring has no post-quantum key exchange; X25519 and the
/// NIST curves remain, as before.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Every certificate in the PEM file at `path` (other PEM sections are skipped).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |e: rustls_pki_types::pem::Error| TlsError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The certificate chain at `cert` with the private key at `key` (PKCS#8, PKCS#1 or SEC1
/// PEM), checked to belong together.
pub fn read_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certificates(cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Read {
        path: key.to_path_buf(),
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PEM private key (-----BEGIN PRIVATE KEY-----) in it".to_string()
            }
            other => other.to_string(),
        },
    })?;
    let certified =
        CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(Arc::new(certified))
}

/// The certificate the listener presents; swapped whole on reload.
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }
}

/// The listener's TLS: one rustls server configuration whose certificate can be replaced.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    slot: Arc<CertSlot>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the certificate chain and key; the error names the file and what is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let slot = Arc::new(CertSlot(RwLock::new(read_certified_key(cert, key)?)));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(slot.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            slot,
        })
    }

    /// Re-reads the certificate and key (the paths may have changed); true when the
    /// certificate chain differs from the one served until now. On an error the certificate
    /// in use stays. Open connections keep the one they were made with.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<bool, TlsError> {
        let fresh = read_certified_key(cert, key)?;
        let mut slot = self.slot.0.write().unwrap_or_else(|p| p.into_inner());
        let changed = slot.cert != fresh.cert;
        *slot = fresh;
        Ok(changed)
    }

    /// Runs the server side of a handshake on accepted connections.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }
}

/// CA certificates trusted besides the system's, and the client configuration built from
/// them (rebuilt when one is added).
struct Trust {
    files: Vec<PathBuf>,
    extra: Vec<CertificateDer<'static>>,
    config: Option<Arc<ClientConfig>>,
}

fn trust() -> &'static Mutex<Trust> {
    static TRUST: OnceLock<Mutex<Trust>> = OnceLock::new();
    TRUST.get_or_init(|| {
        Mutex::new(Trust {
            files: Vec::new(),
            extra: Vec::new(),
            config: None,
        })
    })
}

/// The system's trust store, read once; unreadable entries are logged and skipped.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "skipping an unreadable system CA certificate");
        }
        found.certs
    })
}

/// Trusts the CA certificates in the PEM file at `path` for every TLS connection this
/// process dials from now on (in addition to the system's). Adding the same file again
/// re-reads it.
pub fn trust_ca_file(path: &Path) -> Result<(), TlsError> {
    let certs = read_certificates(path)?;
    let mut t = trust().lock().unwrap_or_else(|p| p.into_inner());
    if !t.files.iter().any(|f| f == path) {
        t.files.push(path.to_path_buf());
    }
    for c in certs {
        if !t.extra.contains(&c) {
            t.extra.push(c);
        }
    }
    t.config = None;
    Ok(())
}

/// The client configuration every dialed TLS connection uses: the system's trust store
/// plus the trusted CA files, HTTP/1.1 over ALPN.
pub fn client_config() -> Arc<ClientConfig> {
    let mut t = trust().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = &t.config {
        return c.clone();
    }
    let mut roots = RootCertStore::empty();
    let (_, skipped) = roots.add_parsable_certificates(system_roots().iter().cloned());
    if skipped > 0 {
        tracing::debug!(skipped, "system CA certificates rustls cannot use");
    }
    for c in &t.extra {
        if let Err(e) = roots.add(c.clone()) {
            tracing::warn!(error = %e, "a configured CA certificate cannot be used");
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    t.config = Some(config.clone());
    config
}

/// Runs the client side of a TLS handshake on `tcp`, verifying the server's certificate for
/// `host` (a DNS name or an IP address, IPv6 without brackets).
pub async fn connect(tcp: TcpStream, host: &str) -> io::Result<ClientStream> {
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} is not a host name TLS can verify"),
        )
    })?;
    tokio_rustls::TlsConnector::from(client_config())
        .connect(name, tcp)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("ymesh-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = read_certificates(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = read_certificates(&empty).unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = read_certified_key(&empty, &empty).unwrap_err().to_string();
        assert!(e.contains("empty.pem"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_client_config_speaks_http1() {
        let c = client_config();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // Cached until a CA is added.
        assert!(Arc::ptr_eq(&c, &client_config()));
    }
}
