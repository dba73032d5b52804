//! Endpoints: creation and update, with Keystone's rules for the region and
//! the service they name. Policy is checked inside the transaction that
//! writes.

use serde_json::{Map, Value};

use api::{AuthContext, Error, Target};

use super::{db_err, Identity};
use crate::store as db;
use crate::store::catalog::Endpoint;

/// Keystone's answer for an endpoint naming a region or service that does
/// not exist (a `ValidationError`: 400, not 404).
fn missing(attribute: &str, table: &str) -> Error {
    Error::bad_request(format!(
        "Expecting to find endpoint {attribute} in {table} table. The server could not comply with the request since it is either malformed or otherwise incorrect. The client is assumed to be in error."
    ))
}

/// The region an endpoint body names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionRef {
    /// `region_id`: the region must exist.
    Id(String),
    /// Only the v2-era `region`: Keystone creates the region if it does not
    /// exist, for clients that still send it.
    Legacy(String),
}

/// A validated `POST /v3/endpoints` body.
pub struct EndpointCreate {
    pub service_id: String,
    pub interface: String,
    pub url: String,
    pub region: Option<RegionRef>,
    pub enabled: bool,
    pub extra: Map<String, Value>,
}

/// A validated `PATCH /v3/endpoints/{id}` body.
#[derive(Default)]
pub struct EndpointUpdate {
    pub service_id: Option<String>,
    pub interface: Option<String>,
    pub url: Option<String>,
    /// `Some(None)` detaches the endpoint from its region.
    pub region: Option<Option<RegionRef>>,
    pub enabled: Option<bool>,
    pub extra: Map<String, Value>,
}

impl Identity {
    /// Resolves a region reference inside the transaction, creating a region
    /// named only by the legacy attribute.
    async fn endpoint_region(
        &self,
        tx: &mut store::Tx<'_>,
        region: Option<RegionRef>,
    ) -> Result<Option<String>, Error> {
        match region {
            None => Ok(None),
            Some(RegionRef::Id(r)) => {
                db::catalog::region_get(&mut **tx, &r)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| missing("region_id", "region"))?;
                Ok(Some(r))
            }
            Some(RegionRef::Legacy(r)) => {
                if db::catalog::region_get(&mut **tx, &r)
                    .await
                    .map_err(db_err)?
                    .is_none()
                {
                    db::catalog::region_insert(
                        tx,
                        &db::catalog::Region {
                            id: r.clone(),
                            description: String::new(),
                            parent_region_id: None,
                            extra: "{}".into(),
                        },
                    )
                    .await
                    .map_err(db_err)?;
                }
                Ok(Some(r))
            }
        }
    }

    async fn endpoint_service(&self, tx: &mut store::Tx<'_>, sid: &str) -> Result<(), Error> {
        db::catalog::service_get(&mut **tx, sid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| missing("service_id", "service"))?;
        Ok(())
    }

    /// `POST /v3/endpoints`.
    pub async fn endpoint_create(
        &self,
        ctx: &AuthContext,
        req: EndpointCreate,
    ) -> Result<Endpoint, Error> {
        let mut tx = self.begin().await?;
        self.policy
            .enforce("identity:create_endpoint", ctx, &Target::new())?;
        self.endpoint_service(&mut tx, &req.service_id).await?;
        let region_id = self.endpoint_region(&mut tx, req.region).await?;
        let e = Endpoint {
            id: store::new_hex_id(),
            service_id: req.service_id,
            interface: req.interface,
            url: req.url,
            region_id,
            enabled: req.enabled,
            extra: Value::Object(req.extra).to_string(),
            managed: false,
        };
        db::catalog::endpoint_insert(&mut tx, &e)
            .await
            .map_err(db_err)?;
        self.commit(tx).await?;
        Ok(e)
    }

    /// `PATCH /v3/endpoints/{id}`.
    pub async fn endpoint_update(
        &self,
        ctx: &AuthContext,
        eid: &str,
        req: EndpointUpdate,
    ) -> Result<Endpoint, Error> {
        let mut tx = self.begin().await?;
        self.policy
            .enforce("identity:update_endpoint", ctx, &Target::new())?;
        let mut e = db::catalog::endpoint_get(&mut *tx, eid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| Error::not_found(format!("Could not find endpoint: {eid}.")))?;
        if let Some(s) = req.service_id {
            self.endpoint_service(&mut tx, &s).await?;
            e.service_id = s;
        }
        if let Some(i) = req.interface {
            e.interface = i;
        }
        if let Some(u) = req.url {
            e.url = u;
        }
        if let Some(r) = req.region {
            e.region_id = self.endpoint_region(&mut tx, r).await?;
        }
        if let Some(en) = req.enabled {
            e.enabled = en;
        }
        let mut extra: Map<String, Value> = serde_json::from_str(&e.extra).unwrap_or_default();
        extra.extend(req.extra);
        e.extra = Value::Object(extra).to_string();
        db::catalog::endpoint_update(&mut tx, &e)
            .await
            .map_err(db_err)?;
        self.commit(tx).await?;
        Ok(e)
    }
}
