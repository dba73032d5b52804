//! Routers: the gateway leg on an external network (with SNAT on or off),
//! interfaces by subnet or by port, static routes, deletion. Every router
//! is hosted on this node (`Config::host`) in the all-in-one: its legs are
//! bound there.

use std::net::IpAddr;

use api::{AuthContext, Error, Target};
use netmodel::Cidr;
use serde_json::{json, Value};

use super::addr;
use super::ipam::{self, FixedIpRequest, Route, SubnetInfo};
use super::port::{ServicePort, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE};
use super::view::{router_target, RouterView};
use super::{db_err, fault, Network, Tx};
use crate::store as db;

/// `external_gateway_info` as requested.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayRequest {
    pub network_id: String,
    pub enable_snat: Option<bool>,
    pub external_fixed_ips: Option<Vec<FixedIpRequest>>,
}

#[derive(Debug, Clone, Default)]
pub struct RouterCreate {
    pub project_id: Option<String>,
    pub name: String,
    pub description: String,
    pub admin_state_up: bool,
    pub gateway: Option<GatewayRequest>,
    pub availability_zone_hints: Vec<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct RouterUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    /// `Some(None)` clears the gateway.
    pub gateway: Option<Option<GatewayRequest>>,
    pub routes: Option<Vec<(Cidr, IpAddr)>>,
}

/// Which interface an add/remove names.
#[derive(Debug, Clone, Default)]
pub struct InterfaceRequest {
    pub subnet_id: Option<String>,
    pub port_id: Option<String>,
}

fn routes_of(r: &db::router::Router) -> Vec<Route> {
    serde_json::from_str(&r.routes).unwrap_or_default()
}

impl Network {
    pub async fn load_router(&self, id: &str) -> Result<RouterView, Error> {
        self.router_views(Some(id))
            .await?
            .pop()
            .ok_or_else(|| fault::router_not_found(id))
    }

    fn gateway_rules(
        &self,
        ctx: &AuthContext,
        op: &str,
        gw: &GatewayRequest,
        target: &Target,
    ) -> Result<(), Error> {
        self.enforce_attr(ctx, &format!("{op}_router:external_gateway_info"), target)?;
        self.enforce_attr(
            ctx,
            &format!("{op}_router:external_gateway_info:network_id"),
            target,
        )?;
        if gw.enable_snat.is_some() {
            self.enforce_attr(
                ctx,
                &format!("{op}_router:external_gateway_info:enable_snat"),
                target,
            )?;
        }
        if gw.external_fixed_ips.is_some() {
            self.enforce_attr(
                ctx,
                &format!("{op}_router:external_gateway_info:external_fixed_ips"),
                target,
            )?;
        }
        Ok(())
    }

    pub async fn router_create(
        &self,
        ctx: &AuthContext,
        req: RouterCreate,
    ) -> Result<RouterView, Error> {
        let owner = self.owner_for_create(ctx, req.project_id.clone())?;
        let target = Target::new()
            .with("project_id", &owner)
            .with("tenant_id", &owner);
        self.enforce(ctx, "create_router", &target)?;
        if let Some(gw) = &req.gateway {
            self.gateway_rules(ctx, "create", gw, &target)?;
        }
        if req.tags.is_some() {
            self.enforce_attr(ctx, "create_router:tags", &target)?;
        }
        self.check_availability_zones(&req.availability_zone_hints)?;
        let mut tx = self.begin().await?;
        self.check_quota(&mut tx, &owner, "router", 1).await?;
        let mut r = db::router::Router {
            id: super::new_id(),
            project_id: owner,
            name: req.name,
            description: req.description,
            admin_state_up: req.admin_state_up,
            status: "ACTIVE".into(),
            gw_port_id: None,
            enable_snat: true,
            routes: "[]".into(),
            availability_zone_hints: serde_json::to_string(&req.availability_zone_hints)
                .unwrap_or_else(|_| "[]".into()),
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 1,
        };
        db::router::insert(tx.c(), &r).await.map_err(db_err)?;
        if let Some(gw) = &req.gateway {
            self.set_gateway(&mut tx, ctx, &mut r, Some(gw)).await?;
            db::router::update(tx.c(), &r).await.map_err(db_err)?;
        }
        if let Some(t) = &req.tags {
            super::network::set_tags(&mut tx, "routers", &r.id, t).await?;
        }
        let id = r.id.clone();
        self.commit(tx).await?;
        self.load_router(&id).await
    }

    /// Sets, changes or clears the gateway of `r` (the caller writes `r`).
    async fn set_gateway(
        &self,
        tx: &mut Tx,
        ctx: &AuthContext,
        r: &mut db::router::Router,
        gw: Option<&GatewayRequest>,
    ) -> Result<(), Error> {
        let current = match &r.gw_port_id {
            Some(pid) => db::port::get(tx.c(), pid).await.map_err(db_err)?,
            None => None,
        };
        let same_network = match (&current, gw) {
            (Some(p), Some(g)) => p.network_id == g.network_id,
            _ => false,
        };
        if same_network {
            let (Some(p), Some(g)) = (current, gw) else {
                return Ok(());
            };
            if let Some(s) = g.enable_snat {
                r.enable_snat = s;
            }
            if let Some(reqs) = &g.external_fixed_ips {
                let wanted = self.resolve_gateway_ips(tx, &p.network_id, reqs).await?;
                let have: Vec<String> = db::port::allocations_of_port(tx.c(), &p.id)
                    .await
                    .map_err(db_err)?
                    .into_iter()
                    .map(|a| a.ip_address)
                    .collect();
                if wanted != have {
                    self.check_gateway_unused(tx, r, &p.network_id).await?;
                    for ip in &have {
                        db::port::release(tx.c(), &p.id, ip).await.map_err(db_err)?;
                    }
                    self.assign_ips(tx, &p, Some(reqs)).await?;
                }
            }
            return Ok(());
        }
        if let Some(p) = current {
            self.check_gateway_unused(tx, r, &p.network_id).await?;
            r.gw_port_id = None;
            db::router::update(tx.c(), r).await.map_err(db_err)?;
            self.delete_port_in(tx, &p).await?;
        }
        let Some(g) = gw else {
            r.enable_snat = true;
            return Ok(());
        };
        let net = db::network::get(tx.c(), &g.network_id)
            .await
            .map_err(db_err)?
            .filter(|n| self.allowed(ctx, "get_network", &super::view::network_target(n)))
            .ok_or_else(|| fault::network_not_found(&g.network_id))?;
        if !net.external {
            return Err(fault::bad_resource(
                "router",
                format!("Network {} is not an external network", net.id),
            ));
        }
        // A gateway on an external network without a subnet is accepted,
        // with no addresses, as current Neutron does: the subnet may come
        // later (or the gateway serves IPv6 only through routes).
        let port = self
            .create_service_port(
                tx,
                ServicePort {
                    network_id: &net.id,
                    project_id: "",
                    device_owner: OWNER_ROUTER_GATEWAY,
                    device_id: &r.id,
                    host_id: &self.cfg.host,
                    fixed_ips: g.external_fixed_ips.as_deref(),
                },
            )
            .await?;
        r.gw_port_id = Some(port.id);
        r.enable_snat = g.enable_snat.unwrap_or(true);
        Ok(())
    }

    /// A subnet new on an external network gives every router gateway on
    /// that network that has no address of its IP version one (Neutron's
    /// `update_router_gw_ports`): a gateway set while the network had no
    /// subnet gets its address this way. A pool already full leaves the
    /// gateway as it is; the subnet is still created.
    pub(crate) async fn add_gateway_addresses(
        &self,
        tx: &mut Tx,
        subnet: &SubnetInfo,
    ) -> Result<(), Error> {
        if subnet.auto_address() {
            return Ok(());
        }
        let ports = db::port::select(
            tx.c(),
            &db::port::Select {
                network_id: Some(&subnet.row.network_id),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?;
        for p in ports
            .iter()
            .filter(|p| p.device_owner == OWNER_ROUTER_GATEWAY)
        {
            let allocs = db::port::allocations_of_port(tx.c(), &p.id)
                .await
                .map_err(db_err)?;
            let has_version = allocs.iter().any(|a| {
                addr::parse_ip(&a.ip_address).is_some_and(|ip| ip.is_ipv6() == subnet.is_v6())
            });
            if !has_version {
                ipam::allocate(tx, &p.id, &p.mac_address, subnet, None).await?;
            }
        }
        Ok(())
    }

    async fn resolve_gateway_ips(
        &self,
        tx: &mut Tx,
        network_id: &str,
        reqs: &[FixedIpRequest],
    ) -> Result<Vec<String>, Error> {
        let subnets = ipam::subnets_of(tx, network_id).await?;
        Ok(ipam::resolve(network_id, &subnets, reqs)?
            .into_iter()
            .filter_map(|(_, ip)| ip.map(|i| i.to_string()))
            .collect())
    }

    /// Floating IPs that go through the router's gateway pin it.
    async fn check_gateway_unused(
        &self,
        tx: &mut Tx,
        r: &db::router::Router,
        net: &str,
    ) -> Result<(), Error> {
        if !db::floatingip::by_router(tx.c(), &r.id)
            .await
            .map_err(db_err)?
            .is_empty()
        {
            return Err(fault::conflict(
                "RouterExternalGatewayInUseByFloatingIp",
                format!(
                    "Gateway cannot be updated for router {}, since a gateway to external network {net} is required by one or more floating IPs.",
                    r.id
                ),
            ));
        }
        Ok(())
    }

    pub async fn router_update(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: RouterUpdate,
    ) -> Result<RouterView, Error> {
        let mut tx = self.begin().await?;
        let mut r = db::router::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::router_not_found(id))?;
        let target = router_target(&r);
        self.enforce_or_hide(ctx, "update_router", "get_router", &target, || {
            fault::router_not_found(id)
        })?;
        if let Some(g) = &req.gateway {
            match g {
                Some(gw) => self.gateway_rules(ctx, "update", gw, &target)?,
                None => self.enforce_attr(ctx, "update_router:external_gateway_info", &target)?,
            }
            self.set_gateway(&mut tx, ctx, &mut r, g.as_ref()).await?;
        }
        if let Some(routes) = &req.routes {
            self.check_routes(&mut tx, &r, routes).await?;
            let rs: Vec<Route> = routes
                .iter()
                .map(|(d, n)| Route {
                    destination: d.to_string(),
                    nexthop: n.to_string(),
                })
                .collect();
            r.routes = serde_json::to_string(&rs).unwrap_or_else(|_| "[]".into());
        }
        if let Some(v) = req.name {
            r.name = v;
        }
        if let Some(v) = req.description {
            r.description = v;
        }
        if let Some(v) = req.admin_state_up {
            r.admin_state_up = v;
        }
        r.updated_at = tx.now;
        r.revision_number += 1;
        db::router::update(tx.c(), &r).await.map_err(db_err)?;
        self.commit(tx).await?;
        self.load_router(id).await
    }

    /// `add_extraroutes` / `remove_extraroutes`: the union or difference
    /// with the router's routes.
    pub async fn router_extra_routes(
        &self,
        ctx: &AuthContext,
        id: &str,
        routes: Vec<(Cidr, IpAddr)>,
        add: bool,
    ) -> Result<RouterView, Error> {
        let action = if add {
            "add_extraroutes"
        } else {
            "remove_extraroutes"
        };
        let mut tx = self.begin().await?;
        let mut r = db::router::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::router_not_found(id))?;
        self.enforce_or_hide(ctx, action, "get_router", &router_target(&r), || {
            fault::router_not_found(id)
        })?;
        let mut current: Vec<(Cidr, IpAddr)> = routes_of(&r)
            .iter()
            .filter_map(|x| {
                Some((
                    addr::parse_cidr(&x.destination)?,
                    addr::parse_ip(&x.nexthop)?,
                ))
            })
            .collect();
        if add {
            for rt in routes {
                if !current.contains(&rt) {
                    current.push(rt);
                }
            }
        } else {
            current.retain(|rt| !routes.contains(rt));
        }
        self.check_routes(&mut tx, &r, &current).await?;
        let rs: Vec<Route> = current
            .iter()
            .map(|(d, n)| Route {
                destination: d.to_string(),
                nexthop: n.to_string(),
            })
            .collect();
        r.routes = serde_json::to_string(&rs).unwrap_or_else(|_| "[]".into());
        r.updated_at = tx.now;
        r.revision_number += 1;
        db::router::update(tx.c(), &r).await.map_err(db_err)?;
        self.commit(tx).await?;
        self.load_router(id).await
    }

    /// The subnets the router has a leg on (interfaces and gateway).
    async fn router_subnets(
        &self,
        tx: &mut Tx,
        r: &db::router::Router,
    ) -> Result<Vec<(SubnetInfo, String)>, Error> {
        let ports = db::port::select(
            tx.c(),
            &db::port::Select {
                device_id: Some(&r.id),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?;
        let mut out = Vec::new();
        for p in ports {
            if p.device_owner != OWNER_ROUTER_INTERFACE && p.device_owner != OWNER_ROUTER_GATEWAY {
                continue;
            }
            for a in db::port::allocations_of_port(tx.c(), &p.id)
                .await
                .map_err(db_err)?
            {
                if let Some(s) = db::subnet::get(tx.c(), &a.subnet_id)
                    .await
                    .map_err(db_err)?
                {
                    out.push((SubnetInfo::new(s), a.ip_address.clone()));
                }
            }
        }
        Ok(out)
    }

    async fn check_routes(
        &self,
        tx: &mut Tx,
        r: &db::router::Router,
        routes: &[(Cidr, IpAddr)],
    ) -> Result<(), Error> {
        if routes.len() > self.cfg.max_routes {
            return Err(fault::bad(
                "RoutesExhausted",
                format!(
                    "Unable to complete operation for {}. The number of routes exceeds the maximum {}.",
                    r.id, self.cfg.max_routes
                ),
            ));
        }
        let legs = self.router_subnets(tx, r).await?;
        for (dest, nexthop) in routes {
            let shown = format!("{{'destination': '{dest}', 'nexthop': '{nexthop}'}}");
            if dest.addr.is_ipv4() != nexthop.is_ipv4() {
                return Err(invalid_routes(
                    &shown,
                    "the nexthop and destination are of different IP versions",
                ));
            }
            let connected = legs.iter().any(|(s, _)| addr::contains(&s.cidr, *nexthop));
            if !connected {
                return Err(invalid_routes(
                    &shown,
                    "the nexthop is not connected with router",
                ));
            }
            if legs.iter().any(|(_, ip)| *ip == nexthop.to_string()) {
                return Err(invalid_routes(&shown, "the nexthop is used by router"));
            }
        }
        Ok(())
    }

    pub async fn router_delete(&self, ctx: &AuthContext, id: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let mut r = db::router::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::router_not_found(id))?;
        self.enforce_or_hide(
            ctx,
            "delete_router",
            "get_router",
            &router_target(&r),
            || fault::router_not_found(id),
        )?;
        let ports = db::port::select(
            tx.c(),
            &db::port::Select {
                device_id: Some(id),
                device_owner: Some(OWNER_ROUTER_INTERFACE),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?;
        if !ports.is_empty() {
            return Err(fault::conflict(
                "RouterInUse",
                format!("Router {id} still has ports"),
            ));
        }
        if !db::floatingip::by_router(tx.c(), id)
            .await
            .map_err(db_err)?
            .is_empty()
        {
            return Err(fault::conflict(
                "RouterInUse",
                format!("Router {id} still has floating IPs"),
            ));
        }
        let gw = match r.gw_port_id.take() {
            Some(pid) => db::port::get(tx.c(), &pid).await.map_err(db_err)?,
            None => None,
        };
        db::router::update(tx.c(), &r).await.map_err(db_err)?;
        if let Some(p) = gw {
            self.delete_port_in(&mut tx, &p).await?;
        }
        db::misc::clear_tags(tx.c(), "routers", id)
            .await
            .map_err(db_err)?;
        db::router::delete(tx.c(), id).await.map_err(db_err)?;
        self.commit(tx).await
    }

    /// `add_router_interface`; answers Neutron's interface-info body.
    pub async fn router_add_interface(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: InterfaceRequest,
    ) -> Result<Value, Error> {
        let mut attempt = 0;
        loop {
            match self.router_add_interface_once(ctx, id, &req).await {
                Err(e) if fault::is_race(&e) && attempt < 4 => attempt += 1,
                r => return r,
            }
        }
    }

    async fn router_add_interface_once(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: &InterfaceRequest,
    ) -> Result<Value, Error> {
        let mut tx = self.begin().await?;
        let mut r = db::router::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::router_not_found(id))?;
        self.enforce_or_hide(
            ctx,
            "add_router_interface",
            "get_router",
            &router_target(&r),
            || fault::router_not_found(id),
        )?;
        let legs = self.router_subnets(&mut tx, &r).await?;
        let check_subnet = |s: &SubnetInfo| -> Result<(), Error> {
            for (other, _) in &legs {
                if other.row.id == s.row.id {
                    return Err(fault::bad_resource(
                        "router",
                        format!("Router already has a port on subnet {}", s.row.id),
                    ));
                }
                if addr::overlaps(&other.cidr, &s.cidr) {
                    return Err(fault::bad_resource(
                        "router",
                        format!(
                            "Cidr {} of subnet {} overlaps with cidr {} of subnet {}",
                            s.cidr, s.row.id, other.cidr, other.row.id
                        ),
                    ));
                }
            }
            Ok(())
        };
        let port = match (&req.port_id, &req.subnet_id) {
            (Some(_), Some(_)) => {
                return Err(fault::bad_resource(
                    "router",
                    "Cannot specify both subnet-id and port-id",
                ))
            }
            (None, None) => {
                return Err(fault::bad_resource(
                    "router",
                    "Either subnet_id or port_id must be specified",
                ))
            }
            (None, Some(sid)) => {
                let s = self.visible_subnet_in(&mut tx, ctx, sid).await?;
                let net = db::network::get(tx.c(), &s.row.network_id)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| fault::network_not_found(&s.row.network_id))?;
                if !self.is_admin(ctx) && net.project_id != r.project_id && !net.shared {
                    return Err(fault::subnet_not_found(sid));
                }
                if net.external {
                    return Err(fault::bad_resource(
                        "router",
                        format!(
                            "Router interfaces cannot be attached to external network {}",
                            net.id
                        ),
                    ));
                }
                let Some(gw) = s.gateway else {
                    return Err(fault::bad_resource(
                        "router",
                        "Subnet for router interface must have a gateway IP",
                    ));
                };
                check_subnet(&s)?;
                self.create_service_port(
                    &mut tx,
                    ServicePort {
                        network_id: &net.id,
                        project_id: &r.project_id,
                        device_owner: OWNER_ROUTER_INTERFACE,
                        device_id: &r.id,
                        host_id: &self.cfg.host,
                        fixed_ips: Some(&[FixedIpRequest {
                            subnet_id: Some(s.row.id.clone()),
                            ip_address: Some(gw),
                        }]),
                    },
                )
                .await?
            }
            (Some(pid), None) => {
                let mut p = db::port::get(tx.c(), pid)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| fault::port_not_found(pid))?;
                let net = db::network::get(tx.c(), &p.network_id)
                    .await
                    .map_err(db_err)?
                    .ok_or_else(|| fault::network_not_found(&p.network_id))?;
                let pt = super::view::port_target(&p, &super::view::NetMeta::of(&net));
                if !self.allowed(ctx, "get_port", &pt) {
                    return Err(fault::port_not_found(pid));
                }
                if !self.is_admin(ctx) && p.project_id != r.project_id {
                    return Err(fault::bad_resource(
                        "router",
                        format!("Cannot attach port {pid}: it is owned by another project"),
                    ));
                }
                if !p.device_owner.is_empty() || !p.device_id.is_empty() {
                    return Err(fault::conflict(
                        "PortInUse",
                        format!(
                            "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                            p.network_id, p.device_id
                        ),
                    ));
                }
                if net.external {
                    return Err(fault::bad_resource(
                        "router",
                        format!(
                            "Router interfaces cannot be attached to external network {}",
                            net.id
                        ),
                    ));
                }
                let allocs = db::port::allocations_of_port(tx.c(), pid)
                    .await
                    .map_err(db_err)?;
                if allocs.is_empty() {
                    return Err(fault::bad_resource(
                        "router",
                        "Router port must have at least one fixed IP",
                    ));
                }
                let mut v4 = 0;
                for a in &allocs {
                    if let Some(s) = db::subnet::get(tx.c(), &a.subnet_id)
                        .await
                        .map_err(db_err)?
                    {
                        let info = SubnetInfo::new(s);
                        if !info.is_v6() {
                            v4 += 1;
                        }
                        check_subnet(&info)?;
                    }
                }
                if v4 > 1 {
                    return Err(fault::bad_resource(
                        "router",
                        "Cannot have multiple IPv4 subnets on router port",
                    ));
                }
                p.device_owner = OWNER_ROUTER_INTERFACE.into();
                p.device_id = r.id.clone();
                p.host_id = self.cfg.host.clone();
                p.status = "DOWN".into();
                p.updated_at = tx.now;
                p.revision_number += 1;
                db::port::update(tx.c(), &p).await.map_err(db_err)?;
                p
            }
        };
        let allocs = db::port::allocations_of_port(tx.c(), &port.id)
            .await
            .map_err(db_err)?;
        r.updated_at = tx.now;
        r.revision_number += 1;
        db::router::update(tx.c(), &r).await.map_err(db_err)?;
        self.commit(tx).await?;
        Ok(interface_info(&r, &port, &allocs))
    }

    async fn visible_subnet_in(
        &self,
        tx: &mut Tx,
        ctx: &AuthContext,
        sid: &str,
    ) -> Result<SubnetInfo, Error> {
        let s = db::subnet::get(tx.c(), sid)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::subnet_not_found(sid))?;
        let net = db::network::get(tx.c(), &s.network_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(&s.network_id))?;
        let t = super::view::subnet_target(&s, &super::view::NetMeta::of(&net));
        if !self.allowed(ctx, "get_subnet", &t) {
            return Err(fault::subnet_not_found(sid));
        }
        Ok(SubnetInfo::new(s))
    }

    /// `remove_router_interface`; answers Neutron's interface-info body.
    pub async fn router_remove_interface(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: InterfaceRequest,
    ) -> Result<Value, Error> {
        let mut tx = self.begin().await?;
        let mut r = db::router::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::router_not_found(id))?;
        self.enforce_or_hide(
            ctx,
            "remove_router_interface",
            "get_router",
            &router_target(&r),
            || fault::router_not_found(id),
        )?;
        let ports = db::port::select(
            tx.c(),
            &db::port::Select {
                device_id: Some(id),
                device_owner: Some(OWNER_ROUTER_INTERFACE),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?;
        let mut with_allocs = Vec::new();
        for p in ports {
            let a = db::port::allocations_of_port(tx.c(), &p.id)
                .await
                .map_err(db_err)?;
            with_allocs.push((p, a));
        }
        let (port, allocs, subnet_id) = match (&req.port_id, &req.subnet_id) {
            (None, None) => {
                return Err(fault::bad_resource(
                    "router",
                    "Either subnet_id or port_id must be specified",
                ))
            }
            (Some(pid), sid) => {
                let (p, a) = with_allocs
                    .into_iter()
                    .find(|(p, _)| p.id == *pid)
                    .ok_or_else(|| {
                        fault::not_found(
                            "RouterInterfaceNotFound",
                            format!("Router {id} does not have an interface with id {pid}"),
                        )
                    })?;
                if let Some(sid) = sid {
                    if !a.iter().any(|x| x.subnet_id == *sid) {
                        return Err(fault::bad(
                            "SubnetMismatchForPort",
                            format!(
                                "Subnet on port {pid} does not match the requested subnet {sid}."
                            ),
                        ));
                    }
                }
                let sid = sid
                    .clone()
                    .or_else(|| a.first().map(|x| x.subnet_id.clone()));
                (p, a, sid)
            }
            (None, Some(sid)) => {
                let (p, a) = with_allocs
                    .into_iter()
                    .find(|(_, a)| a.iter().any(|x| x.subnet_id == *sid))
                    .ok_or_else(|| {
                        fault::not_found(
                            "RouterInterfaceNotFoundForSubnet",
                            format!("Router {id} has no interface on subnet {sid}"),
                        )
                    })?;
                (p, a, Some(sid.clone()))
            }
        };
        // Subnets this removal takes away from the router.
        let removed: Vec<String> = match (&req.port_id, &subnet_id) {
            (None, Some(s)) => vec![s.clone()],
            _ => allocs.iter().map(|a| a.subnet_id.clone()).collect(),
        };
        for sid in &removed {
            let Some(s) = db::subnet::get(tx.c(), sid).await.map_err(db_err)? else {
                continue;
            };
            let info = SubnetInfo::new(s);
            for f in db::floatingip::by_router(tx.c(), id)
                .await
                .map_err(db_err)?
            {
                let inside = f
                    .fixed_ip_address
                    .as_deref()
                    .and_then(addr::parse_ip)
                    .is_some_and(|ip| addr::contains(&info.cidr, ip));
                if inside {
                    return Err(fault::conflict(
                        "RouterInterfaceInUseByFloatingIP",
                        format!(
                            "Router interface for subnet {sid} on router {id} cannot be deleted, as it is required by one or more floating IPs."
                        ),
                    ));
                }
            }
            for rt in routes_of(&r) {
                if addr::parse_ip(&rt.nexthop).is_some_and(|n| addr::contains(&info.cidr, n)) {
                    return Err(fault::conflict(
                        "RouterInterfaceInUseByRoute",
                        format!(
                            "Router interface for subnet {sid} on router {id} cannot be deleted, as it is required by one or more routes."
                        ),
                    ));
                }
            }
        }
        let remaining: Vec<&db::port::Allocation> = allocs
            .iter()
            .filter(|a| !removed.contains(&a.subnet_id))
            .collect();
        if remaining.is_empty() {
            self.delete_port_in(&mut tx, &port).await?;
        } else {
            for a in allocs.iter().filter(|a| removed.contains(&a.subnet_id)) {
                db::port::release(tx.c(), &port.id, &a.ip_address)
                    .await
                    .map_err(db_err)?;
            }
        }
        r.updated_at = tx.now;
        r.revision_number += 1;
        db::router::update(tx.c(), &r).await.map_err(db_err)?;
        self.commit(tx).await?;
        let shown: Vec<db::port::Allocation> = allocs
            .into_iter()
            .filter(|a| removed.contains(&a.subnet_id))
            .collect();
        Ok(interface_info(&r, &port, &shown))
    }
}

fn invalid_routes(routes: &str, reason: &str) -> Error {
    fault::bad(
        "InvalidRoutes",
        format!("Invalid format for routes: [{routes}], {reason}."),
    )
}

fn interface_info(
    r: &db::router::Router,
    p: &db::port::Port,
    allocs: &[db::port::Allocation],
) -> Value {
    let subnet_ids: Vec<&str> = allocs.iter().map(|a| a.subnet_id.as_str()).collect();
    json!({
        "id": r.id,
        "tenant_id": r.project_id,
        "project_id": r.project_id,
        "port_id": p.id,
        "network_id": p.network_id,
        "subnet_id": subnet_ids.first().copied().unwrap_or(""),
        "subnet_ids": subnet_ids,
    })
}
