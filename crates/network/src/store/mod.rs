//! SQL for the network tables. Functions take any executor (the pool or a
//! transaction) and know nothing about HTTP or policy.
//!
//! Every write runs in a transaction whose first statement is [`bump`]:
//! the revision row is the lock that serializes network writes, so the
//! reads that decide an address or a segment inside the transaction cannot
//! be raced, and the new revision wakes the node agents.

pub mod floatingip;
pub mod misc;
pub mod network;
pub mod port;
pub mod router;
pub mod secgroup;
pub mod subnet;

pub use store::Error;

/// An executor: `&Pool` or `&mut *tx`.
pub use sqlx::SqliteExecutor as Exec;

/// Increments `network_revision` (the first statement of every network
/// write) and returns the new revision.
pub async fn bump(tx: &mut store::Tx<'_>) -> Result<u64, Error> {
    let r: (i64,) = sqlx::query_as(
        "UPDATE network_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(r.0 as u64)
}

/// The current revision.
pub async fn revision<'e>(e: impl Exec<'e>) -> Result<u64, Error> {
    let r: (i64,) = sqlx::query_as("SELECT revision FROM network_revision WHERE id = 1")
        .fetch_one(e)
        .await?;
    Ok(r.0 as u64)
}

/// Counts rows of `table` owned by `project_id` (for quotas). `table` is
/// one of ours, never user input.
pub async fn count_for_project<'e>(
    e: impl Exec<'e>,
    table: &'static str,
    project_id: &str,
) -> Result<i64, Error> {
    let r: (i64,) = sqlx::query_as(&format!(
        "SELECT COUNT(*) FROM {table} WHERE project_id = $1"
    ))
    .bind(project_id)
    .fetch_one(e)
    .await?;
    Ok(r.0)
}

/// The current revision and the change journal's floor: changes of
/// revisions up to the floor have been pruned.
pub async fn revision_and_floor<'e>(e: impl Exec<'e>) -> Result<(u64, u64), Error> {
    let r: (i64, i64) =
        sqlx::query_as("SELECT revision, change_floor FROM network_revision WHERE id = 1")
            .fetch_one(e)
            .await?;
    Ok((r.0 as u64, r.1 as u64))
}

/// What changed after revision `after`: (kind, key) pairs of the change
/// journal, each once.
pub async fn changes_since<'e>(
    e: impl Exec<'e>,
    after: u64,
) -> Result<Vec<(String, String)>, Error> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT kind, key FROM network_change WHERE revision > $1 ORDER BY kind, key",
    )
    .bind(after as i64)
    .fetch_all(e)
    .await?)
}

/// Forgets the changes of revisions up to `through` and raises the floor.
pub async fn prune_changes(tx: &mut store::Tx<'_>, through: u64) -> Result<(), Error> {
    sqlx::query("DELETE FROM network_change WHERE revision <= $1")
        .bind(through as i64)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE network_revision SET change_floor = $1 WHERE id = 1 AND change_floor < $1")
        .bind(through as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `SELECT {columns} FROM {table} WHERE {column} IN (keys…) ORDER BY
/// {order}`, in chunks that stay under the backend's parameter limit.
/// `table`, `column` and `order` are ours, never user input.
pub(crate) async fn select_in<T>(
    c: &mut sqlx::SqliteConnection,
    select: &'static str,
    column: &'static str,
    order: &'static str,
    keys: &[String],
) -> Result<Vec<T>, Error>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let mut out = Vec::new();
    for chunk in keys.chunks(500) {
        let mut qb = sqlx::QueryBuilder::new(format!("{select} WHERE {column} IN ("));
        let mut sep = qb.separated(", ");
        for k in chunk {
            sep.push_bind(k);
        }
        sep.push_unseparated(format!(") ORDER BY {order}"));
        out.extend(qb.build_query_as::<T>().fetch_all(&mut *c).await?);
    }
    Ok(out)
}
