//! `/v2/images/{id}/tags/{tag}`.

use axum::extract::{Path, State};
use axum::response::Response;

use api::{Ctx, Error};

use super::images::tag_value;
use super::{no_content, S};

pub async fn add(
    State(svc): S,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let tag = tag_value(&tag)?;
    svc.add_tag(&ctx, &id, tag).await?;
    Ok(no_content())
}

pub async fn delete(
    State(svc): S,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    svc.remove_tag(&ctx, &id, &tag).await?;
    Ok(no_content())
}
