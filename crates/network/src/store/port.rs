//! Ports, their fixed IPs (`ip_allocation`) and security-group bindings.

use sqlx::QueryBuilder;

use super::{Error, Exec};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    pub project_id: String,
    pub name: String,
    pub description: String,
    pub mac_address: String,
    pub admin_state_up: bool,
    pub status: String,
    pub device_owner: String,
    pub device_id: String,
    /// `binding:host_id`; empty when unbound.
    pub host_id: String,
    pub vnic_type: String,
    /// JSON object.
    pub binding_profile: String,
    pub port_security_enabled: bool,
    /// JSON `[{"ip_address", "mac_address"}]`.
    pub allowed_address_pairs: String,
    pub dns_name: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub revision_number: i64,
}

/// A fixed IP.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Allocation {
    pub port_id: String,
    pub subnet_id: String,
    pub network_id: String,
    pub ip_address: String,
}

/// Which ports to load; `None` fields do not restrict.
#[derive(Debug, Clone, Default)]
pub struct Select<'a> {
    pub id: Option<&'a str>,
    pub network_id: Option<&'a str>,
    pub device_id: Option<&'a str>,
    pub host_id: Option<&'a str>,
    pub device_owner: Option<&'a str>,
}

pub async fn select<'e>(e: impl Exec<'e>, s: &Select<'_>) -> Result<Vec<Port>, Error> {
    let mut qb = QueryBuilder::new("SELECT * FROM port WHERE 1=1");
    for (col, v) in [
        ("id", s.id),
        ("network_id", s.network_id),
        ("device_id", s.device_id),
        ("host_id", s.host_id),
        ("device_owner", s.device_owner),
    ] {
        if let Some(v) = v {
            qb.push(format!(" AND {col} = "));
            qb.push_bind(v);
        }
    }
    qb.push(" ORDER BY created_at, id");
    Ok(qb.build_query_as().fetch_all(e).await?)
}

pub async fn get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Port>, Error> {
    Ok(sqlx::query_as("SELECT * FROM port WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn insert<'e>(e: impl Exec<'e>, p: &Port) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO port (id, network_id, project_id, name, description, mac_address, \
         admin_state_up, status, device_owner, device_id, host_id, vnic_type, binding_profile, \
         port_security_enabled, allowed_address_pairs, dns_name, created_at, updated_at, \
         revision_number) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
         $15, $16, $17, $18, $19)",
    )
    .bind(&p.id)
    .bind(&p.network_id)
    .bind(&p.project_id)
    .bind(&p.name)
    .bind(&p.description)
    .bind(&p.mac_address)
    .bind(p.admin_state_up)
    .bind(&p.status)
    .bind(&p.device_owner)
    .bind(&p.device_id)
    .bind(&p.host_id)
    .bind(&p.vnic_type)
    .bind(&p.binding_profile)
    .bind(p.port_security_enabled)
    .bind(&p.allowed_address_pairs)
    .bind(&p.dns_name)
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(p.revision_number)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn update<'e>(e: impl Exec<'e>, p: &Port) -> Result<(), Error> {
    sqlx::query(
        "UPDATE port SET name = $1, description = $2, mac_address = $3, admin_state_up = $4, \
         status = $5, device_owner = $6, device_id = $7, host_id = $8, vnic_type = $9, \
         binding_profile = $10, port_security_enabled = $11, allowed_address_pairs = $12, \
         dns_name = $13, updated_at = $14, revision_number = $15 WHERE id = $16",
    )
    .bind(&p.name)
    .bind(&p.description)
    .bind(&p.mac_address)
    .bind(p.admin_state_up)
    .bind(&p.status)
    .bind(&p.device_owner)
    .bind(&p.device_id)
    .bind(&p.host_id)
    .bind(&p.vnic_type)
    .bind(&p.binding_profile)
    .bind(p.port_security_enabled)
    .bind(&p.allowed_address_pairs)
    .bind(&p.dns_name)
    .bind(p.updated_at)
    .bind(p.revision_number)
    .bind(&p.id)
    .execute(e)
    .await?;
    Ok(())
}

/// Sets a port's status when it differs; returns whether it changed.
pub async fn set_status<'e>(
    e: impl Exec<'e>,
    id: &str,
    host: &str,
    status: &str,
    now: i64,
) -> Result<bool, Error> {
    let r = sqlx::query(
        "UPDATE port SET status = $1, updated_at = $2, revision_number = revision_number + 1 \
         WHERE id = $3 AND host_id = $4 AND status <> $1",
    )
    .bind(status)
    .bind(now)
    .bind(id)
    .bind(host)
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

pub async fn delete<'e>(e: impl Exec<'e>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM port WHERE id = $1")
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

/// Whether a MAC is in use on a network.
pub async fn mac_taken<'e>(e: impl Exec<'e>, network_id: &str, mac: &str) -> Result<bool, Error> {
    let r: Option<(String,)> =
        sqlx::query_as("SELECT id FROM port WHERE network_id = $1 AND mac_address = $2")
            .bind(network_id)
            .bind(mac)
            .fetch_optional(e)
            .await?;
    Ok(r.is_some())
}

/// Every allocation (for list views, grouped by the caller).
pub async fn allocations<'e>(e: impl Exec<'e>) -> Result<Vec<Allocation>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM ip_allocation ORDER BY port_id, ip_address")
            .fetch_all(e)
            .await?,
    )
}

pub async fn allocations_of_port<'e>(
    e: impl Exec<'e>,
    port_id: &str,
) -> Result<Vec<Allocation>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM ip_allocation WHERE port_id = $1 ORDER BY port_id, ip_address",
    )
    .bind(port_id)
    .fetch_all(e)
    .await?)
}

pub async fn allocations_of_network<'e>(
    e: impl Exec<'e>,
    network_id: &str,
) -> Result<Vec<Allocation>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM ip_allocation WHERE network_id = $1 ORDER BY port_id, ip_address",
    )
    .bind(network_id)
    .fetch_all(e)
    .await?)
}

pub async fn allocations_of_subnet<'e>(
    e: impl Exec<'e>,
    subnet_id: &str,
) -> Result<Vec<Allocation>, Error> {
    Ok(sqlx::query_as(
        "SELECT * FROM ip_allocation WHERE subnet_id = $1 ORDER BY port_id, ip_address",
    )
    .bind(subnet_id)
    .fetch_all(e)
    .await?)
}

/// The allocation holding an address on a network.
pub async fn allocation_by_ip<'e>(
    e: impl Exec<'e>,
    network_id: &str,
    ip: &str,
) -> Result<Option<Allocation>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM ip_allocation WHERE network_id = $1 AND ip_address = $2")
            .bind(network_id)
            .bind(ip)
            .fetch_optional(e)
            .await?,
    )
}

/// Records a fixed IP; `key` is its [`crate::app::addr::sort_key`].
pub async fn allocate<'e>(e: impl Exec<'e>, a: &Allocation, key: &str) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO ip_allocation (port_id, subnet_id, network_id, ip_address, ip_key) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&a.port_id)
    .bind(&a.subnet_id)
    .bind(&a.network_id)
    .bind(&a.ip_address)
    .bind(key)
    .execute(e)
    .await?;
    Ok(())
}

/// How many addresses of `subnet_id` are allocated with keys in
/// `lo..=hi`.
pub async fn count_allocated<'e>(
    e: impl Exec<'e>,
    subnet_id: &str,
    lo: &str,
    hi: &str,
) -> Result<u64, Error> {
    let r: (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM ip_allocation WHERE subnet_id = $1 AND ip_key >= $2 AND ip_key <= $3",
    )
    .bind(subnet_id)
    .bind(lo)
    .bind(hi)
    .fetch_one(e)
    .await?;
    Ok(r.0 as u64)
}

/// Allocations written before `ip_key` existed.
pub async fn allocations_without_key<'e>(e: impl Exec<'e>) -> Result<Vec<Allocation>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM ip_allocation WHERE ip_key IS NULL")
            .fetch_all(e)
            .await?,
    )
}

pub async fn set_key<'e>(e: impl Exec<'e>, a: &Allocation, key: &str) -> Result<(), Error> {
    sqlx::query("UPDATE ip_allocation SET ip_key = $1 WHERE network_id = $2 AND ip_address = $3")
        .bind(key)
        .bind(&a.network_id)
        .bind(&a.ip_address)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn release<'e>(e: impl Exec<'e>, port_id: &str, ip: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM ip_allocation WHERE port_id = $1 AND ip_address = $2")
        .bind(port_id)
        .bind(ip)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn release_subnet<'e>(e: impl Exec<'e>, subnet_id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM ip_allocation WHERE subnet_id = $1")
        .bind(subnet_id)
        .execute(e)
        .await?;
    Ok(())
}

/// Every (port, security group) binding.
pub async fn security_group_bindings<'e>(e: impl Exec<'e>) -> Result<Vec<(String, String)>, Error> {
    Ok(sqlx::query_as(
        "SELECT port_id, security_group_id FROM port_security_group ORDER BY port_id, security_group_id",
    )
    .fetch_all(e)
    .await?)
}

pub async fn security_groups_of<'e>(e: impl Exec<'e>, port_id: &str) -> Result<Vec<String>, Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT security_group_id FROM port_security_group WHERE port_id = $1 ORDER BY security_group_id",
    )
    .bind(port_id)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn clear_security_groups<'e>(e: impl Exec<'e>, port_id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM port_security_group WHERE port_id = $1")
        .bind(port_id)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn add_security_group<'e>(
    e: impl Exec<'e>,
    port_id: &str,
    sg: &str,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO port_security_group (port_id, security_group_id) VALUES ($1, $2)")
        .bind(port_id)
        .bind(sg)
        .execute(e)
        .await?;
    Ok(())
}

/// Ports bound to a security group (for in-use checks).
pub async fn count_in_security_group<'e>(e: impl Exec<'e>, sg: &str) -> Result<i64, Error> {
    let r: (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM port_security_group WHERE security_group_id = $1")
            .bind(sg)
            .fetch_one(e)
            .await?;
    Ok(r.0)
}

/// The ports with these ids.
pub async fn with_ids(c: &mut sqlx::SqliteConnection, ids: &[String]) -> Result<Vec<Port>, Error> {
    super::select_in(c, "SELECT * FROM port", "id", "created_at, id", ids).await
}

/// The fixed IPs of these ports.
pub async fn allocations_of_ports(
    c: &mut sqlx::SqliteConnection,
    ids: &[String],
) -> Result<Vec<Allocation>, Error> {
    super::select_in(
        c,
        "SELECT * FROM ip_allocation",
        "port_id",
        "port_id, ip_address",
        ids,
    )
    .await
}

/// The (port, security group) bindings of these ports.
pub async fn security_group_bindings_of(
    c: &mut sqlx::SqliteConnection,
    ids: &[String],
) -> Result<Vec<(String, String)>, Error> {
    super::select_in(
        c,
        "SELECT port_id, security_group_id FROM port_security_group",
        "port_id",
        "port_id, security_group_id",
        ids,
    )
    .await
}
