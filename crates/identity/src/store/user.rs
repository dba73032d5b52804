//! Users, groups and group membership.

use sqlx::FromRow;
use store::{Pool, Tx};

use super::{select, Error, Exec, Filter};

#[derive(Debug, Clone, FromRow)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    pub password_hash: Option<String>,
    pub password_created_at: Option<i64>,
    pub failed_auth_count: i64,
    pub failed_auth_at: Option<i64>,
    pub extra: String,
    pub options: String,
    /// Whether the current password was set by the user
    /// (`POST /v3/users/{id}/password`) rather than by an administrator.
    pub password_self_service: bool,
}

#[derive(Debug, Clone, FromRow)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
    pub extra: String,
}

pub async fn user_get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<User>, Error> {
    Ok(sqlx::query_as("SELECT * FROM identity_user WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn user_by_name(pool: &Pool, domain_id: &str, name: &str) -> Result<Option<User>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM identity_user WHERE domain_id = $1 AND name = $2")
            .bind(domain_id)
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn user_list(pool: &Pool, filters: &[Filter]) -> Result<Vec<User>, Error> {
    Ok(select("identity_user", filters, "name")
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

pub async fn user_insert(tx: &mut Tx<'_>, u: &User) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO identity_user (id, name, domain_id, enabled, default_project_id, password_hash, \
         password_created_at, failed_auth_count, failed_auth_at, extra, options, created_at, \
         password_self_service) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, NULL, $8, $9, $10, $11)",
    )
    .bind(&u.id)
    .bind(&u.name)
    .bind(&u.domain_id)
    .bind(u.enabled)
    .bind(&u.default_project_id)
    .bind(&u.password_hash)
    .bind(u.password_created_at)
    .bind(&u.extra)
    .bind(&u.options)
    .bind(store::now_micros())
    .bind(u.password_self_service)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn user_update(tx: &mut Tx<'_>, u: &User) -> Result<(), Error> {
    sqlx::query(
        "UPDATE identity_user SET name = $1, enabled = $2, default_project_id = $3, password_hash = $4, \
         password_created_at = $5, extra = $6, options = $7, failed_auth_count = $8, failed_auth_at = $9, \
         password_self_service = $10 WHERE id = $11",
    )
    .bind(&u.name)
    .bind(u.enabled)
    .bind(&u.default_project_id)
    .bind(&u.password_hash)
    .bind(u.password_created_at)
    .bind(&u.extra)
    .bind(&u.options)
    .bind(u.failed_auth_count)
    .bind(u.failed_auth_at)
    .bind(u.password_self_service)
    .bind(&u.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The hashes of a user's previous passwords, newest first, at most `limit`.
pub async fn password_history<'e>(
    e: impl Exec<'e>,
    user_id: &str,
    limit: u32,
) -> Result<Vec<String>, Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT password_hash FROM password_history WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(i64::from(limit))
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Moves a replaced password hash into the history and keeps only the
/// newest `keep` entries of it.
pub async fn password_history_push(
    tx: &mut Tx<'_>,
    user_id: &str,
    replaced_hash: &str,
    replaced_at: i64,
    keep: u32,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO password_history (user_id, password_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(replaced_hash)
    .bind(replaced_at)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM password_history WHERE user_id = $1 AND password_hash NOT IN \
         (SELECT password_hash FROM password_history WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2)",
    )
    .bind(user_id)
    .bind(i64::from(keep))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failed password authentication (for lockout). Not a change of
/// identity data: it does not bump the revision.
pub async fn record_auth_failure(pool: &Pool, id: &str, now: i64) -> Result<(), Error> {
    sqlx::query(
        "UPDATE identity_user SET failed_auth_count = failed_auth_count + 1, failed_auth_at = $1 WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn reset_auth_failures(pool: &Pool, id: &str) -> Result<(), Error> {
    sqlx::query(
        "UPDATE identity_user SET failed_auth_count = 0, failed_auth_at = NULL WHERE id = $1 AND failed_auth_count <> 0",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes a user with its grants; memberships and application credentials
/// go by cascade.
pub async fn user_delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM assignment WHERE actor_type = 'user' AND actor_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM identity_user WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn group_get(pool: &Pool, id: &str) -> Result<Option<Group>, Error> {
    Ok(sqlx::query_as("SELECT * FROM identity_group WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

pub async fn group_list(pool: &Pool, filters: &[Filter]) -> Result<Vec<Group>, Error> {
    Ok(select("identity_group", filters, "name")
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

pub async fn group_insert(tx: &mut Tx<'_>, g: &Group) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO identity_group (id, name, domain_id, description, extra, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&g.id)
    .bind(&g.name)
    .bind(&g.domain_id)
    .bind(&g.description)
    .bind(&g.extra)
    .bind(store::now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn group_update(tx: &mut Tx<'_>, g: &Group) -> Result<(), Error> {
    sqlx::query("UPDATE identity_group SET name = $1, description = $2, extra = $3 WHERE id = $4")
        .bind(&g.name)
        .bind(&g.description)
        .bind(&g.extra)
        .bind(&g.id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn group_delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM assignment WHERE actor_type = 'group' AND actor_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM identity_group WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn member_add(tx: &mut Tx<'_>, group_id: &str, user_id: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO group_member (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(group_id)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Returns whether a membership was removed.
pub async fn member_remove(tx: &mut Tx<'_>, group_id: &str, user_id: &str) -> Result<bool, Error> {
    let r = sqlx::query("DELETE FROM group_member WHERE group_id = $1 AND user_id = $2")
        .bind(group_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn is_member(pool: &Pool, group_id: &str, user_id: &str) -> Result<bool, Error> {
    let r: Option<(String,)> =
        sqlx::query_as("SELECT group_id FROM group_member WHERE group_id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    Ok(r.is_some())
}

pub async fn groups_of_user(pool: &Pool, user_id: &str) -> Result<Vec<Group>, Error> {
    Ok(sqlx::query_as(
        "SELECT g.* FROM identity_group g JOIN group_member m ON m.group_id = g.id WHERE m.user_id = $1 ORDER BY g.name",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?)
}

pub async fn users_in_group(pool: &Pool, group_id: &str) -> Result<Vec<User>, Error> {
    Ok(sqlx::query_as(
        "SELECT u.* FROM identity_user u JOIN group_member m ON m.user_id = u.id WHERE m.group_id = $1 ORDER BY u.name",
    )
    .bind(group_id)
    .fetch_all(pool)
    .await?)
}
