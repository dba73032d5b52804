//! Fernet tokens (<https://github.com/fernet/spec>) and a Keystone-compatible Fernet
//! key repository, for Ferrostack's identity service.
//!
//! * [`Key`]: one 256-bit Fernet key (signing half ‖ encryption half).
//! * [`KeySet`]: the keys of a repository; encrypts with the primary key, decrypts
//!   with any of them.
//! * [`KeyRepository`]: a directory of key files named by integers, laid out and
//!   rotated exactly like Keystone's `fernet_setup` / `fernet_rotate`, so a
//!   repository can be shared with (or migrated from) a Keystone deployment.
//!
//! Every token failure is reported as the single [`Error::InvalidToken`] so callers
//! cannot accidentally expose which check failed.

mod error;
mod key;
mod repo;
mod token;

pub use error::Error;
pub use key::Key;
pub use repo::KeyRepository;
pub use token::{KeySet, MAX_TOKEN_LEN};

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Url-safe base64 decoder for keys and tokens that takes input with or without `=`
/// padding: Keystone strips the padding from tokens, other Fernet implementations
/// keep it, and both must be accepted. Trailing bits must still be zero, so every
/// byte string has exactly one accepted encoding (padding aside).
pub(crate) const DECODER: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
