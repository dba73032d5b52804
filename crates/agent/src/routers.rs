//! Routers: a namespace `fsr-<router id>` with a veth leg per attached
//! subnet (`qr-…` inside, `tap…` on the network's bridge) and a gateway
//! leg (`qg-…`) on the external network's bridge; addresses (floating IPs
//! as /32s on `qg-`, which is what lets the outside reach them — recipe
//! §5 — and new IPv4 ones on `qg-` announced by gratuitous ARP); the
//! default route via the external gateway and static routes;
//! forwarding sysctls; NAT in nftables (SNAT, floating IPs, hairpin, the
//! metadata redirect); and the metadata proxy's listener inside.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hostlink::names as hn;
use hostlink::{IpNet, LinkKind, Netns, Route, VethSpec};

use crate::metadata::{self, Site, SiteLeg};
use crate::plan::{Plan, RouterPlan};
use crate::reconcile::{Observed, Reconciler};
use crate::Error;

/// Sysctls of a router namespace (recipe, "Sysctls").
const ROUTER_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
    ("net.ipv4.conf.all.arp_ignore", "1"),
    ("net.ipv4.conf.default.arp_ignore", "1"),
    ("net.ipv4.conf.all.arp_announce", "2"),
    ("net.ipv4.conf.default.arp_announce", "2"),
];

/// Gratuitous ARP rounds for a gateway leg's new address: three, like
/// Neutron's L3 agent, so a neighbour that misses one gets another.
const GARP_ROUNDS: u32 = 3;
/// Time between two rounds.
const GARP_INTERVAL: Duration = Duration::from_millis(500);

fn is_leg(name: &str) -> bool {
    name.starts_with(hn::ROUTER_INTERNAL_PREFIX) || name.starts_with(hn::ROUTER_GATEWAY_PREFIX)
}

impl Reconciler {
    pub(crate) async fn reconcile_routers(&mut self, plan: &Plan, obs: &Observed) {
        for rp in plan.routers.values() {
            for s in &rp.skipped {
                self.warn(format!("router {}: {s}", rp.router_id));
            }
            if let Err(e) = self.router(rp, obs).await {
                self.warn(format!("router {}: {}", rp.router_id, crate::Chain(&e)));
            }
        }
    }

    async fn router(&mut self, rp: &RouterPlan, obs: &Observed) -> Result<(), Error> {
        let host = self.host_ns.clone();
        let rns = Netns::named(rp.netns.clone())?;
        if !obs.netns.contains(&rp.netns) {
            self.changes += 1;
            self.net.ensure_netns(&rp.netns).await?;
        }
        self.sysctls(&rns, ROUTER_SYSCTLS).await;

        // Legs.
        let rlinks: BTreeMap<String, hostlink::LinkInfo> = self
            .net
            .list_links(&rns)
            .await?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        for leg in &rp.legs {
            let tap = obs.links.get(&leg.tap);
            let inner = rlinks.get(&leg.name);
            let ok = matches!((tap, inner), (Some(t), Some(i))
                if t.kind == LinkKind::Veth && i.kind == LinkKind::Veth
                    && t.mtu == leg.mtu && i.mtu == leg.mtu && t.up && i.up
                    && i.mac == Some(leg.mac));
            if !ok {
                self.changes += 1;
                let spec = VethSpec {
                    name: leg.tap.clone(),
                    peer: leg.name.clone(),
                    peer_netns: rns.clone(),
                    mtu: leg.mtu,
                    peer_mac: Some(leg.mac),
                    up: true,
                };
                if let Err(e) = self.net.ensure_veth(&host, &spec).await {
                    // A half pair (or a stranger with the name) cannot be
                    // fixed in place: start the pair again.
                    tracing::info!(
                        "router {}: recreating leg {}: {}",
                        rp.router_id,
                        leg.name,
                        crate::Chain(&e)
                    );
                    self.changes += 2;
                    self.net.delete_link(&host, &leg.tap).await?;
                    self.net.delete_link(&rns, &leg.name).await?;
                    self.net.ensure_veth(&host, &spec).await?;
                }
            }
            if tap.and_then(|t| t.master.as_deref()) != Some(leg.bridge.as_str()) {
                self.changes += 1;
                self.net
                    .set_master(&host, &leg.tap, Some(&leg.bridge))
                    .await?;
            }
        }
        let legs: BTreeSet<&str> = rp.legs.iter().map(|l| l.name.as_str()).collect();
        for name in rlinks
            .keys()
            .filter(|n| is_leg(n) && !legs.contains(n.as_str()))
        {
            self.changes += 1;
            self.net.delete_link(&rns, name).await?;
        }

        // NAT before addresses: a floating IP's address must never be up
        // without its translation (the router would answer for it itself).
        if self.applied_nat.get(&rp.netns) != Some(&rp.nat) {
            let nat = rp.nat.clone();
            let unchanged = {
                let (n, d) = (nat.netns.clone(), nat.digest());
                self.fw(move |f| f.router_nat_digest(&n)).await? == Some(d)
            };
            if !unchanged {
                self.changes += 1;
                let n = nat.clone();
                self.fw(move |f| f.upsert_router_nat(&n)).await?;
            }
            self.applied_nat.insert(rp.netns.clone(), nat);
        }

        // Addresses.
        let have: BTreeSet<(String, IpNet)> = self
            .net
            .list_addresses(&rns)
            .await?
            .into_iter()
            .filter(|a| is_leg(&a.link))
            .map(|a| (a.link, a.net))
            .collect();
        let want: BTreeSet<(String, IpNet)> = rp
            .legs
            .iter()
            .flat_map(|l| l.addrs.iter().map(|a| (l.name.clone(), *a)))
            .collect();
        for (link, a) in have.difference(&want) {
            if legs.contains(link.as_str()) {
                self.changes += 1;
                self.net.delete_address(&rns, link, *a).await?;
            }
        }
        // New IPv4 addresses of the gateway leg (its own, floating IPs)
        // are announced, even when a later address fails to go in: the
        // next pass sees them as present and would not announce them.
        let gateway = rp.legs.iter().find(|l| l.gateway);
        let mut added: Vec<Ipv4Addr> = Vec::new();
        let mut failed = None;
        for (link, a) in want.difference(&have) {
            self.changes += 1;
            if let Err(e) = self.net.ensure_address(&rns, link, *a).await {
                failed = Some(e);
                break;
            }
            match a.addr() {
                IpAddr::V4(ip) if gateway.is_some_and(|g| g.name == *link) => added.push(ip),
                _ => {}
            }
        }
        if let (Some(g), false) = (gateway, added.is_empty()) {
            self.announce(&rns, &g.name, g.mac, added);
        }
        if let Some(e) = failed {
            return Err(e.into());
        }

        // Routes.
        let have: BTreeMap<IpNet, Route> = self
            .net
            .list_routes(&rns)
            .await?
            .into_iter()
            .map(|r| (r.dest, r))
            .collect();
        let want: BTreeMap<IpNet, &Route> = rp.routes.iter().map(|r| (r.dest, r)).collect();
        for (dest, r) in &want {
            if have.get(dest) != Some(*r) {
                self.changes += 1;
                self.net.ensure_route(&rns, r).await?;
            }
        }
        for dest in have.keys().filter(|d| !want.contains_key(*d)) {
            self.changes += 1;
            self.net.delete_route(&rns, *dest).await?;
        }

        // Metadata: one listener per namespace, told which leg is which.
        match rp.nat.metadata_port {
            Some(port) => {
                let site = Site::Router(
                    rp.legs
                        .iter()
                        .filter(|l| !l.gateway)
                        .flat_map(|l| {
                            l.addrs.iter().map(|a| SiteLeg {
                                local: a.addr(),
                                subnet: a.network(),
                                network_id: l.network_id.clone(),
                            })
                        })
                        .collect(),
                );
                let addr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
                self.ensure_metadata(&rns, addr, site).await?;
            }
            None => {
                if self.metadata.remove(&rp.netns).is_some() {
                    self.changes += 1;
                }
            }
        }
        Ok(())
    }

    /// Announces addresses just added to a router leg with gratuitous
    /// ARP, [`GARP_ROUNDS`] rounds [`GARP_INTERVAL`] apart, on a task of
    /// its own: the pass does not wait, and a failure is a warning in the
    /// log, never the pass's.
    fn announce(&self, ns: &Netns, leg: &str, mac: hostlink::MacAddr, ips: Vec<Ipv4Addr>) {
        let (net, ns, leg) = (self.net.clone(), ns.clone(), leg.to_string());
        tokio::spawn(async move {
            let r = net
                .announce_ipv4(&ns, &leg, mac, &ips, GARP_ROUNDS, GARP_INTERVAL)
                .await;
            if let Err(e) = r {
                let ips: Vec<String> = ips.iter().map(Ipv4Addr::to_string).collect();
                tracing::warn!(
                    "gratuitous ARP for {} on {leg} in {ns}: {}",
                    ips.join(", "),
                    crate::Chain(&e)
                );
            }
        });
    }

    /// Starts (or updates) the metadata listener of a namespace.
    pub(crate) async fn ensure_metadata(
        &mut self,
        ns: &Netns,
        addr: SocketAddr,
        site: Site,
    ) -> Result<(), Error> {
        let key = ns.name().unwrap_or_default().to_string();
        if let Some(l) = self.metadata.get(&key) {
            if l.addr == addr {
                l.update(site);
                return Ok(());
            }
        }
        self.metadata.remove(&key);
        self.changes += 1;
        let sock = self.net.listen_tcp(ns, addr).await?;
        let l = metadata::Listener::spawn(sock, addr, site, self.metadata_proxy.clone())
            .map_err(|e| Error::Invalid(format!("metadata listener in {ns}: {e}")))?;
        self.metadata.insert(key, l);
        Ok(())
    }

    /// Deletes router namespaces this agent owns that the plan does not
    /// have (closing their listeners first: a socket keeps a namespace
    /// alive).
    pub(crate) async fn collect_routers(&mut self, plan: &Plan, obs: &Observed) {
        let stale: Vec<String> = obs
            .netns
            .iter()
            .filter(|n| self.settings.scope.owns_router_netns(n) && !plan.routers.contains_key(*n))
            .cloned()
            .chain(
                self.metadata
                    .keys()
                    .filter(|n| {
                        self.settings.scope.owns_router_netns(n) && !plan.routers.contains_key(*n)
                    })
                    .cloned(),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for ns in stale {
            self.changes += 1;
            self.metadata.remove(&ns);
            self.applied_nat.remove(&ns);
            self.configured_ns.remove(&ns);
            if let Err(e) = self.net.delete_netns(&ns).await {
                self.warn(format!("deleting {ns}: {}", crate::Chain(&e)));
            }
        }
    }
}
