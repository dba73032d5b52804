//! The node agent's network data plane.
//!
//! [`Agent`] long-polls the controller for its host's desired state
//! ([`netmodel::NetworkControl::watch`]), converges the host to it with the
//! reconcilers, and reports each port's status. One reconcile pass
//! ([`reconcile`]) reads what the host has — links named by the naming
//! scheme, namespaces `fsr-*`/`fsd-*`, the firewall's ports — changes only
//! what differs and removes what no longer belongs (only objects with the
//! agent's name prefixes). It runs when the desired state changes, when a
//! device the agent waits for appears ([`linkwatch`]), and periodically.
//!
//! Modules: [`plan`] (desired state → objects, pure), `l2` (bridges,
//! VXLAN, flat uplinks), `ports` (taps and their rules), `secgroups`
//! (remote-group sets), `routers` (namespaces, legs, routes, NAT),
//! [`dhcp`] (the DHCP server and its namespaces), [`metadata`] (the
//! metadata proxy), [`explain`] (a port's data path in words),
//! [`marks`] (persistent packet and conntrack marks), [`socket`] (the
//! local socket `ferrostack explain-port` asks through), `testing`
//! (`FakeControl`, the root-test lab; feature `testing`, which only tests
//! and the benchmark binary enable: it is not in the release binary).
//!
//! **Architecture invariant:** the agent touches only objects whose names
//! carry its prefixes (`fsb-`, `fsx-`, `fsd-`, `fsr-`, `tap` on its own
//! bridges, `qr-`/`qg-` in its namespaces, the `fs_*` nft tables); VM taps
//! belong to the compute driver and are only ever attached and detached.

pub mod dhcp;
pub mod explain;
mod l2;
pub mod linkwatch;
pub mod marks;
pub mod metadata;
pub mod names;
pub mod plan;
mod ports;
pub mod reconcile;
mod routers;
mod secgroups;
pub mod socket;
pub mod supervise;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostlink::{HostNet, Netns};
use netmodel::{HostState, NetworkControl, PortReport, PortStatus};
use nft::Firewall;
use tokio::sync::{watch, Notify};

pub use explain::Explainer;
pub use reconcile::PassReport;

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host network driver call failed.
    #[error("host network")]
    Net(#[from] hostlink::Error),
    /// A firewall driver call failed.
    #[error("firewall")]
    Firewall(#[from] nft::Error),
    /// The controller failed.
    #[error("controller")]
    Control(#[from] netmodel::Error),
    /// The mark store failed.
    #[error("mark store")]
    Marks(#[from] marks::MarkError),
    /// Something the agent was asked or found cannot be done.
    #[error("{0}")]
    Invalid(String),
}

/// Displays an error with its sources, `outer: inner: innermost` (error
/// types here keep the source out of their own message).
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut s = self.0.source();
        while let Some(e) = s {
            write!(f, ": {e}")?;
            s = e.source();
        }
        Ok(())
    }
}

/// Aborts a task when dropped: servers and watchers die with their owner.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Aborts the task and waits until it is gone (with everything it
    /// owned: listeners, sockets).
    pub async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the agent keeps its state (the marks file).
    pub state_dir: PathBuf,
    /// The namespace holding the host's bridges: the agent's own
    /// ([`Netns::Current`]) in production, a test namespace in tests.
    pub host_netns: Netns,
    /// Scope of namespace names (see [`names::Scope`]); empty in
    /// production.
    pub netns_scope: String,
    /// Local VXLAN tunnel endpoint (needed when a VXLAN network is here).
    pub vxlan_local: Option<Ipv4Addr>,
    /// Underlay device for VXLAN.
    pub vxlan_underlay: Option<String>,
    /// Port the metadata proxy listens on inside router namespaces.
    pub metadata_port: u16,
    /// Connections per caller and answer caching of the metadata proxy.
    pub metadata_limits: metadata::Limits,
    /// DHCP lease time in seconds.
    pub lease_time: u32,
    /// How long one `watch` call may wait.
    pub watch_wait: Duration,
    /// Interval of the periodic pass.
    pub resync_interval: Duration,
    /// Interval of the deep pass (which also reads the firewall back).
    pub deep_resync_interval: Duration,
    /// Link poll interval when link events cannot be subscribed to.
    pub link_poll_interval: Duration,
    /// Whether to run the DHCP servers (their sockets are opened inside
    /// real namespaces; unit tests over the fake drivers turn them off).
    pub dhcp_servers: bool,
}

impl Config {
    /// Defaults, with state under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Config {
            state_dir: state_dir.into(),
            host_netns: Netns::Current,
            netns_scope: String::new(),
            vxlan_local: None,
            vxlan_underlay: None,
            metadata_port: 9697,
            metadata_limits: metadata::Limits::default(),
            lease_time: 86_400,
            watch_wait: Duration::from_secs(30),
            resync_interval: Duration::from_secs(10),
            deep_resync_interval: Duration::from_secs(300),
            link_poll_interval: Duration::from_millis(200),
            dhcp_servers: true,
        }
    }
}

/// The node agent.
pub struct Agent {
    host: String,
    control: Arc<dyn NetworkControl>,
    cfg: Config,
    rec: reconcile::Reconciler,
    explainer: Explainer,
    reported: HashMap<String, (PortStatus, Option<String>)>,
    watched: Arc<Mutex<linkwatch::Watched>>,
    retrigger: bool,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("host", &self.host).finish()
    }
}

impl Agent {
    /// An agent for `host_name`. Opens the mark store; touches nothing
    /// else until it runs.
    pub fn new(
        host_name: impl Into<String>,
        control: Arc<dyn NetworkControl>,
        net: Arc<dyn HostNet>,
        fw: Arc<dyn Firewall>,
        config: Config,
    ) -> Result<Agent, Error> {
        let scope = names::Scope::new(&config.netns_scope).ok_or_else(|| {
            Error::Invalid(format!("bad namespace scope {:?}", config.netns_scope))
        })?;
        let settings = plan::PlanSettings {
            scope,
            vxlan_local: config.vxlan_local,
            vxlan_underlay: config.vxlan_underlay.clone(),
            metadata_port: config.metadata_port,
            lease_time: config.lease_time,
        };
        let marks = marks::MarkStore::open(&config.state_dir)?;
        let rec = reconcile::Reconciler::new(
            config.host_netns.clone(),
            settings.clone(),
            net,
            fw,
            control.clone(),
            marks,
            config.metadata_limits,
        );
        let mut rec = rec;
        rec.serve_dhcp = config.dhcp_servers;
        Ok(Agent {
            host: host_name.into(),
            control,
            cfg: config,
            rec,
            explainer: Explainer::new(settings),
            reported: HashMap::new(),
            watched: Arc::default(),
            retrigger: false,
        })
    }

    /// The metadata proxy this agent's listeners share.
    pub fn metadata_proxy(&self) -> Arc<metadata::Proxy> {
        self.rec.metadata_proxy.clone()
    }

    /// A handle that explains ports from what this agent last applied;
    /// usable while the agent runs.
    pub fn explainer(&self) -> Explainer {
        self.explainer.clone()
    }

    /// Makes this agent update `explainer` (one its predecessor made)
    /// instead of its own, so the socket that serves it keeps serving
    /// across restarts.
    pub fn with_explainer(mut self, explainer: Explainer) -> Agent {
        self.explainer = explainer;
        self
    }

    /// One reconcile pass over `state` (tests and tools; [`Agent::run`]
    /// calls it on every change). `deep` also reads the firewall back.
    pub async fn reconcile(&mut self, state: &HostState, deep: bool) -> Result<PassReport, Error> {
        self.reconcile_shared(&Arc::new(state.clone()), deep).await
    }

    async fn reconcile_shared(
        &mut self,
        state: &Arc<HostState>,
        deep: bool,
    ) -> Result<PassReport, Error> {
        self.take_events();
        self.rec.rules_failed = false;
        self.rec.metadata_proxy.observe(state.revision);
        let r = self.rec.pass(state, deep).await?;
        self.after_pass(state, &r);
        Ok(r)
    }

    /// A light pass (`Reconciler::light_pass`); `None`
    /// when a full pass is needed.
    pub async fn reconcile_light(
        &mut self,
        state: &HostState,
    ) -> Result<Option<PassReport>, Error> {
        self.reconcile_light_shared(&Arc::new(state.clone())).await
    }

    async fn reconcile_light_shared(
        &mut self,
        state: &Arc<HostState>,
    ) -> Result<Option<PassReport>, Error> {
        let events = self.take_events();
        self.rec.rules_failed = false;
        self.rec.metadata_proxy.observe(state.revision);
        let r = self.rec.light_pass(state, &events).await?;
        if let Some(r) = &r {
            self.after_pass(state, r);
        }
        Ok(r)
    }

    /// Every port's status after the last pass, by port id (a light
    /// pass's report names only the ports it looked at).
    pub fn statuses(&self) -> &BTreeMap<String, (PortStatus, Option<String>)> {
        self.rec.statuses()
    }

    fn take_events(&mut self) -> std::collections::HashSet<String> {
        std::mem::take(&mut self.watched.lock().unwrap_or_else(|p| p.into_inner()).seen)
    }

    /// Updates what explains ports and which devices the link watcher
    /// waits for (after a light pass, for the ports it looked at only).
    fn after_pass(&mut self, state: &Arc<HostState>, r: &PassReport) {
        self.explainer.update(state, r, &self.rec.marks);
        let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut *w;
        if r.partial {
            for id in &r.removed {
                if let Some(dev) = r.devices.get(id) {
                    w.waiting.remove(dev);
                    w.wired.remove(dev);
                }
            }
            for (id, (st, _)) in &r.statuses {
                if let Some(dev) = r.devices.get(id).filter(|d| !d.is_empty()) {
                    w.note(dev, *st == PortStatus::Active);
                }
            }
        } else {
            w.waiting.clear();
            w.wired.clear();
            let devices: HashMap<&str, &str> = state
                .ports
                .iter()
                .map(|p| (p.id.as_str(), p.device_name.as_str()))
                .collect();
            for (id, (st, _)) in &r.statuses {
                if let Some(dev) = devices.get(id.as_str()).filter(|d| !d.is_empty()) {
                    w.note(dev, *st == PortStatus::Active);
                }
            }
        }
        // A device that appeared during the pass, too late for it.
        self.retrigger = w.seen.iter().any(|d| w.waiting.contains(d));
    }

    /// Reports statuses that changed since the last successful report.
    async fn report(&mut self, r: &PassReport) {
        if r.partial {
            for id in &r.removed {
                self.reported.remove(id);
            }
        }
        let changed: Vec<PortReport> = r
            .statuses
            .iter()
            .filter(|(id, s)| self.reported.get(*id) != Some(*s))
            .map(|(id, (status, message))| PortReport {
                port_id: id.clone(),
                status: *status,
                message: message.clone(),
            })
            .collect();
        if !r.partial {
            self.reported.retain(|id, _| r.statuses.contains_key(id));
        }
        if changed.is_empty() {
            return;
        }
        match self.control.report_ports(&self.host, changed.clone()).await {
            Ok(()) => {
                for c in changed {
                    self.reported.insert(c.port_id, (c.status, c.message));
                }
            }
            Err(e) => tracing::warn!("reporting port status: {}", crate::Chain(&e)),
        }
    }

    /// Runs until the future is dropped (which stops every listener and
    /// server the agent started; what it built on the host stays, and the
    /// next agent picks it up).
    pub async fn run(mut self) -> Result<(), Error> {
        let (tx, mut rx) = watch::channel::<Option<Arc<HostState>>>(None);
        let control = self.control.clone();
        let host = self.host.clone();
        let wait = self.cfg.watch_wait;
        let _watcher = AbortOnDrop(tokio::spawn(async move {
            let mut after = None;
            loop {
                match control.watch(&host, after, wait).await {
                    Ok(s) => {
                        if after != Some(s.revision) {
                            after = Some(s.revision);
                            if tx.send(Some(Arc::new(s))).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("watching the desired state: {}", crate::Chain(&e));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
        let trigger = Arc::new(Notify::new());
        let _links = linkwatch::spawn(
            self.cfg.host_netns.clone(),
            self.rec.net.clone(),
            self.watched.clone(),
            trigger.clone(),
            self.cfg.link_poll_interval,
        )
        .await;
        let mut tick = tokio::time::interval(self.cfg.resync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_deep: Option<Instant> = None;
        let mut last_revision: Option<u64> = None;
        // Ports whose rules could not be applied are retried by a full
        // pass, sooner than the periodic one (1 s, doubling up to 8 s).
        let mut retry: Option<(tokio::time::Instant, Duration)> = None;
        loop {
            let mut periodic = false;
            let retry_at = retry.map(|(at, _)| at);
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok(()) },
                _ = trigger.notified() => {}
                _ = tick.tick() => periodic = true,
                _ = async {
                    match retry_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => periodic = true,
            }
            let Some(state) = rx.borrow_and_update().clone() else {
                continue;
            };
            let deep = last_deep.is_none_or(|t| t.elapsed() >= self.cfg.deep_resync_interval);
            // Changes of ports and groups, and devices coming and going,
            // take a light pass; the rest, and the periodic resync, a full
            // one.
            let mut result = None;
            if !periodic && !deep {
                match self.reconcile_light_shared(&state).await {
                    Ok(r) => result = r.map(Ok),
                    Err(e) => tracing::warn!("light pass failed, doing a full one: {}", Chain(&e)),
                }
            }
            let light = result.is_some();
            let t = Instant::now();
            let result = match result {
                Some(r) => r,
                None => self.reconcile_shared(&state, deep).await,
            };
            if !light {
                tracing::debug!(deep, periodic, took = ?t.elapsed(), "full pass");
            }
            match result {
                Ok(r) => {
                    if deep {
                        last_deep = Some(Instant::now());
                    }
                    if r.changes > 0 || last_revision != Some(state.revision) {
                        tracing::debug!(
                            revision = state.revision,
                            changes = r.changes,
                            "reconciled"
                        );
                    }
                    last_revision = Some(state.revision);
                    retry = if self.rec.rules_failed {
                        let wait = retry.map_or(Duration::from_secs(1), |(_, w)| {
                            (w * 2).min(Duration::from_secs(8))
                        });
                        let at = tokio::time::Instant::now() + wait;
                        match retry {
                            // A light pass that fails too keeps the sooner
                            // retry already due (changes coming in must
                            // not postpone it).
                            Some((due, w)) if light && due <= at => Some((due, w)),
                            _ => Some((at, wait)),
                        }
                    } else if light {
                        retry
                    } else {
                        None
                    };
                    self.report(&r).await;
                    if self.retrigger {
                        trigger.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!("reconcile pass failed: {}", Chain(&e));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    trigger.notify_one();
                }
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.rec.stop_services();
    }
}
