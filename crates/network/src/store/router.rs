//! Routers. Their legs are ports (`device_id` = router id, `device_owner`
//! `network:router_interface` or `network:router_gateway`).

use super::{Error, Exec};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Router {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub status: String,
    pub gw_port_id: Option<String>,
    pub enable_snat: bool,
    /// JSON `[{"destination", "nexthop"}]`.
    pub routes: String,
    pub availability_zone_hints: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revision_number: i64,
}

pub async fn get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Router>, Error> {
    Ok(sqlx::query_as("SELECT * FROM router WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn list<'e>(e: impl Exec<'e>) -> Result<Vec<Router>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM router ORDER BY created_at, id")
            .fetch_all(e)
            .await?,
    )
}

pub async fn insert<'e>(e: impl Exec<'e>, r: &Router) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO router (id, project_id, name, description, admin_state_up, status, \
         gw_port_id, enable_snat, routes, availability_zone_hints, created_at, updated_at, \
         revision_number) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&r.id)
    .bind(&r.project_id)
    .bind(&r.name)
    .bind(&r.description)
    .bind(r.admin_state_up)
    .bind(&r.status)
    .bind(&r.gw_port_id)
    .bind(r.enable_snat)
    .bind(&r.routes)
    .bind(&r.availability_zone_hints)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(r.revision_number)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn update<'e>(e: impl Exec<'e>, r: &Router) -> Result<(), Error> {
    sqlx::query(
        "UPDATE router SET name = $1, description = $2, admin_state_up = $3, status = $4, \
         gw_port_id = $5, enable_snat = $6, routes = $7, availability_zone_hints = $8, \
         updated_at = $9, revision_number = $10 WHERE id = $11",
    )
    .bind(&r.name)
    .bind(&r.description)
    .bind(r.admin_state_up)
    .bind(&r.status)
    .bind(&r.gw_port_id)
    .bind(r.enable_snat)
    .bind(&r.routes)
    .bind(&r.availability_zone_hints)
    .bind(r.updated_at)
    .bind(r.revision_number)
    .bind(&r.id)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn delete<'e>(e: impl Exec<'e>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM router WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}
