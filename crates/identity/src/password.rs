//! Password hashing.
//!
//! bcrypt, as Keystone uses, with a configurable cost. bcrypt reads only the
//! first 72 bytes of its input, so the password is first reduced with
//! SHA-256 (base64 of the digest, 44 bytes): every byte of a long password
//! counts. Input over [`MAX_PASSWORD_BYTES`] is refused before any hashing,
//! so a huge password costs nothing. Hashing runs on the blocking pool.

use base64::Engine;
use sha2::{Digest, Sha256};

/// The longest password accepted, in bytes (Keystone's default limit).
pub const MAX_PASSWORD_BYTES: usize = 4096;

fn prehash(password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(password.as_bytes()))
}

/// Hashes a password with the given bcrypt cost.
pub async fn hash(password: String, cost: u32) -> anyhow::Result<String> {
    let h = tokio::task::spawn_blocking(move || bcrypt::hash(prehash(&password), cost)).await??;
    Ok(h)
}

/// Checks a password against a stored hash. A missing hash is checked against
/// a dummy so that an unknown user takes as long as a known one.
pub async fn verify(password: String, stored: Option<String>, cost: u32) -> bool {
    let res = tokio::task::spawn_blocking(move || {
        let (hash, real) = match stored {
            Some(h) => (h, true),
            None => (dummy_hash(cost), false),
        };
        bcrypt::verify(prehash(&password), &hash).unwrap_or(false) && real
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
        .or_insert_with(|| bcrypt::hash("ferrostack-dummy", cost).unwrap_or_default())
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
}
