//! Images, their custom properties and tags.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Pool, Result, Tx};

/// Anything a query can run on: the pool, or a transaction's connection
/// (`&mut **tx`), so reads inside a write transaction use the same SQL.
pub trait Exec<'e>: sqlx::Executor<'e, Database = sqlx::Sqlite> {}
impl<'e, E: sqlx::Executor<'e, Database = sqlx::Sqlite>> Exec<'e> for E {}

/// One row of `image`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ImageRow {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub visibility: String,
    pub protected: bool,
    pub os_hidden: bool,
    pub owner: Option<String>,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub min_disk: i64,
    pub min_ram: i64,
    pub store: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Counts the writes to the row (see [`lock`] and [`update_attrs`]).
    pub revision: i64,
    /// Bytes claimed against the owner's quota by a transfer in progress
    /// or a staged file.
    pub reserved: i64,
}

const COLUMNS: &str = "id, name, status, visibility, protected, os_hidden, owner, disk_format, container_format, size, virtual_size, checksum, os_hash_algo, os_hash_value, min_disk, min_ram, store, created_at, updated_at, revision, reserved";

/// Inserts a new image row.
pub async fn insert(tx: &mut Tx<'_>, r: &ImageRow) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO image ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
    ))
    .bind(&r.id)
    .bind(&r.name)
    .bind(&r.status)
    .bind(&r.visibility)
    .bind(r.protected)
    .bind(r.os_hidden)
    .bind(&r.owner)
    .bind(&r.disk_format)
    .bind(&r.container_format)
    .bind(r.size)
    .bind(r.virtual_size)
    .bind(&r.checksum)
    .bind(&r.os_hash_algo)
    .bind(&r.os_hash_value)
    .bind(r.min_disk)
    .bind(r.min_ram)
    .bind(&r.store)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(r.revision)
    .bind(r.reserved)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Locks an image row for the rest of the transaction; `false` if there is
/// no such image. It must be the transaction's first statement: a write
/// (that changes nothing) takes SQLite's write lock before anything is
/// read, so what the transaction reads next stays true until it commits
/// (and in PostgreSQL it locks the row).
pub async fn lock(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query("UPDATE image SET revision = revision WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Locks the quota of an owning project for the rest of the transaction:
/// the usage read after it stays true until commit.
pub async fn lock_owner(tx: &mut Tx<'_>, owner: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO image_owner_lock (owner, revision) VALUES ($1, 1) ON CONFLICT (owner) DO UPDATE SET revision = image_owner_lock.revision + 1",
    )
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes every user-changeable column (not the status or the data's
/// attributes, which only [`set_status`] and [`set_data`] change), if the
/// row is still at `r.revision`; `false` when another write got there
/// first (or the image is gone).
pub async fn update_attrs(tx: &mut Tx<'_>, r: &ImageRow) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE image SET name = $1, visibility = $2, protected = $3, os_hidden = $4, owner = $5, disk_format = $6, container_format = $7, min_disk = $8, min_ram = $9, updated_at = $10, revision = revision + 1 WHERE id = $11 AND revision = $12",
    )
    .bind(&r.name)
    .bind(&r.visibility)
    .bind(r.protected)
    .bind(r.os_hidden)
    .bind(&r.owner)
    .bind(&r.disk_format)
    .bind(&r.container_format)
    .bind(r.min_disk)
    .bind(r.min_ram)
    .bind(r.updated_at)
    .bind(&r.id)
    .bind(r.revision)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves an image from one of `from` to status `to`, giving up any bytes
/// it had reserved; `false` if the image is gone or was not in one of
/// those states (someone else got there first).
pub async fn set_status<'e>(ex: impl Exec<'e>, id: &str, from: &[&str], to: &str) -> Result<bool> {
    let placeholders: Vec<String> = (0..from.len()).map(|i| format!("${}", i + 4)).collect();
    let sql = format!(
        "UPDATE image SET status = $1, updated_at = $2, reserved = 0, revision = revision + 1 WHERE id = $3 AND status IN ({})",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(&sql)
        .bind(to)
        .bind(::store::now_micros())
        .bind(id);
    for f in from {
        q = q.bind(*f);
    }
    Ok(q.execute(ex).await?.rows_affected() == 1)
}

/// Starts a transfer: moves the image from `from` to `to` and reserves
/// `reserved` bytes, if it is still at `revision` (the one the caller read
/// the image's formats and status at, inside this transaction).
pub async fn begin_transfer(
    tx: &mut Tx<'_>,
    id: &str,
    revision: i64,
    from: &str,
    to: &str,
    reserved: i64,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE image SET status = $1, reserved = $2, updated_at = $3, revision = revision + 1 WHERE id = $4 AND status = $5 AND revision = $6",
    )
    .bind(to)
    .bind(reserved)
    .bind(::store::now_micros())
    .bind(id)
    .bind(from)
    .bind(revision)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets the bytes an image reserves (a staged file keeps its bytes claimed
/// until it is imported or dropped).
pub async fn set_reserved(tx: &mut Tx<'_>, id: &str, status: &str, reserved: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE image SET reserved = $1, revision = revision + 1 WHERE id = $2 AND status = $3",
    )
    .bind(reserved)
    .bind(id)
    .bind(status)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The data's attributes, recorded when data becomes the image's.
#[derive(Debug, Clone)]
pub struct Data {
    pub size: i64,
    pub virtual_size: Option<i64>,
    pub checksum: String,
    pub os_hash_algo: String,
    pub os_hash_value: String,
    pub store: String,
}

/// Makes the image active with `data`, if it is still in status `from`.
pub async fn set_data(tx: &mut Tx<'_>, id: &str, from: &str, d: &Data) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE image SET status = 'active', size = $1, virtual_size = $2, checksum = $3, os_hash_algo = $4, os_hash_value = $5, store = $6, updated_at = $7, reserved = 0, revision = revision + 1 WHERE id = $8 AND status = $9",
    )
    .bind(d.size)
    .bind(d.virtual_size)
    .bind(&d.checksum)
    .bind(&d.os_hash_algo)
    .bind(&d.os_hash_value)
    .bind(&d.store)
    .bind(::store::now_micros())
    .bind(id)
    .bind(from)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One image row.
pub async fn get<'e>(ex: impl Exec<'e>, id: &str) -> Result<Option<ImageRow>> {
    Ok(
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM image WHERE id = $1"))
            .bind(id)
            .fetch_optional(ex)
            .await?,
    )
}

/// Every image row. Listing filters, sorts and pages in memory (see the
/// app layer): fine for the thousands of images a cloud of this size holds.
pub async fn all(pool: &Pool) -> Result<Vec<ImageRow>> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM image"))
        .fetch_all(pool)
        .await?)
}

/// Deletes an image row (properties, tags, members and tasks cascade).
pub async fn delete(tx: &mut Tx<'_>, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM image WHERE id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// An image's custom properties.
pub async fn properties<'e>(ex: impl Exec<'e>, id: &str) -> Result<BTreeMap<String, String>> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, value FROM image_property WHERE image_id = $1")
            .bind(id)
            .fetch_all(ex)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Every image's custom properties, by image id.
pub async fn all_properties(pool: &Pool) -> Result<HashMap<String, BTreeMap<String, String>>> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT image_id, name, value FROM image_property")
            .fetch_all(pool)
            .await?;
    let mut out: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for (id, k, v) in rows {
        out.entry(id).or_default().insert(k, v);
    }
    Ok(out)
}

/// Replaces an image's custom properties.
pub async fn set_properties(
    tx: &mut Tx<'_>,
    id: &str,
    props: &BTreeMap<String, String>,
) -> Result<()> {
    sqlx::query("DELETE FROM image_property WHERE image_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    for (k, v) in props {
        sqlx::query("INSERT INTO image_property (image_id, name, value) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(k)
            .bind(v)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Sets (or with `None` removes) some properties, leaving the others.
pub async fn put_properties(
    tx: &mut Tx<'_>,
    id: &str,
    props: &[(&str, Option<&str>)],
) -> Result<()> {
    for (k, v) in props {
        sqlx::query("DELETE FROM image_property WHERE image_id = $1 AND name = $2")
            .bind(id)
            .bind(k)
            .execute(&mut **tx)
            .await?;
        if let Some(v) = v {
            sqlx::query("INSERT INTO image_property (image_id, name, value) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(k)
                .bind(v)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// An image's tags.
pub async fn tags<'e>(ex: impl Exec<'e>, id: &str) -> Result<BTreeSet<String>> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT value FROM image_tag WHERE image_id = $1")
        .bind(id)
        .fetch_all(ex)
        .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Every image's tags, by image id.
pub async fn all_tags(pool: &Pool) -> Result<HashMap<String, BTreeSet<String>>> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT image_id, value FROM image_tag")
        .fetch_all(pool)
        .await?;
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (id, t) in rows {
        out.entry(id).or_default().insert(t);
    }
    Ok(out)
}

/// Replaces an image's tags.
pub async fn set_tags(tx: &mut Tx<'_>, id: &str, tags: &BTreeSet<String>) -> Result<()> {
    sqlx::query("DELETE FROM image_tag WHERE image_id = $1")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    for t in tags {
        sqlx::query("INSERT INTO image_tag (image_id, value) VALUES ($1, $2)")
            .bind(id)
            .bind(t)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Touches `updated_at` and counts a write.
pub async fn touch(tx: &mut Tx<'_>, id: &str) -> Result<()> {
    sqlx::query("UPDATE image SET updated_at = $1, revision = revision + 1 WHERE id = $2")
        .bind(::store::now_micros())
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A project's usage, leaving out image `except` if given: how many images
/// it owns and the bytes of their data, counting the bytes reserved by
/// transfers in progress and staged files (staged data counts, as Glance
/// counts it).
pub async fn usage<'e>(ex: impl Exec<'e>, owner: &str, except: Option<&str>) -> Result<(i64, i64)> {
    let row: (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), SUM(COALESCE(size, 0) + reserved) FROM image WHERE owner = $1 AND id <> $2",
    )
    .bind(owner)
    .bind(except.unwrap_or(""))
    .fetch_one(ex)
    .await?;
    Ok((row.0, row.1.unwrap_or(0)))
}
