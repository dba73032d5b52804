//! Users, passwords, groups and membership.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{Ctx, Error, Json, MaybeCtx, Target};

use super::{collection, entity, merge_extra, no_content, qbool, qget, Body, Q, S};
use crate::app::user::{merge_options, user_target, UserCreate, UserUpdate};
use crate::app::{db_err, Identity};
use crate::password::MAX_PASSWORD_BYTES;
use crate::store::{self as db, Filter};

pub fn user_json(id: &Identity, u: &db::user::User) -> Value {
    let mut v = json!({
        "id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
        "password_expires_at": Value::Null,
        "options": serde_json::from_str::<Value>(&u.options).unwrap_or_else(|_| json!({})),
        "links": {"self": id.url(&format!("/users/{}", u.id))},
    });
    if let Some(p) = &u.default_project_id {
        v["default_project_id"] = json!(p);
    }
    merge_extra(&mut v, &u.extra);
    v
}

pub fn group_json(id: &Identity, g: &db::user::Group) -> Value {
    let mut v = json!({
        "id": g.id, "name": g.name, "domain_id": g.domain_id, "description": g.description,
        "links": {"self": id.url(&format!("/groups/{}", g.id))},
    });
    merge_extra(&mut v, &g.extra);
    v
}

pub async fn load_user(id: &Identity, uid: &str) -> Result<db::user::User, Error> {
    db::user::user_get(&id.pool, uid)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("Could not find user: {uid}.")))
}

pub async fn load_group(id: &Identity, gid: &str) -> Result<db::user::Group, Error> {
    db::user::group_get(&id.pool, gid)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("Could not find group: {gid}.")))
}

fn group_target(g: &db::user::Group) -> Target {
    Target::new()
        .with("target.group.id", &g.id)
        .with("target.domain_id", &g.domain_id)
}

fn default_domain(ctx: &Ctx) -> String {
    match &ctx.scope {
        api::Scope::Project { domain_id, .. } => domain_id.clone(),
        api::Scope::Domain { id, .. } => id.clone(),
        _ => "default".into(),
    }
}

/// Validates a new password's size before anything is hashed.
fn check_password(pw: &str, field: &str) -> Result<(), Error> {
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(Error::bad_request(format!(
            "Invalid input for field '{field}': longer than {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    if pw.is_empty() {
        return Err(Error::bad_request(format!(
            "Invalid input for field '{field}': must not be empty."
        )));
    }
    Ok(())
}

/// The `options` of a user body: only Keystone's option names.
fn parse_options(b: &mut Body) -> Result<Option<serde_json::Map<String, Value>>, Error> {
    const KNOWN: &[&str] = &[
        "ignore_change_password_upon_first_use",
        "ignore_password_expiry",
        "ignore_lockout_failure_attempts",
        "lock_password",
        "ignore_user_inactivity",
        "multi_factor_auth_rules",
        "multi_factor_auth_enabled",
    ];
    let opts = b.object("options")?;
    if let Some(k) = opts
        .iter()
        .flat_map(|o| o.keys())
        .find(|k| !KNOWN.contains(&k.as_str()))
    {
        return Err(Error::bad_request(format!(
            "Invalid input for field 'user.options': additional properties are not allowed ('{k}' was unexpected)."
        )));
    }
    Ok(opts)
}

pub async fn user_list(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let domain = qget(&q, "domain_id").map(str::to_string);
    id.policy.enforce(
        "identity:list_users",
        &ctx,
        &Target::new().with_opt("target.domain_id", domain.clone()),
    )?;
    let mut f = Vec::new();
    if let Some(n) = qget(&q, "name") {
        f.push(Filter::Text("name", n.into()));
    }
    if let Some(d) = domain {
        f.push(Filter::Text("domain_id", d));
    } else if !ctx.is_admin() && !ctx.is_system() {
        if let Some(d) = ctx.domain_id() {
            f.push(Filter::Text("domain_id", d.into()));
        }
    }
    if let Some(e) = qbool(&q, "enabled")? {
        f.push(Filter::Bool("enabled", e));
    }
    let items = db::user::user_list(&id.pool, &f)
        .await
        .map_err(db_err)?
        .iter()
        .map(|u| user_json(&id, u))
        .collect();
    Ok(collection(&id, "users", "/users", items))
}

pub async fn user_get(State(id): S, ctx: Ctx, Path(uid): Path<String>) -> Result<Response, Error> {
    let u = db::user::user_get(&id.pool, &uid).await.map_err(db_err)?;
    let t = match &u {
        Some(u) => user_target(u),
        None => Target::new().with("target.user.id", &uid),
    };
    id.policy.enforce("identity:get_user", &ctx, &t)?;
    let u = u.ok_or_else(|| Error::not_found(format!("Could not find user: {uid}.")))?;
    Ok(entity(StatusCode::OK, "user", user_json(&id, &u)))
}

pub async fn user_create(State(id): S, ctx: Ctx, Json(v): Json<Value>) -> Result<Response, Error> {
    let mut b = Body::new(v, "user")?;
    b.forbid(&["id"])?;
    let name = b.required_name("name", 255)?;
    let domain_id = b.id("domain_id")?.unwrap_or_else(|| default_domain(&ctx));
    let enabled = b.bool("enabled")?.unwrap_or(true);
    let default_project_id = b.id("default_project_id")?;
    let password = b.str("password", usize::MAX)?;
    if let Some(pw) = &password {
        check_password(pw, "user.password")?;
    }
    b.take("federated");
    let options = merge_options("{}", parse_options(&mut b)?);
    let req = UserCreate {
        name,
        domain_id,
        enabled,
        default_project_id,
        password,
        options,
        extra: Value::Object(b.extra()).to_string(),
    };
    let u = id.user_create(&ctx, req).await?;
    Ok(entity(StatusCode::CREATED, "user", user_json(&id, &u)))
}

pub async fn user_update(
    State(id): S,
    ctx: Ctx,
    Path(uid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "user")?;
    b.matching_id(&uid)?;
    let domain_id = b.id("domain_id")?;
    let name = b.name("name", 255)?;
    let enabled = b.bool("enabled")?;
    let default_project_id = if b.has("default_project_id") {
        Some(b.id("default_project_id")?)
    } else {
        None
    };
    let password = b.str("password", usize::MAX)?;
    if let Some(pw) = &password {
        check_password(pw, "user.password")?;
    }
    b.take("federated");
    let options = parse_options(&mut b)?;
    let req = UserUpdate {
        name,
        domain_id,
        enabled,
        default_project_id,
        password,
        options,
        extra: b.extra(),
    };
    let u = id.user_update(&ctx, &uid, req).await?;
    Ok(entity(StatusCode::OK, "user", user_json(&id, &u)))
}

pub async fn user_delete(
    State(id): S,
    ctx: Ctx,
    Path(uid): Path<String>,
) -> Result<Response, Error> {
    let u = load_user(&id, &uid).await?;
    id.policy
        .enforce("identity:delete_user", &ctx, &user_target(&u))?;
    let mut tx = id.begin().await?;
    db::user::user_delete(&mut tx, &uid).await.map_err(db_err)?;
    id.revoke(
        &mut tx,
        db::revocation::Event {
            user_id: Some(uid.clone()),
            ..Default::default()
        },
    )
    .await?;
    id.commit(tx).await?;
    Ok(no_content())
}

/// `POST /v3/users/{id}/password`: a user changes their own password by
/// proving the original one. Like Keystone this needs no token: the
/// original password is the credential, with the same lockout and the same
/// 401 as a login.
pub async fn change_password(
    State(id): S,
    _ctx: MaybeCtx,
    Path(uid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "user")?;
    let original = b.str("original_password", usize::MAX)?.ok_or_else(|| {
        Error::bad_request("Invalid input for field 'user.original_password': it is required.")
    })?;
    let new = b.str("password", usize::MAX)?.ok_or_else(|| {
        Error::bad_request("Invalid input for field 'user.password': it is required.")
    })?;
    b.deny_rest()?;
    check_password(&original, "user.original_password")?;
    check_password(&new, "user.password")?;
    id.change_password(&uid, original, new).await?;
    Ok(no_content())
}

pub async fn groups_for_user(
    State(id): S,
    ctx: Ctx,
    Path(uid): Path<String>,
) -> Result<Response, Error> {
    let u = load_user(&id, &uid).await?;
    id.policy
        .enforce("identity:list_groups_for_user", &ctx, &user_target(&u))?;
    let items = db::user::groups_of_user(&id.pool, &uid)
        .await
        .map_err(db_err)?
        .iter()
        .map(|g| group_json(&id, g))
        .collect();
    Ok(collection(
        &id,
        "groups",
        &format!("/users/{uid}/groups"),
        items,
    ))
}

pub async fn projects_for_user(
    State(id): S,
    ctx: Ctx,
    Path(uid): Path<String>,
) -> Result<Response, Error> {
    let u = load_user(&id, &uid).await?;
    id.policy
        .enforce("identity:list_user_projects", &ctx, &user_target(&u))?;
    let snap = id.snapshot();
    let mut items = Vec::new();
    for p in db::resource::project_list(&id.pool, &[])
        .await
        .map_err(db_err)?
    {
        if !snap
            .effective_roles(&uid, &crate::token::ScopeId::Project(p.id.clone()))
            .is_empty()
        {
            let tags = db::resource::tags(&id.pool, "project_tag", "project_id", &p.id)
                .await
                .map_err(db_err)?;
            items.push(super::resource::project_json(&id, &p, tags));
        }
    }
    Ok(collection(
        &id,
        "projects",
        &format!("/users/{uid}/projects"),
        items,
    ))
}

pub async fn group_list(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let domain = qget(&q, "domain_id").map(str::to_string);
    id.policy.enforce(
        "identity:list_groups",
        &ctx,
        &Target::new().with_opt("target.domain_id", domain.clone()),
    )?;
    let mut f = Vec::new();
    if let Some(n) = qget(&q, "name") {
        f.push(Filter::Text("name", n.into()));
    }
    if let Some(d) = domain {
        f.push(Filter::Text("domain_id", d));
    }
    let items = db::user::group_list(&id.pool, &f)
        .await
        .map_err(db_err)?
        .iter()
        .map(|g| group_json(&id, g))
        .collect();
    Ok(collection(&id, "groups", "/groups", items))
}

pub async fn group_get(State(id): S, ctx: Ctx, Path(gid): Path<String>) -> Result<Response, Error> {
    let g = load_group(&id, &gid).await?;
    id.policy
        .enforce("identity:get_group", &ctx, &group_target(&g))?;
    Ok(entity(StatusCode::OK, "group", group_json(&id, &g)))
}

pub async fn group_create(State(id): S, ctx: Ctx, Json(v): Json<Value>) -> Result<Response, Error> {
    let mut b = Body::new(v, "group")?;
    b.forbid(&["id"])?;
    let name = b.required_name("name", 64)?;
    let domain_id = b.id("domain_id")?.unwrap_or_else(|| default_domain(&ctx));
    id.policy.enforce(
        "identity:create_group",
        &ctx,
        &Target::new().with("target.group.domain_id", &domain_id),
    )?;
    let description = b.str("description", 65535)?.unwrap_or_default();
    let extra = Value::Object(b.extra()).to_string();
    if db::resource::domain_get(&id.pool, &domain_id)
        .await
        .map_err(db_err)?
        .is_none()
    {
        return Err(Error::not_found(format!(
            "Could not find domain: {domain_id}."
        )));
    }
    let g = db::user::Group {
        id: store::new_hex_id(),
        name,
        domain_id,
        description,
        extra,
    };
    let mut tx = id.begin().await?;
    db::user::group_insert(&mut tx, &g).await.map_err(db_err)?;
    id.commit(tx).await?;
    Ok(entity(StatusCode::CREATED, "group", group_json(&id, &g)))
}

pub async fn group_update(
    State(id): S,
    ctx: Ctx,
    Path(gid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    let mut g = load_group(&id, &gid).await?;
    id.policy
        .enforce("identity:update_group", &ctx, &group_target(&g))?;
    let mut b = Body::new(v, "group")?;
    b.matching_id(&gid)?;
    if let Some(d) = b.id("domain_id")? {
        if d != g.domain_id {
            return Err(Error::bad_request("Update of 'domain_id' is not allowed."));
        }
    }
    if let Some(n) = b.name("name", 64)? {
        g.name = n;
    }
    if let Some(x) = b.str("description", 65535)? {
        g.description = x;
    }
    g.extra = b.merge_extra(&g.extra);
    let mut tx = id.begin().await?;
    db::user::group_update(&mut tx, &g).await.map_err(db_err)?;
    id.commit(tx).await?;
    Ok(entity(StatusCode::OK, "group", group_json(&id, &g)))
}

pub async fn group_delete(
    State(id): S,
    ctx: Ctx,
    Path(gid): Path<String>,
) -> Result<Response, Error> {
    let g = load_group(&id, &gid).await?;
    id.policy
        .enforce("identity:delete_group", &ctx, &group_target(&g))?;
    let members = db::user::users_in_group(&id.pool, &gid)
        .await
        .map_err(db_err)?;
    let mut tx = id.begin().await?;
    db::user::group_delete(&mut tx, &gid)
        .await
        .map_err(db_err)?;
    for m in members {
        id.revoke(
            &mut tx,
            db::revocation::Event {
                user_id: Some(m.id),
                ..Default::default()
            },
        )
        .await?;
    }
    id.commit(tx).await?;
    Ok(no_content())
}

pub async fn group_users(
    State(id): S,
    ctx: Ctx,
    Path(gid): Path<String>,
) -> Result<Response, Error> {
    let g = load_group(&id, &gid).await?;
    id.policy
        .enforce("identity:list_users_in_group", &ctx, &group_target(&g))?;
    let items = db::user::users_in_group(&id.pool, &gid)
        .await
        .map_err(db_err)?
        .iter()
        .map(|u| user_json(&id, u))
        .collect();
    Ok(collection(
        &id,
        "users",
        &format!("/groups/{gid}/users"),
        items,
    ))
}

pub async fn group_add_user(
    State(id): S,
    ctx: Ctx,
    Path((gid, uid)): Path<(String, String)>,
) -> Result<Response, Error> {
    let g = load_group(&id, &gid).await?;
    id.policy
        .enforce("identity:add_user_to_group", &ctx, &group_target(&g))?;
    load_user(&id, &uid).await?;
    let mut tx = id.begin().await?;
    db::user::member_add(&mut tx, &gid, &uid)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(no_content())
}

pub async fn group_check_user(
    State(id): S,
    ctx: Ctx,
    Path((gid, uid)): Path<(String, String)>,
) -> Result<Response, Error> {
    let g = load_group(&id, &gid).await?;
    id.policy
        .enforce("identity:check_user_in_group", &ctx, &group_target(&g))?;
    load_user(&id, &uid).await?;
    if db::user::is_member(&id.pool, &gid, &uid)
        .await
        .map_err(db_err)?
    {
        Ok(no_content())
    } else {
        Err(Error::not_found(format!(
            "Could not find user {uid} in group {gid}."
        )))
    }
}

pub async fn group_remove_user(
    State(id): S,
    ctx: Ctx,
    Path((gid, uid)): Path<(String, String)>,
) -> Result<Response, Error> {
    let g = load_group(&id, &gid).await?;
    id.policy
        .enforce("identity:remove_user_from_group", &ctx, &group_target(&g))?;
    load_user(&id, &uid).await?;
    let mut tx = id.begin().await?;
    if !db::user::member_remove(&mut tx, &gid, &uid)
        .await
        .map_err(db_err)?
    {
        return Err(Error::not_found(format!(
            "Could not find user {uid} in group {gid}."
        )));
    }
    id.revoke(
        &mut tx,
        db::revocation::Event {
            user_id: Some(uid.clone()),
            ..Default::default()
        },
    )
    .await?;
    id.commit(tx).await?;
    Ok(no_content())
}
