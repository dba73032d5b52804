//! Plain data types shared by the real and the fake driver.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use crate::names::validate_netns_name;
use crate::Error;

/// Which network namespace an operation targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Netns {
    /// The namespace the calling thread is in: the host's own namespace for
    /// the node agent.
    Current,
    /// A named namespace under `/run/netns`, as `ip netns` creates them.
    Named(String),
}

impl Netns {
    /// A named namespace, after checking the name.
    pub fn named(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        validate_netns_name(&name)?;
        Ok(Netns::Named(name))
    }

    /// The name, or `None` for the current namespace.
    pub fn name(&self) -> Option<&str> {
        match self {
            Netns::Current => None,
            Netns::Named(n) => Some(n),
        }
    }
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netns::Current => f.write_str("the current netns"),
            Netns::Named(n) => write!(f, "netns {n}"),
        }
    }
}

/// An Ethernet (MAC) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `00:00:00:00:00:00`, the VXLAN FDB key for broadcast, unknown-unicast
    /// and multicast (BUM) traffic.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Whether this is a multicast (or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Builds from a slice, as netlink hands addresses over.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidValue {
            value: s.to_string(),
            expected: "a MAC address like fa:16:3e:00:00:01",
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// An IP address with a prefix length (`10.0.0.1/24`), as an interface
/// address or a route destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Builds a prefix, checking the length against the address family.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, Error> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::InvalidValue {
                value: format!("{addr}/{prefix}"),
                expected: "a prefix length within the address family",
            });
        }
        Ok(IpNet { addr, prefix })
    }

    /// The IPv4 default route destination, `0.0.0.0/0`.
    pub fn default_v4() -> Self {
        IpNet {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            prefix: 0,
        }
    }

    /// The address as given (host bits kept).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The same prefix with host bits cleared (`10.0.0.1/24` →
    /// `10.0.0.0/24`), which is how the kernel keys routes.
    pub fn network(&self) -> IpNet {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        IpNet {
            addr,
            prefix: self.prefix,
        }
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match IpNet::new(ip, self.prefix) {
            Ok(n) => ip.is_ipv4() == self.addr.is_ipv4() && n.network() == self.network(),
            Err(_) => false,
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidValue {
            value: s.to_string(),
            expected: "an address with a prefix length like 10.0.0.1/24",
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        IpNet::new(addr, prefix)
    }
}

/// What kind of device a link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// One end of a veth pair.
    Veth,
    /// A VXLAN device, with the settings read back from the kernel.
    Vxlan(VxlanInfo),
    /// A tun/tap device (a VM's NIC, created by QEMU).
    Tun,
    /// A device without a kind: loopback or a physical NIC.
    Device,
    /// Any other kind, by the kernel's name for it.
    Other(String),
}

/// The settings of a VXLAN device that Ferrostack sets and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanInfo {
    /// The VXLAN network identifier (the network's segmentation id).
    pub vni: u32,
    /// The local tunnel endpoint address.
    pub local: Option<Ipv4Addr>,
    /// The UDP destination port (4789 by IANA).
    pub port: u16,
    /// Whether the device learns remote MACs from received packets
    /// (Ferrostack turns it off: entries come from the controller).
    pub learning: bool,
    /// The underlay device by name, when one is bound.
    pub underlay: Option<String>,
}

/// A link as listed in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface name.
    pub name: String,
    /// Interface index in its namespace.
    pub index: u32,
    /// Device kind.
    pub kind: LinkKind,
    /// The bridge this link is a port of, by name.
    pub master: Option<String>,
    /// MTU in bytes.
    pub mtu: u32,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<MacAddr>,
    /// Administrative state (`IFF_UP`).
    pub up: bool,
}

/// Desired settings of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Interface name (see [`crate::names::bridge_name`]).
    pub name: String,
    /// MTU; the bridge is brought up with it.
    pub mtu: u32,
}

/// Desired settings of a veth pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethSpec {
    /// Name of the end in the namespace the operation targets.
    pub name: String,
    /// Name of the other end.
    pub peer: String,
    /// Namespace of the other end.
    pub peer_netns: Netns,
    /// MTU of both ends.
    pub mtu: u32,
    /// MAC of the peer end (a VM-like end wants a fixed `fa:16:3e:…` MAC).
    pub peer_mac: Option<MacAddr>,
    /// Whether the end in the target namespace is brought up (the peer
    /// always is). Left down, it is what a hypervisor's tap is until the
    /// agent wires it.
    pub up: bool,
}

/// Desired settings of a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Interface name (see [`crate::names::vxlan_name`]).
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// Local tunnel endpoint.
    pub local: Ipv4Addr,
    /// UDP port, normally 4789.
    pub port: u16,
    /// Underlay device carrying the tunnel traffic.
    pub underlay: Option<String>,
    /// MTU of the VXLAN device (underlay MTU - 50 for IPv4).
    pub mtu: u32,
}

impl VxlanSpec {
    /// The IANA-assigned VXLAN port.
    pub const IANA_PORT: u16 = 4789;
}

/// An interface address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddressInfo {
    /// Interface name.
    pub link: String,
    /// Address and prefix length.
    pub net: IpNet,
}

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Destination prefix (`0.0.0.0/0` for the default route).
    pub dest: IpNet,
    /// Next hop, if not directly connected.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub dev: Option<String>,
}

/// A permanent neighbour (ARP/ND) entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    /// Interface name.
    pub link: String,
    /// IP address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: MacAddr,
}

/// A forwarding entry of a VXLAN device: frames for `mac` go to `dst`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    /// Destination MAC; [`MacAddr::ZERO`] is the BUM entry, which may name
    /// several remote endpoints.
    pub mac: MacAddr,
    /// Remote tunnel endpoint.
    pub dst: IpAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_junk() {
        let m: MacAddr = "fa:16:3e:00:0a:01".parse().unwrap();
        assert_eq!(m.to_string(), "fa:16:3e:00:0a:01");
        for s in [
            "",
            "fa:16:3e:00:0a",
            "fa:16:3e:00:0a:01:02",
            "zz:16:3e:00:0a:01",
            "f:16:3e:00:0a:01",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s}");
        }
        assert!(MacAddr([0xff; 6]).is_multicast());
        assert!(!m.is_multicast());
    }

    #[test]
    fn ipnet_parses_and_masks() {
        let n: IpNet = "10.0.0.7/24".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.0.0.0/24");
        assert!(n.contains("10.0.0.200".parse().unwrap()));
        assert!(!n.contains("10.0.1.1".parse().unwrap()));
        assert!("10.0.0.1/33".parse::<IpNet>().is_err());
        let v6: IpNet = "fd00::1/64".parse().unwrap();
        assert_eq!(v6.network().to_string(), "fd00::/64");
        assert_eq!(IpNet::default_v4().network().to_string(), "0.0.0.0/0");
    }
}
