//! `/v2/images/{id}/tags/{tag}`.

use axum::extract::{Path, State};
use axum::response::Response;

use api::{Ctx, Error};

use super::images::{modifiable, tag_value};
use super::{no_content, S};
use crate::app::{db_err, over_quota};
use crate::store as db;

pub async fn add(
    State(svc): S,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let (mut img, _) = modifiable(&svc, &ctx, &id).await?;
    let tag = tag_value(&tag)?;
    if img.tags.insert(tag) {
        if img.tags.len() > svc.cfg.tag_quota {
            return Err(over_quota(format!(
                "Maximum number of tags exceeded: at most {} (image_tag_quota).",
                svc.cfg.tag_quota
            )));
        }
        let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
        db::image::set_tags(&mut tx, &id, &img.tags)
            .await
            .map_err(db_err)?;
        db::image::touch(&mut tx, &id).await.map_err(db_err)?;
        tx.commit().await.map_err(|e| Error::internal(&e))?;
    }
    Ok(no_content())
}

pub async fn delete(
    State(svc): S,
    ctx: Ctx,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Response, Error> {
    let (mut img, _) = modifiable(&svc, &ctx, &id).await?;
    if !img.tags.remove(&tag) {
        return Err(Error::not_found(format!("Tag {tag} not found.")));
    }
    let mut tx = svc.pool.begin().await.map_err(|e| Error::internal(&e))?;
    db::image::set_tags(&mut tx, &id, &img.tags)
        .await
        .map_err(db_err)?;
    db::image::touch(&mut tx, &id).await.map_err(db_err)?;
    tx.commit().await.map_err(|e| Error::internal(&e))?;
    Ok(no_content())
}
