//! Roles, implied roles and role assignments (grants).

use sqlx::FromRow;
use store::{Pool, Tx};

use super::{select, Error, Exec, Filter};

#[derive(Debug, Clone, FromRow)]
pub struct Role {
    pub id: String,
    pub name: String,
    /// `''` for a global role.
    pub domain_id: String,
    pub description: String,
    pub extra: String,
    pub options: String,
}

/// One grant of a role to a user or group on a project, domain or the system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, FromRow)]
pub struct Assignment {
    /// `user` or `group`.
    pub actor_type: String,
    pub actor_id: String,
    /// `project`, `domain` or `system` (target_id `all`).
    pub target_type: String,
    pub target_id: String,
    pub role_id: String,
    pub inherited: bool,
}

pub async fn role_get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Role>, Error> {
    Ok(sqlx::query_as("SELECT * FROM role WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn role_by_name(pool: &Pool, name: &str) -> Result<Option<Role>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM role WHERE name = $1 AND domain_id = ''")
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn role_list(pool: &Pool, filters: &[Filter]) -> Result<Vec<Role>, Error> {
    Ok(select("role", filters, "name")
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

pub async fn role_insert(tx: &mut Tx<'_>, r: &Role) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO role (id, name, domain_id, description, extra, options, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(&r.domain_id)
    .bind(&r.description)
    .bind(&r.extra)
    .bind(&r.options)
    .bind(store::now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn role_update(tx: &mut Tx<'_>, r: &Role) -> Result<(), Error> {
    sqlx::query(
        "UPDATE role SET name = $1, description = $2, extra = $3, options = $4 WHERE id = $5",
    )
    .bind(&r.name)
    .bind(&r.description)
    .bind(&r.extra)
    .bind(&r.options)
    .bind(&r.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a role; its grants and implications go by cascade.
pub async fn role_delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM role WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Every implication `(prior, implied)`.
pub async fn implied_all<'e>(e: impl Exec<'e>) -> Result<Vec<(String, String)>, Error> {
    Ok(sqlx::query_as("SELECT prior_role_id, implied_role_id FROM implied_role ORDER BY prior_role_id, implied_role_id")
        .fetch_all(e)
        .await?)
}

pub async fn implied_add(tx: &mut Tx<'_>, prior: &str, implied: &str) -> Result<(), Error> {
    sqlx::query("INSERT INTO implied_role (prior_role_id, implied_role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(prior)
        .bind(implied)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn implied_remove(tx: &mut Tx<'_>, prior: &str, implied: &str) -> Result<bool, Error> {
    let r =
        sqlx::query("DELETE FROM implied_role WHERE prior_role_id = $1 AND implied_role_id = $2")
            .bind(prior)
            .bind(implied)
            .execute(&mut **tx)
            .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn grant(tx: &mut Tx<'_>, a: &Assignment) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO assignment (actor_type, actor_id, target_type, target_id, role_id, inherited) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&a.actor_type)
    .bind(&a.actor_id)
    .bind(&a.target_type)
    .bind(&a.target_id)
    .bind(&a.role_id)
    .bind(a.inherited)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Returns whether the grant existed.
pub async fn revoke(tx: &mut Tx<'_>, a: &Assignment) -> Result<bool, Error> {
    let r = sqlx::query(
        "DELETE FROM assignment WHERE actor_type = $1 AND actor_id = $2 AND target_type = $3 \
         AND target_id = $4 AND role_id = $5 AND inherited = $6",
    )
    .bind(&a.actor_type)
    .bind(&a.actor_id)
    .bind(&a.target_type)
    .bind(&a.target_id)
    .bind(&a.role_id)
    .bind(a.inherited)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn exists(pool: &Pool, a: &Assignment) -> Result<bool, Error> {
    let r: Option<(String,)> = sqlx::query_as(
        "SELECT role_id FROM assignment WHERE actor_type = $1 AND actor_id = $2 AND target_type = $3 \
         AND target_id = $4 AND role_id = $5 AND inherited = $6",
    )
    .bind(&a.actor_type)
    .bind(&a.actor_id)
    .bind(&a.target_type)
    .bind(&a.target_id)
    .bind(&a.role_id)
    .bind(a.inherited)
    .fetch_optional(pool)
    .await?;
    Ok(r.is_some())
}

/// Every grant, for the role-assignment list (filtered in the app layer) and
/// for computing effective roles.
pub async fn all(pool: &Pool) -> Result<Vec<Assignment>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM assignment ORDER BY actor_type, actor_id, target_type, target_id, role_id",
    )
    .fetch_all(pool)
    .await?)
}

/// The grants held directly by one actor or by the groups of a user.
pub async fn for_user(pool: &Pool, user_id: &str) -> Result<Vec<Assignment>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM assignment WHERE (actor_type = 'user' AND actor_id = $1) \
         OR (actor_type = 'group' AND actor_id IN (SELECT group_id FROM group_member WHERE user_id = $1))",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?)
}

/// The grants of one actor on one target.
pub async fn for_actor_target(
    pool: &Pool,
    actor_type: &str,
    actor_id: &str,
    target_type: &str,
    target_id: &str,
    inherited: bool,
) -> Result<Vec<Assignment>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM assignment WHERE actor_type = $1 AND actor_id = $2 AND target_type = $3 AND target_id = $4 AND inherited = $5",
    )
    .bind(actor_type)
    .bind(actor_id)
    .bind(target_type)
    .bind(target_id)
    .bind(inherited)
    .fetch_all(pool)
    .await?)
}
