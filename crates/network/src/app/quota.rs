//! Quotas: defaults from the settings, per-project overrides in the
//! database, checked inside the creating transaction (which holds the write
//! lock, so two creates cannot both take the last unit).

use std::collections::BTreeMap;

use api::Error;

use super::{db_err, fault, Network};
use crate::store as db;

/// Limits per resource; -1 is unlimited (Neutron's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas(pub BTreeMap<&'static str, i64>);

/// The quota resources, in the order Neutron lists them.
pub const RESOURCES: &[&str] = &[
    "floatingip",
    "network",
    "port",
    "rbac_policy",
    "router",
    "security_group",
    "security_group_rule",
    "subnet",
    "subnetpool",
];

impl Default for Quotas {
    fn default() -> Self {
        Quotas(
            [
                ("floatingip", 50),
                ("network", 100),
                ("port", 500),
                ("rbac_policy", 10),
                ("router", 10),
                ("security_group", 10),
                ("security_group_rule", 100),
                ("subnet", 100),
                ("subnetpool", -1),
            ]
            .into_iter()
            .collect(),
        )
    }
}

impl Quotas {
    pub fn get(&self, resource: &str) -> i64 {
        self.0.get(resource).copied().unwrap_or(-1)
    }
    /// Sets a limit; `false` for an unknown resource.
    pub fn set(&mut self, resource: &str, limit: i64) -> bool {
        match RESOURCES.iter().find(|r| **r == resource) {
            Some(r) => {
                self.0.insert(r, limit);
                true
            }
            None => false,
        }
    }
}

/// The table counted for a resource's usage.
fn table(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "network" => "network",
        "subnet" => "subnet",
        "port" => "port",
        "router" => "router",
        "floatingip" => "floatingip",
        "security_group" => "security_group",
        "security_group_rule" => "security_group_rule",
        _ => return None,
    })
}

impl Network {
    /// A project's effective limits.
    pub async fn quotas_for<'e>(
        &self,
        e: impl db::Exec<'e>,
        project_id: &str,
    ) -> Result<Quotas, Error> {
        let mut q = self.cfg.quotas.clone();
        for (res, limit) in db::misc::quotas_of(e, project_id).await.map_err(db_err)? {
            q.set(&res, limit);
        }
        Ok(q)
    }

    /// How much of a resource a project uses.
    pub async fn usage<'e>(
        &self,
        e: impl db::Exec<'e>,
        project_id: &str,
        resource: &str,
    ) -> Result<i64, Error> {
        match table(resource) {
            Some(t) => db::count_for_project(e, t, project_id)
                .await
                .map_err(db_err),
            None => Ok(0),
        }
    }

    /// 409 `OverQuota` when adding `adding` of `resource` to the project
    /// would exceed its limit.
    pub async fn check_quota(
        &self,
        tx: &mut super::Tx,
        project_id: &str,
        resource: &str,
        adding: i64,
    ) -> Result<(), Error> {
        let limit = self.quotas_for(tx.c(), project_id).await?.get(resource);
        if limit < 0 {
            return Ok(());
        }
        let used = self.usage(tx.c(), project_id, resource).await?;
        if used + adding > limit {
            return Err(fault::over_quota(resource));
        }
        Ok(())
    }
}
