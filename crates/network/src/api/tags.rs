//! Tags of any taggable resource: `/v2.0/{collection}/{id}/tags[/{tag}]`
//! (Neutron's `standard-attr-tag` and `tag-creation`). The handlers parse;
//! `app::tags` loads the resource and checks policy inside the write.

use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use api::{Ctx, Error};

use super::body;
use super::{entity, no_content, ok, JsonBody, S};
use crate::app::fault;
use crate::app::tags::{tag_not_found, TagChange};

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

/// `{"tags": [...]}` and nothing else (Neutron's `validate_tags`).
fn tags_body(v: Value) -> Result<Vec<String>, Error> {
    match v {
        Value::Object(mut o) if o.len() == 1 && o.contains_key("tags") => {
            body::validate_tags(&o.remove("tags").unwrap_or(Value::Null))
        }
        _ => Err(fault::bad_request(
            "Invalid tags body: expected {\"tags\": [...]}",
        )),
    }
}

pub async fn list(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let tags = n.tags_of(&ctx, collection(&p), &id).await?;
    Ok(ok(json!({ "tags": tags })))
}

/// `PUT …/tags`: replaces the set; 200 with the tags.
pub async fn replace(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let tags = tags_body(v)?;
    let tags = n
        .tags_change(&ctx, collection(&p), &id, TagChange::Replace(&tags))
        .await?;
    Ok(ok(json!({ "tags": tags })))
}

/// `POST …/tags` (`tag-creation`): adds the tags to those present and
/// answers 201 with the request's tags, as Neutron's `create_tags` does.
pub async fn create(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let tags = tags_body(v)?;
    n.tags_change(&ctx, collection(&p), &id, TagChange::Create(&tags))
        .await?;
    Ok(entity(StatusCode::CREATED, "tags", json!(tags)))
}

pub async fn clear(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    n.tags_change(&ctx, collection(&p), &id, TagChange::Clear)
        .await?;
    Ok(no_content())
}

pub async fn check(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let coll = collection(&p);
    if n.tags_of(&ctx, coll, &id).await?.contains(&tag) {
        Ok(no_content())
    } else {
        Err(tag_not_found(&tag, coll, &id))
    }
}

pub async fn add(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let tag = body::validate_tag(&Value::String(tag))?;
    n.tags_change(&ctx, collection(&p), &id, TagChange::Add(&tag))
        .await?;
    Ok(StatusCode::CREATED.into_response())
}

pub async fn remove(
    State(n): S,
    ctx: Ctx,
    p: OriginalUri,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    n.tags_change(&ctx, collection(&p), &id, TagChange::Remove(&tag))
        .await?;
    Ok(no_content())
}
