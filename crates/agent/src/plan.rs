//! From [`HostState`] to the objects the host must have: a pure
//! function, so everything the reconcilers decide is tested without a
//! kernel.
//!
//! The plan names every object with the naming scheme
//! ([`hostlink::names`], [`crate::names`]) and says, per port, which
//! device to wait for, which bridge it joins and which nftables rules it
//! gets (marks are filled in later, from the persistent
//! [`crate::marks::MarkStore`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hostlink::names as hn;
use hostlink::{FdbEntry, IpNet, MacAddr, Route};
use netmodel::{Cidr, HostState, Network, Port, Segment, Subnet};

use crate::names::{self, Scope};

/// The metadata service's address.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Settings the plan depends on (a subset of [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// Namespace scope.
    pub scope: Scope,
    /// Local VXLAN endpoint.
    pub vxlan_local: Option<Ipv4Addr>,
    /// Underlay device for VXLAN.
    pub vxlan_underlay: Option<String>,
    /// Local port the metadata proxy listens on in router namespaces.
    pub metadata_port: u16,
    /// DHCP lease time, seconds.
    pub lease_time: u32,
}

/// Everything desired on the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Networks by id.
    pub networks: BTreeMap<String, NetPlan>,
    /// Ports by device name.
    pub ports: BTreeMap<String, PortPlan>,
    /// Remote security groups referenced by port rules, by id.
    pub groups: BTreeMap<String, nft::RemoteGroup>,
    /// Routers by namespace.
    pub routers: BTreeMap<String, RouterPlan>,
    /// DHCP namespaces by namespace name.
    pub dhcp: BTreeMap<String, DhcpPlan>,
    /// Networks that cannot be built, with why (their ports report ERROR).
    pub network_errors: BTreeMap<String, String>,
    /// Subnets with a router leg here → the leg's address (where their
    /// metadata goes), kept for [`Plan::apply_ports`].
    pub(crate) routed: BTreeMap<String, Ipv4Addr>,
    /// Remote group → how many ports' rules reference it.
    pub(crate) group_refs: BTreeMap<String, usize>,
}

/// What [`Plan::apply_ports`] changed.
#[derive(Debug, Default)]
pub struct PortDelta {
    /// Devices of ports added or changed, with their plan before (`None`
    /// for a new port).
    pub changed: Vec<(String, Option<PortPlan>)>,
    /// Plans of ports that left.
    pub removed: Vec<PortPlan>,
    /// DHCP namespaces whose leases changed.
    pub dhcp: BTreeSet<String>,
}

/// How a network's bridge is joined to the rest of the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L2 {
    /// A VXLAN device on the bridge.
    Vxlan(hostlink::VxlanSpec),
    /// A host interface on the bridge.
    Flat {
        /// The interface.
        interface: String,
    },
    /// Nothing: the bridge is local to this host.
    Local,
}

/// A network's bridge and what hangs on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// Network id.
    pub id: String,
    /// Bridge name.
    pub bridge: String,
    /// MTU of the bridge and every port on it.
    pub mtu: u32,
    /// Conntrack zone.
    pub zone: u16,
    /// Uplink.
    pub l2: L2,
    /// VXLAN forwarding entries (remote ports and BUM).
    pub fdb: BTreeSet<FdbEntry>,
}

/// One port bound here.
#[derive(Debug, Clone, PartialEq)]
pub struct PortPlan {
    /// Port id.
    pub port_id: String,
    /// Network id.
    pub network_id: String,
    /// The device to wait for in the host namespace.
    pub device: String,
    /// The bridge it joins.
    pub bridge: String,
    /// MTU.
    pub mtu: u32,
    /// Neutron's admin_state_up (of the port and its network).
    pub admin_up: bool,
    /// Whether the agent creates the device itself (router and DHCP legs).
    pub agent_made: bool,
    /// The firewall rules (marks 0, filled in at apply time); `None` for
    /// trusted ports (`network:*` owners), which get no chains.
    pub rules: Option<nft::PortRules>,
    /// Rule id of each entry of `rules.rules`, in order (for ct marks).
    pub rule_ids: Vec<String>,
    /// Why the port cannot be wired as asked, if it cannot.
    pub error: Option<String>,
}

/// A router leg: a veth between a bridge and the router namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegPlan {
    /// Port id.
    pub port_id: String,
    /// Network id.
    pub network_id: String,
    /// The end inside the router namespace (`qr-…`/`qg-…`).
    pub name: String,
    /// The end on the bridge (`tap…`).
    pub tap: String,
    /// Bridge.
    pub bridge: String,
    /// MAC of the router end.
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// Addresses on the router end (floating IPs included, on `qg-`).
    pub addrs: Vec<IpNet>,
    /// Whether this is the gateway leg.
    pub gateway: bool,
}

/// A router namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPlan {
    /// Router id.
    pub router_id: String,
    /// Namespace.
    pub netns: String,
    /// Legs.
    pub legs: Vec<LegPlan>,
    /// Routes of the main table (default via the external gateway, static
    /// routes).
    pub routes: Vec<Route>,
    /// NAT.
    pub nat: nft::RouterNat,
    /// Legs that could not be built (network absent), with why.
    pub skipped: Vec<String>,
}

/// One static lease, with every option of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Client MAC.
    pub mac: MacAddr,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Subnet prefix length.
    pub prefix: u8,
    /// The server's address on that subnet (option 54).
    pub server: Ipv4Addr,
    /// Gateway (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Classless static routes (option 121), default route included.
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// Hostname (option 12), control characters removed.
    pub hostname: Option<String>,
    /// MTU (option 26).
    pub mtu: u16,
    /// Lease time, seconds.
    pub lease_time: u32,
}

/// The DHCP namespace of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpPlan {
    /// Network id.
    pub network_id: String,
    /// Namespace.
    pub netns: String,
    /// Bridge end of the veth.
    pub host_leg: String,
    /// Namespace end of the veth.
    pub ns_leg: String,
    /// Bridge.
    pub bridge: String,
    /// MAC of the namespace end.
    pub mac: MacAddr,
    /// MTU.
    pub mtu: u32,
    /// Addresses of the namespace end: each DHCP subnet's server address,
    /// plus 169.254.169.254/32 when metadata is served here.
    pub addrs: Vec<IpNet>,
    /// Whether the metadata proxy answers in this namespace (some subnet
    /// has no router here).
    pub metadata: bool,
    /// Static leases by MAC.
    pub leases: BTreeMap<MacAddr, Lease>,
}

impl DhcpPlan {
    /// Whether two plans differ at most in their leases (which the running
    /// server takes without a full pass).
    pub fn same_but_leases(&self, o: &DhcpPlan) -> bool {
        self.network_id == o.network_id
            && self.netns == o.netns
            && self.host_leg == o.host_leg
            && self.ns_leg == o.ns_leg
            && self.bridge == o.bridge
            && self.mac == o.mac
            && self.mtu == o.mtu
            && self.addrs == o.addrs
            && self.metadata == o.metadata
    }
}

fn net(c: Cidr) -> IpNet {
    IpNet::new(c.addr, c.prefix).expect("Cidr checks the prefix")
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full prefix")
}

fn v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// A MAC for an object that has no port (a DHCP leg without a DHCP port):
/// OpenStack's `fa:16:3e` prefix and three bytes of a hash of the id.
fn derived_mac(id: &str) -> MacAddr {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    MacAddr([0xfa, 0x16, 0x3e, b[1], b[2], b[3]])
}

/// Removes control characters (checklist 15: the API validates hostnames,
/// but nothing that reaches a guest's shell scripts may carry a newline).
pub fn clean_hostname(s: &str) -> Option<String> {
    let c: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(63)
        .collect::<String>()
        .trim()
        .to_string();
    (!c.is_empty()).then_some(c)
}

/// Converts a Neutron rule to the firewall model (ct mark 0 for now).
pub fn sg_rule(r: &netmodel::SecurityGroupRule) -> Result<nft::SgRule, String> {
    let ethertype = match r.ethertype.as_str() {
        "IPv4" | "ipv4" => nft::EtherType::V4,
        "IPv6" | "ipv6" => nft::EtherType::V6,
        other => return Err(format!("rule {}: ethertype {other:?}", r.id)),
    };
    let protocol = match r.protocol.as_deref() {
        None | Some("any") | Some("") => None,
        Some(p) => Some(nft::Protocol::parse(p).map_err(|e| format!("rule {}: {e}", r.id))?),
    };
    let port_range = match (protocol, r.port_range_min, r.port_range_max) {
        (Some(p), Some(lo), hi) if p.is_icmp() => Some((lo, hi.unwrap_or(255))),
        (Some(p), Some(lo), hi) if p.has_ports() => Some((lo, hi.unwrap_or(lo))),
        (Some(p), None, Some(hi)) if p.has_ports() => Some((hi, hi)),
        _ => None,
    };
    let remote = match (&r.remote_ip_prefix, &r.remote_group_id) {
        (Some(c), _) => nft::Remote::Cidr(net(*c).network()),
        (None, Some(g)) => nft::Remote::Group(g.clone()),
        (None, None) => nft::Remote::Any,
    };
    Ok(nft::SgRule {
        ct_mark: 0,
        direction: match r.direction {
            netmodel::Direction::Ingress => nft::Direction::Ingress,
            netmodel::Direction::Egress => nft::Direction::Egress,
        },
        ethertype,
        protocol,
        port_range,
        remote,
    })
}

/// Whether a port is one of the network's own (router legs, DHCP): those
/// are trusted and get no security-group chains, as in Neutron.
pub fn is_trusted(p: &Port) -> bool {
    p.device_owner.starts_with("network:")
}

impl Plan {
    /// Builds the plan. Never fails as a whole: what cannot be built is
    /// recorded on the network, port or router it concerns.
    pub fn build(state: &HostState, s: &PlanSettings) -> Plan {
        let mut plan = Plan::default();
        let networks: BTreeMap<&str, &Network> =
            state.networks.iter().map(|n| (n.id.as_str(), n)).collect();
        for n in &state.networks {
            match net_plan(n, s) {
                Ok(p) => {
                    plan.networks.insert(n.id.clone(), p);
                }
                Err(e) => {
                    plan.network_errors.insert(n.id.clone(), e);
                }
            }
        }
        // Routers first: which subnets have a router here decides where
        // metadata is answered.
        let mut routed: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
        for r in state.routers.iter().filter(|r| r.admin_state_up) {
            match router_plan(r, &plan.networks, s) {
                Ok(rp) => {
                    for i in &r.interfaces {
                        if let (true, Some(ip)) = (
                            rp.legs.iter().any(|l| l.port_id == i.port_id),
                            v4(i.ip.addr),
                        ) {
                            routed.insert(i.subnet_id.clone(), ip);
                        }
                    }
                    plan.routers.insert(rp.netns.clone(), rp);
                }
                Err(e) => tracing::warn!(router = %r.id, "router skipped: {e}"),
            }
        }
        for n in &state.networks {
            let Some(np) = plan.networks.get(&n.id) else {
                continue;
            };
            if let Some(d) = dhcp_plan(n, np, state, &routed, s) {
                plan.dhcp.insert(d.netns.clone(), d);
            }
        }
        let groups: BTreeMap<&str, &netmodel::SecurityGroup> = state
            .security_groups
            .iter()
            .map(|g| (g.id.as_str(), g))
            .collect();
        for p in &state.ports {
            let pp = port_plan(p, &networks, &plan, &groups);
            plan.add_group_refs(&pp, &groups);
            if let Some(old) = plan.ports.insert(pp.device.clone(), pp) {
                plan.drop_group_refs(&old);
            }
        }
        plan.routed = routed;
        plan
    }

    /// Counts the remote groups `pp`'s rules use, adding the sets of
    /// groups used for the first time.
    fn add_group_refs(&mut self, pp: &PortPlan, groups: &BTreeMap<&str, &netmodel::SecurityGroup>) {
        for g in remote_groups(pp) {
            let n = self.group_refs.entry(g.to_string()).or_default();
            *n += 1;
            if *n == 1 {
                let members = groups
                    .get(g)
                    .map(|sg| group_members(sg))
                    .unwrap_or_default();
                self.groups.insert(
                    g.to_string(),
                    nft::RemoteGroup {
                        id: g.to_string(),
                        members,
                    },
                );
            }
        }
    }

    /// The opposite of [`Plan::add_group_refs`].
    fn drop_group_refs(&mut self, pp: &PortPlan) {
        for g in remote_groups(pp) {
            if let Some(n) = self.group_refs.get_mut(g) {
                *n -= 1;
                if *n == 0 {
                    self.group_refs.remove(g);
                    self.groups.remove(g);
                }
            }
        }
    }

    /// Brings a plan built from `prev` up to `state` when only ports (not
    /// the network's own) and remote groups' members differ, touching only
    /// what changed: the cost is one comparison per port, not a plan per
    /// port. `None` (the plan untouched) when anything else changed, or a
    /// change is one this shortcut does not follow: then
    /// [`Plan::build`] is due. The result equals `Plan::build(state)`.
    pub fn apply_ports(
        &mut self,
        prev: &HostState,
        state: &HostState,
        s: &PlanSettings,
    ) -> Option<PortDelta> {
        if prev.networks != state.networks
            || prev.routers != state.routers
            || prev.security_groups.len() != state.security_groups.len()
            || prev
                .security_groups
                .iter()
                .zip(&state.security_groups)
                .any(|(a, b)| a.id != b.id || a.rules != b.rules)
        {
            return None;
        }
        // Ports that changed, in order (most often one, appended). A
        // controller in the same process hands over the same `Arc` for an
        // unchanged port: a pointer comparison.
        let same = |a: &Arc<Port>, b: &Arc<Port>| Arc::ptr_eq(a, b) || a == b;
        let mut changed: Vec<&Port> = Vec::new();
        let mut removed: Vec<&Port> = Vec::new();
        let same_prefix = prev
            .ports
            .iter()
            .zip(&state.ports)
            .take_while(|(a, b)| a.id == b.id)
            .count();
        for (a, b) in prev.ports[..same_prefix]
            .iter()
            .zip(&state.ports[..same_prefix])
        {
            if !same(a, b) {
                removed.push(a);
                changed.push(b);
            }
        }
        let (rest_a, rest_b) = (&prev.ports[same_prefix..], &state.ports[same_prefix..]);
        if !rest_a.is_empty() || !rest_b.is_empty() {
            let before: std::collections::HashMap<&str, &Arc<Port>> =
                rest_a.iter().map(|p| (p.id.as_str(), p)).collect();
            let after: std::collections::HashMap<&str, &Arc<Port>> =
                rest_b.iter().map(|p| (p.id.as_str(), p)).collect();
            for b in rest_b {
                match before.get(b.id.as_str()) {
                    Some(a) if same(a, b) => {}
                    Some(a) => {
                        removed.push(a);
                        changed.push(b);
                    }
                    None => changed.push(b),
                }
            }
            removed.extend(
                rest_a
                    .iter()
                    .filter(|a| !after.contains_key(a.id.as_str()))
                    .map(|a| &**a),
            );
        }
        // The network's own ports shape DHCP and routers: a full build.
        if changed.iter().chain(&removed).any(|p| is_trusted(p)) {
            return None;
        }
        let devices: Option<Vec<String>> = removed.iter().map(|p| device_of(p).ok()).collect();
        let new_devices: Option<Vec<String>> = changed.iter().map(|p| device_of(p).ok()).collect();
        let (devices, new_devices) = (devices?, new_devices?);
        // A device two ports claim, or one passed from port to port: the
        // full build decides.
        let leaving: BTreeMap<&str, &str> = devices
            .iter()
            .zip(&removed)
            .map(|(d, p)| (d.as_str(), p.id.as_str()))
            .collect();
        let mut arriving = BTreeSet::new();
        for (d, p) in new_devices.iter().zip(&changed) {
            if !arriving.insert(d.as_str()) {
                return None;
            }
            if leaving.get(d.as_str()).is_some_and(|id| *id != p.id) {
                return None;
            }
            if let Some(other) = self.ports.get(d) {
                if other.port_id != p.id && !leaving.contains_key(d.as_str()) {
                    return None;
                }
            }
        }
        let networks: BTreeMap<&str, &Network> =
            state.networks.iter().map(|n| (n.id.as_str(), n)).collect();
        let groups: BTreeMap<&str, &netmodel::SecurityGroup> = state
            .security_groups
            .iter()
            .map(|g| (g.id.as_str(), g))
            .collect();
        let mut delta = PortDelta::default();
        // Members of remote groups in use.
        for (a, b) in prev.security_groups.iter().zip(&state.security_groups) {
            if a.member_ips != b.member_ips {
                if let Some(g) = self.groups.get_mut(&b.id) {
                    g.members = group_members(b);
                }
            }
        }
        let mut olds: BTreeMap<String, PortPlan> = BTreeMap::new();
        for (p, d) in removed.iter().zip(&devices) {
            if let Some(old) = self.ports.remove(d) {
                self.drop_group_refs(&old);
                olds.insert(old.port_id.clone(), old);
            }
            self.lease(p, &networks, s, false, &mut delta.dhcp);
        }
        for p in &changed {
            let pp = port_plan(p, &networks, self, &groups);
            self.add_group_refs(&pp, &groups);
            self.lease(p, &networks, s, true, &mut delta.dhcp);
            // A port whose device changed leaves its old device (removed)
            // and arrives on the new one.
            let old = match olds.remove(&p.id) {
                Some(o) if o.device == pp.device => Some(o),
                Some(o) => {
                    delta.removed.push(o);
                    None
                }
                None => None,
            };
            delta.changed.push((pp.device.clone(), old));
            self.ports.insert(pp.device.clone(), pp);
        }
        delta.removed.extend(olds.into_values());
        Some(delta)
    }

    /// Removes (`add` false) or adds a port's DHCP lease, noting the
    /// namespace.
    fn lease(
        &mut self,
        p: &Port,
        networks: &BTreeMap<&str, &Network>,
        s: &PlanSettings,
        add: bool,
        touched: &mut BTreeSet<String>,
    ) {
        let Some(n) = networks.get(p.network_id.as_str()) else {
            return;
        };
        let Ok(netns) = s.scope.dhcp_netns(&n.id) else {
            return;
        };
        let Some(dp) = self.dhcp.get_mut(&netns) else {
            return;
        };
        let subnets = dhcp_subnets(n);
        let Some((mac, lease)) = lease_of(p, n, &subnets, &self.routed, s) else {
            return;
        };
        if add {
            dp.leases.insert(mac, lease);
        } else if dp.leases.get(&mac) == Some(&lease) {
            dp.leases.remove(&mac);
        } else {
            return;
        }
        touched.insert(netns);
    }

    /// Every `tap` device the plan wants on a bridge: ports and router
    /// legs.
    pub fn wanted_taps(&self) -> BTreeSet<String> {
        self.ports
            .keys()
            .cloned()
            .chain(
                self.routers
                    .values()
                    .flat_map(|r| r.legs.iter().map(|l| l.tap.clone())),
            )
            .collect()
    }
}

fn net_plan(n: &Network, s: &PlanSettings) -> Result<NetPlan, String> {
    let bridge = hn::bridge_name(&n.id).map_err(|e| e.to_string())?;
    if n.conntrack_zone == 0 {
        return Err("conntrack zone 0 is the shared default".into());
    }
    let mut fdb = BTreeSet::new();
    let l2 = match &n.segment {
        // A host without a tunnel address (the all-in-one's default) keeps
        // a VXLAN network on its bridge alone, which is all it needs while
        // no other host has the network; once one has, it is an error.
        Segment::Vxlan { .. }
            if s.vxlan_local.is_none()
                && n.remote_ports.is_empty()
                && n.remote_hosts.is_empty() =>
        {
            L2::Local
        }
        Segment::Vxlan { vni } => {
            let local = s.vxlan_local.ok_or(
                "VXLAN network present on other hosts, but this agent has no local VXLAN address (--tunnel-ip)",
            )?;
            for rp in &n.remote_ports {
                let mac: MacAddr = rp.mac.parse().map_err(|e: hostlink::Error| e.to_string())?;
                fdb.insert(FdbEntry {
                    mac,
                    dst: rp.host_ip,
                });
            }
            for h in &n.remote_hosts {
                fdb.insert(FdbEntry {
                    mac: MacAddr::ZERO,
                    dst: *h,
                });
            }
            L2::Vxlan(hostlink::VxlanSpec {
                name: hn::vxlan_name(*vni).map_err(|e| e.to_string())?,
                vni: *vni,
                local,
                port: hostlink::VxlanSpec::IANA_PORT,
                underlay: s.vxlan_underlay.clone(),
                mtu: n.mtu,
            })
        }
        Segment::Flat { interface, .. } => {
            hn::validate_ifname(interface).map_err(|e| e.to_string())?;
            if names::is_agent_link(interface) || interface.starts_with(hn::TAP_PREFIX) {
                return Err(format!("interface {interface} is one of the agent's own"));
            }
            L2::Flat {
                interface: interface.clone(),
            }
        }
        Segment::Local => L2::Local,
        // The linux driver builds VLANs with 802.1Q devices; hosts without
        // them (this project's machines) report the ports in error rather
        // than wiring them into something else.
        Segment::Vlan { .. } => {
            return Err("VLAN segments need 802.1Q VLAN devices, which the linux driver does not build on this host; use a vxlan or flat network".into())
        }
    };
    Ok(NetPlan {
        id: n.id.clone(),
        bridge,
        mtu: n.mtu,
        zone: n.conntrack_zone,
        l2,
        fdb,
    })
}

fn router_plan(
    r: &netmodel::Router,
    nets: &BTreeMap<String, NetPlan>,
    s: &PlanSettings,
) -> Result<RouterPlan, String> {
    let netns = s.scope.router_netns(&r.id).map_err(|e| e.to_string())?;
    let mut legs = Vec::new();
    let mut skipped = Vec::new();
    let mut internal = Vec::new();
    for i in &r.interfaces {
        let Some(np) = nets.get(&i.network_id) else {
            skipped.push(format!(
                "interface {} on network {} (not on this host)",
                i.port_id, i.network_id
            ));
            continue;
        };
        let name = hn::router_internal_name(&i.port_id).map_err(|e| e.to_string())?;
        let mac = i.mac.parse().map_err(|e: hostlink::Error| e.to_string())?;
        if i.ip.is_ipv4() {
            internal.push(nft::InternalLeg {
                leg: name.clone(),
                subnet: net(i.ip).network(),
            });
        }
        legs.push(LegPlan {
            port_id: i.port_id.clone(),
            network_id: i.network_id.clone(),
            tap: hn::tap_name(&i.port_id).map_err(|e| e.to_string())?,
            name,
            bridge: np.bridge.clone(),
            mac,
            mtu: np.mtu,
            addrs: vec![net(i.ip)],
            gateway: false,
        });
    }
    let mut routes = Vec::new();
    let mut nat = nft::RouterNat {
        netns: netns.clone(),
        gateway_leg: None,
        gateway_ip: None,
        snat: false,
        internal,
        floating_ips: Vec::new(),
        metadata_port: None,
    };
    if let Some(g) = &r.gateway {
        match nets.get(&g.network_id) {
            None => skipped.push(format!(
                "gateway on network {} (not on this host)",
                g.network_id
            )),
            Some(np) => {
                let name = hn::router_gateway_name(&g.port_id).map_err(|e| e.to_string())?;
                let mut addrs: Vec<IpNet> = g.ips.iter().map(|c| net(*c)).collect();
                let gw_ip = g.ips.iter().find_map(|c| v4(c.addr));
                let mut fips = Vec::new();
                for f in &r.floating_ips {
                    if let (Some(fl), Some(fx)) = (v4(f.floating_ip), v4(f.fixed_ip)) {
                        fips.push(nft::FloatingIp {
                            floating: fl,
                            fixed: fx,
                        });
                        addrs.push(host_net(f.floating_ip));
                    }
                }
                if let Some(nh) = g.nexthop {
                    routes.push(Route {
                        dest: if nh.is_ipv4() {
                            IpNet::default_v4()
                        } else {
                            IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0).expect("/0")
                        },
                        gateway: Some(nh),
                        dev: Some(name.clone()),
                    });
                }
                nat.gateway_leg = Some(name.clone());
                nat.gateway_ip = gw_ip;
                nat.snat = g.enable_snat && gw_ip.is_some();
                if gw_ip.is_some() {
                    nat.floating_ips = fips;
                }
                legs.push(LegPlan {
                    port_id: g.port_id.clone(),
                    network_id: g.network_id.clone(),
                    tap: hn::tap_name(&g.port_id).map_err(|e| e.to_string())?,
                    name,
                    bridge: np.bridge.clone(),
                    mac: g.mac.parse().map_err(|e: hostlink::Error| e.to_string())?,
                    mtu: np.mtu,
                    addrs,
                    gateway: true,
                });
            }
        }
    }
    // Static routes go out of the leg whose subnet holds the next hop.
    for hr in &r.routes {
        let dev = legs
            .iter()
            .find(|l| l.addrs.iter().any(|a| a.contains(hr.nexthop)))
            .map(|l| l.name.clone());
        match dev {
            Some(dev) => routes.push(Route {
                dest: net(hr.destination).network(),
                gateway: Some(hr.nexthop),
                dev: Some(dev),
            }),
            None => skipped.push(format!(
                "route to {} via {} (next hop on no leg)",
                hr.destination, hr.nexthop
            )),
        }
    }
    if !nat.internal.is_empty() {
        nat.metadata_port = Some(s.metadata_port);
    }
    routes.sort();
    routes.dedup_by(|a, b| a.dest == b.dest);
    Ok(RouterPlan {
        router_id: r.id.clone(),
        netns,
        legs,
        routes,
        nat,
        skipped,
    })
}

/// A network's IPv4 subnets with DHCP, each with its server address.
fn dhcp_subnets(n: &Network) -> Vec<(&Subnet, Ipv4Addr)> {
    n.subnets
        .iter()
        .filter(|sn| sn.enable_dhcp && sn.cidr.is_ipv4())
        .filter_map(|sn| sn.dhcp_server_ip.and_then(v4).map(|ip| (sn, ip)))
        .collect()
}

fn dhcp_plan(
    n: &Network,
    np: &NetPlan,
    state: &HostState,
    routed: &BTreeMap<String, Ipv4Addr>,
    s: &PlanSettings,
) -> Option<DhcpPlan> {
    let subnets = dhcp_subnets(n);
    if subnets.is_empty() || !n.admin_state_up {
        return None;
    }
    let netns = s.scope.dhcp_netns(&n.id).ok()?;
    let metadata = subnets.iter().any(|(sn, _)| !routed.contains_key(&sn.id));
    let mut addrs: Vec<IpNet> = subnets
        .iter()
        .map(|(sn, ip)| IpNet::new(IpAddr::V4(*ip), sn.cidr.prefix).expect("v4 prefix"))
        .collect();
    if metadata {
        addrs.push(host_net(IpAddr::V4(METADATA_IP)));
    }
    let mac = state
        .ports
        .iter()
        .find(|p| p.network_id == n.id && p.device_owner == "network:dhcp")
        .and_then(|p| p.mac.parse().ok())
        .unwrap_or_else(|| derived_mac(&n.id));
    let leases = state
        .ports
        .iter()
        .filter(|p| p.network_id == n.id)
        .filter_map(|p| lease_of(p, n, &subnets, routed, s))
        .collect();
    Some(DhcpPlan {
        network_id: n.id.clone(),
        netns,
        host_leg: names::dhcp_host_leg(&n.id).ok()?,
        ns_leg: names::dhcp_ns_leg(&n.id).ok()?,
        bridge: np.bridge.clone(),
        mac,
        mtu: np.mtu,
        addrs,
        metadata,
        leases,
    })
}

/// The static lease of a port of network `n` (its first IPv4 address on
/// a DHCP subnet), keyed by its MAC; none for the network's own ports.
fn lease_of(
    p: &Port,
    n: &Network,
    subnets: &[(&Subnet, Ipv4Addr)],
    routed: &BTreeMap<String, Ipv4Addr>,
    s: &PlanSettings,
) -> Option<(MacAddr, Lease)> {
    if is_trusted(p) {
        return None;
    }
    let mac = p.mac.parse::<MacAddr>().ok()?;
    let (sn, server, ip) = p.fixed_ips.iter().find_map(|f| {
        let ip = v4(f.ip)?;
        let (sn, server) = subnets.iter().find(|(sn, _)| sn.id == f.subnet_id)?;
        Some((*sn, *server, ip))
    })?;
    let router = sn.gateway_ip.and_then(v4);
    let mut routes: Vec<(Ipv4Addr, u8, Ipv4Addr)> = Vec::new();
    // Metadata: through the router when the subnet has one here, else
    // to the DHCP namespace, which answers it.
    let md_via = routed.get(&sn.id).copied().unwrap_or(server);
    routes.push((METADATA_IP, 32, md_via));
    for hr in &sn.host_routes {
        if let (Some(d), Some(nh)) = (v4(hr.destination.addr), v4(hr.nexthop)) {
            let dn = net(hr.destination).network();
            if let IpAddr::V4(d0) = dn.addr() {
                let _ = d;
                routes.push((d0, dn.prefix(), nh));
            }
        }
    }
    // RFC 3442 clients ignore option 3 when 121 is present: the default
    // route goes in 121 too.
    if let Some(gw) = router {
        routes.push((Ipv4Addr::UNSPECIFIED, 0, gw));
    }
    let mut dns: Vec<Ipv4Addr> = sn.dns_nameservers.iter().filter_map(|d| v4(*d)).collect();
    dns.dedup();
    Some((
        mac,
        Lease {
            mac,
            ip,
            prefix: sn.cidr.prefix,
            server,
            router,
            dns,
            routes,
            hostname: clean_hostname(&p.hostname),
            mtu: u16::try_from(n.mtu).unwrap_or(u16::MAX),
            lease_time: s.lease_time,
        },
    ))
}

/// The host device a port is wired through.
fn device_of(p: &Port) -> Result<String, String> {
    let r = if p.device_owner == "network:dhcp" {
        names::dhcp_host_leg(&p.network_id)
    } else if p.device_name.is_empty() {
        hn::tap_name(&p.id)
    } else {
        hn::validate_ifname(&p.device_name).map(|()| p.device_name.clone())
    };
    r.map_err(|e| e.to_string())
}

/// Remote groups a port's rules match.
fn remote_groups(pp: &PortPlan) -> impl Iterator<Item = &str> {
    pp.rules
        .iter()
        .flat_map(|r| r.rules.iter())
        .filter_map(|r| match &r.remote {
            nft::Remote::Group(g) => Some(g.as_str()),
            _ => None,
        })
}

/// A group's member set, sorted and without duplicates.
fn group_members(sg: &netmodel::SecurityGroup) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = sg.member_ips.iter().map(|ip| host_net(*ip)).collect();
    v.sort();
    v.dedup();
    v
}

fn port_plan(
    p: &Port,
    networks: &BTreeMap<&str, &Network>,
    plan: &Plan,
    groups: &BTreeMap<&str, &netmodel::SecurityGroup>,
) -> PortPlan {
    let trusted = is_trusted(p);
    let mut error = None;
    let network = networks.get(p.network_id.as_str());
    let np = plan.networks.get(&p.network_id);
    if network.is_none() {
        error = Some(format!("network {} is not on this host", p.network_id));
    } else if let Some(e) = plan.network_errors.get(&p.network_id) {
        error = Some(format!("network {}: {e}", p.network_id));
    }
    let dhcp_leg = p.device_owner == "network:dhcp";
    let device = match device_of(p) {
        Ok(d) => d,
        Err(e) => {
            error.get_or_insert(format!("device name: {e}"));
            // A name that cannot clash with a real device.
            format!("invalid-{}", &p.id.chars().take(7).collect::<String>())
        }
    };
    let agent_made = dhcp_leg || p.device_owner.starts_with("network:router");
    let mut rules = None;
    let mut rule_ids = Vec::new();
    if !trusted {
        let mut sg_rules = Vec::new();
        let mut seen = BTreeSet::new();
        for g in &p.security_group_ids {
            let Some(sg) = groups.get(g.as_str()) else {
                continue;
            };
            for r in &sg.rules {
                if !seen.insert(r.id.clone()) {
                    continue;
                }
                match sg_rule(r) {
                    Ok(x) => {
                        sg_rules.push(x);
                        rule_ids.push(r.id.clone());
                    }
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
        }
        let mut allowed = Vec::new();
        for a in &p.allowed_address_pairs {
            let mac = match &a.mac {
                Some(m) => match m.parse() {
                    Ok(m) => Some(m),
                    Err(e) => {
                        error.get_or_insert(format!("allowed address pair MAC: {e}"));
                        continue;
                    }
                },
                None => None,
            };
            allowed.push(nft::AllowedPair { ip: net(a.ip), mac });
        }
        match p.mac.parse::<MacAddr>() {
            Ok(mac) => {
                rules = Some(nft::PortRules {
                    name: device.clone(),
                    mark: 0,
                    mac,
                    fixed_ips: p.fixed_ips.iter().map(|f| f.ip).collect(),
                    allowed_pairs: allowed,
                    port_security: p.port_security_enabled,
                    rules: sg_rules,
                });
            }
            Err(e) => {
                error.get_or_insert(format!("MAC: {e}"));
            }
        }
    }
    PortPlan {
        port_id: p.id.clone(),
        network_id: p.network_id.clone(),
        device,
        bridge: np.map(|n| n.bridge.clone()).unwrap_or_default(),
        mtu: np.map(|n| n.mtu).unwrap_or(1500),
        admin_up: p.admin_state_up && network.is_some_and(|n| n.admin_state_up),
        agent_made,
        rules,
        rule_ids,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fixtures::*;
    use netmodel::{FloatingIp, HostRoute, Router, RouterGateway, RouterInterface};

    fn settings() -> PlanSettings {
        PlanSettings {
            scope: Scope::new("tplan").unwrap(),
            vxlan_local: None,
            vxlan_underlay: None,
            metadata_port: 9697,
            lease_time: 600,
        }
    }

    fn state() -> (HostState, String, String) {
        let (n, s, ext, sx) = (new_id(), new_id(), new_id(), new_id());
        let mut sn = subnet(&s, "10.0.0.0/24", Some("10.0.0.1"), Some("10.0.0.2"));
        sn.host_routes = vec![HostRoute {
            destination: Cidr::parse("192.168.5.0/24").unwrap(),
            nexthop: "10.0.0.254".parse().unwrap(),
        }];
        sn.dns_nameservers = vec!["10.0.0.53".parse().unwrap()];
        let mut p = vm_port(&new_id(), &n, &s, &mac(1), "10.0.0.5", &[]);
        p.hostname = "web\n1\u{7}".into();
        let st = HostState {
            host: "h".into(),
            revision: 1,
            networks: vec![
                network(&n, 1, Segment::Local, vec![sn]),
                network(
                    &ext,
                    2,
                    Segment::Flat {
                        physical_network: "p".into(),
                        interface: "eth1".into(),
                    },
                    vec![subnet(&sx, "203.0.113.0/24", Some("203.0.113.1"), None)],
                ),
            ],
            ports: vec![Arc::new(p)],
            security_groups: vec![],
            routers: vec![Router {
                id: new_id(),
                project_id: "p".into(),
                admin_state_up: true,
                gateway: Some(RouterGateway {
                    network_id: ext.clone(),
                    port_id: new_id(),
                    mac: mac(9),
                    ips: vec![Cidr::parse("203.0.113.10/24").unwrap()],
                    nexthop: Some("203.0.113.1".parse().unwrap()),
                    enable_snat: true,
                }),
                interfaces: vec![RouterInterface {
                    port_id: new_id(),
                    network_id: n.clone(),
                    subnet_id: s.clone(),
                    mac: mac(8),
                    ip: Cidr::parse("10.0.0.1/24").unwrap(),
                }],
                routes: vec![HostRoute {
                    destination: Cidr::parse("172.16.0.0/12").unwrap(),
                    nexthop: "10.0.0.250".parse().unwrap(),
                }],
                floating_ips: vec![FloatingIp {
                    id: new_id(),
                    floating_ip: "203.0.113.20".parse().unwrap(),
                    fixed_ip: "10.0.0.5".parse().unwrap(),
                    port_id: new_id(),
                }],
            }],
        };
        (st, n, s)
    }

    #[test]
    fn vxlan_without_a_tunnel_address_stays_on_its_bridge_until_another_host_has_it() {
        let (mut st, n, _) = state();
        st.networks[0].segment = Segment::Vxlan { vni: 1001 };
        let plan = Plan::build(&st, &settings());
        let np = &plan.networks[&n];
        assert!(matches!(np.l2, L2::Local), "{:?}", np.l2);
        assert!(plan.ports.values().all(|p| p.error.is_none()));
        st.networks[0].remote_hosts = vec!["192.0.2.7".parse().unwrap()];
        let plan = Plan::build(&st, &settings());
        let err = plan.ports.values().find_map(|p| p.error.clone());
        assert!(
            err.is_some_and(|e| e.contains("--tunnel-ip")),
            "{:?}",
            plan.ports
        );
        let mut with_ip = settings();
        with_ip.vxlan_local = Some("192.0.2.1".parse().unwrap());
        let plan = Plan::build(&st, &with_ip);
        assert!(matches!(plan.networks[&n].l2, L2::Vxlan(_)));
    }

    #[test]
    fn routers_get_legs_routes_and_nat() {
        let (st, _, _) = state();
        let plan = Plan::build(&st, &settings());
        let r = plan.routers.values().next().unwrap();
        assert!(r.netns.starts_with("fsr-tplan-"));
        assert_eq!(r.legs.len(), 2);
        let qg = r.legs.iter().find(|l| l.gateway).unwrap();
        let addrs: Vec<String> = qg.addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["203.0.113.10/24", "203.0.113.20/32"]);
        let routes: Vec<String> = r
            .routes
            .iter()
            .map(|r| format!("{} {:?} {:?}", r.dest, r.gateway, r.dev))
            .collect();
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert!(routes[0].starts_with("0.0.0.0/0 Some(203.0.113.1) Some(\"qg-"));
        assert!(routes[1].starts_with("172.16.0.0/12 Some(10.0.0.250) Some(\"qr-"));
        assert!(r.nat.snat);
        assert_eq!(r.nat.gateway_ip, Some("203.0.113.10".parse().unwrap()));
        assert_eq!(r.nat.floating_ips.len(), 1);
        assert_eq!(r.nat.metadata_port, Some(9697));
        assert!(r.skipped.is_empty());
    }

    #[test]
    fn leases_carry_routes_dns_mtu_and_a_clean_hostname() {
        let (st, _, _) = state();
        let plan = Plan::build(&st, &settings());
        let d = plan.dhcp.values().next().unwrap();
        // The subnet has a router here: metadata goes through it, and the
        // DHCP namespace does not answer metadata.
        assert!(!d.metadata);
        assert_eq!(d.addrs.len(), 1);
        let l = d.leases.values().next().unwrap();
        assert_eq!(l.hostname.as_deref(), Some("web1"));
        assert_eq!(l.dns, vec!["10.0.0.53".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(l.lease_time, 600);
        let routes: Vec<String> = l
            .routes
            .iter()
            .map(|(d, p, g)| format!("{d}/{p} {g}"))
            .collect();
        assert_eq!(
            routes,
            [
                "169.254.169.254/32 10.0.0.1",
                "192.168.5.0/24 10.0.0.254",
                "0.0.0.0/0 10.0.0.1"
            ]
        );
        // Without the router: metadata in the DHCP namespace, routed there.
        let mut st2 = st.clone();
        st2.routers.clear();
        let plan = Plan::build(&st2, &settings());
        let d = plan.dhcp.values().next().unwrap();
        assert!(d.metadata);
        assert!(d
            .addrs
            .iter()
            .any(|a| a.to_string() == "169.254.169.254/32"));
        let l = d.leases.values().next().unwrap();
        assert_eq!(l.routes[0], (METADATA_IP, 32, "10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn ports_get_rules_unless_trusted_and_errors_stay_on_the_port() {
        let (mut st, n, s) = state();
        let mut r = vm_port(&new_id(), &n, &s, &mac(2), "10.0.0.6", &[]);
        r.device_owner = "network:router_interface".into();
        st.ports.push(Arc::new(r.clone()));
        let mut off = vm_port(&new_id(), &n, &s, &mac(3), "10.0.0.7", &[]);
        off.port_security_enabled = false;
        st.ports.push(Arc::new(off.clone()));
        st.ports.push(Arc::new(vm_port(
            &new_id(),
            &new_id(),
            &s,
            &mac(4),
            "10.0.0.8",
            &[],
        )));
        let plan = Plan::build(&st, &settings());
        let by_id = |id: &str| plan.ports.values().find(|p| p.port_id == id).unwrap();
        assert!(by_id(&r.id).rules.is_none());
        assert!(by_id(&r.id).agent_made);
        assert!(!by_id(&off.id).rules.as_ref().unwrap().port_security);
        let lost = plan
            .ports
            .values()
            .find(|p| p.error.is_some())
            .expect("a port on an unknown network");
        assert!(lost.error.as_ref().unwrap().contains("not on this host"));
        // Trusted ports get no lease; the others do.
        let d = plan.dhcp.values().next().unwrap();
        assert_eq!(d.leases.len(), 2);
    }

    #[test]
    fn neutron_rules_translate() {
        let mut r = rule(netmodel::Direction::Ingress, Some("icmp"), Some(8), None);
        r.port_range_max = None;
        let x = sg_rule(&r).unwrap();
        assert_eq!(x.port_range, Some((8, 255)));
        let r = rule(
            netmodel::Direction::Egress,
            Some("tcp"),
            Some(22),
            Some("10.1.2.3/16"),
        );
        let x = sg_rule(&r).unwrap();
        assert_eq!(x.remote, nft::Remote::Cidr("10.1.0.0/16".parse().unwrap()));
        let mut bad = r.clone();
        bad.ethertype = "IPv5".into();
        assert!(sg_rule(&bad).is_err());
        assert_eq!(clean_hostname("\n\t"), None);
    }

    /// Applies `st` → `next` incrementally and checks the result is the
    /// full build's; returns the delta.
    fn apply(plan: &mut Plan, st: &HostState, next: &HostState) -> PortDelta {
        let d = plan
            .apply_ports(st, next, &settings())
            .expect("a port-only change");
        assert_eq!(*plan, Plan::build(next, &settings()));
        d
    }

    #[test]
    fn port_changes_update_the_plan_as_a_full_build_would() {
        let (mut st, n, s) = state();
        let (g, rg) = (new_id(), new_id());
        let mut remote = rule(netmodel::Direction::Ingress, None, None, None);
        remote.remote_group_id = Some(rg.clone());
        st.security_groups = vec![
            sg(
                &g,
                vec![rule(netmodel::Direction::Egress, None, None, None)],
            ),
            sg(&rg, vec![remote]),
        ];
        st.security_groups[1].member_ips = vec!["10.0.0.5".parse().unwrap()];
        let mut plan = Plan::build(&st, &settings());
        let dhcp_ns = settings().scope.dhcp_netns(&n).unwrap();

        // A new port (appended): planned, with its lease.
        let mut next = st.clone();
        let p2 = vm_port(&new_id(), &n, &s, &mac(2), "10.0.0.6", &[&g]);
        next.ports.push(Arc::new(p2.clone()));
        let d = apply(&mut plan, &st, &next);
        assert_eq!(d.changed.len(), 1);
        assert!(d.changed[0].1.is_none(), "new");
        assert!(d.removed.is_empty());
        assert_eq!(d.dhcp, BTreeSet::from([dhcp_ns.clone()]));
        st = next;

        // A port that takes a remote group: the group's set comes in.
        let mut next = st.clone();
        Arc::make_mut(&mut next.ports[1])
            .security_group_ids
            .push(rg.clone());
        Arc::make_mut(&mut next.ports[1]).hostname = "renamed".into();
        let d = apply(&mut plan, &st, &next);
        assert!(plan.groups.contains_key(&rg));
        assert!(d.changed[0].1.is_some(), "changed, with its plan before");
        st = next;

        // The group's members move (a port elsewhere): the set follows.
        let mut next = st.clone();
        next.security_groups[1]
            .member_ips
            .push("10.9.9.9".parse().unwrap());
        let d = apply(&mut plan, &st, &next);
        assert!(d.changed.is_empty() && d.removed.is_empty());
        assert_eq!(plan.groups[&rg].members.len(), 2);
        st = next;

        // Reordered and one removed: the rest are recognised by id.
        let mut next = st.clone();
        let p3 = vm_port(&new_id(), &n, &s, &mac(3), "10.0.0.7", &[&rg]);
        next.ports.insert(0, Arc::new(p3));
        next.ports.retain(|p| p.id != p2.id);
        let d = apply(&mut plan, &st, &next);
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.removed[0].port_id, p2.id);
        assert_eq!(d.changed.len(), 1);
        st = next;

        // The last port using the remote group leaves: its set goes.
        let mut next = st.clone();
        next.ports.retain(|p| !p.security_group_ids.contains(&rg));
        apply(&mut plan, &st, &next);
        assert!(!plan.groups.contains_key(&rg));
        st = next;

        // A port's device renamed: it leaves the old one and arrives on
        // the new one.
        let mut next = st.clone();
        let old_dev = next.ports[0].device_name.clone();
        Arc::make_mut(&mut next.ports[0]).device_name = "tapnewname-00".into();
        let d = apply(&mut plan, &st, &next);
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.removed[0].device, old_dev);
        assert_eq!(d.changed[0].0, "tapnewname-00");
        assert!(d.changed[0].1.is_none());
        st = next;

        // What the shortcut does not follow: rules, networks, the
        // network's own ports, a device two ports claim.
        let mut next = st.clone();
        next.security_groups[0].rules.clear();
        assert!(plan.apply_ports(&st, &next, &settings()).is_none());
        let mut next = st.clone();
        next.networks[0].mtu = 1400;
        assert!(plan.apply_ports(&st, &next, &settings()).is_none());
        let mut next = st.clone();
        let mut dhcp = vm_port(&new_id(), &n, &s, &mac(4), "10.0.0.2", &[]);
        dhcp.device_owner = "network:dhcp".into();
        next.ports.push(Arc::new(dhcp));
        assert!(plan.apply_ports(&st, &next, &settings()).is_none());
        let mut next = st.clone();
        let mut twin = vm_port(&new_id(), &n, &s, &mac(5), "10.0.0.9", &[]);
        twin.device_name = st.ports[0].device_name.clone();
        next.ports.push(Arc::new(twin));
        assert!(plan.apply_ports(&st, &next, &settings()).is_none());
        assert_eq!(plan, Plan::build(&st, &settings()), "left as it was");
    }
}
