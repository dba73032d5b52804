//! HTTP plumbing every Ferrostack API service shares.
//!
//! A service builds an `axum::Router`, wraps it with [`service_layers`] for
//! its error style, and the binary nests it under its path prefix. What lives
//! here is what every OpenStack API agrees on: request ids, JSON errors,
//! token authentication into an [`AuthContext`], an oslo.policy-compatible
//! [`policy`] engine, pagination, microversions and version discovery.
//!
//! **Architecture invariant:** this crate knows HTTP and nothing about any
//! one service's resources or tables; it never touches the database.

pub mod context;
pub mod discovery;
pub mod error;
pub mod json;
pub mod microversion;
pub mod pagination;
pub mod policy;
pub mod request;
pub mod server;
pub mod time_fmt;

pub use context::{AuthContext, Authenticator, Ctx, MaybeCtx, RoleRef, Scope};
pub use error::{Error, ErrorStyle};
pub use json::Json;
pub use policy::{Enforcer, Target};

use axum::Router;

/// Wraps a service's router with the layers every service needs, in order:
/// its error rendering, token authentication, and a body size limit. The
/// request-id and logging layer is applied once at the top by the binary.
pub fn service_layers(
    router: Router,
    style: ErrorStyle,
    authenticator: std::sync::Arc<dyn Authenticator>,
    max_body_bytes: usize,
) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            authenticator,
            context::authenticate,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            max_body_bytes,
            request::refuse_oversized,
        ))
        .layer(axum::middleware::map_response_with_state(
            style,
            error::render,
        ))
}
