//! A single Fernet key and the primitive operations done with its two halves.

use std::fmt;

use aes::Aes128;
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{Error, DECODER};

/// Length of each half of a key (signing key, encryption key), in bytes.
const HALF: usize = 16;

/// Length of an HMAC-SHA256 tag, in bytes.
pub(crate) const TAG_LEN: usize = 32;

/// One Fernet key: a 128-bit HMAC-SHA256 signing key followed by a 128-bit AES
/// encryption key, written as 32 bytes of url-safe base64 (44 characters with
/// padding), exactly the format of Keystone's key files and the Fernet spec.
///
/// `Debug` prints `Key(..)` so a key can never leak into a log line through a
/// `{:?}` of some larger structure.
#[derive(Clone)]
pub struct Key {
    signing: [u8; HALF],
    encryption: [u8; HALF],
}

impl Key {
    /// Generates a fresh key from the operating system's CSPRNG.
    ///
    /// Panics only if the OS cannot provide randomness, in which case no key could
    /// safely be made anyway.
    pub fn generate() -> Key {
        let mut bytes = [0u8; 2 * HALF];
        OsRng.fill_bytes(&mut bytes);
        Key::from_bytes(&bytes)
    }

    /// Parses a key from its url-safe base64 form. Surrounding whitespace is ignored
    /// because key files are often written by hand or by tools that add a newline;
    /// padding is optional for the same reason.
    ///
    /// On failure the error is [`Error::InvalidKey`] naming `"argument"`; the key
    /// repository replaces that with the file's path.
    pub fn from_base64(s: &str) -> Result<Key, Error> {
        let invalid = || Error::InvalidKey("argument".to_owned());
        let bytes = DECODER.decode(s.trim()).map_err(|_| invalid())?;
        let bytes: [u8; 2 * HALF] = bytes.as_slice().try_into().map_err(|_| invalid())?;
        Ok(Key::from_bytes(&bytes))
    }

    /// Returns the key as 44 characters of padded url-safe base64, the form Keystone
    /// writes to its key files.
    pub fn to_base64(&self) -> String {
        let mut bytes = [0u8; 2 * HALF];
        bytes[..HALF].copy_from_slice(&self.signing);
        bytes[HALF..].copy_from_slice(&self.encryption);
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    }

    /// Splits 32 raw bytes into the signing and encryption halves (spec order).
    pub(crate) fn from_bytes(bytes: &[u8; 2 * HALF]) -> Key {
        let mut signing = [0u8; HALF];
        let mut encryption = [0u8; HALF];
        signing.copy_from_slice(&bytes[..HALF]);
        encryption.copy_from_slice(&bytes[HALF..]);
        Key {
            signing,
            encryption,
        }
    }

    /// HMAC-SHA256 of `data` under the signing key.
    pub(crate) fn sign(&self, data: &[u8]) -> [u8; TAG_LEN] {
        // HMAC accepts keys of any length, so this cannot fail for a 16-byte key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.signing)
            .expect("HMAC takes keys of any length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Checks `tag` against the HMAC of `data` in constant time, so the time taken
    /// does not reveal how many leading bytes of a forged tag were right.
    pub(crate) fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        self.sign(data).ct_eq(tag).into()
    }

    /// AES-128-CBC encryption with PKCS#7 padding under the encryption key.
    pub(crate) fn encrypt_cbc(&self, iv: &[u8; 16], plaintext: &[u8]) -> Vec<u8> {
        cbc::Encryptor::<Aes128>::new(&self.encryption.into(), iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext)
    }

    /// AES-128-CBC decryption and PKCS#7 unpadding; `None` on bad length or padding.
    /// Only called after the HMAC has been verified, so a padding failure here cannot
    /// be used as an oracle by someone without the key.
    pub(crate) fn decrypt_cbc(&self, iv: &[u8; 16], ciphertext: &[u8]) -> Option<Vec<u8>> {
        cbc::Decryptor::<Aes128>::new(&self.encryption.into(), iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
            .ok()
    }
}

impl fmt::Debug for Key {
    /// Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl PartialEq for Key {
    /// Constant-time comparison: equality of secrets should not leak through timing.
    fn eq(&self, other: &Key) -> bool {
        let a = self.signing.ct_eq(&other.signing) & self.encryption.ct_eq(&other.encryption);
        a.into()
    }
}

impl Eq for Key {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_is_44_padded_chars() {
        let key = Key::generate();
        let s = key.to_base64();
        assert_eq!(s.len(), 44);
        assert!(s.ends_with('='));
        assert!(!s.contains('+') && !s.contains('/'));
        assert_eq!(Key::from_base64(&s).unwrap(), key);
    }

    #[test]
    fn from_base64_trims_whitespace_and_accepts_missing_padding() {
        let key = Key::generate();
        let s = key.to_base64();
        assert_eq!(Key::from_base64(&format!("  {s}\n")).unwrap(), key);
        assert_eq!(Key::from_base64(s.trim_end_matches('=')).unwrap(), key);
    }

    #[test]
    fn from_base64_rejects_wrong_length_and_alphabet() {
        let short = base64::engine::general_purpose::URL_SAFE.encode([7u8; 31]);
        let long = base64::engine::general_purpose::URL_SAFE.encode([7u8; 33]);
        // 0xfb bytes encode to '+' / '/' in the standard alphabet, '-' / '_' in url-safe.
        let standard = base64::engine::general_purpose::STANDARD.encode([0xfbu8; 32]);
        assert!(standard.contains('+') || standard.contains('/'));
        for bad in [
            short.as_str(),
            long.as_str(),
            standard.as_str(),
            "",
            "not a key",
        ] {
            assert!(
                matches!(Key::from_base64(bad), Err(Error::InvalidKey(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn spec_key_splits_signing_then_encryption() {
        let key = Key::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        assert_eq!(
            key.signing,
            *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
        );
        assert_eq!(key.encryption[0], 0x10);
        assert_eq!(key.encryption[15], 0x1f);
    }

    #[test]
    fn debug_hides_key_material() {
        let key = Key::generate();
        let shown = format!("{key:?}");
        assert_eq!(shown, "Key(..)");
        assert!(!shown.contains(&key.to_base64()[..8]));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Key::generate(), Key::generate());
    }
}
