//! Identity v3, compatible with OpenStack Keystone: domains, projects, users,
//! groups, roles and implied roles, grants and role assignments, the service
//! catalog, application credentials, and Fernet tokens with revocation.
//!
//! Layers: `api` (HTTP handlers, request validation, Keystone's JSON) →
//! `app` (authentication, tokens, effective roles, the in-memory snapshot) →
//! `store` (SQL). `policy` holds every rule of this API in one place.

pub mod api;
pub mod app;
pub mod password;
pub mod policy;
pub mod store;
pub mod token;

pub use app::bootstrap::{AdminPassword, CatalogService, REGION};
pub use app::{Config, Identity};
pub use token::Keys;
