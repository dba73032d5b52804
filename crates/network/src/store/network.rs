//! Networks.

use super::{Error, Exec};

/// A network row. List-valued attributes are JSON text.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Network {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub status: String,
    pub shared: bool,
    pub external: bool,
    pub mtu: i64,
    pub network_type: String,
    pub physical_network: Option<String>,
    pub segmentation_id: Option<i64>,
    pub segment_key: Option<String>,
    pub port_security_enabled: bool,
    pub dns_domain: String,
    pub availability_zone_hints: String,
    pub conntrack_zone: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub revision_number: i64,
}

pub async fn get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Network>, Error> {
    Ok(sqlx::query_as("SELECT * FROM network WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn list<'e>(e: impl Exec<'e>) -> Result<Vec<Network>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM network ORDER BY created_at, id")
            .fetch_all(e)
            .await?,
    )
}

pub async fn insert<'e>(e: impl Exec<'e>, n: &Network) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO network (id, project_id, name, description, admin_state_up, status, shared, \
         external, mtu, network_type, physical_network, segmentation_id, segment_key, \
         port_security_enabled, dns_domain, availability_zone_hints, conntrack_zone, created_at, \
         updated_at, revision_number) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
         $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(&n.id)
    .bind(&n.project_id)
    .bind(&n.name)
    .bind(&n.description)
    .bind(n.admin_state_up)
    .bind(&n.status)
    .bind(n.shared)
    .bind(n.external)
    .bind(n.mtu)
    .bind(&n.network_type)
    .bind(&n.physical_network)
    .bind(n.segmentation_id)
    .bind(&n.segment_key)
    .bind(n.port_security_enabled)
    .bind(&n.dns_domain)
    .bind(&n.availability_zone_hints)
    .bind(n.conntrack_zone)
    .bind(n.created_at)
    .bind(n.updated_at)
    .bind(n.revision_number)
    .execute(e)
    .await?;
    Ok(())
}

/// Writes the mutable attributes back.
pub async fn update<'e>(e: impl Exec<'e>, n: &Network) -> Result<(), Error> {
    sqlx::query(
        "UPDATE network SET name = $1, description = $2, admin_state_up = $3, shared = $4, \
         external = $5, mtu = $6, port_security_enabled = $7, dns_domain = $8, \
         availability_zone_hints = $9, updated_at = $10, revision_number = $11 WHERE id = $12",
    )
    .bind(&n.name)
    .bind(&n.description)
    .bind(n.admin_state_up)
    .bind(n.shared)
    .bind(n.external)
    .bind(n.mtu)
    .bind(n.port_security_enabled)
    .bind(&n.dns_domain)
    .bind(&n.availability_zone_hints)
    .bind(n.updated_at)
    .bind(n.revision_number)
    .bind(&n.id)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn delete<'e>(e: impl Exec<'e>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM network WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

/// Segmentation ids of `network_type` in use, ascending.
pub async fn segmentation_ids<'e>(e: impl Exec<'e>, network_type: &str) -> Result<Vec<i64>, Error> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT segmentation_id FROM network WHERE network_type = $1 AND segmentation_id IS NOT NULL ORDER BY segmentation_id",
    )
    .bind(network_type)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Conntrack zones in use, ascending.
pub async fn conntrack_zones<'e>(e: impl Exec<'e>) -> Result<Vec<i64>, Error> {
    let rows: Vec<(i64,)> =
        sqlx::query_as("SELECT conntrack_zone FROM network ORDER BY conntrack_zone")
            .fetch_all(e)
            .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Whether a segment key is taken.
pub async fn segment_taken<'e>(e: impl Exec<'e>, key: &str) -> Result<bool, Error> {
    let r: Option<(String,)> = sqlx::query_as("SELECT id FROM network WHERE segment_key = $1")
        .bind(key)
        .fetch_optional(e)
        .await?;
    Ok(r.is_some())
}
