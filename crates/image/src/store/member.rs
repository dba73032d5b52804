//! Image members: projects an image is shared with.

use super::{Pool, Result, Tx};

/// One row of `image_member`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MemberRow {
    pub image_id: String,
    pub member: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn insert(tx: &mut Tx<'_>, m: &MemberRow) -> Result<()> {
    sqlx::query("INSERT INTO image_member (image_id, member, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&m.image_id)
        .bind(&m.member)
        .bind(&m.status)
        .bind(m.created_at)
        .bind(m.updated_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get<'e>(
    ex: impl super::image::Exec<'e>,
    image_id: &str,
    member: &str,
) -> Result<Option<MemberRow>> {
    Ok(sqlx::query_as("SELECT image_id, member, status, created_at, updated_at FROM image_member WHERE image_id = $1 AND member = $2")
        .bind(image_id)
        .bind(member)
        .fetch_optional(ex)
        .await?)
}

pub async fn list(pool: &Pool, image_id: &str) -> Result<Vec<MemberRow>> {
    Ok(sqlx::query_as("SELECT image_id, member, status, created_at, updated_at FROM image_member WHERE image_id = $1 ORDER BY created_at, member")
        .bind(image_id)
        .fetch_all(pool)
        .await?)
}

/// Every membership of one project, for listing.
pub async fn of_project(pool: &Pool, member: &str) -> Result<Vec<MemberRow>> {
    Ok(sqlx::query_as("SELECT image_id, member, status, created_at, updated_at FROM image_member WHERE member = $1")
        .bind(member)
        .fetch_all(pool)
        .await?)
}

pub async fn set_status(pool: &Pool, image_id: &str, member: &str, status: &str) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE image_member SET status = $1, updated_at = $2 WHERE image_id = $3 AND member = $4",
    )
    .bind(status)
    .bind(::store::now_micros())
    .bind(image_id)
    .bind(member)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn delete(pool: &Pool, image_id: &str, member: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM image_member WHERE image_id = $1 AND member = $2")
        .bind(image_id)
        .bind(member)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn count<'e>(ex: impl super::image::Exec<'e>, image_id: &str) -> Result<i64> {
    let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM image_member WHERE image_id = $1")
        .bind(image_id)
        .fetch_one(ex)
        .await?;
    Ok(row.0)
}
