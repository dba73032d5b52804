//! Tags, quota overrides, agent hosts and port events.

use std::collections::HashMap;

use super::{Error, Exec};

/// Every tag of one resource type, by resource id (sorted).
pub async fn tags_of_type<'e>(
    e: impl Exec<'e>,
    resource_type: &str,
) -> Result<HashMap<String, Vec<String>>, Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT resource_id, tag FROM network_tag WHERE resource_type = $1 ORDER BY resource_id, tag",
    )
    .bind(resource_type)
    .fetch_all(e)
    .await?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (id, tag) in rows {
        out.entry(id).or_default().push(tag);
    }
    Ok(out)
}

pub async fn tags<'e>(
    e: impl Exec<'e>,
    resource_type: &str,
    id: &str,
) -> Result<Vec<String>, Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT tag FROM network_tag WHERE resource_type = $1 AND resource_id = $2 ORDER BY tag",
    )
    .bind(resource_type)
    .bind(id)
    .fetch_all(e)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

pub async fn clear_tags<'e>(e: impl Exec<'e>, resource_type: &str, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM network_tag WHERE resource_type = $1 AND resource_id = $2")
        .bind(resource_type)
        .bind(id)
        .execute(e)
        .await?;
    Ok(())
}

pub async fn add_tag<'e>(
    e: impl Exec<'e>,
    resource_type: &str,
    id: &str,
    tag: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO network_tag (resource_type, resource_id, tag) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(resource_type)
    .bind(id)
    .bind(tag)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn remove_tag<'e>(
    e: impl Exec<'e>,
    resource_type: &str,
    id: &str,
    tag: &str,
) -> Result<bool, Error> {
    let r = sqlx::query(
        "DELETE FROM network_tag WHERE resource_type = $1 AND resource_id = $2 AND tag = $3",
    )
    .bind(resource_type)
    .bind(id)
    .bind(tag)
    .execute(e)
    .await?;
    Ok(r.rows_affected() > 0)
}

/// A project's quota overrides.
pub async fn quotas_of<'e>(
    e: impl Exec<'e>,
    project_id: &str,
) -> Result<HashMap<String, i64>, Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT resource, hard_limit FROM network_quota WHERE project_id = $1")
            .bind(project_id)
            .fetch_all(e)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Every override, as (project, resource, limit).
pub async fn all_quotas<'e>(e: impl Exec<'e>) -> Result<Vec<(String, String, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT project_id, resource, hard_limit FROM network_quota ORDER BY project_id, resource",
    )
    .fetch_all(e)
    .await?)
}

pub async fn set_quota<'e>(
    e: impl Exec<'e>,
    project_id: &str,
    resource: &str,
    limit: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO network_quota (project_id, resource, hard_limit) VALUES ($1, $2, $3) \
         ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = excluded.hard_limit",
    )
    .bind(project_id)
    .bind(resource)
    .bind(limit)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn clear_quotas<'e>(e: impl Exec<'e>, project_id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM network_quota WHERE project_id = $1")
        .bind(project_id)
        .execute(e)
        .await?;
    Ok(())
}

/// A host running the node agent.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Host {
    pub host: String,
    pub tunnel_ip: Option<String>,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// Records that `host` was heard from now (creating it on first contact).
pub async fn heartbeat<'e>(e: impl Exec<'e>, host: &str, now: i64) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO network_host (host, tunnel_ip, started_at, heartbeat_at) VALUES ($1, NULL, $2, $2) \
         ON CONFLICT (host) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
    )
    .bind(host)
    .bind(now)
    .execute(e)
    .await?;
    Ok(())
}

/// Clears the heartbeat of a known host (its agent stopped); a host
/// never heard from stays unknown.
pub async fn clear_heartbeat<'e>(e: impl Exec<'e>, host: &str) -> Result<(), Error> {
    sqlx::query("UPDATE network_host SET heartbeat_at = 0 WHERE host = $1")
        .bind(host)
        .execute(e)
        .await?;
    Ok(())
}

/// Sets a host's tunnel address (creating the host if unknown).
pub async fn set_tunnel_ip<'e>(
    e: impl Exec<'e>,
    host: &str,
    ip: &str,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO network_host (host, tunnel_ip, started_at, heartbeat_at) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (host) DO UPDATE SET tunnel_ip = excluded.tunnel_ip",
    )
    .bind(host)
    .bind(ip)
    .bind(now)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn hosts<'e>(e: impl Exec<'e>) -> Result<Vec<Host>, Error> {
    Ok(sqlx::query_as("SELECT * FROM network_host ORDER BY host")
        .fetch_all(e)
        .await?)
}

/// A port event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PortEvent {
    pub id: String,
    pub port_id: String,
    pub event: String,
    pub status: String,
    pub host: String,
    pub created_at: i64,
}

pub async fn add_event<'e>(e: impl Exec<'e>, ev: &PortEvent) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO port_event (id, port_id, event, status, host, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&ev.id)
    .bind(&ev.port_id)
    .bind(&ev.event)
    .bind(&ev.status)
    .bind(&ev.host)
    .bind(ev.created_at)
    .execute(e)
    .await?;
    Ok(())
}

pub async fn events_of<'e>(e: impl Exec<'e>, port_id: &str) -> Result<Vec<PortEvent>, Error> {
    Ok(
        sqlx::query_as("SELECT * FROM port_event WHERE port_id = $1 ORDER BY created_at, id")
            .bind(port_id)
            .fetch_all(e)
            .await?,
    )
}
