//! DHCP: a server written here, one per network with DHCP-enabled
//! subnets, listening inside the network's DHCP namespace (`fsd-<net>`,
//! a veth leg on the bridge holding each subnet's DHCP server address).
//!
//! It has **static leases only**: the MACs of that network's ports. Any
//! other MAC gets no answer at all (checklist 12), so a flood of
//! DISCOVERs with random MACs hands out nothing and costs one map lookup
//! each. Options: subnet mask (1), router (3), DNS (6), hostname (12, no
//! control characters — checklist 15), MTU (26), lease time (51) with T1
//! and T2, server identifier (54), and classless static routes (121) with
//! the route to 169.254.169.254 and the default route inside (RFC 3442
//! clients ignore option 3 when 121 is present).
//!
//! Why a namespace per network rather than one socket per bridge in the
//! host namespace: the server needs an address on each subnet it serves
//! (option 54, unicast renewals), tenants' subnets overlap, and the
//! isolated-network metadata proxy needs 169.254.169.254 on the same
//! leg. A namespace per network gives each its own addresses and routes,
//! exactly like a router namespace, and the agent's one process serves
//! them all (the socket is opened inside, then used from the runtime).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use hostlink::{IpNet, LinkKind, MacAddr, Netns, VethSpec};
use tokio::sync::watch;

use crate::metadata::Site;
use crate::plan::{DhcpPlan, Lease, Plan, METADATA_IP};
use crate::reconcile::{Observed, Reconciler};
use crate::{AbortOnDrop, Error};

/// Leases by MAC.
pub type Leases = BTreeMap<MacAddr, Lease>;

/// Counters of one server.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests received.
    pub received: AtomicU64,
    /// Answers sent (OFFER, ACK, NAK).
    pub answered: AtomicU64,
    /// Requests from MACs without a lease (ignored).
    pub unknown: AtomicU64,
}

/// A running server; dropping it closes its socket.
pub struct Server {
    leases: watch::Sender<Arc<Leases>>,
    /// Its counters.
    pub stats: Arc<Stats>,
    _task: AbortOnDrop,
}

impl Server {
    /// Serves `sock` (bound to port 67 inside the DHCP namespace).
    pub fn spawn(sock: std::net::UdpSocket, leases: Leases) -> std::io::Result<Server> {
        sock.set_nonblocking(true)?;
        let sock = tokio::net::UdpSocket::from_std(sock)?;
        let (tx, rx) = watch::channel(Arc::new(leases));
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let (n, from) = match sock.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("dhcp receive: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                st.received.fetch_add(1, Ordering::Relaxed);
                let leases = rx.borrow().clone();
                let Some((reply, to)) = respond(&buf[..n], &leases, &st) else {
                    tracing::debug!(%from, "dhcp: no answer");
                    continue;
                };
                tracing::debug!(%from, %to, len = reply.len(), "dhcp: answer");
                match sock.send_to(&reply, to).await {
                    Ok(_) => {
                        st.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!("dhcp send to {to}: {e}"),
                }
            }
        });
        Ok(Server {
            leases: tx,
            stats,
            _task: AbortOnDrop(task),
        })
    }

    /// Replaces the leases (no restart, no lost packet).
    pub fn update(&self, leases: &Leases) {
        self.leases.send_if_modified(|l| {
            if **l == *leases {
                false
            } else {
                *l = Arc::new(leases.clone());
                true
            }
        });
    }
}

/// Opens the server's socket: UDP 0.0.0.0:67, bound to the leg, allowed
/// to broadcast. Must run inside the DHCP namespace.
fn open_socket(leg: &str) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(leg.as_bytes()))?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 67)).into())?;
    Ok(s.into())
}

/// The answer to one packet, and where to send it; `None` to stay
/// silent (not a request, malformed, unknown MAC, another server chosen).
pub fn respond(pkt: &[u8], leases: &Leases, stats: &Stats) -> Option<(Vec<u8>, SocketAddr)> {
    let req = Message::decode(&mut Decoder::new(pkt)).ok()?;
    if req.opcode() != Opcode::BootRequest || req.hlen() != 6 {
        return None;
    }
    let mac = MacAddr::from_slice(&req.chaddr()[..6])?;
    let Some(lease) = leases.get(&mac) else {
        stats.unknown.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    };
    let kind = match req.opts().msg_type()? {
        MessageType::Discover => MessageType::Offer,
        MessageType::Request => {
            if server_id.is_some_and(|s| s != lease.server) {
                // The client chose another server's offer.
                return None;
            }
            let asked = match req.opts().get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                _ => req.ciaddr(),
            };
            if asked == lease.ip {
                MessageType::Ack
            } else {
                MessageType::Nak
            }
        }
        MessageType::Inform => MessageType::Ack,
        _ => return None,
    };
    let inform = req.opts().msg_type() == Some(MessageType::Inform);
    let yiaddr = if kind == MessageType::Nak || inform {
        Ipv4Addr::UNSPECIFIED
    } else {
        lease.ip
    };
    let mut m = Message::new_with_id(
        req.xid(),
        req.ciaddr(),
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr(),
        &req.chaddr()[..6],
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_flags(req.flags());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(lease.server));
    if kind != MessageType::Nak {
        if !inform {
            o.insert(DhcpOption::AddressLeaseTime(lease.lease_time));
            o.insert(DhcpOption::Renewal(lease.lease_time / 2));
            o.insert(DhcpOption::Rebinding(lease.lease_time / 8 * 7));
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(lease.prefix))
            .unwrap_or(0);
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::from(mask)));
        o.insert(DhcpOption::BroadcastAddr(Ipv4Addr::from(
            u32::from(lease.ip) | !mask,
        )));
        if let Some(r) = lease.router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        if !lease.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(lease.dns.clone()));
        }
        o.insert(DhcpOption::InterfaceMtu(lease.mtu));
        let routes: Vec<(ipnet::Ipv4Net, Ipv4Addr)> = lease
            .routes
            .iter()
            .filter_map(|(d, p, gw)| ipnet::Ipv4Net::new(*d, *p).ok().map(|n| (n, *gw)))
            .collect();
        if !routes.is_empty() {
            o.insert(DhcpOption::ClasslessStaticRoute(routes));
        }
        if let Some(h) = &lease.hostname {
            o.insert(DhcpOption::Hostname(h.clone()));
        }
    }
    let mut out = Vec::with_capacity(400);
    m.encode(&mut Encoder::new(&mut out)).ok()?;
    // BOOTP's minimum message size; some clients drop shorter ones.
    if out.len() < 300 {
        out.resize(300, 0);
    }
    // RFC 2131 4.1: renewing clients (ciaddr set) get unicast; others get
    // broadcast (they have no address to receive unicast on, and the
    // server keeps no ARP entries for them).
    let to = if !req.giaddr().is_unspecified() {
        SocketAddrV4::new(req.giaddr(), 67)
    } else if !req.ciaddr().is_unspecified() && kind != MessageType::Nak {
        SocketAddrV4::new(req.ciaddr(), 68)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    };
    Some((out, SocketAddr::V4(to)))
}

impl Reconciler {
    pub(crate) async fn reconcile_dhcp(&mut self, plan: &Plan, obs: &Observed) {
        for dp in plan.dhcp.values() {
            if let Err(e) = self.dhcp_ns(dp, obs).await {
                self.warn(format!(
                    "DHCP of network {}: {}",
                    dp.network_id,
                    crate::Chain(&e)
                ));
            }
        }
    }

    async fn dhcp_ns(&mut self, dp: &DhcpPlan, obs: &Observed) -> Result<(), Error> {
        let host = self.host_ns.clone();
        let ns = Netns::named(dp.netns.clone())?;
        if !obs.netns.contains(&dp.netns) {
            self.changes += 1;
            self.net.ensure_netns(&dp.netns).await?;
        }
        let inner: BTreeMap<String, hostlink::LinkInfo> = self
            .net
            .list_links(&ns)
            .await?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let tap = obs.links.get(&dp.host_leg);
        let leg = inner.get(&dp.ns_leg);
        let ok = matches!((tap, leg), (Some(t), Some(i))
            if t.kind == LinkKind::Veth && i.kind == LinkKind::Veth
                && t.mtu == dp.mtu && i.mtu == dp.mtu && t.up && i.up && i.mac == Some(dp.mac));
        if !ok {
            self.changes += 1;
            let spec = VethSpec {
                name: dp.host_leg.clone(),
                peer: dp.ns_leg.clone(),
                peer_netns: ns.clone(),
                mtu: dp.mtu,
                peer_mac: Some(dp.mac),
                up: true,
            };
            if self.net.ensure_veth(&host, &spec).await.is_err() {
                self.changes += 2;
                self.net.delete_link(&host, &dp.host_leg).await?;
                self.net.delete_link(&ns, &dp.ns_leg).await?;
                self.net.ensure_veth(&host, &spec).await?;
            }
        }
        if tap.and_then(|t| t.master.as_deref()) != Some(dp.bridge.as_str()) {
            self.changes += 1;
            self.net
                .set_master(&host, &dp.host_leg, Some(&dp.bridge))
                .await?;
        }
        let have: BTreeSet<IpNet> = self
            .net
            .list_addresses(&ns)
            .await?
            .into_iter()
            .filter(|a| a.link == dp.ns_leg)
            .map(|a| a.net)
            .collect();
        let want: BTreeSet<IpNet> = dp.addrs.iter().copied().collect();
        for a in have.difference(&want) {
            self.changes += 1;
            self.net.delete_address(&ns, &dp.ns_leg, *a).await?;
        }
        for a in want.difference(&have) {
            self.changes += 1;
            self.net.ensure_address(&ns, &dp.ns_leg, *a).await?;
        }
        match self.dhcp.get(&dp.netns) {
            Some(s) => s.update(&dp.leases),
            None if !self.serve_dhcp => {}
            None => {
                self.changes += 1;
                let leg = dp.ns_leg.clone();
                let sock = hostlink::netns::run_in_async(&ns, move || open_socket(&leg))
                    .await?
                    .map_err(|e| Error::Invalid(format!("DHCP socket in {ns}: {e}")))?;
                let s = Server::spawn(sock, dp.leases.clone())
                    .map_err(|e| Error::Invalid(format!("DHCP server in {ns}: {e}")))?;
                self.dhcp.insert(dp.netns.clone(), s);
            }
        }
        if dp.metadata {
            let addr = SocketAddr::new(IpAddr::V4(METADATA_IP), 80);
            self.ensure_metadata(&ns, addr, Site::Network(dp.network_id.clone()))
                .await?;
        } else if self.metadata.remove(&dp.netns).is_some() {
            self.changes += 1;
        }
        Ok(())
    }

    /// Stops servers and deletes DHCP namespaces and legs the plan does
    /// not have.
    pub(crate) async fn collect_dhcp(&mut self, plan: &Plan, obs: &Observed) {
        let scope = self.settings.scope.clone();
        let stale: BTreeSet<String> = obs
            .netns
            .iter()
            .chain(self.dhcp.keys())
            .filter(|n| scope.owns_dhcp_netns(n) && !plan.dhcp.contains_key(*n))
            .cloned()
            .collect();
        for ns in stale {
            self.changes += 1;
            self.dhcp.remove(&ns);
            self.metadata.remove(&ns);
            if let Err(e) = self.net.delete_netns(&ns).await {
                self.warn(format!("deleting {ns}: {}", crate::Chain(&e)));
            }
        }
        let legs: BTreeSet<&str> = plan.dhcp.values().map(|d| d.host_leg.as_str()).collect();
        let host = self.host_ns.clone();
        let mut names: Vec<&String> = obs
            .links
            .keys()
            .filter(|n| n.starts_with(crate::names::DHCP_PREFIX) && !legs.contains(n.as_str()))
            .collect();
        names.sort();
        for n in names {
            self.changes += 1;
            if let Err(e) = self.net.delete_link(&host, n).await {
                self.warn(format!("deleting {n}: {}", crate::Chain(&e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            mac: "fa:16:3e:00:00:01".parse().unwrap(),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix: 24,
            server: Ipv4Addr::new(10, 0, 0, 2),
            router: Some(Ipv4Addr::new(10, 0, 0, 1)),
            dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
            routes: vec![
                (METADATA_IP, 32, Ipv4Addr::new(10, 0, 0, 1)),
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 0, 0, 1)),
            ],
            hostname: Some("vm-1".into()),
            mtu: 1450,
            lease_time: 86400,
        }
    }

    fn discover(mac: [u8; 6]) -> Vec<u8> {
        let mut m = Message::new_with_id(
            7,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn known_macs_get_every_option_and_others_nothing() {
        let l = lease();
        let leases: Leases = [(l.mac, l.clone())].into_iter().collect();
        let st = Stats::default();
        let (out, to) = respond(&discover(l.mac.0), &leases, &st).unwrap();
        assert_eq!(to, "255.255.255.255:68".parse().unwrap());
        let m = Message::decode(&mut Decoder::new(&out)).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.yiaddr(), l.ip);
        assert_eq!(m.xid(), 7);
        let o = m.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Offer));
        assert!(
            matches!(o.get(OptionCode::SubnetMask), Some(DhcpOption::SubnetMask(x)) if *x == Ipv4Addr::new(255,255,255,0))
        );
        assert!(matches!(
            o.get(OptionCode::InterfaceMtu),
            Some(DhcpOption::InterfaceMtu(1450))
        ));
        assert!(
            matches!(o.get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "vm-1")
        );
        match o.get(OptionCode::ClasslessStaticRoute) {
            Some(DhcpOption::ClasslessStaticRoute(r)) => {
                assert_eq!(r.len(), 2);
                assert_eq!(r[0].0.to_string(), "169.254.169.254/32");
                assert_eq!(r[1].0.to_string(), "0.0.0.0/0");
            }
            other => panic!("{other:?}"),
        }
        // Unknown MAC: silence.
        assert!(respond(&discover([2, 0, 0, 0, 0, 9]), &leases, &st).is_none());
        assert_eq!(st.unknown.load(Ordering::Relaxed), 1);
        // Garbage: silence.
        assert!(respond(b"\x01\x02", &leases, &st).is_none());
    }

    #[test]
    fn requests_for_another_address_are_refused() {
        let l = lease();
        let leases: Leases = [(l.mac, l.clone())].into_iter().collect();
        let mut m = Message::new_with_id(
            9,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &l.mac.0,
        );
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        m.opts_mut()
            .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 99)));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        let (out, _) = respond(&b, &leases, &Stats::default()).unwrap();
        let r = Message::decode(&mut Decoder::new(&out)).unwrap();
        assert_eq!(r.opts().msg_type(), Some(MessageType::Nak));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(l.ip));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        let (out, _) = respond(&b, &leases, &Stats::default()).unwrap();
        let r = Message::decode(&mut Decoder::new(&out)).unwrap();
        assert_eq!(r.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(r.yiaddr(), l.ip);
    }
}
