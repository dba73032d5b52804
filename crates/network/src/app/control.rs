//! The controller side of the agent contract ([`netmodel::NetworkControl`]):
//! a host's desired state computed from the database, the long poll on the
//! network revision, port status reports (with `network-vif-plugged`
//! events), agent heartbeats, and metadata lookups.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::Error;
use netmodel::{
    AllowedAddressPair, Cidr, Direction, FixedIp, FloatingIp, HostRoute, HostState, MetadataAnswer,
    MetadataCaller, NetworkControl, PortReport, PortStatus, RemotePort, Router, RouterGateway,
    RouterInterface, SecurityGroup, SecurityGroupRule, Segment,
};

use super::addr;
use super::ipam::{Route, SubnetInfo};
use super::port::{AddressPair, OWNER_DHCP, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE};
use super::{db_err, Network};
use crate::store as db;

/// The event compute waits for after plugging a port.
pub const VIF_PLUGGED: &str = "network-vif-plugged";
/// Recorded when a wired port goes down again.
pub const VIF_UNPLUGGED: &str = "network-vif-unplugged";

/// Everything the host computation reads. The controller keeps one in
/// memory ([`HostCache`]) and brings it up to date from the change journal
/// (`network_change`, kept by triggers) before each computation, so a
/// revision costs what changed in it rather than every row of every table.
#[derive(Default)]
struct Snapshot {
    networks: HashMap<String, db::network::Network>,
    subnets: Vec<SubnetInfo>,
    /// By id. A port's `status` (and the timestamps a status report
    /// bumps) may be stale here: no host's state reads them, and the
    /// journal does not record status reports.
    ports: BTreeMap<String, Arc<PortEntry>>,
    /// Ports by `binding:host_id`, network, device (router legs) and
    /// security group, then by id, so that a host's state costs what it
    /// holds.
    by_host: Index,
    by_network: Index,
    by_device: Index,
    by_group: Index,
    /// Each group's member addresses, sorted, kept as its members change
    /// rather than gathered for every host state.
    members: HashMap<String, Vec<IpAddr>>,
    groups: HashMap<String, db::secgroup::SecurityGroup>,
    rules: HashMap<String, Vec<db::secgroup::Rule>>,
    routers: Vec<db::router::Router>,
    fips: Vec<db::floatingip::FloatingIp>,
    hosts: HashMap<String, Option<IpAddr>>,
}

/// A port with what every host's state takes from it, worked out once when
/// it is read rather than on every computation.
struct PortEntry {
    row: db::port::Port,
    /// Its security groups as bound: what it is a member of.
    groups: Vec<String>,
    /// Its addresses as a member: fixed IPs and host-address pairs.
    member_ips: Vec<IpAddr>,
    /// What its host gets, shared by every state that holds it.
    model: Arc<netmodel::Port>,
}

impl PortEntry {
    fn new(row: db::port::Port, allocs: &[db::port::Allocation], groups: Vec<String>) -> Self {
        let fixed_ips: Vec<FixedIp> = allocs
            .iter()
            .filter_map(|a| {
                Some(FixedIp {
                    subnet_id: a.subnet_id.clone(),
                    ip: addr::parse_ip(&a.ip_address)?,
                })
            })
            .collect();
        let pairs: Vec<AddressPair> =
            serde_json::from_str(&row.allowed_address_pairs).unwrap_or_default();
        let mut member_ips: Vec<IpAddr> = fixed_ips.iter().map(|f| f.ip).collect();
        for a in &pairs {
            match addr::parse_cidr(&a.ip_address) {
                Some(c) if c.prefix as u32 == addr::bits(c.addr) => member_ips.push(c.addr),
                Some(_) => {}
                None => member_ips.extend(addr::parse_ip(&a.ip_address)),
            }
        }
        let trusted = super::port::is_network_owned(&row.device_owner);
        let first_ip = fixed_ips.first().map(|f| f.ip.to_string());
        let model = Arc::new(netmodel::Port {
            id: row.id.clone(),
            network_id: row.network_id.clone(),
            mac: row.mac_address.clone(),
            device_owner: row.device_owner.clone(),
            device_id: row.device_id.clone(),
            admin_state_up: row.admin_state_up,
            // Ports of network functions are trusted, as Neutron's firewall
            // drivers treat `network:*` owners: no anti-spoofing, no groups.
            port_security_enabled: row.port_security_enabled && !trusted,
            allowed_address_pairs: pairs
                .iter()
                .filter_map(|a| {
                    Some(AllowedAddressPair {
                        ip: addr::parse_cidr(&a.ip_address).or_else(|| {
                            addr::parse_ip(&a.ip_address).map(|ip| Cidr {
                                addr: ip,
                                prefix: addr::bits(ip) as u8,
                            })
                        })?,
                        mac: a.mac_address.clone().filter(|m| *m != row.mac_address),
                    })
                })
                .collect(),
            security_group_ids: if trusted || !row.port_security_enabled {
                Vec::new()
            } else {
                groups.clone()
            },
            hostname: super::port::hostname(&row.dns_name, first_ip.as_deref()),
            device_name: format!("tap{}", row.id.chars().take(11).collect::<String>()),
            fixed_ips,
        });
        PortEntry {
            row,
            groups,
            member_ips,
            model,
        }
    }
}

/// Ports under a key, by id.
type Index = HashMap<String, BTreeMap<String, Arc<PortEntry>>>;

fn index(idx: &mut Index, key: &str, e: &Arc<PortEntry>) {
    if !key.is_empty() {
        idx.entry(key.to_string())
            .or_default()
            .insert(e.row.id.clone(), e.clone());
    }
}

fn unindex(idx: &mut Index, key: &str, id: &str) {
    if let Some(ids) = idx.get_mut(key) {
        ids.remove(id);
        if ids.is_empty() {
            idx.remove(key);
        }
    }
}

/// The small tables, each read whole when the journal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    Networks,
    Subnets,
    SecurityGroups,
    Routers,
    FloatingIps,
    Hosts,
}

impl Snapshot {
    /// Reads everything, inside the caller's (read) transaction.
    async fn load(c: &mut sqlx::SqliteConnection, cfg: &super::Config) -> Result<Snapshot, Error> {
        let mut s = Snapshot::default();
        for t in [
            Table::Networks,
            Table::Subnets,
            Table::SecurityGroups,
            Table::Routers,
            Table::FloatingIps,
            Table::Hosts,
        ] {
            s.reload(c, t, cfg).await?;
        }
        let rows = db::port::select(&mut *c, &Default::default())
            .await
            .map_err(db_err)?;
        let allocs = db::port::allocations(&mut *c).await.map_err(db_err)?;
        let bindings = db::port::security_group_bindings(&mut *c)
            .await
            .map_err(db_err)?;
        let touched = s.insert_ports(rows, allocs, bindings);
        s.settle_members(touched);
        Ok(s)
    }

    /// Replaces one small table.
    async fn reload(
        &mut self,
        c: &mut sqlx::SqliteConnection,
        t: Table,
        cfg: &super::Config,
    ) -> Result<(), Error> {
        match t {
            Table::Networks => {
                self.networks = db::network::list(&mut *c)
                    .await
                    .map_err(db_err)?
                    .into_iter()
                    .map(|n| (n.id.clone(), n))
                    .collect();
            }
            Table::Subnets => {
                self.subnets = db::subnet::list(&mut *c)
                    .await
                    .map_err(db_err)?
                    .into_iter()
                    .map(SubnetInfo::new)
                    .collect();
            }
            Table::SecurityGroups => {
                self.groups = db::secgroup::list(&mut *c)
                    .await
                    .map_err(db_err)?
                    .into_iter()
                    .map(|g| (g.id.clone(), g))
                    .collect();
                self.rules.clear();
                for r in db::secgroup::rules(&mut *c).await.map_err(db_err)? {
                    self.rules
                        .entry(r.security_group_id.clone())
                        .or_default()
                        .push(r);
                }
            }
            Table::Routers => self.routers = db::router::list(&mut *c).await.map_err(db_err)?,
            Table::FloatingIps => {
                self.fips = db::floatingip::list(&mut *c).await.map_err(db_err)?
            }
            Table::Hosts => {
                self.hosts = db::misc::hosts(&mut *c)
                    .await
                    .map_err(db_err)?
                    .into_iter()
                    .map(|h| (h.host, h.tunnel_ip.as_deref().and_then(addr::parse_ip)))
                    .collect();
                if let Some(ip) = cfg.tunnel_ip {
                    self.hosts.insert(cfg.host.clone(), Some(ip));
                }
            }
        }
        Ok(())
    }

    /// Replaces these ports (row, fixed IPs, security groups); ids no
    /// longer in the database are dropped.
    async fn reload_ports(
        &mut self,
        c: &mut sqlx::SqliteConnection,
        ids: &[String],
    ) -> Result<(), Error> {
        let rows = db::port::with_ids(&mut *c, ids).await.map_err(db_err)?;
        let allocs = db::port::allocations_of_ports(&mut *c, ids)
            .await
            .map_err(db_err)?;
        let bindings = db::port::security_group_bindings_of(&mut *c, ids)
            .await
            .map_err(db_err)?;
        let mut touched = BTreeSet::new();
        for id in ids {
            if let Some(e) = self.remove_port(id) {
                touched.extend(e.groups.iter().cloned());
            }
        }
        touched.extend(self.insert_ports(rows, allocs, bindings));
        self.settle_members(touched);
        Ok(())
    }

    /// Adds ports from their rows, fixed IPs and group bindings; returns
    /// the groups they are members of.
    fn insert_ports(
        &mut self,
        rows: Vec<db::port::Port>,
        allocs: Vec<db::port::Allocation>,
        bindings: Vec<(String, String)>,
    ) -> BTreeSet<String> {
        let mut touched = BTreeSet::new();
        let mut ips: HashMap<String, Vec<db::port::Allocation>> = HashMap::new();
        for a in allocs {
            ips.entry(a.port_id.clone()).or_default().push(a);
        }
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        for (p, g) in bindings {
            groups.entry(p).or_default().push(g);
        }
        for row in rows {
            let allocs = ips.remove(&row.id).unwrap_or_default();
            let groups = groups.remove(&row.id).unwrap_or_default();
            let e = Arc::new(PortEntry::new(row, &allocs, groups));
            index(&mut self.by_host, &e.row.host_id, &e);
            index(&mut self.by_network, &e.row.network_id, &e);
            index(&mut self.by_device, &e.row.device_id, &e);
            for g in &e.groups {
                index(&mut self.by_group, g, &e);
                touched.insert(g.clone());
            }
            self.ports.insert(e.row.id.clone(), e);
        }
        touched
    }

    /// Gathers again the member addresses of these groups.
    fn settle_members(&mut self, groups: BTreeSet<String>) {
        for g in groups {
            let set: BTreeSet<IpAddr> = Snapshot::under(&self.by_group, &g)
                .flat_map(|e| e.member_ips.iter().copied())
                .collect();
            if set.is_empty() {
                self.members.remove(&g);
            } else {
                self.members.insert(g, set.into_iter().collect());
            }
        }
    }

    fn remove_port(&mut self, id: &str) -> Option<Arc<PortEntry>> {
        let e = self.ports.remove(id)?;
        unindex(&mut self.by_host, &e.row.host_id, id);
        unindex(&mut self.by_network, &e.row.network_id, id);
        unindex(&mut self.by_device, &e.row.device_id, id);
        for g in &e.groups {
            unindex(&mut self.by_group, g, id);
        }
        Some(e)
    }

    /// The ports under `key` in an index.
    fn under<'a>(idx: &'a Index, key: &str) -> impl Iterator<Item = &'a PortEntry> + 'a {
        idx.get(key)
            .into_iter()
            .flat_map(|m| m.values().map(|e| &**e))
    }

    /// Applies the journal's `(kind, key)` rows. `Ok(false)` when a kind is
    /// unknown (a newer controller's journal): the caller reads everything.
    async fn apply(
        &mut self,
        c: &mut sqlx::SqliteConnection,
        changes: Vec<(String, String)>,
        cfg: &super::Config,
    ) -> Result<bool, Error> {
        let mut ports = Vec::new();
        let mut tables = HashSet::new();
        for (kind, key) in changes {
            let t = match kind.as_str() {
                "port" => {
                    ports.push(key);
                    continue;
                }
                "network" => Table::Networks,
                "subnet" => Table::Subnets,
                "security_group" => Table::SecurityGroups,
                "router" => Table::Routers,
                "floatingip" => Table::FloatingIps,
                "host" => Table::Hosts,
                _ => return Ok(false),
            };
            tables.insert(t);
        }
        for t in tables {
            self.reload(c, t, cfg).await?;
        }
        if !ports.is_empty() {
            self.reload_ports(c, &ports).await?;
        }
        Ok(true)
    }
}

/// The controller's in-memory [`Snapshot`] and the revision it is of.
pub(crate) struct HostCache {
    snap: Snapshot,
    revision: u64,
    loaded: Instant,
}

/// How often the in-memory copy is read whole regardless of the journal:
/// a bound on how long anything the journal missed could stay wrong.
const FULL_RELOAD_EVERY: Duration = Duration::from_secs(600);
/// The journal keeps the changes of this many revisions…
const JOURNAL_KEEP: u64 = 10_000;
/// …and is pruned every this many revisions.
const JOURNAL_PRUNE_EVERY: u64 = 1_000;

impl Network {
    /// Brings `slot` up to the database's current revision, inside one
    /// read transaction, and returns that revision. Everything is read when
    /// there is no copy, when the journal was pruned past it, or when it is
    /// older than [`FULL_RELOAD_EVERY`]; otherwise only what the journal
    /// names after its revision.
    async fn refresh(&self, slot: &mut Option<HostCache>) -> Result<u64, Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let (revision, floor) = db::revision_and_floor(&mut *tx).await.map_err(db_err)?;
        let usable = slot.as_ref().is_some_and(|c| {
            floor <= c.revision && c.revision <= revision && c.loaded.elapsed() < FULL_RELOAD_EVERY
        });
        if !usable {
            *slot = None;
        }
        if let Some(c) = slot.as_mut().filter(|c| c.revision < revision) {
            let changes = db::changes_since(&mut *tx, c.revision)
                .await
                .map_err(db_err)?;
            match c.snap.apply(&mut tx, changes, &self.cfg).await {
                Ok(true) => c.revision = revision,
                Ok(false) => *slot = None,
                Err(e) => {
                    // Half applied: never use it.
                    *slot = None;
                    return Err(e);
                }
            }
        }
        if slot.is_none() {
            *slot = Some(HostCache {
                snap: Snapshot::load(&mut tx, &self.cfg).await?,
                revision,
                loaded: Instant::now(),
            });
        }
        tx.rollback().await.map_err(|e| Error::internal(&e))?;
        Ok(revision)
    }

    /// The desired state of `host` now.
    pub async fn host_state(&self, host: &str) -> Result<HostState, Error> {
        let mut cache = self.host_cache.lock().await;
        let revision = self.refresh(&mut cache).await?;
        let snap = &cache.as_ref().expect("refreshed").snap;
        Ok(self.build_state(snap, host, revision))
    }

    /// The desired state of `host` computed from every row, without the
    /// in-memory copy: what [`Network::host_state`] must always equal (for
    /// tests and checks).
    pub async fn host_state_from_scratch(&self, host: &str) -> Result<HostState, Error> {
        let mut slot = None;
        let revision = self.refresh(&mut slot).await?;
        let snap = &slot.as_ref().expect("loaded").snap;
        Ok(self.build_state(snap, host, revision))
    }

    fn build_state(&self, snap: &Snapshot, host: &str, revision: u64) -> HostState {
        let mut state = build(snap, host, &self.cfg.host, |p| {
            self.physical_interface(p).map(str::to_string)
        });
        state.revision = revision;
        state
    }

    /// Forgets the journal's changes up to `through`: an in-memory copy
    /// older than that reads everything again. Called every
    /// 1,000 revisions, keeping the last 10,000.
    pub async fn prune_changes(&self, through: u64) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        db::prune_changes(&mut tx, through).await.map_err(db_err)?;
        tx.commit().await.map_err(|e| Error::internal(&e))
    }

    /// After the commit of `revision`: prunes the journal when due.
    pub(crate) async fn after_commit(&self, revision: u64) {
        if revision.is_multiple_of(JOURNAL_PRUNE_EVERY) && revision > JOURNAL_KEEP {
            if let Err(e) = self.prune_changes(revision - JOURNAL_KEEP).await {
                tracing::warn!(error = %e.message, "pruning the network change journal failed");
            }
        }
    }

    /// Records that the agent of `host` was heard from.
    pub async fn heartbeat(&self, host: &str) -> Result<(), Error> {
        db::misc::heartbeat(&self.pool, host, store::now_micros())
            .await
            .map_err(db_err)
    }

    /// Records that the agent of `host` stopped (it is restarting): its
    /// heartbeat is cleared, so it shows as not alive until its next call
    /// (a host never heard from is not made up).
    pub async fn agent_down(&self, host: &str) -> Result<(), Error> {
        db::misc::clear_heartbeat(&self.pool, host)
            .await
            .map_err(db_err)
    }

    /// Registers (or changes) the tunnel address of a host, used for the
    /// VXLAN forwarding entries other hosts get.
    pub async fn register_host(&self, host: &str, tunnel_ip: IpAddr) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        let now = tx.now;
        db::misc::set_tunnel_ip(tx.c(), host, &tunnel_ip.to_string(), now)
            .await
            .map_err(db_err)?;
        self.commit(tx).await
    }

    /// Applies an agent's port reports: status changes (only for ports bound
    /// to that host) and the events compute waits for.
    pub async fn apply_port_reports(
        &self,
        host: &str,
        reports: &[PortReport],
    ) -> Result<(), Error> {
        let now = store::now_micros();
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        db::misc::heartbeat(&mut *tx, host, now)
            .await
            .map_err(db_err)?;
        for r in reports {
            let before = db::port::get(&mut *tx, &r.port_id).await.map_err(db_err)?;
            let Some(before) = before.filter(|p| p.host_id == host) else {
                continue;
            };
            let status = match r.status {
                PortStatus::Active => "ACTIVE",
                PortStatus::Down => "DOWN",
                PortStatus::Error => "ERROR",
            };
            if !db::port::set_status(&mut *tx, &r.port_id, host, status, now)
                .await
                .map_err(db_err)?
            {
                continue;
            }
            let event = match (before.status.as_str(), r.status) {
                (_, PortStatus::Active) => Some((VIF_PLUGGED, "completed")),
                (_, PortStatus::Error) => Some((VIF_PLUGGED, "failed")),
                ("ACTIVE", PortStatus::Down) => Some((VIF_UNPLUGGED, "completed")),
                _ => None,
            };
            if let Some((event, status)) = event {
                db::misc::add_event(
                    &mut *tx,
                    &db::misc::PortEvent {
                        id: super::new_id(),
                        port_id: r.port_id.clone(),
                        event: event.into(),
                        status: status.into(),
                        host: host.into(),
                        created_at: now,
                    },
                )
                .await
                .map_err(db_err)?;
            }
            if let Some(m) = &r.message {
                tracing::info!(port = %r.port_id, %status, message = %m, "port status reported");
            }
        }
        tx.commit().await.map_err(|e| Error::internal(&e))
    }

    /// The events recorded for a port, oldest first.
    pub async fn port_events(&self, port_id: &str) -> Result<Vec<db::misc::PortEvent>, Error> {
        db::misc::events_of(&self.pool, port_id)
            .await
            .map_err(db_err)
    }

    /// The long poll: the state of `host` once the revision passes
    /// `after`, or after `wait` regardless.
    pub async fn watch_host(
        &self,
        host: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<HostState, Error> {
        self.heartbeat(host).await?;
        self.poll_started(host);
        let _guard = PollGuard { net: self, host };
        if let Some(after) = after {
            let mut rx = self.subscribe();
            let deadline = tokio::time::Instant::now() + wait;
            while *rx.borrow_and_update() <= after {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }
        let state = self.host_state(host).await?;
        self.heartbeat(host).await?;
        Ok(state)
    }
}

struct PollGuard<'a> {
    net: &'a Network,
    host: &'a str,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.net.poll_ended(self.host);
    }
}

fn to_internal(e: Error) -> netmodel::Error {
    netmodel::Error::Unavailable(e.message)
}

impl NetworkControl for Network {
    fn watch<'a>(
        &'a self,
        host: &'a str,
        after: Option<u64>,
        wait: Duration,
    ) -> netmodel::BoxFuture<'a, Result<HostState, netmodel::Error>> {
        Box::pin(async move {
            self.watch_host(host, after, wait)
                .await
                .map_err(to_internal)
        })
    }

    fn report_ports<'a>(
        &'a self,
        host: &'a str,
        reports: Vec<PortReport>,
    ) -> netmodel::BoxFuture<'a, Result<(), netmodel::Error>> {
        Box::pin(async move {
            self.apply_port_reports(host, &reports)
                .await
                .map_err(to_internal)
        })
    }

    fn metadata<'a>(
        &'a self,
        caller: MetadataCaller,
    ) -> netmodel::BoxFuture<'a, Result<Option<MetadataAnswer>, netmodel::Error>> {
        Box::pin(async move { self.metadata_for(&caller).await.map_err(to_internal) })
    }

    fn agent_down<'a>(
        &'a self,
        host: &'a str,
    ) -> netmodel::BoxFuture<'a, Result<(), netmodel::Error>> {
        Box::pin(async move { self.agent_down(host).await.map_err(to_internal) })
    }
}

/// Computes `host`'s share of the snapshot. `router_host` is where routers
/// live (this node in the all-in-one); `interface` maps physical networks
/// to host interfaces.
fn build(
    s: &Snapshot,
    host: &str,
    router_host: &str,
    interface: impl Fn(&str) -> Option<String>,
) -> HostState {
    let mut state = HostState {
        host: host.to_string(),
        ..Default::default()
    };
    // Ports.
    // Borrowed from the snapshot: a host's many ports name few groups and
    // networks.
    let mut group_ids: BTreeSet<&str> = BTreeSet::new();
    let mut network_ids: BTreeSet<&str> = BTreeSet::new();
    state
        .ports
        .reserve(s.by_host.get(host).map_or(0, BTreeMap::len));
    for e in Snapshot::under(&s.by_host, host) {
        network_ids.insert(&e.row.network_id);
        group_ids.extend(e.model.security_group_ids.iter().map(String::as_str));
        state.ports.push(e.model.clone());
    }

    // Security groups, with the groups their rules name as remote groups,
    // and every member address (on any host) of each.
    let mut todo: Vec<&str> = group_ids.iter().copied().collect();
    while let Some(g) = todo.pop() {
        for r in s.rules.get(g).into_iter().flatten() {
            if let Some(rg) = &r.remote_group_id {
                if group_ids.insert(rg) {
                    todo.push(rg);
                }
            }
        }
    }
    for &g in &group_ids {
        if !s.groups.contains_key(g) {
            continue;
        }
        state.security_groups.push(SecurityGroup {
            id: g.to_string(),
            rules: s
                .rules
                .get(g)
                .into_iter()
                .flatten()
                .map(|r| SecurityGroupRule {
                    id: r.id.clone(),
                    direction: if r.direction == "egress" {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    },
                    ethertype: r.ethertype.clone(),
                    protocol: r.protocol.clone(),
                    port_range_min: r.port_range_min.and_then(|v| u16::try_from(v).ok()),
                    port_range_max: r.port_range_max.and_then(|v| u16::try_from(v).ok()),
                    remote_ip_prefix: r
                        .remote_ip_prefix
                        .as_deref()
                        .and_then(addr::parse_cidr)
                        .map(|c| addr::normalize(&c)),
                    remote_group_id: r.remote_group_id.clone(),
                })
                .collect(),
            member_ips: s.members.get(g).cloned().unwrap_or_default(),
        });
    }

    // Routers (all on `router_host`), with their legs and floating IPs.
    if host == router_host {
        for r in &s.routers {
            let legs: Vec<&PortEntry> = Snapshot::under(&s.by_device, &r.id).collect();
            let gateway = r.gw_port_id.as_ref().and_then(|gid| {
                let gp = legs
                    .iter()
                    .find(|p| p.row.id == *gid && p.row.device_owner == OWNER_ROUTER_GATEWAY)?;
                let ips = &gp.model.fixed_ips;
                let mut cidrs = Vec::new();
                let mut nexthop = None;
                for f in ips {
                    if let Some(sn) = s.subnets.iter().find(|sn| sn.row.id == f.subnet_id) {
                        cidrs.push(Cidr {
                            addr: f.ip,
                            prefix: sn.cidr.prefix,
                        });
                        if nexthop.is_none() && f.ip.is_ipv4() {
                            nexthop = sn.gateway;
                        }
                    }
                }
                network_ids.insert(&gp.row.network_id);
                Some(RouterGateway {
                    network_id: gp.row.network_id.clone(),
                    port_id: gp.row.id.clone(),
                    mac: gp.row.mac_address.clone(),
                    ips: cidrs,
                    nexthop,
                    enable_snat: r.enable_snat,
                })
            });
            let mut interfaces = Vec::new();
            for leg in legs
                .iter()
                .filter(|p| p.row.device_owner == OWNER_ROUTER_INTERFACE)
            {
                network_ids.insert(&leg.row.network_id);
                for f in &leg.model.fixed_ips {
                    let Some(sn) = s.subnets.iter().find(|sn| sn.row.id == f.subnet_id) else {
                        continue;
                    };
                    interfaces.push(RouterInterface {
                        port_id: leg.row.id.clone(),
                        network_id: leg.row.network_id.clone(),
                        subnet_id: f.subnet_id.clone(),
                        mac: leg.row.mac_address.clone(),
                        ip: Cidr {
                            addr: f.ip,
                            prefix: sn.cidr.prefix,
                        },
                    });
                }
            }
            let routes: Vec<Route> = serde_json::from_str(&r.routes).unwrap_or_default();
            state.routers.push(Router {
                id: r.id.clone(),
                project_id: r.project_id.clone(),
                admin_state_up: r.admin_state_up,
                gateway,
                interfaces,
                routes: routes
                    .iter()
                    .filter_map(|x| {
                        Some(HostRoute {
                            destination: addr::parse_cidr(&x.destination)?,
                            nexthop: addr::parse_ip(&x.nexthop)?,
                        })
                    })
                    .collect(),
                floating_ips: s
                    .fips
                    .iter()
                    .filter(|f| f.router_id.as_deref() == Some(r.id.as_str()))
                    .filter_map(|f| {
                        Some(FloatingIp {
                            id: f.id.clone(),
                            floating_ip: addr::parse_ip(&f.floating_ip_address)?,
                            fixed_ip: addr::parse_ip(f.fixed_ip_address.as_deref()?)?,
                            port_id: f.port_id.clone()?,
                        })
                    })
                    .collect(),
            });
        }
    }

    // Networks with a port, a router leg or a DHCP port here.
    for &nid in &network_ids {
        let Some(n) = s.networks.get(nid) else {
            continue;
        };
        let segment = match n.network_type.as_str() {
            "flat" => Segment::Flat {
                physical_network: n.physical_network.clone().unwrap_or_default(),
                interface: n
                    .physical_network
                    .as_deref()
                    .and_then(&interface)
                    .unwrap_or_default(),
            },
            "vlan" => Segment::Vlan {
                physical_network: n.physical_network.clone().unwrap_or_default(),
                interface: n
                    .physical_network
                    .as_deref()
                    .and_then(&interface)
                    .unwrap_or_default(),
                vlan_id: n.segmentation_id.unwrap_or(0) as u16,
            },
            "vxlan" => Segment::Vxlan {
                vni: n.segmentation_id.unwrap_or(0) as u32,
            },
            _ => Segment::Local,
        };
        let dhcp_ips: Vec<FixedIp> = Snapshot::under(&s.by_network, nid)
            .filter(|p| p.row.device_owner == OWNER_DHCP)
            .flat_map(|p| p.model.fixed_ips.iter().cloned())
            .collect();
        let subnets = s
            .subnets
            .iter()
            .filter(|sn| sn.row.network_id == *nid)
            .map(|sn| netmodel::Subnet {
                id: sn.row.id.clone(),
                cidr: sn.cidr,
                gateway_ip: sn.gateway,
                enable_dhcp: sn.row.enable_dhcp,
                dns_nameservers: sn.dns.clone(),
                host_routes: sn
                    .routes
                    .iter()
                    .map(|(d, n)| HostRoute {
                        destination: *d,
                        nexthop: *n,
                    })
                    .collect(),
                dhcp_server_ip: if sn.row.enable_dhcp {
                    dhcp_ips
                        .iter()
                        .find(|f| f.subnet_id == sn.row.id)
                        .map(|f| f.ip)
                } else {
                    None
                },
            })
            .collect();
        let (mut remote_ports, mut remote_hosts) = (Vec::new(), BTreeSet::new());
        if matches!(segment, Segment::Vxlan { .. }) {
            for p in Snapshot::under(&s.by_network, nid)
                .filter(|p| !p.row.host_id.is_empty() && p.row.host_id != host)
            {
                let Some(Some(ip)) = s.hosts.get(&p.row.host_id) else {
                    continue;
                };
                remote_ports.push(RemotePort {
                    mac: p.row.mac_address.clone(),
                    host_ip: *ip,
                });
                remote_hosts.insert(*ip);
            }
        }
        state.networks.push(netmodel::Network {
            id: n.id.clone(),
            project_id: n.project_id.clone(),
            mtu: n.mtu as u32,
            segment,
            external: n.external,
            admin_state_up: n.admin_state_up,
            subnets,
            conntrack_zone: n.conntrack_zone as u16,
            remote_ports,
            remote_hosts: remote_hosts.into_iter().collect(),
        });
    }
    // Stable orders, so equal states compare equal.
    state.ports.sort_by(|a, b| a.id.cmp(&b.id));
    state.routers.sort_by(|a, b| a.id.cmp(&b.id));
    state
}
