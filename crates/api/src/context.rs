//! Who is calling: the request context built from a validated token.
//!
//! The [`authenticate`] middleware reads `X-Auth-Token`, asks the
//! [`Authenticator`] (the identity service, in-process) to validate it, and
//! attaches the resulting [`AuthContext`] to the request. Identity headers a
//! client sends itself (`X-Roles`, `X-User-Id`, `X-Project-Id`,
//! `X-Identity-Status`, …) are never read anywhere: the context comes only
//! from the token.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Error;

/// A role as tokens carry it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleRef {
    pub id: String,
    pub name: String,
}

/// What a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Unscoped,
    Project {
        id: String,
        name: String,
        domain_id: String,
        domain_name: String,
    },
    Domain {
        id: String,
        name: String,
    },
    /// The whole deployment (`"system": {"all": true}`).
    System,
}

/// The validated identity behind a request.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub user_id: String,
    pub user_name: String,
    pub user_domain_id: String,
    pub user_domain_name: String,
    pub scope: Scope,
    /// Effective roles (implied roles expanded) on the scope.
    pub roles: Vec<RoleRef>,
    /// Authentication methods, in Keystone's names.
    pub methods: Vec<&'static str>,
    /// This token's audit id first, then the one it was rescoped from.
    pub audit_ids: Vec<String>,
    /// Microseconds since the epoch.
    pub issued_at: i64,
    pub expires_at: i64,
    /// Set when the token came from an application credential: its id,
    /// name and whether it may manage other credentials.
    pub application_credential: Option<(String, String, bool)>,
}

impl AuthContext {
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r.name.eq_ignore_ascii_case(name))
    }
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }
    pub fn project_id(&self) -> Option<&str> {
        match &self.scope {
            Scope::Project { id, .. } => Some(id),
            _ => None,
        }
    }
    pub fn domain_id(&self) -> Option<&str> {
        match &self.scope {
            Scope::Domain { id, .. } => Some(id),
            _ => None,
        }
    }
    pub fn is_system(&self) -> bool {
        matches!(self.scope, Scope::System)
    }
}

/// A boxed future, so [`Authenticator`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Validates tokens. Implemented by the identity service; a remote
/// implementation (validating against a controller) fits the same trait.
pub trait Authenticator: Send + Sync + 'static {
    /// `Err` means the token is not valid now, for whatever reason: the caller
    /// answers 401 without saying why.
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Arc<AuthContext>, Error>>;
}

/// Middleware: validates `X-Auth-Token` when present. A request without a
/// token proceeds with no context (public routes decide); a request with an
/// invalid token is refused with 401 here, as keystonemiddleware does.
pub async fn authenticate(
    State(auth): State<Arc<dyn Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    if let Some(token) = token {
        match auth.validate(&token).await {
            Ok(ctx) => {
                req.extensions_mut().insert(ctx);
                req.extensions_mut().insert(CallerToken(Arc::from(token)));
            }
            Err(e) if e.status.is_server_error() => return e.into_response(),
            Err(_) => return Error::unauthorized().into_response(),
        }
    }
    next.run(req).await
}

/// The raw token of the caller, for the few handlers that need it (rescoping
/// is done through the body, so in practice only token revocation of "self").
/// Its `Debug` never prints the token.
#[derive(Clone)]
pub struct CallerToken(pub Arc<str>);

impl std::fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerToken(<redacted>)")
    }
}

/// Extractor for handlers that require an authenticated caller: 401 without.
pub struct Ctx(pub Arc<AuthContext>);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = Error;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<AuthContext>>()
            .cloned()
            .map(Ctx)
            .ok_or_else(Error::unauthorized)
    }
}

impl std::ops::Deref for Ctx {
    type Target = AuthContext;
    fn deref(&self) -> &AuthContext {
        &self.0
    }
}

/// Extractor for routes where a token is optional.
pub struct MaybeCtx(pub Option<Arc<AuthContext>>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeCtx {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeCtx(
            parts.extensions.get::<Arc<AuthContext>>().cloned(),
        ))
    }
}
