//! An in-memory driver with the kernel's observable behaviour, for tests
//! of the agent and the control plane that cannot (or should not) run as
//! root.
//!
//! It models what the reconcilers depend on: namespaces hold links; a veth
//! end lives in one namespace and dies with its peer or its namespace;
//! deleting a link takes its addresses, routes, neighbours and FDB entries
//! with it and detaches its bridge ports; the same mistakes fail with the
//! same error variants (and, for kernel refusals, the same errno) as
//! [`crate::Kernel`]. Gratuitous ARP announcements are recorded
//! ([`Fake::announcements`]) instead of sent. What it does not model:
//! packets, IPv6 link-local addresses and the kernel's connected routes
//! (the listings leave both out anyway), and MACs the kernel would pick at
//! random (the fake picks them from a counter).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroI32;
use std::sync::Mutex;
use std::time::Duration;

use crate::names::{validate_ifname, validate_netns_name};
use crate::{
    sysctl_path, AddressInfo, BridgeSpec, Error, FdbEntry, HostNet, IpNet, LinkInfo, LinkKind,
    MacAddr, Neighbour, Netns, Result, Route, VethSpec, VxlanInfo, VxlanSpec,
};

/// The in-memory driver. Cheap to create; each instance is its own world
/// (its own "current" namespace and set of named namespaces).
#[derive(Debug, Default)]
pub struct Fake {
    state: Mutex<World>,
}

/// One [`HostNet::announce_ipv4`] call, as the fake recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Namespace of the link.
    pub netns: Netns,
    /// The link the frames would have gone out of.
    pub link: String,
    /// The MAC announced.
    pub mac: MacAddr,
    /// The addresses announced, in the order given.
    pub ips: Vec<Ipv4Addr>,
    /// Rounds asked for.
    pub rounds: u32,
    /// Interval between rounds asked for.
    pub interval: Duration,
}

#[derive(Debug, Default)]
struct World {
    current: Space,
    named: BTreeMap<String, Space>,
    next_mac: u32,
    announcements: Vec<Announcement>,
}

#[derive(Debug, Clone)]
struct FakeLink {
    info: LinkInfo,
    peer: Option<(Netns, String)>,
}

#[derive(Debug, Clone)]
struct Space {
    next_index: u32,
    links: BTreeMap<String, FakeLink>,
    addrs: BTreeSet<(String, IpNet)>,
    routes: BTreeMap<IpNet, Route>,
    neigh: BTreeMap<(String, IpAddr), MacAddr>,
    fdb: BTreeMap<String, BTreeSet<FdbEntry>>,
    sysctl: HashMap<String, String>,
}

impl Default for Space {
    fn default() -> Self {
        let mut s = Space {
            next_index: 2,
            links: BTreeMap::new(),
            addrs: BTreeSet::new(),
            routes: BTreeMap::new(),
            neigh: BTreeMap::new(),
            fdb: BTreeMap::new(),
            sysctl: HashMap::new(),
        };
        s.links.insert(
            "lo".into(),
            FakeLink {
                info: LinkInfo {
                    name: "lo".into(),
                    index: 1,
                    kind: LinkKind::Device,
                    master: None,
                    mtu: 65536,
                    mac: Some(MacAddr::ZERO),
                    up: false,
                },
                peer: None,
            },
        );
        s
    }
}

/// A kernel-style refusal, with the errno the kernel would give.
fn refused(op: &'static str, object: impl Into<String>, ns: &Netns, errno: i32) -> Error {
    let mut msg = rtnetlink::packet_core::ErrorMessage::default();
    msg.code = NonZeroI32::new(-errno);
    Error::Netlink {
        op,
        object: object.into(),
        netns: ns.clone(),
        source: Box::new(rtnetlink::Error::NetlinkError(msg)),
    }
}

fn no_link(ns: &Netns, link: &str) -> Error {
    Error::NoSuchLink {
        netns: ns.clone(),
        link: link.to_string(),
    }
}

fn conflict(ns: &Netns, link: &str, detail: impl Into<String>) -> Error {
    Error::Conflict {
        netns: ns.clone(),
        object: format!("link {link}"),
        detail: detail.into(),
    }
}

fn kind_str(k: &LinkKind) -> String {
    match k {
        LinkKind::Bridge => "bridge".into(),
        LinkKind::Veth => "veth".into(),
        LinkKind::Vxlan(_) => "vxlan".into(),
        LinkKind::Tun => "tun".into(),
        LinkKind::Device => "device".into(),
        LinkKind::Other(o) => o.clone(),
    }
}

impl World {
    fn space(&mut self, ns: &Netns) -> Result<&mut Space> {
        match ns {
            Netns::Current => Ok(&mut self.current),
            Netns::Named(n) => self
                .named
                .get_mut(n)
                .ok_or_else(|| Error::NoSuchNetns(n.clone())),
        }
    }

    fn link(&mut self, ns: &Netns, name: &str) -> Result<&mut FakeLink> {
        validate_ifname(name)?;
        self.space(ns)?
            .links
            .get_mut(name)
            .ok_or_else(|| no_link(ns, name))
    }

    fn mac(&mut self) -> MacAddr {
        self.next_mac += 1;
        let n = self.next_mac.to_be_bytes();
        // Locally administered, unicast: what the kernel's random MACs are.
        MacAddr([0x02, 0xfa, n[0], n[1], n[2], n[3]])
    }

    fn add_link(
        &mut self,
        ns: &Netns,
        name: &str,
        kind: LinkKind,
        mtu: u32,
        mac: Option<MacAddr>,
    ) -> Result<()> {
        let mac = Some(mac.unwrap_or_else(|| self.mac()));
        let s = self.space(ns)?;
        if s.links.contains_key(name) {
            return Err(refused("create", format!("link {name}"), ns, 17));
        }
        let index = s.next_index;
        s.next_index += 1;
        s.links.insert(
            name.to_string(),
            FakeLink {
                info: LinkInfo {
                    name: name.to_string(),
                    index,
                    kind,
                    master: None,
                    mtu,
                    mac,
                    up: false,
                },
                peer: None,
            },
        );
        Ok(())
    }

    /// Removes a link and everything that hangs off it, as the kernel
    /// does; a veth takes its peer along.
    fn remove_link(&mut self, ns: &Netns, name: &str) {
        let Ok(s) = self.space(ns) else { return };
        let Some(l) = s.links.remove(name) else {
            return;
        };
        s.addrs.retain(|(link, _)| link != name);
        s.routes.retain(|_, r| r.dev.as_deref() != Some(name));
        s.neigh.retain(|(link, _), _| link != name);
        s.fdb.remove(name);
        for other in s.links.values_mut() {
            if other.info.master.as_deref() == Some(name) {
                other.info.master = None;
            }
        }
        if let Some((pns, pname)) = l.peer {
            self.remove_link(&pns, &pname);
        }
    }
}

impl Fake {
    /// An empty world: a current namespace with only `lo`, no named ones.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every gratuitous ARP announcement asked for so far, in order.
    pub fn announcements(&self) -> Vec<Announcement> {
        self.with(|w| Ok(w.announcements.clone()))
            .unwrap_or_default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> Result<T>) -> Result<T> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut w)
    }
}

fn sysctl_default(key: &str) -> Option<&'static str> {
    // The defaults of a fresh namespace on the kernels we run on.
    Some(match key {
        "net.ipv4.ip_forward" => "0",
        "net.bridge.bridge-nf-call-iptables" | "net.bridge.bridge-nf-call-ip6tables" => "1",
        "net.netfilter.nf_conntrack_tcp_loose" => "1",
        k if k.starts_with("net.ipv4.conf.") => "0",
        _ => return None,
    })
}

#[async_trait::async_trait]
impl HostNet for Fake {
    async fn ensure_netns(&self, name: &str) -> Result<()> {
        validate_netns_name(name)?;
        self.with(|w| {
            let s = w.named.entry(name.to_string()).or_default();
            if let Some(lo) = s.links.get_mut("lo") {
                lo.info.up = true;
            }
            Ok(())
        })
    }

    async fn delete_netns(&self, name: &str) -> Result<()> {
        validate_netns_name(name)?;
        self.with(|w| {
            let ns = Netns::Named(name.to_string());
            let links: Vec<String> = match w.named.get(name) {
                Some(s) => s.links.keys().cloned().collect(),
                None => return Ok(()),
            };
            for l in links {
                w.remove_link(&ns, &l);
            }
            w.named.remove(name);
            Ok(())
        })
    }

    async fn list_netns(&self) -> Result<Vec<String>> {
        self.with(|w| Ok(w.named.keys().cloned().collect()))
    }

    async fn set_sysctl(&self, ns: &Netns, key: &str, value: &str) -> Result<()> {
        sysctl_path(key)?;
        self.with(|w| {
            w.space(ns)?
                .sysctl
                .insert(key.to_string(), value.to_string());
            Ok(())
        })
    }

    async fn get_sysctl(&self, ns: &Netns, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        self.with(|w| {
            let s = w.space(ns)?;
            s.sysctl
                .get(key)
                .cloned()
                .or_else(|| sysctl_default(key).map(str::to_string))
                .ok_or_else(|| Error::Os {
                    op: "read",
                    object: format!("sysctl {key} in {ns}"),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, path),
                })
        })
    }

    /// The fake cannot enter a namespace: it checks the namespace exists
    /// and binds an ephemeral port on 127.0.0.1 instead, so a service under
    /// test gets a working listener.
    async fn listen_tcp(&self, ns: &Netns, addr: SocketAddr) -> Result<std::net::TcpListener> {
        self.with(|w| w.space(ns).map(|_| ()))?;
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| Error::Os {
            op: "listen on",
            object: format!("{addr} in {ns}"),
            source,
        })
    }

    async fn ensure_bridge(&self, ns: &Netns, spec: &BridgeSpec) -> Result<()> {
        validate_ifname(&spec.name)?;
        self.with(|w| {
            if !w.space(ns)?.links.contains_key(&spec.name) {
                w.add_link(ns, &spec.name, LinkKind::Bridge, spec.mtu, None)?;
            }
            let l = w.link(ns, &spec.name)?;
            if l.info.kind != LinkKind::Bridge {
                let k = kind_str(&l.info.kind);
                return Err(conflict(ns, &spec.name, format!("is a {k}, not a bridge")));
            }
            l.info.mtu = spec.mtu;
            l.info.up = true;
            Ok(())
        })
    }

    async fn ensure_veth(&self, ns: &Netns, spec: &VethSpec) -> Result<()> {
        validate_ifname(&spec.name)?;
        validate_ifname(&spec.peer)?;
        self.with(|w| {
            let local = w.space(ns)?.links.get(&spec.name).cloned();
            let peer = w.space(&spec.peer_netns)?.links.get(&spec.peer).cloned();
            match (local, peer) {
                (Some(l), Some(p)) => {
                    for (fl, n, pns) in [(&l, &spec.name, ns), (&p, &spec.peer, &spec.peer_netns)] {
                        if fl.info.kind != LinkKind::Veth {
                            let k = kind_str(&fl.info.kind);
                            return Err(conflict(pns, n, format!("is a {k}, not a veth")));
                        }
                    }
                }
                (Some(_), None) => {
                    return Err(conflict(
                        ns,
                        &spec.name,
                        format!("its peer {} is not in {}", spec.peer, spec.peer_netns),
                    ))
                }
                (None, Some(_)) => {
                    return Err(conflict(
                        &spec.peer_netns,
                        &spec.peer,
                        "exists without its peer",
                    ))
                }
                (None, None) => {
                    if ns == &spec.peer_netns && spec.name == spec.peer {
                        return Err(refused("create veth", &spec.name, ns, 17));
                    }
                    w.add_link(ns, &spec.name, LinkKind::Veth, spec.mtu, None)?;
                    w.add_link(
                        &spec.peer_netns,
                        &spec.peer,
                        LinkKind::Veth,
                        spec.mtu,
                        spec.peer_mac,
                    )?;
                    w.link(ns, &spec.name)?.peer =
                        Some((spec.peer_netns.clone(), spec.peer.clone()));
                    w.link(&spec.peer_netns, &spec.peer)?.peer =
                        Some((ns.clone(), spec.name.clone()));
                }
            }
            let l = w.link(ns, &spec.name)?;
            l.info.mtu = spec.mtu;
            l.info.up |= spec.up;
            let p = w.link(&spec.peer_netns, &spec.peer)?;
            p.info.mtu = spec.mtu;
            p.info.up = true;
            if let Some(mac) = spec.peer_mac {
                p.info.mac = Some(mac);
            }
            Ok(())
        })
    }

    async fn ensure_vxlan(&self, ns: &Netns, spec: &VxlanSpec) -> Result<()> {
        validate_ifname(&spec.name)?;
        let want = VxlanInfo {
            vni: spec.vni,
            local: Some(spec.local),
            port: spec.port,
            learning: false,
            underlay: spec.underlay.clone(),
        };
        self.with(|w| {
            if let Some(l) = w.space(ns)?.links.get(&spec.name) {
                match &l.info.kind {
                    LinkKind::Vxlan(cur) if *cur == want => {}
                    LinkKind::Vxlan(cur) => {
                        return Err(conflict(
                            ns,
                            &spec.name,
                            format!("has {cur:?}, wanted {want:?}"),
                        ))
                    }
                    k => {
                        let k = kind_str(k);
                        return Err(conflict(ns, &spec.name, format!("is a {k}, not a vxlan")));
                    }
                }
            } else {
                if let Some(u) = &spec.underlay {
                    w.link(ns, u)?;
                }
                w.add_link(ns, &spec.name, LinkKind::Vxlan(want), spec.mtu, None)?;
            }
            let l = w.link(ns, &spec.name)?;
            l.info.mtu = spec.mtu;
            l.info.up = true;
            Ok(())
        })
    }

    async fn set_master(&self, ns: &Netns, link: &str, master: Option<&str>) -> Result<()> {
        self.with(|w| {
            w.link(ns, link)?;
            if let Some(m) = master {
                let ml = w.link(ns, m)?;
                if ml.info.kind != LinkKind::Bridge || m == link {
                    // The kernel answers EOPNOTSUPP when the master cannot
                    // take ports.
                    return Err(refused("set master of", format!("link {link}"), ns, 95));
                }
            }
            w.link(ns, link)?.info.master = master.map(str::to_string);
            Ok(())
        })
    }

    async fn set_up(&self, ns: &Netns, link: &str, up: bool) -> Result<()> {
        self.with(|w| {
            w.link(ns, link)?.info.up = up;
            Ok(())
        })
    }

    async fn set_mtu(&self, ns: &Netns, link: &str, mtu: u32) -> Result<()> {
        self.with(|w| {
            if !(68..=65535).contains(&mtu) {
                return Err(refused("configure link", format!("link {link}"), ns, 22));
            }
            w.link(ns, link)?.info.mtu = mtu;
            Ok(())
        })
    }

    async fn set_mac(&self, ns: &Netns, link: &str, mac: MacAddr) -> Result<()> {
        self.with(|w| {
            if mac.is_multicast() {
                return Err(refused("configure link", format!("link {link}"), ns, 99));
            }
            w.link(ns, link)?.info.mac = Some(mac);
            Ok(())
        })
    }

    async fn delete_link(&self, ns: &Netns, link: &str) -> Result<()> {
        validate_ifname(link)?;
        self.with(|w| {
            w.space(ns)?;
            w.remove_link(ns, link);
            Ok(())
        })
    }

    async fn list_links(&self, ns: &Netns) -> Result<Vec<LinkInfo>> {
        self.with(|w| {
            let mut v: Vec<LinkInfo> = w
                .space(ns)?
                .links
                .values()
                .map(|l| l.info.clone())
                .collect();
            v.sort_by_key(|l| l.index);
            Ok(v)
        })
    }

    async fn ensure_address(&self, ns: &Netns, link: &str, net: IpNet) -> Result<()> {
        self.with(|w| {
            w.link(ns, link)?;
            w.space(ns)?.addrs.insert((link.to_string(), net));
            Ok(())
        })
    }

    async fn delete_address(&self, ns: &Netns, link: &str, net: IpNet) -> Result<()> {
        validate_ifname(link)?;
        self.with(|w| {
            w.space(ns)?.addrs.remove(&(link.to_string(), net));
            Ok(())
        })
    }

    async fn list_addresses(&self, ns: &Netns) -> Result<Vec<AddressInfo>> {
        self.with(|w| {
            Ok(w.space(ns)?
                .addrs
                .iter()
                .map(|(link, net)| AddressInfo {
                    link: link.clone(),
                    net: *net,
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect())
        })
    }

    async fn ensure_route(&self, ns: &Netns, route: &Route) -> Result<()> {
        self.with(|w| {
            if let Some(d) = &route.dev {
                w.link(ns, d)?;
            }
            let dest = route.dest.network();
            let s = w.space(ns)?;
            if let Some(gw) = route.gateway {
                if gw.is_ipv4() != dest.addr().is_ipv4() {
                    return Err(Error::InvalidValue {
                        value: format!("{route:?}"),
                        expected: "a route whose gateway has the destination's family",
                    });
                }
                // The kernel wants the gateway on a connected prefix of an
                // up link (ENETUNREACH otherwise).
                let reachable = s.addrs.iter().any(|(l, n)| {
                    n.contains(gw)
                        && route.dev.as_ref().is_none_or(|d| d == l)
                        && s.links.get(l).is_some_and(|l| l.info.up)
                });
                if !reachable {
                    return Err(refused("replace route", format!("to {dest}"), ns, 101));
                }
            } else if route.dev.is_none() {
                return Err(refused("replace route", format!("to {dest}"), ns, 22));
            }
            let mut r = route.clone();
            r.dest = dest;
            if r.dev.is_none() {
                r.dev = s
                    .addrs
                    .iter()
                    .find(|(_, n)| route.gateway.is_some_and(|g| n.contains(g)))
                    .map(|(l, _)| l.clone());
            }
            s.routes.insert(dest, r);
            Ok(())
        })
    }

    async fn delete_route(&self, ns: &Netns, dest: IpNet) -> Result<()> {
        self.with(|w| {
            w.space(ns)?.routes.remove(&dest.network());
            Ok(())
        })
    }

    async fn list_routes(&self, ns: &Netns) -> Result<Vec<Route>> {
        self.with(|w| Ok(w.space(ns)?.routes.values().cloned().collect()))
    }

    async fn ensure_neighbour(&self, ns: &Netns, n: &Neighbour) -> Result<()> {
        self.with(|w| {
            w.link(ns, &n.link)?;
            w.space(ns)?.neigh.insert((n.link.clone(), n.ip), n.mac);
            Ok(())
        })
    }

    async fn delete_neighbour(&self, ns: &Netns, link: &str, ip: IpAddr) -> Result<()> {
        validate_ifname(link)?;
        self.with(|w| {
            w.space(ns)?.neigh.remove(&(link.to_string(), ip));
            Ok(())
        })
    }

    async fn list_neighbours(&self, ns: &Netns) -> Result<Vec<Neighbour>> {
        self.with(|w| {
            Ok(w.space(ns)?
                .neigh
                .iter()
                .map(|((link, ip), mac)| Neighbour {
                    link: link.clone(),
                    ip: *ip,
                    mac: *mac,
                })
                .collect())
        })
    }

    /// Recorded, not sent, and at once: the fake does not wait between
    /// rounds.
    async fn announce_ipv4(
        &self,
        ns: &Netns,
        link: &str,
        mac: MacAddr,
        ips: &[Ipv4Addr],
        rounds: u32,
        interval: Duration,
    ) -> Result<()> {
        self.with(|w| {
            w.link(ns, link)?;
            w.announcements.push(Announcement {
                netns: ns.clone(),
                link: link.to_string(),
                mac,
                ips: ips.to_vec(),
                rounds,
                interval,
            });
            Ok(())
        })
    }

    async fn append_fdb(&self, ns: &Netns, dev: &str, e: &FdbEntry) -> Result<()> {
        self.with(|w| {
            if !matches!(w.link(ns, dev)?.info.kind, LinkKind::Vxlan(_)) {
                // Only VXLAN devices take FDB entries with a destination.
                return Err(refused(
                    "add fdb entry",
                    format!("{} dst {} on {dev}", e.mac, e.dst),
                    ns,
                    22,
                ));
            }
            let set = w.space(ns)?.fdb.entry(dev.to_string()).or_default();
            if !(e.mac == MacAddr::ZERO || e.mac.is_multicast()) {
                set.retain(|x| x.mac != e.mac);
            }
            set.insert(e.clone());
            Ok(())
        })
    }

    async fn delete_fdb(&self, ns: &Netns, dev: &str, e: &FdbEntry) -> Result<()> {
        validate_ifname(dev)?;
        self.with(|w| {
            if let Some(set) = w.space(ns)?.fdb.get_mut(dev) {
                set.remove(e);
            }
            Ok(())
        })
    }

    async fn list_fdb(&self, ns: &Netns, dev: &str) -> Result<Vec<FdbEntry>> {
        self.with(|w| {
            w.link(ns, dev)?;
            Ok(w.space(ns)?
                .fdb
                .get(dev)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default())
        })
    }
}
