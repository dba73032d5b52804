//! The contract between the network service (controller) and the node
//! agent: what must exist on one host ([`HostState`]) and how the agent gets
//! it and reports back ([`NetworkControl`]).
//!
//! The controller computes a host's share from the database: the networks
//! that have ports bound there (with their subnets, DHCP settings and the
//! VXLAN forwarding entries for other hosts' ports), those ports with their
//! security, the security groups they use (with member addresses for
//! remote-group rules), and the routers hosted there. The agent converges
//! the host to it — idempotently, and after a crash from what the host
//! actually has — and reports each port's status, so the API can show
//! `ACTIVE` and record the `network-vif-plugged` event compute waits for.
//!
//! Everything is plain data with serde, so the same interface serves the
//! in-process agent of the all-in-one and, later, a remote agent over a
//! long-poll HTTP call.
//!
//! **Architecture invariant:** no SQL, no HTTP, no kernel here — only the
//! vocabulary both sides share.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// An address with a prefix length, written `10.0.0.0/24` or `fd00::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` (a bare address means a host route: /32 or /128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a CIDR")))
    }
}

/// Everything the agent must build on one host. `revision` grows with every
/// change of any part of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    pub host: String,
    pub revision: u64,
    pub networks: Vec<Network>,
    /// Shared: the controller hands out the same `Port` in every state
    /// until the port changes, so copying a state costs a reference count
    /// per port, and an unchanged port is told by `Arc::ptr_eq`.
    pub ports: Vec<Arc<Port>>,
    pub security_groups: Vec<SecurityGroup>,
    pub routers: Vec<Router>,
}

/// How a network's layer 2 is built on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Segment {
    /// A bridge attached to a host interface (`provider:network_type flat`).
    Flat {
        physical_network: String,
        interface: String,
    },
    /// A bridge with a VXLAN device; `vni` is `provider:segmentation_id`.
    Vxlan { vni: u32 },
    /// A bridge attached to an 802.1Q sub-interface of a host interface
    /// (`provider:network_type vlan`); `vlan_id` is
    /// `provider:segmentation_id`. Added by the network service for the
    /// provider VLAN networks its API accepts.
    Vlan {
        physical_network: String,
        interface: String,
        vlan_id: u16,
    },
    /// A bridge on this host only.
    Local,
}

/// A network present on this host (it has a port here, or a router or DHCP
/// leg here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub project_id: String,
    pub mtu: u32,
    pub segment: Segment,
    pub external: bool,
    pub admin_state_up: bool,
    pub subnets: Vec<Subnet>,
    /// Conntrack zone for this network on this host (unique per host), so
    /// tenants with overlapping addresses never share connection state.
    pub conntrack_zone: u16,
    /// For VXLAN: where the network's ports on other hosts live
    /// (l2population). Empty for other segment types.
    pub remote_ports: Vec<RemotePort>,
    /// Underlay addresses of the other hosts with ports on this network, for
    /// broadcast (BUM) forwarding entries.
    pub remote_hosts: Vec<IpAddr>,
}

/// A port of this network on another host, reached over VXLAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemotePort {
    pub mac: String,
    pub host_ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub cidr: Cidr,
    pub gateway_ip: Option<IpAddr>,
    pub enable_dhcp: bool,
    pub dns_nameservers: Vec<IpAddr>,
    pub host_routes: Vec<HostRoute>,
    /// The address of the network's DHCP port on this subnet, if DHCP runs.
    pub dhcp_server_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub destination: Cidr,
    pub nexthop: IpAddr,
}

/// A port bound to this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    pub mac: String,
    pub fixed_ips: Vec<FixedIp>,
    /// `compute:nova`, `network:router_interface`, `network:dhcp`, …
    pub device_owner: String,
    pub device_id: String,
    pub admin_state_up: bool,
    pub port_security_enabled: bool,
    pub allowed_address_pairs: Vec<AllowedAddressPair>,
    pub security_group_ids: Vec<String>,
    /// The DHCP hostname option (validated: no control characters).
    pub hostname: String,
    /// The tap device name the agent waits for (`tap` + 11 chars of the id).
    pub device_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedAddressPair {
    pub ip: Cidr,
    /// `None` means the port's own MAC.
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub rules: Vec<SecurityGroupRule>,
    /// Addresses of every port (on any host) in this group: the members
    /// remote-group rules match.
    pub member_ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    pub id: String,
    pub direction: Direction,
    /// `IPv4` or `IPv6`.
    pub ethertype: String,
    /// A name (`tcp`, `udp`, `icmp`, `ipv6-icmp`, …) or a number; `None` is any.
    pub protocol: Option<String>,
    pub port_range_min: Option<u16>,
    pub port_range_max: Option<u16>,
    pub remote_ip_prefix: Option<Cidr>,
    pub remote_group_id: Option<String>,
}

/// A router hosted here: a namespace with its legs, routes and NAT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Router {
    pub id: String,
    pub project_id: String,
    pub admin_state_up: bool,
    pub gateway: Option<RouterGateway>,
    pub interfaces: Vec<RouterInterface>,
    pub routes: Vec<HostRoute>,
    pub floating_ips: Vec<FloatingIp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterGateway {
    pub network_id: String,
    pub port_id: String,
    pub mac: String,
    /// The router's addresses on the external network, with prefixes.
    pub ips: Vec<Cidr>,
    /// The external subnet's gateway: the router's default route.
    pub nexthop: Option<IpAddr>,
    pub enable_snat: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterInterface {
    pub port_id: String,
    pub network_id: String,
    pub subnet_id: String,
    pub mac: String,
    /// The router's address on the subnet (usually the gateway), with the
    /// subnet's prefix.
    pub ip: Cidr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    pub id: String,
    pub floating_ip: IpAddr,
    pub fixed_ip: IpAddr,
    pub port_id: String,
}

/// What the agent observed for a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortStatus {
    /// Wired: its device exists, is on its bridge and its rules are loaded.
    Active,
    /// Not wired (yet): e.g. its device does not exist.
    Down,
    /// The agent failed to wire it; the message says why.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortReport {
    pub port_id: String,
    pub status: PortStatus,
    pub message: Option<String>,
}

/// Who is asking the metadata service: found by the network a request
/// arrived on and its source address — never by anything the guest sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataCaller {
    pub network_id: String,
    pub ip: IpAddr,
}

/// The metadata documents for a caller, as the controller builds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataAnswer {
    /// Path (under `/openstack/latest/` and the dated versions) → JSON.
    pub openstack: Vec<(String, serde_json::Value)>,
    /// `user_data`, if any (served raw).
    pub user_data: Option<Vec<u8>>,
}

/// Errors across the interface.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown host {0}")]
    UnknownHost(String),
    #[error("the controller is unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future (the trait is used as `Arc<dyn NetworkControl>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The controller side, as the agent sees it. Implemented in-process by the
/// network service; a remote implementation calls the controller over HTTP.
pub trait NetworkControl: Send + Sync + 'static {
    /// The desired state of `host`, returned as soon as its revision is
    /// greater than `after` (or at once when `after` is `None`), or after
    /// `wait` with the current state if nothing changed (long poll).
    fn watch<'a>(
        &'a self,
        host: &'a str,
        after: Option<u64>,
        wait: std::time::Duration,
    ) -> BoxFuture<'a, Result<HostState, Error>>;
    /// Reports the observed status of ports on `host`.
    fn report_ports<'a>(
        &'a self,
        host: &'a str,
        reports: Vec<PortReport>,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// Metadata for a caller; `None` when the caller is no known port
    /// (answered 404 to the guest).
    fn metadata<'a>(
        &'a self,
        caller: MetadataCaller,
    ) -> BoxFuture<'a, Result<Option<MetadataAnswer>, Error>>;
    /// The agent of `host` says its loop stopped (a panic or an error)
    /// and is restarting: it is shown not alive until it is heard from
    /// again (its next `watch` or report).
    fn agent_down<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), Error>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_print_and_serialize() {
        let c = Cidr::parse("10.0.0.0/24").unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/24");
        assert_eq!(Cidr::parse("10.0.0.5").unwrap().prefix, 32);
        assert_eq!(Cidr::parse("fd00::/64").unwrap().prefix, 64);
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0/24").is_none());
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.0.0.0/24\"");
        let back: Cidr = serde_json::from_str("\"10.0.0.0/24\"").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn host_state_round_trips_as_json() {
        let s = HostState {
            host: "h1".into(),
            revision: 7,
            networks: vec![Network {
                id: "n".into(),
                project_id: "p".into(),
                mtu: 1450,
                segment: Segment::Vxlan { vni: 100 },
                external: false,
                admin_state_up: true,
                subnets: vec![],
                conntrack_zone: 1,
                remote_ports: vec![],
                remote_hosts: vec![],
            }],
            ..Default::default()
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["networks"][0]["segment"]["type"], "vxlan");
        assert_eq!(serde_json::from_value::<HostState>(j).unwrap(), s);
    }
}
