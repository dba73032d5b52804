//! Fernet tokens: `0x80 ‖ timestamp ‖ IV ‖ ciphertext ‖ HMAC`, url-safe base64.

use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;

use crate::key::TAG_LEN;
use crate::{Error, Key, DECODER};

/// The only token version the spec defines.
const VERSION: u8 = 0x80;

/// Bytes before the ciphertext: version, 64-bit timestamp, 128-bit IV.
const HEADER_LEN: usize = 1 + 8 + 16;

/// AES block size; the ciphertext is a whole number of blocks.
const BLOCK: usize = 16;

/// Tokens longer than this many characters are refused before any base64 decoding,
/// so a hostile client cannot make the server decode and MAC megabytes. Keystone
/// tokens are a few hundred characters.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The keys of a repository in the order used for decryption: primary first, then
/// the secondaries (newest first), then the staged key last.
///
/// Encryption always uses the primary key. Decryption accepts any key, which is what
/// lets a key be staged on every node before it becomes primary on one of them, and
/// lets tokens made with a retired primary keep working while it is a secondary.
#[derive(Clone, Debug)]
pub struct KeySet {
    /// Never empty: `keys[0]` is the primary.
    keys: Vec<Key>,
}

impl KeySet {
    /// Builds a key set from the primary key and the others, which should already be
    /// in decryption order (secondaries newest first, then the staged key).
    pub fn new(primary: Key, others: Vec<Key>) -> KeySet {
        let mut keys = Vec::with_capacity(1 + others.len());
        keys.push(primary);
        keys.extend(others);
        KeySet { keys }
    }

    /// Encrypts `plaintext` with the primary key and a random IV from the OS.
    ///
    /// `now` is seconds since the Unix epoch and becomes the token's timestamp; it is
    /// a parameter so callers (and tests) control the clock. The token is url-safe
    /// base64 *without* `=` padding, as Keystone sends it. Plaintexts over 3007 bytes
    /// give tokens longer than [`MAX_TOKEN_LEN`], which [`KeySet::decrypt`] refuses.
    pub fn encrypt(&self, plaintext: &[u8], now: u64) -> String {
        let mut iv = [0u8; 16];
        OsRng.fill_bytes(&mut iv);
        encrypt_with_iv(&self.keys[0], plaintext, now, &iv)
    }

    /// Authenticates and decrypts `token` (with or without `=` padding) with whichever
    /// key made it, returning the plaintext and the token's timestamp.
    ///
    /// No time-to-live is applied: Keystone-style payloads carry their own expiry,
    /// which the caller checks. Every failure is [`Error::InvalidToken`], whatever
    /// check failed.
    pub fn decrypt(&self, token: &str) -> Result<(Vec<u8>, u64), Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::InvalidToken);
        }
        let raw = DECODER
            .decode(token.as_bytes())
            .map_err(|_| Error::InvalidToken)?;
        // At least one ciphertext block: PKCS#7 always adds one byte or more.
        if raw.len() < HEADER_LEN + BLOCK + TAG_LEN
            || raw[0] != VERSION
            || (raw.len() - HEADER_LEN - TAG_LEN) % BLOCK != 0
        {
            return Err(Error::InvalidToken);
        }
        let (signed, tag) = raw.split_at(raw.len() - TAG_LEN);

        // Check every key rather than stopping at the first match, so the time taken
        // does not depend on where in the set the right key sits.
        let mut matching: Option<&Key> = None;
        for key in &self.keys {
            if key.verify(signed, tag) && matching.is_none() {
                matching = Some(key);
            }
        }
        let key = matching.ok_or(Error::InvalidToken)?;

        let mut ts = [0u8; 8];
        ts.copy_from_slice(&signed[1..9]);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&signed[9..HEADER_LEN]);
        let plaintext = key
            .decrypt_cbc(&iv, &signed[HEADER_LEN..])
            .ok_or(Error::InvalidToken)?;
        Ok((plaintext, u64::from_be_bytes(ts)))
    }

    /// Number of keys in the set (primary included).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always `false`: a key set has at least its primary key. Present because a
    /// `len` without `is_empty` surprises readers (and clippy).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys in decryption order, for tests that check repository loading.
    #[cfg(test)]
    pub(crate) fn keys_for_test(&self) -> &[Key] {
        &self.keys
    }
}

/// Builds a token with a caller-chosen IV. Only [`KeySet::encrypt`] (with a random
/// IV) and known-answer tests should call it: reusing an IV under one key breaks
/// CBC's confidentiality.
pub(crate) fn encrypt_with_iv(key: &Key, plaintext: &[u8], now: u64, iv: &[u8; 16]) -> String {
    let ciphertext = key.encrypt_cbc(iv, plaintext);
    let mut raw = Vec::with_capacity(HEADER_LEN + ciphertext.len() + TAG_LEN);
    raw.push(VERSION);
    raw.extend_from_slice(&now.to_be_bytes());
    raw.extend_from_slice(iv);
    raw.extend_from_slice(&ciphertext);
    let tag = key.sign(&raw);
    raw.extend_from_slice(&tag);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

    fn decode(token: &str) -> Vec<u8> {
        DECODER.decode(token).unwrap()
    }

    /// Appends a valid HMAC to hand-made token bytes and encodes them, so tests can
    /// reach the checks that run after authentication.
    fn seal(key: &Key, mut raw: Vec<u8>) -> String {
        let tag = key.sign(&raw);
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn single(key: &Key) -> KeySet {
        KeySet::new(key.clone(), Vec::new())
    }

    fn assert_invalid(set: &KeySet, token: &str) {
        match set.decrypt(token) {
            Err(Error::InvalidToken) => {}
            other => panic!("expected InvalidToken for {token:?}, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let set = single(&Key::generate());
        for msg in [&b""[..], b"x", b"exactly sixteen!", &[0xa5; 1000]] {
            let token = set.encrypt(msg, 1_700_000_123);
            assert_eq!(set.decrypt(&token).unwrap(), (msg.to_vec(), 1_700_000_123));
        }
    }

    #[test]
    fn token_is_unpadded_url_safe_base64_and_padded_form_is_accepted() {
        let set = single(&Key::generate());
        // Lengths chosen so the raw token length is not a multiple of 3 in every case,
        // i.e. standard encoding would need '=' padding.
        for len in 0..48 {
            let msg = vec![0xfb; len];
            let token = set.encrypt(&msg, 42);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            let raw = decode(&token);
            assert_eq!(token, URL_SAFE_NO_PAD.encode(&raw));
            let padded = URL_SAFE.encode(&raw);
            assert_eq!(set.decrypt(&padded).unwrap(), (msg, 42));
        }
    }

    #[test]
    fn random_ivs_make_distinct_tokens() {
        let set = single(&Key::generate());
        assert_ne!(set.encrypt(b"same", 1), set.encrypt(b"same", 1));
    }

    #[test]
    fn flipping_any_byte_is_rejected() {
        let set = single(&Key::generate());
        let token = set.encrypt(b"a payload spanning two AES blocks", 1_600_000_000);
        let raw = decode(&token);
        for pos in 0..raw.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = raw.clone();
                bad[pos] ^= mask;
                assert_invalid(&set, &URL_SAFE_NO_PAD.encode(&bad));
            }
        }
    }

    #[test]
    fn wrong_key_is_rejected() {
        let a = Key::generate();
        let token = single(&a).encrypt(b"secret", 5);
        let others = KeySet::new(Key::generate(), vec![Key::generate(), Key::generate()]);
        assert_invalid(&others, &token);
    }

    #[test]
    fn any_key_in_the_set_decrypts() {
        let (k1, k2, k3) = (Key::generate(), Key::generate(), Key::generate());
        let set = KeySet::new(k1.clone(), vec![k2.clone(), k3.clone()]);
        assert_eq!(set.len(), 3);
        assert!(!set.is_empty());
        for k in [&k1, &k2, &k3] {
            let token = single(k).encrypt(b"hi", 9);
            assert_eq!(set.decrypt(&token).unwrap(), (b"hi".to_vec(), 9));
        }
        // Encryption uses the primary only.
        let token = set.encrypt(b"p", 1);
        assert!(single(&k1).decrypt(&token).is_ok());
        assert_invalid(&KeySet::new(k2, vec![k3]), &token);
    }

    #[test]
    fn structural_failures_are_invalid_token_even_with_a_valid_mac() {
        let key = Key::generate();
        let set = single(&key);
        let iv = [3u8; 16];
        let good = decode(&encrypt_with_iv(&key, b"hello", 7, &iv));
        let body = &good[..good.len() - TAG_LEN];

        // Wrong version byte, correctly signed.
        let mut v = body.to_vec();
        v[0] = 0x81;
        assert_invalid(&set, &seal(&key, v));

        // Ciphertext not a multiple of the block size, correctly signed.
        let mut v = body.to_vec();
        v.push(0);
        assert_invalid(&set, &seal(&key, v));

        // No ciphertext at all, correctly signed.
        assert_invalid(&set, &seal(&key, body[..HEADER_LEN].to_vec()));

        // Bad PKCS#7 padding, correctly signed: encrypt a full block of 16 zero bytes
        // (the final padding block) and drop the padding block, leaving a last byte
        // of 0, which is never valid padding.
        let ct = key.encrypt_cbc(&iv, &[0u8; 16]);
        let mut v = body[..HEADER_LEN].to_vec();
        v.extend_from_slice(&ct[..16]);
        assert_invalid(&set, &seal(&key, v));
    }

    #[test]
    fn malformed_encodings_are_rejected() {
        let key = Key::generate();
        let set = single(&key);
        let token = set.encrypt(b"hello", 1);
        assert_invalid(&set, "");
        assert_invalid(&set, "%%%%");
        assert_invalid(&set, &token[..token.len() - 1]);
        assert_invalid(&set, &format!("{token}A"));
        assert_invalid(&set, &format!(" {token}"));
        // The standard alphabet is not accepted for '-' and '_'.
        let standard = token.replace('-', "+").replace('_', "/");
        if standard != token {
            assert_invalid(&set, &standard);
        }
        // Too short: only a header and a tag.
        assert_invalid(
            &set,
            &URL_SAFE_NO_PAD.encode([0x80u8; HEADER_LEN + TAG_LEN]),
        );
    }

    #[test]
    fn overlong_tokens_are_rejected_before_decoding() {
        let key = Key::generate();
        let set = single(&key);
        // The largest plaintext whose token still fits (3007 bytes: 188 blocks of
        // ciphertext, 4087 characters) is accepted...
        let fits = set.encrypt(&[1u8; 3007], 1);
        assert!(fits.len() <= MAX_TOKEN_LEN, "{}", fits.len());
        assert!(set.decrypt(&fits).is_ok());
        // ...and a correctly signed token one block longer is refused.
        let long = set.encrypt(&[1u8; 3008], 1);
        assert!(long.len() > MAX_TOKEN_LEN, "{}", long.len());
        assert_invalid(&set, &long);
    }

    /// Known answer computed independently with Python's `cryptography` 48.0.0 (not
    /// with this crate): AES-CBC and PKCS7 from `cryptography.hazmat`, HMAC from the
    /// standard library `hmac`/`hashlib`, assembled by hand as
    /// `0x80 ‖ ts(8, big endian) ‖ iv ‖ ct ‖ HMAC-SHA256(signing key, all before)` and
    /// encoded with `base64.urlsafe_b64encode`; cross-checked to equal
    /// `Fernet(key)._encrypt_from_parts(msg, ts, iv)`.
    /// Key = bytes 0x00..=0x1f, ts = 1_700_000_000, iv = bytes 0xa0..=0xaf.
    #[test]
    fn known_answer_python_cryptography() {
        let key = Key::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let iv: [u8; 16] = core::array::from_fn(|i| 0xa0 + i as u8);
        let msg = b"Ferrostack fernet known-answer test: three blocks!";
        let expected = "gAAAAABlU_EAoKGio6SlpqeoqaqrrK2ur-pgjPFr2-cll-fzR7kAJKjQVnHWOihj7Ch90UcBQbROIjINbB7oP_Nh4UMr--4rLRM86m2XthchEvj6--1-lumxtlu6as4M76sVrTnn8CN7whjWAK4pPb-Eouvm5EoOeA==";
        let token = encrypt_with_iv(&key, msg, 1_700_000_000, &iv);
        assert_eq!(token, expected.trim_end_matches('='));
        assert_eq!(
            single(&key).decrypt(expected).unwrap(),
            (msg.to_vec(), 1_700_000_000)
        );
    }

    /// The vector published with the Fernet spec (generate.json): secret
    /// "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=", time
    /// 1985-10-26T01:20:00-07:00 (= 499162800, converted with Python's datetime), IV
    /// 0..=15, message "hello".
    #[test]
    fn known_answer_spec_vector() {
        let key = Key::from_base64("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=").unwrap();
        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let expected = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
        assert_eq!(
            encrypt_with_iv(&key, b"hello", 499_162_800, &iv),
            expected.trim_end_matches('=')
        );
        assert_eq!(
            single(&key).decrypt(expected).unwrap(),
            (b"hello".to_vec(), 499_162_800)
        );
    }

    /// A token made by Python's `Fernet(key).encrypt_at_time(b"", 1234567890)` (random
    /// IV, so only decryption can be checked) with key bytes 0x00..=0x1f: an empty
    /// message is a single padding block.
    #[test]
    fn decrypts_python_made_token() {
        let key = Key::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let token = "gAAAAABJlgLS1zkEKsZBXCq_1RNcjcpwD_ih3sKgPo_-0O82KBJmBIiFCF7PYMaT1D8-aT-Sp08ADTudi3RQ2Po9a9t_NhuX6g==";
        assert_eq!(
            single(&key).decrypt(token).unwrap(),
            (Vec::new(), 1_234_567_890)
        );
    }
}
