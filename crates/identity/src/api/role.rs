//! Roles and implied roles.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use api::{Ctx, Error, Json, Target};

use super::{collection, entity, merge_extra, no_content, qget, Body, Q, S};
use crate::app::role::{check_options, RoleUpdate};
use crate::app::{db_err, Identity};
use crate::store::{self as db, Filter};

pub fn role_json(id: &Identity, r: &db::assignment::Role) -> Value {
    let mut v = json!({
        "id": r.id, "name": r.name,
        "domain_id": if r.domain_id.is_empty() { Value::Null } else { json!(r.domain_id) },
        "description": r.description,
        "options": serde_json::from_str::<Value>(&r.options).unwrap_or_else(|_| json!({})),
        "links": {"self": id.url(&format!("/roles/{}", r.id))},
    });
    merge_extra(&mut v, &r.extra);
    v
}

fn role_ref(id: &Identity, r: &db::assignment::Role) -> Value {
    json!({"id": r.id, "name": r.name, "links": {"self": id.url(&format!("/roles/{}", r.id))}})
}

pub async fn load_role(id: &Identity, rid: &str) -> Result<db::assignment::Role, Error> {
    db::assignment::role_get(&id.pool, rid)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("Could not find role: {rid}.")))
}

pub async fn role_list(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    id.policy
        .enforce("identity:list_roles", &ctx, &Target::new())?;
    let mut f = Vec::new();
    if let Some(n) = qget(&q, "name") {
        f.push(Filter::Text("name", n.into()));
    }
    f.push(Filter::Text(
        "domain_id",
        qget(&q, "domain_id").unwrap_or("").into(),
    ));
    let items = db::assignment::role_list(&id.pool, &f)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| role_json(&id, r))
        .collect();
    Ok(collection(&id, "roles", "/roles", items))
}

pub async fn role_get(State(id): S, ctx: Ctx, Path(rid): Path<String>) -> Result<Response, Error> {
    id.policy
        .enforce("identity:get_role", &ctx, &Target::new())?;
    let r = load_role(&id, &rid).await?;
    Ok(entity(StatusCode::OK, "role", role_json(&id, &r)))
}

pub async fn role_create(State(id): S, ctx: Ctx, Json(v): Json<Value>) -> Result<Response, Error> {
    id.policy
        .enforce("identity:create_role", &ctx, &Target::new())?;
    let mut b = Body::new(v, "role")?;
    b.forbid(&["id"])?;
    let name = b.required_name("name", 255)?;
    let domain_id = b.id("domain_id")?.unwrap_or_default();
    let description = b.str("description", 255)?.unwrap_or_default();
    let options = match b.object("options")? {
        Some(mut o) => {
            check_options(&o)?;
            // A null option is the same as an absent one.
            o.retain(|_, v| !v.is_null());
            Value::Object(o).to_string()
        }
        None => "{}".into(),
    };
    let r = db::assignment::Role {
        id: store::new_hex_id(),
        name,
        domain_id,
        description,
        extra: Value::Object(b.extra()).to_string(),
        options,
    };
    let r = id.role_create(&ctx, r).await?;
    Ok(entity(StatusCode::CREATED, "role", role_json(&id, &r)))
}

pub async fn role_update(
    State(id): S,
    ctx: Ctx,
    Path(rid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:update_role", &ctx, &Target::new())?;
    let mut b = Body::new(v, "role")?;
    b.matching_id(&rid)?;
    let attributes = b.len();
    let domain_id = b.id("domain_id")?;
    let name = b.name("name", 255)?;
    let description = b.str("description", 255)?;
    let options = b.object("options")?;
    if let Some(o) = &options {
        check_options(o)?;
    }
    let req = RoleUpdate {
        domain_id,
        name,
        description,
        options,
        extra: b.extra(),
        attributes,
    };
    let r = id.role_update(&ctx, &rid, req).await?;
    Ok(entity(StatusCode::OK, "role", role_json(&id, &r)))
}

pub async fn role_delete(
    State(id): S,
    ctx: Ctx,
    Path(rid): Path<String>,
) -> Result<Response, Error> {
    id.role_delete(&ctx, &rid).await?;
    Ok(no_content())
}

pub async fn implies_list(
    State(id): S,
    ctx: Ctx,
    Path(rid): Path<String>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:list_implied_roles", &ctx, &Target::new())?;
    let prior = load_role(&id, &rid).await?;
    let mut implies = Vec::new();
    for (p, i) in db::assignment::implied_all(&id.pool)
        .await
        .map_err(db_err)?
    {
        if p == rid {
            if let Some(r) = db::assignment::role_get(&id.pool, &i)
                .await
                .map_err(db_err)?
            {
                implies.push(role_ref(&id, &r));
            }
        }
    }
    Ok(axum::Json(json!({
        "role_inference": {"prior_role": role_ref(&id, &prior), "implies": implies},
        "links": {"self": id.url(&format!("/roles/{rid}/implies"))}
    }))
    .into_response())
}

async fn inference_body(id: &Identity, prior: &str, implied: &str) -> Result<Value, Error> {
    let p = load_role(id, prior).await?;
    let i = load_role(id, implied).await?;
    Ok(json!({
        "role_inference": {"prior_role": role_ref(id, &p), "implies": role_ref(id, &i)},
        "links": {"self": id.url(&format!("/roles/{prior}/implies/{implied}"))}
    }))
}

pub async fn implies_create(
    State(id): S,
    ctx: Ctx,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<Response, Error> {
    let (p, i) = id.implied_role_create(&ctx, &prior, &implied).await?;
    let body = json!({
        "role_inference": {"prior_role": role_ref(&id, &p), "implies": role_ref(&id, &i)},
        "links": {"self": id.url(&format!("/roles/{prior}/implies/{implied}"))}
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn implication_exists(id: &Identity, prior: &str, implied: &str) -> Result<bool, Error> {
    Ok(db::assignment::implied_all(&id.pool)
        .await
        .map_err(db_err)?
        .iter()
        .any(|(p, i)| p == prior && i == implied))
}

pub async fn implies_get(
    State(id): S,
    ctx: Ctx,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:get_implied_role", &ctx, &Target::new())?;
    let body = inference_body(&id, &prior, &implied).await?;
    if !implication_exists(&id, &prior, &implied).await? {
        return Err(Error::not_found(format!(
            "{prior} does not imply {implied}."
        )));
    }
    Ok(axum::Json(body).into_response())
}

pub async fn implies_check(
    State(id): S,
    ctx: Ctx,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:get_implied_role", &ctx, &Target::new())?;
    if !implication_exists(&id, &prior, &implied).await? {
        return Err(Error::not_found(format!(
            "{prior} does not imply {implied}."
        )));
    }
    Ok(no_content())
}

pub async fn implies_delete(
    State(id): S,
    ctx: Ctx,
    Path((prior, implied)): Path<(String, String)>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:delete_implied_role", &ctx, &Target::new())?;
    let mut tx = id.begin().await?;
    if !db::assignment::implied_remove(&mut tx, &prior, &implied)
        .await
        .map_err(db_err)?
    {
        return Err(Error::not_found(format!(
            "{prior} does not imply {implied}."
        )));
    }
    id.commit(tx).await?;
    Ok(no_content())
}

pub async fn inferences(State(id): S, ctx: Ctx) -> Result<Response, Error> {
    id.policy
        .enforce("identity:list_role_inference_rules", &ctx, &Target::new())?;
    let mut by_prior: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (p, i) in db::assignment::implied_all(&id.pool)
        .await
        .map_err(db_err)?
    {
        by_prior.entry(p).or_default().push(i);
    }
    let mut out = Vec::new();
    for (p, imps) in by_prior {
        let prior = load_role(&id, &p).await?;
        let mut implies = Vec::new();
        for i in imps {
            implies.push(role_ref(&id, &load_role(&id, &i).await?));
        }
        out.push(json!({"prior_role": role_ref(&id, &prior), "implies": implies}));
    }
    Ok(
        axum::Json(json!({"role_inferences": out, "links": {"self": id.url("/role_inferences")}}))
            .into_response(),
    )
}
