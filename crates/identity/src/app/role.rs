//! Roles and implied roles: Keystone's rules on role options (`immutable`)
//! and on which roles may imply which. Policy is checked inside the
//! transaction that writes, on the rows it loaded.

use serde_json::{Map, Value};

use api::{AuthContext, Error, Target};

use super::{db_err, Identity};
use crate::store as db;
use crate::store::assignment::Role;

/// The only option a role has upstream.
pub const IMMUTABLE: &str = "immutable";

fn role_not_found(rid: &str) -> Error {
    Error::not_found(format!("Could not find role: {rid}."))
}

/// Validates a role body's `options`: only `immutable`, a boolean or null
/// (null removes it). Keystone's schema closes the object.
pub fn check_options(opts: &Map<String, Value>) -> Result<(), Error> {
    for (k, v) in opts {
        if k != IMMUTABLE {
            return Err(Error::bad_request(format!(
                "Invalid input for field 'role.options': additional properties are not allowed ('{k}' was unexpected)."
            )));
        }
        if !(v.is_boolean() || v.is_null()) {
            return Err(Error::bad_request(format!(
                "Invalid input for field 'role.options.{IMMUTABLE}': {v} is not a boolean."
            )));
        }
    }
    Ok(())
}

fn is_immutable(r: &Role) -> bool {
    serde_json::from_str::<Map<String, Value>>(&r.options)
        .ok()
        .and_then(|o| o.get(IMMUTABLE).and_then(Value::as_bool))
        .unwrap_or(false)
}

/// A validated `PATCH /v3/roles/{id}` body.
#[derive(Default)]
pub struct RoleUpdate {
    /// Must be the role's own domain (a domain cannot change).
    pub domain_id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Checked by [`check_options`].
    pub options: Option<Map<String, Value>>,
    pub extra: Map<String, Value>,
    /// How many attributes the body set: an immutable role accepts only a
    /// body that makes it mutable and nothing else.
    pub attributes: usize,
}

impl Identity {
    /// `POST /v3/roles`: a domain-specific role's domain must exist.
    pub async fn role_create(&self, ctx: &AuthContext, r: Role) -> Result<Role, Error> {
        let mut tx = self.begin().await?;
        self.policy
            .enforce("identity:create_role", ctx, &Target::new())?;
        if !r.domain_id.is_empty()
            && db::resource::domain_get(&mut *tx, &r.domain_id)
                .await
                .map_err(db_err)?
                .is_none()
        {
            return Err(Error::not_found(format!(
                "Could not find domain: {}.",
                r.domain_id
            )));
        }
        db::assignment::role_insert(&mut tx, &r)
            .await
            .map_err(db_err)?;
        self.commit(tx).await?;
        Ok(r)
    }

    /// `PATCH /v3/roles/{id}`.
    pub async fn role_update(
        &self,
        ctx: &AuthContext,
        rid: &str,
        req: RoleUpdate,
    ) -> Result<Role, Error> {
        let mut tx = self.begin().await?;
        self.policy
            .enforce("identity:update_role", ctx, &Target::new())?;
        let mut r = db::assignment::role_get(&mut *tx, rid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| role_not_found(rid))?;
        if is_immutable(&r) {
            let unlocks = req.attributes == 1
                && req
                    .options
                    .as_ref()
                    .and_then(|o| o.get(IMMUTABLE))
                    .is_some_and(|v| v.is_null() || *v == Value::Bool(false));
            if !unlocks {
                return Err(Error::forbidden(format!(
                    "Unable to update immutable role resource: `{rid}. Set resource option \"immutable\" to false first."
                )));
            }
        }
        if req.domain_id.as_ref().is_some_and(|d| *d != r.domain_id) {
            return Err(Error::bad_request("Update of 'domain_id' is not allowed."));
        }
        if let Some(n) = req.name {
            r.name = n;
        }
        if let Some(x) = req.description {
            r.description = x;
        }
        if let Some(given) = req.options {
            let mut opts: Map<String, Value> = serde_json::from_str(&r.options).unwrap_or_default();
            for (k, v) in given {
                if v.is_null() {
                    opts.remove(&k);
                } else {
                    opts.insert(k, v);
                }
            }
            r.options = Value::Object(opts).to_string();
        }
        let mut extra: Map<String, Value> = serde_json::from_str(&r.extra).unwrap_or_default();
        extra.extend(req.extra);
        r.extra = Value::Object(extra).to_string();
        db::assignment::role_update(&mut tx, &r)
            .await
            .map_err(db_err)?;
        self.commit(tx).await?;
        Ok(r)
    }

    /// `DELETE /v3/roles/{id}`: everyone who held the role loses it; tokens
    /// are recomputed at validation, and those left with no role stop
    /// working. An immutable role cannot be deleted.
    pub async fn role_delete(&self, ctx: &AuthContext, rid: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        self.policy
            .enforce("identity:delete_role", ctx, &Target::new())?;
        let r = db::assignment::role_get(&mut *tx, rid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| role_not_found(rid))?;
        if is_immutable(&r) {
            return Err(Error::forbidden(format!(
                "Unable to delete immutable role resource: `{rid}. Set resource option \"immutable\" to false first."
            )));
        }
        db::assignment::role_delete(&mut tx, rid)
            .await
            .map_err(db_err)?;
        self.commit(tx).await
    }

    /// `PUT /v3/roles/{prior}/implies/{implied}`. A global role may not imply
    /// a domain-specific one (Keystone's `InvalidImpliedRole`, a 403), a role
    /// may not imply itself, and no cycle may form.
    pub async fn implied_role_create(
        &self,
        ctx: &AuthContext,
        prior: &str,
        implied: &str,
    ) -> Result<(Role, Role), Error> {
        let mut tx = self.begin().await?;
        self.policy
            .enforce("identity:create_implied_role", ctx, &Target::new())?;
        let p = db::assignment::role_get(&mut *tx, prior)
            .await
            .map_err(db_err)?
            .ok_or_else(|| role_not_found(prior))?;
        let i = db::assignment::role_get(&mut *tx, implied)
            .await
            .map_err(db_err)?
            .ok_or_else(|| role_not_found(implied))?;
        if p.domain_id.is_empty() && !i.domain_id.is_empty() {
            return Err(Error::forbidden(format!(
                "{implied} cannot be an implied roles."
            )));
        }
        if prior == implied {
            return Err(Error::bad_request("A role cannot imply itself."));
        }
        // No cycle: the implied role must not (transitively) imply the prior.
        let mut edges: std::collections::HashMap<String, Vec<String>> = Default::default();
        for (a, b) in db::assignment::implied_all(&mut *tx)
            .await
            .map_err(db_err)?
        {
            edges.entry(a).or_default().push(b);
        }
        let mut stack = vec![implied.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(r) = stack.pop() {
            if r == prior {
                return Err(Error::bad_request(
                    "This implication would create a cycle of implied roles.",
                ));
            }
            if seen.insert(r.clone()) {
                stack.extend(edges.get(&r).into_iter().flatten().cloned());
            }
        }
        db::assignment::implied_add(&mut tx, prior, implied)
            .await
            .map_err(db_err)?;
        self.commit(tx).await?;
        Ok((p, i))
    }
}
