//! Keys for personal data.
//!
//! Envelope encryption: one [`MasterKey`] (the key-encryption key) comes from configuration or a
//! secret; every customer gets a random [`DataKey`] (the data-encryption key) that is stored only
//! *wrapped* (encrypted) under a subkey of the master key. Personal data is sealed under the
//! customer's data key. Destroying a customer's wrapped key makes everything sealed under it
//! unreadable for good (crypto-shredding), wherever the ciphertext was copied.
//!
//! The cipher is XChaCha20-Poly1305: 24-byte random nonces, so keys can seal any number of
//! values without nonce bookkeeping. Every seal binds associated data (e.g. the customer id), so
//! a ciphertext moved to another customer does not open.
//!
//! Identifiers (emails, phones, device ids…) are looked up by a keyed digest
//! ([`MasterKey::identifier_digest`], HMAC-SHA-256 under a subkey), never by their plain value.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of every key, in bytes.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The first byte of every sealed value: the format version.
const FORMAT_V1: u8 = 1;

/// What can go wrong with keys and sealed values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The master key text is not 32 bytes of standard base64.
    #[error("the master key must be 32 bytes in standard base64 (44 characters): {0}")]
    InvalidMasterKey(String),
    /// The master key file could not be read.
    #[error("cannot read the master key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A sealed value is too short or of an unknown format.
    #[error("sealed value is malformed")]
    Malformed,
    /// A sealed value does not open under this key and associated data: wrong key, wrong
    /// customer, or tampered bytes.
    #[error("sealed value does not open under this key (wrong key, wrong customer or tampered)")]
    Undecryptable,
    /// The operating system's random source failed.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// The key-encryption key. Never printed; zeroed when dropped.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

impl MasterKey {
    /// A key from its standard base64 text (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|e| CryptoError::InvalidMasterKey(e.to_string()))?,
        );
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            CryptoError::InvalidMasterKey(format!("decodes to {} bytes", decoded.len()))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// A key read from a file holding its base64 text (as a Kubernetes secret mounts it).
    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| CryptoError::KeyFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?,
            );
        Self::from_base64(&text)
    }

    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_bytes(random_key()?))
    }

    fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// The key as standard base64 text (to write a newly generated key to a file).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.bytes))
    }

    /// A short public fingerprint of the key (16 hex digits), safe to store and log: stored
    /// beside wrapped keys, it tells "wrong master key" apart from "tampered data".
    pub fn id(&self) -> String {
        let digest = self.mac("patron key id", &[]);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A subkey for one purpose (HKDF-SHA-256), so that no two uses share key material.
    fn subkey(&self, purpose: &str) -> Zeroizing<[u8; KEY_LEN]> {
        let hkdf = Hkdf::<Sha256>::new(Some(b"patron-privacy/v1"), self.bytes.as_slice());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes is far below HKDF-SHA-256's limit of 255 × 32, so expand cannot fail.
        if hkdf.expand(purpose.as_bytes(), out.as_mut_slice()).is_err() {
            unreachable!("HKDF output length is fixed and valid");
        }
        out
    }

    fn mac(&self, purpose: &str, parts: &[&[u8]]) -> [u8; 32] {
        let key = self.subkey(purpose);
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key.as_slice()) else {
            unreachable!("HMAC takes keys of any length");
        };
        for part in parts {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Wraps (encrypts) a customer's data key for storage, bound to the customer id.
    pub fn wrap(&self, customer_id: &str, key: &DataKey) -> Result<Vec<u8>, CryptoError> {
        seal_with(
            &self.subkey("data key wrap"),
            customer_id.as_bytes(),
            key.bytes.as_slice(),
        )
    }

    /// Unwraps a stored data key of `customer_id`.
    pub fn unwrap(&self, customer_id: &str, wrapped: &[u8]) -> Result<DataKey, CryptoError> {
        let plain = Zeroizing::new(open_with(
            &self.subkey("data key wrap"),
            customer_id.as_bytes(),
            wrapped,
        )?);
        let bytes: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Malformed)?;
        Ok(DataKey {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// The keyed digest of an identifier, for lookups that must not store its plain value.
    /// The caller normalises `value` first (e.g. lower-cases an email).
    pub fn identifier_digest(&self, kind: &str, value: &str) -> [u8; 32] {
        self.mac("identifier digest", &[kind.as_bytes(), value.as_bytes()])
    }

    /// A keyed digest for another purpose (e.g. a stable pseudonym), domain-separated by
    /// `purpose`.
    pub fn keyed_digest(&self, purpose: &str, parts: &[&[u8]]) -> [u8; 32] {
        self.mac(&format!("keyed digest: {purpose}"), parts)
    }
}

/// A customer's data-encryption key. Never printed; zeroed when dropped.
#[derive(Clone)]
pub struct DataKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A new random data key.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self {
            bytes: Zeroizing::new(random_key()?),
        })
    }

    /// Seals `plaintext`, bound to `aad` (e.g. the customer id and event id).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.bytes, aad, plaintext)
    }

    /// Opens a value sealed by [`DataKey::seal`] with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_with(&self.bytes, aad, sealed)
    }
}

fn random_key() -> Result<[u8; KEY_LEN], CryptoError> {
    let mut bytes = [0u8; KEY_LEN];
    getrandom::fill(&mut bytes).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(bytes)
}

/// `version ‖ nonce ‖ ciphertext+tag`.
fn seal_with(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| CryptoError::Random(e.to_string()))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Encryption fails only for messages beyond the cipher's ~256 GiB limit.
        .map_err(|_| CryptoError::Malformed)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

fn open_with(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (&version, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
    if version != FORMAT_V1 || rest.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Undecryptable)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap()
    }

    #[test]
    fn master_key_text_round_trips_and_bad_text_is_refused() {
        let key = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.id(), again.id());
        assert_ne!(key.id(), master().id());
        assert!(matches!(
            MasterKey::from_base64("c2hvcnQ="),
            Err(CryptoError::InvalidMasterKey(_))
        ));
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(CryptoError::InvalidMasterKey(_))
        ));
        assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_associated_data() {
        let key = DataKey::generate().unwrap();
        let sealed = key.seal(b"customer-1", b"ada@example.com").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"ada@e"));
        assert_eq!(
            key.open(b"customer-1", &sealed).unwrap(),
            b"ada@example.com"
        );
        assert_eq!(
            key.open(b"customer-2", &sealed),
            Err(CryptoError::Undecryptable)
        );
        let other = DataKey::generate().unwrap();
        assert_eq!(
            other.open(b"customer-1", &sealed),
            Err(CryptoError::Undecryptable)
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            key.open(b"customer-1", &tampered),
            Err(CryptoError::Undecryptable)
        );
        assert_eq!(
            key.open(b"customer-1", &sealed[..10]),
            Err(CryptoError::Malformed)
        );
        // Random nonces: the same plaintext seals differently each time.
        assert_ne!(sealed, key.seal(b"customer-1", b"ada@example.com").unwrap());
    }

    #[test]
    fn wrapped_data_keys_unwrap_only_for_their_customer_and_master_key() {
        let key = DataKey::generate().unwrap();
        let sealed = key.seal(b"", b"x").unwrap();
        let wrapped = master().wrap("c1", &key).unwrap();
        let unwrapped = master().unwrap("c1", &wrapped).unwrap();
        assert_eq!(unwrapped.open(b"", &sealed).unwrap(), b"x");
        assert!(master().unwrap("c2", &wrapped).is_err());
        assert!(
            MasterKey::generate()
                .unwrap()
                .unwrap("c1", &wrapped)
                .is_err()
        );
    }

    #[test]
    fn identifier_digests_are_keyed_and_unambiguous() {
        let a = master().identifier_digest("email", "ada@example.com");
        assert_eq!(a, master().identifier_digest("email", "ada@example.com"));
        assert_ne!(a, master().identifier_digest("phone", "ada@example.com"));
        assert_ne!(
            a,
            MasterKey::generate()
                .unwrap()
                .identifier_digest("email", "ada@example.com")
        );
        assert_ne!(
            master().identifier_digest("ab", "c"),
            master().identifier_digest("a", "bc")
        );
        assert_ne!(a, master().keyed_digest("email", &[b"ada@example.com"]));
    }
}
