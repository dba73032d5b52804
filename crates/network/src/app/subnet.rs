//! Subnets: CIDR, gateway and allocation-pool validation as Neutron does
//! it, overlap checks within a network, the DHCP port, SLAAC addresses for
//! the ports already there, and in-use checks on delete.

use std::net::IpAddr;

use api::{AuthContext, Error, Target};
use netmodel::Cidr;

use super::addr::{self, Range};
use super::ipam::{self, Pool, Route, SubnetInfo};
use super::view::{subnet_target, NetMeta, SubnetView};
use super::{db_err, fault, py_bool, Network, Tx};
use crate::store as db;

pub const IPV6_MODES: &[&str] = &["slaac", "dhcpv6-stateful", "dhcpv6-stateless"];

/// A validated create request (each field parsed and type-checked).
#[derive(Debug, Clone)]
pub struct SubnetCreate {
    pub project_id: Option<String>,
    pub network_id: String,
    pub name: String,
    pub description: String,
    pub ip_version: u8,
    pub cidr: Cidr,
    /// `None`: the default (first address); `Some(None)`: no gateway.
    pub gateway_ip: Option<Option<IpAddr>>,
    pub allocation_pools: Option<Vec<(IpAddr, IpAddr)>>,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<(Cidr, IpAddr)>,
    pub enable_dhcp: bool,
    pub ipv6_ra_mode: Option<String>,
    pub ipv6_address_mode: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct SubnetUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub gateway_ip: Option<Option<IpAddr>>,
    pub allocation_pools: Option<Vec<(IpAddr, IpAddr)>>,
    pub dns_nameservers: Option<Vec<IpAddr>>,
    pub host_routes: Option<Vec<(Cidr, IpAddr)>>,
    pub enable_dhcp: Option<bool>,
}

fn pools_json(pools: &[Range], v6: bool) -> String {
    let p: Vec<Pool> = pools
        .iter()
        .map(|r| Pool {
            start: addr::from_u128(r.start, v6).to_string(),
            end: addr::from_u128(r.end, v6).to_string(),
        })
        .collect();
    serde_json::to_string(&p).unwrap_or_else(|_| "[]".into())
}

fn routes_json(routes: &[(Cidr, IpAddr)]) -> String {
    let r: Vec<Route> = routes
        .iter()
        .map(|(d, n)| Route {
            destination: d.to_string(),
            nexthop: n.to_string(),
        })
        .collect();
    serde_json::to_string(&r).unwrap_or_else(|_| "[]".into())
}

fn dns_json(dns: &[IpAddr]) -> String {
    serde_json::to_string(&dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".into())
}

/// Checks pools against the CIDR and each other, and the gateway against
/// the pools; returns them as ranges.
fn check_pools(
    cidr: &Cidr,
    pools: &[(IpAddr, IpAddr)],
    gateway: Option<IpAddr>,
) -> Result<Vec<Range>, Error> {
    let v6 = cidr.addr.is_ipv6();
    let mut ranges = Vec::new();
    for (s, e) in pools {
        let shown = format!("{s}-{e}");
        if s.is_ipv6() != v6 || e.is_ipv6() != v6 || addr::to_u128(*s) > addr::to_u128(*e) {
            return Err(fault::bad(
                "InvalidAllocationPool",
                format!("The allocation pool {shown} is not valid."),
            ));
        }
        let (lo, hi) = (addr::first(cidr), addr::last(cidr));
        let (a, b) = (addr::to_u128(*s), addr::to_u128(*e));
        let v4_edges = !v6 && cidr.prefix < 31 && (a == lo || b == hi);
        if a < lo || b > hi || v4_edges || (v6 && a == lo && cidr.prefix < 127) {
            return Err(fault::bad(
                "OutOfBoundsAllocationPool",
                format!("The allocation pool {shown} spans beyond the subnet cidr {cidr}."),
            ));
        }
        ranges.push(Range { start: a, end: b });
    }
    let mut sorted = ranges.clone();
    sorted.sort();
    for w in sorted.windows(2) {
        if w[1].start <= w[0].end {
            let show = |r: &Range| {
                format!(
                    "{}-{}",
                    addr::from_u128(r.start, v6),
                    addr::from_u128(r.end, v6)
                )
            };
            return Err(fault::conflict(
                "OverlappingAllocationPools",
                format!(
                    "Found overlapping allocation pools: {} {} for subnet {cidr}.",
                    show(&w[0]),
                    show(&w[1])
                ),
            ));
        }
    }
    if let Some(g) = gateway {
        let gv = addr::to_u128(g);
        if let Some(r) = ranges.iter().find(|r| gv >= r.start && gv <= r.end) {
            return Err(fault::conflict(
                "GatewayConflictWithAllocationPools",
                format!(
                    "Gateway ip {g} conflicts with allocation pool {}-{}.",
                    addr::from_u128(r.start, v6),
                    addr::from_u128(r.end, v6)
                ),
            ));
        }
    }
    Ok(ranges)
}

impl Network {
    fn check_gateway(&self, cidr: &Cidr, g: IpAddr) -> Result<(), Error> {
        let v = addr::to_u128(g);
        let bad = !addr::contains(cidr, g)
            || (cidr.addr.is_ipv4()
                && cidr.prefix < 31
                && (v == addr::first(cidr) || v == addr::last(cidr)));
        if bad {
            return Err(fault::bad_resource(
                "subnet",
                format!("Gateway is not valid on subnet {cidr}"),
            ));
        }
        Ok(())
    }

    fn check_lists(
        &self,
        dns: &[IpAddr],
        routes: &[(Cidr, IpAddr)],
        v6: bool,
        id: &str,
    ) -> Result<(), Error> {
        if dns.len() > self.cfg.max_dns_nameservers {
            return Err(fault::bad(
                "DNSNameServersExhausted",
                format!(
                    "Unable to complete operation for {id}. The number of DNS nameservers exceeds the limit {}.",
                    self.cfg.max_dns_nameservers
                ),
            ));
        }
        if routes.len() > self.cfg.max_subnet_host_routes {
            return Err(fault::bad(
                "HostRoutesExhausted",
                format!(
                    "Unable to complete operation for {id}. The number of host routes exceeds the limit {}.",
                    self.cfg.max_subnet_host_routes
                ),
            ));
        }
        for (d, n) in routes {
            if d.addr.is_ipv6() != v6 || n.is_ipv6() != v6 {
                return Err(fault::invalid_input(format!(
                    "Host route {d} via {n} does not match the subnet's IP version"
                )));
            }
        }
        Ok(())
    }

    pub async fn load_subnet(&self, id: &str) -> Result<SubnetView, Error> {
        self.subnet_views(Some(id))
            .await?
            .pop()
            .ok_or_else(|| fault::subnet_not_found(id))
    }

    pub async fn subnet_create(
        &self,
        ctx: &AuthContext,
        req: SubnetCreate,
    ) -> Result<SubnetView, Error> {
        self.subnet_create_bulk(ctx, vec![req])
            .await?
            .pop()
            .ok_or_else(|| Error::internal(&"bulk create answered nothing"))
    }

    /// Creates subnets all or none, in one transaction (a later subnet of
    /// the batch sees the earlier ones: overlaps are refused).
    /// The quota is checked once per project, as for networks.
    pub async fn subnet_create_bulk(
        &self,
        ctx: &AuthContext,
        reqs: Vec<SubnetCreate>,
    ) -> Result<Vec<SubnetView>, Error> {
        let (owners, mut counts) =
            self.bulk_owners(ctx, "subnets", reqs.iter().map(|r| &r.project_id))?;
        let mut tx = self.begin().await?;
        let mut ids = Vec::with_capacity(reqs.len());
        for (req, owner) in reqs.into_iter().zip(owners) {
            let quota_n = counts.remove(&owner).unwrap_or(0);
            ids.push(self.subnet_create_in(&mut tx, ctx, req, quota_n).await?);
        }
        self.commit(tx).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            out.push(self.load_subnet(id).await?);
        }
        Ok(out)
    }

    /// Creates one subnet inside `tx` and answers its id; `quota_n` as for
    /// networks.
    async fn subnet_create_in(
        &self,
        tx: &mut Tx,
        ctx: &AuthContext,
        req: SubnetCreate,
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
        let target = Target::new()
            .with("project_id", &owner)
            .with("tenant_id", &owner)
            .with("network_id", &net.id)
            .with("network:project_id", &net.project_id)
            .with("shared", py_bool(net.shared))
            .with("router:external", py_bool(net.external));
        self.enforce(ctx, "create_subnet", &target)?;
        let cidr = req.cidr;
        let v6 = cidr.addr.is_ipv6();
        if (req.ip_version == 6) != v6 {
            return Err(fault::invalid_input(
                "Cidr and ip_version are not compatible".to_string(),
            ));
        }
        if cidr.prefix == 0 || (!v6 && cidr.prefix > 30) || (v6 && cidr.prefix > 126) {
            return Err(fault::invalid_input(format!(
                "Invalid CIDR {cidr}: the prefix length must be between 1 and {} for IPv{}",
                if v6 { 126 } else { 30 },
                req.ip_version
            )));
        }
        if cidr.addr.is_loopback()
            || cidr.addr.is_multicast()
            || (v6 && (addr::to_u128(cidr.addr) >> 118) == 0x3fa)
        {
            return Err(fault::invalid_input(format!(
                "Invalid CIDR {cidr}: loopback, multicast and link-local networks cannot be subnets"
            )));
        }
        if !v6 && (req.ipv6_ra_mode.is_some() || req.ipv6_address_mode.is_some()) {
            return Err(fault::invalid_input(
                "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False or ip_version is 4",
            ));
        }
        if let (Some(ra), Some(am)) = (&req.ipv6_ra_mode, &req.ipv6_address_mode) {
            if ra != am {
                return Err(fault::invalid_input(format!(
                    "ipv6_ra_mode set to '{ra}' with ipv6_address_mode set to '{am}' is not valid. If both attributes are set, they must be the same value"
                )));
            }
        }
        let auto = matches!(
            req.ipv6_address_mode.as_deref(),
            Some("slaac") | Some("dhcpv6-stateless")
        );
        if auto && cidr.prefix != 64 {
            return Err(fault::invalid_input(format!(
                "Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
            )));
        }
        for other in ipam::subnets_of(tx, &net.id).await? {
            if addr::overlaps(&other.cidr, &cidr) {
                return Err(fault::invalid_input(format!(
                    "Requested subnet with cidr: {cidr} for network: {} overlaps with another subnet",
                    net.id
                )));
            }
        }
        let gateway = match req.gateway_ip {
            Some(g) => g,
            None => Some(addr::from_u128(addr::first(&cidr) + 1, v6)),
        };
        if let Some(g) = gateway {
            if g.is_ipv6() != v6 {
                return Err(fault::invalid_input(format!(
                    "Gateway IP version inconsistent with allocation pool version: {g}"
                )));
            }
            self.check_gateway(&cidr, g)?;
        }
        let pools = match &req.allocation_pools {
            Some(p) => check_pools(&cidr, p, gateway)?,
            None => addr::default_pools(&cidr, gateway),
        };
        self.check_lists(&req.dns_nameservers, &req.host_routes, v6, "subnet")?;
        for d in &req.dns_nameservers {
            if d.is_ipv6() != v6 {
                return Err(fault::invalid_input(format!(
                    "DNS nameserver {d} does not match the subnet's IP version"
                )));
            }
        }
        if quota_n > 0 {
            self.check_quota(tx, &owner, "subnet", quota_n).await?;
        }
        let s = db::subnet::Subnet {
            id: super::new_id(),
            network_id: net.id.clone(),
            project_id: owner,
            name: req.name,
            description: req.description,
            ip_version: req.ip_version as i64,
            cidr: cidr.to_string(),
            gateway_ip: gateway.map(|g| g.to_string()),
            enable_dhcp: req.enable_dhcp,
            ipv6_ra_mode: req.ipv6_ra_mode,
            ipv6_address_mode: req.ipv6_address_mode,
            allocation_pools: pools_json(&pools, v6),
            dns_nameservers: dns_json(&req.dns_nameservers),
            host_routes: routes_json(&req.host_routes),
            created_at: tx.now,
            updated_at: tx.now,
            revision_number: 1,
        };
        db::subnet::insert(tx.c(), &s).await.map_err(db_err)?;
        if let Some(t) = &req.tags {
            super::network::set_tags(tx, "subnets", &s.id, t).await?;
        }
        if auto {
            self.add_slaac_addresses(tx, &SubnetInfo::new(s.clone()))
                .await?;
        }
        if net.external {
            self.add_gateway_addresses(tx, &SubnetInfo::new(s.clone()))
                .await?;
        }
        self.sync_dhcp_port(tx, &net.id).await?;
        Ok(s.id)
    }

    /// Gives every port of the network (but router legs) its EUI-64
    /// address on a new auto-address subnet.
    async fn add_slaac_addresses(&self, tx: &mut Tx, s: &SubnetInfo) -> Result<(), Error> {
        let ports = db::port::select(
            tx.c(),
            &db::port::Select {
                network_id: Some(&s.row.network_id),
                ..Default::default()
            },
        )
        .await
        .map_err(db_err)?;
        for p in ports {
            if p.device_owner.starts_with("network:router")
                || p.device_owner == "network:floatingip"
            {
                continue;
            }
            ipam::allocate(tx, &p.id, &p.mac_address, s, None).await?;
        }
        Ok(())
    }

    pub async fn subnet_update(
        &self,
        ctx: &AuthContext,
        id: &str,
        req: SubnetUpdate,
    ) -> Result<SubnetView, Error> {
        let mut tx = self.begin().await?;
        let mut s = db::subnet::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::subnet_not_found(id))?;
        let net = db::network::get(tx.c(), &s.network_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(&s.network_id))?;
        self.enforce_or_hide(
            ctx,
            "update_subnet",
            "get_subnet",
            &subnet_target(&s, &NetMeta::of(&net)),
            || fault::subnet_not_found(id),
        )?;
        let info = SubnetInfo::new(s.clone());
        let v6 = info.is_v6();
        let gateway = match req.gateway_ip {
            Some(g) => {
                if let Some(g) = g {
                    if g.is_ipv6() != v6 {
                        return Err(fault::invalid_input(format!(
                            "Gateway IP version inconsistent with allocation pool version: {g}"
                        )));
                    }
                    self.check_gateway(&info.cidr, g)?;
                }
                if g != info.gateway {
                    if let Some(old) = info.gateway {
                        if let Some(a) =
                            db::port::allocation_by_ip(tx.c(), &s.network_id, &old.to_string())
                                .await
                                .map_err(db_err)?
                        {
                            return Err(fault::conflict(
                                "GatewayIpInUse",
                                format!(
                                    "Current gateway ip {old} already in use by port {}. Unable to update.",
                                    a.port_id
                                ),
                            ));
                        }
                    }
                }
                g
            }
            None => info.gateway,
        };
        let pools = match &req.allocation_pools {
            Some(p) => check_pools(&info.cidr, p, gateway)?,
            None => {
                let as_pairs: Vec<(IpAddr, IpAddr)> = info
                    .pools
                    .iter()
                    .map(|r| (addr::from_u128(r.start, v6), addr::from_u128(r.end, v6)))
                    .collect();
                check_pools(&info.cidr, &as_pairs, gateway)?
            }
        };
        let dns = req.dns_nameservers.clone().unwrap_or(info.dns.clone());
        let routes = req.host_routes.clone().unwrap_or(info.routes.clone());
        self.check_lists(&dns, &routes, v6, id)?;
        if let Some(v) = req.name {
            s.name = v;
        }
        if let Some(v) = req.description {
            s.description = v;
        }
        if let Some(v) = req.enable_dhcp {
            s.enable_dhcp = v;
        }
        s.gateway_ip = gateway.map(|g| g.to_string());
        s.allocation_pools = pools_json(&pools, v6);
        s.dns_nameservers = dns_json(&dns);
        s.host_routes = routes_json(&routes);
        s.updated_at = tx.now;
        s.revision_number += 1;
        db::subnet::update(tx.c(), &s).await.map_err(db_err)?;
        self.sync_dhcp_port(&mut tx, &s.network_id).await?;
        self.commit(tx).await?;
        self.load_subnet(id).await
    }

    pub async fn subnet_delete(&self, ctx: &AuthContext, id: &str) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let s = db::subnet::get(tx.c(), id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::subnet_not_found(id))?;
        let net = db::network::get(tx.c(), &s.network_id)
            .await
            .map_err(db_err)?
            .ok_or_else(|| fault::network_not_found(&s.network_id))?;
        self.enforce_or_hide(
            ctx,
            "delete_subnet",
            "get_subnet",
            &subnet_target(&s, &NetMeta::of(&net)),
            || fault::subnet_not_found(id),
        )?;
        let info = SubnetInfo::new(s.clone());
        let allocs = db::port::allocations_of_subnet(tx.c(), id)
            .await
            .map_err(db_err)?;
        for a in &allocs {
            let p = db::port::get(tx.c(), &a.port_id).await.map_err(db_err)?;
            let owner = p.as_ref().map(|p| p.device_owner.as_str()).unwrap_or("");
            // DHCP addresses go with the subnet; so do SLAAC addresses of
            // ordinary ports. Anything else still uses it.
            let auto_ok = info.auto_address() && !owner.starts_with("network:router");
            if owner != super::port::OWNER_DHCP && !auto_ok {
                return Err(fault::conflict(
                    "SubnetInUse",
                    format!(
                        "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                    ),
                ));
            }
        }
        db::port::release_subnet(tx.c(), id).await.map_err(db_err)?;
        db::misc::clear_tags(tx.c(), "subnets", id)
            .await
            .map_err(db_err)?;
        db::subnet::delete(tx.c(), id).await.map_err(db_err)?;
        self.sync_dhcp_port(&mut tx, &s.network_id).await?;
        self.commit(tx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pools_are_checked() {
        let c = addr::parse_cidr("10.0.0.0/24").unwrap();
        assert!(check_pools(
            &c,
            &[(ip("10.0.0.10"), ip("10.0.0.20"))],
            Some(ip("10.0.0.1"))
        )
        .is_ok());
        let e = check_pools(&c, &[(ip("10.0.0.20"), ip("10.0.0.10"))], None).unwrap_err();
        assert_eq!(e.kind, Some("InvalidAllocationPool"));
        let e = check_pools(&c, &[(ip("10.0.0.0"), ip("10.0.0.10"))], None).unwrap_err();
        assert_eq!(e.kind, Some("OutOfBoundsAllocationPool"));
        let e = check_pools(&c, &[(ip("10.0.0.200"), ip("10.0.1.10"))], None).unwrap_err();
        assert_eq!(e.kind, Some("OutOfBoundsAllocationPool"));
        let e = check_pools(
            &c,
            &[
                (ip("10.0.0.10"), ip("10.0.0.20")),
                (ip("10.0.0.15"), ip("10.0.0.30")),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(e.kind, Some("OverlappingAllocationPools"));
        let e = check_pools(
            &c,
            &[(ip("10.0.0.1"), ip("10.0.0.20"))],
            Some(ip("10.0.0.5")),
        )
        .unwrap_err();
        assert_eq!(e.kind, Some("GatewayConflictWithAllocationPools"));
    }
}
