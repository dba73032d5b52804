//! Rendering the model to nft: JSON commands for every change, and the
//! text form for the one-time base (see [`base_script`] for why).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hostlink::{IpNet, MacAddr};
use serde_json::{json, Value};

use crate::model::{
    fnv, Direction, EtherType, PortRules, Protocol, Remote, RemoteGroup, RouterNat, SgRule,
};

/// The bridge-family table: port marks and anti-spoofing.
pub const BRIDGE_TABLE: &str = "fs_port";
/// The inet table: conntrack zones and security groups.
pub const INET_TABLE: &str = "fs_sg";
/// The ip table in each router namespace: NAT.
pub const NAT_TABLE: &str = "fs_nat";
/// Prefix of rule comments that carry a digest.
pub const DIGEST_TAG: &str = "fs-digest:";
/// How long a revoked conntrack mark stays in the `revoked` set: the
/// kernel's default established-TCP timeout (5 days), after which no
/// session can still carry it.
pub const REVOKE_TIMEOUT_S: u64 = 432_000;

/// The host's base tables, sets, maps and chains, as an nft script.
///
/// It is text, not JSON, because the conntrack-zone map must be declared
/// `typeof iifname : ct zone` (the zone has no named datatype) and nft
/// 1.0.6's JSON parser does not take `typeof`. Everything after the base
/// (elements of that map included) is JSON. Applied only when the tables
/// are missing (or are an older layout: then they are replaced in the
/// same transaction), so the hook chains' rules are never doubled.
///
/// Every chain here is shared by all ports: a port is only elements of
/// the sets and maps (anti-spoofing sets keyed by interface name, its
/// mark, its verdict-map entries), and the security-group chains are one
/// pair per security-group set (see [`port_commands`]). No anonymous
/// sets: nft reads every set with its elements, and every chain, before
/// any transaction that adds a rule or an element.
pub fn base_script() -> String {
    format!(
        r#"table bridge {b} {{
  map port_mark {{ type ifname : mark; }}
{bo}  chain antispoof_pre {{ type filter hook prerouting priority -350; policy accept; iifname @secured jump antispoof; }}
  chain mark_pre {{ type filter hook prerouting priority -300; policy accept; {mp}; }}
  chain mark_fwd {{ type filter hook forward priority -200; policy accept; {mf}; }}
}}
table inet {i} {{
  map zones {{
    typeof iifname : ct zone
  }}
  map egress {{ type mark : verdict; }}
  map ingress {{ type mark : verdict; }}
{io}  chain zone_raw {{ type filter hook prerouting priority raw; policy accept; ct zone set iifname map @zones; }}
  chain sg_pre {{ type filter hook prerouting priority 0; policy accept; {sp}; }}
  chain sg_fwd {{ type filter hook forward priority 0; policy accept; {sf}; }}
}}
"#,
        b = BRIDGE_TABLE,
        i = INET_TABLE,
        bo = BRIDGE_OBJECTS,
        io = INET_OBJECTS,
        mp = MARK_PRE_RULES.join("; "),
        mf = MARK_FWD_RULES.join("; "),
        sp = SG_PRE_RULES.join("; "),
        sf = SG_FWD_RULES.join("; "),
    )
}

/// The bridge table's `mark_pre` rules: a packet from a port carries its
/// mark; one from a removed port still on the bridge its old mark, so
/// that its sessions stay cut (see [`remove_port_commands`]).
const MARK_PRE_RULES: [&str; 2] = [
    "meta mark set iifname map @port_mark",
    "meta mark set iifname map @gone_mark",
];
/// The bridge table's `mark_fwd` rules: a packet to a port carries its
/// mark (or a removed port's old one), anything else none.
const MARK_FWD_RULES: [&str; 3] = [
    "meta mark set 0",
    "meta mark set oifname map @port_mark",
    "meta mark set oifname map @gone_mark",
];
/// `sg_pre` sees a packet with the mark of the port that sent it: the
/// session's initiator in the original direction (whose egress rule is
/// the high half of the conntrack mark), the answering port in the reply
/// direction (whose ingress rule is the low half). A pair in
/// `revoked_rules` drops it; then established sessions pass, and a new
/// one goes through its port's egress chain.
const SG_PRE_RULES: [&str; 4] = [
    "ct direction original meta mark . ct mark and 0xffff0000 @revoked_rules drop",
    "ct direction reply meta mark . ct mark and 0x0000ffff @revoked_rules drop",
    "ct state established,related accept",
    "meta mark vmap @egress",
];
/// `sg_fwd` sees a packet with the mark of the port it goes to: the
/// answering port in the original direction (the low half), the
/// initiator in the reply direction (the high half). A remote-group rule
/// that no longer admits the session's remote address cuts it too
/// (`revoked_remote4`/`6`: the ingress half with the original source,
/// the egress half with the original destination).
const SG_FWD_RULES: [&str; 9] = [
    "ct direction original meta mark . ct mark and 0x0000ffff @revoked_rules drop",
    "ct direction reply meta mark . ct mark and 0xffff0000 @revoked_rules drop",
    "meta nfproto ipv4 ct mark and 0x0000ffff . ct original ip saddr @revoked_remote4 drop",
    "meta nfproto ipv4 ct mark and 0xffff0000 . ct original ip daddr @revoked_remote4 drop",
    "meta nfproto ipv6 ct mark and 0x0000ffff . ct original ip6 saddr @revoked_remote6 drop",
    "meta nfproto ipv6 ct mark and 0xffff0000 . ct original ip6 daddr @revoked_remote6 drop",
    "ct state established,related accept",
    "ct state invalid drop",
    "meta mark vmap @ingress",
];

/// The objects this layout adds to the previous one (version 2: one
/// conntrack mark per session, `port | rule`, the last stamp winning),
/// and its hook chains' rules rewritten, in one transaction. The older
/// agent's `revoked` and `revoked_ports` sets stay, unused: their values
/// mean nothing in this layout.
fn session_halves_upgrade() -> String {
    let mut s = format!(
        "table bridge {b} {{\n{bs}}}\ntable inet {i} {{\n{is}}}\n",
        b = BRIDGE_TABLE,
        i = INET_TABLE,
        bs = BRIDGE_SESSION_OBJECTS,
        is = INET_SESSION_OBJECTS,
    );
    for (family, table, chain, rules) in [
        ("bridge", BRIDGE_TABLE, "mark_pre", &MARK_PRE_RULES[..]),
        ("bridge", BRIDGE_TABLE, "mark_fwd", &MARK_FWD_RULES[..]),
        ("inet", INET_TABLE, "sg_pre", &SG_PRE_RULES[..]),
        ("inet", INET_TABLE, "sg_fwd", &SG_FWD_RULES[..]),
    ] {
        s.push_str(&format!("flush chain {family} {table} {chain}\n"));
        for r in rules {
            s.push_str(&format!("add rule {family} {table} {chain} {r}\n"));
        }
    }
    s
}

/// The previous layout's tables (shared chains, one conntrack mark per
/// session), completed in place (see [`session_halves_upgrade`]): its
/// ports stay filtered while each moves to the new chains with its next
/// change (their digests change with [`CHAIN_RENDER_VERSION`]).
pub fn shared_chains_upgrade_script() -> String {
    session_halves_upgrade()
}

/// What the per-port layout (an older agent's: chains `as-`/`eg-`/`in-`
/// per port, `antispoof` verdict map) lacks, added to its tables in one
/// transaction so they keep filtering while the ports move over one by
/// one (each port's first change deletes its old chains): the sets and
/// shared chains, the jump to `antispoof`, and this layout's hook chains.
pub fn upgrade_script() -> String {
    format!(
        "table bridge {b} {{\n{bo}}}\ntable inet {i} {{\n{io}}}\n\
         add rule bridge {b} antispoof_pre iifname @secured jump antispoof\n{rest}",
        b = BRIDGE_TABLE,
        i = INET_TABLE,
        bo = BRIDGE_OBJECTS,
        io = INET_OBJECTS,
        rest = session_halves_upgrade(),
    )
}

/// What the previous layout (version 2) lacks in the bridge table.
const BRIDGE_SESSION_OBJECTS: &str = "  map gone_mark { type ifname : mark; flags timeout; }\n";
/// What the previous layout (version 2) lacks in the inet table.
const INET_SESSION_OBJECTS: &str = "  set revoked_rules { type mark . mark; flags timeout; }\n  \
     set revoked_remote4 { type mark . ipv4_addr; flags timeout; }\n  \
     set revoked_remote6 { type mark . ipv6_addr; flags timeout; }\n";

/// The bridge table's anti-spoofing sets and shared chains.
const BRIDGE_OBJECTS: &str = r#"  map gone_mark { type ifname : mark; flags timeout; }
  set secured { type ifname; }
  set as_mac { type ifname . ether_addr; }
  set as_ip4 { type ifname . ipv4_addr; }
  set as_ip6 { type ifname . ipv6_addr; }
  set as_net4 { type ifname . ipv4_addr; flags interval; }
  set as_net6 { type ifname . ipv6_addr; flags interval; }
  chain antispoof {
    iifname . ether saddr != @as_mac drop
    ether type arp jump antispoof_arp
    udp sport 67 drop
    udp sport 547 drop
    ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept
    iifname . ip saddr @as_ip4 accept
    iifname . ip saddr @as_net4 accept
    ip6 saddr :: meta l4proto ipv6-icmp accept
    iifname . ip6 saddr @as_ip6 accept
    iifname . ip6 saddr @as_net6 accept
    drop
  }
  chain antispoof_arp {
    iifname . arp saddr ether != @as_mac drop
    iifname . arp saddr ip @as_ip4 accept
    iifname . arp saddr ip @as_net4 accept
    drop
  }
"#;

/// The inet table's revocation sets and the always-allowed chains
/// every security-group chain starts by jumping to.
const INET_OBJECTS: &str = r#"  set revoked_rules { type mark . mark; flags timeout; }
  set revoked_remote4 { type mark . ipv4_addr; flags timeout; }
  set revoked_remote6 { type mark . ipv6_addr; flags timeout; }
  set nd_out { type icmpv6_type; elements = { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report }; }
  set nd_in { type icmpv6_type; elements = { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query }; }
  chain sg_eg_common {
    meta nfproto ipv4 udp sport 68 udp dport 67 accept
    meta nfproto ipv6 udp sport 546 udp dport 547 accept
    meta l4proto ipv6-icmp icmpv6 type @nd_out accept
    meta l4proto udp udp sport 67 drop
    meta l4proto udp udp sport 547 drop
  }
  chain sg_in_common {
    meta nfproto ipv4 udp sport 67 udp dport 68 accept
    meta nfproto ipv6 udp sport 547 udp dport 546 accept
    meta l4proto ipv6-icmp icmpv6 type @nd_in accept
  }
"#;

fn m(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}
fn payload(proto: &str, field: &str) -> Value {
    json!({"payload": {"protocol": proto, "field": field}})
}
fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}
fn accept() -> Value {
    json!({"accept": null})
}
fn drop_() -> Value {
    json!({"drop": null})
}
fn addr(n: &IpNet) -> Value {
    let full = if n.addr().is_ipv4() { 32 } else { 128 };
    if n.prefix() == full {
        json!(n.addr().to_string())
    } else {
        let n = n.network();
        json!({"prefix": {"addr": n.addr().to_string(), "len": n.prefix()}})
    }
}

/// A JSON command.
fn cmd(verb: &str, obj: &str, body: Value) -> Value {
    json!({ verb: { obj: body } })
}

fn rule(
    family: &str,
    table: &str,
    chain: &str,
    expr: Vec<Value>,
    comment: Option<String>,
) -> Value {
    let mut r = json!({"family": family, "table": table, "chain": chain, "expr": expr});
    if let Some(c) = comment {
        r["comment"] = json!(c);
    }
    cmd("add", "rule", r)
}

fn chain(family: &str, table: &str, name: &str) -> Value {
    json!({"family": family, "table": table, "name": name})
}

/// The named set holding a remote group's members of one family.
pub fn group_set(id: &str, v6: bool) -> String {
    format!("rh{}-{id}", if v6 { 6 } else { 4 })
}

/// The interval sets an older agent kept a group's members in
/// (`rg4-`/`rg6-`). nft 1.0.6 reads the elements of every interval set
/// of a table before any element change in it, so with 2,000 members
/// every port's change paid for them; members are host addresses, so
/// plain sets (`rh4-`/`rh6-`) do. The old sets go once no chain uses
/// them.
pub fn legacy_group_set(id: &str, v6: bool) -> String {
    format!("rg{}-{id}", if v6 { 6 } else { 4 })
}

/// Bumped whenever the shared security-group chains render differently
/// for the same rules. It is part of their id, so an upgraded agent makes
/// new chains and moves each port over (its digest, see
/// [`PortRules::digest`], changes with it).
pub const CHAIN_RENDER_VERSION: u32 = 3;

/// The sets of the anti-spoofing chain, keyed by interface name.
pub const AS_SETS: [&str; 5] = ["as_mac", "as_ip4", "as_ip6", "as_net4", "as_net6"];

/// Drops prefixes contained in others, so an interval set never gets
/// overlapping elements (nft refuses those). Members are mostly host
/// addresses: each is checked against the shorter prefixes only.
pub fn merged(nets: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let all: BTreeSet<IpNet> = nets.into_iter().map(|n| n.network()).collect();
    let mut by_len: Vec<IpNet> = all.iter().copied().collect();
    by_len.sort_by_key(|n| n.prefix());
    let mut shorter: Vec<IpNet> = Vec::new();
    let mut out: Vec<IpNet> = Vec::new();
    for n in by_len {
        if shorter
            .iter()
            .any(|o| o.contains(n.addr()) && o.prefix() <= n.prefix())
        {
            continue;
        }
        let host = n.prefix() == if n.addr().is_ipv4() { 32 } else { 128 };
        if !host {
            shorter.push(n);
        }
        out.push(n);
    }
    out.sort();
    out
}

/// The IPv6 link-local address a MAC gets by EUI-64 (what a guest uses
/// for neighbour discovery before it has anything else).
pub fn link_local(mac: MacAddr) -> IpAddr {
    let b = mac.0;
    let seg = [
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([b[0] ^ 2, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
    ];
    IpAddr::V6(std::net::Ipv6Addr::new(
        seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
    ))
}

/// A port's elements in the anti-spoofing sets (all keyed by its
/// interface name): what the shared `antispoof` chain checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AntispoofElems {
    /// `as_mac`: the port's MAC and its allowed pairs' MACs.
    pub macs: BTreeSet<MacAddr>,
    /// `as_ip4`/`as_ip6`: host addresses (fixed IPs, host-sized allowed
    /// pairs, the EUI-64 link-local address of every allowed MAC).
    pub hosts: BTreeSet<IpAddr>,
    /// `as_net4`/`as_net6` (interval sets): allowed pairs that are
    /// prefixes, without overlaps.
    pub nets: BTreeSet<IpNet>,
}

impl AntispoofElems {
    /// What a port must have in the sets: exactly what its own
    /// anti-spoofing chain used to allow (any allowed MAC with any allowed
    /// address, recipe §4).
    pub fn of(p: &PortRules) -> Self {
        let macs: BTreeSet<MacAddr> = std::iter::once(p.mac)
            .chain(p.allowed_pairs.iter().filter_map(|a| a.mac))
            .collect();
        let full = |n: &IpNet| n.prefix() == if n.addr().is_ipv4() { 32 } else { 128 };
        let hosts = p
            .fixed_ips
            .iter()
            .copied()
            .chain(
                p.allowed_pairs
                    .iter()
                    .filter(|a| full(&a.ip))
                    .map(|a| a.ip.addr()),
            )
            .chain(macs.iter().map(|m| link_local(*m)))
            .collect();
        let nets = merged(
            p.allowed_pairs
                .iter()
                .filter(|a| !full(&a.ip))
                .map(|a| a.ip),
        )
        .into_iter()
        .collect();
        AntispoofElems { macs, hosts, nets }
    }

    /// The elements, per set name, as nft JSON values.
    fn per_set(&self, name: &str) -> BTreeMap<&'static str, Vec<Value>> {
        let mut m: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
        for mac in &self.macs {
            m.entry("as_mac")
                .or_default()
                .push(json!({"concat": [name, mac.to_string()]}));
        }
        for ip in &self.hosts {
            let set = if ip.is_ipv4() { "as_ip4" } else { "as_ip6" };
            m.entry(set)
                .or_default()
                .push(json!({"concat": [name, ip.to_string()]}));
        }
        for n in &self.nets {
            let set = if n.addr().is_ipv4() {
                "as_net4"
            } else {
                "as_net6"
            };
            m.entry(set)
                .or_default()
                .push(json!({"concat": [name, addr(n)]}));
        }
        m
    }

    /// Elements of `self` that `other` lacks.
    fn minus(&self, other: &AntispoofElems) -> AntispoofElems {
        AntispoofElems {
            macs: self.macs.difference(&other.macs).copied().collect(),
            hosts: self.hosts.difference(&other.hosts).copied().collect(),
            nets: self.nets.difference(&other.nets).copied().collect(),
        }
    }
}

/// The suffix of the security-group chains a port uses: a digest of its
/// rules (sorted by rule mark), so every port with the same security
/// groups shares one chain pair, and a chain's name says its content.
pub fn sg_chains_id(p: &PortRules) -> String {
    let mut rules: Vec<&SgRule> = p.rules.iter().collect();
    rules.sort_by_key(|r| r.ct_mark);
    let h = fnv(&format!(
        "{CHAIN_RENDER_VERSION}:{}",
        serde_json::to_string(&rules).unwrap_or_default()
    ));
    h[..12].to_string()
}

/// The egress chain of a security-group set (see [`sg_chains_id`]).
pub fn egress_chain(id: &str) -> String {
    format!("eg-{id}")
}
/// The ingress chain of a security-group set (see [`sg_chains_id`]).
pub fn ingress_chain(id: &str) -> String {
    format!("in-{id}")
}

fn sg_rule_expr(r: &SgRule) -> Vec<Value> {
    let v6 = r.ethertype == EtherType::V6;
    let mut e = vec![m(
        "==",
        meta("nfproto"),
        json!(if v6 { "ipv6" } else { "ipv4" }),
    )];
    // Neutron lets "icmp" mean ICMPv6 in an IPv6 rule.
    let proto = r.protocol.map(|p| {
        if v6 && p == Protocol::ICMP {
            Protocol::ICMPV6
        } else {
            p
        }
    });
    if let Some(p) = proto {
        e.push(m("==", meta("l4proto"), json!(p.0)));
        if let Some((lo, hi)) = r.port_range {
            if p.has_ports() {
                let right = if lo == hi {
                    json!(lo)
                } else {
                    json!({"range": [lo, hi]})
                };
                e.push(m("==", payload("th", "dport"), right));
            } else if p.is_icmp() {
                let fam = if p == Protocol::ICMPV6 {
                    "icmpv6"
                } else {
                    "icmp"
                };
                e.push(m("==", payload(fam, "type"), json!(lo)));
                if hi != 255 {
                    e.push(m("==", payload(fam, "code"), json!(hi)));
                }
            }
        }
    }
    let field = if r.direction == Direction::Ingress {
        "saddr"
    } else {
        "daddr"
    };
    let l3 = if v6 { "ip6" } else { "ip" };
    match &r.remote {
        Remote::Any => {}
        Remote::Cidr(n) => e.push(m("==", payload(l3, field), addr(n))),
        Remote::Group(g) => e.push(m(
            "==",
            payload(l3, field),
            json!(format!("@{}", group_set(g, v6))),
        )),
    }
    // The session's mark: the rule's mark in the half of its direction
    // (see [`session_half`]), the other half left to the other end.
    e.push(json!({"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"|": [{"ct": {"key": "mark"}}, session_half(r.direction, r.ct_mark)]}}}));
    e.push(accept());
    e
}

/// Where a rule's mark goes in a session's conntrack mark: an egress
/// rule's (the initiator's port) in the high 16 bits, an ingress rule's
/// (the answering port) in the low 16 bits. A session between two ports
/// of one host carries both, so revoking either cuts it; which port each
/// half belongs to is the packet mark, checked by direction (see
/// [`base_script`]).
pub fn session_half(direction: Direction, rule_mark: u32) -> u32 {
    match direction {
        Direction::Egress => rule_mark << 16,
        Direction::Ingress => rule_mark,
    }
}

/// The rule mark (1–65,535) of a conntrack-mark half as
/// [`session_half`] puts it.
pub fn rule_of_half(half: u32) -> u32 {
    if half > crate::model::RULE_MARK_MASK {
        half >> 16
    } else {
        half
    }
}

/// The rules of a security-group set's egress and ingress chains, in
/// order: the always-allowed traffic (shared chains of the base), the
/// groups' rules, drop.
fn sg_chains(p: &PortRules) -> Vec<(String, Vec<Vec<Value>>)> {
    let id = sg_chains_id(p);
    let mut rules: Vec<&SgRule> = p.rules.iter().collect();
    rules.sort_by_key(|r| r.ct_mark);
    let mut eg = vec![vec![json!({"jump": {"target": "sg_eg_common"}})]];
    let mut ing = vec![vec![json!({"jump": {"target": "sg_in_common"}})]];
    for r in rules {
        let target = if r.direction == Direction::Egress {
            &mut eg
        } else {
            &mut ing
        };
        target.push(sg_rule_expr(r));
    }
    eg.push(vec![drop_()]);
    ing.push(vec![drop_()]);
    vec![(egress_chain(&id), eg), (ingress_chain(&id), ing)]
}

/// What is installed for one port, as the driver remembers it (and reads
/// it back from the kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortState {
    /// Its packet mark.
    pub mark: u32,
    /// Digest of its [`PortRules`] (the comment of its `port_mark` entry).
    pub digest: String,
    /// Suffix of the security-group chains its verdict-map entries jump
    /// to ([`sg_chains_id`]).
    pub chains: String,
    /// Rule marks (low 16 bits) of those chains.
    pub rule_marks: Vec<u32>,
    /// Its anti-spoofing elements.
    pub elems: AntispoofElems,
    /// Installed by the per-port layout: an `antispoof` verdict-map entry
    /// and an `as-<tap>` chain, deleted by the port's next change.
    pub legacy: bool,
}

/// One port's change, as the driver decided it.
#[derive(Debug, Clone)]
pub struct PortChange<'a> {
    /// The desired port.
    pub port: &'a PortRules,
    /// What is installed for it, if anything.
    pub previous: Option<&'a PortState>,
    /// Whether its security-group chains must be created (no other port
    /// uses them yet).
    pub create_chains: bool,
    /// Chain suffixes no port uses once this change is made: deleted in
    /// the same transaction.
    pub drop_chains: Vec<String>,
    /// Session marks (port | rule) to take out of `revoked_rules`: a
    /// rule that left the port came back to it and admits its sessions
    /// again.
    pub unrevoke: Vec<u32>,
    /// The device's entry in `gone_mark` (the mark it had as a removed
    /// port), deleted now that it is a port again.
    pub gone_mark: Option<u32>,
}

fn elem_cmd(verb: &str, family: &str, set: &str, elems: Vec<Value>) -> Value {
    let table = if family == "bridge" {
        BRIDGE_TABLE
    } else {
        INET_TABLE
    };
    cmd(
        verb,
        "element",
        json!({"family": family, "table": table, "name": set, "elem": elems}),
    )
}

fn drop_chain_commands(c: &mut Vec<Value>, ids: &[String]) {
    for id in ids {
        for ch in [egress_chain(id), ingress_chain(id)] {
            c.push(cmd("flush", "chain", chain("inet", INET_TABLE, &ch)));
            c.push(cmd("delete", "chain", chain("inet", INET_TABLE, &ch)));
        }
    }
}

/// The `revoked_rules` elements of session marks (port | rule): the
/// rule's mark in either half, with the port's packet mark (a rule has
/// one direction, so only one of the two ever matches; the other costs an
/// element and spares the driver knowing directions).
fn rule_pairs(marks: &[u32], timeout: bool) -> Vec<Value> {
    let mut v = Vec::new();
    for m in marks {
        let (port, rule) = (
            m & crate::model::PORT_MARK_MASK,
            m & crate::model::RULE_MARK_MASK,
        );
        for half in [rule, rule << 16] {
            let val = json!({"concat": [port, half]});
            v.push(if timeout {
                json!({"elem": {"val": val, "timeout": REVOKE_TIMEOUT_S}})
            } else {
                val
            });
        }
    }
    v
}

/// The commands of one port's change, in one transaction. Only map and
/// set elements, unless the port's security-group set is new on the host
/// (its chains are created) or no port uses a set any more (its chains
/// are deleted): the cost of a transaction does not grow with the number
/// of ports.
pub fn port_commands(ch: &PortChange) -> Vec<Value> {
    let p = ch.port;
    let digest = p.digest();
    let id = sg_chains_id(p);
    let mut c = Vec::new();
    if ch.create_chains {
        let groups: BTreeSet<(String, bool)> = p
            .rules
            .iter()
            .filter_map(|r| match &r.remote {
                Remote::Group(g) => Some((g.clone(), r.ethertype == EtherType::V6)),
                _ => None,
            })
            .collect();
        for (g, v6) in &groups {
            c.push(cmd("add", "set", group_set_decl(g, *v6)));
        }
        for (name, rules) in sg_chains(p) {
            c.push(cmd("add", "chain", chain("inet", INET_TABLE, &name)));
            for r in rules {
                c.push(rule("inet", INET_TABLE, &name, r, None));
            }
        }
    }
    let want = AntispoofElems::of(p);
    let (old_elems, new_elems) = match ch.previous {
        Some(prev) => (prev.elems.minus(&want), want.minus(&prev.elems)),
        None => (AntispoofElems::default(), want),
    };
    for (set, e) in old_elems.per_set(&p.name) {
        c.push(elem_cmd("delete", "bridge", set, e));
    }
    let mark_entry = ch
        .previous
        .is_none_or(|prev| prev.mark != p.mark || prev.digest != digest);
    let verdicts = ch
        .previous
        .is_none_or(|prev| prev.mark != p.mark || prev.chains != id);
    if let Some(prev) = ch.previous {
        if mark_entry {
            c.push(elem_cmd(
                "delete",
                "bridge",
                "port_mark",
                vec![json!(p.name)],
            ));
        }
        if verdicts {
            for map in ["egress", "ingress"] {
                c.push(elem_cmd("delete", "inet", map, vec![json!(prev.mark)]));
            }
        }
    }
    if ch.previous.is_none_or(|prev| prev.legacy) {
        c.push(elem_cmd("add", "bridge", "secured", vec![json!(p.name)]));
    }
    for (set, e) in new_elems.per_set(&p.name) {
        c.push(elem_cmd("add", "bridge", set, e));
    }
    if mark_entry {
        c.push(elem_cmd(
            "add",
            "bridge",
            "port_mark",
            vec![json!([{"elem": {"val": p.name, "comment": format!("{DIGEST_TAG}{digest}")}}, p.mark])],
        ));
    }
    if verdicts {
        c.push(elem_cmd(
            "add",
            "inet",
            "egress",
            vec![json!([p.mark, {"jump": {"target": egress_chain(&id)}}])],
        ));
        c.push(elem_cmd(
            "add",
            "inet",
            "ingress",
            vec![json!([p.mark, {"jump": {"target": ingress_chain(&id)}}])],
        ));
    }
    if let Some(prev) = ch.previous {
        // The rules that left the port: their sessions go. Under the
        // port's current mark, which its packets carry (a session does
        // not remember the port, only the rule: under a new mark, a rule
        // the port still has keeps admitting its sessions).
        let now: BTreeSet<u32> = p.rules.iter().map(|r| r.ct_mark).collect();
        let gone: Vec<u32> = prev
            .rule_marks
            .iter()
            .filter(|m| !now.contains(m))
            .map(|m| p.mark | m)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !gone.is_empty() {
            c.push(revoke_command(&gone));
        }
    }
    if !ch.unrevoke.is_empty() {
        c.push(elem_cmd(
            "delete",
            "inet",
            "revoked_rules",
            rule_pairs(&ch.unrevoke, false),
        ));
    }
    if ch.gone_mark.is_some() {
        c.push(elem_cmd(
            "delete",
            "bridge",
            "gone_mark",
            vec![json!(p.name)],
        ));
    }
    drop_chain_commands(&mut c, &ch.drop_chains);
    if ch.previous.is_some_and(|p| p.legacy) {
        legacy_commands(&mut c, &p.name);
    }
    c
}

/// Deletes what the per-port layout had for a port besides its
/// security-group chains (those go as unused chains).
fn legacy_commands(c: &mut Vec<Value>, name: &str) {
    c.push(elem_cmd("delete", "bridge", "antispoof", vec![json!(name)]));
    let ch = chain("bridge", BRIDGE_TABLE, &format!("as-{name}"));
    c.push(cmd("flush", "chain", ch.clone()));
    c.push(cmd("delete", "chain", ch));
}

/// Adds session marks (port | rule) to the `revoked_rules` set (with a
/// timeout), cutting every session of the port that the rule admitted.
pub fn revoke_command(marks: &[u32]) -> Value {
    elem_cmd("add", "inet", "revoked_rules", rule_pairs(marks, true))
}

/// Commands that remove a port: its elements (the verdict-map entries
/// first: they reference the chains), and the chains of `drop_chains`
/// deleted. Its sessions are cut: every rule it had is revoked under its
/// mark, and its device keeps that mark in `gone_mark` (for as long as a
/// revocation lasts, or until it is a port again), so that packets of a
/// device still on the bridge are recognised.
pub fn remove_port_commands(name: &str, prev: &PortState, drop_chains: &[String]) -> Vec<Value> {
    let mut c = vec![
        elem_cmd("delete", "inet", "egress", vec![json!(prev.mark)]),
        elem_cmd("delete", "inet", "ingress", vec![json!(prev.mark)]),
        elem_cmd("delete", "bridge", "port_mark", vec![json!(name)]),
    ];
    if !prev.legacy {
        c.push(elem_cmd("delete", "bridge", "secured", vec![json!(name)]));
    }
    for (set, e) in prev.elems.per_set(name) {
        c.push(elem_cmd("delete", "bridge", set, e));
    }
    let all: Vec<u32> = prev.rule_marks.iter().map(|r| prev.mark | r).collect();
    if !all.is_empty() {
        c.push(revoke_command(&all));
    }
    c.push(elem_cmd(
        "add",
        "bridge",
        "gone_mark",
        vec![json!([{"elem": {"val": name, "timeout": REVOKE_TIMEOUT_S}}, prev.mark])],
    ));
    drop_chain_commands(&mut c, drop_chains);
    if prev.legacy {
        legacy_commands(&mut c, name);
    }
    c
}

/// Deletes chains no port uses (left by a crash between transactions
/// that cannot happen with one transaction per change, or by an older
/// agent).
pub fn drop_chains_commands(ids: &[String]) -> Vec<Value> {
    let mut c = Vec::new();
    drop_chain_commands(&mut c, ids);
    c
}

fn group_set_decl(id: &str, v6: bool) -> Value {
    json!({"family": "inet", "table": INET_TABLE, "name": group_set(id, v6),
           "type": if v6 { "ipv6_addr" } else { "ipv4_addr" }})
}

/// Changes a remote group's member sets from `before` to `after` (both
/// already [`merged`]) by elements: what left is deleted, what came is
/// added — a change of one member is one element whatever the group's
/// size. Empty when nothing changed.
pub fn group_delta_commands(id: &str, before: &[IpNet], after: &[IpNet]) -> Vec<Value> {
    let (b, a): (BTreeSet<&IpNet>, BTreeSet<&IpNet>) =
        (before.iter().collect(), after.iter().collect());
    let mut c = Vec::new();
    for v6 in [false, true] {
        let gone: Vec<Value> = b
            .difference(&a)
            .filter(|n| n.addr().is_ipv4() != v6)
            .map(|n| addr(n))
            .collect();
        let new: Vec<Value> = a
            .difference(&b)
            .filter(|n| n.addr().is_ipv4() != v6)
            .map(|n| addr(n))
            .collect();
        for (verb, elems) in [("delete", gone), ("add", new)] {
            if !elems.is_empty() {
                c.push(cmd(
                    verb,
                    "element",
                    json!({"family": "inet", "table": INET_TABLE, "name": group_set(id, v6), "elem": elems}),
                ));
            }
        }
    }
    c
}

/// The remote-group sets a port's rules match, each with the rule's
/// conntrack-mark half ([`session_half`]): what a member leaving the
/// group revokes.
pub fn remote_rule_halves(p: &PortRules) -> Vec<(String, u32)> {
    p.rules
        .iter()
        .filter_map(|r| match &r.remote {
            Remote::Group(g) => Some((
                group_set(g, r.ethertype == EtherType::V6),
                session_half(r.direction, r.ct_mark),
            )),
            _ => None,
        })
        .collect()
}

/// Cuts the sessions that rules naming group `id` admitted with a member
/// that left it (`before` but not `after`): the rule's half with the
/// address, in `revoked_remote4`/`6` (see [`base_script`]). A member
/// that came (back) is taken out of them (added, then deleted: nft 1.0.6
/// cannot delete an element that may be absent). `halves` are every
/// installed rule's remote set and half ([`remote_rule_halves`]).
pub fn remote_revocation_commands(
    id: &str,
    before: &[IpNet],
    after: &[IpNet],
    halves: &[(String, u32)],
) -> Vec<Value> {
    let (b, a): (BTreeSet<&IpNet>, BTreeSet<&IpNet>) =
        (before.iter().collect(), after.iter().collect());
    let mut c = Vec::new();
    for v6 in [false, true] {
        let set = group_set(id, v6);
        let hs: BTreeSet<u32> = halves
            .iter()
            .filter(|(s, _)| *s == set)
            .map(|(_, h)| *h)
            .collect();
        let revoked = if v6 {
            "revoked_remote6"
        } else {
            "revoked_remote4"
        };
        let pairs = |from: &BTreeSet<&IpNet>, to: &BTreeSet<&IpNet>| -> Vec<Value> {
            from.difference(to)
                .filter(|n| n.addr().is_ipv4() != v6)
                .flat_map(|n| {
                    hs.iter()
                        .map(move |h| json!({"concat": [h, n.addr().to_string()]}))
                })
                .collect()
        };
        let (gone, came) = (pairs(&b, &a), pairs(&a, &b));
        if !gone.is_empty() {
            let timed = gone
                .into_iter()
                .map(|v| json!({"elem": {"val": v, "timeout": REVOKE_TIMEOUT_S}}))
                .collect();
            c.push(elem_cmd("add", "inet", revoked, timed));
        }
        if !came.is_empty() {
            c.push(elem_cmd("add", "inet", revoked, came.clone()));
            c.push(elem_cmd("delete", "inet", revoked, came));
        }
    }
    c
}

/// Replaces a remote group's member sets (both families) atomically.
pub fn group_commands(g: &RemoteGroup) -> Vec<Value> {
    let mut c = Vec::new();
    for v6 in [false, true] {
        let decl = group_set_decl(&g.id, v6);
        c.push(cmd("add", "set", decl.clone()));
        c.push(cmd("flush", "set", decl.clone()));
        let members = merged(
            g.members
                .iter()
                .copied()
                .filter(|n| n.addr().is_ipv4() != v6),
        );
        if !members.is_empty() {
            let mut e = decl;
            e["elem"] = json!(members.iter().map(addr).collect::<Vec<_>>());
            e.as_object_mut().map(|o| {
                o.remove("type");
                o.remove("flags")
            });
            c.push(cmd("add", "element", e));
        }
    }
    c
}

/// Sets (or moves) a bridge's conntrack zone.
pub fn network_commands(bridge: &str, zone: u16, previous: Option<u16>) -> Vec<Value> {
    let mut c = Vec::new();
    if previous.is_some_and(|p| p != zone) {
        c.push(cmd(
            "delete",
            "element",
            json!({"family": "inet", "table": INET_TABLE, "name": "zones", "elem": [bridge]}),
        ));
    }
    c.push(cmd(
        "add",
        "element",
        json!({"family": "inet", "table": INET_TABLE, "name": "zones", "elem": [[bridge, zone]]}),
    ));
    c
}

/// The router's NAT table, rewritten whole in one transaction (it is
/// small, and only this router's namespace is touched): ensure the table
/// and chains, flush, add the rules (recipe §5).
pub fn router_commands(r: &RouterNat) -> Vec<Value> {
    let t = |name: &str, hook: &str, prio: i32| {
        cmd(
            "add",
            "chain",
            json!({"family": "ip", "table": NAT_TABLE, "name": name, "type": "nat", "hook": hook, "prio": prio, "policy": "accept"}),
        )
    };
    let mut c = vec![
        cmd("add", "table", json!({"family": "ip", "name": NAT_TABLE})),
        t("nat-pre", "prerouting", -100),
        // Floating-IP SNAT must bind before the router-wide SNAT: the
        // first NAT chain to bind wins.
        t("fip-post", "postrouting", 90),
        t("nat-post", "postrouting", 100),
        cmd(
            "add",
            "chain",
            json!({"family": "ip", "table": NAT_TABLE, "name": "fip-guard", "type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}),
        ),
        cmd("flush", "table", json!({"family": "ip", "name": NAT_TABLE})),
    ];
    c.extend(fip_guard_rules(r));
    let r_ = |ch: &str, e: Vec<Value>| rule("ip", NAT_TABLE, ch, e, None);
    if let Some(port) = r.metadata_port {
        for l in &r.internal {
            c.push(r_(
                "nat-pre",
                vec![
                    m("==", meta("iifname"), json!(l.leg)),
                    m("==", payload("ip", "daddr"), json!("169.254.169.254")),
                    m("==", payload("tcp", "dport"), json!(80)),
                    json!({"redirect": {"port": port}}),
                ],
            ));
        }
    }
    if let (Some(qg), Some(gw)) = (&r.gateway_leg, r.gateway_ip) {
        for f in &r.floating_ips {
            c.push(r_(
                "nat-pre",
                vec![
                    m("==", payload("ip", "daddr"), json!(f.floating.to_string())),
                    json!({"dnat": {"addr": f.fixed.to_string()}}),
                ],
            ));
            c.push(r_(
                "fip-post",
                vec![
                    m("==", meta("oifname"), json!(qg)),
                    m("==", payload("ip", "saddr"), json!(f.fixed.to_string())),
                    json!({"snat": {"addr": f.floating.to_string()}}),
                ],
            ));
        }
        if r.snat {
            for l in &r.internal {
                c.push(r_(
                    "nat-post",
                    vec![
                        m("==", meta("oifname"), json!(qg)),
                        m("==", payload("ip", "saddr"), addr(&l.subnet)),
                        json!({"snat": {"addr": gw.to_string()}}),
                    ],
                ));
            }
        }
        if !r.floating_ips.is_empty() {
            // Hairpin: a VM reaching a neighbour's floating IP must see
            // the reply come back through the router.
            c.push(r_(
                "nat-post",
                vec![
                    m("!=", meta("iifname"), json!(qg)),
                    m("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                    json!({"snat": {"addr": gw.to_string()}}),
                ],
            ));
        }
    }
    c.push(rule(
        "ip",
        NAT_TABLE,
        "nat-post",
        vec![json!({"counter": {"packets": 0, "bytes": 0}})],
        Some(format!("{DIGEST_TAG}{}", r.digest())),
    ));
    c
}

/// Cuts the sessions a NAT binding no longer allows (Neutron deletes their
/// conntrack entries): established flows keep their translation in
/// conntrack after the rule that made it is gone, so a disassociated or
/// moved floating IP, or a changed gateway address, would otherwise keep
/// carrying them. Before DNAT (mangle priority), every packet of a
/// destination-NATed flow must still match a current floating IP → fixed
/// IP pair (or be a metadata redirect), and every packet of a
/// source-NATed flow must leave as the gateway address or as the current
/// floating IP of its source.
fn fip_guard_rules(r: &RouterNat) -> Vec<Value> {
    let ct = |key: &str, dir: &str| json!({"ct": {"key": key, "dir": dir}});
    let status = |s: &str| m("in", json!({"ct": {"key": "status"}}), json!(s));
    // `first . second` is not one of the floating → fixed pairs.
    let pairs: Vec<Value> = r
        .floating_ips
        .iter()
        .map(|f| json!({"concat": [f.floating.to_string(), f.fixed.to_string()]}))
        .collect();
    let not_a_pair = |first: Value, second: Value| {
        m(
            "!=",
            json!({"concat": [first, second]}),
            json!({"set": pairs.clone()}),
        )
    };
    let mut dnat = vec![
        status("dnat"),
        m("!=", ct("ip daddr", "original"), json!("169.254.169.254")),
    ];
    let mut snat = vec![status("snat")];
    if let Some(gw) = r.gateway_ip {
        snat.push(m("!=", ct("ip daddr", "reply"), json!(gw.to_string())));
    }
    if !r.floating_ips.is_empty() {
        // Sent to the floating IP, answered by the fixed IP.
        dnat.push(not_a_pair(
            ct("ip daddr", "original"),
            ct("ip saddr", "reply"),
        ));
        // Sent by the fixed IP, answered to the floating IP.
        snat.push(not_a_pair(
            ct("ip daddr", "reply"),
            ct("ip saddr", "original"),
        ));
    }
    dnat.push(drop_());
    snat.push(drop_());
    vec![
        rule("ip", NAT_TABLE, "fip-guard", dnat, None),
        rule("ip", NAT_TABLE, "fip-guard", snat, None),
    ]
}

/// Removing a router's NAT table, whether or not it is there.
pub fn remove_router_commands() -> Vec<Value> {
    vec![
        cmd("add", "table", json!({"family": "ip", "name": NAT_TABLE})),
        cmd(
            "delete",
            "table",
            json!({"family": "ip", "name": NAT_TABLE}),
        ),
    ]
}

/// Removing the host's tables, whether or not they are there.
pub fn delete_all_commands() -> Vec<Value> {
    vec![
        cmd(
            "add",
            "table",
            json!({"family": "bridge", "name": BRIDGE_TABLE}),
        ),
        cmd(
            "delete",
            "table",
            json!({"family": "bridge", "name": BRIDGE_TABLE}),
        ),
        cmd(
            "add",
            "table",
            json!({"family": "inet", "name": INET_TABLE}),
        ),
        cmd(
            "delete",
            "table",
            json!({"family": "inet", "name": INET_TABLE}),
        ),
    ]
}

/// Wraps commands into the document `nft -j -f -` reads.
pub fn document(cmds: Vec<Value>) -> Value {
    json!({ "nftables": cmds })
}
