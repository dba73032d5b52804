//! Grants (`/projects|domains/{id}/users|groups/{id}/roles/{role}`, the
//! system equivalents) and `/v3/role_assignments`.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};

use api::{Ctx, Error, Target};

use super::{collection, no_content, qbool, qget, Q, S};
use crate::app::{db_err, Identity};
use crate::store::assignment::Assignment;
use crate::store::{self as db};
use crate::token::ScopeId;

/// Checks that the target and the actor exist; returns the target's domain
/// (for policy) and the actor type in singular.
async fn check_parts(
    id: &Identity,
    ttype: &str,
    tid: &str,
    atype: &str,
    aid: &str,
) -> Result<(String, &'static str, &'static str), Error> {
    let (target, domain) = match ttype {
        "projects" => {
            let p = super::resource::load_project(id, tid).await?;
            ("project", p.domain_id)
        }
        "domains" => {
            db::resource::domain_get(&id.pool, tid)
                .await
                .map_err(db_err)?
                .ok_or_else(|| Error::not_found(format!("Could not find domain: {tid}.")))?;
            ("domain", tid.to_string())
        }
        _ => return Err(Error::not_found("The resource could not be found.")),
    };
    let actor = check_actor(id, atype, aid).await?;
    Ok((domain, target, actor))
}

async fn check_actor(id: &Identity, atype: &str, aid: &str) -> Result<&'static str, Error> {
    match atype {
        "users" => {
            super::user::load_user(id, aid).await?;
            Ok("user")
        }
        "groups" => {
            super::user::load_group(id, aid).await?;
            Ok("group")
        }
        _ => Err(Error::not_found("The resource could not be found.")),
    }
}

fn grant_target(domain: &str) -> Target {
    Target::new().with("target.domain_id", domain)
}

/// Revocation events for a grant removed: every token of the affected users
/// on that target.
async fn revoke_for(id: &Identity, tx: &mut store::Tx<'_>, a: &Assignment) -> Result<(), Error> {
    let users: Vec<String> = if a.actor_type == "user" {
        vec![a.actor_id.clone()]
    } else {
        db::user::users_in_group(&id.pool, &a.actor_id)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|u| u.id)
            .collect()
    };
    for u in users {
        let mut ev = db::revocation::Event {
            user_id: Some(u),
            ..Default::default()
        };
        // A domain or system grant may be inherited by projects: revoke all
        // of the user's tokens rather than guess which.
        if a.target_type == "project" {
            ev.project_id = Some(a.target_id.clone());
        }
        id.revoke(tx, ev).await?;
    }
    Ok(())
}

pub async fn grant_list(
    State(id): S,
    ctx: Ctx,
    Path((ttype, tid, atype, aid)): Path<(String, String, String, String)>,
) -> Result<Response, Error> {
    let (domain, target, actor) = check_parts(&id, &ttype, &tid, &atype, &aid).await?;
    id.policy
        .enforce("identity:list_grants", &ctx, &grant_target(&domain))?;
    let grants = db::assignment::for_actor_target(&id.pool, actor, &aid, target, &tid, false)
        .await
        .map_err(db_err)?;
    let mut items = Vec::new();
    for g in grants {
        let r = super::role::load_role(&id, &g.role_id).await?;
        items.push(super::role::role_json(&id, &r));
    }
    Ok(collection(
        &id,
        "roles",
        &format!("/{ttype}/{tid}/{atype}/{aid}/roles"),
        items,
    ))
}

fn assignment(actor: &str, aid: &str, target: &str, tid: &str, rid: &str) -> Assignment {
    Assignment {
        actor_type: actor.into(),
        actor_id: aid.into(),
        target_type: target.into(),
        target_id: tid.into(),
        role_id: rid.into(),
        inherited: false,
    }
}

pub async fn grant_create(
    State(id): S,
    ctx: Ctx,
    Path((ttype, tid, atype, aid, rid)): Path<(String, String, String, String, String)>,
) -> Result<Response, Error> {
    let (domain, target, actor) = check_parts(&id, &ttype, &tid, &atype, &aid).await?;
    id.policy
        .enforce("identity:create_grant", &ctx, &grant_target(&domain))?;
    super::role::load_role(&id, &rid).await?;
    let mut tx = id.begin().await?;
    db::assignment::grant(&mut tx, &assignment(actor, &aid, target, &tid, &rid))
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(no_content())
}

pub async fn grant_check(
    State(id): S,
    ctx: Ctx,
    Path((ttype, tid, atype, aid, rid)): Path<(String, String, String, String, String)>,
) -> Result<Response, Error> {
    let (domain, target, actor) = check_parts(&id, &ttype, &tid, &atype, &aid).await?;
    id.policy
        .enforce("identity:check_grant", &ctx, &grant_target(&domain))?;
    super::role::load_role(&id, &rid).await?;
    if db::assignment::exists(&id.pool, &assignment(actor, &aid, target, &tid, &rid))
        .await
        .map_err(db_err)?
    {
        Ok(no_content())
    } else {
        Err(Error::not_found(format!(
            "Could not find role assignment with role: {rid}, {actor}: {aid}, {target}: {tid}."
        )))
    }
}

pub async fn grant_revoke(
    State(id): S,
    ctx: Ctx,
    Path((ttype, tid, atype, aid, rid)): Path<(String, String, String, String, String)>,
) -> Result<Response, Error> {
    let (domain, target, actor) = check_parts(&id, &ttype, &tid, &atype, &aid).await?;
    id.policy
        .enforce("identity:revoke_grant", &ctx, &grant_target(&domain))?;
    super::role::load_role(&id, &rid).await?;
    let a = assignment(actor, &aid, target, &tid, &rid);
    let mut tx = id.begin().await?;
    if !db::assignment::revoke(&mut tx, &a).await.map_err(db_err)? {
        return Err(Error::not_found(format!(
            "Could not find role assignment with role: {rid}, {actor}: {aid}, {target}: {tid}."
        )));
    }
    revoke_for(&id, &mut tx, &a).await?;
    id.commit(tx).await?;
    Ok(no_content())
}

pub async fn system_grant_list(
    State(id): S,
    ctx: Ctx,
    Path((atype, aid)): Path<(String, String)>,
) -> Result<Response, Error> {
    let actor = check_actor(&id, &atype, &aid).await?;
    id.policy
        .enforce("identity:list_system_grants_for_user", &ctx, &Target::new())?;
    let grants = db::assignment::for_actor_target(&id.pool, actor, &aid, "system", "all", false)
        .await
        .map_err(db_err)?;
    let mut items = Vec::new();
    for g in grants {
        let r = super::role::load_role(&id, &g.role_id).await?;
        items.push(super::role::role_json(&id, &r));
    }
    Ok(collection(
        &id,
        "roles",
        &format!("/system/{atype}/{aid}/roles"),
        items,
    ))
}

pub async fn system_grant_create(
    State(id): S,
    ctx: Ctx,
    Path((atype, aid, rid)): Path<(String, String, String)>,
) -> Result<Response, Error> {
    let actor = check_actor(&id, &atype, &aid).await?;
    id.policy.enforce(
        "identity:create_system_grant_for_user",
        &ctx,
        &Target::new(),
    )?;
    super::role::load_role(&id, &rid).await?;
    let mut tx = id.begin().await?;
    db::assignment::grant(&mut tx, &assignment(actor, &aid, "system", "all", &rid))
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(no_content())
}

pub async fn system_grant_check(
    State(id): S,
    ctx: Ctx,
    Path((atype, aid, rid)): Path<(String, String, String)>,
) -> Result<Response, Error> {
    let actor = check_actor(&id, &atype, &aid).await?;
    id.policy
        .enforce("identity:check_system_grant_for_user", &ctx, &Target::new())?;
    if db::assignment::exists(&id.pool, &assignment(actor, &aid, "system", "all", &rid))
        .await
        .map_err(db_err)?
    {
        Ok(no_content())
    } else {
        Err(Error::not_found(format!(
            "Could not find role assignment with role: {rid}, {actor}: {aid}, system."
        )))
    }
}

pub async fn system_grant_revoke(
    State(id): S,
    ctx: Ctx,
    Path((atype, aid, rid)): Path<(String, String, String)>,
) -> Result<Response, Error> {
    let actor = check_actor(&id, &atype, &aid).await?;
    id.policy.enforce(
        "identity:revoke_system_grant_for_user",
        &ctx,
        &Target::new(),
    )?;
    let a = assignment(actor, &aid, "system", "all", &rid);
    let mut tx = id.begin().await?;
    if !db::assignment::revoke(&mut tx, &a).await.map_err(db_err)? {
        return Err(Error::not_found(format!(
            "Could not find role assignment with role: {rid}, {actor}: {aid}, system."
        )));
    }
    revoke_for(&id, &mut tx, &a).await?;
    id.commit(tx).await?;
    Ok(no_content())
}

/// One row of `/v3/role_assignments` before rendering.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Row {
    actor_type: String,
    actor_id: String,
    target_type: String,
    target_id: String,
    role_id: String,
    inherited: bool,
    /// For effective rows that came through a group: the group.
    via_group: Option<String>,
    /// For effective rows from an implied role: the prior role.
    prior_role: Option<String>,
}

/// `GET /v3/role_assignments` with Keystone's filters: `user.id`,
/// `group.id`, `role.id`, `scope.project.id`, `scope.domain.id`,
/// `scope.system`, `scope.OS-INHERIT:inherited_to`, `effective`,
/// `include_names`, `include_subtree` (ignored without hierarchy).
pub async fn assignments(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let f_user = qget(&q, "user.id").map(str::to_string);
    let f_group = qget(&q, "group.id").map(str::to_string);
    let f_role = qget(&q, "role.id").map(str::to_string);
    let f_project = qget(&q, "scope.project.id").map(str::to_string);
    let f_domain = qget(&q, "scope.domain.id").map(str::to_string);
    let f_system = qget(&q, "scope.system").map(str::to_string);
    let effective = qbool(&q, "effective")?.unwrap_or(false);
    let names = qbool(&q, "include_names")?.unwrap_or(false);
    if f_project.is_some() && f_domain.is_some() {
        return Err(Error::bad_request(
            "Specify at most one of scope.project.id and scope.domain.id.",
        ));
    }
    if effective && f_group.is_some() {
        return Err(Error::bad_request(
            "Combining effective and group filter will always result in an empty list.",
        ));
    }
    let snap = id.snapshot();
    let domain_for_policy = f_domain.clone().or_else(|| {
        f_project
            .as_ref()
            .and_then(|p| snap.projects.get(p).map(|p| p.domain_id.clone()))
    });
    id.policy.enforce(
        "identity:list_role_assignments",
        &ctx,
        &Target::new().with_opt("target.domain_id", domain_for_policy),
    )?;

    let all = db::assignment::all(&id.pool).await.map_err(db_err)?;
    let mut rows: Vec<Row> = Vec::new();
    for a in &all {
        let base = Row {
            actor_type: a.actor_type.clone(),
            actor_id: a.actor_id.clone(),
            target_type: a.target_type.clone(),
            target_id: a.target_id.clone(),
            role_id: a.role_id.clone(),
            inherited: a.inherited,
            via_group: None,
            prior_role: None,
        };
        if !effective {
            rows.push(base);
            continue;
        }
        // Effective: groups expand to their members; inherited grants on a
        // domain expand to its projects; implied roles are added.
        let users: Vec<(String, Option<String>)> = if a.actor_type == "group" {
            snap.user_groups
                .iter()
                .filter(|(_, gs)| gs.contains(&a.actor_id))
                .map(|(u, _)| (u.clone(), Some(a.actor_id.clone())))
                .collect()
        } else {
            vec![(a.actor_id.clone(), None)]
        };
        let targets: Vec<(String, String)> = if a.inherited {
            snap.projects
                .iter()
                .filter(|(pid, _)| snap.grant_applies(a, &ScopeId::Project((*pid).clone())))
                .map(|(pid, _)| ("project".to_string(), pid.clone()))
                .collect()
        } else {
            vec![(a.target_type.clone(), a.target_id.clone())]
        };
        for (u, via) in &users {
            for (tt, tid) in &targets {
                let mut roles: Vec<(String, Option<String>)> = vec![(a.role_id.clone(), None)];
                let implied = snap.expand_implied([a.role_id.clone()].into_iter().collect());
                roles.extend(
                    implied
                        .into_iter()
                        .filter(|r| r != &a.role_id)
                        .map(|r| (r, Some(a.role_id.clone()))),
                );
                for (rid, prior) in roles {
                    rows.push(Row {
                        actor_type: "user".into(),
                        actor_id: u.clone(),
                        target_type: tt.clone(),
                        target_id: tid.clone(),
                        role_id: rid,
                        inherited: false,
                        via_group: via.clone(),
                        prior_role: prior,
                    });
                }
            }
        }
    }
    if effective {
        // Domain-specific roles only carry the roles they imply, which are
        // expanded above: Keystone strips them from effective listings.
        rows.retain(|r| snap.is_global_role(&r.role_id));
    }
    // Filters.
    rows.retain(|r| {
        f_user
            .as_ref()
            .is_none_or(|u| r.actor_type == "user" && &r.actor_id == u)
            && f_group
                .as_ref()
                .is_none_or(|g| r.actor_type == "group" && &r.actor_id == g)
            && f_role.as_ref().is_none_or(|x| &r.role_id == x)
            && f_project
                .as_ref()
                .is_none_or(|p| r.target_type == "project" && &r.target_id == p)
            && f_domain
                .as_ref()
                .is_none_or(|d| r.target_type == "domain" && &r.target_id == d)
            && f_system.as_ref().is_none_or(|_| r.target_type == "system")
            && (qget(&q, "scope.OS-INHERIT:inherited_to").is_none() || r.inherited)
    });
    let mut seen = HashSet::new();
    rows.retain(|r| {
        seen.insert((
            r.actor_type.clone(),
            r.actor_id.clone(),
            r.target_type.clone(),
            r.target_id.clone(),
            r.role_id.clone(),
            r.inherited,
        ))
    });
    let groups: std::collections::HashMap<String, (String, String)> = if names {
        db::user::group_list(&id.pool, &[])
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|g| (g.id, (g.name, g.domain_id)))
            .collect()
    } else {
        Default::default()
    };
    let items: Vec<Value> = rows
        .iter()
        .map(|r| render(&id, &snap, &groups, r, names))
        .collect();
    Ok(collection(
        &id,
        "role_assignments",
        "/role_assignments",
        items,
    ))
}

fn render(
    id: &Identity,
    snap: &crate::app::snapshot::Snapshot,
    groups: &std::collections::HashMap<String, (String, String)>,
    r: &Row,
    names: bool,
) -> Value {
    let dom = |did: &str| {
        if names {
            json!({"id": did, "name": snap.domain_name(did)})
        } else {
            json!({"id": did})
        }
    };
    let mut role = json!({"id": r.role_id});
    if names {
        if let Some(info) = snap.roles.get(&r.role_id) {
            role["name"] = json!(info.name);
            if let Some(d) = &info.domain_id {
                role["domain"] = dom(d);
            }
        }
    }
    let mut v = json!({"role": role});
    let mut actor = json!({"id": r.actor_id});
    if names {
        if r.actor_type == "user" {
            if let Some(u) = snap.users.get(&r.actor_id) {
                actor["name"] = json!(u.name);
                actor["domain"] = dom(&u.domain_id);
            }
        } else if let Some(g) = groups.get(&r.actor_id) {
            actor["name"] = json!(g.0);
            actor["domain"] = dom(&g.1);
        }
    }
    v[r.actor_type.as_str()] = actor;
    let scope = match r.target_type.as_str() {
        "project" => {
            let mut p = json!({"id": r.target_id});
            if names {
                if let Some(info) = snap.projects.get(&r.target_id) {
                    p["name"] = json!(info.name);
                    p["domain"] = dom(&info.domain_id);
                }
            }
            json!({"project": p})
        }
        "domain" => {
            let mut d = json!({"id": r.target_id});
            if names {
                d["name"] = json!(snap.domain_name(&r.target_id));
            }
            json!({"domain": d})
        }
        _ => json!({"system": {"all": true}}),
    };
    v["scope"] = scope;
    if r.inherited {
        v["scope"]["OS-INHERIT:inherited_to"] = json!("projects");
    }
    let plural = if r.actor_type == "user" {
        "users"
    } else {
        "groups"
    };
    let tpath = match r.target_type.as_str() {
        "project" => format!("/projects/{}", r.target_id),
        "domain" => format!("/domains/{}", r.target_id),
        _ => "/system".to_string(),
    };
    let mut links = json!({"assignment": id.url(&format!("{tpath}/{plural}/{}/roles/{}", r.actor_id, r.role_id))});
    if let Some(g) = &r.via_group {
        links["membership"] = json!(id.url(&format!("/groups/{g}/users/{}", r.actor_id)));
    }
    if let Some(p) = &r.prior_role {
        links["prior_role"] = json!(id.url(&format!("/roles/{p}")));
    }
    v["links"] = links;
    v
}
