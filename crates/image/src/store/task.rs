//! Import tasks.

use super::{Pool, Result, Tx};

/// One row of `image_task`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TaskRow {
    pub id: String,
    pub image_id: String,
    pub owner: Option<String>,
    pub status: String,
    pub method: String,
    pub message: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn insert(tx: &mut Tx<'_>, t: &TaskRow) -> Result<()> {
    sqlx::query("INSERT INTO image_task (id, image_id, owner, status, method, message, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&t.id)
        .bind(&t.image_id)
        .bind(&t.owner)
        .bind(&t.status)
        .bind(&t.method)
        .bind(&t.message)
        .bind(t.created_at)
        .bind(t.updated_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn finish(pool: &Pool, id: &str, status: &str, message: &str) -> Result<()> {
    sqlx::query("UPDATE image_task SET status = $1, message = $2, updated_at = $3 WHERE id = $4")
        .bind(status)
        .bind(message)
        .bind(::store::now_micros())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Moves a task that is still `pending` to `processing` (its import got a
/// slot).
pub async fn start(pool: &Pool, id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE image_task SET status = 'processing', updated_at = $1 WHERE id = $2 AND status = 'pending'",
    )
    .bind(::store::now_micros())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn for_image(pool: &Pool, image_id: &str) -> Result<Vec<TaskRow>> {
    Ok(sqlx::query_as("SELECT id, image_id, owner, status, method, message, created_at, updated_at FROM image_task WHERE image_id = $1 ORDER BY created_at DESC")
        .bind(image_id)
        .fetch_all(pool)
        .await?)
}
