//! Revocation events.

use sqlx::FromRow;
use store::{Pool, Tx};

use super::Error;

/// Tokens matching every non-empty field and issued at or before
/// `issued_before` are revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq, FromRow)]
pub struct Event {
    pub id: String,
    pub user_id: Option<String>,
    pub project_id: Option<String>,
    pub domain_id: Option<String>,
    pub audit_id: Option<String>,
    pub audit_chain_id: Option<String>,
    pub application_credential_id: Option<String>,
    pub issued_before: i64,
    pub revoked_at: i64,
}

pub async fn insert(tx: &mut Tx<'_>, e: &Event) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO revocation_event (id, user_id, project_id, domain_id, audit_id, audit_chain_id, \
         application_credential_id, issued_before, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&e.id)
    .bind(&e.user_id)
    .bind(&e.project_id)
    .bind(&e.domain_id)
    .bind(&e.audit_id)
    .bind(&e.audit_chain_id)
    .bind(&e.application_credential_id)
    .bind(e.issued_before)
    .bind(e.revoked_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn all(pool: &Pool) -> Result<Vec<Event>, Error> {
    Ok(sqlx::query_as("SELECT * FROM revocation_event")
        .fetch_all(pool)
        .await?)
}

/// Removes events that can no longer match a live token.
pub async fn prune(pool: &Pool, older_than: i64) -> Result<u64, Error> {
    let r = sqlx::query("DELETE FROM revocation_event WHERE revoked_at < $1")
        .bind(older_than)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}
