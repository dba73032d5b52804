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
