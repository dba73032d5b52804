//! Users: updates and password changes, with Keystone's
//! `[security_compliance]` password rules (history, minimum age, locked
//! passwords). Policy is checked on the user row loaded inside the
//! transaction that writes it.

use serde_json::{json, Map, Value};

use api::{AuthContext, Error, Target};

use super::{db_err, Identity};
use crate::password;
use crate::store as db;
use crate::store::user::User;

/// The policy target of a user.
pub fn user_target(u: &User) -> Target {
    Target::new()
        .with("target.user.id", &u.id)
        .with("target.user.domain_id", &u.domain_id)
        .with("target.domain_id", &u.domain_id)
}

fn user_not_found(uid: &str) -> Error {
    Error::not_found(format!("Could not find user: {uid}."))
}

/// A validated `POST /v3/users` body.
pub struct UserCreate {
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    pub password: Option<String>,
    /// Stored form (JSON object text).
    pub options: String,
    /// Stored form (JSON object text).
    pub extra: String,
}

/// A validated `PATCH /v3/users/{id}` body.
#[derive(Default)]
pub struct UserUpdate {
    pub name: Option<String>,
    /// Must be the user's own domain (a domain cannot change).
    pub domain_id: Option<String>,
    pub enabled: Option<bool>,
    /// `Some(None)` clears it.
    pub default_project_id: Option<Option<String>>,
    pub password: Option<String>,
    /// Known option names only; a `null` value removes the option.
    pub options: Option<Map<String, Value>>,
    /// Unknown attributes, kept as Keystone keeps them.
    pub extra: Map<String, Value>,
}

/// Merges options given in a request over the stored ones.
pub fn merge_options(stored: &str, given: Option<Map<String, Value>>) -> String {
    let mut opts: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
    for (k, v) in given.unwrap_or_default() {
        if v.is_null() {
            opts.remove(&k);
        } else {
            opts.insert(k, v);
        }
    }
    Value::Object(opts).to_string()
}

fn merge_extra(stored: &str, given: Map<String, Value>) -> String {
    let mut extra: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
    extra.extend(given);
    Value::Object(extra).to_string()
}

impl Identity {
    async fn hash_password(&self, pw: String) -> Result<String, Error> {
        password::hash(pw, self.cfg.password_hash_rounds)
            .await
            .map_err(|e| Error::internal(&e))
    }

    /// Sets a new password hash on a user about to be written, keeping the
    /// replaced hash in the password history (as many as
    /// `unique_last_password_count` needs).
    pub(crate) async fn replace_password(
        &self,
        tx: &mut store::Tx<'_>,
        u: &mut User,
        new_hash: String,
        self_service: bool,
    ) -> Result<(), Error> {
        let now = store::now_micros();
        if let Some(old) = u.password_hash.take() {
            let keep = self.cfg.unique_last_password_count.saturating_sub(1);
            db::user::password_history_push(
                tx,
                &u.id,
                &old,
                u.password_created_at.unwrap_or(now),
                keep,
            )
            .await
            .map_err(db_err)?;
        }
        u.password_hash = Some(new_hash);
        u.password_created_at = Some(now);
        u.password_self_service = self_service;
        u.failed_auth_count = 0;
        u.failed_auth_at = None;
        Ok(())
    }

    /// `POST /v3/users`: the domain and the default project must exist.
    pub async fn user_create(&self, ctx: &AuthContext, req: UserCreate) -> Result<User, Error> {
        // The target is the request's: checked before any bcrypt is spent.
        self.policy.enforce(
            "identity:create_user",
            ctx,
            &Target::new().with("target.user.domain_id", &req.domain_id),
        )?;
        let hash = match req.password {
            Some(pw) => Some(self.hash_password(pw).await?),
            None => None,
        };
        let mut tx = self.begin().await?;
        if db::resource::domain_get(&mut *tx, &req.domain_id)
            .await
            .map_err(db_err)?
            .is_none()
        {
            return Err(Error::not_found(format!(
                "Could not find domain: {}.",
                req.domain_id
            )));
        }
        if let Some(p) = &req.default_project_id {
            if db::resource::project_get(&mut *tx, p)
                .await
                .map_err(db_err)?
                .is_none()
            {
                return Err(Error::not_found(format!("Could not find project: {p}.")));
            }
        }
        let u = User {
            id: store::new_hex_id(),
            name: req.name,
            domain_id: req.domain_id,
            enabled: req.enabled,
            default_project_id: req.default_project_id,
            password_created_at: hash.as_ref().map(|_| store::now_micros()),
            password_hash: hash,
            failed_auth_count: 0,
            failed_auth_at: None,
            extra: req.extra,
            options: req.options,
            password_self_service: false,
        };
        db::user::user_insert(&mut tx, &u).await.map_err(db_err)?;
        self.commit(tx).await?;
        Ok(u)
    }

    /// `PATCH /v3/users/{id}`. An administrator's password reset is not
    /// held to the password history or minimum age (as in Keystone).
    pub async fn user_update(
        &self,
        ctx: &AuthContext,
        uid: &str,
        req: UserUpdate,
    ) -> Result<User, Error> {
        // A cheap check first, so that a caller without the right costs no
        // bcrypt; the check that counts is the one inside the transaction.
        let seen = db::user::user_get(&self.pool, uid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| user_not_found(uid))?;
        self.policy
            .enforce("identity:update_user", ctx, &user_target(&seen))?;
        // Hashing takes a quarter of a second: never while holding the
        // database's write lock.
        let new_hash = match req.password {
            Some(pw) => Some(self.hash_password(pw).await?),
            None => None,
        };
        let mut tx = self.begin().await?;
        let mut u = db::user::user_get(&mut *tx, uid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| user_not_found(uid))?;
        self.policy
            .enforce("identity:update_user", ctx, &user_target(&u))?;
        if req.domain_id.as_ref().is_some_and(|d| *d != u.domain_id) {
            return Err(Error::bad_request("Update of 'domain_id' is not allowed."));
        }
        if let Some(n) = req.name {
            u.name = n;
        }
        let was_enabled = u.enabled;
        if let Some(e) = req.enabled {
            u.enabled = e;
        }
        if let Some(p) = req.default_project_id {
            u.default_project_id = p;
        }
        u.options = merge_options(&u.options, req.options);
        u.extra = merge_extra(&u.extra, req.extra);
        let changed_password = new_hash.is_some();
        if let Some(h) = new_hash {
            self.replace_password(&mut tx, &mut u, h, false).await?;
        }
        db::user::user_update(&mut tx, &u).await.map_err(db_err)?;
        if (was_enabled && !u.enabled) || changed_password {
            self.revoke(
                &mut tx,
                db::revocation::Event {
                    user_id: Some(uid.to_string()),
                    ..Default::default()
                },
            )
            .await?;
        }
        self.commit(tx).await?;
        Ok(u)
    }

    /// `POST /v3/users/{id}/password`: the user proves the original password
    /// exactly as a login does (same lockout, same 401), then Keystone's
    /// self-service rules apply: a locked password cannot be changed, a
    /// self-service password must reach `minimum_password_age`, and the new
    /// password may not be any of the last `unique_last_password_count`.
    pub async fn change_password(
        &self,
        uid: &str,
        original: String,
        new: String,
    ) -> Result<(), Error> {
        let auth = super::auth::AuthRequest {
            auth: super::auth::AuthBody {
                identity: serde_json::from_value(json!({
                    "methods": ["password"],
                    "password": {"user": {"id": uid, "password": original}}
                }))
                .map_err(|e| Error::internal(&e))?,
                scope: Some(json!("unscoped")),
            },
        };
        self.authenticate(auth).await?;
        let u = db::user::user_get(&self.pool, uid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| user_not_found(uid))?;
        let options: Map<String, Value> = serde_json::from_str(&u.options).unwrap_or_default();
        if options.get("lock_password") == Some(&Value::Bool(true)) {
            return Err(Error::bad_request(
                "You cannot change your password at this time due to password policy disallowing password changes. Please contact your administrator to reset your password.",
            ));
        }
        let min_age_days = i64::from(self.cfg.minimum_password_age);
        if min_age_days > 0 && u.password_self_service {
            const DAY: i64 = 86_400 * 1_000_000;
            let allowed_at = u.password_created_at.unwrap_or(0) + min_age_days * DAY;
            let now = store::now_micros();
            if now < allowed_at {
                let days_left = (allowed_at - now) / DAY;
                return Err(Error::bad_request(format!(
                    "You cannot change your password at this time due to the minimum password age. Once you change your password, it must be used for {min_age_days} day(s) before it can be changed. Please try again in {days_left} day(s) or contact your administrator to reset your password."
                )));
            }
        }
        let unique = self.cfg.unique_last_password_count;
        if unique > 0 {
            let mut recent: Vec<String> = u.password_hash.iter().cloned().collect();
            recent.extend(
                db::user::password_history(&self.pool, uid, unique - 1)
                    .await
                    .map_err(db_err)?,
            );
            for h in recent.into_iter().take(unique as usize) {
                if password::verify(new.clone(), Some(h), self.cfg.password_hash_rounds).await {
                    return Err(Error::bad_request(format!(
                        "The new password cannot be identical to a previous password. The total number which includes the new password must be unique is {unique}."
                    )));
                }
            }
        }
        let new_hash = self.hash_password(new).await?;
        let mut tx = self.begin().await?;
        let mut current = db::user::user_get(&mut *tx, uid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| user_not_found(uid))?;
        if current.password_hash != u.password_hash {
            // Changed by someone else while the rules above were checked
            // against the old one: the caller proved a password that is no
            // longer the user's.
            return Err(Error::conflict(
                "The password was changed by another request meanwhile; try again.",
            ));
        }
        self.replace_password(&mut tx, &mut current, new_hash, true)
            .await?;
        db::user::user_update(&mut tx, &current)
            .await
            .map_err(db_err)?;
        self.revoke(
            &mut tx,
            db::revocation::Event {
                user_id: Some(uid.to_string()),
                ..Default::default()
            },
        )
        .await?;
        self.commit(tx).await
    }
}
