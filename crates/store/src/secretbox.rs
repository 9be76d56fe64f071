//! Sealing secrets at rest (destination credentials, IMAP passwords, private feed secrets)
//! with a key kept in the data directory, so a copy of the database alone reveals none.
//!
//! The key is 32 random bytes in `secret.key` (mode 0600), made on first use. A sealed value
//! is `v1 || nonce(24) || XChaCha20-Poly1305(ciphertext + tag)`; the random 192-bit nonce
//! makes reuse a non-issue. Losing the key file loses the sealed secrets (users re-enter
//! them), nothing else.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;

/// File in the data dir holding the key.
pub const KEY_FILE: &str = "secret.key";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// Errors of sealing and opening.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("secret key file {0} is not 32 bytes")]
    BadKey(String),
    #[error("sealed value is damaged or was sealed with another key")]
    Open,
}

/// Seals and opens secrets. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Arc<XChaCha20Poly1305>,
    /// Key of [`SecretBox::derive`], itself derived from the master key (never the master).
    derive_key: Arc<[u8; 32]>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// Loads `<dir>/secret.key`, creating it (0600) with a fresh random key if missing.
    pub fn load_or_create(dir: &Path) -> Result<SecretBox, SecretError> {
        let path = dir.join(KEY_FILE);
        let io = |source| SecretError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| SecretError::BadKey(path.display().to_string()))?;
                Ok(SecretBox::from_key(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    opts.mode(0o600);
                }
                let mut f = opts.open(&path).map_err(io)?;
                f.write_all(&key).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(SecretBox::from_key(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A box over a given key (tests, tools).
    pub fn from_key(key: [u8; 32]) -> SecretBox {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"tidings derive v1\0");
        h.update(key);
        SecretBox {
            cipher: Arc::new(XChaCha20Poly1305::new(&key.into())),
            derive_key: Arc::new(h.finalize().into()),
        }
    }

    /// A stable secret for `label` (64 hex digits): HMAC-SHA256 under a key derived from the
    /// data dir's key, so it needs no storage and changes only with `secret.key`. Used for
    /// signing keys shown to users (a topic's reply-callback key).
    pub fn derive(&self, label: &str) -> String {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&*self.derive_key)
            .expect("HMAC takes keys of any length");
        mac.update(label.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A box with a random key that lives as long as the process (tests).
    pub fn ephemeral() -> SecretBox {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        SecretBox::from_key(key)
    }

    /// Seals `plain`.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain)
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`seal`](Self::seal) made.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SecretError::Open);
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), body)
            .map_err(|_| SecretError::Open)
    }

    /// Seals a string.
    pub fn seal_str(&self, plain: &str) -> Vec<u8> {
        self.seal(plain.as_bytes())
    }

    /// Opens a sealed string.
    pub fn open_str(&self, sealed: &[u8]) -> Result<String, SecretError> {
        String::from_utf8(self.open(sealed)?).map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(dir.path()).unwrap();
        let sealed = a.seal_str("hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        // The same key file opens it again (a restart).
        let b = SecretBox::load_or_create(dir.path()).unwrap();
        assert_eq!(b.open_str(&sealed).unwrap(), "hunter2");
        // Two seals of one value differ (random nonce).
        assert_ne!(a.seal_str("x"), a.seal_str("x"));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(b.open(&bad), Err(SecretError::Open)));
        assert!(matches!(
            SecretBox::ephemeral().open(&sealed),
            Err(SecretError::Open)
        ));
        assert!(matches!(b.open(b"short"), Err(SecretError::Open)));
        // Derived secrets: stable per key and label, different across both.
        assert_eq!(a.derive("x"), b.derive("x"));
        assert_ne!(a.derive("x"), a.derive("y"));
        assert_ne!(a.derive("x"), SecretBox::ephemeral().derive("x"));
        assert_eq!(a.derive("x").len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), b"too short").unwrap();
        assert!(matches!(
            SecretBox::load_or_create(dir.path()),
            Err(SecretError::BadKey(_))
        ));
    }
}
