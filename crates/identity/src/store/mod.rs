//! SQL for the identity tables. Functions take a pool or a transaction and
//! know nothing about HTTP or policy.
//!
//! Every write goes through a transaction that also calls [`bump`], which
//! increments `identity_revision`: controllers that share the database
//! notice the change and drop their caches (see `crate::app::cache`).

pub mod appcred;
pub mod assignment;
pub mod catalog;
pub mod resource;
pub mod revocation;
pub mod user;

use sqlx::{QueryBuilder, Sqlite};
use store::{Pool, Tx};

pub use store::Error;

/// An executor: `&Pool` or `&mut *tx`.
pub use sqlx::SqliteExecutor as Exec;

/// Records that identity data changed (in the caller's transaction).
pub async fn bump(tx: &mut Tx<'_>) -> Result<(), Error> {
    sqlx::query("UPDATE identity_revision SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The current revision.
pub async fn revision(pool: &Pool) -> Result<i64, Error> {
    let r: (i64,) = sqlx::query_as("SELECT revision FROM identity_revision WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(r.0)
}

/// An equality filter for list queries.
#[derive(Debug, Clone)]
pub enum Filter {
    Text(&'static str, String),
    Bool(&'static str, bool),
    /// `column IS NULL`.
    Null(&'static str),
}

/// `SELECT * FROM table WHERE <filters> ORDER BY <order>`.
pub fn select<'a>(table: &str, filters: &'a [Filter], order: &str) -> QueryBuilder<'a, Sqlite> {
    let mut qb = QueryBuilder::new(format!("SELECT * FROM {table} WHERE 1=1"));
    for f in filters {
        match f {
            Filter::Text(col, v) => {
                qb.push(format!(" AND {col} = "));
                qb.push_bind(v.as_str());
            }
            Filter::Bool(col, v) => {
                qb.push(format!(" AND {col} = "));
                qb.push_bind(*v);
            }
            Filter::Null(col) => {
                qb.push(format!(" AND {col} IS NULL"));
            }
        }
    }
    qb.push(format!(" ORDER BY {order}"));
    qb
}
