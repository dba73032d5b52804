//! The real driver: rtnetlink requests inside the target namespace.
//!
//! Each call opens a netlink socket in the target namespace
//! ([`crate::netns::handle`]); that costs a short-lived thread and a socket
//! (tens of microseconds), which keeps the driver stateless and safe to use
//! from any runtime. Lookups go by name with `RTM_GETLINK` + `IFLA_IFNAME`
//! rather than dumping every link, so a host with thousands of taps pays
//! the same per call.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

use crate::names::validate_ifname;
use crate::{
    arp, netns, AddressInfo, BridgeSpec, Error, FdbEntry, HostNet, IpNet, LinkInfo, LinkKind,
    MacAddr, Neighbour, Netns, Result, Route, VethSpec, VxlanInfo, VxlanSpec,
};

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EADDRNOTAVAIL: i32 = 99;

/// The real host network driver (needs `CAP_NET_ADMIN` and, for named
/// namespaces, `CAP_SYS_ADMIN`).
#[derive(Debug, Default, Clone)]
pub struct Kernel;

impl Kernel {
    /// A driver; it holds no state.
    pub fn new() -> Self {
        Kernel
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn nl<'a>(
    op: &'static str,
    object: impl std::fmt::Display + 'a,
    ns: &'a Netns,
) -> impl FnOnce(rtnetlink::Error) -> Error + 'a {
    move |source| Error::Netlink {
        op,
        object: object.to_string(),
        netns: ns.clone(),
        source: Box::new(source),
    }
}

/// Sends a request with the given flags and waits for its ACK. Used where
/// rtnetlink's request builders do not offer the flags we need
/// (`NLM_F_APPEND` for FDB entries).
async fn request(
    h: &mut Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> std::result::Result<(), rtnetlink::Error> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut resp = h.request(req)?;
    while let Some(m) = futures::StreamExt::next(&mut resp).await {
        if let NetlinkPayload::Error(e) = m.payload {
            if e.code.is_some() {
                return Err(rtnetlink::Error::NetlinkError(e));
            }
        }
    }
    Ok(())
}

async fn find_link(h: &Handle, ns: &Netns, name: &str) -> Result<Option<LinkMessage>> {
    validate_ifname(name)?;
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl("look up link", name, ns)(e)),
    }
}

async fn need_link(h: &Handle, ns: &Netns, name: &str) -> Result<LinkMessage> {
    find_link(h, ns, name)
        .await?
        .ok_or_else(|| Error::NoSuchLink {
            netns: ns.clone(),
            link: name.to_string(),
        })
}

async fn link_names(h: &Handle, ns: &Netns) -> Result<HashMap<u32, String>> {
    let all: Vec<LinkMessage> =
        h.link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("list links", "", ns))?;
    Ok(all
        .iter()
        .filter_map(|m| link_name(m).map(|n| (m.header.index, n.to_string())))
        .collect())
}

fn link_name(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link_kind_raw(m: &LinkMessage) -> (Option<InfoKind>, Option<&InfoData>) {
    let mut kind = None;
    let mut data = None;
    for a in &m.attributes {
        if let LinkAttribute::LinkInfo(infos) = a {
            for i in infos {
                match i {
                    NlLinkInfo::Kind(k) => kind = Some(k.clone()),
                    NlLinkInfo::Data(d) => data = Some(d),
                    _ => {}
                }
            }
        }
    }
    (kind, data)
}

fn parse_link(m: &LinkMessage, names: &HashMap<u32, String>) -> LinkInfo {
    let mut info = LinkInfo {
        name: link_name(m).unwrap_or_default().to_string(),
        index: m.header.index,
        kind: LinkKind::Device,
        master: None,
        mtu: 0,
        mac: None,
        up: m.header.flags.contains(LinkFlags::Up),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::Mtu(v) => info.mtu = *v,
            LinkAttribute::Controller(i) => info.master = names.get(i).cloned(),
            LinkAttribute::Address(b) => info.mac = MacAddr::from_slice(b),
            _ => {}
        }
    }
    let (kind, data) = link_kind_raw(m);
    info.kind = match kind {
        None => LinkKind::Device,
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Veth) => LinkKind::Veth,
        Some(InfoKind::Tun) => LinkKind::Tun,
        Some(InfoKind::Vxlan) => {
            let mut v = VxlanInfo {
                vni: 0,
                local: None,
                port: 0,
                learning: true,
                underlay: None,
            };
            if let Some(InfoData::Vxlan(items)) = data {
                for i in items {
                    match i {
                        InfoVxlan::Id(id) => v.vni = *id,
                        InfoVxlan::Local(a) => v.local = Some(*a),
                        InfoVxlan::Port(p) => v.port = *p,
                        InfoVxlan::Learning(l) => v.learning = *l,
                        InfoVxlan::Link(i) => v.underlay = names.get(i).cloned(),
                        _ => {}
                    }
                }
            }
            LinkKind::Vxlan(v)
        }
        Some(other) => LinkKind::Other(other.to_string()),
    };
    info
}

/// Applies MTU, MAC and up to an existing link, sending nothing when it
/// already has them, so that ensuring twice is a no-op for the kernel too.
async fn converge_link(
    h: &Handle,
    ns: &Netns,
    msg: &LinkMessage,
    mtu: Option<u32>,
    mac: Option<MacAddr>,
    up: bool,
) -> Result<()> {
    let name = link_name(msg).unwrap_or_default().to_string();
    let cur = parse_link(msg, &HashMap::new());
    let mut b = LinkUnspec::new_with_index(msg.header.index);
    let mut changed = false;
    if let Some(mtu) = mtu.filter(|m| *m != cur.mtu) {
        b = b.mtu(mtu);
        changed = true;
    }
    if let Some(mac) = mac.filter(|m| Some(*m) != cur.mac) {
        b = b.address(mac.0.to_vec());
        changed = true;
    }
    if up && !cur.up {
        b = b.up();
        changed = true;
    }
    if changed {
        h.link().set(b.build()).execute().await.map_err(nl(
            "configure link",
            format!("link {name}"),
            ns,
        ))?;
    }
    Ok(())
}

fn conflict(ns: &Netns, link: &str, detail: impl Into<String>) -> Error {
    Error::Conflict {
        netns: ns.clone(),
        object: format!("link {link}"),
        detail: detail.into(),
    }
}

fn kind_name(m: &LinkMessage) -> String {
    match link_kind_raw(m).0 {
        Some(k) => k.to_string(),
        None => "device".into(),
    }
}

#[async_trait::async_trait]
impl HostNet for Kernel {
    async fn ensure_netns(&self, name: &str) -> Result<()> {
        let n = name.to_string();
        netns::run_in_async(&Netns::Current, move || netns::create(&n)).await??;
        // Loopback is down in a fresh namespace; services bound to
        // 127.0.0.1 inside (and the kernel's own local delivery tests)
        // want it up.
        let ns = Netns::Named(name.to_string());
        let h = netns::handle(&ns).await?;
        let lo = need_link(&h, &ns, "lo").await?;
        converge_link(&h, &ns, &lo, None, None, true).await
    }

    async fn delete_netns(&self, name: &str) -> Result<()> {
        let n = name.to_string();
        netns::run_in_async(&Netns::Current, move || netns::delete(&n)).await?
    }

    async fn list_netns(&self) -> Result<Vec<String>> {
        netns::list()
    }

    async fn set_sysctl(&self, ns: &Netns, key: &str, value: &str) -> Result<()> {
        let (ns, key, value) = (ns.clone(), key.to_string(), value.to_string());
        netns::run_in_async(&Netns::Current, move || {
            netns::write_sysctl(&ns, &key, &value)
        })
        .await?
    }

    async fn get_sysctl(&self, ns: &Netns, key: &str) -> Result<String> {
        let (ns, key) = (ns.clone(), key.to_string());
        netns::run_in_async(&Netns::Current, move || netns::read_sysctl(&ns, &key)).await?
    }

    async fn listen_tcp(&self, ns: &Netns, addr: SocketAddr) -> Result<std::net::TcpListener> {
        let ns = ns.clone();
        netns::run_in_async(&Netns::Current, move || netns::listen_tcp(&ns, addr)).await?
    }

    async fn ensure_bridge(&self, ns: &Netns, spec: &BridgeSpec) -> Result<()> {
        validate_ifname(&spec.name)?;
        let h = netns::handle(ns).await?;
        let msg = match find_link(&h, ns, &spec.name).await? {
            Some(m) => m,
            None => {
                h.link()
                    .add(LinkBridge::new(&spec.name).mtu(spec.mtu).up().build())
                    .execute()
                    .await
                    .map_err(nl("create bridge", &spec.name, ns))?;
                return Ok(());
            }
        };
        if link_kind_raw(&msg).0 != Some(InfoKind::Bridge) {
            return Err(conflict(
                ns,
                &spec.name,
                format!("is a {}, not a bridge", kind_name(&msg)),
            ));
        }
        converge_link(&h, ns, &msg, Some(spec.mtu), None, true).await
    }

    async fn ensure_veth(&self, ns: &Netns, spec: &VethSpec) -> Result<()> {
        validate_ifname(&spec.name)?;
        validate_ifname(&spec.peer)?;
        let h = netns::handle(ns).await?;
        let ph = if spec.peer_netns == *ns {
            h.clone()
        } else {
            netns::handle(&spec.peer_netns).await?
        };
        let local = find_link(&h, ns, &spec.name).await?;
        let peer = find_link(&ph, &spec.peer_netns, &spec.peer).await?;
        match (&local, &peer) {
            (Some(l), Some(p)) => {
                for (m, n, pns) in [(l, &spec.name, ns), (p, &spec.peer, &spec.peer_netns)] {
                    if link_kind_raw(m).0 != Some(InfoKind::Veth) {
                        return Err(conflict(
                            pns,
                            n,
                            format!("is a {}, not a veth", kind_name(m)),
                        ));
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
                // The peer is created directly in its namespace
                // (IFLA_NET_NS_FD inside the peer info), so it never
                // appears, even briefly, where it does not belong.
                let ns_file = match &spec.peer_netns {
                    p if p == ns => None,
                    Netns::Named(n) => Some(File::open(netns::path(n)).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Error::NoSuchNetns(n.clone())
                        } else {
                            Error::Os {
                                op: "open",
                                object: n.clone(),
                                source: e,
                            }
                        }
                    })?),
                    Netns::Current => Some(File::open("/proc/thread-self/ns/net").map_err(
                        |e| Error::Os {
                            op: "open",
                            object: "/proc/thread-self/ns/net".into(),
                            source: e,
                        },
                    )?),
                };
                let mut peer_b = LinkUnspec::new_with_name(&spec.peer).mtu(spec.mtu);
                if let Some(mac) = spec.peer_mac {
                    peer_b = peer_b.address(mac.0.to_vec());
                }
                if let Some(f) = &ns_file {
                    peer_b = peer_b.setns_by_fd(f.as_raw_fd());
                }
                let msg = LinkVeth::new(&spec.name, &spec.peer)
                    .mtu(spec.mtu)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_b.build())))
                    .build();
                h.link().add(msg).execute().await.map_err(nl(
                    "create veth",
                    format!("{} (peer {})", spec.name, spec.peer),
                    ns,
                ))?;
                drop(ns_file);
            }
        }
        let l = need_link(&h, ns, &spec.name).await?;
        converge_link(&h, ns, &l, Some(spec.mtu), None, spec.up).await?;
        let p = need_link(&ph, &spec.peer_netns, &spec.peer).await?;
        converge_link(
            &ph,
            &spec.peer_netns,
            &p,
            Some(spec.mtu),
            spec.peer_mac,
            true,
        )
        .await
    }

    async fn ensure_vxlan(&self, ns: &Netns, spec: &VxlanSpec) -> Result<()> {
        validate_ifname(&spec.name)?;
        let h = netns::handle(ns).await?;
        if let Some(m) = find_link(&h, ns, &spec.name).await? {
            let names = link_names(&h, ns).await?;
            let LinkKind::Vxlan(cur) = parse_link(&m, &names).kind else {
                return Err(conflict(
                    ns,
                    &spec.name,
                    format!("is a {}, not a vxlan", kind_name(&m)),
                ));
            };
            let want = VxlanInfo {
                vni: spec.vni,
                local: Some(spec.local),
                port: spec.port,
                learning: false,
                underlay: spec.underlay.clone(),
            };
            if cur != want {
                return Err(conflict(
                    ns,
                    &spec.name,
                    format!("has {cur:?}, wanted {want:?}"),
                ));
            }
            return converge_link(&h, ns, &m, Some(spec.mtu), None, true).await;
        }
        let mut b = LinkVxlan::new(&spec.name, spec.vni)
            .local(spec.local)
            .port(spec.port)
            .learning(false);
        if let Some(u) = &spec.underlay {
            b = b.dev(need_link(&h, ns, u).await?.header.index);
        }
        h.link()
            .add(b.mtu(spec.mtu).up().build())
            .execute()
            .await
            .map_err(nl("create vxlan", &spec.name, ns))
    }

    async fn set_master(&self, ns: &Netns, link: &str, master: Option<&str>) -> Result<()> {
        let h = netns::handle(ns).await?;
        let l = need_link(&h, ns, link).await?;
        let cur = l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(i) => Some(*i),
            _ => None,
        });
        let b = LinkUnspec::new_with_index(l.header.index);
        let msg = match master {
            Some(m) => {
                let mi = need_link(&h, ns, m).await?.header.index;
                if cur == Some(mi) {
                    return Ok(());
                }
                b.controller(mi).build()
            }
            None if cur.is_none() => return Ok(()),
            None => b.nocontroller().build(),
        };
        h.link()
            .set(msg)
            .execute()
            .await
            .map_err(nl("set master of", format!("link {link}"), ns))
    }

    async fn set_up(&self, ns: &Netns, link: &str, up: bool) -> Result<()> {
        let h = netns::handle(ns).await?;
        let l = need_link(&h, ns, link).await?;
        if l.header.flags.contains(LinkFlags::Up) == up {
            return Ok(());
        }
        let b = LinkUnspec::new_with_index(l.header.index);
        let b = if up { b.up() } else { b.down() };
        h.link().set(b.build()).execute().await.map_err(nl(
            "set state of",
            format!("link {link}"),
            ns,
        ))
    }

    /// One namespace handle and at most one change message for the
    /// three settings (a port is wired with two lookups and one set).
    async fn wire_port(&self, ns: &Netns, link: &str, master: &str, mtu: u32) -> Result<()> {
        let h = netns::handle(ns).await?;
        let l = need_link(&h, ns, link).await?;
        let mi = need_link(&h, ns, master).await?.header.index;
        let cur = parse_link(&l, &HashMap::new());
        let on_master = l
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(i) if *i == mi));
        let mut b = LinkUnspec::new_with_index(l.header.index);
        let mut changed = false;
        if cur.mtu != mtu {
            b = b.mtu(mtu);
            changed = true;
        }
        if !on_master {
            b = b.controller(mi);
            changed = true;
        }
        if !cur.up {
            // A bridge port needs no address of its own: with IPv6 off
            // before it comes up, it gets no link-local address and no
            // fe80::/64 route, whose insertion and lookups walk every
            // interface of the namespace (thousands of taps on a host).
            // Best effort: a kernel without IPv6 has no such file.
            if !link.contains('.') {
                let key = format!("net.ipv6.conf.{link}.disable_ipv6");
                let _ = self.set_sysctl(ns, &key, "1").await;
            }
            b = b.up();
            changed = true;
        }
        if !changed {
            return Ok(());
        }
        h.link().set(b.build()).execute().await.map_err(nl(
            "wire",
            format!("link {link} to {master}"),
            ns,
        ))
    }

    async fn set_mtu(&self, ns: &Netns, link: &str, mtu: u32) -> Result<()> {
        let h = netns::handle(ns).await?;
        let l = need_link(&h, ns, link).await?;
        let up = l.header.flags.contains(LinkFlags::Up);
        converge_link(&h, ns, &l, Some(mtu), None, up).await
    }

    async fn set_mac(&self, ns: &Netns, link: &str, mac: MacAddr) -> Result<()> {
        let h = netns::handle(ns).await?;
        let l = need_link(&h, ns, link).await?;
        let up = l.header.flags.contains(LinkFlags::Up);
        converge_link(&h, ns, &l, None, Some(mac), up).await
    }

    async fn delete_link(&self, ns: &Netns, link: &str) -> Result<()> {
        let h = netns::handle(ns).await?;
        let Some(l) = find_link(&h, ns, link).await? else {
            return Ok(());
        };
        match h.link().del(l.header.index).execute().await {
            Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
            r => r.map_err(nl("delete", format!("link {link}"), ns)),
        }
    }

    async fn list_links(&self, ns: &Netns) -> Result<Vec<LinkInfo>> {
        let h = netns::handle(ns).await?;
        let all: Vec<LinkMessage> =
            h.link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl("list links", "", ns))?;
        let names: HashMap<u32, String> = all
            .iter()
            .filter_map(|m| link_name(m).map(|n| (m.header.index, n.to_string())))
            .collect();
        Ok(all.iter().map(|m| parse_link(m, &names)).collect())
    }

    async fn ensure_address(&self, ns: &Netns, link: &str, net: IpNet) -> Result<()> {
        let h = netns::handle(ns).await?;
        let idx = need_link(&h, ns, link).await?.header.index;
        if addresses(&h, ns)
            .await?
            .iter()
            .any(|(i, n, _)| *i == idx && *n == net)
        {
            return Ok(());
        }
        h.address()
            .add(idx, net.addr(), net.prefix())
            .execute()
            .await
            .map_err(nl("add address", format!("{net} to link {link}"), ns))
    }

    async fn delete_address(&self, ns: &Netns, link: &str, net: IpNet) -> Result<()> {
        let h = netns::handle(ns).await?;
        let Some(l) = find_link(&h, ns, link).await? else {
            return Ok(());
        };
        for (i, n, msg) in addresses(&h, ns).await? {
            if i == l.header.index && n == net {
                match h.address().del(msg).execute().await {
                    Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => {}
                    r => r.map_err(nl("delete address", format!("{net} from link {link}"), ns))?,
                }
            }
        }
        Ok(())
    }

    async fn list_addresses(&self, ns: &Netns) -> Result<Vec<AddressInfo>> {
        let h = netns::handle(ns).await?;
        let names = link_names(&h, ns).await?;
        let mut out: Vec<AddressInfo> = addresses(&h, ns)
            .await?
            .into_iter()
            .filter(|(_, _, m)| m.header.scope == AddressScope::Universe)
            .filter_map(|(i, net, _)| {
                names.get(&i).map(|l| AddressInfo {
                    link: l.clone(),
                    net,
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn ensure_route(&self, ns: &Netns, route: &Route) -> Result<()> {
        let h = netns::handle(ns).await?;
        let dest = route.dest.network();
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), dest.prefix())
            .map_err(|_| invalid_route(route))?;
        if let Some(gw) = route.gateway {
            b = b.gateway(gw).map_err(|_| invalid_route(route))?;
        } else {
            b = b.scope(RouteScope::Link);
        }
        if let Some(dev) = &route.dev {
            b = b.output_interface(need_link(&h, ns, dev).await?.header.index);
        }
        // Skip the request when the same route is there: "replace" would
        // succeed too, but would also send a change notification.
        if self.list_routes(ns).await?.iter().any(|r| {
            r.dest == dest
                && r.gateway == route.gateway
                && (route.dev.is_none() || r.dev == route.dev)
        }) {
            return Ok(());
        }
        h.route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(nl("replace route", format!("to {dest}"), ns))
    }

    async fn delete_route(&self, ns: &Netns, dest: IpNet) -> Result<()> {
        let h = netns::handle(ns).await?;
        let dest = dest.network();
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), dest.prefix())
            .map_err(|_| Error::InvalidValue {
                value: dest.to_string(),
                expected: "a route destination",
            })?
            .build();
        match h.route().del(msg).execute().await {
            Err(e) if errno(&e) == Some(ESRCH) => Ok(()),
            r => r.map_err(nl("delete route", format!("to {dest}"), ns)),
        }
    }

    async fn list_routes(&self, ns: &Netns) -> Result<Vec<Route>> {
        let h = netns::handle(ns).await?;
        let names = link_names(&h, ns).await?;
        let mut out = Vec::new();
        for family in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let msgs: Vec<RouteMessage> = h
                .route()
                .get(family)
                .execute()
                .try_collect()
                .await
                .map_err(nl("list routes", "", ns))?;
            out.extend(msgs.iter().filter_map(|m| parse_route(m, &names)));
        }
        out.sort();
        Ok(out)
    }

    async fn ensure_neighbour(&self, ns: &Netns, n: &Neighbour) -> Result<()> {
        let h = netns::handle(ns).await?;
        let idx = need_link(&h, ns, &n.link).await?.header.index;
        if self.list_neighbours(ns).await?.contains(n) {
            return Ok(());
        }
        h.neighbours()
            .add(idx, n.ip)
            .link_layer_address(&n.mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(
                "replace neighbour",
                format!("{} on link {}", n.ip, n.link),
                ns,
            ))
    }

    async fn delete_neighbour(&self, ns: &Netns, link: &str, ip: IpAddr) -> Result<()> {
        let h = netns::handle(ns).await?;
        let Some(l) = find_link(&h, ns, link).await? else {
            return Ok(());
        };
        let mut msg = NeighbourMessage::default();
        msg.header.family = if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.header.ifindex = l.header.index;
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        match h.neighbours().del(msg).execute().await {
            Err(e) if errno(&e) == Some(ENOENT) => Ok(()),
            r => r.map_err(nl("delete neighbour", format!("{ip} on link {link}"), ns)),
        }
    }

    async fn list_neighbours(&self, ns: &Netns) -> Result<Vec<Neighbour>> {
        let h = netns::handle(ns).await?;
        let names = link_names(&h, ns).await?;
        let msgs: Vec<NeighbourMessage> = h
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("list neighbours", "", ns))?;
        let mut out: Vec<Neighbour> = msgs
            .iter()
            .filter(|m| m.header.state == NeighbourState::Permanent)
            .filter(|m| matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6))
            .filter_map(|m| {
                let (ip, mac) = neigh_fields(m);
                Some(Neighbour {
                    link: names.get(&m.header.ifindex)?.clone(),
                    ip: ip?,
                    mac: mac?,
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// One short-lived thread in the namespace opens the packet socket and
    /// sends every round, sleeping between them (it is no pooled thread).
    async fn announce_ipv4(
        &self,
        ns: &Netns,
        link: &str,
        mac: MacAddr,
        ips: &[Ipv4Addr],
        rounds: u32,
        interval: Duration,
    ) -> Result<()> {
        validate_ifname(link)?;
        let frames: Vec<[u8; arp::FRAME_LEN]> = ips
            .iter()
            .map(|ip| arp::gratuitous_request(mac, *ip))
            .collect();
        let (ns2, link) = (ns.clone(), link.to_string());
        netns::run_in_async(ns, move || {
            arp::send(&ns2, &link, &frames, rounds, interval)
        })
        .await?
    }

    async fn append_fdb(&self, ns: &Netns, dev: &str, e: &FdbEntry) -> Result<()> {
        let mut h = netns::handle(ns).await?;
        let idx = need_link(&h, ns, dev).await?.header.index;
        // Unicast entries hold one destination: replace it. BUM entries
        // are lists: append to them (the kernel accepts appending only for
        // the zero and multicast MACs, and treats a repeat as a no-op).
        let flags = if e.mac == MacAddr::ZERO || e.mac.is_multicast() {
            NLM_F_CREATE | NLM_F_APPEND
        } else {
            NLM_F_CREATE | NLM_F_REPLACE
        };
        request(
            &mut h,
            RouteNetlinkMessage::NewNeighbour(fdb_message(idx, e)),
            flags,
        )
        .await
        .map_err(nl(
            "add fdb entry",
            format!("{} dst {} on {dev}", e.mac, e.dst),
            ns,
        ))
    }

    async fn delete_fdb(&self, ns: &Netns, dev: &str, e: &FdbEntry) -> Result<()> {
        let mut h = netns::handle(ns).await?;
        let Some(l) = find_link(&h, ns, dev).await? else {
            return Ok(());
        };
        match request(
            &mut h,
            RouteNetlinkMessage::DelNeighbour(fdb_message(l.header.index, e)),
            0,
        )
        .await
        {
            Err(err) if errno(&err) == Some(ENOENT) => Ok(()),
            r => r.map_err(nl(
                "delete fdb entry",
                format!("{} dst {} on {dev}", e.mac, e.dst),
                ns,
            )),
        }
    }

    async fn list_fdb(&self, ns: &Netns, dev: &str) -> Result<Vec<FdbEntry>> {
        let h = netns::handle(ns).await?;
        let idx = need_link(&h, ns, dev).await?.header.index;
        let msgs: Vec<NeighbourMessage> = h
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list fdb of", dev, ns))?;
        let mut out: Vec<FdbEntry> = msgs
            .iter()
            .filter(|m| m.header.ifindex == idx)
            .filter_map(|m| {
                let (dst, mac) = neigh_fields(m);
                Some(FdbEntry {
                    mac: mac?,
                    dst: dst?,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn invalid_route(r: &Route) -> Error {
    Error::InvalidValue {
        value: format!("{r:?}"),
        expected: "a route whose gateway has the destination's family",
    }
}

async fn addresses(h: &Handle, ns: &Netns) -> Result<Vec<(u32, IpNet, AddressMessage)>> {
    let msgs: Vec<AddressMessage> =
        h.address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("list addresses", "", ns))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| {
            // IFA_LOCAL is the interface's own address on point-to-point
            // links; IFA_ADDRESS otherwise.
            let ip = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                })
                .or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
            let net = IpNet::new(ip, m.header.prefix_len).ok()?;
            Some((m.header.index, net, m))
        })
        .collect())
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn parse_route(m: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    if m.header.table != RouteHeader::RT_TABLE_MAIN
        || m.header.kind != RouteType::Unicast
        || m.header.protocol == RouteProtocol::Kernel
        // IPv6 router-advertisement and autoconf routes belong to the
        // kernel too.
        || m.header.protocol == RouteProtocol::Ra
    {
        return None;
    }
    let mut dest = None;
    let mut gateway = None;
    let mut dev = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dest = route_addr(d),
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Oif(i) => dev = names.get(i).cloned(),
            _ => {}
        }
    }
    let dest = match dest {
        Some(d) => d,
        None if m.header.address_family == AddressFamily::Inet6 => {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        }
        None => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    };
    Some(Route {
        dest: IpNet::new(dest, m.header.destination_prefix_length).ok()?,
        gateway,
        dev,
    })
}

fn neigh_fields(m: &NeighbourMessage) -> (Option<IpAddr>, Option<MacAddr>) {
    let mut ip = None;
    let mut mac = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            // AF_BRIDGE (FDB) entries carry the remote address as raw
            // bytes, the family being the bridge's.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                ip = match b.len() {
                    4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_slice(b),
            _ => {}
        }
    }
    (ip, mac)
}

/// An FDB entry on the VXLAN device itself (`NTF_SELF`, what `bridge fdb
/// … dev vx` means), permanent so the kernel never ages it out.
fn fdb_message(ifindex: u32, e: &FdbEntry) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(e.mac.0.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(match e.dst {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    msg
}
