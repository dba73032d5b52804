//! Network logic: allocation of segments, addresses and MACs, the default
//! security group, router legs and floating IPs, quotas, policy checks on
//! loaded resources, and the controller side of the agent contract.
//! Handlers in `crate::api` parse requests and render Neutron's JSON; SQL
//! lives in `crate::store`.

pub mod addr;
pub mod control;
pub mod fault;
pub mod floatingip;
pub mod ipam;
pub mod metadata;
pub mod network;
pub mod port;
pub mod quota;
pub mod router;
pub mod secgroup;
pub mod subnet;
pub mod tags;
pub mod view;

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use api::{AuthContext, Error, Target};
use store::Pool;

use crate::store as db;

pub use fault::db as db_err;
pub use quota::Quotas;

/// Settings of the network service (Neutron's option names in comments).
#[derive(Debug, Clone)]
pub struct Config {
    /// The externally reachable base URL, for `links`.
    pub public_url: String,
    /// This node's name: where routers and DHCP ports are scheduled in the
    /// all-in-one (`[DEFAULT] host`).
    pub host: String,
    /// VXLAN VNIs for tenant networks, inclusive (`[ml2_type_vxlan] vni_ranges`).
    pub vni_range: (u32, u32),
    /// Physical network name → host interface (`bridge_mappings`); flat and
    /// VLAN networks may use only these names.
    pub physical_networks: Vec<(String, String)>,
    /// The tunnel (VXLAN underlay) address of this host (`local_ip`).
    pub tunnel_ip: Option<IpAddr>,
    /// Default quotas (`[quotas] quota_*`).
    pub quotas: Quotas,
    /// MTU of physical networks (`global_physnet_mtu`).
    pub global_physnet_mtu: u32,
    /// An agent not heard from for this long is shown dead (`agent_down_time`).
    pub agent_down_time: Duration,
    /// How often to look for writes made by other controllers.
    pub watch_interval: Duration,
    /// `max_allowed_address_pair`.
    pub max_allowed_address_pairs: usize,
    /// `max_fixed_ips_per_port`.
    pub max_fixed_ips_per_port: usize,
    /// `max_dns_nameservers`.
    pub max_dns_nameservers: usize,
    /// `max_subnet_host_routes`.
    pub max_subnet_host_routes: usize,
    /// `max_routes` (router extra routes).
    pub max_routes: usize,
    /// Most resources one bulk create may carry. Neutron has no such
    /// option (only its body size bounds a batch), but a batch runs in one
    /// transaction holding SQLite's only writer, so its size is bounded.
    pub max_bulk_create: usize,
    /// The policy with an operator's overrides applied; `None`: the
    /// defaults of `crate::policy`. Taken by [`Network::new`].
    pub policy: Option<api::Enforcer>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            public_url: "http://127.0.0.1:5000".into(),
            host: "localhost".into(),
            vni_range: (1000, 1999),
            physical_networks: Vec::new(),
            tunnel_ip: None,
            quotas: Quotas::default(),
            global_physnet_mtu: 1500,
            agent_down_time: Duration::from_secs(75),
            watch_interval: Duration::from_secs(1),
            max_allowed_address_pairs: 10,
            max_fixed_ips_per_port: 5,
            max_dns_nameservers: 5,
            max_subnet_host_routes: 20,
            max_routes: 30,
            max_bulk_create: 1000,
            policy: None,
        }
    }
}

/// The network service.
pub struct Network {
    pub pool: Pool,
    pub cfg: Config,
    pub policy: api::Enforcer,
    /// The latest network revision this controller knows; node agents'
    /// long polls wait on it.
    revision: tokio::sync::watch::Sender<u64>,
    /// Hosts whose agent is inside a long poll right now (they are alive
    /// even if their last heartbeat is older than `agent_down_time`).
    polling: Mutex<std::collections::HashMap<String, usize>>,
    /// The in-memory copy host states are computed from.
    host_cache: tokio::sync::Mutex<Option<control::HostCache>>,
}

/// A network write in progress: the transaction and the revision it took.
pub struct Tx {
    pub tx: store::Tx<'static>,
    pub revision: u64,
    pub now: i64,
}

impl std::ops::Deref for Tx {
    type Target = store::Tx<'static>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Tx {
    /// The connection, for store functions.
    pub fn c(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.tx
    }
}

impl Network {
    /// Builds the service over an open database.
    pub async fn new(pool: Pool, mut cfg: Config) -> Result<std::sync::Arc<Network>, Error> {
        let rev = db::revision(&pool).await.map_err(db_err)?;
        fill_ip_keys(&pool).await?;
        let (tx, _) = tokio::sync::watch::channel(rev);
        let policy = cfg.policy.take().unwrap_or_else(crate::policy::enforcer);
        Ok(std::sync::Arc::new(Network {
            pool,
            cfg,
            policy,
            revision: tx,
            polling: Mutex::new(Default::default()),
            host_cache: tokio::sync::Mutex::new(None),
        }))
    }

    /// Begins a network write: bumps the revision first, which takes the
    /// write lock, so everything read afterwards in this transaction stays
    /// true until it commits.
    pub async fn begin(&self) -> Result<Tx, Error> {
        let mut tx = self.pool.begin().await.map_err(|e| Error::internal(&e))?;
        let revision = db::bump(&mut tx).await.map_err(db_err)?;
        Ok(Tx {
            tx,
            revision,
            now: store::now_micros(),
        })
    }

    /// Commits a network write and wakes the agents' long polls.
    pub async fn commit(&self, tx: Tx) -> Result<(), Error> {
        tx.tx.commit().await.map_err(|e| Error::internal(&e))?;
        self.revision.send_if_modified(|r| {
            if tx.revision > *r {
                *r = tx.revision;
                true
            } else {
                false
            }
        });
        self.after_commit(tx.revision).await;
        Ok(())
    }

    /// The latest revision known here.
    pub fn current_revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// Runs forever: notices writes made by other controllers sharing the
    /// database and wakes this controller's long polls for them.
    pub async fn watch_db(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(self.cfg.watch_interval).await;
            match db::revision(&self.pool).await {
                Ok(rev) => {
                    self.revision.send_if_modified(|r| {
                        if rev > *r {
                            *r = rev;
                            true
                        } else {
                            false
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "network revision check failed"),
            }
        }
    }

    /// The URL of a network API path, for `links`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/network/v2.0{}",
            self.cfg.public_url.trim_end_matches('/'),
            path
        )
    }

    /// The host interface of a physical network, if mapped.
    pub fn physical_interface(&self, physnet: &str) -> Option<&str> {
        self.cfg
            .physical_networks
            .iter()
            .find(|(n, _)| n == physnet)
            .map(|(_, i)| i.as_str())
    }

    // -- policy --------------------------------------------------------------

    /// Whether the caller is an admin in Neutron's sense (sees every
    /// project's resources).
    pub fn is_admin(&self, ctx: &AuthContext) -> bool {
        self.policy.check("context_is_admin", ctx, &Target::new())
    }

    pub fn allowed(&self, ctx: &AuthContext, action: &str, target: &Target) -> bool {
        self.policy.check(action, ctx, target)
    }

    /// 403 `PolicyNotAuthorized` unless allowed.
    pub fn enforce(&self, ctx: &AuthContext, action: &str, target: &Target) -> Result<(), Error> {
        if self.allowed(ctx, action, target) {
            Ok(())
        } else {
            Err(fault::policy(action))
        }
    }

    /// Checks an attribute-level rule (`create_network:shared`) when one is
    /// written; attributes without a rule need nothing beyond the action's.
    pub fn enforce_attr(
        &self,
        ctx: &AuthContext,
        rule: &str,
        target: &Target,
    ) -> Result<(), Error> {
        if self.policy.has(rule) {
            self.enforce(ctx, rule, target)
        } else {
            Ok(())
        }
    }

    /// For changes to an existing resource: a caller who may not even see
    /// it gets its 404, so that existence does not leak; one who may see it
    /// but not change it gets 403 (Neutron's behaviour).
    pub fn enforce_or_hide(
        &self,
        ctx: &AuthContext,
        action: &str,
        get_action: &str,
        target: &Target,
        not_found: impl FnOnce() -> Error,
    ) -> Result<(), Error> {
        if self.allowed(ctx, action, target) {
            Ok(())
        } else if self.allowed(ctx, get_action, target) {
            Err(fault::policy(action))
        } else {
            Err(not_found())
        }
    }

    /// The project a new resource belongs to: the body's `project_id` or
    /// `tenant_id` (which must agree), else the caller's project.
    pub fn owner_for_create(
        &self,
        ctx: &AuthContext,
        requested: Option<String>,
    ) -> Result<String, Error> {
        match requested.or_else(|| ctx.project_id().map(str::to_string)) {
            Some(p) => Ok(p),
            None => Err(fault::bad_request(
                "Failed to parse request. Required attribute 'project_id' not specified",
            )),
        }
    }

    /// Refuses a bulk create of more than `max_bulk_create` resources (400)
    /// and answers how many of the batch each project would own, for one
    /// quota check per project instead of one per element.
    pub fn bulk_owners<'r>(
        &self,
        ctx: &AuthContext,
        plural: &str,
        requested: impl ExactSizeIterator<Item = &'r Option<String>>,
    ) -> Result<(Vec<String>, std::collections::HashMap<String, i64>), Error> {
        let n = requested.len();
        if n > self.cfg.max_bulk_create {
            return Err(fault::bad_request(format!(
                "Bulk request of {n} {plural} exceeds the limit of {} per request",
                self.cfg.max_bulk_create
            )));
        }
        let mut owners = Vec::with_capacity(n);
        let mut counts = std::collections::HashMap::new();
        for r in requested {
            let owner = self.owner_for_create(ctx, r.clone())?;
            *counts.entry(owner.clone()).or_insert(0) += 1;
            owners.push(owner);
        }
        Ok((owners, counts))
    }

    // -- agents ----------------------------------------------------------------

    pub(crate) fn poll_started(&self, host: &str) {
        let mut p = self.polling.lock().unwrap_or_else(|e| e.into_inner());
        *p.entry(host.to_string()).or_default() += 1;
    }

    pub(crate) fn poll_ended(&self, host: &str) {
        let mut p = self.polling.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = p.get_mut(host) {
            *n -= 1;
            if *n == 0 {
                p.remove(host);
            }
        }
    }

    pub(crate) fn is_polling(&self, host: &str) -> bool {
        self.polling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(host)
    }

    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

/// Gives allocations written before `ip_allocation.ip_key` existed their
/// key (IPAM counts by it), in one transaction.
async fn fill_ip_keys(pool: &Pool) -> Result<(), Error> {
    let missing = db::port::allocations_without_key(pool)
        .await
        .map_err(db_err)?;
    if missing.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(|e| Error::internal(&e))?;
    for a in &missing {
        if let Some(ip) = addr::parse_ip(&a.ip_address) {
            db::port::set_key(&mut *tx, a, &addr::sort_key(addr::to_u128(ip)))
                .await
                .map_err(db_err)?;
        }
    }
    tx.commit().await.map_err(|e| Error::internal(&e))?;
    tracing::info!(count = missing.len(), "fixed IPs given their sort key");
    Ok(())
}

/// `True`/`False` as Neutron's policy targets write booleans.
pub fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// A new dashed UUID.
pub fn new_id() -> String {
    store::new_uuid()
}
