//! The typed model of what the data plane needs from nftables.

use std::net::{IpAddr, Ipv4Addr};

use hostlink::{IpNet, MacAddr};
use serde::Serialize;

use crate::Error;

/// The bits of a packet mark that name the port: port marks are
/// multiples of 2^16.
pub const PORT_MARK_MASK: u32 = 0xffff_0000;
/// The bits of a rule mark (see [`SgRule::ct_mark`]); a session's
/// conntrack mark holds two of them.
pub const RULE_MARK_MASK: u32 = 0xffff;

/// Traffic direction, seen from the VM (Neutron's convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    /// Towards the VM.
    Ingress,
    /// From the VM.
    Egress,
}

/// Address family a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EtherType {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// An IP protocol, as Neutron accepts it: by name or by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Protocol(pub u8);

impl Protocol {
    /// ICMP.
    pub const ICMP: Protocol = Protocol(1);
    /// TCP.
    pub const TCP: Protocol = Protocol(6);
    /// UDP.
    pub const UDP: Protocol = Protocol(17);
    /// ICMPv6.
    pub const ICMPV6: Protocol = Protocol(58);
    /// SCTP.
    pub const SCTP: Protocol = Protocol(132);

    /// Parses a Neutron protocol value: a name Neutron knows
    /// (`tcp`, `udp`, `icmp`, `ipv6-icmp`/`icmpv6`, `sctp`, …) or a
    /// number 0–255.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let n = match s.to_ascii_lowercase().as_str() {
            "icmp" => 1,
            "igmp" => 2,
            "tcp" => 6,
            "egp" => 8,
            "udp" => 17,
            "dccp" => 33,
            "ipv6-encap" => 41,
            "rsvp" => 46,
            "gre" => 47,
            "esp" => 50,
            "ah" => 51,
            "ipv6-icmp" | "icmpv6" => 58,
            "ospf" => 89,
            "pgm" => 113,
            "vrrp" => 112,
            "sctp" => 132,
            "udplite" => 136,
            other => other.parse::<u8>().map_err(|_| Error::Invalid {
                object: format!("protocol {s:?}"),
                reason: "not a protocol name or number 0-255".into(),
            })?,
        };
        Ok(Protocol(n))
    }

    /// Whether the protocol has ports nftables can match
    /// (`th dport`).
    pub fn has_ports(self) -> bool {
        matches!(self.0, 6 | 17 | 33 | 132 | 136)
    }

    /// Whether the protocol is ICMP or ICMPv6.
    pub fn is_icmp(self) -> bool {
        matches!(self.0, 1 | 58)
    }
}

/// Where the other end of a rule's traffic may be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Remote {
    /// Anywhere.
    Any,
    /// A prefix.
    Cidr(#[serde(serialize_with = "display")] IpNet),
    /// The members of a security group, by id: a named set kept up to
    /// date with [`crate::Firewall::upsert_remote_group`].
    Group(String),
}

/// One security-group rule of one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SgRule {
    /// The rule's mark, 1–65535 (the low 16 bits of [`RULE_MARK_MASK`]):
    /// a session this rule accepts carries it in its conntrack mark, in
    /// the high half for an egress rule and the low half for an ingress
    /// one (see [`crate::render::session_half`]), and is cut when the
    /// pair (port, rule) is revoked (the rule left the port, or the port
    /// was removed). The same for every port the rule applies to
    /// (security-group chains are shared), unique per rule on the host
    /// and not reused while sessions may live; the agent allocates them.
    pub ct_mark: u32,
    /// Direction.
    pub direction: Direction,
    /// Family.
    pub ethertype: EtherType,
    /// Protocol, or any.
    pub protocol: Option<Protocol>,
    /// Destination port range (inclusive) for TCP/UDP/SCTP/DCCP/UDP-Lite,
    /// or ICMP type (`.0`) and code (`.1`, when not 255) for ICMP, as
    /// Neutron encodes them in `port_range_min`/`port_range_max`.
    pub port_range: Option<(u16, u16)>,
    /// Remote side.
    pub remote: Remote,
}

/// An allowed address pair: extra source addresses (and MAC) the VM may
/// use (VRRP, keepalived…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowedPair {
    /// Address or prefix.
    #[serde(serialize_with = "display")]
    pub ip: IpNet,
    /// MAC, when not the port's own.
    #[serde(serialize_with = "display_opt")]
    pub mac: Option<MacAddr>,
}

/// Everything the firewall needs to know about one port on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortRules {
    /// The host-side interface (tap) on the bridge.
    pub name: String,
    /// Packet mark identifying the port between the bridge and inet
    /// tables: a multiple of 2^16 (the low bits carry rule marks in
    /// sessions' conntrack marks), unique per host, not 0.
    pub mark: u32,
    /// The port's MAC.
    #[serde(serialize_with = "display")]
    pub mac: MacAddr,
    /// The port's fixed IPs.
    pub fixed_ips: Vec<IpAddr>,
    /// Allowed address pairs.
    pub allowed_pairs: Vec<AllowedPair>,
    /// Neutron's `port_security_enabled`: when false the port gets no
    /// chains at all (no filtering, no anti-spoofing).
    pub port_security: bool,
    /// Security-group rules, all groups of the port merged.
    pub rules: Vec<SgRule>,
}

/// The members of a remote security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteGroup {
    /// Security group id (lowercase hex and dashes).
    pub id: String,
    /// Member addresses: host addresses of its ports (fixed IPs and
    /// host-sized allowed pairs), one element each.
    pub members: Vec<IpNet>,
}

/// A router's internal leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InternalLeg {
    /// The `qr-` device in the router namespace.
    pub leg: String,
    /// The subnet behind it.
    #[serde(serialize_with = "display")]
    pub subnet: IpNet,
}

/// A floating IP on a router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloatingIp {
    /// The public address (also a /32 on the gateway leg, see the recipe).
    pub floating: Ipv4Addr,
    /// The VM's fixed address behind it.
    pub fixed: Ipv4Addr,
}

/// The NAT of one router namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterNat {
    /// The router's namespace.
    pub netns: String,
    /// The `qg-` gateway leg, if the router has an external gateway.
    pub gateway_leg: Option<String>,
    /// The gateway leg's address, used for SNAT and hairpin.
    pub gateway_ip: Option<Ipv4Addr>,
    /// Neutron's `enable_snat`.
    pub snat: bool,
    /// Internal legs.
    pub internal: Vec<InternalLeg>,
    /// Floating IPs.
    pub floating_ips: Vec<FloatingIp>,
    /// Local port the metadata proxy listens on; traffic to
    /// 169.254.169.254:80 arriving on an internal leg is redirected there.
    pub metadata_port: Option<u16>,
}

/// A port as read back from the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledPort {
    /// Interface name.
    pub name: String,
    /// Its packet mark.
    pub mark: u32,
    /// Digest of the rules installed for it (see [`PortRules::digest`]).
    pub digest: String,
    /// Its installed rules as (port, rule) pairs, `mark | rule mark`
    /// (what a revocation names), sorted.
    pub ct_marks: Vec<u32>,
}

fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn display_opt<T: std::fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// FNV-1a, 64 bits: a stable digest without another dependency (it
/// detects change, it does not defend against anyone).
pub(crate) fn fnv(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

pub(crate) fn check_ifname(name: &str) -> Result<(), Error> {
    hostlink::names::validate_ifname(name).map_err(|e| Error::Invalid {
        object: format!("interface {name:?}"),
        reason: e.to_string(),
    })
}

pub(crate) fn check_group_id(id: &str) -> Result<(), Error> {
    if id.is_empty()
        || id.len() > 40
        || !id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-')
    {
        return Err(Error::Invalid {
            object: format!("security group {id:?}"),
            reason: "ids are up to 40 lowercase hex digits and dashes".into(),
        });
    }
    Ok(())
}

impl PortRules {
    /// Checks the port before anything is rendered, so a bad port never
    /// reaches nft (and never fails a transaction other ports share).
    pub fn validate(&self) -> Result<(), Error> {
        check_ifname(&self.name)?;
        let bad = |reason: String| Error::Invalid {
            object: format!("port {}", self.name),
            reason,
        };
        if self.mark == 0 || self.mark & RULE_MARK_MASK != 0 {
            return Err(bad(format!(
                "mark {:#x} is not a non-zero multiple of 2^16",
                self.mark
            )));
        }
        for p in &self.allowed_pairs {
            if p.ip.prefix() == 0 {
                return Err(bad(format!("allowed address pair {} is a /0", p.ip)));
            }
        }
        for r in &self.rules {
            if r.ct_mark == 0 || r.ct_mark > RULE_MARK_MASK {
                return Err(bad(format!(
                    "rule mark {:#x} is not in 1..=0xffff",
                    r.ct_mark
                )));
            }
            if let Some((lo, hi)) = r.port_range {
                let proto = r
                    .protocol
                    .ok_or_else(|| bad("a port range needs a protocol".into()))?;
                if proto.has_ports() && (lo > hi || lo == 0) {
                    return Err(bad(format!("port range {lo}-{hi}")));
                }
                if proto.is_icmp() && (lo > 255 || hi > 255) {
                    return Err(bad(format!("ICMP type/code {lo}/{hi}")));
                }
                if !proto.has_ports() && !proto.is_icmp() {
                    return Err(bad(format!("protocol {} has no ports", proto.0)));
                }
            }
            match &r.remote {
                Remote::Cidr(n) if n.addr().is_ipv4() != (r.ethertype == EtherType::V4) => {
                    return Err(bad(format!(
                        "remote {n} does not match the rule's ethertype"
                    )))
                }
                Remote::Group(g) => check_group_id(g)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A digest of everything that ends up in the port's elements and
    /// chains. Stored with them (the comment of its `port_mark` entry),
    /// so a reconciler (and `upsert_port` itself) can tell an unchanged
    /// port without touching nftables.
    pub fn digest(&self) -> String {
        fnv(&format!(
            "{}:{}",
            crate::render::CHAIN_RENDER_VERSION,
            serde_json::to_string(self).unwrap_or_default()
        ))
    }
}

impl RemoteGroup {
    /// Members are host addresses (plain sets hold them; a prefix is
    /// refused by name).
    pub fn validate(&self) -> Result<(), Error> {
        check_group_id(&self.id)?;
        for m in &self.members {
            let host = if m.addr().is_ipv4() { 32 } else { 128 };
            if m.prefix() != host {
                return Err(Error::Invalid {
                    object: format!("security group {} member {m}", self.id),
                    reason: "members are host addresses".into(),
                });
            }
        }
        Ok(())
    }
}

impl RouterNat {
    /// Checks names and addresses before rendering.
    pub fn validate(&self) -> Result<(), Error> {
        hostlink::names::validate_netns_name(&self.netns).map_err(|e| Error::Invalid {
            object: format!("router netns {:?}", self.netns),
            reason: e.to_string(),
        })?;
        if let Some(g) = &self.gateway_leg {
            check_ifname(g)?;
        }
        for l in &self.internal {
            check_ifname(&l.leg)?;
            if !l.subnet.addr().is_ipv4() {
                return Err(Error::Invalid {
                    object: format!("router {} leg {}", self.netns, l.leg),
                    reason: "NAT applies to IPv4 subnets only".into(),
                });
            }
        }
        if (self.snat || !self.floating_ips.is_empty())
            && (self.gateway_leg.is_none() || self.gateway_ip.is_none())
        {
            return Err(Error::Invalid {
                object: format!("router {}", self.netns),
                reason: "SNAT and floating IPs need a gateway leg and address".into(),
            });
        }
        Ok(())
    }

    /// Digest of the router's NAT, stored with its rules.
    /// Covers the rendering too (`ROUTER_RENDER_VERSION`), so routers
    /// built by an older agent are rewritten with the current rules.
    pub fn digest(&self) -> String {
        fnv(&format!(
            "{ROUTER_RENDER_VERSION}:{}",
            serde_json::to_string(self).unwrap_or_default()
        ))
    }
}

/// Bumped whenever `render::router_commands` changes what it makes of the
/// same [`RouterNat`].
const ROUTER_RENDER_VERSION: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_by_name_and_number() {
        assert_eq!(Protocol::parse("tcp").unwrap(), Protocol::TCP);
        assert_eq!(Protocol::parse("IPV6-ICMP").unwrap(), Protocol::ICMPV6);
        assert_eq!(Protocol::parse("icmpv6").unwrap(), Protocol::ICMPV6);
        assert_eq!(Protocol::parse("112").unwrap(), Protocol(112));
        assert!(Protocol::parse("256").is_err());
        assert!(Protocol::parse("tcp; drop").is_err());
    }
}
