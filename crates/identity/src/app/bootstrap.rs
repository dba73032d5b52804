//! First-start bootstrap, as `keystone-manage bootstrap` does it: the
//! `Default` domain (id `default`), the `admin` project and user, the roles
//! admin ⇒ member ⇒ reader, the admin's grants on the project and the
//! system, region `RegionOne`, and the catalog entries of the services this
//! binary serves. Idempotent: running it again changes only what is missing,
//! and points the endpoints it manages at the current public URL.

use api::Error;

use super::{db_err, Identity};
use crate::store as db;
use crate::store::assignment::Assignment;

/// A service the binary serves, for the catalog.
#[derive(Debug, Clone)]
pub struct CatalogService {
    pub kind: &'static str,
    pub name: &'static str,
    /// Path under the public URL, e.g. `/identity`.
    pub path: &'static str,
}

/// What bootstrap did, for the operator.
#[derive(Debug, Default)]
pub struct BootstrapReport {
    pub created_admin: bool,
    /// The admin existed with another password and was given this one.
    pub reset_admin_password: bool,
    /// The admin existed disabled and was enabled again.
    pub enabled_admin: bool,
}

/// The admin password bootstrap is given.
#[derive(Debug, Clone, Copy)]
pub enum AdminPassword<'a> {
    /// Given by the operator: like `keystone-manage bootstrap
    /// --bootstrap-password`, an existing admin whose password differs gets
    /// this one (and is enabled again), so bootstrap doubles as recovery.
    Given(&'a str),
    /// Made up for a first start: used only if the admin is created.
    Generated(&'a str),
}

impl AdminPassword<'_> {
    fn as_str(&self) -> &str {
        match self {
            AdminPassword::Given(p) | AdminPassword::Generated(p) => p,
        }
    }
}

pub const REGION: &str = "RegionOne";

impl Identity {
    /// See the module documentation and [`AdminPassword`].
    pub async fn bootstrap(
        &self,
        admin_password: AdminPassword<'_>,
        services: &[CatalogService],
    ) -> Result<BootstrapReport, Error> {
        let mut report = BootstrapReport::default();
        let rounds = self.cfg.password_hash_rounds;
        let existing = db::user::user_by_name(&self.pool, "default", "admin")
            .await
            .map_err(db_err)?;
        // A new hash when the admin is created, or when the operator gave a
        // password the existing admin does not have (checked as a login
        // would: keystone-manage bootstrap authenticates first and resets
        // the password only if that fails).
        let hash = match (&existing, admin_password) {
            (None, _) => true,
            (Some(u), AdminPassword::Given(p)) => {
                !crate::password::verify(p.to_string(), u.password_hash.clone(), rounds).await
            }
            (Some(_), AdminPassword::Generated(_)) => false,
        };
        let hash = if hash {
            Some(
                crate::password::hash(admin_password.as_str().to_string(), rounds)
                    .await
                    .map_err(|e| Error::internal(&e))?,
            )
        } else {
            None
        };
        let mut tx = self.begin().await?;
        let now = store::now_micros();
        sqlx::query("INSERT INTO domain (id, name, description, enabled, extra, created_at) VALUES ('default', 'Default', 'The default domain', TRUE, '{}', $1) ON CONFLICT DO NOTHING")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_err(e.into()))?;
        let project_id = match sqlx::query_as::<_, (String,)>(
            "SELECT id FROM project WHERE domain_id = 'default' AND name = 'admin'",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_err(e.into()))?
        {
            Some((id,)) => id,
            None => {
                let id = store::new_hex_id();
                sqlx::query("INSERT INTO project (id, name, domain_id, parent_id, description, enabled, extra, created_at) VALUES ($1, 'admin', 'default', NULL, 'Bootstrap project for initializing the cloud.', TRUE, '{}', $2)")
                    .bind(&id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| db_err(e.into()))?;
                id
            }
        };
        let mut role_ids = Vec::new();
        for name in ["admin", "member", "reader"] {
            let id = match sqlx::query_as::<_, (String,)>(
                "SELECT id FROM role WHERE name = $1 AND domain_id = ''",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_err(e.into()))?
            {
                Some((id,)) => id,
                None => {
                    let id = store::new_hex_id();
                    sqlx::query("INSERT INTO role (id, name, domain_id, description, extra, options, created_at) VALUES ($1, $2, '', '', '{}', '{}', $3)")
                        .bind(&id)
                        .bind(name)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| db_err(e.into()))?;
                    id
                }
            };
            role_ids.push(id);
        }
        db::assignment::implied_add(&mut tx, &role_ids[0], &role_ids[1])
            .await
            .map_err(db_err)?;
        db::assignment::implied_add(&mut tx, &role_ids[1], &role_ids[2])
            .await
            .map_err(db_err)?;
        let admin_id = match sqlx::query_as::<_, (String,)>(
            "SELECT id FROM identity_user WHERE domain_id = 'default' AND name = 'admin'",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_err(e.into()))?
        {
            Some((id,)) => {
                if let Some(mut u) = db::user::user_get(&mut *tx, &id).await.map_err(db_err)? {
                    let given = matches!(admin_password, AdminPassword::Given(_));
                    if given && !u.enabled {
                        u.enabled = true;
                        report.enabled_admin = true;
                    }
                    if let (true, Some(h)) = (given, hash) {
                        self.replace_password(&mut tx, &mut u, h, false).await?;
                        report.reset_admin_password = true;
                        // Tokens got with the old password end with it.
                        self.revoke(
                            &mut tx,
                            db::revocation::Event {
                                user_id: Some(id.clone()),
                                ..Default::default()
                            },
                        )
                        .await?;
                    }
                    if report.enabled_admin || report.reset_admin_password {
                        db::user::user_update(&mut tx, &u).await.map_err(db_err)?;
                    }
                }
                id
            }
            None => {
                let id = store::new_hex_id();
                let user = db::user::User {
                    id: id.clone(),
                    name: "admin".into(),
                    domain_id: "default".into(),
                    enabled: true,
                    default_project_id: Some(project_id.clone()),
                    password_hash: hash,
                    password_created_at: Some(now),
                    failed_auth_count: 0,
                    failed_auth_at: None,
                    extra: "{}".into(),
                    options: "{}".into(),
                    password_self_service: false,
                };
                db::user::user_insert(&mut tx, &user)
                    .await
                    .map_err(db_err)?;
                report.created_admin = true;
                id
            }
        };
        for (target_type, target_id) in [("project", project_id.as_str()), ("system", "all")] {
            db::assignment::grant(
                &mut tx,
                &Assignment {
                    actor_type: "user".into(),
                    actor_id: admin_id.clone(),
                    target_type: target_type.into(),
                    target_id: target_id.into(),
                    role_id: role_ids[0].clone(),
                    inherited: false,
                },
            )
            .await
            .map_err(db_err)?;
        }
        sqlx::query("INSERT INTO region (id, description, parent_region_id, extra, created_at) VALUES ($1, '', NULL, '{}', $2) ON CONFLICT DO NOTHING")
            .bind(REGION)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_err(e.into()))?;
        let base = self.cfg.public_url.trim_end_matches('/').to_string();
        for svc in services {
            let sid = match sqlx::query_as::<_, (String,)>(
                "SELECT id FROM service WHERE type = $1 ORDER BY created_at LIMIT 1",
            )
            .bind(svc.kind)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_err(e.into()))?
            {
                Some((id,)) => id,
                None => {
                    let id = store::new_hex_id();
                    db::catalog::service_insert(
                        &mut tx,
                        &db::catalog::Service {
                            id: id.clone(),
                            kind: svc.kind.into(),
                            name: svc.name.into(),
                            description: String::new(),
                            enabled: true,
                            extra: "{}".into(),
                        },
                    )
                    .await
                    .map_err(db_err)?;
                    id
                }
            };
            let url = format!("{base}{}", svc.path);
            for interface in ["public", "internal", "admin"] {
                let existing: Option<(String,)> = sqlx::query_as(
                    "SELECT id FROM endpoint WHERE service_id = $1 AND interface = $2 AND managed = TRUE",
                )
                .bind(&sid)
                .bind(interface)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| db_err(e.into()))?;
                match existing {
                    Some((eid,)) => {
                        sqlx::query("UPDATE endpoint SET url = $1 WHERE id = $2")
                            .bind(&url)
                            .bind(&eid)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| db_err(e.into()))?;
                    }
                    None => {
                        db::catalog::endpoint_insert(
                            &mut tx,
                            &db::catalog::Endpoint {
                                id: store::new_hex_id(),
                                service_id: sid.clone(),
                                interface: interface.into(),
                                url: url.clone(),
                                region_id: Some(REGION.into()),
                                enabled: true,
                                extra: "{}".into(),
                                managed: true,
                            },
                        )
                        .await
                        .map_err(db_err)?;
                    }
                }
            }
        }
        self.commit(tx).await?;
        Ok(report)
    }
}
