//! Application credentials (`/v3/users/{id}/application_credentials`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};

use api::{Ctx, Error, Json, Target};

use super::{collection, entity, no_content, qget, Body, Q, S};
use crate::app::{db_err, Identity};
use crate::password::{self, MAX_PASSWORD_BYTES};
use crate::store as db;
use crate::token::ScopeId;

fn owner(uid: &str) -> Target {
    Target::new().with("target.user.id", uid)
}

/// Keystone renders a credential's expiry as its stored naive UTC time
/// (`2026-12-21T19:36:18.000000`, no zone), unlike token timestamps.
fn expires_at_json(micros: i64) -> String {
    let t = api::time_fmt::keystone(micros);
    t.strip_suffix('Z').unwrap_or(&t).to_string()
}

async fn to_json(id: &Identity, a: &db::appcred::AppCred) -> Result<Value, Error> {
    let snap = id.snapshot();
    let roles: Vec<Value> = db::appcred::roles(&id.pool, &a.id)
        .await
        .map_err(db_err)?
        .iter()
        .filter_map(|r| {
            snap.roles
                .get(r)
                .map(|info| json!({"id": r, "name": info.name, "domain_id": info.domain_id}))
        })
        .collect();
    Ok(json!({
        "id": a.id, "name": a.name, "description": a.description,
        "expires_at": a.expires_at.map(expires_at_json),
        "project_id": a.project_id, "roles": roles, "unrestricted": a.unrestricted,
        "access_rules": [], "user_id": a.user_id,
        "links": {"self": id.url(&format!("/users/{}/application_credentials/{}", a.user_id, a.id))},
    }))
}

/// A restricted application credential's token may not manage credentials
/// (Keystone's rule: it could otherwise mint itself an unrestricted one).
fn forbid_restricted(ctx: &Ctx) -> Result<(), Error> {
    if let Some((_, _, false)) = &ctx.application_credential {
        return Err(Error::forbidden(
            "Using a restricted application credential to manage application credentials is not allowed.",
        ));
    }
    Ok(())
}

pub async fn list(
    State(id): S,
    ctx: Ctx,
    Path(uid): Path<String>,
    q: Q,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:list_application_credentials", &ctx, &owner(&uid))?;
    super::user::load_user(&id, &uid).await?;
    let mut items = Vec::new();
    for a in db::appcred::list(&id.pool, &uid).await.map_err(db_err)? {
        if qget(&q, "name").is_none_or(|n| n == a.name) {
            items.push(to_json(&id, &a).await?);
        }
    }
    Ok(collection(
        &id,
        "application_credentials",
        &format!("/users/{uid}/application_credentials"),
        items,
    ))
}

pub async fn get(
    State(id): S,
    ctx: Ctx,
    Path((uid, acid)): Path<(String, String)>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:get_application_credential", &ctx, &owner(&uid))?;
    let a = db::appcred::get(&id.pool, &acid)
        .await
        .map_err(db_err)?
        .filter(|a| a.user_id == uid)
        .ok_or_else(|| {
            Error::not_found(format!("Could not find application credential: {acid}."))
        })?;
    Ok(entity(
        StatusCode::OK,
        "application_credential",
        to_json(&id, &a).await?,
    ))
}

pub async fn create(
    State(id): S,
    ctx: Ctx,
    Path(uid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:create_application_credential", &ctx, &owner(&uid))?;
    forbid_restricted(&ctx)?;
    let project_id = ctx
        .project_id()
        .ok_or_else(|| {
            Error::bad_request("An application credential is created from a project-scoped token.")
        })?
        .to_string();
    let mut b = Body::new(v, "application_credential")?;
    b.forbid(&["id"])?;
    let name = b.required_name("name", 255)?;
    let description = b.str("description", 65535)?.unwrap_or_default();
    let secret = b.str("secret", MAX_PASSWORD_BYTES)?;
    let expires_at = match b.str("expires_at", 64)? {
        None => None,
        Some(s) => Some(api::time_fmt::parse(&s).ok_or_else(|| {
            Error::bad_request(format!("Invalid input for field 'application_credential.expires_at': {s:?} is not a timestamp."))
        })?),
    };
    if expires_at.is_some_and(|e| e <= store::now_micros()) {
        return Err(Error::bad_request(
            "Invalid input for field 'application_credential.expires_at': it is in the past.",
        ));
    }
    let unrestricted = b.bool("unrestricted")?.unwrap_or(false);
    let roles_in = b.take("roles");
    if let Some(rules) = b.take("access_rules") {
        if rules.as_array().is_some_and(|a| !a.is_empty()) {
            return Err(Error::bad_request("Access rules are not supported."));
        }
    }
    // The roles: a subset of the caller's roles on the project (by id or
    // name), or all of them.
    let snap = id.snapshot();
    let have: Vec<String> = snap.effective_roles(&uid, &ScopeId::Project(project_id.clone()));
    let role_ids: Vec<String> = match roles_in {
        // No roles, or an empty list (the CLI sends `[]`), means all the
        // roles of the token creating it, as in Keystone.
        None | Some(Value::Null) => ctx.roles.iter().map(|r| r.id.clone()).collect(),
        Some(Value::Array(items)) if items.is_empty() => {
            ctx.roles.iter().map(|r| r.id.clone()).collect()
        }
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                let rid = match (item.get("id").and_then(Value::as_str), item.get("name").and_then(Value::as_str)) {
                    (Some(i), _) => i.to_string(),
                    (None, Some(n)) => snap
                        .roles
                        .iter()
                        .find(|(_, r)| r.name == n && r.domain_id.is_none())
                        .map(|(k, _)| k.clone())
                        .ok_or_else(|| Error::not_found(format!("Could not find role: {n}.")))?,
                    _ => return Err(Error::bad_request("Invalid input for field 'application_credential.roles': each role needs an id or a name.")),
                };
                if !have.contains(&rid) {
                    return Err(Error::forbidden(format!(
                        "The user does not have the role {rid} on the project."
                    )));
                }
                if !out.contains(&rid) {
                    out.push(rid);
                }
            }
            out
        }
        Some(_) => {
            return Err(Error::bad_request(
                "Invalid input for field 'application_credential.roles': expected an array.",
            ))
        }
    };
    if role_ids.is_empty() {
        return Err(Error::bad_request(
            "An application credential needs at least one role.",
        ));
    }
    let extra = b.extra();
    let _ = extra;
    let secret = secret.unwrap_or_else(|| {
        let raw: [u8; 32] = rand::random();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    });
    let hash = password::hash(secret.clone(), id.cfg.password_hash_rounds)
        .await
        .map_err(|e| Error::internal(&e))?;
    let a = db::appcred::AppCred {
        id: store::new_hex_id(),
        name,
        user_id: uid.clone(),
        project_id,
        secret_hash: hash,
        description,
        expires_at,
        unrestricted,
    };
    let mut tx = id.begin().await?;
    db::appcred::insert(&mut tx, &a, &role_ids)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    let mut v = to_json(&id, &a).await?;
    v["secret"] = json!(secret);
    Ok(entity(StatusCode::CREATED, "application_credential", v))
}

pub async fn delete(
    State(id): S,
    ctx: Ctx,
    Path((uid, acid)): Path<(String, String)>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:delete_application_credential", &ctx, &owner(&uid))?;
    forbid_restricted(&ctx)?;
    let a = db::appcred::get(&id.pool, &acid)
        .await
        .map_err(db_err)?
        .filter(|a| a.user_id == uid)
        .ok_or_else(|| {
            Error::not_found(format!("Could not find application credential: {acid}."))
        })?;
    let mut tx = id.begin().await?;
    db::appcred::delete(&mut tx, &a.id).await.map_err(db_err)?;
    id.revoke(
        &mut tx,
        db::revocation::Event {
            application_credential_id: Some(a.id.clone()),
            ..Default::default()
        },
    )
    .await?;
    id.commit(tx).await?;
    Ok(no_content())
}
