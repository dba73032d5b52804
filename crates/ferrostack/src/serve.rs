//! `ferrostack serve`: opens the store, bootstraps, mounts every service
//! under its path prefix on one listener, and shuts down gracefully.
//! A library so that the test kit starts exactly the same stack.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::json;

/// The services this binary serves, for the catalog.
const SERVICES: &[identity::CatalogService] = &[
    identity::CatalogService {
        kind: "identity",
        name: "keystone",
        path: "/identity",
    },
    identity::CatalogService {
        kind: "image",
        name: "glance",
        path: "/image",
    },
    identity::CatalogService {
        kind: "network",
        name: "neutron",
        path: "/network",
    },
];

/// Settings of `ferrostack serve`, independent of how they were given.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub admin_password: Option<String>,
    pub token_expiration: i64,
    pub password_hash_rounds: u32,
    pub lockout_failure_attempts: Option<u32>,
    pub lockout_duration: i64,
    /// `[security_compliance] unique_last_password_count` (0: off).
    pub unique_last_password_count: u32,
    /// `[security_compliance] minimum_password_age`, days (0: off).
    pub minimum_password_age: u32,
    pub key_repository: Option<PathBuf>,
    /// Images a project may own; `None`: unlimited.
    pub image_quota_count: Option<u64>,
    /// Bytes of image data a project may store; `None`: unlimited.
    pub image_quota_bytes: Option<u64>,
    /// Largest single image, bytes.
    pub image_size_cap: u64,
    /// Lets `web-download` fetch from loopback. Only tests set it (they
    /// serve images from 127.0.0.1); there is no command-line option.
    pub image_import_allow_loopback: bool,
    /// Import timeouts and concurrency (`image::ImportLimits`).
    pub image_import_limits: image::ImportLimits,
    /// This node's name: routers and DHCP ports are scheduled here.
    pub host: String,
    /// VXLAN VNIs for tenant networks, inclusive.
    pub vni_range: (u32, u32),
    /// Physical network name → host interface, for flat and VLAN networks.
    pub physical_networks: Vec<(String, String)>,
    /// This host's VXLAN underlay address, if VXLAN crosses hosts.
    pub tunnel_ip: Option<std::net::IpAddr>,
    /// Default network quotas per project.
    pub network_quotas: network::Quotas,
    /// Most resources in one network bulk create.
    pub network_max_bulk_create: usize,
    /// DER certificates `web-download` trusts for https besides the
    /// built-in Mozilla roots. Only tests set it (they serve https with a
    /// certificate they make); there is no command-line option.
    pub image_import_extra_root_certs: Vec<Vec<u8>>,
    /// The node agent this process runs, if any (it needs root).
    pub agent: Option<AgentSettings>,
    /// Timeouts for slow and idle clients, and the connection limit.
    pub http: api::server::Limits,
    /// Policy files given explicitly, by service (`--policy-file
    /// SERVICE=PATH`); a service not named here reads
    /// `DATA_DIR/policy/SERVICE.yaml` (or `.json`) when there is one.
    pub policy_files: Vec<(String, PathBuf)>,
}

/// Settings of the in-process node agent.
#[derive(Debug, Clone, Default)]
pub struct AgentSettings {
    /// The named namespace holding the host's bridges; `None`: this
    /// process's own (production). Tests give each server its own.
    pub host_netns: Option<String>,
    /// Scope of the agent's namespace names (`agent::names::Scope`);
    /// empty in production.
    pub netns_scope: String,
    /// The metadata proxy's connections per caller and answer cache.
    pub metadata_limits: agent::metadata::Limits,
}

impl Settings {
    /// Defaults for a data directory (the CLI's defaults).
    pub fn new(data_dir: PathBuf) -> Settings {
        Settings {
            data_dir,
            listen: "0.0.0.0:5000".parse().expect("literal address"),
            public_url: None,
            admin_password: None,
            token_expiration: 3600,
            password_hash_rounds: 12,
            lockout_failure_attempts: None,
            lockout_duration: 1800,
            unique_last_password_count: 0,
            minimum_password_age: 0,
            key_repository: None,
            image_quota_count: None,
            image_quota_bytes: None,
            image_size_cap: image::Config::default().image_size_cap,
            image_import_allow_loopback: false,
            image_import_limits: image::ImportLimits::default(),
            host: local_hostname(),
            vni_range: (1000, 1999),
            physical_networks: Vec::new(),
            tunnel_ip: None,
            network_quotas: network::Quotas::default(),
            network_max_bulk_create: 1000,
            image_import_extra_root_certs: Vec::new(),
            agent: None,
            http: api::server::Limits::default(),
            policy_files: Vec::new(),
        }
    }
}

/// The machine's host name (the default `--host`).
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A running server.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    pub public_url: String,
    pub identity: Arc<identity::Identity>,
    pub image: Arc<image::Images>,
    /// The network service; it implements `netmodel::NetworkControl`, the
    /// interface the node agent watches its host through.
    pub network: Arc<network::Network>,
    /// The admin password, when this start generated it.
    pub generated_password: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    watcher: tokio::task::JoinHandle<()>,
    network_watcher: tokio::task::JoinHandle<()>,
    agent: Option<RunningAgent>,
}

/// The in-process node agent and its local socket.
struct RunningAgent {
    task: agent::AbortOnDrop,
    _socket: agent::AbortOnDrop,
}

impl Running {
    /// Stops accepting, finishes requests in flight, and returns.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.watcher.abort();
        self.network_watcher.abort();
        (&mut self.task).await??;
        // What the agent built stays on the host: the data plane keeps
        // forwarding, and the next start picks it up.
        if let Some(a) = self.agent.take() {
            a.task.stop().await;
        }
        Ok(())
    }

    /// Runs until SIGINT/SIGTERM, then shuts down gracefully.
    pub async fn until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        self.stop().await
    }
}

/// Opens the store, bootstraps, binds the listener and starts serving.
pub async fn start(args: Settings) -> anyhow::Result<Running> {
    let started = Instant::now();
    create_private_dir(&args.data_dir)?;
    let policies = load_policies(&args)?;
    let pool = store::open(&args.data_dir)
        .await
        .context("opening the database")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let http = fit_to_fd_limit(args.http);
    let addr = listener.local_addr()?;
    let public_url = args.public_url.clone().unwrap_or_else(|| {
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        format!("http://{host}:{}", addr.port())
    });
    let key_dir = args
        .key_repository
        .clone()
        .unwrap_or_else(|| args.data_dir.join("fernet-keys"));
    let keys = identity::Keys::open(key_dir.clone())
        .with_context(|| format!("opening the key repository {}", key_dir.display()))?;
    let cfg = identity::Config {
        public_url: public_url.clone(),
        token_expiration: args.token_expiration,
        password_hash_rounds: args.password_hash_rounds,
        lockout_failure_attempts: args.lockout_failure_attempts,
        lockout_duration: args.lockout_duration,
        policy: Some(policies.identity),
        unique_last_password_count: args.unique_last_password_count,
        minimum_password_age: args.minimum_password_age,
        ..Default::default()
    };
    let ident = identity::Identity::new(pool, cfg, keys)
        .await
        .map_err(|e| anyhow::anyhow!("starting identity: {e}"))?;
    let (password, generated) = match &args.admin_password {
        Some(p) => (p.clone(), false),
        None => {
            let raw: [u8; 18] = rand::random();
            (
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
                true,
            )
        }
    };
    // A given password is the admin's from now on (reset if it differs, as
    // `keystone-manage bootstrap` does), so the clouds.yaml written below
    // always holds a password that works.
    let admin_password = if generated {
        identity::AdminPassword::Generated(&password)
    } else {
        identity::AdminPassword::Given(&password)
    };
    let report = ident
        .bootstrap(admin_password, SERVICES)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;
    if report.reset_admin_password {
        tracing::info!("reset the password of user admin to --admin-password");
    }
    let mut generated_password = None;
    if report.created_admin || args.admin_password.is_some() {
        write_client_config(&args.data_dir, &public_url, &password)?;
        if report.created_admin && generated {
            generated_password = Some(password);
        }
    }
    tracing::info!(
        clouds_yaml = %args.data_dir.join("clouds.yaml").display(),
        openrc = %args.data_dir.join("admin-openrc").display(),
        "client configuration for the admin"
    );
    let images = image::Images::new(
        ident.pool.clone(),
        image::Config {
            public_url: public_url.clone(),
            data_dir: args.data_dir.clone(),
            quota_image_count: args.image_quota_count,
            quota_image_bytes: args.image_quota_bytes,
            image_size_cap: args.image_size_cap,
            import_allow_loopback: args.image_import_allow_loopback,
            import_extra_root_certs: args.image_import_extra_root_certs.clone(),
            import_limits: args.image_import_limits.clone(),
            policy: Some(policies.image),
            ..Default::default()
        },
    )
    .context("opening the image store")?;
    images
        .recover()
        .await
        .map_err(|e| anyhow::anyhow!("image recovery: {e}"))?;
    let net = network::Network::new(
        ident.pool.clone(),
        network::Config {
            public_url: public_url.clone(),
            host: args.host.clone(),
            vni_range: args.vni_range,
            physical_networks: args.physical_networks.clone(),
            tunnel_ip: args.tunnel_ip,
            quotas: args.network_quotas.clone(),
            max_bulk_create: args.network_max_bulk_create,
            policy: Some(policies.network),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting network: {e}"))?;
    let agent = match &args.agent {
        Some(a) => Some(start_agent(&args, a, net.clone())?),
        None => None,
    };
    let watcher = tokio::spawn(ident.clone().watch());
    let network_watcher = tokio::spawn(net.clone().watch_db());
    let app = router(ident.clone(), images.clone(), net.clone(), &public_url);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(api::server::serve(
        listener,
        app,
        http,
        error_style,
        async move {
            let _ = rx.await;
        },
    ));
    tracing::info!(listen = %addr, public_url = %public_url, startup_ms = started.elapsed().as_millis() as u64, "ferrostack ready");
    Ok(Running {
        addr,
        public_url,
        identity: ident,
        image: images,
        network: net,
        generated_password,
        shutdown: Some(tx),
        task,
        watcher,
        network_watcher,
        agent,
    })
}

/// The services whose policy an operator may override: the names of
/// `--policy-file SERVICE=PATH` and of `DATA_DIR/policy/SERVICE.yaml`.
/// One file per service, as each OpenStack service reads its own
/// `policy.yaml`: their rule names overlap (`owner`, `context_is_admin`).
pub const POLICY_SERVICES: &[&str] = &["identity", "image", "network"];

/// Each service's rules with the operator's overrides applied.
struct Policies {
    identity: api::Enforcer,
    image: api::Enforcer,
    network: api::Enforcer,
}

/// Reads and validates every service's policy file before anything else
/// starts, so a bad rule stops the start with its name and file.
fn load_policies(args: &Settings) -> anyhow::Result<Policies> {
    for (service, path) in &args.policy_files {
        if !POLICY_SERVICES.contains(&service.as_str()) {
            anyhow::bail!(
                "policy file {}: {service:?} is not a service of this server (one of {})",
                path.display(),
                POLICY_SERVICES.join(", ")
            );
        }
        if args
            .policy_files
            .iter()
            .filter(|(s, _)| s == service)
            .count()
            > 1
        {
            anyhow::bail!("more than one policy file for the {service} service");
        }
    }
    // `renamed`: (old name, new name) of rules a service renamed; an
    // override of an old name applies to the new one unless the file also
    // names the new one (oslo.policy's deprecated rules).
    let load = |service: &str,
                defaults: api::Enforcer,
                renamed: &[(&str, &str)]|
     -> anyhow::Result<api::Enforcer> {
        let explicit = args
            .policy_files
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, p)| p.clone());
        let path = match explicit {
            Some(p) => p,
            None => {
                let dir = args.data_dir.join("policy");
                match ["yaml", "json"]
                    .iter()
                    .map(|ext| dir.join(format!("{service}.{ext}")))
                    .find(|p| p.exists())
                {
                    Some(p) => p,
                    None => return Ok(defaults),
                }
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the {service} policy file {}", path.display()))?;
        let bad = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!("{service} policy file {}: {e}", path.display())
        };
        let mut rules = api::policy::parse_file(&text).map_err(|e| bad(&e))?;
        for (old, new) in renamed {
            let Some(text) = rules.iter().find(|(n, _)| n == old).map(|(_, t)| t.clone()) else {
                continue;
            };
            tracing::warn!(
                file = %path.display(),
                "policy rule {old:?} is deprecated: it is now {new:?}"
            );
            if !rules.iter().any(|(n, _)| n == new) {
                rules.push((new.to_string(), text));
            }
        }
        let mut policy = defaults;
        let unknown = policy.apply_overrides(&rules).map_err(|e| bad(&e))?;
        for name in unknown
            .into_iter()
            .filter(|n| !renamed.iter().any(|(old, _)| old == n))
        {
            tracing::warn!(
                file = %path.display(),
                "policy rule {name:?} is not one of the {service} service's rules: \
                 kept for other rules to refer to (or is it a typo?)"
            );
        }
        tracing::info!(file = %path.display(), rules = rules.len(), "{service} policy overrides applied");
        Ok(policy)
    };
    Ok(Policies {
        identity: load("identity", identity::policy::enforcer(), &[])?,
        image: load("image", image::policy::enforcer(), &[])?,
        network: load(
            "network",
            network::policy::enforcer(),
            network::policy::DEPRECATED_NAMES,
        )?,
    })
}

/// The state directory of the in-process agent.
pub fn agent_state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("agent")
}

/// Starts the node agent for `args.host` over the real host drivers, with
/// the network service in this process as its controller.
fn start_agent(
    args: &Settings,
    a: &AgentSettings,
    net: Arc<network::Network>,
) -> anyhow::Result<RunningAgent> {
    let state_dir = agent_state_dir(&args.data_dir);
    create_private_dir(&state_dir)?;
    let host_netns = match &a.host_netns {
        Some(n) => hostlink::Netns::Named(n.clone()),
        None => hostlink::Netns::Current,
    };
    let mut cfg = agent::Config::new(&state_dir);
    cfg.host_netns = host_netns.clone();
    cfg.netns_scope = a.netns_scope.clone();
    cfg.metadata_limits = a.metadata_limits;
    cfg.vxlan_local = match args.tunnel_ip {
        Some(std::net::IpAddr::V4(ip)) => Some(ip),
        // The command line refuses it too; a library caller gets the same.
        Some(std::net::IpAddr::V6(ip)) => {
            anyhow::bail!("tunnel address {ip}: VXLAN tunnels run over IPv4 only")
        }
        None => None,
    };
    let control: Arc<dyn netmodel::NetworkControl> = net;
    let (host, ctl) = (args.host.clone(), control.clone());
    let make = move || {
        agent::Agent::new(
            host.clone(),
            ctl.clone(),
            Arc::new(hostlink::Kernel::new()),
            Arc::new(nft::Nft::new(host_netns.clone())),
            cfg.clone(),
        )
    };
    let node =
        make().map_err(|e| anyhow::anyhow!("starting the network agent: {}", agent::Chain(&e)))?;
    let explainer = node.explainer();
    let socket = agent::socket::serve(&agent::socket::socket_path(&state_dir), explainer.clone())
        .context("opening the agent's socket")?;
    // The first agent is the one made above; restarts make new ones that
    // update the same explainer (see agent::supervise).
    let mut first = Some(node);
    let task = tokio::spawn(agent::supervise::supervise(
        args.host.clone(),
        control,
        move || match first.take() {
            Some(a) => Ok(a),
            None => make().map(|a| a.with_explainer(explainer.clone())),
        },
        agent::supervise::Backoff::default(),
    ));
    tracing::info!(host = %args.host, state_dir = %state_dir.display(), "network agent started");
    Ok(RunningAgent {
        task: agent::AbortOnDrop(task),
        _socket: socket,
    })
}

/// Every service under its prefix, plus a discovery document at `/`.
pub fn router(
    ident: Arc<identity::Identity>,
    images: Arc<image::Images>,
    net: Arc<network::Network>,
    public_url: &str,
) -> Router {
    let base = public_url.trim_end_matches('/');
    let index = json!({
        "services": [
            {"type": "identity", "href": format!("{base}/identity")},
            {"type": "image", "href": format!("{base}/image")},
            {"type": "network", "href": format!("{base}/network")}
        ]
    });
    Router::new()
        .route("/", get(move || async move { axum::Json(index) }))
        .nest("/image", image::api::router(images, ident.clone()))
        .nest("/network", network::api::router(net, ident.clone()))
        .nest("/identity", identity::api::router(ident))
        .layer(axum::middleware::from_fn(api::request::request_id_and_log))
}

/// The error body's shape for a request refused before routing, by the
/// service its path is under (Keystone's for anything else).
fn error_style(path: &str) -> api::ErrorStyle {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
    };
    if under("/image") {
        api::ErrorStyle::Glance
    } else if under("/network") {
        api::ErrorStyle::Neutron
    } else {
        api::ErrorStyle::Keystone
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `clouds.yaml` (cloud `ferrostack`) and `admin-openrc`, mode 0600.
fn write_client_config(dir: &Path, public_url: &str, password: &str) -> anyhow::Result<()> {
    let auth_url = format!("{}/identity", public_url.trim_end_matches('/'));
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let clouds = format!(
        "clouds:\n  ferrostack:\n    auth:\n      auth_url: {}\n      username: admin\n      password: {}\n      project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n",
        q(&auth_url),
        q(password)
    );
    let sh = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let openrc = format!(
        "export OS_AUTH_URL={}\nexport OS_USERNAME=admin\nexport OS_PASSWORD={}\nexport OS_PROJECT_NAME=admin\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_DOMAIN_NAME=Default\nexport OS_REGION_NAME=RegionOne\nexport OS_IDENTITY_API_VERSION=3\nexport OS_INTERFACE=public\n",
        sh(&auth_url),
        sh(password)
    );
    write_private(&dir.join("clouds.yaml"), &clouds)?;
    write_private(&dir.join("admin-openrc"), &openrc)?;
    Ok(())
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Descriptors kept for everything but client connections: the database,
/// image files being read or written, the agent's sockets, logs.
const FD_HEADROOM: u64 = 128;

/// Raises the soft limit on open descriptors to the hard one (the soft
/// limit is often 1024, below the default connection limit), and lowers
/// the connection limit, with a warning, to what the descriptor limit
/// leaves room for.
fn fit_to_fd_limit(mut http: api::server::Limits) -> api::server::Limits {
    let Some(nofile) = raise_fd_limit() else {
        return http;
    };
    let fit = connections_within(http.max_connections, nofile);
    if fit < http.max_connections {
        tracing::warn!(
            requested = http.max_connections,
            allowed = fit,
            open_files_limit = nofile,
            "lowering --http-max-connections to fit the open files limit (RLIMIT_NOFILE)"
        );
        http.max_connections = fit;
    }
    http
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit in force, `None` if it cannot be read.
fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "reading the open files limit failed");
            return None;
        }
    };
    if soft >= hard {
        return Some(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Some(hard),
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "raising the open files limit failed");
            Some(soft)
        }
    }
}

/// The connections `nofile` descriptors leave room for, at most `max`.
fn connections_within(max: usize, nofile: u64) -> usize {
    let room = nofile.saturating_sub(FD_HEADROOM).max(1);
    (max as u64).min(room) as usize
}

#[cfg(test)]
mod fd_limit_tests {
    use super::*;
    use nix::sys::resource::{getrlimit, setrlimit, Resource};

    #[test]
    fn the_soft_fd_limit_is_raised_and_connections_fit_under_it() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // As on most hosts: a soft limit of 1024 under a higher hard one.
        let low = hard.min(1024);
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        let http = fit_to_fd_limit(api::server::Limits::default());
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
        assert_eq!(
            http.max_connections,
            connections_within(1024, hard),
            "{hard}"
        );
        // Capped below the limit, with room for the rest of the process.
        assert_eq!(connections_within(1024, 1024), 1024 - 128);
        assert_eq!(connections_within(1024, 20000), 1024);
        assert_eq!(connections_within(1024, 10), 1);
    }
}
