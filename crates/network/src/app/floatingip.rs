//! Floating IPs: an address on an external network (held by a port of
//! its own), associated with a fixed IPv4 address of a port behind a
//! router that has a gateway on that network.

use std::net::IpAddr;

use api::{AuthContext, Error, Target};

use super::addr;
use super::ipam::{self, FixedIpRequest};
use super::port::{ServicePort, OWNER_FLOATINGIP, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE};
use super::view::{fip_target, FloatingIpView};
use super::{db_err, fault, Network, Tx};
use crate::store as db;

#[derive(Debug, Clone, Default)]
pub struct FloatingIpCreate {
    pub project_id: Option<String>,
    pub floating_network_id: String,
    pub floating_ip_address: Option<IpAddr>,
    pub subnet_id: Option<String>,
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<IpAddr>,
    pub description: String,
    pub dns_name: String,
    pub dns_domain: String,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct FloatingIpUpdate {
    /// `Some(None)` disassociates.
    pub port_id: Option<Option<String>>,
    pub fixed_ip_address: Option<Option<IpAddr>>,
    pub description: Option<String>,
}

impl Network {
    pub async fn load_floatingip(&self, id: &str) -> Result<FloatingIpView, Error> {
        self.floatingip_views(Some(id))
            .await?
            .pop()
            .ok_or_else(|| fault::floatingip_not_found(id))
    }

    pub async fn floatingip_create(
        &self,
        ctx: &AuthContext,
        req: FloatingIpCreate,
    ) -> Result<FloatingIpView, Error> {
        let owner = self.owner_for_create(ctx, req.project_id.clone())?;
        let target = Target::new()
            .with("project_id", &owner)
            .with("tenant_id", &owner);
        self.enforce(ctx, "create_floatingip", &target)?;
        if req.floating_ip_address.is_some() {
            self.enforce_attr(ctx, "create_floatingip:floating_ip_address", &target)?;
        }
        if req.tags.is_some() {
            self.enforce_attr(ctx, "create_floatingip:tags", &target)?;
        }
        let mut tx = self.begin().await?;
        let net = db::network::get(tx.c(), &req.floating_network_id)
            .await
            .map_err(db_err)?
            .filter(|n| self.allowed(ctx, "get_network", &super::view::network_target(n)))
            .ok_or_else(|| fault::network_not_found(&req.floating_network_id))?;
        if !net.external {
            return Err(fault::bad_resource(
                "floatingip",
                format!("Network {} is not a valid external network", net.id),
            ));
        }
        self.check_quota(&mut tx, &owner, "floatingip", 1).await?;
        let subnets: Vec<_> = ipam::subnets_of(&mut tx, &net.id)
            .await?
            .into_iter()
            .filter(|s| !s.is_v6())
            .collect();
        if let Some(sid) = &req.subnet_id {
            if !subnets.iter().any(|s| s.row.id == *sid) {
                return Err(fault::bad_resource(
                    "floatingip",
                    format!("Subnet {sid} is not an IPv4 subnet of network {}", net.id),
                ));
            }
        }
        if let Some(ip) = req.floating_ip_address {
            if ip.is_ipv6() {
                return Err(fault::bad_resource(
                    "floatingip",
                    "Floating IP addresses must be IPv4",
                ));
            }
        }
        let id = super::new_id();
        // One IPv4 address: the one asked for, or the first free one of the
        // subnet asked for, or of the first subnet with room.
        let candidates: Vec<FixedIpRequest> =
            if req.floating_ip_address.is_some() || req.subnet_id.is_some() {
                vec![FixedIpRequest {
                    subnet_id: req.subnet_id.clone(),
                    ip_address: req.floating_ip_address,
                }]
            } else {
                subnets
                    .iter()
                    .map(|s| FixedIpRequest {
                        subnet_id: Some(s.row.id.clone()),
                        ip_address: None,
                    })
                    .collect()
            };
        let mut port = None;
        for c in &candidates {
            match self
                .create_service_port(
                    &mut tx,
                    ServicePort {
                        network_id: &net.id,
                        project_id: "",
                        device_owner: OWNER_FLOATINGIP,
                        device_id: &id,
                        host_id: "",
                        fixed_ips: Some(std::slice::from_ref(c)),
                    },
                )
                .await
            {
                Ok(p) => {
                    port = Some(p);
                    break;
                }
                Err(e) if e.kind == Some("IpAddressGenerationFailure") && candidates.len() > 1 => {
                    // Tried the next subnet; the failed port must go.
                    self.drop_empty_floating_ports(&mut tx, &id).await?;
                }
                Err(e) if e.kind == Some("IpAddressGenerationFailure") => break,
                Err(e) => return Err(e),
            }
        }
        let Some(port) = port else {
            return Err(fault::bad(
                "ExternalIpAddressExhausted",
                format!(
                    "Unable to find any IP address on external network {}.",
                    net.id
                ),
            ));
        };
        let fip_addr = db::port::allocations_of_port(tx.c(), &port.id)
            .await
            .map_err(db_err)?
            .first()
            .map(|a| a.ip_address.clone())
            .unwrap_or_default();
        let mut f = db::floatingip::FloatingIp {
            id,
            project_id: owner,
            floating_network_id: net.id.clone(),
            floating_port_id: port.id.clone(),
            floating_ip_address: fip_addr,
            port_id: None,
            fixed_ip_address: None,
            router_id: None,
            status: "DOWN".into(),
            description: req.description,
            dns_name: req.dns_name,
            dns_domain: req.dns_domain,
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 1,
        };
        if let Some(pid) = &req.port_id {
            self.associate(&mut tx, ctx, &mut f, pid, req.fixed_ip_address)
                .await?;
        }
        db::floatingip::insert(tx.c(), &f).await.map_err(db_err)?;
        if let Some(t) = &req.tags {
            super::network::set_tags(&mut tx, "floatingips", &f.id, t).await?;
        }
        let fid = f.id.clone();
        self.commit(tx).await?;
        self.load_floatingip(&fid).await
    }

    async fn drop_empty_floating_ports(&self, tx: &mut Tx, fip_id: &str) -> Result<(), Error> {
        for p in db::port::select(
            tx.c(),
            &db::port::Select {
                device_id: Some(fip_id),
                device_owner: Some(OWNER_FLOATINGIP),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?
        {
            db::port::delete(tx.c(), &p.id).await.map_err(db_err)?;
        }
        Ok(())
    }

    /// Points `f` at a fixed IPv4 address of `port_id` and at the router
    /// that connects it to the floating network.
    async fn associate(
        &self,
        tx: &mut Tx,
        ctx: &AuthContext,
        f: &mut db::floatingip::FloatingIp,
        port_id: &str,
        fixed: Option<IpAddr>,
    ) -> Result<(), Error> {
        let p = db::port::get(tx.c(), port_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::port_not_found(port_id))?;
        let net = db::network::get(tx.c(), &p.network_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(&p.network_id))?;
        let pt = super::view::port_target(&p, &super::view::NetMeta::of(&net));
        if !self.allowed(ctx, "get_port", &pt) {
            return Err(fault::port_not_found(port_id));
        }
        if p.project_id != f.project_id && !self.is_admin(ctx) {
            return Err(fault::bad_resource(
                "floatingip",
                format!(
                    "Cannot create floating IP and bind it to Port {port_id}, since that port is owned by a different project"
                ),
            ));
        }
        if p.device_owner == OWNER_ROUTER_GATEWAY || p.device_owner == OWNER_FLOATINGIP {
            return Err(fault::bad_resource(
                "floatingip",
                format!(
                    "Port {port_id} has owner {} and therefore cannot be assigned a floating IP",
                    p.device_owner
                ),
            ));
        }
        let allocs = db::port::allocations_of_port(tx.c(), port_id)
            .await
            .map_err(db_err)?;
        let v4: Vec<&db::port::Allocation> = allocs
            .iter()
            .filter(|a| addr::parse_ip(&a.ip_address).is_some_and(|i| i.is_ipv4()))
            .collect();
        let chosen = match fixed {
            Some(ip) => *v4
                .iter()
                .find(|a| a.ip_address == ip.to_string())
                .ok_or_else(|| {
                    fault::bad_resource(
                        "floatingip",
                        format!("Port {port_id} does not have fixed ip {ip}"),
                    )
                })?,
            None => match v4.as_slice() {
                [] => {
                    return Err(fault::bad_resource(
                        "floatingip",
                        format!(
                            "Cannot add floating IP to port {port_id} that has no fixed IPv4 addresses"
                        ),
                    ))
                }
                [one] => *one,
                _ => {
                    return Err(fault::bad_resource(
                        "floatingip",
                        format!(
                            "Port {port_id} has multiple fixed IPv4 addresses. Must provide a specific IPv4 address when assigning a floating IP"
                        ),
                    ))
                }
            },
        };
        for other in db::floatingip::by_port(tx.c(), port_id)
            .await
            .map_err(db_err)?
        {
            if other.id != f.id
                && other.fixed_ip_address.as_deref() == Some(chosen.ip_address.as_str())
            {
                return Err(fault::conflict(
                    "FloatingIPPortAlreadyAssociated",
                    format!(
                        "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {}, as that fixed IP already has a floating IP on external network {}.",
                        f.floating_ip_address, f.id, chosen.ip_address, other.floating_network_id
                    ),
                ));
            }
        }
        let router = self
            .router_for(tx, &f.floating_network_id, &chosen.subnet_id)
            .await?
            .ok_or_else(|| {
                fault::not_found(
                    "ExternalGatewayForFloatingIPNotFound",
                    format!(
                        "External network {} is not reachable from subnet {}.  Therefore, cannot associate Port {port_id} with a Floating IP.",
                        f.floating_network_id, chosen.subnet_id
                    ),
                )
            })?;
        f.port_id = Some(port_id.to_string());
        f.fixed_ip_address = Some(chosen.ip_address.clone());
        f.router_id = Some(router);
        f.status = "ACTIVE".into();
        Ok(())
    }

    /// A router with a gateway on `ext_net` and an interface on `subnet`.
    async fn router_for(
        &self,
        tx: &mut Tx,
        ext_net: &str,
        subnet: &str,
    ) -> Result<Option<String>, Error> {
        let legs = db::port::select(
            tx.c(),
            &db::port::Select {
                device_owner: Some(OWNER_ROUTER_INTERFACE),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?;
        for leg in legs {
            let on_subnet = db::port::allocations_of_port(tx.c(), &leg.id)
                .await
                .map_err(db_err)?
                .iter()
                .any(|a| a.subnet_id == subnet);
            if !on_subnet {
                continue;
            }
            let Some(r) = db::router::get(tx.c(), &leg.device_id)
                .await
                .map_err(db_err)?
            else {
                continue;
            };
            if let Some(gw) = &r.gw_port_id {
                if let Some(gp) = db::port::get(tx.c(), gw).await.map_err(db_err)? {
                    if gp.network_id == ext_net {
                        return Ok(Some(r.id));
                    }
                }
            }
        }
        Ok(None)
    }

    pub async fn floatingip_update(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: FloatingIpUpdate,
    ) -> Result<FloatingIpView, Error> {
        let mut tx = self.begin().await?;
        let mut f = db::floatingip::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::floatingip_not_found(id))?;
        self.enforce_or_hide(
            ctx,
            "update_floatingip",
            "get_floatingip",
            &fip_target(&f),
            || fault::floatingip_not_found(id),
        )?;
        let fixed = req.fixed_ip_address.flatten();
        match (&req.port_id, fixed) {
            (Some(None), _) => {
                f.port_id = None;
                f.fixed_ip_address = None;
                f.router_id = None;
                f.status = "DOWN".into();
            }
            (Some(Some(pid)), fixed) => {
                let pid = pid.clone();
                self.associate(&mut tx, ctx, &mut f, &pid, fixed).await?;
            }
            (None, Some(ip)) => match f.port_id.clone() {
                Some(pid) => self.associate(&mut tx, ctx, &mut f, &pid, Some(ip)).await?,
                None => {
                    return Err(fault::bad_resource(
                        "floatingip",
                        "fixed_ip_address cannot be specified without a port_id",
                    ))
                }
            },
            (None, None) => {}
        }
        if let Some(d) = req.description {
            f.description = d;
        }
        f.updated_at = tx.now;
        f.revision_number += 1;
        db::floatingip::update(tx.c(), &f).await.map_err(db_err)?;
        self.commit(tx).await?;
        self.load_floatingip(id).await
    }

    pub async fn floatingip_delete(&self, ctx: &AuthContext, id: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let f = db::floatingip::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::floatingip_not_found(id))?;
        self.enforce_or_hide(
            ctx,
            "delete_floatingip",
            "get_floatingip",
            &fip_target(&f),
            || fault::floatingip_not_found(id),
        )?;
        db::misc::clear_tags(tx.c(), "floatingips", id)
            .await
            .map_err(db_err)?;
        db::floatingip::delete(tx.c(), id).await.map_err(db_err)?;
        if let Some(p) = db::port::get(tx.c(), &f.floating_port_id)
            .await
            .map_err(db_err)?
        {
            db::port::delete(tx.c(), &p.id).await.map_err(db_err)?;
        }
        self.commit(tx).await
    }
}
