//! SQL of the image service: one module per resource. No HTTP, no policy.

pub mod image;
pub mod member;
pub mod task;

pub use ::store::{Error, Pool, Tx};

/// Shorthand for query results.
pub type Result<T> = std::result::Result<T, Error>;
