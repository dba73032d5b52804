//! Identity logic: authentication, tokens, effective roles, revocation, and
//! the policy checks of every resource. Handlers in `crate::api` call into
//! here; SQL lives in `crate::store`.

pub mod auth;
pub mod bootstrap;
pub mod catalog;
pub mod role;
pub mod snapshot;
pub mod user;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::{AuthContext, Error, RoleRef, Scope};
use store::Pool;

use crate::store as db;
use crate::token::{method_names, Keys, Payload, ScopeId};
use snapshot::Snapshot;

/// Settings of the identity service (Keystone's option names in comments).
#[derive(Debug, Clone)]
pub struct Config {
    /// The externally reachable base URL, e.g. `http://10.0.0.5:5000`.
    pub public_url: String,
    /// `[token] expiration`, seconds.
    pub token_expiration: i64,
    /// `[identity] password_hash_rounds` (bcrypt cost).
    pub password_hash_rounds: u32,
    /// `[security_compliance] lockout_failure_attempts`; `None` disables lockout.
    pub lockout_failure_attempts: Option<u32>,
    /// `[security_compliance] lockout_duration`, seconds.
    pub lockout_duration: i64,
    /// `[security_compliance] unique_last_password_count`: how many of a
    /// user's latest passwords (the current one included) a self-service
    /// change may not reuse; 0 (Keystone's default) turns the check off.
    pub unique_last_password_count: u32,
    /// `[security_compliance] minimum_password_age`, days a self-service
    /// password must be kept before the user may change it again; 0 is off.
    pub minimum_password_age: u32,
    /// How often to look for writes made by other controllers.
    pub watch_interval: Duration,
    /// The policy with an operator's overrides applied; `None`: the
    /// defaults of `crate::policy`. Taken by [`Identity::new`].
    pub policy: Option<api::Enforcer>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            public_url: "http://127.0.0.1:5000".into(),
            token_expiration: 3600,
            password_hash_rounds: 12,
            lockout_failure_attempts: None,
            lockout_duration: 1800,
            unique_last_password_count: 0,
            minimum_password_age: 0,
            watch_interval: Duration::from_secs(1),
            policy: None,
        }
    }
}

/// The identity service.
pub struct Identity {
    pub pool: Pool,
    pub cfg: Config,
    pub keys: Keys,
    pub policy: api::Enforcer,
    snapshot: RwLock<Arc<Snapshot>>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Recent validations by token. An entry is trusted only while the
    /// snapshot revision and the key set it was computed under are current,
    /// so any identity write or key reload invalidates it.
    validated: RwLock<std::collections::HashMap<String, Arc<CachedValidation>>>,
}

struct CachedValidation {
    revision: i64,
    key_generation: u64,
    payload: Payload,
    ctx: Arc<AuthContext>,
}

/// Cached validations kept at most; the cache is emptied when full (a simple
/// bound: tokens are re-validated, never wrongly accepted).
const VALIDATION_CACHE_MAX: usize = 65_536;

/// A validated token: its payload and the context it gives.
pub struct Validated {
    pub payload: Payload,
    pub ctx: Arc<AuthContext>,
    pub snapshot: Arc<Snapshot>,
}

impl Identity {
    /// Builds the service over an open database and key repository.
    pub async fn new(pool: Pool, mut cfg: Config, keys: Keys) -> Result<Arc<Identity>, Error> {
        let snap = Snapshot::load(&pool)
            .await
            .map_err(|e| Error::internal(&e))?;
        let policy = cfg.policy.take().unwrap_or_else(crate::policy::enforcer);
        Ok(Arc::new(Identity {
            pool,
            cfg,
            keys,
            policy,
            snapshot: RwLock::new(Arc::new(snap)),
            refresh_lock: tokio::sync::Mutex::new(()),
            validated: RwLock::new(Default::default()),
        }))
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads the snapshot after a write. Called by every write before it
    /// answers, so the write is visible to validation at once.
    pub async fn refresh(&self) -> Result<(), Error> {
        let _guard = self.refresh_lock.lock().await;
        let snap = Snapshot::load(&self.pool)
            .await
            .map_err(|e| Error::internal(&e))?;
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
        Ok(())
    }

    /// Runs forever: reloads the snapshot when another controller sharing the
    /// database changed identity data, and prunes revocation events older
    /// than any token can live.
    pub async fn watch(self: Arc<Self>) {
        let mut ticks: u64 = 0;
        loop {
            tokio::time::sleep(self.cfg.watch_interval).await;
            ticks += 1;
            match db::revision(&self.pool).await {
                Ok(rev) if rev != self.snapshot().revision => {
                    if let Err(e) = self.refresh().await {
                        tracing::warn!(error = %e, "identity snapshot reload failed");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "identity revision check failed"),
            }
            if ticks.is_multiple_of(600) {
                let horizon = store::now_micros() - (self.cfg.token_expiration + 3600) * 1_000_000;
                match db::revocation::prune(&self.pool, horizon).await {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "old revocation events removed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "revocation pruning failed"),
                }
            }
        }
    }

    /// Begins a write transaction. Its first statement bumps the revision,
    /// so it holds SQLite's write lock from the start (waiting up to the
    /// busy timeout for it) instead of upgrading a read lock later, which
    /// fails at once with SQLITE_BUSY when another writer got there first.
    pub async fn begin(&self) -> Result<store::Tx<'static>, Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        db::bump(&mut tx).await.map_err(db_err)?;
        Ok(tx)
    }

    /// Commits a write transaction and reloads the snapshot.
    pub async fn commit(&self, tx: store::Tx<'static>) -> Result<(), Error> {
        tx.commit().await.map_err(|e| Error::internal(&e))?;
        self.refresh().await
    }

    /// Validates a token: signature, expiry, revocation, and that its user,
    /// scope and application credential are still usable. Roles are computed
    /// now, not taken from the token.
    pub fn validate_token(&self, token: &str) -> Option<Validated> {
        let snap = self.snapshot();
        let keygen = self.keys.generation();
        let now = store::now_micros();
        if let Some(c) = self
            .validated
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            if c.revision == snap.revision
                && c.key_generation == keygen
                && c.payload.expires_at > now
            {
                return Some(Validated {
                    payload: c.payload.clone(),
                    ctx: c.ctx.clone(),
                    snapshot: snap,
                });
            }
        }
        let payload = self.keys.open_token(token)?;
        if payload.expires_at <= now {
            return None;
        }
        if snap.is_revoked(&payload) {
            return None;
        }
        let ctx = Arc::new(self.context_for(&snap, &payload)?);
        let mut cache = self.validated.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= VALIDATION_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            token.to_string(),
            Arc::new(CachedValidation {
                revision: snap.revision,
                key_generation: keygen,
                payload: payload.clone(),
                ctx: ctx.clone(),
            }),
        );
        Some(Validated {
            payload,
            ctx,
            snapshot: snap,
        })
    }

    /// Builds the request context a payload gives, or `None` if the token no
    /// longer grants anything (user disabled, project gone, no roles left).
    pub fn context_for(&self, snap: &Snapshot, p: &Payload) -> Option<AuthContext> {
        if !snap.user_usable(&p.user_id) {
            return None;
        }
        let user = snap.users.get(&p.user_id)?;
        let scope = match &p.scope {
            ScopeId::Unscoped => Scope::Unscoped,
            ScopeId::System => Scope::System,
            ScopeId::Domain(d) => {
                let dom = snap.domains.get(d)?;
                if !dom.enabled {
                    return None;
                }
                Scope::Domain {
                    id: d.clone(),
                    name: dom.name.clone(),
                }
            }
            ScopeId::Project(pid) => {
                if !snap.project_usable(pid) {
                    return None;
                }
                let proj = snap.projects.get(pid)?;
                Scope::Project {
                    id: pid.clone(),
                    name: proj.name.clone(),
                    domain_id: proj.domain_id.clone(),
                    domain_name: snap.domain_name(&proj.domain_id),
                }
            }
        };
        let mut role_ids = snap.effective_roles(&p.user_id, &p.scope);
        let mut app_cred = None;
        if let Some(ac_id) = &p.app_cred_id {
            let ac = snap.app_creds.get(ac_id)?;
            if ac.user_id != p.user_id {
                return None;
            }
            if ac.expires_at.is_some_and(|e| e <= store::now_micros()) {
                return None;
            }
            // The credential's roles, still held by the user now, and what
            // they imply.
            let allowed = snap.expand_implied(ac.role_ids.iter().cloned().collect());
            role_ids.retain(|r| allowed.contains(r));
            app_cred = Some((ac_id.clone(), ac.name.clone(), ac.unrestricted));
        }
        if !matches!(p.scope, ScopeId::Unscoped) && role_ids.is_empty() {
            return None;
        }
        let roles = role_ids
            .iter()
            .map(|id| RoleRef {
                id: id.clone(),
                name: snap.roles[id].name.clone(),
            })
            .collect();
        Some(AuthContext {
            user_id: p.user_id.clone(),
            user_name: user.name.clone(),
            user_domain_id: user.domain_id.clone(),
            user_domain_name: snap.domain_name(&user.domain_id),
            scope,
            roles,
            methods: method_names(p.methods),
            audit_ids: p.audit_ids(),
            issued_at: p.issued_at,
            expires_at: p.expires_at,
            application_credential: app_cred,
        })
    }

    /// The URL of an identity API path, for `links`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/identity/v3{}",
            self.cfg.public_url.trim_end_matches('/'),
            path
        )
    }

    /// Records a revocation event in the caller's transaction.
    pub async fn revoke(
        &self,
        tx: &mut store::Tx<'_>,
        ev: db::revocation::Event,
    ) -> Result<(), Error> {
        let now = store::now_micros();
        let ev = db::revocation::Event {
            id: store::new_hex_id(),
            issued_before: now,
            revoked_at: now,
            ..ev
        };
        db::revocation::insert(tx, &ev).await.map_err(db_err)
    }
}

impl api::Authenticator for Identity {
    fn validate<'a>(
        &'a self,
        token: &'a str,
    ) -> api::context::BoxFuture<'a, Result<Arc<AuthContext>, Error>> {
        Box::pin(async move {
            self.validate_token(token)
                .map(|v| v.ctx)
                .ok_or_else(Error::unauthorized)
        })
    }
}

/// Maps a store error to an API error: conflicts are 409 with a message
/// naming what collided, a missing reference 400... anything else is ours.
pub fn db_err(e: db::Error) -> Error {
    match e {
        db::Error::Conflict(what) => Error::conflict(format!(
            "Conflict occurred attempting to store {}. Duplicate entry.",
            conflict_subject(&what)
        )),
        db::Error::ForeignKey => {
            Error::bad_request("A referenced resource does not exist or is still in use.")
        }
        db::Error::NotFound => Error::not_found("Could not find the resource."),
        other => Error::internal(&other),
    }
}

fn conflict_subject(cols: &str) -> &'static str {
    let table = cols.split('.').next().unwrap_or("");
    match table {
        "project" => "project",
        "domain" => "domain",
        "identity_user" => "user",
        "identity_group" => "group",
        "role" => "role",
        "region" => "region",
        "service" => "service",
        "endpoint" => "endpoint",
        "application_credential" => "application_credential",
        _ => "resource",
    }
}
