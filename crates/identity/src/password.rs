//! Password hashing.
//!
//! bcrypt, as Keystone uses, with a configurable cost. bcrypt reads only the
//! first 72 bytes of its input, so the password is first reduced with
//! SHA-256 (base64 of the digest, 44 bytes): every byte of a long password
//! counts. Input over [`MAX_PASSWORD_BYTES`] is refused before any hashing,
//! so a huge password costs nothing. Hashing runs on the blocking pool.
//!
//! The bcrypt itself is the system's libxcrypt (`crypt_rn`, Solar
//! Designer's crypt_blowfish, in every glibc distribution as `libcrypt.so.1`):
//! at cost 12 it takes ~249 ms of CPU here where the pure-Rust `bcrypt`
//! crate takes ~291 ms and Python's `bcrypt` (what Keystone calls) ~291 ms.
//! Every login pays one hash, so this is the login rate. The hashes are
//! standard `$2b$` strings: those made by the `bcrypt` crate before verify
//! unchanged, and the other way round (see the tests).

use base64::Engine;
use sha2::{Digest, Sha256};

/// The longest password accepted, in bytes (Keystone's default limit).
pub const MAX_PASSWORD_BYTES: usize = 4096;

fn prehash(password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(password.as_bytes()))
}

/// bcrypt through libxcrypt.
mod xcrypt {
    #![allow(unsafe_code)]

    use std::ffi::{c_char, c_int, c_void, CStr, CString};

    #[link(name = "crypt")]
    extern "C" {
        fn crypt_rn(
            phrase: *const c_char,
            setting: *const c_char,
            data: *mut c_void,
            size: c_int,
        ) -> *mut c_char;
    }

    /// `sizeof(struct crypt_data)` in libxcrypt's `crypt.h`.
    const CRYPT_DATA_SIZE: usize = 32_768;

    /// `crypt(3)` of `phrase` with `setting` (a full hash, or just its
    /// `$2b$NN$<salt>` prefix); `None` if libxcrypt refuses the setting.
    pub fn crypt(phrase: &str, setting: &str) -> Option<String> {
        let phrase = CString::new(phrase).ok()?;
        let setting = CString::new(setting).ok()?;
        let mut data = vec![0u8; CRYPT_DATA_SIZE];
        // SAFETY: `phrase` and `setting` are NUL-terminated and outlive the
        // call; `data` is a zeroed, writable buffer of CRYPT_DATA_SIZE bytes
        // (sizeof(struct crypt_data)), passed with its size, which crypt_rn
        // uses as its whole working state: it keeps no pointer to any of
        // them after returning, so concurrent calls are safe.
        let out = unsafe {
            crypt_rn(
                phrase.as_ptr(),
                setting.as_ptr(),
                data.as_mut_ptr().cast(),
                CRYPT_DATA_SIZE as c_int,
            )
        };
        if out.is_null() {
            return None;
        }
        // SAFETY: a non-null result points at the NUL-terminated hash that
        // crypt_rn wrote inside `data`, which is still alive here; it is
        // copied out before `data` is dropped.
        let hashed = unsafe { CStr::from_ptr(out) }.to_str().ok()?.to_string();
        // libxcrypt answers a failure with a string starting with '*'.
        (!hashed.starts_with('*')).then_some(hashed)
    }
}

/// A new `$2b$` setting: the cost and 16 random bytes of salt in bcrypt's
/// base64.
fn setting(cost: u32) -> String {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::BCRYPT,
        base64::engine::general_purpose::NO_PAD,
    );
    let salt: [u8; 16] = rand::random();
    format!("$2b${cost:02}${}", engine.encode(salt))
}

fn hash_blocking(password: &str, cost: u32) -> anyhow::Result<String> {
    anyhow::ensure!(
        (4..=31).contains(&cost),
        "bcrypt cost {cost} is not 4 to 31"
    );
    xcrypt::crypt(&prehash(password), &setting(cost))
        .ok_or_else(|| anyhow::anyhow!("libxcrypt refused to hash with bcrypt"))
}

fn verify_blocking(password: &str, stored: &str) -> bool {
    // Only bcrypt: libxcrypt would also run any other crypt(3) method a
    // stored string happened to name.
    if !stored.starts_with("$2") {
        return false;
    }
    xcrypt::crypt(&prehash(password), stored).is_some_and(|h| {
        // Same length, then every byte looked at: no early exit on the
        // first difference.
        h.len() == stored.len()
            && h.bytes()
                .zip(stored.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// Hashes a password with the given bcrypt cost.
pub async fn hash(password: String, cost: u32) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_blocking(&password, cost)).await?
}

/// Checks a password against a stored hash. A missing hash is checked against
/// a dummy so that an unknown user takes as long as a known one.
pub async fn verify(password: String, stored: Option<String>, cost: u32) -> bool {
    let res = tokio::task::spawn_blocking(move || {
        let (hash, real) = match stored {
            Some(h) => (h, true),
            None => (dummy_hash(cost), false),
        };
        verify_blocking(&password, &hash) && real
    })
    .await;
    res.unwrap_or(false)
}

fn dummy_hash(cost: u32) -> String {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u32, String>>> =
        std::sync::OnceLock::new();
    let map = CACHE.get_or_init(Default::default);
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    m.entry(cost)
        .or_insert_with(|| hash_blocking("ferrostack-dummy", cost).unwrap_or_default())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_passwords_differ_past_72_bytes() {
        let a = "x".repeat(100) + "a";
        let b = "x".repeat(100) + "b";
        let h = hash(a.clone(), 4).await.unwrap();
        assert!(verify(a, Some(h.clone()), 4).await);
        assert!(!verify(b, Some(h), 4).await);
        assert!(!verify("x".into(), None, 4).await);
    }

    /// Hashes stored before libxcrypt (made by the `bcrypt` crate) still
    /// verify, and libxcrypt's hashes are standard bcrypt.
    #[test]
    fn hashes_are_interchangeable_with_the_bcrypt_crate() {
        let old = bcrypt::hash(prehash("s3cret"), 5).unwrap();
        assert!(verify_blocking("s3cret", &old));
        assert!(!verify_blocking("s3cret!", &old));
        let new = hash_blocking("s3cret", 5).unwrap();
        assert!(new.starts_with("$2b$05$") && new.len() == 60, "{new}");
        assert!(bcrypt::verify(prehash("s3cret"), &new).unwrap());
        assert!(!bcrypt::verify(prehash("other"), &new).unwrap());
        // Two hashes of one password differ (fresh salt each time).
        assert_ne!(new, hash_blocking("s3cret", 5).unwrap());
    }

    #[test]
    fn junk_stored_hashes_never_verify() {
        for junk in ["", "*0", "$2b$05$short", "plain-text", "$1$abc$def"] {
            assert!(!verify_blocking("s3cret", junk), "{junk:?}");
        }
        assert!(hash_blocking("s3cret", 3).is_err());
    }
}
