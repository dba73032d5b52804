//! Security groups, their rules and each project's default group.

use super::{Error, Exec};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SecurityGroup {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revision_number: i64,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Rule {
    pub id: String,
    pub security_group_id: String,
    pub project_id: String,
    pub direction: String,
    pub ethertype: String,
    pub protocol: Option<String>,
    pub port_range_min: Option<i64>,
    pub port_range_max: Option<i64>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: String,
    pub fingerprint: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revision_number: i64,
}

pub async fn get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<SecurityGroup>, Error> {
    Ok(sqlx::query_as("SELECT * FROM security_group WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn list<'e>(e: impl Exec<'e>) -> Result<Vec<SecurityGroup>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM security_group ORDER BY created_at, id")
            .fetch_all(e)
            .await?,
    )
}

pub async fn insert<'e>(e: impl Exec<'e>, g: &SecurityGroup) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO security_group (id, project_id, name, description, created_at, updated_at, \
         revision_number) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&g.id)
    .bind(&g.project_id)
    .bind(&g.name)
    .bind(&g.description)
    .bind(g.created_at)
    .bind(g.updated_at)
    .bind(g.revision_number)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn update<'e>(e: impl Exec<'e>, g: &SecurityGroup) -> Result<(), Error> {
    sqlx::query(
        "UPDATE security_group SET name = $1, description = $2, updated_at = $3, \
         revision_number = $4 WHERE id = $5",
    )
    .bind(&g.name)
    .bind(&g.description)
    .bind(g.updated_at)
    .bind(g.revision_number)
    .bind(&g.id)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn delete<'e>(e: impl Exec<'e>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM security_group WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

/// The default group of a project, if it has one.
pub async fn default_of<'e>(e: impl Exec<'e>, project_id: &str) -> Result<Option<String>, Error> {
    let r: Option<(String,)> = sqlx::query_as(
        "SELECT security_group_id FROM default_security_group WHERE project_id = $1",
    )
    .bind(project_id)
    .fetch_optional(e)
    .await?;
    Ok(r.map(|r| r.0))
}

/// Every (project, default group) pair.
pub async fn defaults<'e>(e: impl Exec<'e>) -> Result<Vec<(String, String)>, Error> {
    Ok(
        sqlx::query_as("SELECT project_id, security_group_id FROM default_security_group")
            .fetch_all(e)
            .await?,
    )
}

pub async fn set_default<'e>(e: impl Exec<'e>, project_id: &str, sg: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO default_security_group (project_id, security_group_id) VALUES ($1, $2)",
    )
    .bind(project_id)
    .bind(sg)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn rule_get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Rule>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM security_group_rule WHERE id = $1")
            .bind(id)
            .fetch_optional(e)
            .await?,
    )
}

pub async fn rules<'e>(e: impl Exec<'e>) -> Result<Vec<Rule>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM security_group_rule ORDER BY created_at, id")
            .fetch_all(e)
            .await?,
    )
}

pub async fn rules_of<'e>(e: impl Exec<'e>, sg: &str) -> Result<Vec<Rule>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM security_group_rule WHERE security_group_id = $1 ORDER BY created_at, id",
    )
    .bind(sg)
    .fetch_all(e)
    .await?)
}

pub async fn rule_by_fingerprint<'e>(e: impl Exec<'e>, fp: &str) -> Result<Option<Rule>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM security_group_rule WHERE fingerprint = $1")
            .bind(fp)
            .fetch_optional(e)
            .await?,
    )
}

pub async fn rule_insert<'e>(e: impl Exec<'e>, r: &Rule) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO security_group_rule (id, security_group_id, project_id, direction, \
         ethertype, protocol, port_range_min, port_range_max, remote_ip_prefix, remote_group_id, \
         description, fingerprint, created_at, updated_at, revision_number) VALUES ($1, $2, $3, \
         $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&r.id)
    .bind(&r.security_group_id)
    .bind(&r.project_id)
    .bind(&r.direction)
    .bind(&r.ethertype)
    .bind(&r.protocol)
    .bind(r.port_range_min)
    .bind(r.port_range_max)
    .bind(&r.remote_ip_prefix)
    .bind(&r.remote_group_id)
    .bind(&r.description)
    .bind(&r.fingerprint)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(r.revision_number)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn rule_update<'e>(e: impl Exec<'e>, r: &Rule) -> Result<(), Error> {
    sqlx::query(
        "UPDATE security_group_rule SET description = $1, updated_at = $2, revision_number = $3 \
         WHERE id = $4",
    )
    .bind(&r.description)
    .bind(r.updated_at)
    .bind(r.revision_number)
    .bind(&r.id)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn rule_delete<'e>(e: impl Exec<'e>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM security_group_rule WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

/// Rules owned by a project (for the rule quota).
pub async fn count_rules_of_project<'e>(e: impl Exec<'e>, project_id: &str) -> Result<i64, Error> {
    let r: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM security_group_rule WHERE project_id = $1")
            .bind(project_id)
            .fetch_one(e)
            .await?;
    Ok(r.0)
}
