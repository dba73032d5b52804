//! `/v2/images/{id}/members`: sharing an image with other projects.
//!
//! Only `shared` images have members. The owner adds and removes them; a
//! member project accepts, rejects or resets its own membership, which
//! decides whether the image appears in its default image list (it can see
//! and boot the image either way).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{AuthContext, Ctx, Error, Target};

use super::{json_object, no_content, reply, S};
use crate::app::{db_err, Image, Images};
use crate::store as db;
use crate::store::member::MemberRow;

fn member_json(svc: &Images, m: &MemberRow) -> Value {
    json!({
        "image_id": m.image_id,
        "member_id": m.member,
        "status": m.status,
        "created_at": api::time_fmt::seconds_z(m.created_at),
        "updated_at": api::time_fmt::seconds_z(m.updated_at),
        "schema": svc.href("/schemas/member"),
    })
}

fn only_shared(img: &Image) -> Result<(), Error> {
    if img.row.visibility != "shared" {
        return Err(Error::forbidden("Only shared images have members."));
    }
    Ok(())
}

fn is_owner(ctx: &AuthContext, img: &Image) -> bool {
    ctx.project_id().is_some() && ctx.project_id() == img.row.owner.as_deref()
}

pub async fn create(
    State(svc): S,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Error> {
    let body = json_object(&body)?;
    let member = body
        .get("member")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty() && m.chars().count() <= 255 && !m.chars().any(char::is_control))
        .ok_or_else(|| {
            Error::bad_request("The body must be {\"member\": \"<project id>\"} with a project id of 1 to 255 characters.")
        })?;
    if let Some(extra) = body.keys().find(|k| *k != "member") {
        return Err(Error::bad_request(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)."
        )));
    }
    let m = svc.add_member(&ctx, &id, member).await?;
    Ok(reply(StatusCode::OK, member_json(&svc, &m)))
}

pub async fn list(State(svc): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    let (img, target) = svc.visible(&ctx, &id).await?;
    only_shared(&img)?;
    let members = db::member::list(&svc.pool, &id).await.map_err(db_err)?;
    let shown: Vec<Value> = if is_owner(&ctx, &img) || ctx.is_admin() {
        svc.policy.enforce("get_members", &ctx, &target)?;
        members.iter().map(|m| member_json(&svc, m)).collect()
    } else {
        let me = ctx.project_id().unwrap_or_default();
        let t = Target::new().with("project_id", me);
        svc.policy.enforce("get_members", &ctx, &t)?;
        members
            .iter()
            .filter(|m| m.member == me)
            .map(|m| member_json(&svc, m))
            .collect()
    };
    Ok(reply(
        StatusCode::OK,
        json!({"members": shown, "schema": svc.href("/schemas/members")}),
    ))
}

async fn load_member(svc: &Images, id: &str, member: &str) -> Result<MemberRow, Error> {
    db::member::get(&svc.pool, id, member)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("{member} is not a member of image {id}.")))
}

pub async fn show(
    State(svc): S,
    ctx: Ctx,
    Path((id, member)): Path<(String, String)>,
) -> Result<Response, Error> {
    let (img, target) = svc.visible(&ctx, &id).await?;
    only_shared(&img)?;
    let mine = ctx.project_id() == Some(member.as_str());
    if !(mine || is_owner(&ctx, &img) || ctx.is_admin()) {
        return Err(Error::not_found(format!(
            "{member} is not a member of image {id}."
        )));
    }
    let t = if mine {
        Target::new().with("project_id", member.clone())
    } else {
        target
    };
    svc.policy.enforce("get_member", &ctx, &t)?;
    let m = load_member(&svc, &id, &member).await?;
    Ok(reply(StatusCode::OK, member_json(&svc, &m)))
}

pub async fn update(
    State(svc): S,
    ctx: Ctx,
    Path((id, member)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Error> {
    let (img, _) = svc.visible(&ctx, &id).await?;
    only_shared(&img)?;
    let body = json_object(&body)?;
    let status = body.get("status").and_then(Value::as_str).ok_or_else(|| {
        Error::bad_request("The body must be {\"status\": \"accepted|pending|rejected\"}.")
    })?;
    if !["accepted", "pending", "rejected"].contains(&status) {
        return Err(Error::bad_request(format!(
            "Invalid status {status:?}: must be accepted, pending or rejected."
        )));
    }
    load_member(&svc, &id, &member).await?;
    // Only the member itself decides whether it takes the image.
    if ctx.project_id() != Some(member.as_str()) {
        return Err(Error::forbidden(
            "You are not permitted to modify 'status' on this image member.",
        ));
    }
    svc.policy.enforce(
        "modify_member",
        &ctx,
        &Target::new().with("project_id", member.clone()),
    )?;
    db::member::set_status(&svc.pool, &id, &member, status)
        .await
        .map_err(db_err)?;
    let m = load_member(&svc, &id, &member).await?;
    Ok(reply(StatusCode::OK, member_json(&svc, &m)))
}

pub async fn delete(
    State(svc): S,
    ctx: Ctx,
    Path((id, member)): Path<(String, String)>,
) -> Result<Response, Error> {
    let (img, target) = svc.visible(&ctx, &id).await?;
    svc.policy.enforce("delete_member", &ctx, &target)?;
    if !is_owner(&ctx, &img) && !ctx.is_admin() {
        return Err(Error::forbidden(
            "Only the image owner can remove members of an image.",
        ));
    }
    only_shared(&img)?;
    if !db::member::delete(&svc.pool, &id, &member)
        .await
        .map_err(db_err)?
    {
        return Err(Error::not_found(format!(
            "{member} is not a member of image {id}."
        )));
    }
    Ok(no_content())
}
