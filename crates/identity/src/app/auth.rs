//! `POST /v3/auth/tokens`: the password, token and application_credential
//! methods, scoping, and the token body.
//!
//! Every authentication failure answers the same 401 with the same message,
//! whatever the cause (unknown user, wrong password, locked account,
//! disabled user): a caller learns nothing about which accounts exist.

use serde::Deserialize;
use serde_json::{json, Value};

use api::{AuthContext, Error, Scope};

use super::snapshot::Snapshot;
use super::{db_err, Identity, Validated};
use crate::password::{self, MAX_PASSWORD_BYTES};
use crate::store as db;
use crate::token::{
    new_audit_id, Payload, ScopeId, METHOD_APP_CRED, METHOD_PASSWORD, METHOD_TOKEN,
};

#[derive(Debug, Deserialize)]
pub struct AuthRequest {
    pub auth: AuthBody,
}

#[derive(Debug, Deserialize)]
pub struct AuthBody {
    pub identity: IdentityBody,
    #[serde(default)]
    pub scope: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct IdentityBody {
    pub methods: Vec<String>,
    #[serde(default)]
    pub password: Option<PasswordMethod>,
    #[serde(default)]
    pub token: Option<TokenMethod>,
    #[serde(default)]
    pub application_credential: Option<AppCredMethod>,
}

#[derive(Debug, Deserialize)]
pub struct PasswordMethod {
    pub user: PasswordUser,
}

#[derive(Deserialize)]
pub struct PasswordUser {
    pub id: Option<String>,
    pub name: Option<String>,
    pub domain: Option<NameOrId>,
    pub password: String,
}

impl std::fmt::Debug for PasswordUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordUser")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
pub struct TokenMethod {
    pub id: String,
}

impl std::fmt::Debug for TokenMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenMethod(<redacted>)")
    }
}

#[derive(Deserialize)]
pub struct AppCredMethod {
    pub id: Option<String>,
    pub name: Option<String>,
    pub secret: String,
    pub user: Option<AppCredUser>,
}

impl std::fmt::Debug for AppCredMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredMethod")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Deserialize)]
pub struct AppCredUser {
    pub id: Option<String>,
    pub name: Option<String>,
    pub domain: Option<NameOrId>,
}

#[derive(Debug, Deserialize, Clone)]
pub struct NameOrId {
    pub id: Option<String>,
    pub name: Option<String>,
}

/// A freshly issued token.
pub struct Issued {
    pub token: String,
    pub payload: Payload,
    pub ctx: AuthContext,
}

fn unauthorized() -> Error {
    Error::unauthorized()
}

impl Identity {
    /// Authenticates a request body and issues a token.
    pub async fn authenticate(&self, req: AuthRequest) -> Result<Issued, Error> {
        let ident = req.auth.identity;
        if ident.methods.is_empty() {
            return Err(Error::bad_request(
                "Invalid input for field 'identity.methods': at least one method is required.",
            ));
        }
        let mut methods = 0u8;
        for m in &ident.methods {
            methods |= match m.as_str() {
                "password" => METHOD_PASSWORD,
                "token" => METHOD_TOKEN,
                "application_credential" => METHOD_APP_CRED,
                _ => {
                    return Err(Error::new(
                        axum::http::StatusCode::UNAUTHORIZED,
                        "Attempted to authenticate with an unsupported method.",
                    ))
                }
            };
        }
        if methods.count_ones() > 1 {
            return Err(Error::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "Authenticating with more than one method at once is not supported.",
            ));
        }
        let requested = parse_scope(req.auth.scope.as_ref())?;

        // Who, and from what.
        let mut carried_methods = 0u8;
        let (user_id, inherited_expiry, parent_audit, app_cred, default_scope) = if methods
            == METHOD_PASSWORD
        {
            let pw = ident.password.ok_or_else(|| {
                Error::bad_request(
                    "Expecting to find 'password' in 'identity'; the method 'password' needs it.",
                )
            })?;
            let uid = self.check_password(pw.user).await?;
            let def = self.default_project_scope(&uid).await;
            (uid, None, None, None, def)
        } else if methods == METHOD_TOKEN {
            let t = ident.token.ok_or_else(|| {
                Error::bad_request(
                    "Expecting to find 'token' in 'identity'; the method 'token' needs it.",
                )
            })?;
            let v = self.validate_token(&t.id).ok_or_else(unauthorized)?;
            if v.payload.app_cred_id.is_some() {
                // An application credential's token may not be turned into a
                // token without its restrictions.
                return Err(Error::forbidden(
                    "A token created from an application credential cannot be rescoped.",
                ));
            }
            let scope = v.payload.scope.clone();
            carried_methods = v.payload.methods;
            (
                v.payload.user_id.clone(),
                Some(v.payload.expires_at),
                Some(v.payload.parent_audit_id.unwrap_or(v.payload.audit_id)),
                None,
                Some(scope),
            )
        } else {
            let ac = ident.application_credential.ok_or_else(|| {
                Error::bad_request("Expecting to find 'application_credential' in 'identity'; the method 'application_credential' needs it.")
            })?;
            let (uid, acred) = self.check_app_cred(ac).await?;
            let scope = ScopeId::Project(acred.project_id.clone());
            if let Some(req) = &requested {
                if req != &scope {
                    return Err(Error::new(
                        axum::http::StatusCode::UNAUTHORIZED,
                        "An application credential is bound to its project and cannot be scoped elsewhere.",
                    ));
                }
            }
            let exp = acred.expires_at;
            (uid, exp, None, Some(acred.id), Some(scope))
        };

        let scope = match requested {
            Some(s) => s,
            // Keystone scopes a password login to the user's default project
            // when none is asked for, if the user has a role there.
            None => default_scope.unwrap_or(ScopeId::Unscoped),
        };

        let now = store::now_micros();
        let mut expires_at = now + self.cfg.token_expiration * 1_000_000;
        if let Some(e) = inherited_expiry {
            // Rescoping never extends a token's life; an application
            // credential's expiry caps its tokens.
            expires_at = expires_at.min(e);
        }
        let payload = Payload {
            methods: methods | carried_methods,
            user_id,
            scope,
            issued_at: now,
            expires_at,
            audit_id: new_audit_id(),
            parent_audit_id: parent_audit,
            app_cred_id: app_cred,
        };
        let snap = self.snapshot();
        let ctx = self.context_for(&snap, &payload).ok_or_else(|| {
            if matches!(payload.scope, ScopeId::Unscoped) {
                unauthorized()
            } else {
                Error::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "The request you have made requires authentication: the user has no role on the requested scope, or it is disabled.",
                )
            }
        })?;
        let token = self.keys.seal(&payload);
        Ok(Issued {
            token,
            payload,
            ctx,
        })
    }

    /// Finds the user of a password login and checks the password and the
    /// lockout. Every failure is the same 401.
    async fn check_password(&self, u: PasswordUser) -> Result<String, Error> {
        if u.password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::bad_request(format!(
                "Invalid input for field 'password': longer than {MAX_PASSWORD_BYTES} bytes."
            )));
        }
        let cost = self.cfg.password_hash_rounds;
        let user = match (&u.id, &u.name) {
            (Some(id), _) => db::user::user_get(&self.pool, id).await.map_err(db_err)?,
            (None, Some(name)) => {
                let dom = u
                    .domain
                    .as_ref()
                    .ok_or_else(|| Error::bad_request("Expecting to find 'domain' in 'user': a user named without an id needs its domain."))?;
                match self.resolve_domain(dom).await? {
                    Some(d) => db::user::user_by_name(&self.pool, &d, name)
                        .await
                        .map_err(db_err)?,
                    None => None,
                }
            }
            (None, None) => {
                return Err(Error::bad_request(
                    "Expecting to find 'id' or 'name' in 'user'.",
                ))
            }
        };
        let Some(user) = user else {
            password::verify(u.password, None, cost).await;
            return Err(unauthorized());
        };
        let now = store::now_micros();
        if let Some(max) = self.cfg.lockout_failure_attempts {
            let locked = user.failed_auth_count >= max as i64
                && user
                    .failed_auth_at
                    .is_some_and(|t| now - t < self.cfg.lockout_duration * 1_000_000);
            if locked {
                // Same work and same answer as for an unknown user.
                password::verify(u.password, None, cost).await;
                return Err(unauthorized());
            }
        }
        let ok = password::verify(u.password, user.password_hash.clone(), cost).await;
        let snap = self.snapshot();
        if !ok {
            if self.cfg.lockout_failure_attempts.is_some() {
                // A lockout that expired starts counting afresh.
                let expired = user
                    .failed_auth_at
                    .is_some_and(|t| now - t >= self.cfg.lockout_duration * 1_000_000);
                if expired {
                    db::user::reset_auth_failures(&self.pool, &user.id)
                        .await
                        .map_err(db_err)?;
                }
                db::user::record_auth_failure(&self.pool, &user.id, now)
                    .await
                    .map_err(db_err)?;
            }
            return Err(unauthorized());
        }
        if !snap.user_usable(&user.id) {
            return Err(unauthorized());
        }
        if user.failed_auth_count != 0 {
            db::user::reset_auth_failures(&self.pool, &user.id)
                .await
                .map_err(db_err)?;
        }
        Ok(user.id)
    }

    async fn check_app_cred(
        &self,
        ac: AppCredMethod,
    ) -> Result<(String, db::appcred::AppCred), Error> {
        if ac.secret.len() > MAX_PASSWORD_BYTES {
            return Err(Error::bad_request(
                "Invalid input for field 'secret': too long.",
            ));
        }
        let cost = self.cfg.password_hash_rounds;
        let found = match (&ac.id, &ac.name) {
            (Some(id), _) => db::appcred::get(&self.pool, id).await.map_err(db_err)?,
            (None, Some(name)) => {
                let user = ac.user.as_ref().ok_or_else(|| {
                    Error::bad_request(
                        "Expecting to find 'user' in 'application_credential' when it is named.",
                    )
                })?;
                let uid = match (&user.id, &user.name, &user.domain) {
                    (Some(id), _, _) => Some(id.clone()),
                    (None, Some(n), Some(d)) => match self.resolve_domain(d).await? {
                        Some(d) => db::user::user_by_name(&self.pool, &d, n)
                            .await
                            .map_err(db_err)?
                            .map(|u| u.id),
                        None => None,
                    },
                    _ => {
                        return Err(Error::bad_request(
                            "Expecting 'id', or 'name' and 'domain', in 'user'.",
                        ))
                    }
                };
                match uid {
                    Some(uid) => db::appcred::by_name(&self.pool, &uid, name)
                        .await
                        .map_err(db_err)?,
                    None => None,
                }
            }
            (None, None) => {
                return Err(Error::bad_request(
                    "Expecting to find 'id' or 'name' in 'application_credential'.",
                ))
            }
        };
        let Some(found) = found else {
            password::verify(ac.secret, None, cost).await;
            return Err(unauthorized());
        };
        if !password::verify(ac.secret, Some(found.secret_hash.clone()), cost).await {
            return Err(unauthorized());
        }
        if found.expires_at.is_some_and(|e| e <= store::now_micros()) {
            return Err(unauthorized());
        }
        Ok((found.user_id.clone(), found))
    }

    async fn default_project_scope(&self, user_id: &str) -> Option<ScopeId> {
        let user = db::user::user_get(&self.pool, user_id).await.ok()??;
        let pid = user.default_project_id?;
        let snap = self.snapshot();
        let scope = ScopeId::Project(pid);
        (snap.project_usable(match &scope {
            ScopeId::Project(p) => p,
            _ => return None,
        }) && !snap.effective_roles(user_id, &scope).is_empty())
        .then_some(scope)
    }

    /// A domain given by id or name, as its id (if it exists).
    pub async fn resolve_domain(&self, d: &NameOrId) -> Result<Option<String>, Error> {
        match (&d.id, &d.name) {
            (Some(id), _) => Ok(db::resource::domain_get(&self.pool, id)
                .await
                .map_err(db_err)?
                .map(|d| d.id)),
            (None, Some(name)) => Ok(db::resource::domain_by_name(&self.pool, name)
                .await
                .map_err(db_err)?
                .map(|d| d.id)),
            (None, None) => Err(Error::bad_request("Expecting 'id' or 'name' in 'domain'.")),
        }
    }

    /// Resolves the requested scope names to ids. Runs before
    /// authentication, and answers 401 for scopes that do not exist (not 404,
    /// so scopes cannot be probed without credentials).
    pub async fn resolve_scope(&self, scope: ScopeRequest) -> Result<ScopeId, Error> {
        match scope {
            ScopeRequest::Unscoped => Ok(ScopeId::Unscoped),
            ScopeRequest::System => Ok(ScopeId::System),
            ScopeRequest::ProjectId(id) => Ok(ScopeId::Project(id)),
            ScopeRequest::ProjectName(name, dom) => {
                let d = self.resolve_domain(&dom).await?.ok_or_else(unauthorized)?;
                let p = db::resource::project_by_name(&self.pool, &d, &name)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(unauthorized)?;
                Ok(ScopeId::Project(p.id))
            }
            ScopeRequest::Domain(d) => {
                let id = self.resolve_domain(&d).await?.ok_or_else(unauthorized)?;
                Ok(ScopeId::Domain(id))
            }
        }
    }

    /// The token body Keystone returns (`{"token": {...}}`), serialized.
    /// Built from borrowing structs: validation answers are the hot path.
    pub fn token_body(
        &self,
        snap: &Snapshot,
        p: &Payload,
        ctx: &AuthContext,
        with_catalog: bool,
    ) -> Vec<u8> {
        let scoped = !matches!(ctx.scope, Scope::Unscoped);
        let (project, domain, system) = match &ctx.scope {
            Scope::Unscoped => (None, None, None),
            Scope::System => (None, None, Some(SystemAll { all: true })),
            Scope::Domain { id, name } => (None, Some(Named { id, name }), None),
            Scope::Project {
                id,
                name,
                domain_id,
                domain_name,
            } => (
                Some(ProjectBody {
                    id,
                    name,
                    domain: Named {
                        id: domain_id,
                        name: domain_name,
                    },
                }),
                None,
                None,
            ),
        };
        let body = TokenBody {
            token: TokenInner {
                methods: &ctx.methods,
                user: UserBody {
                    id: &ctx.user_id,
                    name: &ctx.user_name,
                    domain: Named {
                        id: &ctx.user_domain_id,
                        name: &ctx.user_domain_name,
                    },
                    password_expires_at: None,
                },
                audit_ids: &ctx.audit_ids,
                expires_at: api::time_fmt::keystone(p.expires_at),
                issued_at: api::time_fmt::keystone(p.issued_at),
                is_domain: project.as_ref().map(|_| false),
                project,
                domain,
                system,
                roles: scoped.then_some(ctx.roles.as_slice()),
                catalog: if scoped && with_catalog {
                    snap.catalog_raw.as_deref()
                } else {
                    None
                },
                application_credential: ctx.application_credential.as_ref().map(
                    |(id, name, unrestricted)| AppCredBody {
                        id,
                        name,
                        restricted: !unrestricted,
                    },
                ),
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Validates a subject token for `GET/HEAD /v3/auth/tokens`.
    pub fn validate_subject(&self, token: &str) -> Result<Validated, Error> {
        self.validate_token(token).ok_or_else(|| {
            Error::not_found("Could not find token: the token is invalid, expired or revoked.")
        })
    }
}

/// A scope as asked for, before names are resolved.
#[derive(Debug, Clone)]
pub enum ScopeRequest {
    Unscoped,
    System,
    ProjectId(String),
    ProjectName(String, NameOrId),
    Domain(NameOrId),
}

/// Reads the `scope` object of an auth request. The ids are resolved later
/// (see [`Identity::resolve_scope`]); this returns them in a form that
/// `authenticate` turns into a [`ScopeId`] synchronously where it can.
fn parse_scope(v: Option<&Value>) -> Result<Option<ScopeId>, Error> {
    // Resolution of names needs the database; authenticate() is handed
    // already-resolved ids by the API layer, which calls resolve_scope first.
    let Some(v) = v else { return Ok(None) };
    let req = scope_request(v)?;
    Ok(match req {
        ScopeRequest::Unscoped => Some(ScopeId::Unscoped),
        ScopeRequest::System => Some(ScopeId::System),
        ScopeRequest::ProjectId(id) => Some(ScopeId::Project(id)),
        // Names are resolved by the caller and replaced by ids before this
        // runs; any left here are unresolvable.
        ScopeRequest::ProjectName(..) | ScopeRequest::Domain(NameOrId { id: None, .. }) => {
            return Err(unauthorized())
        }
        ScopeRequest::Domain(NameOrId { id: Some(id), .. }) => Some(ScopeId::Domain(id)),
    })
}

/// Parses the `scope` value of an auth body.
pub fn scope_request(v: &Value) -> Result<ScopeRequest, Error> {
    if v.as_str() == Some("unscoped") {
        return Ok(ScopeRequest::Unscoped);
    }
    let obj = v.as_object().ok_or_else(|| {
        Error::bad_request("Invalid input for field 'scope': expected an object.")
    })?;
    let kinds: Vec<&String> = obj
        .keys()
        .filter(|k| ["project", "domain", "system", "OS-TRUST:trust"].contains(&k.as_str()))
        .collect();
    if kinds.len() > 1 {
        return Err(Error::bad_request(
            "Specify only one of project, domain or system in 'scope'.",
        ));
    }
    if let Some(p) = obj.get("project") {
        let p: ProjectScope = serde_json::from_value(p.clone()).map_err(|e| {
            Error::bad_request(format!("Invalid input for field 'scope.project': {e}"))
        })?;
        return match (p.id, p.name, p.domain) {
            (Some(id), _, _) => Ok(ScopeRequest::ProjectId(id)),
            (None, Some(name), Some(d)) => Ok(ScopeRequest::ProjectName(name, d)),
            (None, Some(_), None) => Err(Error::bad_request(
                "A project named in 'scope' needs its 'domain'.",
            )),
            _ => Err(Error::bad_request(
                "Expecting 'id' or 'name' in 'scope.project'.",
            )),
        };
    }
    if let Some(d) = obj.get("domain") {
        let d: NameOrId = serde_json::from_value(d.clone()).map_err(|e| {
            Error::bad_request(format!("Invalid input for field 'scope.domain': {e}"))
        })?;
        if d.id.is_none() && d.name.is_none() {
            return Err(Error::bad_request(
                "Expecting 'id' or 'name' in 'scope.domain'.",
            ));
        }
        return Ok(ScopeRequest::Domain(d));
    }
    if let Some(s) = obj.get("system") {
        if s.get("all").and_then(Value::as_bool) == Some(true) {
            return Ok(ScopeRequest::System);
        }
        return Err(Error::bad_request(
            "Invalid input for field 'scope.system': expected {\"all\": true}.",
        ));
    }
    if obj.contains_key("OS-TRUST:trust") {
        return Err(Error::forbidden("Trusts are not supported."));
    }
    Err(Error::bad_request(
        "Invalid input for field 'scope': expected project, domain or system.",
    ))
}

#[derive(Debug, Deserialize)]
struct ProjectScope {
    id: Option<String>,
    name: Option<String>,
    domain: Option<NameOrId>,
}

/// Rewrites a request's `scope` to ids, so [`Identity::authenticate`] needs
/// no database lookups for names.
pub async fn resolve_scope_names(ident: &Identity, req: &mut AuthRequest) -> Result<(), Error> {
    let Some(v) = &req.auth.scope else {
        return Ok(());
    };
    let resolved = ident.resolve_scope(scope_request(v)?).await?;
    req.auth.scope = Some(match resolved {
        ScopeId::Unscoped => json!("unscoped"),
        ScopeId::System => json!({"system": {"all": true}}),
        ScopeId::Project(id) => json!({"project": {"id": id}}),
        ScopeId::Domain(id) => json!({"domain": {"id": id}}),
    });
    Ok(())
}

#[derive(serde::Serialize)]
struct TokenBody<'a> {
    token: TokenInner<'a>,
}

#[derive(serde::Serialize)]
struct TokenInner<'a> {
    methods: &'a [&'static str],
    user: UserBody<'a>,
    audit_ids: &'a [String],
    expires_at: String,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<ProjectBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_domain: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<Named<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<SystemAll>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [api::RoleRef]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    catalog: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    application_credential: Option<AppCredBody<'a>>,
}

#[derive(serde::Serialize)]
struct UserBody<'a> {
    id: &'a str,
    name: &'a str,
    domain: Named<'a>,
    password_expires_at: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Named<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(serde::Serialize)]
struct ProjectBody<'a> {
    id: &'a str,
    name: &'a str,
    domain: Named<'a>,
}

#[derive(serde::Serialize)]
struct SystemAll {
    all: bool,
}

#[derive(serde::Serialize)]
struct AppCredBody<'a> {
    id: &'a str,
    name: &'a str,
    restricted: bool,
}
