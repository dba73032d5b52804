//! Floating IPs. Each holds its address through a port on the external
//! network (`device_owner` `network:floatingip`, `device_id` = its id).

use super::{Error, Exec};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FloatingIp {
    pub id: String,
    pub project_id: String,
    pub floating_network_id: String,
    pub floating_port_id: String,
    pub floating_ip_address: String,
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<String>,
    pub router_id: Option<String>,
    pub status: String,
    pub description: String,
    pub dns_name: String,
    pub dns_domain: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revision_number: i64,
}

pub async fn get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<FloatingIp>, Error> {
    Ok(sqlx::query_as("SELECT * FROM floatingip WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn list<'e>(e: impl Exec<'e>) -> Result<Vec<FloatingIp>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM floatingip ORDER BY created_at, id")
            .fetch_all(e)
            .await?,
    )
}

/// The ports floating IPs are associated with, in one query (a list of
/// floating IPs shows each one's port details).
pub async fn associated_ports<'e>(e: impl Exec<'e>) -> Result<Vec<super::port::Port>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM port WHERE id IN \
         (SELECT port_id FROM floatingip WHERE port_id IS NOT NULL)",
    )
    .fetch_all(e)
    .await?)
}

pub async fn by_port<'e>(e: impl Exec<'e>, port_id: &str) -> Result<Vec<FloatingIp>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM floatingip WHERE port_id = $1 ORDER BY created_at, id")
            .bind(port_id)
            .fetch_all(e)
            .await?,
    )
}

pub async fn by_router<'e>(e: impl Exec<'e>, router_id: &str) -> Result<Vec<FloatingIp>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM floatingip WHERE router_id = $1 ORDER BY created_at, id")
            .bind(router_id)
            .fetch_all(e)
            .await?,
    )
}

/// The floating IPs allocated from a network.
pub async fn by_network<'e>(e: impl Exec<'e>, network_id: &str) -> Result<Vec<FloatingIp>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM floatingip WHERE floating_network_id = $1 ORDER BY created_at, id",
    )
    .bind(network_id)
    .fetch_all(e)
    .await?)
}

pub async fn insert<'e>(e: impl Exec<'e>, f: &FloatingIp) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO floatingip (id, project_id, floating_network_id, floating_port_id, \
         floating_ip_address, port_id, fixed_ip_address, router_id, status, description, \
         dns_name, dns_domain, created_at, updated_at, revision_number) VALUES ($1, $2, $3, $4, \
         $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&f.id)
    .bind(&f.project_id)
    .bind(&f.floating_network_id)
    .bind(&f.floating_port_id)
    .bind(&f.floating_ip_address)
    .bind(&f.port_id)
    .bind(&f.fixed_ip_address)
    .bind(&f.router_id)
    .bind(&f.status)
    .bind(&f.description)
    .bind(&f.dns_name)
    .bind(&f.dns_domain)
    .bind(f.created_at)
    .bind(f.updated_at)
    .bind(f.revision_number)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn update<'e>(e: impl Exec<'e>, f: &FloatingIp) -> Result<(), Error> {
    sqlx::query(
        "UPDATE floatingip SET port_id = $1, fixed_ip_address = $2, router_id = $3, status = $4, \
         description = $5, updated_at = $6, revision_number = $7 WHERE id = $8",
    )
    .bind(&f.port_id)
    .bind(&f.fixed_ip_address)
    .bind(&f.router_id)
    .bind(&f.status)
    .bind(&f.description)
    .bind(f.updated_at)
    .bind(f.revision_number)
    .bind(&f.id)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn delete<'e>(e: impl Exec<'e>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM floatingip WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}
