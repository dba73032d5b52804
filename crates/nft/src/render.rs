//! Rendering the model to nft: JSON commands for every change, and the
//! text form for the one-time base (see [`base_script`] for why).

use std::collections::BTreeSet;
use std::net::IpAddr;

use hostlink::{IpNet, MacAddr};
use serde_json::{json, Value};

use crate::model::{
    Direction, EtherType, PortRules, Protocol, Remote, RemoteGroup, RouterNat, SgRule,
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

/// The host's base tables, maps and hook chains, as an nft script.
///
/// It is text, not JSON, because the conntrack-zone map must be declared
/// `typeof iifname : ct zone` (the zone has no named datatype) and nft
/// 1.0.6's JSON parser does not take `typeof`. Everything after the base
/// (elements of that map included) is JSON. Applied only when the tables
/// are missing, so the hook chains' rules are never doubled.
pub fn base_script() -> String {
    format!(
        r#"table bridge {b} {{
  map port_mark {{ type ifname : mark; }}
  map antispoof {{ type ifname : verdict; }}
  chain antispoof_pre {{ type filter hook prerouting priority -350; policy accept; iifname vmap @antispoof; }}
  chain mark_pre {{ type filter hook prerouting priority -300; policy accept; meta mark set iifname map @port_mark; }}
  chain mark_fwd {{ type filter hook forward priority -200; policy accept; meta mark set 0; meta mark set oifname map @port_mark; }}
}}
table inet {i} {{
  set revoked {{ type mark; flags timeout; }}
  map zones {{
    typeof iifname : ct zone
  }}
  map egress {{ type mark : verdict; }}
  map ingress {{ type mark : verdict; }}
  chain zone_raw {{ type filter hook prerouting priority raw; policy accept; ct zone set iifname map @zones; }}
  chain sg_pre {{ type filter hook prerouting priority 0; policy accept; ct state established,related accept; meta mark vmap @egress; }}
  chain sg_fwd {{ type filter hook forward priority 0; policy accept; ct mark @revoked drop; ct state established,related accept; ct state invalid drop; meta mark vmap @ingress; }}
}}
"#,
        b = BRIDGE_TABLE,
        i = INET_TABLE
    )
}

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
fn set(items: Vec<Value>) -> Value {
    json!({"set": items})
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

/// Chain names of a port.
pub fn egress_chain(port: &str) -> String {
    format!("eg-{port}")
}
/// See [`egress_chain`].
pub fn ingress_chain(port: &str) -> String {
    format!("in-{port}")
}
/// See [`egress_chain`].
pub fn antispoof_chain(port: &str) -> String {
    format!("as-{port}")
}
/// The named set holding a remote group's members of one family.
pub fn group_set(id: &str, v6: bool) -> String {
    format!("rg{}-{id}", if v6 { 6 } else { 4 })
}

/// Drops prefixes contained in others, so an anonymous interval set
/// never gets overlapping elements (nft refuses those).
fn merged(nets: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = nets
        .into_iter()
        .map(|n| n.network())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    v.sort_by_key(|n| n.prefix());
    let mut out: Vec<IpNet> = Vec::new();
    for n in v {
        if !out
            .iter()
            .any(|o| o.contains(n.addr()) && o.prefix() <= n.prefix())
        {
            out.push(n);
        }
    }
    out.sort();
    out
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix")
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
    e.push(json!({"mangle": {"key": {"ct": {"key": "mark"}}, "value": r.ct_mark}}));
    e.push(accept());
    e
}

fn nfproto(v6: bool) -> Value {
    m(
        "==",
        meta("nfproto"),
        json!(if v6 { "ipv6" } else { "ipv4" }),
    )
}

fn udp_ports(sport: u16, dport: u16) -> Vec<Value> {
    vec![
        m("==", payload("udp", "sport"), json!(sport)),
        m("==", payload("udp", "dport"), json!(dport)),
    ]
}

fn icmpv6_types(types: &[&str]) -> Vec<Value> {
    vec![
        m("==", meta("l4proto"), json!(58)),
        m(
            "==",
            payload("icmpv6", "type"),
            set(types.iter().map(|t| json!(t)).collect()),
        ),
    ]
}

/// The rules of a port's egress (`eg-`) and ingress (`in-`) chains, in
/// order, the last one carrying the digest.
#[allow(clippy::vec_init_then_push)] // one push per rule reads like the chain
fn sg_chains(p: &PortRules) -> Vec<(String, Vec<Vec<Value>>)> {
    let mut eg: Vec<Vec<Value>> = Vec::new();
    // What Neutron allows whatever the security groups: being a DHCP and
    // DHCPv6 client and taking part in IPv6 neighbour discovery.
    eg.push([vec![nfproto(false)], udp_ports(68, 67), vec![accept()]].concat());
    eg.push([vec![nfproto(true)], udp_ports(546, 547), vec![accept()]].concat());
    eg.push(
        [
            icmpv6_types(&[
                "nd-router-solicit",
                "nd-neighbor-solicit",
                "nd-neighbor-advert",
                "mld-listener-report",
                "mld2-listener-report",
            ]),
            vec![accept()],
        ]
        .concat(),
    );
    // A VM never serves DHCP (checklist 11).
    eg.push(vec![
        m("==", meta("l4proto"), json!(17)),
        m(
            "==",
            payload("udp", "sport"),
            set(vec![json!(67), json!(547)]),
        ),
        drop_(),
    ]);
    let mut ing: Vec<Vec<Value>> = Vec::new();
    // Every port admits DHCP replies, or no lease arrives (recipe §2).
    ing.push([vec![nfproto(false)], udp_ports(67, 68), vec![accept()]].concat());
    ing.push([vec![nfproto(true)], udp_ports(547, 546), vec![accept()]].concat());
    ing.push(
        [
            icmpv6_types(&[
                "nd-router-advert",
                "nd-neighbor-solicit",
                "nd-neighbor-advert",
                "mld-listener-query",
            ]),
            vec![accept()],
        ]
        .concat(),
    );
    for r in &p.rules {
        let target = if r.direction == Direction::Egress {
            &mut eg
        } else {
            &mut ing
        };
        target.push(sg_rule_expr(r));
    }
    eg.push(vec![drop_()]);
    ing.push(vec![drop_()]);
    vec![(egress_chain(&p.name), eg), (ingress_chain(&p.name), ing)]
}

/// The anti-spoofing chain's rules (bridge family, stateless, recipe §4).
fn antispoof_rules(p: &PortRules) -> Vec<Vec<Value>> {
    let macs: BTreeSet<MacAddr> = std::iter::once(p.mac)
        .chain(p.allowed_pairs.iter().filter_map(|a| a.mac))
        .collect();
    let all: Vec<IpNet> = p
        .fixed_ips
        .iter()
        .map(|ip| host(*ip))
        .chain(p.allowed_pairs.iter().map(|a| a.ip))
        .collect();
    let v4 = merged(all.iter().copied().filter(|n| n.addr().is_ipv4()));
    let v6 = merged(
        all.iter()
            .copied()
            .filter(|n| !n.addr().is_ipv4())
            .chain(macs.iter().map(|m| host(link_local(*m)))),
    );
    let macset = || set(macs.iter().map(|m| json!(m.to_string())).collect());
    let mut r = vec![
        vec![m("!=", payload("ether", "saddr"), macset()), drop_()],
        vec![m("!=", payload("arp", "saddr ether"), macset()), drop_()],
    ];
    if v4.is_empty() {
        r.push(vec![
            m("==", payload("ether", "type"), json!("arp")),
            drop_(),
        ]);
    } else {
        r.push(vec![
            m(
                "!=",
                payload("arp", "saddr ip"),
                set(v4.iter().map(addr).collect()),
            ),
            drop_(),
        ]);
    }
    r.push(vec![
        m("==", payload("ether", "type"), json!("arp")),
        accept(),
    ]);
    r.push(vec![
        m(
            "==",
            payload("udp", "sport"),
            set(vec![json!(67), json!(547)]),
        ),
        drop_(),
    ]);
    r.push(
        [
            vec![
                m("==", payload("ip", "saddr"), json!("0.0.0.0")),
                m("==", payload("ip", "daddr"), json!("255.255.255.255")),
            ],
            udp_ports(68, 67),
            vec![accept()],
        ]
        .concat(),
    );
    if !v4.is_empty() {
        r.push(vec![
            m(
                "==",
                payload("ip", "saddr"),
                set(v4.iter().map(addr).collect()),
            ),
            accept(),
        ]);
    }
    // Duplicate address detection and MLD reports come from "::".
    r.push(vec![
        m("==", payload("ip6", "saddr"), json!("::")),
        m("==", meta("l4proto"), json!(58)),
        accept(),
    ]);
    r.push(vec![
        m(
            "==",
            payload("ip6", "saddr"),
            set(v6.iter().map(addr).collect()),
        ),
        accept(),
    ]);
    r.push(vec![drop_()]);
    r
}

/// Commands that (re)write a port's chains and map entries in one
/// transaction. `previous` is the port's installed mark and ct marks, if
/// any: map entries under an old mark are replaced, and ct marks of rules
/// that left the port are revoked.
pub fn port_commands(p: &PortRules, previous: Option<(u32, &[u32])>) -> Vec<Value> {
    let digest = p.digest();
    let mut c = Vec::new();
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
    if let Some((old, _)) = previous.filter(|(old, _)| *old != p.mark) {
        for map in ["egress", "ingress"] {
            c.push(cmd(
                "delete",
                "element",
                json!({"family": "inet", "table": INET_TABLE, "name": map, "elem": [old]}),
            ));
        }
        c.push(cmd("delete", "element", json!({"family": "bridge", "table": BRIDGE_TABLE, "name": "port_mark", "elem": [p.name]})));
    }
    for (name, rules) in sg_chains(p) {
        c.push(cmd("add", "chain", chain("inet", INET_TABLE, &name)));
        c.push(cmd("flush", "chain", chain("inet", INET_TABLE, &name)));
        let n = rules.len();
        for (i, r) in rules.into_iter().enumerate() {
            let comment = (i + 1 == n).then(|| format!("{DIGEST_TAG}{digest}"));
            c.push(rule("inet", INET_TABLE, &name, r, comment));
        }
    }
    let asc = antispoof_chain(&p.name);
    c.push(cmd("add", "chain", chain("bridge", BRIDGE_TABLE, &asc)));
    c.push(cmd("flush", "chain", chain("bridge", BRIDGE_TABLE, &asc)));
    for r in antispoof_rules(p) {
        c.push(rule("bridge", BRIDGE_TABLE, &asc, r, None));
    }
    c.push(cmd("add", "element", json!({"family": "bridge", "table": BRIDGE_TABLE, "name": "port_mark", "elem": [[p.name, p.mark]]})));
    c.push(cmd("add", "element", json!({"family": "bridge", "table": BRIDGE_TABLE, "name": "antispoof", "elem": [[p.name, {"jump": {"target": asc}}]]})));
    c.push(cmd("add", "element", json!({"family": "inet", "table": INET_TABLE, "name": "egress", "elem": [[p.mark, {"jump": {"target": egress_chain(&p.name)}}]]})));
    c.push(cmd("add", "element", json!({"family": "inet", "table": INET_TABLE, "name": "ingress", "elem": [[p.mark, {"jump": {"target": ingress_chain(&p.name)}}]]})));
    if let Some((_, old_marks)) = previous {
        let now: BTreeSet<u32> = p.rules.iter().map(|r| r.ct_mark).collect();
        let gone: Vec<u32> = old_marks
            .iter()
            .copied()
            .filter(|m| !now.contains(m))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !gone.is_empty() {
            c.push(revoke_command(&gone));
        }
    }
    c
}

/// Adds conntrack marks to the `revoked` set (with a timeout), cutting
/// every session that carries them.
pub fn revoke_command(marks: &[u32]) -> Value {
    let elems: Vec<Value> = marks
        .iter()
        .map(|m| json!({"elem": {"val": m, "timeout": REVOKE_TIMEOUT_S}}))
        .collect();
    cmd(
        "add",
        "element",
        json!({"family": "inet", "table": INET_TABLE, "name": "revoked", "elem": elems}),
    )
}

/// Commands that remove a port: map entries first (they reference the
/// chains), then the chains, and its sessions' marks are revoked.
pub fn remove_port_commands(name: &str, mark: u32, ct_marks: &[u32]) -> Vec<Value> {
    let mut c = vec![
        cmd(
            "delete",
            "element",
            json!({"family": "bridge", "table": BRIDGE_TABLE, "name": "antispoof", "elem": [name]}),
        ),
        cmd(
            "delete",
            "element",
            json!({"family": "bridge", "table": BRIDGE_TABLE, "name": "port_mark", "elem": [name]}),
        ),
        cmd(
            "delete",
            "element",
            json!({"family": "inet", "table": INET_TABLE, "name": "egress", "elem": [mark]}),
        ),
        cmd(
            "delete",
            "element",
            json!({"family": "inet", "table": INET_TABLE, "name": "ingress", "elem": [mark]}),
        ),
    ];
    for (fam, table, ch) in [
        ("inet", INET_TABLE, egress_chain(name)),
        ("inet", INET_TABLE, ingress_chain(name)),
        ("bridge", BRIDGE_TABLE, antispoof_chain(name)),
    ] {
        // add + flush + delete: works whether or not the chain is there
        // (nft 1.0.6 has no "destroy").
        c.push(cmd("add", "chain", chain(fam, table, &ch)));
        c.push(cmd("flush", "chain", chain(fam, table, &ch)));
        c.push(cmd("delete", "chain", chain(fam, table, &ch)));
    }
    if !ct_marks.is_empty() {
        c.push(revoke_command(ct_marks));
    }
    c
}

fn group_set_decl(id: &str, v6: bool) -> Value {
    json!({"family": "inet", "table": INET_TABLE, "name": group_set(id, v6),
           "type": if v6 { "ipv6_addr" } else { "ipv4_addr" }, "flags": ["interval"]})
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
    let not_a_pair = |first: Value, second: Value| {
        let elems: Vec<Value> = r
            .floating_ips
            .iter()
            .map(|f| json!({"concat": [f.floating.to_string(), f.fixed.to_string()]}))
            .collect();
        m(
            "!=",
            json!({"concat": [first, second]}),
            json!({"set": elems}),
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
