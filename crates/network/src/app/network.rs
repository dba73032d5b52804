//! Networks: segment (provider attributes) and conntrack-zone allocation,
//! MTU, sharing and external flags, deletion with its DHCP port.

use api::{AuthContext, Error, Target};

use super::view::{network_target, NetworkView};
use super::{db_err, fault, py_bool, Network, Tx};
use crate::store as db;

/// VXLAN's overhead over an IPv4 underlay.
const VXLAN_OVERHEAD: u32 = 50;
const MIN_MTU: u32 = 68;

/// A validated create request.
#[derive(Debug, Clone, Default)]
pub struct NetworkCreate {
    pub project_id: Option<String>,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub shared: bool,
    pub external: bool,
    pub mtu: Option<u32>,
    pub network_type: Option<String>,
    pub physical_network: Option<String>,
    pub segmentation_id: Option<i64>,
    pub port_security_enabled: Option<bool>,
    pub dns_domain: String,
    pub availability_zone_hints: Vec<String>,
    pub tags: Option<Vec<String>>,
}

/// A validated update request: `None` leaves the attribute alone.
#[derive(Debug, Clone, Default)]
pub struct NetworkUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub shared: Option<bool>,
    pub external: Option<bool>,
    pub mtu: Option<u32>,
    pub port_security_enabled: Option<bool>,
    pub dns_domain: Option<String>,
    pub availability_zone_hints: Option<Vec<String>>,
    pub network_type: Option<String>,
    pub physical_network: Option<Option<String>>,
    pub segmentation_id: Option<Option<i64>>,
}

/// A resolved segment.
struct Segment {
    network_type: String,
    physical_network: Option<String>,
    segmentation_id: Option<i64>,
    key: Option<String>,
    max_mtu: u32,
}

impl Network {
    pub async fn load_network(&self, id: &str) -> Result<NetworkView, Error> {
        self.network_views(Some(id))
            .await?
            .pop()
            .ok_or_else(|| fault::network_not_found(id))
    }

    /// A network the caller may see, else 404.
    pub async fn visible_network(&self, ctx: &AuthContext, id: &str) -> Result<NetworkView, Error> {
        let v = self.load_network(id).await?;
        if !self.allowed(ctx, "get_network", &v.target()) {
            return Err(fault::network_not_found(id));
        }
        Ok(v)
    }

    pub async fn network_create(
        &self,
        ctx: &AuthContext,
        req: NetworkCreate,
    ) -> Result<NetworkView, Error> {
        self.network_create_bulk(ctx, vec![req])
            .await?
            .pop()
            .ok_or_else(|| Error::internal(&"bulk create answered nothing"))
    }

    /// Creates networks all or none (Neutron's bulk create): one
    /// transaction, so a bad element leaves nothing behind. The quota is
    /// checked once per project for all its networks of the batch, at its
    /// first element (after that element's policy check), so an over-quota
    /// batch is refused before any work is done for it.
    pub async fn network_create_bulk(
        &self,
        ctx: &AuthContext,
        reqs: Vec<NetworkCreate>,
    ) -> Result<Vec<NetworkView>, Error> {
        let (owners, mut counts) =
            self.bulk_owners(ctx, "networks", reqs.iter().map(|r| &r.project_id))?;
        let mut tx = self.begin().await?;
        let mut ids = Vec::with_capacity(reqs.len());
        for (req, owner) in reqs.into_iter().zip(owners) {
            let quota_n = counts.remove(&owner).unwrap_or(0);
            ids.push(self.network_create_in(&mut tx, ctx, req, quota_n).await?);
        }
        self.commit(tx).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            out.push(self.load_network(id).await?);
        }
        Ok(out)
    }

    /// Creates one network inside `tx` (policy, quota, segment, zone) and
    /// answers its id; `quota_n` networks of the owner's quota are checked
    /// (0: already checked for the batch).
    async fn network_create_in(
        &self,
        tx: &mut Tx,
        ctx: &AuthContext,
        req: NetworkCreate,
        quota_n: i64,
    ) -> Result<String, Error> {
        let owner = self.owner_for_create(ctx, req.project_id.clone())?;
        let target = Target::new()
            .with("project_id", &owner)
            .with("tenant_id", &owner)
            .with("shared", py_bool(req.shared))
            .with("router:external", py_bool(req.external));
        self.enforce(ctx, "create_network", &target)?;
        if req.shared {
            self.enforce_attr(ctx, "create_network:shared", &target)?;
        }
        if req.external {
            self.enforce_attr(ctx, "create_network:router:external", &target)?;
        }
        for (set, attr) in [
            (req.network_type.is_some(), "provider:network_type"),
            (req.physical_network.is_some(), "provider:physical_network"),
            (req.segmentation_id.is_some(), "provider:segmentation_id"),
            (req.port_security_enabled.is_some(), "port_security_enabled"),
            (req.tags.is_some(), "tags"),
        ] {
            if set {
                self.enforce_attr(ctx, &format!("create_network:{attr}"), &target)?;
            }
        }
        self.check_availability_zones(&req.availability_zone_hints)?;
        self.ensure_default_security_group(tx, &owner).await?;
        if quota_n > 0 {
            self.check_quota(tx, &owner, "network", quota_n).await?;
        }
        let seg = self.resolve_segment(tx, &req).await?;
        let mtu = match req.mtu {
            Some(m) => check_mtu(m, seg.max_mtu)?,
            None => seg.max_mtu,
        };
        let zone = free_conntrack_zone(tx).await?;
        let n = db::network::Network {
            id: super::new_id(),
            project_id: owner,
            name: req.name,
            description: req.description,
            admin_state_up: req.admin_state_up,
            status: "ACTIVE".into(),
            shared: req.shared,
            external: req.external,
            mtu: mtu as i64,
            network_type: seg.network_type,
            physical_network: seg.physical_network,
            segmentation_id: seg.segmentation_id,
            segment_key: seg.key,
            port_security_enabled: req.port_security_enabled.unwrap_or(true),
            dns_domain: req.dns_domain,
            availability_zone_hints: serde_json::to_string(&req.availability_zone_hints)
                .unwrap_or_else(|_| "[]".into()),
            conntrack_zone: zone,
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 1,
        };
        db::network::insert(tx.c(), &n).await.map_err(db_err)?;
        if let Some(tags) = &req.tags {
            set_tags(tx, "networks", &n.id, tags).await?;
        }
        Ok(n.id)
    }

    async fn resolve_segment(&self, tx: &mut Tx, req: &NetworkCreate) -> Result<Segment, Error> {
        let physnet_mtu = self.cfg.global_physnet_mtu;
        let vxlan_mtu = physnet_mtu.saturating_sub(VXLAN_OVERHEAD);
        let physnet = req.physical_network.clone();
        let segid = req.segmentation_id;
        let Some(kind) = req.network_type.as_deref() else {
            if physnet.is_some() || segid.is_some() {
                return Err(fault::invalid_input(
                    "provider:network_type required when provider:physical_network or provider:segmentation_id is given",
                ));
            }
            let vni = self.allocate_vni(tx).await?;
            return Ok(Segment {
                network_type: "vxlan".into(),
                physical_network: None,
                segmentation_id: Some(vni),
                key: Some(format!("vxlan:{vni}")),
                max_mtu: vxlan_mtu,
            });
        };
        let known_physnet = |p: &Option<String>, kind: &str| -> Result<String, Error> {
            let Some(p) = p else {
                return Err(fault::invalid_input(format!(
                    "physical_network required for {kind} provider network"
                )));
            };
            if self.physical_interface(p).is_none() {
                return Err(fault::invalid_input(format!(
                    "physical_network '{p}' unknown for {kind} provider network"
                )));
            }
            Ok(p.clone())
        };
        match kind {
            "flat" => {
                let p = known_physnet(&physnet, "flat")?;
                if segid.is_some() {
                    return Err(fault::invalid_input(
                        "segmentation_id specified for flat provider network",
                    ));
                }
                let key = format!("flat:{p}");
                if db::network::segment_taken(tx.c(), &key)
                    .await
                    .map_err(db_err)?
                {
                    return Err(fault::conflict(
                        "FlatNetworkInUse",
                        format!(
                            "Unable to create the flat network. Physical network {p} is in use."
                        ),
                    ));
                }
                Ok(Segment {
                    network_type: "flat".into(),
                    physical_network: Some(p),
                    segmentation_id: None,
                    key: Some(key),
                    max_mtu: physnet_mtu,
                })
            }
            "vlan" => {
                let p = known_physnet(&physnet, "vlan")?;
                let Some(vid) = segid else {
                    return Err(fault::unavailable(
                        "NoNetworkAvailable",
                        "Unable to create the network. No tenant network is available for allocation.",
                    ));
                };
                if !(1..=4094).contains(&vid) {
                    return Err(fault::invalid_input(format!(
                        "segmentation_id out of range (1 through 4094): {vid}"
                    )));
                }
                let key = format!("vlan:{p}:{vid}");
                if db::network::segment_taken(tx.c(), &key)
                    .await
                    .map_err(db_err)?
                {
                    return Err(fault::conflict(
                        "VlanIdInUse",
                        format!(
                            "Unable to create the network. The VLAN {vid} on physical network {p} is in use."
                        ),
                    ));
                }
                Ok(Segment {
                    network_type: "vlan".into(),
                    physical_network: Some(p),
                    segmentation_id: Some(vid),
                    key: Some(key),
                    max_mtu: physnet_mtu,
                })
            }
            "vxlan" => {
                if physnet.is_some() {
                    return Err(fault::invalid_input(
                        "provider:physical_network specified for vxlan network",
                    ));
                }
                let vni = match segid {
                    None => self.allocate_vni(tx).await?,
                    Some(v) => {
                        if !(1..=16_777_215).contains(&v) {
                            return Err(fault::invalid_input(format!(
                                "segmentation_id out of range (1 through 16777215): {v}"
                            )));
                        }
                        if db::network::segment_taken(tx.c(), &format!("vxlan:{v}"))
                            .await
                            .map_err(db_err)?
                        {
                            return Err(fault::conflict(
                                "TunnelIdInUse",
                                format!(
                                    "Unable to create the network. The tunnel ID {v} is in use."
                                ),
                            ));
                        }
                        v
                    }
                };
                Ok(Segment {
                    network_type: "vxlan".into(),
                    physical_network: None,
                    segmentation_id: Some(vni),
                    key: Some(format!("vxlan:{vni}")),
                    max_mtu: vxlan_mtu,
                })
            }
            "local" => {
                if physnet.is_some() || segid.is_some() {
                    return Err(fault::invalid_input(
                        "provider:physical_network and provider:segmentation_id are not allowed for local networks",
                    ));
                }
                Ok(Segment {
                    network_type: "local".into(),
                    physical_network: None,
                    segmentation_id: None,
                    key: None,
                    max_mtu: physnet_mtu,
                })
            }
            other => Err(fault::invalid_input(format!(
                "network_type value '{other}' not supported"
            ))),
        }
    }

    /// The lowest free VNI of the tenant range, or 503 `NoNetworkAvailable`.
    async fn allocate_vni(&self, tx: &mut Tx) -> Result<i64, Error> {
        let used = db::network::segmentation_ids(tx.c(), "vxlan")
            .await
            .map_err(db_err)?;
        let (lo, hi) = self.cfg.vni_range;
        let mut cand = lo as i64;
        for u in used {
            if u < cand {
                continue;
            }
            if u > cand {
                break;
            }
            cand += 1;
        }
        if cand > hi as i64 {
            return Err(fault::unavailable(
                "NoNetworkAvailable",
                "Unable to create the network. No tenant network is available for allocation.",
            ));
        }
        Ok(cand)
    }

    pub async fn network_update(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: NetworkUpdate,
    ) -> Result<NetworkView, Error> {
        let mut tx = self.begin().await?;
        let mut n = db::network::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(id))?;
        let target = network_target(&n);
        self.enforce_or_hide(ctx, "update_network", "get_network", &target, || {
            fault::network_not_found(id)
        })?;
        for (set, attr) in [
            (req.shared.is_some(), "shared"),
            (req.external.is_some(), "router:external"),
            (req.network_type.is_some(), "provider:network_type"),
            (req.physical_network.is_some(), "provider:physical_network"),
            (req.segmentation_id.is_some(), "provider:segmentation_id"),
            (req.port_security_enabled.is_some(), "port_security_enabled"),
        ] {
            if set {
                self.enforce_attr(ctx, &format!("update_network:{attr}"), &target)?;
            }
        }
        let mut unsupported = Vec::new();
        if req
            .network_type
            .as_ref()
            .is_some_and(|t| *t != n.network_type)
        {
            unsupported.push("provider:network_type");
        }
        if req
            .physical_network
            .as_ref()
            .is_some_and(|p| *p != n.physical_network)
        {
            unsupported.push("provider:physical_network");
        }
        if req
            .segmentation_id
            .as_ref()
            .is_some_and(|s| *s != n.segmentation_id)
        {
            unsupported.push("provider:segmentation_id");
        }
        if !unsupported.is_empty() {
            return Err(fault::invalid_input(format!(
                "Plugin does not support updating the following provider network attributes: {}",
                unsupported.join(", ")
            )));
        }
        if let Some(h) = &req.availability_zone_hints {
            self.check_availability_zones(h)?;
            n.availability_zone_hints = serde_json::to_string(h).unwrap_or_else(|_| "[]".into());
        }
        if req.shared == Some(false) && n.shared {
            let ports = db::port::select(
                tx.c(),
                &db::port::Select {
                    network_id: Some(id),
                    ..Default::default()
                },
            )
            .await
            .map_err(db_err)?;
            if ports
                .iter()
                .any(|p| p.project_id != n.project_id && !p.project_id.is_empty())
            {
                return Err(fault::conflict(
                    "InvalidSharedSetting",
                    format!(
                        "Unable to reconfigure sharing settings for network {id}. Multiple projects are using it."
                    ),
                ));
            }
        }
        if req.external == Some(false) && n.external {
            let ports = db::port::select(
                tx.c(),
                &db::port::Select {
                    network_id: Some(id),
                    ..Default::default()
                },
            )
            .await
            .map_err(db_err)?;
            if ports.iter().any(|p| {
                p.device_owner == "network:router_gateway" || p.device_owner == "network:floatingip"
            }) {
                return Err(fault::conflict(
                    "ExternalNetworkInUse",
                    format!(
                        "External network {id} cannot be updated to be made non-external, since it has existing gateway ports."
                    ),
                ));
            }
        }
        if let Some(m) = req.mtu {
            let max = if n.network_type == "vxlan" {
                self.cfg.global_physnet_mtu.saturating_sub(VXLAN_OVERHEAD)
            } else {
                self.cfg.global_physnet_mtu
            };
            n.mtu = check_mtu(m, max)? as i64;
        }
        if let Some(v) = req.name {
            n.name = v;
        }
        if let Some(v) = req.description {
            n.description = v;
        }
        if let Some(v) = req.admin_state_up {
            n.admin_state_up = v;
        }
        if let Some(v) = req.shared {
            n.shared = v;
        }
        if let Some(v) = req.external {
            n.external = v;
        }
        if let Some(v) = req.port_security_enabled {
            n.port_security_enabled = v;
        }
        if let Some(v) = req.dns_domain {
            n.dns_domain = v;
        }
        n.updated_at = tx.now;
        n.revision_number += 1;
        db::network::update(tx.c(), &n).await.map_err(db_err)?;
        self.commit(tx).await?;
        self.load_network(id).await
    }

    pub async fn network_delete(&self, ctx: &AuthContext, id: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let n = db::network::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(id))?;
        self.enforce_or_hide(
            ctx,
            "delete_network",
            "get_network",
            &network_target(&n),
            || fault::network_not_found(id),
        )?;
        // Floating IPs allocated from the network but not associated go
        // with it (Neutron's `delete_disassociated_floatingips`); an
        // associated one keeps its port, which blocks the delete below.
        for f in db::floatingip::by_network(tx.c(), id)
            .await
            .map_err(db_err)?
            .into_iter()
            .filter(|f| f.port_id.is_none())
        {
            db::misc::clear_tags(tx.c(), "floatingips", &f.id)
                .await
                .map_err(db_err)?;
            db::floatingip::delete(tx.c(), &f.id)
                .await
                .map_err(db_err)?;
            db::port::delete(tx.c(), &f.floating_port_id)
                .await
                .map_err(db_err)?;
        }
        let ports = db::port::select(
            tx.c(),
            &db::port::Select {
                network_id: Some(id),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?;
        if ports.iter().any(|p| p.device_owner != "network:dhcp") {
            return Err(fault::conflict(
                "NetworkInUse",
                format!(
                    "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
                ),
            ));
        }
        for p in ports {
            db::misc::clear_tags(tx.c(), "ports", &p.id)
                .await
                .map_err(db_err)?;
            db::port::delete(tx.c(), &p.id).await.map_err(db_err)?;
        }
        for s in db::subnet::by_network(tx.c(), id).await.map_err(db_err)? {
            db::misc::clear_tags(tx.c(), "subnets", &s.id)
                .await
                .map_err(db_err)?;
            db::subnet::delete(tx.c(), &s.id).await.map_err(db_err)?;
        }
        db::misc::clear_tags(tx.c(), "networks", id)
            .await
            .map_err(db_err)?;
        db::network::delete(tx.c(), id).await.map_err(db_err)?;
        self.commit(tx).await
    }

    /// Availability zone hints must name zones that exist (only `nova`).
    pub fn check_availability_zones(&self, hints: &[String]) -> Result<(), Error> {
        for h in hints {
            if h != AVAILABILITY_ZONE {
                return Err(fault::not_found(
                    "AvailabilityZoneNotFound",
                    format!("AvailabilityZone {h} could not be found."),
                ));
            }
        }
        Ok(())
    }
}

/// The one availability zone of this deployment (Neutron's default name).
pub const AVAILABILITY_ZONE: &str = "nova";

fn check_mtu(m: u32, max: u32) -> Result<u32, Error> {
    if m < MIN_MTU {
        return Err(fault::invalid_input(format!(
            "Requested MTU is too small, minimum is {MIN_MTU}"
        )));
    }
    if m > max {
        return Err(fault::invalid_input(format!(
            "Requested MTU is too big, maximum is {max}"
        )));
    }
    Ok(m)
}

/// The lowest conntrack zone no network uses.
async fn free_conntrack_zone(tx: &mut Tx) -> Result<i64, Error> {
    let mut cand = 1i64;
    for z in db::network::conntrack_zones(tx.c()).await.map_err(db_err)? {
        if z < cand {
            continue;
        }
        if z > cand {
            break;
        }
        cand += 1;
    }
    if cand > 65_535 {
        return Err(fault::unavailable(
            "NoNetworkAvailable",
            "Unable to create the network. No conntrack zone is available.",
        ));
    }
    Ok(cand)
}

/// Replaces a resource's tags (in the caller's transaction).
pub async fn set_tags(tx: &mut Tx, kind: &str, id: &str, tags: &[String]) -> Result<(), Error> {
    db::misc::clear_tags(tx.c(), kind, id)
        .await
        .map_err(db_err)?;
    for t in tags {
        db::misc::add_tag(tx.c(), kind, id, t)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}
