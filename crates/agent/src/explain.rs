//! A port's data path in words, for `ferrostack explain-port`: its tap and
//! bridge, the VXLAN device or uplink, its security chains and marks, the
//! DHCP server that answers it, its router namespace with the NAT rules
//! that concern it, and where its metadata requests go.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use netmodel::{HostState, PortStatus};

use crate::marks::{MarkStore, PortMarks};
use crate::plan::{Plan, PlanSettings, L2};
use crate::reconcile::PassReport;

#[derive(Debug, Default)]
struct Snapshot {
    /// Shared with the agent's loop: no copy of 2,000 ports per pass.
    state: Arc<HostState>,
    known: Known,
}

/// What an agent knows of its ports beyond the desired state.
#[derive(Debug, Default, Clone)]
pub struct Known {
    /// Last status by port id.
    pub statuses: BTreeMap<String, (PortStatus, Option<String>)>,
    /// Marks by device.
    pub marks: BTreeMap<String, PortMarks>,
}

/// Explains ports from the last state an agent applied. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Explainer {
    settings: PlanSettings,
    snap: Arc<Mutex<Snapshot>>,
}

impl Explainer {
    pub(crate) fn new(settings: PlanSettings) -> Self {
        Explainer {
            settings,
            snap: Arc::default(),
        }
    }

    /// Takes a pass's outcome: a partial report (a light pass) changes
    /// just the ports it names, so the cost follows the change, not the
    /// number of ports.
    pub(crate) fn update(&self, state: &Arc<HostState>, report: &PassReport, marks: &MarkStore) {
        let mut s = self.snap.lock().unwrap_or_else(|p| p.into_inner());
        s.state = state.clone();
        let k = &mut s.known;
        if report.partial {
            for id in &report.removed {
                k.statuses.remove(id);
            }
            for (id, st) in &report.statuses {
                k.statuses.insert(id.clone(), st.clone());
            }
            for d in report.devices.values() {
                match marks.get(d) {
                    Some(m) => k.marks.insert(d.clone(), m),
                    None => k.marks.remove(d),
                };
            }
        } else {
            k.statuses = report.statuses.clone();
            k.marks = marks
                .devices()
                .into_iter()
                .filter_map(|d| marks.get(&d).map(|m| (d, m)))
                .collect();
        }
    }

    /// The data path of a port, in words.
    pub fn explain_port(&self, port_id: &str) -> String {
        let s = self.snap.lock().unwrap_or_else(|p| p.into_inner());
        explain_port(&s.state, &self.settings, Some(&s.known), port_id)
    }
}

/// Describes a port's data path from a host state (and, when known, the
/// marks and statuses an agent holds).
pub fn explain_port(
    state: &HostState,
    settings: &PlanSettings,
    known: Option<&Known>,
    port_id: &str,
) -> String {
    let plan = Plan::build(state, settings);
    let mut o = String::new();
    let Some(port) = state.ports.iter().find(|p| p.id == port_id) else {
        return format!("port {port_id} is not bound to host {}\n", state.host);
    };
    let Some(pp) = plan.ports.values().find(|p| p.port_id == port_id) else {
        return format!("port {port_id} is not in the plan\n");
    };
    let _ = writeln!(
        o,
        "port {} ({}, device {}) on host {}, network {}",
        port.id,
        if port.device_owner.is_empty() {
            "no owner"
        } else {
            &port.device_owner
        },
        port.device_id,
        state.host,
        port.network_id
    );
    let ips: Vec<String> = port.fixed_ips.iter().map(|f| f.ip.to_string()).collect();
    let _ = writeln!(o, "  MAC {}, addresses {}", port.mac, ips.join(", "));
    if let Some((st, msg)) = known.and_then(|k| k.statuses.get(port_id)) {
        let st = match st {
            PortStatus::Active => "ACTIVE",
            PortStatus::Down => "DOWN",
            PortStatus::Error => "ERROR",
        };
        let _ = writeln!(
            o,
            "  status {st}{}",
            msg.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
        );
    }
    if let Some(e) = &pp.error {
        let _ = writeln!(o, "  cannot be wired: {e}");
    }
    let _ = writeln!(o, "path:");
    let _ = writeln!(
        o,
        "  1. the VM's NIC is the host device {} (MTU {}), a port of bridge {}",
        pp.device, pp.mtu, pp.bridge
    );
    if let Some(np) = plan.networks.get(&port.network_id) {
        match &np.l2 {
            L2::Vxlan(v) => {
                let _ = writeln!(
                    o,
                    "  2. the bridge reaches other hosts through VXLAN device {} (VNI {}, local {}, UDP {}), \
                     {} forwarding entr{} from the controller (no learning)",
                    v.name,
                    v.vni,
                    v.local,
                    v.port,
                    np.fdb.len(),
                    if np.fdb.len() == 1 { "y" } else { "ies" }
                );
            }
            L2::Flat { interface } => {
                let _ = writeln!(
                    o,
                    "  2. the bridge is joined to host interface {interface} (flat)"
                );
            }
            L2::Local => {
                let _ = writeln!(o, "  2. the bridge is local to this host");
            }
        }
        let _ = writeln!(
            o,
            "     conntrack zone {} (set in inet fs_sg chain zone_raw for traffic arriving on {})",
            np.zone, np.bridge
        );
    }
    match &pp.rules {
        None => {
            let _ = writeln!(
                o,
                "  3. trusted network port: no security-group or anti-spoofing chains"
            );
        }
        Some(r) if !r.port_security => {
            let _ = writeln!(
                o,
                "  3. port security is off: no security-group or anti-spoofing chains"
            );
        }
        Some(r) => {
            let pm = known.and_then(|k| k.marks.get(&pp.device));
            let mark = pm
                .map(|m| format!("{:#x}", m.mark))
                .unwrap_or_else(|| "not yet allocated".into());
            let _ = writeln!(
                o,
                "  3. anti-spoofing: bridge fs_port chain antispoof, sets as_mac/as_ip4/as_ip6/as_net4/as_net6 \
                 keyed by {} (only MAC {} and addresses {}{}; no DHCP server traffic)",
                pp.device,
                r.mac,
                ips.join(", "),
                if r.allowed_pairs.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", allowed pairs {}",
                        r.allowed_pairs
                            .iter()
                            .map(|a| a.ip.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
            // The chains are named by the marked rules (shared by every
            // port with the same security groups).
            let chains = pm
                .and_then(|m| {
                    let mut marked = r.clone();
                    for (rule, id) in marked.rules.iter_mut().zip(&pp.rule_ids) {
                        rule.ct_mark = *m.rules.get(id)?;
                    }
                    Some(nft::render::sg_chains_id(&marked))
                })
                .unwrap_or_else(|| "<not yet allocated>".into());
            let _ = writeln!(
                o,
                "     packet mark {mark} (bridge fs_port map port_mark); traffic from the VM: inet fs_sg chain {} \
                 (map egress), to the VM: chain {} (map ingress), shared by the ports with the same security groups",
                nft::render::egress_chain(&chains),
                nft::render::ingress_chain(&chains)
            );
            for (rule, id) in r.rules.iter().zip(&pp.rule_ids) {
                let ct = m_rule(pm, id)
                    .map(|c| {
                        let (half, end) = match rule.direction {
                            nft::Direction::Egress => ("high", "initiator"),
                            nft::Direction::Ingress => ("low", "receiver"),
                        };
                        format!(
                            "stamps {:#010x} into the ct mark's {half} half (rule mark {c:#x}, this port as the \
                             session's {end})",
                            nft::render::session_half(rule.direction, c)
                        )
                    })
                    .unwrap_or_default();
                let _ = writeln!(o, "     rule {id}: {} {ct}", describe_rule(rule));
            }
            if !r.rules.is_empty() {
                // What the marks really do: both ends' rules in one
                // conntrack mark, each end recognised by its packet mark.
                let _ = writeln!(
                    o,
                    "     sessions: a session's conntrack mark holds the initiator's egress rule (high 16 bits) \
                     and the receiver's ingress rule (low 16 bits); which port each half belongs to is the \
                     packet mark {mark} (sg_pre: the sending port, sg_fwd: the receiving one, by conntrack \
                     direction). Deleting one of the rules above, or this port leaving a group, puts {mark} . \
                     rule into set revoked_rules: the sessions that rule admitted for this port are cut in both \
                     directions, to ports on this host, router legs and other hosts alike (a session remembers \
                     the first rule that admitted it: one that another rule still admits is cut too, and \
                     reconnects through that rule). A member leaving a group that a remote-group rule names cuts that rule's \
                     sessions with its address (sets revoked_remote4/6); a removed port's device keeps its \
                     mark in map gone_mark with all its rules revoked."
                );
            }
            if r.rules.is_empty() {
                let _ = writeln!(
                    o,
                    "     no security-group rules: everything but DHCP and ND is dropped"
                );
            }
        }
    }
    let dhcp = plan.dhcp.values().find(|d| d.network_id == port.network_id);
    match (dhcp, port.mac.parse::<hostlink::MacAddr>().ok()) {
        (Some(d), Some(mac)) => match d.leases.get(&mac) {
            Some(l) => {
                let _ = writeln!(
                    o,
                    "  4. DHCP: namespace {} (leg {} on {}, server {}) leases {}/{} for {}s; routes (121): {}",
                    d.netns,
                    d.ns_leg,
                    d.host_leg,
                    l.server,
                    l.ip,
                    l.prefix,
                    l.lease_time,
                    l.routes
                        .iter()
                        .map(|(dst, p, gw)| format!("{dst}/{p} via {gw}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "  4. DHCP: namespace {} has no lease for this port",
                    d.netns
                );
            }
        },
        _ => {
            let _ = writeln!(o, "  4. DHCP: not served on this host for this network");
        }
    }
    let mut routed = false;
    for r in plan.routers.values() {
        let Some(leg) = r
            .legs
            .iter()
            .find(|l| !l.gateway && l.network_id == port.network_id)
        else {
            continue;
        };
        routed = true;
        let addrs: Vec<String> = leg.addrs.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            o,
            "  5. routed by namespace {} through leg {} ({}) whose bridge end is {}",
            r.netns,
            leg.name,
            addrs.join(", "),
            leg.tap
        );
        for rt in &r.routes {
            let _ = writeln!(
                o,
                "     route {} via {} dev {}",
                rt.dest,
                rt.gateway.map(|g| g.to_string()).unwrap_or_default(),
                rt.dev.clone().unwrap_or_default()
            );
        }
        let nat = &r.nat;
        if let (Some(qg), Some(gw)) = (&nat.gateway_leg, nat.gateway_ip) {
            if nat.snat {
                let _ = writeln!(
                    o,
                    "     SNAT: ip fs_nat chain nat-post, out of {qg} the source becomes {gw}"
                );
            } else {
                let _ = writeln!(o, "     SNAT disabled: out of {qg} sources are kept");
            }
            for f in &nat.floating_ips {
                if port.fixed_ips.iter().any(|x| x.ip == f.fixed) {
                    let _ = writeln!(
                        o,
                        "     floating IP {} (a /32 on {qg}): DNAT to {} in chain nat-pre, SNAT from {} in chain fip-post, \
                         hairpin SNAT to {gw} for neighbours",
                        f.floating, f.fixed, f.fixed
                    );
                }
            }
        } else {
            let _ = writeln!(o, "     no external gateway");
        }
        if let Some(p) = nat.metadata_port {
            let _ = writeln!(
                o,
                "  6. metadata: 169.254.169.254:80 arriving on {} is redirected (chain nat-pre) to port {p}, \
                 where the agent answers inside {}",
                leg.name, r.netns
            );
        }
    }
    if !routed {
        let _ = writeln!(o, "  5. no router on this host for this network");
    }
    if let Some(d) = dhcp.filter(|d| d.metadata) {
        let _ = writeln!(
            o,
            "  6. metadata (isolated subnet): 169.254.169.254:80 is answered in {} on {}",
            d.netns, d.ns_leg
        );
    }
    o
}

fn describe_rule(r: &nft::SgRule) -> String {
    let dir = match r.direction {
        nft::Direction::Ingress => "ingress",
        nft::Direction::Egress => "egress",
    };
    let fam = match r.ethertype {
        nft::EtherType::V4 => "IPv4",
        nft::EtherType::V6 => "IPv6",
    };
    let proto = r
        .protocol
        .map(|p| match p.0 {
            1 => "icmp".to_string(),
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            58 => "icmpv6".to_string(),
            n => format!("protocol {n}"),
        })
        .unwrap_or_else(|| "any protocol".into());
    let ports = match r.port_range {
        Some((a, b)) if a == b => format!(" port {a}"),
        Some((a, b)) => format!(" ports {a}-{b}"),
        None => String::new(),
    };
    let remote = match &r.remote {
        nft::Remote::Any => "anywhere".to_string(),
        nft::Remote::Cidr(c) => c.to_string(),
        nft::Remote::Group(g) => format!(
            "members of group {g} (set {})",
            nft::render::group_set(g, r.ethertype == nft::EtherType::V6)
        ),
    };
    let side = if r.direction == nft::Direction::Ingress {
        "from"
    } else {
        "to"
    };
    format!("{dir} {fam} {proto}{ports} {side} {remote}")
}

/// The rule mark the port's marks give rule `id`, once allocated.
fn m_rule(pm: Option<&PortMarks>, id: &str) -> Option<u32> {
    pm?.rules.get(id).copied()
}
