//! Regions, services and endpoints.

use sqlx::FromRow;
use store::{Pool, Tx};

use super::{select, Error, Exec, Filter};

#[derive(Debug, Clone, FromRow)]
pub struct Region {
    pub id: String,
    pub description: String,
    pub parent_region_id: Option<String>,
    pub extra: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct Service {
    pub id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub extra: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct Endpoint {
    pub id: String,
    pub service_id: String,
    pub interface: String,
    pub url: String,
    pub region_id: Option<String>,
    pub enabled: bool,
    pub extra: String,
    pub managed: bool,
}

pub async fn region_get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Region>, Error> {
    Ok(sqlx::query_as("SELECT * FROM region WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn region_list(pool: &Pool, filters: &[Filter]) -> Result<Vec<Region>, Error> {
    Ok(select("region", filters, "id")
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

pub async fn region_insert(tx: &mut Tx<'_>, r: &Region) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO region (id, description, parent_region_id, extra, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&r.id)
    .bind(&r.description)
    .bind(&r.parent_region_id)
    .bind(&r.extra)
    .bind(store::now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn region_update(tx: &mut Tx<'_>, r: &Region) -> Result<(), Error> {
    sqlx::query(
        "UPDATE region SET description = $1, parent_region_id = $2, extra = $3 WHERE id = $4",
    )
    .bind(&r.description)
    .bind(&r.parent_region_id)
    .bind(&r.extra)
    .bind(&r.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn region_delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM region WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn service_get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Service>, Error> {
    Ok(sqlx::query_as("SELECT * FROM service WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn service_list(pool: &Pool, filters: &[Filter]) -> Result<Vec<Service>, Error> {
    Ok(select("service", filters, "type, name")
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

pub async fn service_insert(tx: &mut Tx<'_>, s: &Service) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO service (id, type, name, description, enabled, extra, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&s.id)
    .bind(&s.kind)
    .bind(&s.name)
    .bind(&s.description)
    .bind(s.enabled)
    .bind(&s.extra)
    .bind(store::now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn service_update(tx: &mut Tx<'_>, s: &Service) -> Result<(), Error> {
    sqlx::query("UPDATE service SET type = $1, name = $2, description = $3, enabled = $4, extra = $5 WHERE id = $6")
        .bind(&s.kind)
        .bind(&s.name)
        .bind(&s.description)
        .bind(s.enabled)
        .bind(&s.extra)
        .bind(&s.id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deletes a service; its endpoints go by cascade.
pub async fn service_delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM service WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn endpoint_get<'e>(e: impl Exec<'e>, id: &str) -> Result<Option<Endpoint>, Error> {
    Ok(sqlx::query_as("SELECT * FROM endpoint WHERE id = $1")
        .bind(id)
        .fetch_optional(e)
        .await?)
}

pub async fn endpoint_list(pool: &Pool, filters: &[Filter]) -> Result<Vec<Endpoint>, Error> {
    Ok(select("endpoint", filters, "service_id, interface")
        .build_query_as()
        .fetch_all(pool)
        .await?)
}

pub async fn endpoint_insert(tx: &mut Tx<'_>, e: &Endpoint) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO endpoint (id, service_id, interface, url, region_id, enabled, extra, managed, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&e.id)
    .bind(&e.service_id)
    .bind(&e.interface)
    .bind(&e.url)
    .bind(&e.region_id)
    .bind(e.enabled)
    .bind(&e.extra)
    .bind(e.managed)
    .bind(store::now_micros())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn endpoint_update(tx: &mut Tx<'_>, e: &Endpoint) -> Result<(), Error> {
    sqlx::query(
        "UPDATE endpoint SET service_id = $1, interface = $2, url = $3, region_id = $4, enabled = $5, extra = $6 WHERE id = $7",
    )
    .bind(&e.service_id)
    .bind(&e.interface)
    .bind(&e.url)
    .bind(&e.region_id)
    .bind(e.enabled)
    .bind(&e.extra)
    .bind(&e.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn endpoint_delete(tx: &mut Tx<'_>, id: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM endpoint WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
