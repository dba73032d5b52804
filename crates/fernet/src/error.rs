//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong with keys, tokens and key repositories.
///
/// Token failures are deliberately collapsed into [`Error::InvalidToken`]: telling a
/// caller (and so, possibly, an attacker probing an API) *which* check failed would
/// hand out a padding or MAC oracle for free.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed. The path is kept because "permission denied"
    /// without saying on what is useless to an operator.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },

    /// A key is not 32 bytes of url-safe base64. The string names where the key came
    /// from: the key file's path when loading a repository, `"argument"` for
    /// [`Key::from_base64`](crate::Key::from_base64) on a caller-supplied string.
    #[error("invalid Fernet key ({0}): expected 32 bytes of url-safe base64")]
    InvalidKey(String),

    /// A token could not be decoded, authenticated or decrypted with any key.
    #[error("invalid Fernet token")]
    InvalidToken,

    /// The repository holds fewer than two keys, so it has no primary key to encrypt
    /// with (the only key there would be the staged one).
    #[error("the Fernet key repository has no primary key (fewer than 2 keys)")]
    NoPrimaryKey,

    /// The repository has a primary key but no staged key `0`, so there is nothing
    /// that every node already knows to promote; promoting a freshly generated key
    /// instead would make the other nodes reject the new tokens.
    #[error("the Fernet key repository has no staged key 0 to promote")]
    NoStagedKey,

    /// `max_active_keys` below 3 cannot hold a staged, a primary and a secondary key;
    /// without the secondary, tokens issued just before a rotation would stop working.
    #[error("max_active_keys must be at least 3")]
    BadMaxActiveKeys,
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
