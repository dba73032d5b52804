//! Ports: MAC and fixed-IP allocation, port security, security groups and
//! allowed address pairs, bindings, the DHCP port of each network, and the
//! protection of ports other services own.

use std::net::IpAddr;

use api::{AuthContext, Error, Target};
use serde::{Deserialize, Serialize};

use super::ipam::{self, FixedIpRequest, SubnetInfo};
use super::view::{port_target, NetMeta, PortView};
use super::{db_err, fault, py_bool, Network, Tx};
use crate::store as db;

pub const OWNER_DHCP: &str = "network:dhcp";
pub const OWNER_ROUTER_INTERFACE: &str = "network:router_interface";
pub const OWNER_ROUTER_GATEWAY: &str = "network:router_gateway";
pub const OWNER_FLOATINGIP: &str = "network:floatingip";

/// `binding:vnic_type` values Neutron knows.
pub const VNIC_TYPES: &[&str] = &[
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "remote-managed",
    "accelerator-direct",
    "accelerator-direct-physical",
];

/// An allowed address pair as stored and shown (the MAC is filled in with
/// the port's own when the request omits it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPair {
    pub ip_address: String,
    pub mac_address: Option<String>,
}

/// A port the service makes for itself (see `create_service_port`).
pub(crate) struct ServicePort<'a> {
    pub network_id: &'a str,
    pub project_id: &'a str,
    pub device_owner: &'a str,
    pub device_id: &'a str,
    pub host_id: &'a str,
    pub fixed_ips: Option<&'a [FixedIpRequest]>,
}

/// A validated create request.
#[derive(Debug, Clone, Default)]
pub struct PortCreate {
    pub project_id: Option<String>,
    pub network_id: String,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub mac_address: Option<String>,
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    pub device_owner: String,
    pub device_id: String,
    pub host_id: Option<String>,
    pub vnic_type: Option<String>,
    pub profile: Option<serde_json::Value>,
    pub port_security_enabled: Option<bool>,
    pub security_groups: Option<Vec<String>>,
    pub allowed_address_pairs: Option<Vec<AddressPair>>,
    pub dns_name: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// A validated update request: `None` leaves the attribute alone.
#[derive(Debug, Clone, Default)]
pub struct PortUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub mac_address: Option<String>,
    pub fixed_ips: Option<Vec<FixedIpRequest>>,
    pub device_owner: Option<String>,
    pub device_id: Option<String>,
    pub host_id: Option<String>,
    pub vnic_type: Option<String>,
    pub profile: Option<serde_json::Value>,
    pub port_security_enabled: Option<bool>,
    pub security_groups: Option<Vec<String>>,
    pub allowed_address_pairs: Option<Vec<AddressPair>>,
    pub dns_name: Option<String>,
}

/// Ports whose device is a network function: trusted by the data plane
/// (no security groups, no anti-spoofing), created by the service itself.
pub fn is_network_owned(device_owner: &str) -> bool {
    device_owner.starts_with("network:")
}

/// The name a port answers to over DHCP: its `dns_name`, else Neutron's
/// `host-<address with dashes>`.
pub fn hostname(dns_name: &str, first_ip: Option<&str>) -> String {
    if !dns_name.is_empty() {
        return dns_name.to_string();
    }
    match first_ip {
        Some(ip) => format!("host-{}", ip.replace(['.', ':'], "-")),
        None => String::new(),
    }
}

/// A deterministic UUID-shaped id derived from a name (agent ids, the DHCP
/// port's device id).
pub fn uuid_from(name: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

impl Network {
    pub async fn load_port(&self, id: &str) -> Result<PortView, Error> {
        self.port_view(id)
            .await?
            .ok_or_else(|| fault::port_not_found(id))
    }

    /// A MAC no port of the network uses.
    async fn free_mac(&self, tx: &mut Tx, network_id: &str) -> Result<String, Error> {
        for _ in 0..16 {
            let mac = super::addr::random_mac();
            if !db::port::mac_taken(tx.c(), network_id, &mac)
                .await
                .map_err(db_err)?
            {
                return Ok(mac);
            }
        }
        Err(fault::unavailable(
            "NetworkMacAddressGenerationFailure",
            format!("Unable to generate unique mac on network {network_id}."),
        ))
    }

    /// Allocates a new port's fixed IPs: the requested ones, or by default
    /// one address from the first IPv4 subnet with room, one from the first
    /// stateful IPv6 subnet with room, and the EUI-64 address on each
    /// auto-address subnet.
    pub(crate) async fn assign_ips(
        &self,
        tx: &mut Tx,
        port: &db::port::Port,
        reqs: Option<&[FixedIpRequest]>,
    ) -> Result<(), Error> {
        let subnets = ipam::subnets_of(tx, &port.network_id).await?;
        if let Some(reqs) = reqs {
            if reqs.len() > self.cfg.max_fixed_ips_per_port {
                return Err(fault::invalid_input(
                    "Exceeded maximum amount of fixed ips per port.",
                ));
            }
            let resolved = ipam::resolve(&port.network_id, &subnets, reqs)?;
            for (subnet, ip) in &resolved {
                if ipam::allocate(tx, &port.id, &port.mac_address, subnet, *ip)
                    .await?
                    .is_none()
                {
                    return Err(fault::ip_generation_failure(&port.network_id));
                }
            }
            // As Neutron does, SLAAC addresses come implicitly with any
            // list (router legs excepted).
            if !is_network_owned(&port.device_owner) {
                for s in subnets.iter().filter(|s| s.auto_address()) {
                    if !resolved.iter().any(|(r, _)| r.row.id == s.row.id) {
                        ipam::allocate(tx, &port.id, &port.mac_address, s, None).await?;
                    }
                }
            }
            return Ok(());
        }
        let router_port = port.device_owner == super::port::OWNER_ROUTER_INTERFACE;
        for v6 in [false, true] {
            let stateful: Vec<&SubnetInfo> = subnets
                .iter()
                .filter(|s| s.is_v6() == v6 && !s.auto_address())
                .collect();
            if stateful.is_empty() {
                continue;
            }
            let mut got = false;
            for s in stateful {
                if ipam::allocate(tx, &port.id, &port.mac_address, s, None)
                    .await?
                    .is_some()
                {
                    got = true;
                    break;
                }
            }
            if !got {
                return Err(fault::ip_generation_failure(&port.network_id));
            }
        }
        if !router_port {
            for s in subnets.iter().filter(|s| s.auto_address()) {
                ipam::allocate(tx, &port.id, &port.mac_address, s, None).await?;
            }
        }
        Ok(())
    }

    pub async fn port_create(&self, ctx: &AuthContext, req: PortCreate) -> Result<PortView, Error> {
        self.port_create_bulk(ctx, &[req])
            .await?
            .pop()
            .ok_or_else(|| Error::internal(&"bulk create answered nothing"))
    }

    /// Creates ports all or none, in one transaction; a lost race on an
    /// address or a MAC retries the whole batch.
    pub async fn port_create_bulk(
        &self,
        ctx: &AuthContext,
        reqs: &[PortCreate],
    ) -> Result<Vec<PortView>, Error> {
        let mut attempt = 0;
        let ids = loop {
            match self.port_create_batch(ctx, reqs).await {
                Err(e) if fault::is_race(&e) && attempt < 4 => attempt += 1,
                r => break r?,
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            out.push(self.load_port(id).await?);
        }
        Ok(out)
    }

    async fn port_create_batch(
        &self,
        ctx: &AuthContext,
        reqs: &[PortCreate],
    ) -> Result<Vec<String>, Error> {
        let (owners, mut counts) =
            self.bulk_owners(ctx, "ports", reqs.iter().map(|r| &r.project_id))?;
        let mut tx = self.begin().await?;
        let mut ids = Vec::with_capacity(reqs.len());
        for (req, owner) in reqs.iter().zip(owners) {
            let quota_n = counts.remove(&owner).unwrap_or(0);
            ids.push(self.port_create_in(&mut tx, ctx, req, quota_n).await?);
        }
        self.commit(tx).await?;
        Ok(ids)
    }

    /// Creates one port inside `tx` and answers its id; `quota_n` ports of
    /// the owner's quota are checked (0: already checked for the batch).
    async fn port_create_in(
        &self,
        tx: &mut Tx,
        ctx: &AuthContext,
        req: &PortCreate,
        quota_n: i64,
    ) -> Result<String, Error> {
        let owner = self.owner_for_create(ctx, req.project_id.clone())?;
        let net = db::network::get(tx.c(), &req.network_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(&req.network_id))?;
        if !self.allowed(ctx, "get_network", &super::view::network_target(&net)) {
            return Err(fault::network_not_found(&req.network_id));
        }
        let _meta = NetMeta::of(&net);
        let target = Target::new()
            .with("project_id", &owner)
            .with("tenant_id", &owner)
            .with("network_id", &net.id)
            .with("network:project_id", &net.project_id)
            .with("shared", py_bool(net.shared))
            .with("router:external", py_bool(net.external))
            .with("device_owner", &req.device_owner)
            .with("device_id", &req.device_id);
        self.enforce(ctx, "create_port", &target)?;
        let fixed_ip_addr = req
            .fixed_ips
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x.ip_address.is_some()));
        let fixed_ip_subnet = req
            .fixed_ips
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x.subnet_id.is_some()));
        for (set, rule) in [
            (!req.device_owner.is_empty(), "create_port:device_owner"),
            (!req.device_id.is_empty(), "create_port:device_id"),
            (req.mac_address.is_some(), "create_port:mac_address"),
            (req.fixed_ips.is_some(), "create_port:fixed_ips"),
            (fixed_ip_addr, "create_port:fixed_ips:ip_address"),
            (fixed_ip_subnet, "create_port:fixed_ips:subnet_id"),
            (
                req.port_security_enabled.is_some(),
                "create_port:port_security_enabled",
            ),
            (req.host_id.is_some(), "create_port:binding:host_id"),
            (req.profile.is_some(), "create_port:binding:profile"),
            (req.vnic_type.is_some(), "create_port:binding:vnic_type"),
            (
                req.allowed_address_pairs
                    .as_ref()
                    .is_some_and(|a| !a.is_empty()),
                "create_port:allowed_address_pairs",
            ),
            (req.tags.is_some(), "create_port:tags"),
        ] {
            if set {
                self.enforce_attr(ctx, rule, &target)?;
            }
        }
        if quota_n > 0 {
            self.check_quota(tx, &owner, "port", quota_n).await?;
        }
        let port_security = req
            .port_security_enabled
            .unwrap_or(net.port_security_enabled);
        let trusted = is_network_owned(&req.device_owner);
        let sgs = match &req.security_groups {
            Some(ids) => {
                if !ids.is_empty() && !port_security {
                    return Err(port_security_and_groups());
                }
                self.check_port_security_groups(tx, ctx, &owner, ids)
                    .await?;
                ids.clone()
            }
            None if port_security && !trusted => self
                .ensure_default_security_group(tx, &owner)
                .await?
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        let mac = match &req.mac_address {
            Some(m) => {
                if db::port::mac_taken(tx.c(), &net.id, m)
                    .await
                    .map_err(db_err)?
                {
                    return Err(fault::conflict(
                        "MacAddressInUse",
                        format!(
                            "Unable to complete operation for network {}. The mac address {m} is in use.",
                            net.id
                        ),
                    ));
                }
                m.clone()
            }
            None => self.free_mac(tx, &net.id).await?,
        };
        let pairs = match &req.allowed_address_pairs {
            Some(p) if !p.is_empty() => {
                if !port_security {
                    return Err(address_pairs_need_port_security());
                }
                fill_pair_macs(p, &mac)
            }
            _ => Vec::new(),
        };
        let port = db::port::Port {
            id: super::new_id(),
            network_id: net.id.clone(),
            project_id: owner,
            name: req.name.clone(),
            description: req.description.clone(),
            mac_address: mac,
            admin_state_up: req.admin_state_up,
            status: "DOWN".into(),
            device_owner: req.device_owner.clone(),
            device_id: req.device_id.clone(),
            host_id: req.host_id.clone().unwrap_or_default(),
            vnic_type: req.vnic_type.clone().unwrap_or_else(|| "normal".into()),
            binding_profile: req
                .profile
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "{}".into()),
            port_security_enabled: port_security,
            allowed_address_pairs: serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into()),
            dns_name: req.dns_name.clone().unwrap_or_default(),
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 1,
        };
        db::port::insert(tx.c(), &port).await.map_err(db_err)?;
        self.assign_ips(tx, &port, req.fixed_ips.as_deref()).await?;
        for sg in &sgs {
            db::port::add_security_group(tx.c(), &port.id, sg)
                .await
                .map_err(db_err)?;
        }
        if let Some(t) = &req.tags {
            super::network::set_tags(tx, "ports", &port.id, t).await?;
        }
        Ok(port.id)
    }

    pub async fn port_update(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: PortUpdate,
    ) -> Result<PortView, Error> {
        let mut attempt = 0;
        loop {
            match self.port_update_once(ctx, id, &req).await {
                Err(e) if fault::is_race(&e) && attempt < 4 => attempt += 1,
                r => return r,
            }
        }
    }

    async fn port_update_once(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: &PortUpdate,
    ) -> Result<PortView, Error> {
        let mut tx = self.begin().await?;
        let mut p = db::port::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::port_not_found(id))?;
        let net = db::network::get(tx.c(), &p.network_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(&p.network_id))?;
        let meta = NetMeta::of(&net);
        let target = port_target(&p, &meta);
        self.enforce_or_hide(ctx, "update_port", "get_port", &target, || {
            fault::port_not_found(id)
        })?;
        // Attribute rules see the new device owner (so that setting
        // `network:*` is checked) as well as the old one.
        let new_owner_target = match &req.device_owner {
            Some(o) => port_target(
                &db::port::Port {
                    device_owner: o.clone(),
                    ..p.clone()
                },
                &meta,
            ),
            None => target.clone(),
        };
        let fixed_ip_addr = req
            .fixed_ips
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x.ip_address.is_some()));
        let fixed_ip_subnet = req
            .fixed_ips
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x.subnet_id.is_some()));
        for (set, rule, t) in [
            (
                req.device_owner.is_some(),
                "update_port:device_owner",
                &new_owner_target,
            ),
            (
                req.device_owner.is_some(),
                "update_port:device_owner",
                &target,
            ),
            (req.device_id.is_some(), "update_port:device_id", &target),
            (
                req.mac_address.is_some(),
                "update_port:mac_address",
                &target,
            ),
            (req.fixed_ips.is_some(), "update_port:fixed_ips", &target),
            (fixed_ip_addr, "update_port:fixed_ips:ip_address", &target),
            (fixed_ip_subnet, "update_port:fixed_ips:subnet_id", &target),
            (
                req.port_security_enabled.is_some(),
                "update_port:port_security_enabled",
                &target,
            ),
            (
                req.host_id.is_some(),
                "update_port:binding:host_id",
                &target,
            ),
            (
                req.profile.is_some(),
                "update_port:binding:profile",
                &target,
            ),
            (
                req.vnic_type.is_some(),
                "update_port:binding:vnic_type",
                &target,
            ),
            (
                req.allowed_address_pairs.is_some(),
                "update_port:allowed_address_pairs",
                &target,
            ),
        ] {
            if set {
                self.enforce_attr(ctx, rule, t)?;
            }
        }
        if let Some(mac) = &req.mac_address {
            if *mac != p.mac_address {
                if !p.host_id.is_empty() {
                    return Err(fault::conflict(
                        "PortBound",
                        format!(
                            "Unable to complete operation on port {id}, port is already bound, port type: {}, old_mac {}, new_mac {mac}.",
                            vif_type(&p), p.mac_address
                        ),
                    ));
                }
                if db::port::mac_taken(tx.c(), &p.network_id, mac)
                    .await
                    .map_err(db_err)?
                {
                    return Err(fault::conflict(
                        "MacAddressInUse",
                        format!(
                            "Unable to complete operation for network {}. The mac address {mac} is in use.",
                            p.network_id
                        ),
                    ));
                }
                p.mac_address = mac.clone();
            }
        }
        let port_security = req.port_security_enabled.unwrap_or(p.port_security_enabled);
        let current_sgs = db::port::security_groups_of(tx.c(), id)
            .await
            .map_err(db_err)?;
        let sgs = match &req.security_groups {
            Some(ids) => {
                self.check_port_security_groups(&mut tx, ctx, &p.project_id, ids)
                    .await?;
                ids.clone()
            }
            None => current_sgs.clone(),
        };
        if !port_security && !sgs.is_empty() {
            return Err(if req.security_groups.is_some() {
                port_security_and_groups()
            } else {
                fault::conflict(
                    "PortSecurityPortHasSecurityGroup",
                    "Port has security group associated. Cannot disable port security or ip address until security group is removed",
                )
            });
        }
        let pairs: Vec<AddressPair> = match &req.allowed_address_pairs {
            Some(pairs) => fill_pair_macs(pairs, &p.mac_address),
            None => serde_json::from_str(&p.allowed_address_pairs).unwrap_or_default(),
        };
        if !port_security && !pairs.is_empty() {
            return Err(address_pairs_need_port_security());
        }
        if let Some(reqs) = &req.fixed_ips {
            self.change_ips(&mut tx, &p, reqs).await?;
        }
        if req.security_groups.is_some() && sgs != current_sgs {
            db::port::clear_security_groups(tx.c(), id)
                .await
                .map_err(db_err)?;
            for sg in &sgs {
                db::port::add_security_group(tx.c(), id, sg)
                    .await
                    .map_err(db_err)?;
            }
        }
        if let Some(v) = &req.name {
            p.name = v.clone();
        }
        if let Some(v) = &req.description {
            p.description = v.clone();
        }
        if let Some(v) = req.admin_state_up {
            p.admin_state_up = v;
        }
        if let Some(v) = &req.device_owner {
            p.device_owner = v.clone();
        }
        if let Some(v) = &req.device_id {
            p.device_id = v.clone();
        }
        if let Some(v) = &req.host_id {
            if *v != p.host_id {
                // A new binding is not wired until its agent says so.
                p.status = "DOWN".into();
                p.host_id = v.clone();
            }
        }
        if let Some(v) = &req.vnic_type {
            p.vnic_type = v.clone();
        }
        if let Some(v) = &req.profile {
            p.binding_profile = v.to_string();
        }
        if let Some(v) = &req.dns_name {
            p.dns_name = v.clone();
        }
        p.port_security_enabled = port_security;
        p.allowed_address_pairs = serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".into());
        p.updated_at = tx.now;
        p.revision_number += 1;
        db::port::update(tx.c(), &p).await.map_err(db_err)?;
        self.commit(tx).await?;
        self.load_port(id).await
    }

    /// Applies a new fixed-IP list: addresses the port has and the list
    /// names stay, a `subnet_id`-only entry keeps an address the port
    /// already has on that subnet, the rest is allocated, what is no longer
    /// listed is released.
    async fn change_ips(
        &self,
        tx: &mut Tx,
        p: &db::port::Port,
        reqs: &[FixedIpRequest],
    ) -> Result<(), Error> {
        if reqs.len() > self.cfg.max_fixed_ips_per_port {
            return Err(fault::invalid_input(
                "Exceeded maximum amount of fixed ips per port.",
            ));
        }
        let subnets = ipam::subnets_of(tx, &p.network_id).await?;
        let resolved = ipam::resolve(&p.network_id, &subnets, reqs)?;
        let current = db::port::allocations_of_port(tx.c(), &p.id)
            .await
            .map_err(db_err)?;
        let mut keep: Vec<&db::port::Allocation> = Vec::new();
        let mut new: Vec<(&SubnetInfo, Option<IpAddr>)> = Vec::new();
        for (s, ip) in &resolved {
            let found = current.iter().find(|a| {
                !keep.contains(a)
                    && a.subnet_id == s.row.id
                    && match ip {
                        Some(ip) => a.ip_address == ip.to_string(),
                        None => true,
                    }
            });
            match found {
                Some(a) => keep.push(a),
                None => new.push((s, *ip)),
            }
        }
        for a in &current {
            if !keep.contains(&a) {
                self.check_ip_not_floating(tx, &p.id, &a.ip_address).await?;
                db::port::release(tx.c(), &p.id, &a.ip_address)
                    .await
                    .map_err(db_err)?;
            }
        }
        for (s, ip) in new {
            if ipam::allocate(tx, &p.id, &p.mac_address, s, ip)
                .await?
                .is_none()
            {
                return Err(fault::ip_generation_failure(&p.network_id));
            }
        }
        Ok(())
    }

    async fn check_ip_not_floating(
        &self,
        tx: &mut Tx,
        port_id: &str,
        ip: &str,
    ) -> Result<(), Error> {
        for f in db::floatingip::by_port(tx.c(), port_id)
            .await
            .map_err(db_err)?
        {
            if f.fixed_ip_address.as_deref() == Some(ip) {
                return Err(fault::conflict(
                    "FipAssociated",
                    format!(
                        "Unable to complete operation on port {port_id} because it has a floating IP {} associated with fixed IP {ip}.",
                        f.floating_ip_address
                    ),
                ));
            }
        }
        Ok(())
    }

    pub async fn port_delete(&self, ctx: &AuthContext, id: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let p = db::port::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::port_not_found(id))?;
        let net = db::network::get(tx.c(), &p.network_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(&p.network_id))?;
        self.enforce_or_hide(
            ctx,
            "delete_port",
            "get_port",
            &port_target(&p, &NetMeta::of(&net)),
            || fault::port_not_found(id),
        )?;
        if matches!(
            p.device_owner.as_str(),
            OWNER_ROUTER_INTERFACE | OWNER_ROUTER_GATEWAY | OWNER_FLOATINGIP
        ) {
            return Err(fault::conflict(
                "ServicePortInUse",
                format!(
                    "Port {id} cannot be deleted directly via the port API: has device owner {}.",
                    p.device_owner
                ),
            ));
        }
        self.delete_port_in(&mut tx, &p).await?;
        self.commit(tx).await
    }

    /// Deletes a port and what hangs off it (floating IP associations are
    /// released, tags removed), in the caller's transaction.
    pub(crate) async fn delete_port_in(
        &self,
        tx: &mut Tx,
        p: &db::port::Port,
    ) -> Result<(), Error> {
        for mut f in db::floatingip::by_port(tx.c(), &p.id)
            .await
            .map_err(db_err)?
        {
            f.port_id = None;
            f.fixed_ip_address = None;
            f.router_id = None;
            f.status = "DOWN".into();
            f.updated_at = tx.now;
            f.revision_number += 1;
            db::floatingip::update(tx.c(), &f).await.map_err(db_err)?;
        }
        db::misc::clear_tags(tx.c(), "ports", &p.id)
            .await
            .map_err(db_err)?;
        db::port::delete(tx.c(), &p.id).await.map_err(db_err)
    }

    /// A port the service creates for itself (DHCP, router legs, floating
    /// IPs): no policy, no quota, no security groups.
    pub(crate) async fn create_service_port(
        &self,
        tx: &mut Tx,
        sp: ServicePort<'_>,
    ) -> Result<db::port::Port, Error> {
        let ServicePort {
            network_id,
            project_id,
            device_owner,
            device_id,
            host_id,
            fixed_ips,
        } = sp;
        let mac = self.free_mac(tx, network_id).await?;
        let port = db::port::Port {
            id: super::new_id(),
            network_id: network_id.to_string(),
            project_id: project_id.to_string(),
            name: String::new(),
            description: String::new(),
            mac_address: mac,
            admin_state_up: true,
            status: if device_owner == OWNER_FLOATINGIP {
                "N/A".into()
            } else {
                "DOWN".into()
            },
            device_owner: device_owner.to_string(),
            device_id: device_id.to_string(),
            host_id: host_id.to_string(),
            vnic_type: "normal".into(),
            binding_profile: "{}".into(),
            port_security_enabled: false,
            allowed_address_pairs: "[]".into(),
            dns_name: String::new(),
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 1,
        };
        db::port::insert(tx.c(), &port).await.map_err(db_err)?;
        self.assign_ips(tx, &port, fixed_ips).await?;
        Ok(port)
    }

    /// Makes the network's DHCP port match its DHCP-enabled subnets: created
    /// (bound to this host) when the first one appears, given an address on
    /// each, released from subnets that no longer want it, deleted when
    /// none is left.
    pub(crate) async fn sync_dhcp_port(&self, tx: &mut Tx, network_id: &str) -> Result<(), Error> {
        let net = match db::network::get(tx.c(), network_id).await.map_err(db_err)? {
            Some(n) => n,
            None => return Ok(()),
        };
        let subnets = ipam::subnets_of(tx, network_id).await?;
        let wanted: Vec<&SubnetInfo> = subnets.iter().filter(|s| s.row.enable_dhcp).collect();
        let existing = db::port::select(
            tx.c(),
            &db::port::Select {
                network_id: Some(network_id),
                device_owner: Some(OWNER_DHCP),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?
        .into_iter()
        .next();
        if wanted.is_empty() {
            if let Some(p) = existing {
                self.delete_port_in(tx, &p).await?;
            }
            return Ok(());
        }
        let port = match existing {
            Some(p) => p,
            None => {
                let device_id = format!("dhcp{}-{network_id}", uuid_from(&self.cfg.host));
                self.create_service_port(
                    tx,
                    ServicePort {
                        network_id,
                        project_id: &net.project_id,
                        device_owner: OWNER_DHCP,
                        device_id: &device_id,
                        host_id: &self.cfg.host,
                        fixed_ips: Some(&[]),
                    },
                )
                .await?
            }
        };
        let allocs = db::port::allocations_of_port(tx.c(), &port.id)
            .await
            .map_err(db_err)?;
        for a in &allocs {
            if !wanted.iter().any(|s| s.row.id == a.subnet_id) {
                db::port::release(tx.c(), &port.id, &a.ip_address)
                    .await
                    .map_err(db_err)?;
            }
        }
        for s in wanted {
            if !allocs.iter().any(|a| a.subnet_id == s.row.id)
                && ipam::allocate(tx, &port.id, &port.mac_address, s, None)
                    .await?
                    .is_none()
            {
                tracing::warn!(subnet = %s.row.id, "no address left for the DHCP port");
            }
        }
        Ok(())
    }
}

/// `binding:vif_type` of a port.
pub fn vif_type(p: &db::port::Port) -> &'static str {
    if p.host_id.is_empty() {
        "unbound"
    } else if p.vnic_type == "normal" {
        "bridge"
    } else {
        "binding_failed"
    }
}

fn fill_pair_macs(pairs: &[AddressPair], mac: &str) -> Vec<AddressPair> {
    pairs
        .iter()
        .map(|p| AddressPair {
            ip_address: p.ip_address.clone(),
            mac_address: Some(p.mac_address.clone().unwrap_or_else(|| mac.to_string())),
        })
        .collect()
}

fn port_security_and_groups() -> Error {
    fault::conflict(
        "PortSecurityAndIPRequiredForSecurityGroups",
        "Port security must be enabled and port must have an IP address in order to use security groups.",
    )
}

fn address_pairs_need_port_security() -> Error {
    fault::conflict(
        "AddressPairAndPortSecurityRequired",
        "Port Security must be enabled in order to have allowed address pairs on a port.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_and_ids() {
        assert_eq!(hostname("", Some("10.0.0.5")), "host-10-0-0-5");
        assert_eq!(hostname("", Some("fd00::5")), "host-fd00--5");
        assert_eq!(hostname("vm1", Some("10.0.0.5")), "vm1");
        let a = uuid_from("h1");
        assert_eq!(a, uuid_from("h1"));
        assert_ne!(a, uuid_from("h2"));
        assert_eq!(a.len(), 36);
    }
}
