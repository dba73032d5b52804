//! Subnets.

use super::{Error, Exec};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Subnet {
    pub id: String,
    pub network_id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub ip_version: i64,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub enable_dhcp: bool,
    pub ipv6_ra_mode: Option<String>,
    pub ipv6_address_mode: Option<String>,
    /// JSON `[{"start", "end"}]`.
    pub allocation_pools: String,
    /// JSON `["8.8.8.8"]`.
    pub dns_nameservers: String,
    /// JSON `[{"destination", "nexthop"}]`.
    pub host_routes: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revision_number: i64,
}

pub async fn get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Subnet>, Error> {
    Ok(sqlx::query_as("SELECT * FROM subnet WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn list<'e>(e: impl Exec<'e>) -> Result<Vec<Subnet>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM subnet ORDER BY created_at, id")
            .fetch_all(e)
            .await?,
    )
}

pub async fn by_network<'e>(e: impl Exec<'e>, network_id: &str) -> Result<Vec<Subnet>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM subnet WHERE network_id = $1 ORDER BY created_at, id")
            .bind(network_id)
            .fetch_all(e)
            .await?,
    )
}

pub async fn insert<'e>(e: impl Exec<'e>, s: &Subnet) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO subnet (id, network_id, project_id, name, description, ip_version, cidr, \
         gateway_ip, enable_dhcp, ipv6_ra_mode, ipv6_address_mode, allocation_pools, \
         dns_nameservers, host_routes, created_at, updated_at, revision_number) VALUES ($1, $2, \
         $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&s.id)
    .bind(&s.network_id)
    .bind(&s.project_id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(s.ip_version)
    .bind(&s.cidr)
    .bind(&s.gateway_ip)
    .bind(s.enable_dhcp)
    .bind(&s.ipv6_ra_mode)
    .bind(&s.ipv6_address_mode)
    .bind(&s.allocation_pools)
    .bind(&s.dns_nameservers)
    .bind(&s.host_routes)
    .bind(s.created_at)
    .bind(s.updated_at)
    .bind(s.revision_number)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn update<'e>(e: impl Exec<'e>, s: &Subnet) -> Result<(), Error> {
    sqlx::query(
        "UPDATE subnet SET name = $1, description = $2, gateway_ip = $3, enable_dhcp = $4, \
         allocation_pools = $5, dns_nameservers = $6, host_routes = $7, updated_at = $8, \
         revision_number = $9 WHERE id = $10",
    )
    .bind(&s.name)
    .bind(&s.description)
    .bind(&s.gateway_ip)
    .bind(s.enable_dhcp)
    .bind(&s.allocation_pools)
    .bind(&s.dns_nameservers)
    .bind(&s.host_routes)
    .bind(s.updated_at)
    .bind(s.revision_number)
    .bind(&s.id)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn delete<'e>(e: impl Exec<'e>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM subnet WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}
