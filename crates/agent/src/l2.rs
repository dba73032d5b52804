//! Layer 2: one bridge per network, its VXLAN device with forwarding
//! entries from the controller (l2population: one entry per remote port,
//! and the all-zero BUM entry per remote host), or the host interface of
//! a flat network; and the network's conntrack zone.

use std::collections::{BTreeMap, BTreeSet};

use hostlink::names as hn;
use hostlink::{BridgeSpec, FdbEntry, LinkKind, VxlanInfo};

use crate::plan::{NetPlan, Plan, L2};
use crate::reconcile::{Observed, Reconciler};
use crate::Error;

impl Reconciler {
    /// Builds every network of the plan. Returns the networks that failed,
    /// with why (their ports report ERROR).
    pub(crate) async fn reconcile_networks(
        &mut self,
        plan: &Plan,
        obs: &Observed,
    ) -> BTreeMap<String, String> {
        let mut failed: BTreeMap<String, String> = plan.network_errors.clone();
        for np in plan.networks.values() {
            if let Err(e) = self.network(np, obs).await {
                let msg = format!("network {}: {}", np.id, crate::Chain(&e));
                self.warn(msg.clone());
                failed.insert(np.id.clone(), msg);
            }
        }
        failed
    }

    async fn network(&mut self, np: &NetPlan, obs: &Observed) -> Result<(), Error> {
        let ns = self.host_ns.clone();
        let br = obs.links.get(&np.bridge);
        let bridge_ok = br.is_some_and(|l| l.kind == LinkKind::Bridge && l.mtu == np.mtu && l.up);
        if !bridge_ok {
            self.changes += 1;
            self.net
                .ensure_bridge(
                    &ns,
                    &BridgeSpec {
                        name: np.bridge.clone(),
                        mtu: np.mtu,
                    },
                )
                .await?;
        }
        match &np.l2 {
            L2::Vxlan(spec) => {
                let want = VxlanInfo {
                    vni: spec.vni,
                    local: Some(spec.local),
                    port: spec.port,
                    learning: false,
                    underlay: spec.underlay.clone(),
                };
                match obs.links.get(&spec.name) {
                    Some(l) if l.kind == LinkKind::Vxlan(want.clone()) => {
                        if l.mtu != spec.mtu || !l.up {
                            self.changes += 1;
                            self.net.ensure_vxlan(&ns, spec).await?;
                        }
                        if l.master.as_deref() != Some(np.bridge.as_str()) {
                            self.changes += 1;
                            self.net
                                .set_master(&ns, &spec.name, Some(&np.bridge))
                                .await?;
                        }
                    }
                    other => {
                        // Settings of a VXLAN device cannot change in place.
                        if other.is_some() {
                            self.changes += 1;
                            self.net.delete_link(&ns, &spec.name).await?;
                        }
                        self.changes += 2;
                        self.net.ensure_vxlan(&ns, spec).await?;
                        self.net
                            .set_master(&ns, &spec.name, Some(&np.bridge))
                            .await?;
                    }
                }
                let have: BTreeSet<FdbEntry> = self
                    .net
                    .list_fdb(&ns, &spec.name)
                    .await?
                    .into_iter()
                    .collect();
                for e in have.difference(&np.fdb) {
                    self.changes += 1;
                    self.net.delete_fdb(&ns, &spec.name, e).await?;
                }
                for e in np.fdb.difference(&have) {
                    self.changes += 1;
                    self.net.append_fdb(&ns, &spec.name, e).await?;
                }
            }
            L2::Flat { interface } => {
                let Some(l) = obs.links.get(interface) else {
                    return Err(Error::Invalid(format!(
                        "flat interface {interface} does not exist"
                    )));
                };
                if l.master.as_deref() != Some(np.bridge.as_str()) {
                    self.changes += 1;
                    self.net
                        .set_master(&ns, interface, Some(&np.bridge))
                        .await?;
                }
                if !l.up {
                    self.changes += 1;
                    self.net.set_up(&ns, interface, true).await?;
                }
            }
            L2::Local => {}
        }
        if self.applied_zones.get(&np.bridge) != Some(&np.zone) {
            self.changes += 1;
            let (b, z) = (np.bridge.clone(), np.zone);
            self.fw(move |f| f.upsert_network(&b, z)).await?;
            self.applied_zones.insert(np.bridge.clone(), np.zone);
        }
        Ok(())
    }

    /// Deletes bridges and VXLAN devices of networks that left the host
    /// (only names with the agent's prefixes), and their zones.
    pub(crate) async fn collect_networks(&mut self, plan: &Plan, obs: &Observed) {
        let ns = self.host_ns.clone();
        let bridges: BTreeSet<&str> = plan.networks.values().map(|n| n.bridge.as_str()).collect();
        let vxlans: BTreeSet<&str> = plan
            .networks
            .values()
            .filter_map(|n| match &n.l2 {
                L2::Vxlan(s) => Some(s.name.as_str()),
                _ => None,
            })
            .collect();
        let mut names: Vec<&String> = obs.links.keys().collect();
        names.sort();
        for name in names {
            let stale = (name.starts_with(hn::BRIDGE_PREFIX) && !bridges.contains(name.as_str()))
                || (name.starts_with(hn::VXLAN_PREFIX) && !vxlans.contains(name.as_str()));
            if !stale {
                continue;
            }
            if name.starts_with(hn::BRIDGE_PREFIX) {
                let b = name.clone();
                self.changes += 1;
                if let Err(e) = self.fw(move |f| f.remove_network(&b)).await {
                    self.warn(format!("removing the zone of {name}: {}", crate::Chain(&e)));
                }
                self.applied_zones.remove(name);
            }
            self.changes += 1;
            if let Err(e) = self.net.delete_link(&ns, name).await {
                self.warn(format!("deleting {name}: {}", crate::Chain(&e)));
            }
        }
        // Zones of bridges that are gone but still mapped.
        let stale: Vec<String> = self
            .applied_zones
            .keys()
            .filter(|b| !bridges.contains(b.as_str()))
            .cloned()
            .collect();
        for b in stale {
            self.applied_zones.remove(&b);
            self.changes += 1;
            let bb = b.clone();
            if let Err(e) = self.fw(move |f| f.remove_network(&bb)).await {
                self.warn(format!("removing the zone of {b}: {}", crate::Chain(&e)));
            }
        }
    }
}
