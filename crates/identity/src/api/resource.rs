//! Domains, projects and project tags.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use api::{Ctx, Error, Json, Target};

use super::body::{validate_tag, validate_tags};
use super::{collection, entity, merge_extra, no_content, qbool, qget, Body, Q, S};
use crate::app::{db_err, Identity};
use crate::store::{self as db, Filter};

pub fn domain_json(id: &Identity, d: &db::resource::Domain, tags: Vec<String>) -> Value {
    let mut v = json!({
        "id": d.id, "name": d.name, "description": d.description, "enabled": d.enabled,
        "tags": tags, "options": {}, "links": {"self": id.url(&format!("/domains/{}", d.id))},
    });
    merge_extra(&mut v, &d.extra);
    v
}

pub fn project_json(id: &Identity, p: &db::resource::Project, tags: Vec<String>) -> Value {
    let mut v = json!({
        "id": p.id, "name": p.name, "domain_id": p.domain_id, "description": p.description,
        "enabled": p.enabled,
        // Keystone reports a top-level project's domain as its parent.
        "parent_id": p.parent_id.clone().unwrap_or_else(|| p.domain_id.clone()),
        "is_domain": false, "tags": tags, "options": {},
        "links": {"self": id.url(&format!("/projects/{}", p.id))},
    });
    merge_extra(&mut v, &p.extra);
    v
}

async fn load_domain(id: &Identity, did: &str) -> Result<db::resource::Domain, Error> {
    db::resource::domain_get(&id.pool, did)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("Could not find domain: {did}.")))
}

pub async fn load_project(id: &Identity, pid: &str) -> Result<db::resource::Project, Error> {
    db::resource::project_get(&id.pool, pid)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("Could not find project: {pid}.")))
}

pub async fn domain_list(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    id.policy
        .enforce("identity:list_domains", &ctx, &Target::new())?;
    let mut f = Vec::new();
    if let Some(n) = qget(&q, "name") {
        f.push(Filter::Text("name", n.into()));
    }
    if let Some(e) = qbool(&q, "enabled")? {
        f.push(Filter::Bool("enabled", e));
    }
    let mut items = Vec::new();
    for d in db::resource::domain_list(&id.pool, &f)
        .await
        .map_err(db_err)?
    {
        let tags = db::resource::tags(&id.pool, "domain_tag", "domain_id", &d.id)
            .await
            .map_err(db_err)?;
        items.push(domain_json(&id, &d, tags));
    }
    Ok(collection(&id, "domains", "/domains", items))
}

pub async fn domain_get(
    State(id): S,
    ctx: Ctx,
    Path(did): Path<String>,
) -> Result<Response, Error> {
    let t = Target::new().with("target.domain.id", &did);
    id.policy.enforce("identity:get_domain", &ctx, &t)?;
    let d = load_domain(&id, &did).await?;
    let tags = db::resource::tags(&id.pool, "domain_tag", "domain_id", &did)
        .await
        .map_err(db_err)?;
    Ok(entity(StatusCode::OK, "domain", domain_json(&id, &d, tags)))
}

pub async fn domain_create(
    State(id): S,
    ctx: Ctx,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:create_domain", &ctx, &Target::new())?;
    let mut b = Body::new(v, "domain")?;
    b.forbid(&["id"])?;
    let name = b.required_name("name", 64)?;
    let description = b.str("description", 65535)?.unwrap_or_default();
    let enabled = b.bool("enabled")?.unwrap_or(true);
    let tags = b.tags()?.unwrap_or_default();
    b.take("options");
    let extra = Value::Object(b.extra()).to_string();
    let d = db::resource::Domain {
        id: store::new_hex_id(),
        name,
        description,
        enabled,
        extra,
    };
    let mut tx = id.begin().await?;
    db::resource::domain_insert(&mut tx, &d)
        .await
        .map_err(db_err)?;
    db::resource::set_tags(&mut tx, "domain_tag", "domain_id", &d.id, &tags)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(entity(
        StatusCode::CREATED,
        "domain",
        domain_json(&id, &d, tags),
    ))
}

pub async fn domain_update(
    State(id): S,
    ctx: Ctx,
    Path(did): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy.enforce(
        "identity:update_domain",
        &ctx,
        &Target::new().with("target.domain.id", &did),
    )?;
    let mut d = load_domain(&id, &did).await?;
    let mut b = Body::new(v, "domain")?;
    b.matching_id(&did)?;
    if let Some(n) = b.name("name", 64)? {
        d.name = n;
    }
    if let Some(x) = b.str("description", 65535)? {
        d.description = x;
    }
    let was_enabled = d.enabled;
    if let Some(e) = b.bool("enabled")? {
        d.enabled = e;
    }
    let tags = b.tags()?;
    b.take("options");
    d.extra = b.merge_extra(&d.extra);
    if did == "default" && !d.enabled {
        return Err(Error::forbidden("The default domain cannot be disabled."));
    }
    let mut tx = id.begin().await?;
    db::resource::domain_update(&mut tx, &d)
        .await
        .map_err(db_err)?;
    if let Some(t) = &tags {
        db::resource::set_tags(&mut tx, "domain_tag", "domain_id", &did, t)
            .await
            .map_err(db_err)?;
    }
    if was_enabled && !d.enabled {
        id.revoke(
            &mut tx,
            db::revocation::Event {
                domain_id: Some(did.clone()),
                ..Default::default()
            },
        )
        .await?;
    }
    id.commit(tx).await?;
    let tags = db::resource::tags(&id.pool, "domain_tag", "domain_id", &did)
        .await
        .map_err(db_err)?;
    Ok(entity(StatusCode::OK, "domain", domain_json(&id, &d, tags)))
}

pub async fn domain_delete(
    State(id): S,
    ctx: Ctx,
    Path(did): Path<String>,
) -> Result<Response, Error> {
    id.policy.enforce(
        "identity:delete_domain",
        &ctx,
        &Target::new().with("target.domain.id", &did),
    )?;
    let d = load_domain(&id, &did).await?;
    if d.enabled {
        return Err(Error::forbidden(
            "Cannot delete a domain that is enabled, please disable it first.",
        ));
    }
    let mut tx = id.begin().await?;
    db::resource::domain_delete(&mut tx, &did)
        .await
        .map_err(db_err)?;
    id.revoke(
        &mut tx,
        db::revocation::Event {
            domain_id: Some(did.clone()),
            ..Default::default()
        },
    )
    .await?;
    id.commit(tx).await?;
    Ok(no_content())
}

/// Project ids matching Keystone's tag filters (`tags`, `tags-any`,
/// `not-tags`, `not-tags-any`, comma-separated).
fn tag_filter(
    q: &[(String, String)],
    tags_of: &std::collections::HashMap<String, Vec<String>>,
    pid: &str,
) -> bool {
    let empty = Vec::new();
    let have = tags_of.get(pid).unwrap_or(&empty);
    let list = |k: &str| qget(q, k).map(|v| v.split(',').map(str::to_string).collect::<Vec<_>>());
    if let Some(all) = list("tags") {
        if !all.iter().all(|t| have.contains(t)) {
            return false;
        }
    }
    if let Some(any) = list("tags-any") {
        if !any.iter().any(|t| have.contains(t)) {
            return false;
        }
    }
    if let Some(all) = list("not-tags") {
        if all.iter().all(|t| have.contains(t)) {
            return false;
        }
    }
    if let Some(any) = list("not-tags-any") {
        if any.iter().any(|t| have.contains(t)) {
            return false;
        }
    }
    true
}

pub async fn project_list(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let domain = qget(&q, "domain_id").map(str::to_string);
    id.policy.enforce(
        "identity:list_projects",
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
        // A domain reader sees its own domain's projects only.
        if let Some(d) = ctx.domain_id() {
            f.push(Filter::Text("domain_id", d.into()));
        }
    }
    if let Some(e) = qbool(&q, "enabled")? {
        f.push(Filter::Bool("enabled", e));
    }
    if let Some(p) = qget(&q, "parent_id") {
        f.push(Filter::Text("parent_id", p.into()));
    }
    if qbool(&q, "is_domain")? == Some(true) {
        return Ok(collection(&id, "projects", "/projects", vec![]));
    }
    let mut tags_of: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (pid, t) in db::resource::all_project_tags(&id.pool)
        .await
        .map_err(db_err)?
    {
        tags_of.entry(pid).or_default().push(t);
    }
    let items = db::resource::project_list(&id.pool, &f)
        .await
        .map_err(db_err)?
        .into_iter()
        .filter(|p| tag_filter(&q, &tags_of, &p.id))
        .map(|p| {
            let mut t = tags_of.get(&p.id).cloned().unwrap_or_default();
            t.sort();
            project_json(&id, &p, t)
        })
        .collect();
    Ok(collection(&id, "projects", "/projects", items))
}

pub fn project_target(p: &db::resource::Project) -> Target {
    Target::new()
        .with("target.project.id", &p.id)
        .with("target.project.domain_id", &p.domain_id)
        .with("target.domain_id", &p.domain_id)
}

pub async fn project_get(
    State(id): S,
    ctx: Ctx,
    Path(pid): Path<String>,
) -> Result<Response, Error> {
    let p = db::resource::project_get(&id.pool, &pid)
        .await
        .map_err(db_err)?;
    let t = match &p {
        Some(p) => project_target(p),
        None => Target::new().with("target.project.id", &pid),
    };
    id.policy.enforce("identity:get_project", &ctx, &t)?;
    let p = p.ok_or_else(|| Error::not_found(format!("Could not find project: {pid}.")))?;
    let tags = db::resource::tags(&id.pool, "project_tag", "project_id", &pid)
        .await
        .map_err(db_err)?;
    Ok(entity(
        StatusCode::OK,
        "project",
        project_json(&id, &p, tags),
    ))
}

pub async fn project_create(
    State(id): S,
    ctx: Ctx,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "project")?;
    b.forbid(&["id"])?;
    let name = b.required_name("name", 64)?;
    let description = b.str("description", 65535)?.unwrap_or_default();
    let enabled = b.bool("enabled")?.unwrap_or(true);
    let tags = b.tags()?.unwrap_or_default();
    if b.bool("is_domain")? == Some(true) {
        return Err(Error::bad_request(
            "Projects acting as domains are not supported; create a domain instead.",
        ));
    }
    let parent_id = b.id("parent_id")?;
    let mut domain_id = b.id("domain_id")?;
    b.take("options");
    let extra = Value::Object(b.extra()).to_string();
    // A parent that is a domain means "top level in that domain".
    let mut parent = None;
    if let Some(pid) = &parent_id {
        if let Some(d) = db::resource::domain_get(&id.pool, pid)
            .await
            .map_err(db_err)?
        {
            domain_id.get_or_insert(d.id);
        } else {
            let par = db::resource::project_get(&id.pool, pid)
                .await
                .map_err(db_err)?
                .ok_or_else(|| Error::not_found(format!("Could not find project: {pid}.")))?;
            if domain_id.as_ref().is_some_and(|d| d != &par.domain_id) {
                return Err(Error::bad_request(
                    "A project must be in the same domain as its parent.",
                ));
            }
            domain_id = Some(par.domain_id.clone());
            parent = Some(par.id);
        }
    }
    // Keystone defaults the domain to the one the caller's token is in.
    let domain_id = domain_id.unwrap_or_else(|| match &ctx.scope {
        api::Scope::Project { domain_id, .. } => domain_id.clone(),
        api::Scope::Domain { id, .. } => id.clone(),
        _ => "default".into(),
    });
    id.policy.enforce(
        "identity:create_project",
        &ctx,
        &Target::new().with("target.project.domain_id", &domain_id),
    )?;
    load_domain(&id, &domain_id).await?;
    let p = db::resource::Project {
        id: store::new_hex_id(),
        name,
        domain_id,
        parent_id: parent,
        description,
        enabled,
        extra,
    };
    let mut tx = id.begin().await?;
    db::resource::project_insert(&mut tx, &p)
        .await
        .map_err(db_err)?;
    db::resource::set_tags(&mut tx, "project_tag", "project_id", &p.id, &tags)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(entity(
        StatusCode::CREATED,
        "project",
        project_json(&id, &p, tags),
    ))
}

pub async fn project_update(
    State(id): S,
    ctx: Ctx,
    Path(pid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    let mut p = load_project(&id, &pid).await?;
    id.policy
        .enforce("identity:update_project", &ctx, &project_target(&p))?;
    let mut b = Body::new(v, "project")?;
    b.matching_id(&pid)?;
    b.forbid(&["is_domain"])?;
    if let Some(d) = b.id("domain_id")? {
        if d != p.domain_id {
            return Err(Error::bad_request("Update of 'domain_id' is not allowed."));
        }
    }
    if let Some(par) = b.id("parent_id")? {
        let current = p.parent_id.clone().unwrap_or_else(|| p.domain_id.clone());
        if par != current {
            return Err(Error::forbidden("Update of 'parent_id' is not allowed."));
        }
    }
    if let Some(n) = b.name("name", 64)? {
        p.name = n;
    }
    if let Some(x) = b.str("description", 65535)? {
        p.description = x;
    }
    let was_enabled = p.enabled;
    if let Some(e) = b.bool("enabled")? {
        p.enabled = e;
    }
    let tags = b.tags()?;
    b.take("options");
    p.extra = b.merge_extra(&p.extra);
    let mut tx = id.begin().await?;
    db::resource::project_update(&mut tx, &p)
        .await
        .map_err(db_err)?;
    if let Some(t) = &tags {
        db::resource::set_tags(&mut tx, "project_tag", "project_id", &pid, t)
            .await
            .map_err(db_err)?;
    }
    if was_enabled && !p.enabled {
        id.revoke(
            &mut tx,
            db::revocation::Event {
                project_id: Some(pid.clone()),
                ..Default::default()
            },
        )
        .await?;
    }
    id.commit(tx).await?;
    let tags = db::resource::tags(&id.pool, "project_tag", "project_id", &pid)
        .await
        .map_err(db_err)?;
    Ok(entity(
        StatusCode::OK,
        "project",
        project_json(&id, &p, tags),
    ))
}

pub async fn project_delete(
    State(id): S,
    ctx: Ctx,
    Path(pid): Path<String>,
) -> Result<Response, Error> {
    let p = load_project(&id, &pid).await?;
    id.policy
        .enforce("identity:delete_project", &ctx, &project_target(&p))?;
    if db::resource::project_has_children(&id.pool, &pid)
        .await
        .map_err(db_err)?
    {
        return Err(Error::forbidden(
            "Cannot delete a project that has children; delete them first.",
        ));
    }
    let mut tx = id.begin().await?;
    db::resource::project_delete(&mut tx, &pid)
        .await
        .map_err(db_err)?;
    id.revoke(
        &mut tx,
        db::revocation::Event {
            project_id: Some(pid.clone()),
            ..Default::default()
        },
    )
    .await?;
    id.commit(tx).await?;
    Ok(no_content())
}

pub async fn tags_list(State(id): S, ctx: Ctx, Path(pid): Path<String>) -> Result<Response, Error> {
    let p = load_project(&id, &pid).await?;
    id.policy
        .enforce("identity:list_project_tags", &ctx, &project_target(&p))?;
    let tags = db::resource::tags(&id.pool, "project_tag", "project_id", &pid)
        .await
        .map_err(db_err)?;
    Ok(axum::Json(json!({"tags": tags})).into_response())
}

pub async fn tags_replace(
    State(id): S,
    ctx: Ctx,
    Path(pid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    let p = load_project(&id, &pid).await?;
    id.policy
        .enforce("identity:update_project_tags", &ctx, &project_target(&p))?;
    let items = match v.get("tags") {
        Some(Value::Array(a)) => a.clone(),
        _ => {
            return Err(Error::bad_request(
                "Expecting to find 'tags' (an array) in the request body.",
            ))
        }
    };
    let tags = validate_tags(items)?;
    let mut tx = id.begin().await?;
    db::resource::set_tags(&mut tx, "project_tag", "project_id", &pid, &tags)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    let tags = db::resource::tags(&id.pool, "project_tag", "project_id", &pid)
        .await
        .map_err(db_err)?;
    Ok(axum::Json(json!({"tags": tags})).into_response())
}

pub async fn tags_clear(
    State(id): S,
    ctx: Ctx,
    Path(pid): Path<String>,
) -> Result<Response, Error> {
    let p = load_project(&id, &pid).await?;
    id.policy
        .enforce("identity:delete_project_tags", &ctx, &project_target(&p))?;
    let mut tx = id.begin().await?;
    db::resource::set_tags(&mut tx, "project_tag", "project_id", &pid, &[])
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(no_content())
}

pub async fn tag_check(
    State(id): S,
    ctx: Ctx,
    Path((pid, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let p = load_project(&id, &pid).await?;
    id.policy
        .enforce("identity:get_project_tag", &ctx, &project_target(&p))?;
    let tags = db::resource::tags(&id.pool, "project_tag", "project_id", &pid)
        .await
        .map_err(db_err)?;
    if tags.contains(&tag) {
        Ok(no_content())
    } else {
        Err(Error::not_found(format!("Could not find tag: {tag}.")))
    }
}

pub async fn tag_add(
    State(id): S,
    ctx: Ctx,
    Path((pid, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let p = load_project(&id, &pid).await?;
    id.policy
        .enforce("identity:create_project_tag", &ctx, &project_target(&p))?;
    validate_tag(&tag)?;
    let mut tags = db::resource::tags(&id.pool, "project_tag", "project_id", &pid)
        .await
        .map_err(db_err)?;
    if !tags.contains(&tag) {
        if tags.len() >= 80 {
            return Err(Error::bad_request("A project can have at most 80 tags."));
        }
        tags.push(tag);
        let mut tx = id.begin().await?;
        db::resource::set_tags(&mut tx, "project_tag", "project_id", &pid, &tags)
            .await
            .map_err(db_err)?;
        id.commit(tx).await?;
    }
    Ok(axum::http::StatusCode::CREATED.into_response())
}

pub async fn tag_delete(
    State(id): S,
    ctx: Ctx,
    Path((pid, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let p = load_project(&id, &pid).await?;
    id.policy
        .enforce("identity:delete_project_tag", &ctx, &project_target(&p))?;
    let mut tags = db::resource::tags(&id.pool, "project_tag", "project_id", &pid)
        .await
        .map_err(db_err)?;
    if !tags.contains(&tag) {
        return Err(Error::not_found(format!("Could not find tag: {tag}.")));
    }
    tags.retain(|t| t != &tag);
    let mut tx = id.begin().await?;
    db::resource::set_tags(&mut tx, "project_tag", "project_id", &pid, &tags)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(no_content())
}
