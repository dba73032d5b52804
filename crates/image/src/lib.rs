//! Image v2, compatible with OpenStack Glance: image records with custom
//! properties, tags, sharing (members) and visibility; image data streamed
//! in and out of a store behind a trait ([`blob::ImageStore`]); the
//! interoperable import (`glance-direct`, `web-download`); every image
//! checked by the format inspector (`diskformat`) before it becomes active.
//!
//! Layers: `api` (HTTP handlers, Glance's JSON) → `app` (visibility, status
//! machine, quotas, data paths, the web-download fetcher and its address
//! guard) → `store` (SQL) and `blob` (files). `policy` holds every rule.

pub mod api;
pub mod app;
pub mod blob;
pub mod policy;
pub mod store;

pub use app::{Config, Images, ImportLimits};
