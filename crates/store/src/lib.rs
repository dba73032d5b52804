//! The database every Ferrostack service shares.
//!
//! The controller keeps desired state in SQL through `sqlx`. SQLite in WAL
//! mode under the data directory is the default and needs no setup; the
//! queries are written in the subset of SQL that PostgreSQL accepts too
//! (`$N` placeholders in order, `BIGINT` microsecond timestamps, `BOOLEAN`,
//! no `AUTOINCREMENT`, no SQLite-only functions), so a PostgreSQL backend can
//! run the same migrations and statements later.
//!
//! **Architecture invariant:** this crate knows SQL and nothing about HTTP or
//! any service's rules. Services own their tables through the numbered
//! migrations in `migrations/`, one file per change, prefixed with the
//! service's name.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use sqlx;

/// The pool type every service uses. An alias so that swapping the backend is
/// one change here.
pub type Pool = sqlx::SqlitePool;
/// A transaction on [`Pool`].
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Sqlite>;
/// A row returned by [`Pool`].
pub type Row = sqlx::sqlite::SqliteRow;

/// Errors of the store, already sorted into what callers must treat
/// differently: a uniqueness or reference conflict is the client's problem
/// (409), anything else is ours.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A UNIQUE constraint rejected the write; carries the constraint's
    /// columns as SQLite names them (`table.column, …`).
    #[error("conflict on {0}")]
    Conflict(String),
    /// A FOREIGN KEY constraint rejected the write.
    #[error("a referenced row does not exist or is still in use")]
    ForeignKey,
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// Migrations could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        classify(e)
    }
}

/// Sorts a raw `sqlx` error into [`Error`]: constraint names become
/// [`Error::Conflict`], so every service maps duplicates to 409 in one place.
pub fn classify(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::RowNotFound => Error::NotFound,
        sqlx::Error::Database(ref db) => {
            let msg = db.message();
            if db.is_unique_violation() {
                let cols = msg.split_once(':').map(|x| x.1.trim()).unwrap_or(msg);
                Error::Conflict(cols.to_string())
            } else if db.is_foreign_key_violation() {
                Error::ForeignKey
            } else {
                Error::Database(e)
            }
        }
        other => Error::Database(other),
    }
}

/// Opens (creating if needed) the database `ferrostack.db` under `data_dir`
/// and applies every pending migration.
pub async fn open(data_dir: &Path) -> Result<Pool, Error> {
    let path = data_dir.join("ferrostack.db");
    let url = format!("sqlite://{}", path.display());
    let opts = SqliteConnectOptions::from_str(&url)
        .map_err(Error::Database)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode loses nothing when the process dies (kill -9);
        // only a power cut can lose the last commits. FULL would fsync every
        // commit for a protection the brief does not ask for.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .connect_with(opts)
        .await
        .map_err(Error::Database)?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies the embedded migrations. Safe to call on every start.
pub async fn migrate(pool: &Pool) -> Result<(), Error> {
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .map_err(Error::Migrate)
}

/// Runs SQLite's integrity check; `Ok(())` when the database is sound.
pub async fn integrity_check(pool: &Pool) -> Result<(), Error> {
    let row: (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(pool)
        .await?;
    if row.0 == "ok" {
        Ok(())
    } else {
        Err(Error::Database(sqlx::Error::Protocol(format!(
            "integrity check failed: {}",
            row.0
        ))))
    }
}

/// The current time as microseconds since the Unix epoch: the one timestamp
/// representation stored in every table.
pub fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000) as i64
}

/// A new random identifier in Keystone's style: 32 lowercase hex digits.
pub fn new_hex_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new random identifier in the style of Nova, Neutron, Glance and Cinder:
/// a dashed UUID.
pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_migrates_and_passes_integrity_check() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(dir.path()).await.unwrap();
        integrity_check(&pool).await.unwrap();
        // Opening again applies nothing twice.
        drop(pool);
        let pool = open(dir.path()).await.unwrap();
        let mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode.0, "wal");
    }

    #[tokio::test]
    async fn unique_violation_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(dir.path()).await.unwrap();
        sqlx::query("CREATE TABLE t (a TEXT NOT NULL UNIQUE)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (a) VALUES ($1)")
            .bind("x")
            .execute(&pool)
            .await
            .unwrap();
        let err = sqlx::query("INSERT INTO t (a) VALUES ($1)")
            .bind("x")
            .execute(&pool)
            .await
            .map_err(classify)
            .unwrap_err();
        assert!(
            matches!(err, Error::Conflict(ref c) if c.contains("t.a")),
            "{err:?}"
        );
    }

    /// Services on different branches number their migrations ahead of
    /// merging (network took 0003 while image had 0002). A database that
    /// ran 0001 and 0003 must accept 0002 when it arrives later: sqlx
    /// applies every migration it has not applied, whatever its number.
    #[tokio::test]
    async fn a_migration_numbered_below_an_applied_one_is_still_applied() {
        let dir = tempfile::tempdir().unwrap();
        let early = dir.path().join("early");
        let late = dir.path().join("late");
        std::fs::create_dir_all(&early).unwrap();
        std::fs::create_dir_all(&late).unwrap();
        for (d, files) in [
            (&early, vec!["0001_a", "0003_c"]),
            (&late, vec!["0001_a", "0002_b", "0003_c"]),
        ] {
            for f in files {
                let table = f.split('_').nth(1).unwrap();
                std::fs::write(
                    d.join(format!("{f}.sql")),
                    format!("CREATE TABLE {table} (x INTEGER);"),
                )
                .unwrap();
            }
        }
        let url = format!("sqlite://{}", dir.path().join("db").display());
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(opts).await.unwrap();
        sqlx::migrate::Migrator::new(early.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::migrate::Migrator::new(late.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for t in ["a", "b", "c"] {
            sqlx::query(&format!("SELECT x FROM {t}"))
                .fetch_all(&pool)
                .await
                .unwrap();
        }
    }

    #[test]
    fn ids_have_the_openstack_shapes() {
        assert_eq!(new_hex_id().len(), 32);
        assert_eq!(new_uuid().len(), 36);
    }
}
