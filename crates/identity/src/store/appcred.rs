//! Application credentials.

use sqlx::FromRow;
use store::{Pool, Tx};

use super::Error;

#[derive(Debug, Clone, FromRow)]
pub struct AppCred {
    pub id: String,
    pub name: String,
    pub user_id: String,
    pub project_id: String,
    pub secret_hash: String,
    pub description: String,
    pub expires_at: Option<i64>,
    pub unrestricted: bool,
}

pub async fn get(pool: &Pool, id: &str) -> Result<Option<AppCred>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, name, user_id, project_id, secret_hash, description, expires_at, unrestricted \
         FROM application_credential WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn by_name(pool: &Pool, user_id: &str, name: &str) -> Result<Option<AppCred>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, name, user_id, project_id, secret_hash, description, expires_at, unrestricted \
         FROM application_credential WHERE user_id = $1 AND name = $2",
    )
    .bind(user_id)
    .bind(name)
    .fetch_optional(pool)
    .await?)
}

pub async fn list(pool: &Pool, user_id: &str) -> Result<Vec<AppCred>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, name, user_id, project_id, secret_hash, description, expires_at, unrestricted \
         FROM application_credential WHERE user_id = $1 ORDER BY name",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?)
}

pub async fn roles(pool: &Pool, id: &str) -> Result<Vec<String>, Error> {
    let r: Vec<(String,)> = sqlx::query_as(
        "SELECT role_id FROM application_credential_role WHERE application_credential_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(r.into_iter().map(|x| x.0).collect())
}

pub async fn insert(tx: &mut Tx<'_>, a: &AppCred, role_ids: &[String]) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO application_credential (id, name, user_id, project_id, secret_hash, description, \
         expires_at, unrestricted, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&a.id)
    .bind(&a.name)
    .bind(&a.user_id)
    .bind(&a.project_id)
    .bind(&a.secret_hash)
    .bind(&a.description)
    .bind(a.expires_at)
    .bind(a.unrestricted)
    .bind(store::now_micros())
    .execute(&mut **tx)
    .await?;
    for r in role_ids {
        sqlx::query("INSERT INTO application_credential_role (application_credential_id, role_id) VALUES ($1, $2)")
            .bind(&a.id)
            .bind(r)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM application_credential WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
