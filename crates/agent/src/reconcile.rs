//! One reconcile pass: read what the host has, compare it with the plan,
//! change only what differs, then remove what no longer belongs.
//!
//! The pass is the same at start-up, after a crash and on every change:
//! it never trusts memory about the kernel except for the firewall's
//! per-port digests between two deep passes (reading 2,000 ports' rules
//! back costs far more than one port's update). A **deep** pass (start-up
//! and every resync interval) reads those back too.
//!
//! Order: L2 (bridges, VXLAN, zones) → remote groups → routers → DHCP →
//! ports (rules before the bridge: a device never joins its bridge before
//! its rules are loaded) → garbage (ports, routers, DHCP, groups, then
//! networks, whose bridges everything else hangs on).
//!
//! The sub-reconcilers live in `l2`, `ports`,
//! `secgroups`, `routers` and [`crate::dhcp`] as
//! `impl Reconciler` blocks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use hostlink::{HostNet, LinkInfo, Netns};
use netmodel::{HostState, NetworkControl, PortStatus};
use nft::Firewall;

use crate::marks::MarkStore;
use crate::plan::{Plan, PlanSettings};
use crate::{dhcp, metadata, Error};

/// What the host has, read at the start of a pass.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Links of the host namespace by name.
    pub links: HashMap<String, LinkInfo>,
    /// Named namespaces.
    pub netns: BTreeSet<String>,
}

/// The outcome of a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Mutating driver calls made (0 when the host already matched).
    pub changes: usize,
    /// Status of every port of the plan, by port id — or, in a `partial`
    /// report, of the ports the pass looked at.
    pub statuses: BTreeMap<String, (PortStatus, Option<String>)>,
    /// A light pass's report: `statuses` holds only the ports it looked
    /// at, `removed` the ports that left; every other port kept its
    /// status ([`crate::Agent::statuses`] has them all).
    pub partial: bool,
    /// Ports that left the plan (partial reports).
    pub removed: Vec<String>,
    /// Port id → device of the ports in `statuses` and `removed`
    /// (partial reports).
    pub devices: BTreeMap<String, String>,
    /// Problems that are not any one port's (a router leg on an absent
    /// network, a failed garbage collection …).
    pub warnings: Vec<String>,
}

/// The reconcilers' shared state: drivers, marks and what was applied.
pub(crate) struct Reconciler {
    pub host_ns: Netns,
    pub settings: PlanSettings,
    pub net: Arc<dyn HostNet>,
    pub fw: Arc<dyn Firewall>,
    pub marks: MarkStore,
    /// Port rules known to be installed (device → rules with marks).
    pub applied_ports: HashMap<String, nft::PortRules>,
    /// Devices the firewall may have rules for (installed or applied).
    pub fw_ports: BTreeSet<String>,
    pub applied_zones: HashMap<String, u16>,
    pub applied_groups: HashMap<String, nft::RemoteGroup>,
    pub applied_nat: HashMap<String, nft::RouterNat>,
    /// Namespaces whose sysctls this process has set.
    pub configured_ns: HashSet<String>,
    pub base_ready: bool,
    pub metadata: HashMap<String, metadata::Listener>,
    /// What every metadata listener shares (limits and cache).
    pub metadata_proxy: Arc<metadata::Proxy>,
    pub dhcp: HashMap<String, dhcp::Server>,
    pub changes: usize,
    pub warnings: Vec<String>,
    pub serve_dhcp: bool,
    pub passes: u64,
    /// The plan of the last pass, the state it was built from, and what
    /// it found.
    pub last_plan: Option<Plan>,
    pub last_state: Option<Arc<HostState>>,
    /// Revision of the state `last_plan` was built from.
    pub last_revision: Option<u64>,
    pub last_statuses: BTreeMap<String, (PortStatus, Option<String>)>,
    pub last_net_errors: BTreeMap<String, String>,
    /// Set by a pass that could not apply some port's rules (those ports
    /// are cut off): the agent retries with a full pass soon.
    pub rules_failed: bool,
    /// Remote groups whose members the last `reconcile_groups` could not
    /// update, with why: ports whose rules name them are cut off.
    pub group_errors: BTreeMap<String, String>,
}

impl Reconciler {
    pub fn new(
        host_ns: Netns,
        settings: PlanSettings,
        net: Arc<dyn HostNet>,
        fw: Arc<dyn Firewall>,
        control: Arc<dyn NetworkControl>,
        marks: MarkStore,
        metadata_limits: metadata::Limits,
    ) -> Self {
        Reconciler {
            metadata_proxy: metadata::Proxy::new(control, metadata_limits),
            host_ns,
            settings,
            net,
            fw,
            marks,
            applied_ports: HashMap::new(),
            fw_ports: BTreeSet::new(),
            applied_zones: HashMap::new(),
            applied_groups: HashMap::new(),
            applied_nat: HashMap::new(),
            configured_ns: HashSet::new(),
            base_ready: false,
            metadata: HashMap::new(),
            dhcp: HashMap::new(),
            changes: 0,
            warnings: Vec::new(),
            serve_dhcp: true,
            passes: 0,
            last_plan: None,
            last_state: None,
            last_revision: None,
            last_statuses: BTreeMap::new(),
            last_net_errors: BTreeMap::new(),
            rules_failed: false,
            group_errors: BTreeMap::new(),
        }
    }

    /// Runs a firewall call on the blocking pool (the driver runs `nft`).
    pub async fn fw<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Firewall) -> nft::Result<T> + Send + 'static,
    ) -> nft::Result<T> {
        let fw = self.fw.clone();
        match tokio::task::spawn_blocking(move || f(fw.as_ref())).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    pub async fn observe(&self) -> Result<Observed, Error> {
        let links = self
            .net
            .list_links(&self.host_ns)
            .await?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let netns = self.net.list_netns().await?.into_iter().collect();
        Ok(Observed { links, netns })
    }

    pub fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.push(msg);
    }

    /// Sets sysctls of a namespace once per process (they are cheap to
    /// set, but each write costs a thread; a restart sets them again).
    pub async fn sysctls(&mut self, ns: &Netns, kv: &[(&str, &str)]) {
        let key = ns.name().unwrap_or("").to_string();
        if self.configured_ns.contains(&key) {
            return;
        }
        let mut ok = true;
        for (k, v) in kv {
            match self.net.get_sysctl(ns, k).await {
                Ok(cur) if cur == *v => continue,
                _ => {}
            }
            self.changes += 1;
            if let Err(e) = self.net.set_sysctl(ns, k, v).await {
                ok = false;
                self.warn(format!("sysctl {k}={v} in {ns}: {}", crate::Chain(&e)));
            }
        }
        if ok {
            self.configured_ns.insert(key);
        }
    }

    /// Host-wide preparation: firewall base tables and the host
    /// namespace's sysctls (recipe: loose TCP pickup off, bridged IP
    /// through the inet hooks).
    async fn prepare(&mut self) -> Result<(), Error> {
        if !self.base_ready {
            self.fw(|f| f.ensure_base()).await?;
            self.base_ready = true;
        }
        let ns = self.host_ns.clone();
        self.sysctls(
            &ns,
            &[
                ("net.netfilter.nf_conntrack_tcp_loose", "0"),
                ("net.bridge.bridge-nf-call-iptables", "1"),
                ("net.bridge.bridge-nf-call-ip6tables", "1"),
            ],
        )
        .await;
        Ok(())
    }

    /// One pass. Per-object failures become port statuses or warnings; an
    /// error is returned only when the host cannot be read at all.
    pub async fn pass(&mut self, state: &Arc<HostState>, deep: bool) -> Result<PassReport, Error> {
        self.changes = 0;
        self.warnings.clear();
        if deep {
            self.base_ready = false;
            self.configured_ns.clear();
        }
        let plan = Plan::build(state, &self.settings);
        let empty = plan.networks.is_empty() && plan.ports.is_empty() && plan.routers.is_empty();
        if !empty {
            self.prepare().await?;
        }
        for (n, e) in &plan.network_errors {
            self.warn(format!("network {n}: {e}"));
        }
        let t0 = std::time::Instant::now();
        let mut obs = self.observe().await?;
        let t_obs = t0.elapsed();
        let net_errors = self.reconcile_networks(&plan, &obs).await;
        self.reconcile_groups(&plan).await;
        let t_l2 = t0.elapsed();
        self.reconcile_routers(&plan, &obs).await;
        let t_routers = t0.elapsed();
        self.reconcile_dhcp(&plan, &obs).await;
        let t_dhcp = t0.elapsed();
        if self.changes > 0 {
            obs = self.observe().await?;
        }
        let all: Vec<&crate::plan::PortPlan> = plan.ports.values().collect();
        let statuses = self
            .reconcile_ports(&all, Some(&obs.links), &net_errors, deep)
            .await?;
        let t_ports = t0.elapsed();
        tracing::trace!(
            ?t_obs,
            ?t_l2,
            ?t_routers,
            ?t_dhcp,
            ?t_ports,
            "pass phases (cumulative)"
        );
        self.collect_ports(&plan, &obs).await;
        self.collect_routers(&plan, &obs).await;
        self.collect_dhcp(&plan, &obs).await;
        self.collect_groups(&plan).await;
        self.collect_networks(&plan, &obs).await;
        // On an agent's first pass, tables may be left from before.
        if empty && (self.base_ready || self.passes == 0) {
            // Nothing left to filter: the host goes back to having no
            // tables of ours (they come back with the first network).
            self.changes += 1;
            match self.fw(|f| f.delete_all()).await {
                Ok(()) => {
                    self.base_ready = false;
                    self.applied_ports.clear();
                    self.applied_zones.clear();
                    self.applied_groups.clear();
                    self.fw_ports.clear();
                    for g in self.marks.state().groups.clone() {
                        self.marks.note_group(&g, false);
                    }
                }
                Err(e) => self.warn(format!("deleting the host tables: {}", crate::Chain(&e))),
            }
        }
        if let Err(e) = self.marks.save() {
            self.warn(format!("saving marks: {}", crate::Chain(&e)));
        }
        self.passes += 1;
        self.last_net_errors = net_errors;
        self.last_statuses = statuses.clone();
        self.last_plan = Some(plan);
        self.last_state = Some(state.clone());
        self.last_revision = Some(state.revision);
        Ok(PassReport {
            changes: self.changes,
            statuses,
            warnings: std::mem::take(&mut self.warnings),
            ..PassReport::default()
        })
    }

    /// Every port's status after the last pass, by port id.
    pub fn statuses(&self) -> &BTreeMap<String, (PortStatus, Option<String>)> {
        &self.last_statuses
    }

    /// Converges `touched` (light and device passes), keeps the statuses
    /// and builds the partial report. On an error the plan is dropped:
    /// the next pass is a full one.
    async fn partial_pass(
        &mut self,
        plan: Plan,
        touched: &[String],
        removed: Vec<crate::plan::PortPlan>,
    ) -> Result<PassReport, Error> {
        let ports: Vec<&crate::plan::PortPlan> =
            touched.iter().filter_map(|d| plan.ports.get(d)).collect();
        let net_errors = std::mem::take(&mut self.last_net_errors);
        let r = self.reconcile_ports(&ports, None, &net_errors, false).await;
        self.last_net_errors = net_errors;
        let updated = r?;
        let mut devices: BTreeMap<String, String> = ports
            .iter()
            .map(|pp| (pp.port_id.clone(), pp.device.clone()))
            .collect();
        let mut gone = Vec::new();
        for pp in &removed {
            self.drop_port(pp).await;
            // A port whose device changed is both removed and updated.
            if !updated.contains_key(&pp.port_id) {
                self.last_statuses.remove(&pp.port_id);
                devices.insert(pp.port_id.clone(), pp.device.clone());
                gone.push(pp.port_id.clone());
            }
        }
        for (id, st) in &updated {
            self.last_statuses.insert(id.clone(), st.clone());
        }
        self.last_plan = Some(plan);
        Ok(PassReport {
            changes: self.changes,
            statuses: updated,
            partial: true,
            removed: gone,
            devices,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// Devices came or went and the desired state is the one of the last
    /// pass: converge just those devices' ports, reusing the last plan.
    async fn device_pass(&mut self, events: &HashSet<String>) -> Result<PassReport, Error> {
        self.changes = 0;
        self.warnings.clear();
        let plan = self.last_plan.take().expect("checked by the caller");
        let touched: Vec<String> = events
            .iter()
            .filter(|d| plan.ports.contains_key(*d))
            .cloned()
            .collect();
        self.partial_pass(plan, &touched, Vec::new()).await
    }

    /// A light pass: when only ports changed since the last pass (or
    /// devices came and went, or remote groups' members moved), converge
    /// just the ports that changed or whose device had an event, without
    /// listing the host. The plan is brought up to date in place
    /// ([`Plan::apply_ports`]), so its cost does not grow with the number
    /// of ports on the host but for one comparison per port. When rules
    /// changed, the plan is rebuilt; when anything else changed (networks,
    /// routers, DHCP servers), `None`: a full pass is due.
    pub async fn light_pass(
        &mut self,
        state: &Arc<HostState>,
        events: &HashSet<String>,
    ) -> Result<Option<PassReport>, Error> {
        if self.last_plan.is_none() {
            return Ok(None);
        }
        if self.last_revision == Some(state.revision) {
            return self.device_pass(events).await.map(Some);
        }
        let t0 = std::time::Instant::now();
        let mut plan = self.last_plan.take().expect("checked");
        let prev_state = self.last_state.clone();
        let delta = prev_state
            .as_ref()
            .and_then(|prev| plan.apply_ports(prev, state, &self.settings));
        let Some(delta) = delta else {
            self.last_plan = Some(plan);
            return self.rebuilt_light_pass(state, events).await;
        };
        let t_plan = t0.elapsed();
        self.changes = 0;
        self.warnings.clear();
        self.reconcile_groups(&plan).await;
        for ns in &delta.dhcp {
            if let (Some(s), Some(dp)) = (self.dhcp.get(ns), plan.dhcp.get(ns)) {
                s.update(&dp.leases);
            }
        }
        let mut touched: BTreeSet<String> = delta
            .changed
            .iter()
            .filter(|(d, old)| {
                old.as_ref() != plan.ports.get(d)
                    || plan
                        .ports
                        .get(d)
                        .is_some_and(|pp| !self.last_statuses.contains_key(&pp.port_id))
            })
            .map(|(d, _)| d.clone())
            .collect();
        touched.extend(
            events
                .iter()
                .filter(|d| plan.ports.contains_key(*d))
                .cloned(),
        );
        let touched: Vec<String> = touched.into_iter().collect();
        let t_pre = t0.elapsed();
        let r = self
            .converge_light(state, plan, &touched, delta.removed)
            .await?;
        tracing::trace!(?t_plan, ?t_pre, total = ?t0.elapsed(), touched = touched.len(), "light pass (cumulative)");
        Ok(Some(r))
    }

    /// The part of both light passes after planning: converge `touched`,
    /// drop `removed`, then remote-group garbage and the marks. The state
    /// becomes the last one only if the ports converged (else the next
    /// pass is a full one).
    async fn converge_light(
        &mut self,
        state: &Arc<HostState>,
        plan: Plan,
        touched: &[String],
        removed: Vec<crate::plan::PortPlan>,
    ) -> Result<PassReport, Error> {
        self.last_state = Some(state.clone());
        self.last_revision = Some(state.revision);
        let r = self.partial_pass(plan, touched, removed).await;
        if r.is_err() {
            self.last_state = None;
        }
        let mut r = r?;
        if let Some(plan) = self.last_plan.take() {
            self.collect_groups(&plan).await;
            self.last_plan = Some(plan);
        }
        if let Err(e) = self.marks.save() {
            self.warn(format!("saving marks: {}", crate::Chain(&e)));
        }
        r.changes = self.changes;
        r.warnings.append(&mut self.warnings);
        Ok(r)
    }

    /// A light pass whose plan had to be rebuilt (rules changed): still
    /// only the ports whose plan changed are converged.
    async fn rebuilt_light_pass(
        &mut self,
        state: &Arc<HostState>,
        events: &HashSet<String>,
    ) -> Result<Option<PassReport>, Error> {
        let Some(prev) = self.last_plan.as_ref() else {
            return Ok(None);
        };
        let plan = Plan::build(state, &self.settings);
        let same_dhcp = prev.dhcp.len() == plan.dhcp.len()
            && prev
                .dhcp
                .iter()
                .zip(&plan.dhcp)
                .all(|((ka, a), (kb, b))| ka == kb && a.same_but_leases(b));
        if prev.networks != plan.networks
            || prev.network_errors != plan.network_errors
            || prev.routers != plan.routers
            || !same_dhcp
        {
            return Ok(None);
        }
        self.changes = 0;
        self.warnings.clear();
        let prev = self.last_plan.take().expect("checked");
        self.reconcile_groups(&plan).await;
        for dp in plan.dhcp.values() {
            if let Some(s) = self.dhcp.get(&dp.netns) {
                s.update(&dp.leases);
            }
        }
        let touched: Vec<String> = plan
            .ports
            .values()
            .filter(|pp| {
                prev.ports.get(&pp.device) != Some(*pp)
                    || events.contains(&pp.device)
                    || !self.last_statuses.contains_key(&pp.port_id)
            })
            .map(|pp| pp.device.clone())
            .collect();
        let removed: Vec<crate::plan::PortPlan> = prev
            .ports
            .into_values()
            .filter(|p| !plan.ports.contains_key(&p.device))
            .collect();
        let ids: HashSet<String> = plan.ports.values().map(|p| p.port_id.clone()).collect();
        let mut r = self.converge_light(state, plan, &touched, removed).await?;
        // A port whose device another port took.
        let stale: Vec<String> = self
            .last_statuses
            .keys()
            .filter(|id| !ids.contains(*id))
            .cloned()
            .collect();
        for id in stale {
            self.last_statuses.remove(&id);
            r.removed.push(id);
        }
        Ok(Some(r))
    }

    /// Tears down every listener and server (the agent is stopping).
    pub fn stop_services(&mut self) {
        self.metadata.clear();
        self.dhcp.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Scope;
    use crate::testing::fixtures::*;
    use crate::testing::FakeControl;
    use hostlink::{HostNet, VethSpec};
    use netmodel::Segment;

    async fn device(net: &hostlink::Fake, tap: &str, ns: &str) {
        net.ensure_netns(ns).await.unwrap();
        net.ensure_veth(
            &Netns::Current,
            &VethSpec {
                name: tap.into(),
                peer: "eth0".into(),
                peer_netns: Netns::Named(ns.into()),
                mtu: 1500,
                peer_mac: None,
                up: true,
            },
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn light_passes_follow_ports_and_devices_and_defer_the_rest() {
        let net = Arc::new(hostlink::Fake::new());
        let fw = Arc::new(nft::Fake::new());
        let (n, s, g) = (new_id(), new_id(), new_id());
        let p1 = vm_port(&new_id(), &n, &s, &mac(1), "10.0.0.5", &[&g]);
        let p2 = vm_port(&new_id(), &n, &s, &mac(2), "10.0.0.6", &[&g]);
        let mut st = HostState {
            host: "h".into(),
            revision: 1,
            networks: vec![network(
                &n,
                1,
                Segment::Local,
                vec![subnet(&s, "10.0.0.0/24", Some("10.0.0.1"), None)],
            )],
            ports: vec![Arc::new(p1.clone())],
            security_groups: vec![sg(
                &g,
                vec![rule(netmodel::Direction::Egress, None, None, None)],
            )],
            routers: vec![],
        };
        let mut rec = Reconciler::new(
            Netns::Current,
            PlanSettings {
                scope: Scope::new("tlight").unwrap(),
                vxlan_local: None,
                vxlan_underlay: None,
                metadata_port: 9697,
                lease_time: 60,
            },
            net.clone(),
            fw.clone(),
            Arc::new(FakeControl::new(st.clone())),
            MarkStore::in_memory(),
            crate::metadata::Limits::default(),
        );
        device(&net, &p1.device_name, "vm1").await;
        let r = rec.pass(&Arc::new(st.clone()), true).await.unwrap();
        assert_eq!(r.statuses[&p1.id].0, PortStatus::Active);

        // A new port: its rules go in, its device is not there yet.
        st.ports.push(Arc::new(p2.clone()));
        st.revision = 2;
        let r = rec
            .light_pass(&Arc::new(st.clone()), &HashSet::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.statuses[&p2.id].0, PortStatus::Down);
        assert!(r.partial);
        assert!(!r.statuses.contains_key(&p1.id), "only what it looked at");
        assert_eq!(r.devices[&p2.id], p2.device_name);
        assert_eq!(rec.statuses()[&p1.id].0, PortStatus::Active, "kept");
        assert_eq!(fw.list_ports().unwrap().len(), 2);
        // Its device appears (an event for it): same revision, a device pass.
        device(&net, &p2.device_name, "vm2").await;
        let ev: HashSet<String> = [p2.device_name.clone()].into_iter().collect();
        let r = rec
            .light_pass(&Arc::new(st.clone()), &ev)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.statuses[&p2.id].0, PortStatus::Active);
        let links = net.list_links(&Netns::Current).await.unwrap();
        let tap2 = links.iter().find(|l| l.name == p2.device_name).unwrap();
        assert!(tap2
            .master
            .as_deref()
            .is_some_and(|m| m.starts_with("fsb-")));
        // A port leaves: rules gone, its tap detached (not deleted).
        st.ports.retain(|p| p.id != p1.id);
        st.revision = 3;
        let r = rec
            .light_pass(&Arc::new(st.clone()), &HashSet::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.removed, vec![p1.id.clone()]);
        assert!(!rec.statuses().contains_key(&p1.id));
        assert_eq!(fw.list_ports().unwrap().len(), 1);
        let links = net.list_links(&Netns::Current).await.unwrap();
        let tap1 = links.iter().find(|l| l.name == p1.device_name).unwrap();
        assert!(tap1.master.is_none());
        // A network change needs a full pass.
        st.networks[0].mtu = 1400;
        st.revision = 4;
        assert!(rec
            .light_pass(&Arc::new(st.clone()), &HashSet::new())
            .await
            .unwrap()
            .is_none());
        let r = rec.pass(&Arc::new(st.clone()), false).await.unwrap();
        assert_eq!(r.statuses[&p2.id].0, PortStatus::Active);
        let links = net.list_links(&Netns::Current).await.unwrap();
        assert_eq!(
            links.iter().find(|l| l.name == p2.device_name).unwrap().mtu,
            1400
        );
    }
}
