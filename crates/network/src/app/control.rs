//! The controller side of the agent contract ([`netmodel::NetworkControl`]):
//! a host's desired state computed from the database, the long poll on the
//! network revision, port status reports (with `network-vif-plugged`
//! events), agent heartbeats, and metadata lookups.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use api::Error;
use netmodel::{
    AllowedAddressPair, Cidr, Direction, FixedIp, FloatingIp, HostRoute, HostState, MetadataAnswer,
    MetadataCaller, NetworkControl, PortReport, PortStatus, RemotePort, Router, RouterGateway,
    RouterInterface, SecurityGroup, SecurityGroupRule, Segment,
};

use super::addr;
use super::ipam::{Route, SubnetInfo};
use super::port::{AddressPair, OWNER_DHCP, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE};
use super::{db_err, Network};
use crate::store as db;

/// The event compute waits for after plugging a port.
pub const VIF_PLUGGED: &str = "network-vif-plugged";
/// Recorded when a wired port goes down again.
pub const VIF_UNPLUGGED: &str = "network-vif-unplugged";

/// Everything the host computation reads, loaded once.
struct Snapshot {
    networks: HashMap<String, db::network::Network>,
    subnets: Vec<SubnetInfo>,
    ports: Vec<db::port::Port>,
    allocs: HashMap<String, Vec<db::port::Allocation>>,
    port_sgs: HashMap<String, Vec<String>>,
    groups: HashMap<String, db::secgroup::SecurityGroup>,
    rules: HashMap<String, Vec<db::secgroup::Rule>>,
    routers: Vec<db::router::Router>,
    fips: Vec<db::floatingip::FloatingIp>,
    hosts: HashMap<String, Option<IpAddr>>,
}

impl Network {
    async fn snapshot(&self) -> Result<Snapshot, Error> {
        let pool = &self.pool;
        let networks = db::network::list(pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let subnets = db::subnet::list(pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(SubnetInfo::new)
            .collect();
        let ports = db::port::select(pool, &Default::default())
            .await
            .map_err(db_err)?;
        let mut allocs: HashMap<String, Vec<db::port::Allocation>> = HashMap::new();
        for a in db::port::allocations(pool).await.map_err(db_err)? {
            allocs.entry(a.port_id.clone()).or_default().push(a);
        }
        let mut port_sgs: HashMap<String, Vec<String>> = HashMap::new();
        for (p, g) in db::port::security_group_bindings(pool)
            .await
            .map_err(db_err)?
        {
            port_sgs.entry(p).or_default().push(g);
        }
        let groups = db::secgroup::list(pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|g| (g.id.clone(), g))
            .collect();
        let mut rules: HashMap<String, Vec<db::secgroup::Rule>> = HashMap::new();
        for r in db::secgroup::rules(pool).await.map_err(db_err)? {
            rules
                .entry(r.security_group_id.clone())
                .or_default()
                .push(r);
        }
        let routers = db::router::list(pool).await.map_err(db_err)?;
        let fips = db::floatingip::list(pool).await.map_err(db_err)?;
        let mut hosts: HashMap<String, Option<IpAddr>> = db::misc::hosts(pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|h| (h.host, h.tunnel_ip.as_deref().and_then(addr::parse_ip)))
            .collect();
        if let Some(ip) = self.cfg.tunnel_ip {
            hosts.insert(self.cfg.host.clone(), Some(ip));
        }
        Ok(Snapshot {
            networks,
            subnets,
            ports,
            allocs,
            port_sgs,
            groups,
            rules,
            routers,
            fips,
            hosts,
        })
    }

    /// The desired state of `host` now.
    pub async fn host_state(&self, host: &str) -> Result<HostState, Error> {
        // Read the revision first: a write that lands while we read bumps
        // it again, so the agent polls once more rather than missing it.
        let revision = db::revision(&self.pool).await.map_err(db_err)?;
        let snap = self.snapshot().await?;
        let mut state = build(&snap, host, &self.cfg.host, |p| {
            self.physical_interface(p).map(str::to_string)
        });
        state.revision = revision;
        Ok(state)
    }

    /// Records that the agent of `host` was heard from.
    pub async fn heartbeat(&self, host: &str) -> Result<(), Error> {
        db::misc::heartbeat(&self.pool, host, store::now_micros())
            .await
            .map_err(db_err)
    }

    /// Registers (or changes) the tunnel address of a host, used for the
    /// VXLAN forwarding entries other hosts get.
    pub async fn register_host(&self, host: &str, tunnel_ip: IpAddr) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let now = tx.now;
        db::misc::set_tunnel_ip(tx.c(), host, &tunnel_ip.to_string(), now)
            .await
            .map_err(db_err)?;
        self.commit(tx).await
    }

    /// Applies an agent's port reports: status changes (only for ports bound
    /// to that host) and the events compute waits for.
    pub async fn apply_port_reports(
        &self,
        host: &str,
        reports: &[PortReport],
    ) -> Result<(), Error> {
        let now = store::now_micros();
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        db::misc::heartbeat(&mut *tx, host, now)
            .await
            .map_err(db_err)?;
        for r in reports {
            let before = db::port::get(&mut *tx, &r.port_id).await.map_err(db_err)?;
            let Some(before) = before.filter(|p| p.host_id == host) else {
                continue;
            };
            let status = match r.status {
                PortStatus::Active => "ACTIVE",
                PortStatus::Down => "DOWN",
                PortStatus::Error => "ERROR",
            };
            if !db::port::set_status(&mut *tx, &r.port_id, host, status, now)
                .await
                .map_err(db_err)?
            {
                continue;
            }
            let event = match (before.status.as_str(), r.status) {
                (_, PortStatus::Active) => Some((VIF_PLUGGED, "completed")),
                (_, PortStatus::Error) => Some((VIF_PLUGGED, "failed")),
                ("ACTIVE", PortStatus::Down) => Some((VIF_UNPLUGGED, "completed")),
                _ => None,
            };
            if let Some((event, status)) = event {
                db::misc::add_event(
                    &mut *tx,
                    &db::misc::PortEvent {
                        id: super::new_id(),
                        port_id: r.port_id.clone(),
                        event: event.into(),
                        status: status.into(),
                        host: host.into(),
                        created_at: now,
                    },
                )
                .await
                .map_err(db_err)?;
            }
            if let Some(m) = &r.message {
                tracing::info!(port = %r.port_id, %status, message = %m, "port status reported");
            }
        }
        tx.commit().await.map_err(|e| Error::internal(&e))
    }

    /// The events recorded for a port, oldest first.
    pub async fn port_events(&self, port_id: &str) -> Result<Vec<db::misc::PortEvent>, Error> {
        db::misc::events_of(&self.pool, port_id)
            .await
            .map_err(db_err)
    }

    /// The long poll: the state of `host` once the revision passes
    /// `after`, or after `wait` regardless.
    pub async fn watch_host(
        &self,
        host: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<HostState, Error> {
        self.heartbeat(host).await?;
        self.poll_started(host);
        let _guard = PollGuard { net: self, host };
        if let Some(after) = after {
            let mut rx = self.subscribe();
            let deadline = tokio::time::Instant::now() + wait;
            while *rx.borrow_and_update() <= after {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }
        let state = self.host_state(host).await?;
        self.heartbeat(host).await?;
        Ok(state)
    }
}

struct PollGuard<'a> {
    net: &'a Network,
    host: &'a str,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.net.poll_ended(self.host);
    }
}

fn to_internal(e: Error) -> netmodel::Error {
    netmodel::Error::Unavailable(e.message)
}

impl NetworkControl for Network {
    fn watch<'a>(
        &'a self,
        host: &'a str,
        after: Option<u64>,
        wait: Duration,
    ) -> netmodel::BoxFuture<'a, Result<HostState, netmodel::Error>> {
        Box::pin(async move {
            self.watch_host(host, after, wait)
                .await
                .map_err(to_internal)
        })
    }

    fn report_ports<'a>(
        &'a self,
        host: &'a str,
        reports: Vec<PortReport>,
    ) -> netmodel::BoxFuture<'a, Result<(), netmodel::Error>> {
        Box::pin(async move {
            self.apply_port_reports(host, &reports)
                .await
                .map_err(to_internal)
        })
    }

    fn metadata<'a>(
        &'a self,
        caller: MetadataCaller,
    ) -> netmodel::BoxFuture<'a, Result<Option<MetadataAnswer>, netmodel::Error>> {
        Box::pin(async move { self.metadata_for(&caller).await.map_err(to_internal) })
    }
}

/// Computes `host`'s share of the snapshot. `router_host` is where routers
/// live (this node in the all-in-one); `interface` maps physical networks
/// to host interfaces.
fn build(
    s: &Snapshot,
    host: &str,
    router_host: &str,
    interface: impl Fn(&str) -> Option<String>,
) -> HostState {
    let mut state = HostState {
        host: host.to_string(),
        ..Default::default()
    };
    let local: Vec<&db::port::Port> = s.ports.iter().filter(|p| p.host_id == host).collect();
    let ips_of = |pid: &str| -> Vec<FixedIp> {
        s.allocs
            .get(pid)
            .map(|v| {
                v.iter()
                    .filter_map(|a| {
                        Some(FixedIp {
                            subnet_id: a.subnet_id.clone(),
                            ip: addr::parse_ip(&a.ip_address)?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };

    // Ports.
    let mut group_ids: BTreeSet<String> = BTreeSet::new();
    let mut network_ids: BTreeSet<String> = BTreeSet::new();
    for p in &local {
        network_ids.insert(p.network_id.clone());
        let trusted = super::port::is_network_owned(&p.device_owner);
        let sgs = if trusted || !p.port_security_enabled {
            Vec::new()
        } else {
            s.port_sgs.get(&p.id).cloned().unwrap_or_default()
        };
        group_ids.extend(sgs.iter().cloned());
        let pairs: Vec<AddressPair> =
            serde_json::from_str(&p.allowed_address_pairs).unwrap_or_default();
        let fixed_ips = ips_of(&p.id);
        let first_ip = fixed_ips.first().map(|f| f.ip.to_string());
        state.ports.push(netmodel::Port {
            id: p.id.clone(),
            network_id: p.network_id.clone(),
            mac: p.mac_address.clone(),
            device_owner: p.device_owner.clone(),
            device_id: p.device_id.clone(),
            admin_state_up: p.admin_state_up,
            // Ports of network functions are trusted, as Neutron's firewall
            // drivers treat `network:*` owners: no anti-spoofing, no groups.
            port_security_enabled: p.port_security_enabled && !trusted,
            allowed_address_pairs: pairs
                .iter()
                .filter_map(|a| {
                    Some(AllowedAddressPair {
                        ip: addr::parse_cidr(&a.ip_address).or_else(|| {
                            addr::parse_ip(&a.ip_address).map(|ip| Cidr {
                                addr: ip,
                                prefix: addr::bits(ip) as u8,
                            })
                        })?,
                        mac: a.mac_address.clone().filter(|m| *m != p.mac_address),
                    })
                })
                .collect(),
            security_group_ids: sgs,
            hostname: super::port::hostname(&p.dns_name, first_ip.as_deref()),
            device_name: format!("tap{}", p.id.chars().take(11).collect::<String>()),
            fixed_ips,
        });
    }

    // Security groups, with the groups their rules name as remote groups,
    // and every member address (on any host) of each.
    let mut todo: Vec<String> = group_ids.iter().cloned().collect();
    while let Some(g) = todo.pop() {
        for r in s.rules.get(&g).into_iter().flatten() {
            if let Some(rg) = &r.remote_group_id {
                if group_ids.insert(rg.clone()) {
                    todo.push(rg.clone());
                }
            }
        }
    }
    let mut members: HashMap<&str, BTreeSet<IpAddr>> = HashMap::new();
    for p in &s.ports {
        let Some(groups) = s.port_sgs.get(&p.id) else {
            continue;
        };
        let mut ips: Vec<IpAddr> = ips_of(&p.id).into_iter().map(|f| f.ip).collect();
        let pairs: Vec<AddressPair> =
            serde_json::from_str(&p.allowed_address_pairs).unwrap_or_default();
        for a in pairs {
            match addr::parse_cidr(&a.ip_address) {
                Some(c) if c.prefix as u32 == addr::bits(c.addr) => ips.push(c.addr),
                Some(_) => {}
                None => ips.extend(addr::parse_ip(&a.ip_address)),
            }
        }
        for g in groups {
            if group_ids.contains(g) {
                members
                    .entry(g.as_str())
                    .or_default()
                    .extend(ips.iter().copied());
            }
        }
    }
    for g in &group_ids {
        if !s.groups.contains_key(g) {
            continue;
        }
        state.security_groups.push(SecurityGroup {
            id: g.clone(),
            rules: s
                .rules
                .get(g)
                .into_iter()
                .flatten()
                .map(|r| SecurityGroupRule {
                    id: r.id.clone(),
                    direction: if r.direction == "egress" {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    },
                    ethertype: r.ethertype.clone(),
                    protocol: r.protocol.clone(),
                    port_range_min: r.port_range_min.and_then(|v| u16::try_from(v).ok()),
                    port_range_max: r.port_range_max.and_then(|v| u16::try_from(v).ok()),
                    remote_ip_prefix: r
                        .remote_ip_prefix
                        .as_deref()
                        .and_then(addr::parse_cidr)
                        .map(|c| addr::normalize(&c)),
                    remote_group_id: r.remote_group_id.clone(),
                })
                .collect(),
            member_ips: members
                .get(g.as_str())
                .map(|m| m.iter().copied().collect())
                .unwrap_or_default(),
        });
    }

    // Routers (all on `router_host`), with their legs and floating IPs.
    if host == router_host {
        for r in &s.routers {
            let legs: Vec<&db::port::Port> =
                s.ports.iter().filter(|p| p.device_id == r.id).collect();
            let gateway = r.gw_port_id.as_ref().and_then(|gid| {
                let gp = legs
                    .iter()
                    .find(|p| p.id == *gid && p.device_owner == OWNER_ROUTER_GATEWAY)?;
                let ips = ips_of(&gp.id);
                let mut cidrs = Vec::new();
                let mut nexthop = None;
                for f in &ips {
                    if let Some(sn) = s.subnets.iter().find(|sn| sn.row.id == f.subnet_id) {
                        cidrs.push(Cidr {
                            addr: f.ip,
                            prefix: sn.cidr.prefix,
                        });
                        if nexthop.is_none() && f.ip.is_ipv4() {
                            nexthop = sn.gateway;
                        }
                    }
                }
                network_ids.insert(gp.network_id.clone());
                Some(RouterGateway {
                    network_id: gp.network_id.clone(),
                    port_id: gp.id.clone(),
                    mac: gp.mac_address.clone(),
                    ips: cidrs,
                    nexthop,
                    enable_snat: r.enable_snat,
                })
            });
            let mut interfaces = Vec::new();
            for leg in legs
                .iter()
                .filter(|p| p.device_owner == OWNER_ROUTER_INTERFACE)
            {
                network_ids.insert(leg.network_id.clone());
                for f in ips_of(&leg.id) {
                    let Some(sn) = s.subnets.iter().find(|sn| sn.row.id == f.subnet_id) else {
                        continue;
                    };
                    interfaces.push(RouterInterface {
                        port_id: leg.id.clone(),
                        network_id: leg.network_id.clone(),
                        subnet_id: f.subnet_id.clone(),
                        mac: leg.mac_address.clone(),
                        ip: Cidr {
                            addr: f.ip,
                            prefix: sn.cidr.prefix,
                        },
                    });
                }
            }
            let routes: Vec<Route> = serde_json::from_str(&r.routes).unwrap_or_default();
            state.routers.push(Router {
                id: r.id.clone(),
                project_id: r.project_id.clone(),
                admin_state_up: r.admin_state_up,
                gateway,
                interfaces,
                routes: routes
                    .iter()
                    .filter_map(|x| {
                        Some(HostRoute {
                            destination: addr::parse_cidr(&x.destination)?,
                            nexthop: addr::parse_ip(&x.nexthop)?,
                        })
                    })
                    .collect(),
                floating_ips: s
                    .fips
                    .iter()
                    .filter(|f| f.router_id.as_deref() == Some(r.id.as_str()))
                    .filter_map(|f| {
                        Some(FloatingIp {
                            id: f.id.clone(),
                            floating_ip: addr::parse_ip(&f.floating_ip_address)?,
                            fixed_ip: addr::parse_ip(f.fixed_ip_address.as_deref()?)?,
                            port_id: f.port_id.clone()?,
                        })
                    })
                    .collect(),
            });
        }
    }

    // Networks with a port, a router leg or a DHCP port here.
    for nid in &network_ids {
        let Some(n) = s.networks.get(nid) else {
            continue;
        };
        let segment = match n.network_type.as_str() {
            "flat" => Segment::Flat {
                physical_network: n.physical_network.clone().unwrap_or_default(),
                interface: n
                    .physical_network
                    .as_deref()
                    .and_then(&interface)
                    .unwrap_or_default(),
            },
            "vlan" => Segment::Vlan {
                physical_network: n.physical_network.clone().unwrap_or_default(),
                interface: n
                    .physical_network
                    .as_deref()
                    .and_then(&interface)
                    .unwrap_or_default(),
                vlan_id: n.segmentation_id.unwrap_or(0) as u16,
            },
            "vxlan" => Segment::Vxlan {
                vni: n.segmentation_id.unwrap_or(0) as u32,
            },
            _ => Segment::Local,
        };
        let dhcp_ips: Vec<FixedIp> = s
            .ports
            .iter()
            .filter(|p| p.network_id == *nid && p.device_owner == OWNER_DHCP)
            .flat_map(|p| ips_of(&p.id))
            .collect();
        let subnets = s
            .subnets
            .iter()
            .filter(|sn| sn.row.network_id == *nid)
            .map(|sn| netmodel::Subnet {
                id: sn.row.id.clone(),
                cidr: sn.cidr,
                gateway_ip: sn.gateway,
                enable_dhcp: sn.row.enable_dhcp,
                dns_nameservers: sn.dns.clone(),
                host_routes: sn
                    .routes
                    .iter()
                    .map(|(d, n)| HostRoute {
                        destination: *d,
                        nexthop: *n,
                    })
                    .collect(),
                dhcp_server_ip: if sn.row.enable_dhcp {
                    dhcp_ips
                        .iter()
                        .find(|f| f.subnet_id == sn.row.id)
                        .map(|f| f.ip)
                } else {
                    None
                },
            })
            .collect();
        let (mut remote_ports, mut remote_hosts) = (Vec::new(), BTreeSet::new());
        if matches!(segment, Segment::Vxlan { .. }) {
            for p in s
                .ports
                .iter()
                .filter(|p| p.network_id == *nid && !p.host_id.is_empty() && p.host_id != host)
            {
                let Some(Some(ip)) = s.hosts.get(&p.host_id) else {
                    continue;
                };
                remote_ports.push(RemotePort {
                    mac: p.mac_address.clone(),
                    host_ip: *ip,
                });
                remote_hosts.insert(*ip);
            }
        }
        state.networks.push(netmodel::Network {
            id: n.id.clone(),
            project_id: n.project_id.clone(),
            mtu: n.mtu as u32,
            segment,
            external: n.external,
            admin_state_up: n.admin_state_up,
            subnets,
            conntrack_zone: n.conntrack_zone as u16,
            remote_ports,
            remote_hosts: remote_hosts.into_iter().collect(),
        });
    }
    // Stable orders, so equal states compare equal.
    state.ports.sort_by(|a, b| a.id.cmp(&b.id));
    state.routers.sort_by(|a, b| a.id.cmp(&b.id));
    state
}
