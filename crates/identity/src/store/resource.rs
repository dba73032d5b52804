//! Domains and projects (with their tags).

use sqlx::FromRow;
use store::{Pool, Tx};

use super::{select, Error, Exec, Filter};

#[derive(Debug, Clone, FromRow)]
pub struct Domain {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub extra: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub parent_id: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub extra: String,
}

pub async fn domain_get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Domain>, Error> {
    Ok(sqlx::query_as("SELECT * FROM domain WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn domain_by_name(pool: &Pool, name: &str) -> Result<Option<Domain>, Error> {
    Ok(sqlx::query_as("SELECT * FROM domain WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?)
}

pub async fn domain_list(pool: &Pool, filters: &[Filter]) -> Result<Vec<Domain>, Error> {
    Ok(select("domain", filters, "name")
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

pub async fn domain_insert(tx: &mut Tx<'_>, d: &Domain) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO domain (id, name, description, enabled, extra, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&d.id)
    .bind(&d.name)
    .bind(&d.description)
    .bind(d.enabled)
    .bind(&d.extra)
    .bind(store::now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn domain_update(tx: &mut Tx<'_>, d: &Domain) -> Result<(), Error> {
    sqlx::query(
        "UPDATE domain SET name = $1, description = $2, enabled = $3, extra = $4 WHERE id = $5",
    )
    .bind(&d.name)
    .bind(&d.description)
    .bind(d.enabled)
    .bind(&d.extra)
    .bind(&d.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a domain and everything owned by it: its projects, users and
/// groups, and every grant on or by them.
pub async fn domain_delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    let projects: Vec<(String,)> = sqlx::query_as("SELECT id FROM project WHERE domain_id = $1")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    // Children before parents: delete in reverse creation depth by clearing
    // parent links first.
    sqlx::query("UPDATE project SET parent_id = NULL WHERE domain_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    for (pid,) in &projects {
        project_delete(tx, pid).await?;
    }
    let users: Vec<(String,)> = sqlx::query_as("SELECT id FROM identity_user WHERE domain_id = $1")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    for (uid,) in &users {
        super::user::user_delete(tx, uid).await?;
    }
    let groups: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM identity_group WHERE domain_id = $1")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    for (gid,) in &groups {
        super::user::group_delete(tx, gid).await?;
    }
    sqlx::query("DELETE FROM role WHERE domain_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM assignment WHERE target_type = 'domain' AND target_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM domain WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn project_get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Project>, Error> {
    Ok(sqlx::query_as("SELECT * FROM project WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn project_by_name(
    pool: &Pool,
    domain_id: &str,
    name: &str,
) -> Result<Option<Project>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM project WHERE domain_id = $1 AND name = $2")
            .bind(domain_id)
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn project_list(pool: &Pool, filters: &[Filter]) -> Result<Vec<Project>, Error> {
    Ok(select("project", filters, "name")
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

pub async fn project_insert(tx: &mut Tx<'_>, p: &Project) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO project (id, name, domain_id, parent_id, description, enabled, extra, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&p.id)
    .bind(&p.name)
    .bind(&p.domain_id)
    .bind(&p.parent_id)
    .bind(&p.description)
    .bind(p.enabled)
    .bind(&p.extra)
    .bind(store::now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn project_update(tx: &mut Tx<'_>, p: &Project) -> Result<(), Error> {
    sqlx::query(
        "UPDATE project SET name = $1, description = $2, enabled = $3, extra = $4 WHERE id = $5",
    )
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.enabled)
    .bind(&p.extra)
    .bind(&p.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a project with its tags, grants and application credentials.
pub async fn project_delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM assignment WHERE target_type = 'project' AND target_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM project WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn project_has_children(pool: &Pool, id: &str) -> Result<bool, Error> {
    let r: Option<(String,)> =
        sqlx::query_as("SELECT id FROM project WHERE parent_id = $1 LIMIT 1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(r.is_some())
}

/// Tags of a project or domain (`table` is `project_tag` or `domain_tag`).
pub async fn tags(
    pool: &Pool,
    table: &str,
    owner_col: &str,
    id: &str,
) -> Result<Vec<String>, Error> {
    let rows: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT name FROM {table} WHERE {owner_col} = $1 ORDER BY name"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn set_tags(
    tx: &mut Tx<'_>,
    table: &str,
    owner_col: &str,
    id: &str,
    tags: &[String],
) -> Result<(), Error> {
    sqlx::query(&format!("DELETE FROM {table} WHERE {owner_col} = $1"))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    for t in tags {
        sqlx::query(&format!(
            "INSERT INTO {table} ({owner_col}, name) VALUES ($1, $2)"
        ))
        .bind(id)
        .bind(t)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// All project tags, for list filtering without one query per project.
pub async fn all_project_tags(pool: &Pool) -> Result<Vec<(String, String)>, Error> {
    Ok(sqlx::query_as("SELECT project_id, name FROM project_tag")
        .fetch_all(pool)
        .await?)
}
