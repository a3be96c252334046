//! Encryption at rest for device and product secrets.
//!
//! A leaked database file or dump must not hand out device credentials, so secrets are sealed
//! with AES-256-GCM under a master key that lives outside the database (a key file next to it,
//! readable only by the node's user). Each value gets a fresh random 96-bit nonce and is stored
//! as hex of `nonce ‖ ciphertext ‖ tag`. The row it belongs to (for example
//! `device:pk/name`) is bound in as associated data, so a ciphertext copied onto another row
//! fails to decrypt instead of silently granting that row the other device's secret.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use rand::RngCore;

use crate::error::StorageError;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A plain-text secret. It is never printed: `Debug` shows `***` and there is no `Display`,
/// so a secret cannot end up in a log line by accident. Call [`Secret::expose`] where the
/// value is really needed (signature checks, the one response that hands it out).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plain value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The plain value, consuming the wrapper.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Seals and opens secrets with the node's master key. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Arc<Aes256Gcm>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    /// Uses the given 256-bit key.
    pub fn from_key(key: [u8; 32]) -> Self {
        Self {
            cipher: Arc::new(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key))),
        }
    }

    /// A box with a fresh random key, for tests and throw-away nodes.
    pub fn random() -> Self {
        Self::from_key(random_key())
    }

    /// Reads the master key from `path` (64 hex characters), or creates the file with a new
    /// random key, readable and writable only by the current user (mode 0600), when it does
    /// not exist. Losing this file makes every stored secret unreadable: back it up with the
    /// database, but not in the same place.
    pub fn load_or_create(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_key_file(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create_key_file(path),
            Err(e) => Err(StorageError::io(
                format!("cannot read the master key file {}", path.display()),
                e,
            )),
        }
    }

    fn parse_key_file(path: &Path, text: &str) -> Result<Self, StorageError> {
        let bytes = hex::decode(text.trim()).map_err(|_| {
            StorageError::Crypto(format!(
                "the master key file {} does not hold hex: it must contain exactly 64 hex \
                 characters (32 bytes)",
                path.display()
            ))
        })?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            StorageError::Crypto(format!(
                "the master key file {} holds {} bytes; it must hold 32 (64 hex characters)",
                path.display(),
                b.len()
            ))
        })?;
        warn_if_readable_by_others(path);
        Ok(Self::from_key(key))
    }

    fn create_key_file(path: &Path) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::io(format!("cannot create the directory {}", dir.display()), e)
            })?;
        }
        let key = random_key();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = match options.open(path) {
            Ok(f) => f,
            // Another process created it between our read and our create: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::load_or_create(path);
            }
            Err(e) => {
                return Err(StorageError::io(
                    format!("cannot create the master key file {}", path.display()),
                    e,
                ));
            }
        };
        file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                StorageError::io(
                    format!("cannot write the master key file {}", path.display()),
                    e,
                )
            })?;
        tracing::info!(path = %path.display(), "created a new master key for secrets at rest");
        Ok(Self::from_key(key))
    }

    /// Encrypts `plain` for the row named by `context`; returns hex of nonce ‖ ciphertext.
    pub fn seal(&self, context: &str, plain: &str) -> Result<String, StorageError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StorageError::Crypto("encrypting a secret failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(hex::encode(out))
    }

    /// Decrypts a value made by [`SecretBox::seal`] for the same `context`.
    pub fn open(&self, context: &str, sealed_hex: &str) -> Result<Secret, StorageError> {
        let bytes = hex::decode(sealed_hex).map_err(|_| {
            StorageError::Crypto(format!("the stored secret of {context} is not valid hex"))
        })?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(StorageError::Crypto(format!(
                "the stored secret of {context} is truncated"
            )));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                StorageError::Crypto(format!(
                    "the stored secret of {context} cannot be decrypted: the master key file \
                     does not match this database, or the value was tampered with"
                ))
            })?;
        String::from_utf8(plain).map(Secret).map_err(|_| {
            StorageError::Crypto(format!("the stored secret of {context} is not UTF-8"))
        })
    }
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the master key file is accessible to other users: chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() {
        let b = SecretBox::random();
        let sealed = b.seal("device:pk/d1", "s3cret").unwrap();
        assert!(!sealed.contains("s3cret"));
        assert_eq!(b.open("device:pk/d1", &sealed).unwrap().expose(), "s3cret");
        assert!(b.open("device:pk/d2", &sealed).is_err());
        assert_ne!(
            sealed,
            b.seal("device:pk/d1", "s3cret").unwrap(),
            "fresh nonce each time"
        );
        assert!(SecretBox::random().open("device:pk/d1", &sealed).is_err());
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("abc")), "***");
        assert_eq!(format!("{:?}", SecretBox::random()), "SecretBox(***)");
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/master.key");
        let a = SecretBox::load_or_create(&path).unwrap();
        let sealed = a.seal("x", "v").unwrap();
        let b = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(b.open("x", &sealed).unwrap().expose(), "v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "abcd").unwrap();
        let err = SecretBox::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("32"), "{err}");
    }
}
