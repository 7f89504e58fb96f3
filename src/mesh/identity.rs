//! Node identity: the ed25519 key pair that names a node in the mesh.
//!
//! This module owns the key file (`node.key` in the data directory) and every use of the
//! private key. A node's id is the libp2p [`PeerId`] of its public key (`12D3KooW…`), so a
//! libp2p transport can later run under the same identity and users see one id everywhere.
//!
//! The key file holds the libp2p protobuf encoding of the key pair
//! ([`Keypair::to_protobuf_encoding`]: `08 01 12 40` then the 32-byte secret and the 32-byte
//! public key), the format other libp2p tools read. It is created once, atomically (a
//! temporary file is written, fsynced and then linked into place, so a crash leaves either
//! no key or a whole key), with mode 0600. A key file that does not decode is an error that
//! names the file; it is never overwritten, because replacing it would silently change the
//! node id that peers' allow lists name.
//!
//! Nodes without a data directory (`--memory`) use [`NodeIdentity::ephemeral`]: a fresh key
//! each start, so their node id changes every start.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use libp2p_identity::{Keypair, PeerId, PublicKey};
use rand::RngCore;

/// Name of the key file inside the data directory.
pub const KEY_FILE_NAME: &str = "node.key";

/// Largest key file this node reads; the protobuf encoding of an ed25519 pair is 68 bytes.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Errors loading or creating the key file.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file (or the data directory) could not be read.
    #[error("cannot read node key {}: {}", path.display(), io_problem(source))]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file or data directory could not be written.
    #[error("cannot create node key {}: {}", path.display(), io_problem(source))]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file exists but does not hold an ed25519 key pair. It was left untouched.
    #[error(
        "node key {} is corrupt ({reason}); it was left untouched: restore it from a backup, \
         or move it away to create a new identity (the node id will change)",
        path.display()
    )]
    Corrupt {
        /// The key file.
        path: PathBuf,
        /// What failed to decode.
        reason: String,
    },
}

/// An I/O error on the key file as a sentence for the operator (the error itself last).
fn io_problem(e: &io::Error) -> String {
    use io::ErrorKind;
    let what = match e.kind() {
        ErrorKind::PermissionDenied => {
            "this user may not read or write it; give the node's user access to the data \
             directory and its node.key (mode 600)"
        }
        ErrorKind::IsADirectory => "it is a directory, not a key file; move it away",
        ErrorKind::NotADirectory | ErrorKind::AlreadyExists => {
            "a part of its path is a file, not a directory; choose another --data-dir"
        }
        ErrorKind::ReadOnlyFilesystem => "the data directory is on a read-only file system",
        ErrorKind::StorageFull => "the disk is full",
        _ => return e.to_string(),
    };
    format!("{what} ({e})")
}

/// Why a peer's public key or signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The bytes are not a protobuf-encoded ed25519 public key.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// The text is not a node id (a libp2p `PeerId`).
    #[error("{text:?} is not a node id (expected a libp2p peer id such as 12D3KooW...): {reason}")]
    InvalidNodeId {
        /// The text given.
        text: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The signature does not verify under the public key.
    #[error("signature does not verify for node {node_id}")]
    BadSignature {
        /// The node id of the public key that was tried.
        node_id: String,
    },
}

/// This node's key pair and the node id derived from it.
///
/// Cheap to share behind an `Arc`; `Debug` never prints the secret.
#[derive(Clone)]
pub struct NodeIdentity {
    keypair: Keypair,
    node_id: String,
    key_path: Option<PathBuf>,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Loads `DATA_DIR/node.key`, or creates it (and the directory) on first start.
    ///
    /// Creation is atomic and never replaces an existing file: if another process creates
    /// the key at the same moment, both end up with the one that landed first. A key file
    /// that does not decode gives [`IdentityError::Corrupt`] and is left as it is.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, IdentityError> {
        let path = data_dir.join(KEY_FILE_NAME);
        match read_key_file(&path)? {
            Some(identity) => Ok(identity),
            None => create_key_file(data_dir, &path),
        }
    }

    /// A new random identity that is not stored anywhere, for nodes without a data directory
    /// (`--memory`). Its node id changes every start, so peers that list nodes by id in an
    /// allow list cannot admit such a node; use a mesh secret for them instead.
    pub fn ephemeral() -> Self {
        Self::from_secret_bytes(random_secret())
    }

    /// The identity whose ed25519 secret key is `secret`. Deterministic: tests and
    /// documentation examples use fixed secrets.
    pub fn from_secret_bytes(mut secret: [u8; 32]) -> Self {
        // A 32-byte ed25519 secret is always valid; the call only fails on a wrong length.
        let keypair = Keypair::ed25519_from_bytes(&mut secret)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid ed25519 secret"));
        Self::from_keypair(keypair, None)
    }

    fn from_keypair(keypair: Keypair, key_path: Option<PathBuf>) -> Self {
        let node_id = keypair.public().to_peer_id().to_string();
        Self {
            keypair,
            node_id,
            key_path,
        }
    }

    /// The node id: the libp2p `PeerId` of the public key, in its usual base58 text form.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The key pair, for the libp2p transport (its libp2p identity).
    #[cfg(feature = "p2p")]
    pub(crate) fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The node id as a libp2p [`PeerId`].
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The public key in libp2p's protobuf encoding (36 bytes for ed25519: `08 01 12 20` and
    /// the 32-byte key). This is what `Hello.public_key` carries, hex-encoded.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        self.keypair.public().encode_protobuf()
    }

    /// Signs `msg` (ed25519; deterministic, 64 bytes).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.keypair
            .sign(msg)
            .unwrap_or_else(|_| unreachable!("ed25519 signing cannot fail"))
    }

    /// Where the key is stored, or `None` for an [`ephemeral`](Self::ephemeral) identity.
    pub fn key_path(&self) -> Option<&Path> {
        self.key_path.as_deref()
    }

    /// Whether the key is stored nowhere (the node id changes every start).
    pub fn is_ephemeral(&self) -> bool {
        self.key_path.is_none()
    }
}

/// The node id of a protobuf-encoded public key.
pub fn node_id_of(public_key: &[u8]) -> Result<String, VerifyError> {
    Ok(decode_public_key(public_key)?.to_peer_id().to_string())
}

/// Parses a node id as written in configuration (`--allow-peer`, a peer's expected id),
/// so typos are caught at start-up rather than as refused peers. Only ed25519 node ids
/// (`12D3KooW…`, the public key inlined in the id) are accepted: that is what every ymesh
/// node has.
pub fn parse_node_id(text: &str) -> Result<PeerId, VerifyError> {
    let invalid = |reason: String| VerifyError::InvalidNodeId {
        text: text.to_string(),
        reason,
    };
    let peer_id = text.parse::<PeerId>().map_err(|e| invalid(e.to_string()))?;
    // An inlined key is an identity multihash: code 0x00, length, protobuf public key.
    let bytes = peer_id.to_bytes();
    match bytes.as_slice() {
        [0x00, len, key @ ..] if usize::from(*len) == key.len() => {
            decode_public_key(key).map_err(|e| invalid(e.to_string()))?;
            Ok(peer_id)
        }
        _ => Err(invalid("not an ed25519 node id".into())),
    }
}

/// Verifies `signature` over `msg` under the protobuf-encoded `public_key` and returns the
/// node id of that key. Callers compare the result with the node id the peer claimed.
pub fn verify(public_key: &[u8], msg: &[u8], signature: &[u8]) -> Result<String, VerifyError> {
    let key = decode_public_key(public_key)?;
    let node_id = key.to_peer_id().to_string();
    if key.verify(msg, signature) {
        Ok(node_id)
    } else {
        Err(VerifyError::BadSignature { node_id })
    }
}

fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, VerifyError> {
    let key = PublicKey::try_decode_protobuf(bytes)
        .map_err(|e| VerifyError::InvalidPublicKey(e.to_string()))?;
    if key.key_type() != libp2p_identity::KeyType::Ed25519 {
        return Err(VerifyError::InvalidPublicKey(format!(
            "{} keys are not accepted, only ed25519",
            key.key_type()
        )));
    }
    Ok(key)
}

/// A fresh random id for this run of the node (hex of 16 random bytes). Peers use it to tell
/// a restart (new boot id) from a reconnect.
pub fn new_boot_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    super::hex::encode(&bytes)
}

fn random_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    secret
}

/// `Ok(None)` when the file does not exist.
fn read_key_file(path: &Path) -> Result<Option<NodeIdentity>, IdentityError> {
    let read_err = |source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let corrupt = |reason: String| IdentityError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(corrupt("not a regular file".into()));
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(corrupt(format!(
            "{} bytes; a key file is at most {MAX_KEY_FILE_BYTES}",
            meta.len()
        )));
    }
    let bytes = fs::read(path).map_err(read_err)?;
    let keypair = Keypair::from_protobuf_encoding(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if keypair.key_type() != libp2p_identity::KeyType::Ed25519 {
        return Err(corrupt(format!(
            "holds a {} key; ymesh uses ed25519",
            keypair.key_type()
        )));
    }
    warn_if_readable_by_others(path, &meta);
    Ok(Some(NodeIdentity::from_keypair(
        keypair,
        Some(path.to_path_buf()),
    )))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, meta: &fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "node key {} has mode {mode:o}; other users can read this node's identity \
             (chmod 600 it)",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path, _meta: &fs::Metadata) {}

fn create_key_file(data_dir: &Path, path: &Path) -> Result<NodeIdentity, IdentityError> {
    let write_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| IdentityError::Write { path: p, source }
    };
    fs::create_dir_all(data_dir).map_err(write_err(data_dir))?;

    let mut secret = random_secret();
    let keypair = Keypair::ed25519_from_bytes(&mut secret)
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid ed25519 secret"));
    let encoded = keypair
        .to_protobuf_encoding()
        .unwrap_or_else(|_| unreachable!("ed25519 keys have a protobuf encoding"));

    let tmp = data_dir.join(format!(
        ".{KEY_FILE_NAME}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = write_new_file(&tmp, &encoded).and_then(|()| link_into_place(&tmp, path));
    // The temporary name is gone after a rename; after a hard link it is a second name.
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(true) => {
            sync_dir(data_dir);
            tracing::info!("created node key {}", path.display());
            Ok(NodeIdentity::from_keypair(
                keypair,
                Some(path.to_path_buf()),
            ))
        }
        // Someone else created the key first: theirs is the identity.
        Ok(false) => read_key_file(path)?.ok_or_else(|| IdentityError::Read {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "key file vanished"),
        }),
        Err(source) => Err(IdentityError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `bytes` to a new file with mode 0600 and fsyncs it.
fn write_new_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Gives the fully written `tmp` the name `path` without ever replacing an existing file.
/// `Ok(false)` if `path` already exists.
///
/// A hard link fails atomically when the target exists; on file systems without hard links
/// it falls back to a rename, which is atomic but could replace a key created in the same
/// instant by another process (the store's directory lock keeps two nodes out of one data
/// directory anyway).
fn link_into_place(tmp: &Path, path: &Path) -> io::Result<bool> {
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) => {
            if path.exists() {
                return Ok(false);
            }
            fs::rename(tmp, path)?;
            Ok(true)
        }
    }
}

/// Makes the new directory entry durable (best effort: not every platform can open a
/// directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "ymesh-identity-{tag}-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn creates_once_then_loads_the_same_identity() {
        let dir = TempDir::new("create");
        let data = dir.0.join("nested/data");
        let a = NodeIdentity::load_or_create(&data).unwrap();
        assert!(a.node_id().starts_with("12D3KooW"), "{}", a.node_id());
        assert_eq!(a.key_path(), Some(data.join(KEY_FILE_NAME).as_path()));
        assert!(!a.is_ephemeral());
        let b = NodeIdentity::load_or_create(&data).unwrap();
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(a.public_key_bytes(), b.public_key_bytes());
        assert_eq!(a.peer_id().to_string(), a.node_id());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![KEY_FILE_NAME.to_string()]);
        let bytes = fs::read(data.join(KEY_FILE_NAME)).unwrap();
        assert_eq!(bytes.len(), 68);
        assert_eq!(&bytes[..4], &[0x08, 0x01, 0x12, 0x40]);
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        NodeIdentity::load_or_create(&dir.0).unwrap();
        let mode = fs::metadata(dir.0.join(KEY_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_key_file_is_an_error_naming_it_and_is_kept() {
        let dir = TempDir::new("corrupt");
        let path = dir.0.join(KEY_FILE_NAME);
        for garbage in [&b""[..], b"not a key", &[0x08, 0x01, 0x12, 0x40, 1, 2, 3]] {
            fs::write(&path, garbage).unwrap();
            let err = NodeIdentity::load_or_create(&dir.0).unwrap_err();
            assert!(matches!(err, IdentityError::Corrupt { .. }), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("left untouched"), "{text}");
            assert_eq!(fs::read(&path).unwrap(), garbage);
        }
        // A key pair whose public half does not match its secret is corrupt too.
        let good = NodeIdentity::from_secret_bytes([7; 32]);
        let mut bytes = good.keypair.to_protobuf_encoding().unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            NodeIdentity::load_or_create(&dir.0),
            Err(IdentityError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_directory_in_place_of_the_key_is_an_error() {
        let dir = TempDir::new("dir");
        fs::create_dir(dir.0.join(KEY_FILE_NAME)).unwrap();
        let err = NodeIdentity::load_or_create(&dir.0).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    /// An I/O failure reads as a sentence, not a bare errno.
    #[test]
    fn a_data_directory_that_is_a_file_is_explained() {
        let dir = TempDir::new("file");
        let file = dir.0.join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = NodeIdentity::load_or_create(&file).unwrap_err().to_string();
        assert!(err.contains("a part of its path is a file"), "{err}");
    }

    #[test]
    fn ephemeral_identities_differ_each_time() {
        let a = NodeIdentity::ephemeral();
        let b = NodeIdentity::ephemeral();
        assert!(a.is_ephemeral());
        assert_eq!(a.key_path(), None);
        assert_ne!(a.node_id(), b.node_id());
        assert!(!format!("{a:?}").contains("keypair"));
    }

    #[test]
    fn sign_and_verify() {
        let id = NodeIdentity::from_secret_bytes([1; 32]);
        let pk = id.public_key_bytes();
        assert_eq!(pk.len(), 36);
        assert_eq!(node_id_of(&pk).unwrap(), id.node_id());
        let sig = id.sign(b"hello");
        assert_eq!(sig.len(), 64);
        assert_eq!(sig, id.sign(b"hello"), "ed25519 is deterministic");
        assert_eq!(verify(&pk, b"hello", &sig).unwrap(), id.node_id());

        assert!(matches!(
            verify(&pk, b"hellO", &sig),
            Err(VerifyError::BadSignature { .. })
        ));
        let mut bad = sig.clone();
        bad[0] ^= 0x80;
        assert!(verify(&pk, b"hello", &bad).is_err());
        assert!(verify(&pk, b"hello", &sig[..63]).is_err());
        let other = NodeIdentity::from_secret_bytes([2; 32]);
        assert!(matches!(
            verify(&other.public_key_bytes(), b"hello", &sig),
            Err(VerifyError::BadSignature { node_id }) if node_id == other.node_id()
        ));
        assert!(matches!(
            verify(&pk[..35], b"hello", &sig),
            Err(VerifyError::InvalidPublicKey(_))
        ));
    }

    #[test]
    fn node_ids_parse() {
        let id = NodeIdentity::from_secret_bytes([1; 32]);
        assert_eq!(parse_node_id(id.node_id()).unwrap(), id.peer_id());
        // A truncated id is still valid base58 and even a valid multihash, but not a key.
        let truncated = &id.node_id()[..20];
        let err = parse_node_id(truncated).unwrap_err();
        assert!(matches!(err, VerifyError::InvalidNodeId { .. }), "{err}");
        assert!(err.to_string().contains(truncated), "{err}");
        assert!(parse_node_id("12D3KooWtypo").is_err());
        assert!(parse_node_id("").is_err());
        assert!(parse_node_id("not base58: 0OIl").is_err());
        // A sha256-hashed peer id (RSA-style) is a valid PeerId but not an ymesh node id.
        assert!(parse_node_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N").is_err());
    }

    #[test]
    fn boot_ids_are_fresh_hex() {
        let a = new_boot_id();
        assert_eq!(a.len(), 32);
        assert!(crate::mesh::hex::decode(&a).is_some());
        assert_ne!(a, new_boot_id());
    }
}
