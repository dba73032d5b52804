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
//! The sub-reconcilers live in [`crate::l2`], [`crate::ports`],
//! [`crate::secgroups`], [`crate::routers`] and [`crate::dhcp`] as
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
    /// Status of every port of the plan, by port id.
    pub statuses: BTreeMap<String, (PortStatus, Option<String>)>,
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
    pub control: Arc<dyn NetworkControl>,
    pub marks: MarkStore,
    /// Port rules known to be installed (device → rules with marks).
    pub applied_ports: HashMap<String, nft::PortRules>,
    /// Devices the firewall may have chains for (installed or applied).
    pub fw_ports: BTreeSet<String>,
    pub applied_zones: HashMap<String, u16>,
    pub applied_groups: HashMap<String, nft::RemoteGroup>,
    pub applied_nat: HashMap<String, nft::RouterNat>,
    /// Namespaces whose sysctls this process has set.
    pub configured_ns: HashSet<String>,
    pub base_ready: bool,
    pub metadata: HashMap<String, metadata::Listener>,
    pub dhcp: HashMap<String, dhcp::Server>,
    pub changes: usize,
    pub warnings: Vec<String>,
    pub serve_dhcp: bool,
    pub passes: u64,
}

impl Reconciler {
    pub fn new(
        host_ns: Netns,
        settings: PlanSettings,
        net: Arc<dyn HostNet>,
        fw: Arc<dyn Firewall>,
        control: Arc<dyn NetworkControl>,
        marks: MarkStore,
    ) -> Self {
        Reconciler {
            host_ns,
            settings,
            net,
            fw,
            control,
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
                self.warn(format!("sysctl {k}={v} in {ns}: {e}"));
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
    pub async fn pass(&mut self, state: &HostState, deep: bool) -> Result<PassReport, Error> {
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
        let mut obs = self.observe().await?;
        let net_errors = self.reconcile_networks(&plan, &obs).await;
        self.reconcile_groups(&plan).await;
        self.reconcile_routers(&plan, &obs).await;
        self.reconcile_dhcp(&plan, &obs).await;
        if self.changes > 0 {
            obs = self.observe().await?;
        }
        let statuses = self.reconcile_ports(&plan, &obs, &net_errors, deep).await?;
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
                Err(e) => self.warn(format!("deleting the host tables: {e}")),
            }
        }
        if let Err(e) = self.marks.save() {
            self.warn(format!("saving marks: {e}"));
        }
        self.passes += 1;
        Ok(PassReport {
            changes: self.changes,
            statuses,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// Tears down every listener and server (the agent is stopping).
    pub fn stop_services(&mut self) {
        self.metadata.clear();
        self.dhcp.clear();
    }
}
