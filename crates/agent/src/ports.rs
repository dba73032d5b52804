//! Ports: a port is wired when its device (`tapXXXXXXXXXXX`, made by the
//! compute driver, or a router/DHCP leg made by the agent) exists, has
//! the network's MTU, is on the network's bridge and is up, and — unless
//! it is trusted (`network:*`) or has port security off — its rules are
//! loaded (its elements in the anti-spoofing sets and verdict maps, and
//! the chains of its security-group set if it is the first port with
//! those groups: one nft transaction).
//!
//! Rules are installed as soon as the port is desired, whether or not the
//! device exists yet (the maps are keyed by interface name), and a device
//! joins its bridge only once its rules are in: there is no window in
//! which a VM is on the bridge unfiltered.
//!
//! Marks come from the persistent [`crate::marks::MarkStore`], saved
//! before any rule using a new mark is installed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hostlink::names as hn;
use hostlink::LinkInfo;
use netmodel::PortStatus;

use crate::plan::{Plan, PortPlan};
use crate::reconcile::{Observed, Reconciler};
use crate::Error;

type Statuses = BTreeMap<String, (PortStatus, Option<String>)>;
type Status = (PortStatus, Option<String>);

/// Logs how long a scope took, at trace level.
struct TraceTime(&'static str, std::time::Instant);

impl TraceTime {
    fn new(what: &'static str) -> Self {
        TraceTime(what, std::time::Instant::now())
    }
}

impl Drop for TraceTime {
    fn drop(&mut self) {
        tracing::trace!(took = ?self.1.elapsed(), "{}", self.0);
    }
}

fn absent(pp: &PortPlan) -> Status {
    (
        PortStatus::Down,
        Some(format!("device {} does not exist", pp.device)),
    )
}

fn admin_down() -> Status {
    (PortStatus::Down, Some("administratively down".into()))
}

fn outcome(pp: &PortPlan, r: Result<(), Error>) -> Status {
    match r {
        Ok(()) => (PortStatus::Active, None),
        // Gone (or not there yet): the next link event brings it back.
        Err(Error::Net(hostlink::Error::NoSuchLink { .. })) => absent(pp),
        Err(e) => (PortStatus::Error, Some(crate::Chain(&e).to_string())),
    }
}

impl Reconciler {
    /// The rules of a port with its marks filled in.
    fn marked_rules(&mut self, pp: &PortPlan) -> Result<Option<nft::PortRules>, Error> {
        let Some(rules) = &pp.rules else {
            return Ok(None);
        };
        if !rules.port_security {
            return Ok(None);
        }
        let ids: Vec<&str> = pp.rule_ids.iter().map(String::as_str).collect();
        let m = self.marks.port(&pp.device, &ids)?;
        let mut r = rules.clone();
        r.mark = m.mark;
        for (rule, id) in r.rules.iter_mut().zip(&pp.rule_ids) {
            rule.ct_mark = m.rules[id];
        }
        Ok(Some(r))
    }

    /// Loads what the firewall has installed (deep passes): digests of
    /// ports that match the plan count as applied; installed marks the
    /// mark store does not know are kept from being handed out.
    async fn read_installed(&mut self) -> Result<BTreeMap<String, nft::InstalledPort>, Error> {
        let installed = self.fw(|f| f.list_ports()).await?;
        self.marks
            .reserve_installed(installed.iter().map(|p| (p.mark, p.ct_marks.as_slice())));
        let map: BTreeMap<String, nft::InstalledPort> =
            installed.into_iter().map(|p| (p.name.clone(), p)).collect();
        self.applied_ports.retain(|d, r| {
            map.get(d)
                .is_some_and(|i| i.digest == r.digest() && i.mark == r.mark)
        });
        self.fw_ports = map.keys().cloned().collect();
        self.fw_ports.extend(self.applied_ports.keys().cloned());
        Ok(map)
    }

    /// Converges `ports`. With `links` (a full pass) device state comes
    /// from the listing; without (a light pass) each device is converged
    /// by name with idempotent calls, which costs the same whatever the
    /// number of links on the host.
    pub(crate) async fn reconcile_ports(
        &mut self,
        ports: &[&PortPlan],
        links: Option<&HashMap<String, LinkInfo>>,
        net_errors: &BTreeMap<String, String>,
        deep: bool,
    ) -> Result<Statuses, Error> {
        let installed = if deep {
            Some(self.read_installed().await?)
        } else {
            None
        };
        // Marks first, saved before any rule that uses them goes in.
        let mut wanted: BTreeMap<String, Option<nft::PortRules>> = BTreeMap::new();
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        // Ports whose rules cannot be applied: cut off (fail closed).
        let mut unruled: BTreeMap<String, String> = BTreeMap::new();
        for pp in ports.iter().copied() {
            if let Some(e) = pp.error.as_ref().or_else(|| net_errors.get(&pp.network_id)) {
                failed.insert(pp.device.clone(), e.clone());
                continue;
            }
            match self.marked_rules(pp) {
                Ok(r) => {
                    // Rules naming a group whose set could not be updated
                    // may admit a member that left: cut off.
                    let bad_group = r.as_ref().and_then(|r| {
                        r.rules.iter().find_map(|sr| match &sr.remote {
                            nft::Remote::Group(g) => self.group_errors.get(g),
                            _ => None,
                        })
                    });
                    if let Some(e) = bad_group {
                        unruled.insert(pp.device.clone(), e.clone());
                        continue;
                    }
                    wanted.insert(pp.device.clone(), r);
                }
                Err(e) => {
                    unruled.insert(pp.device.clone(), format!("rules: {}", crate::Chain(&e)));
                }
            }
        }
        let t = std::time::Instant::now();
        if let Err(e) = self.marks.save() {
            // No rule with an unsaved mark goes in: the ports whose rules
            // change wait, cut off; the others stay as they are.
            let msg = format!("rules: {}", crate::Chain(&Error::from(e)));
            wanted.retain(|dev, r| {
                let same = r.is_none() || self.applied_ports.get(dev) == r.as_ref();
                if !same {
                    unruled.insert(dev.clone(), msg.clone());
                }
                same
            });
        }
        tracing::trace!(took = ?t.elapsed(), "marks saved");

        let mut statuses = Statuses::new();
        for pp in ports.iter().copied() {
            if let Some(e) = failed.get(&pp.device) {
                statuses.insert(pp.port_id.clone(), (PortStatus::Error, Some(e.clone())));
                continue;
            }
            if let Some(e) = unruled.get(&pp.device) {
                let st = self.cut_off(pp, e.clone()).await;
                statuses.insert(pp.port_id.clone(), st);
                continue;
            }
            let rules = wanted.get(&pp.device).cloned().flatten();
            // 1. Rules.
            let rules_ok = match &rules {
                None => {
                    if self.fw_ports.contains(&pp.device)
                        || installed
                            .as_ref()
                            .is_some_and(|i| i.contains_key(&pp.device))
                    {
                        self.changes += 1;
                        let d = pp.device.clone();
                        if let Err(e) = self.fw(move |f| f.remove_port(&d)).await {
                            self.warn(format!(
                                "removing the rules of {}: {}",
                                pp.device,
                                crate::Chain(&e)
                            ));
                        } else {
                            self.fw_ports.remove(&pp.device);
                        }
                    }
                    self.applied_ports.remove(&pp.device);
                    self.marks.forget(&pp.device);
                    true
                }
                Some(r) => {
                    let same_installed = installed
                        .as_ref()
                        .and_then(|i| i.get(&pp.device))
                        .is_some_and(|i| i.digest == r.digest() && i.mark == r.mark);
                    if same_installed {
                        self.applied_ports.insert(pp.device.clone(), r.clone());
                    }
                    if self.applied_ports.get(&pp.device) == Some(r) {
                        true
                    } else {
                        self.changes += 1;
                        let rr = r.clone();
                        self.fw_ports.insert(pp.device.clone());
                        let t = std::time::Instant::now();
                        let res = self.fw(move |f| f.upsert_port(&rr)).await;
                        tracing::trace!(device = %pp.device, took = ?t.elapsed(), "nft upsert");
                        match res {
                            Ok(()) => {
                                self.applied_ports.insert(pp.device.clone(), r.clone());
                                true
                            }
                            Err(e) => {
                                self.applied_ports.remove(&pp.device);
                                let st = self
                                    .cut_off(pp, format!("rules: {}", crate::Chain(&e)))
                                    .await;
                                statuses.insert(pp.port_id.clone(), st);
                                false
                            }
                        }
                    }
                }
            };
            if !rules_ok {
                continue;
            }
            // 2. The device.
            let status = match links {
                Some(links) => self.wire_listed(pp, links.get(&pp.device)).await,
                None => self.wire_by_name(pp).await,
            };
            statuses.insert(pp.port_id.clone(), status);
        }
        Ok(statuses)
    }

    /// Fails closed: a port whose rules could not be applied must not
    /// forward with the rules it had (a revoked rule would keep admitting
    /// traffic). Its device leaves the bridge and goes down until a later
    /// pass applies its rules and wires it again (the agent retries, see
    /// `Reconciler::rules_failed`); it is reported `ERROR` meanwhile.
    async fn cut_off(&mut self, pp: &PortPlan, why: String) -> Status {
        self.rules_failed = true;
        let ns = self.host_ns.clone();
        let mut msg = format!("{why}; the port forwards nothing until its rules apply");
        if !pp.agent_made {
            for r in [
                self.net.set_master(&ns, &pp.device, None).await,
                self.net.set_up(&ns, &pp.device, false).await,
            ] {
                match r {
                    Ok(()) | Err(hostlink::Error::NoSuchLink { .. }) => {}
                    Err(e) => {
                        let e = format!("cutting {} off: {}", pp.device, crate::Chain(&e));
                        self.warn(e.clone());
                        msg = format!("{msg}; {e}");
                    }
                }
            }
        }
        tracing::warn!(port = %pp.port_id, device = %pp.device, "{msg}");
        (PortStatus::Error, Some(msg))
    }

    /// Wires a device whose state was listed.
    async fn wire_listed(&mut self, pp: &PortPlan, link: Option<&LinkInfo>) -> Status {
        let ns = self.host_ns.clone();
        let Some(link) = link else {
            return absent(pp);
        };
        if !pp.admin_up {
            if link.master.is_some() && !pp.agent_made {
                self.changes += 1;
                if let Err(e) = self.net.set_master(&ns, &pp.device, None).await {
                    self.warn(format!("detaching {}: {}", pp.device, crate::Chain(&e)));
                }
            }
            return admin_down();
        }
        let r: Result<(), Error> = async {
            if link.mtu != pp.mtu {
                self.changes += 1;
                self.net.set_mtu(&ns, &pp.device, pp.mtu).await?;
            }
            if link.master.as_deref() != Some(pp.bridge.as_str()) {
                self.changes += 1;
                self.net
                    .set_master(&ns, &pp.device, Some(&pp.bridge))
                    .await?;
            }
            if !link.up {
                self.changes += 1;
                self.net.set_up(&ns, &pp.device, true).await?;
            }
            Ok(())
        }
        .await;
        outcome(pp, r)
    }

    /// Wires a device by name: each call looks the device up and does
    /// nothing when it already has the setting.
    async fn wire_by_name(&mut self, pp: &PortPlan) -> Status {
        let _t = TraceTime::new("wire by name");
        let ns = self.host_ns.clone();
        if !pp.admin_up {
            if !pp.agent_made {
                match self.net.set_master(&ns, &pp.device, None).await {
                    Ok(()) | Err(hostlink::Error::NoSuchLink { .. }) => {}
                    Err(e) => self.warn(format!("detaching {}: {}", pp.device, crate::Chain(&e))),
                }
            }
            return admin_down();
        }
        let r = self
            .net
            .wire_port(&ns, &pp.device, &pp.bridge, pp.mtu)
            .await
            .map_err(Error::from);
        outcome(pp, r)
    }

    /// Removes one port that left the plan (light passes): its rules, its
    /// marks, and — for a VM tap — its place on the bridge.
    pub(crate) async fn drop_port(&mut self, pp: &PortPlan) {
        if self.fw_ports.contains(&pp.device) {
            self.changes += 1;
            let d = pp.device.clone();
            match self.fw(move |f| f.remove_port(&d)).await {
                Ok(()) => {
                    self.fw_ports.remove(&pp.device);
                    self.applied_ports.remove(&pp.device);
                }
                Err(e) => self.warn(format!(
                    "removing the rules of {}: {}",
                    pp.device,
                    crate::Chain(&e)
                )),
            }
        }
        self.marks.forget(&pp.device);
        if !pp.agent_made && pp.device.starts_with(hn::TAP_PREFIX) {
            let ns = self.host_ns.clone();
            match self.net.set_master(&ns, &pp.device, None).await {
                Ok(()) | Err(hostlink::Error::NoSuchLink { .. }) => {}
                Err(e) => self.warn(format!("detaching {}: {}", pp.device, crate::Chain(&e))),
            }
        }
    }

    /// Removes rules of ports that left, forgets their marks, and detaches
    /// from the agent's bridges the taps nobody wants (VM taps belong to
    /// the compute driver: they are detached, never deleted).
    pub(crate) async fn collect_ports(&mut self, plan: &Plan, obs: &Observed) {
        let stale: Vec<String> = self
            .fw_ports
            .iter()
            .filter(|d| {
                plan.ports
                    .get(*d)
                    .is_none_or(|p| p.rules.as_ref().is_none_or(|r| !r.port_security))
            })
            .cloned()
            .collect();
        for d in stale {
            self.changes += 1;
            let dd = d.clone();
            match self.fw(move |f| f.remove_port(&dd)).await {
                Ok(()) => {
                    self.fw_ports.remove(&d);
                    self.applied_ports.remove(&d);
                }
                Err(e) => self.warn(format!("removing the rules of {d}: {}", crate::Chain(&e))),
            }
        }
        for d in self.marks.devices() {
            if !plan.ports.contains_key(&d) {
                self.marks.forget(&d);
            }
        }
        let wanted: BTreeSet<String> = plan.wanted_taps();
        let ns = self.host_ns.clone();
        let mut names: Vec<&String> = obs.links.keys().collect();
        names.sort();
        for name in names {
            let l = &obs.links[name];
            let ours = l
                .master
                .as_deref()
                .is_some_and(|m| m.starts_with(hn::BRIDGE_PREFIX));
            if ours && name.starts_with(hn::TAP_PREFIX) && !wanted.contains(name) {
                tracing::debug!(device = %name, "detaching a tap nobody wants");
                self.changes += 1;
                // Gone meanwhile (its VM was deleted): nothing to detach.
                match self.net.set_master(&ns, name, None).await {
                    Ok(()) | Err(hostlink::Error::NoSuchLink { .. }) => {}
                    Err(e) => self.warn(format!("detaching {name}: {}", crate::Chain(&e))),
                }
            }
        }
    }
}
