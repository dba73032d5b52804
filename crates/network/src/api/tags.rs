//! Tags of any taggable resource: `/v2.0/{collection}/{id}/tags[/{tag}]`
//! (Neutron's `standard-attr-tag`).

use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use api::{AuthContext, Ctx, Error, Target};

use super::body::{self, TAGS_PER_RESOURCE};
use super::{no_content, ok, JsonBody, S};
use crate::app::{db_err, fault, Network};
use crate::store as db;

/// The collections that carry tags.
pub const COLLECTIONS: &[&str] = &[
    "networks",
    "subnets",
    "ports",
    "routers",
    "floatingips",
    "security-groups",
];

/// The collection of a matched tag route.
fn collection(p: &OriginalUri) -> &'static str {
    let path = p.path();
    COLLECTIONS
        .iter()
        .copied()
        .find(|c| path.contains(&format!("/v2.0/{c}/")))
        .unwrap_or("networks")
}

/// The resource's policy target and its not-found error; 404 when it does
/// not exist or the caller may not see it.
async fn resource(
    n: &Network,
    ctx: &AuthContext,
    coll: &str,
    id: &str,
) -> Result<(Target, &'static str), Error> {
    let (target, singular) = match coll {
        "networks" => (n.load_network(id).await?.target(), "network"),
        "subnets" => (n.load_subnet(id).await?.target(), "subnet"),
        "ports" => (n.load_port(id).await?.target(), "port"),
        "routers" => (n.load_router(id).await?.target(), "router"),
        "floatingips" => (n.load_floatingip(id).await?.target(), "floatingip"),
        _ => (n.load_security_group(id).await?.target(), "security_group"),
    };
    if !n.allowed(ctx, &format!("get_{singular}"), &target) {
        return Err(not_found(singular, id));
    }
    Ok((target, singular))
}

fn not_found(singular: &str, id: &str) -> Error {
    match singular {
        "network" => fault::network_not_found(id),
        "subnet" => fault::subnet_not_found(id),
        "port" => fault::port_not_found(id),
        "router" => fault::router_not_found(id),
        "floatingip" => fault::floatingip_not_found(id),
        _ => fault::security_group_not_found(id),
    }
}

fn may_change(
    n: &Network,
    ctx: &AuthContext,
    singular: &str,
    target: &Target,
) -> Result<(), Error> {
    n.enforce(ctx, &format!("update_{singular}"), target)?;
    n.enforce_attr(ctx, &format!("update_{singular}:tags"), target)
}

pub async fn list(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let coll = collection(&p);
    resource(&n, &ctx, coll, &id).await?;
    let tags = db::misc::tags(&n.pool, coll, &id).await.map_err(db_err)?;
    Ok(ok(json!({ "tags": tags })))
}

pub async fn replace(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let coll = collection(&p);
    let (target, singular) = resource(&n, &ctx, coll, &id).await?;
    may_change(&n, &ctx, singular, &target)?;
    let tags = match v {
        Value::Object(mut o) if o.len() == 1 && o.contains_key("tags") => {
            body::validate_tags(&o.remove("tags").unwrap_or(Value::Null))?
        }
        _ => {
            return Err(fault::bad_request(
                "Invalid tags body: expected {\"tags\": [...]}",
            ))
        }
    };
    let mut tx = n.begin().await?;
    crate::app::network::set_tags(&mut tx, coll, &id, &tags).await?;
    n.commit(tx).await?;
    let tags = db::misc::tags(&n.pool, coll, &id).await.map_err(db_err)?;
    Ok(ok(json!({ "tags": tags })))
}

pub async fn clear(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let coll = collection(&p);
    let (target, singular) = resource(&n, &ctx, coll, &id).await?;
    may_change(&n, &ctx, singular, &target)?;
    let mut tx = n.begin().await?;
    db::misc::clear_tags(tx.c(), coll, &id)
        .await
        .map_err(db_err)?;
    n.commit(tx).await?;
    Ok(no_content())
}

fn tag_not_found(tag: &str, singular: &str, id: &str) -> Error {
    fault::not_found(
        "TagNotFound",
        format!(
            "Tag {} could not be found for {singular} {id}.",
            body::shown(tag)
        ),
    )
}

pub async fn check(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let coll = collection(&p);
    let (_, singular) = resource(&n, &ctx, coll, &id).await?;
    let tags = db::misc::tags(&n.pool, coll, &id).await.map_err(db_err)?;
    if tags.contains(&tag) {
        Ok(no_content())
    } else {
        Err(tag_not_found(&tag, singular, &id))
    }
}

pub async fn add(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let coll = collection(&p);
    let (target, singular) = resource(&n, &ctx, coll, &id).await?;
    may_change(&n, &ctx, singular, &target)?;
    let tag = body::validate_tag(&Value::String(tag))?;
    let mut tx = n.begin().await?;
    let have = db::misc::tags(tx.c(), coll, &id).await.map_err(db_err)?;
    if !have.contains(&tag) && have.len() >= TAGS_PER_RESOURCE {
        return Err(fault::invalid_attr(
            "tags",
            format!("at most {TAGS_PER_RESOURCE} tags are allowed"),
        ));
    }
    db::misc::add_tag(tx.c(), coll, &id, &tag)
        .await
        .map_err(db_err)?;
    n.commit(tx).await?;
    Ok(StatusCode::CREATED.into_response())
}

pub async fn remove(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let coll = collection(&p);
    let (target, singular) = resource(&n, &ctx, coll, &id).await?;
    may_change(&n, &ctx, singular, &target)?;
    let mut tx = n.begin().await?;
    let removed = db::misc::remove_tag(tx.c(), coll, &id, &tag)
        .await
        .map_err(db_err)?;
    n.commit(tx).await?;
    if removed {
        Ok(no_content())
    } else {
        Err(tag_not_found(&tag, singular, &id))
    }
}
