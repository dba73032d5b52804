//! Command-line interface. Option names follow Keystone's configuration
//! options where one exists.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ferrostack",
    version,
    about = "An OpenStack-compatible cloud in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the all-in-one: every API service on one listener.
    Serve(Box<ServeArgs>),
    /// Manage the Fernet key repository.
    Keys(KeysArgs),
    /// Explain a port's data path on this host in words: its device and
    /// bridge, VXLAN or uplink, security-group chains, DHCP, router
    /// namespace and NAT rules (asks the running agent).
    ExplainPort(ExplainPortArgs),
}

#[derive(Args, Debug)]
pub struct ExplainPortArgs {
    /// The port's id.
    pub port_id: String,
    /// The data directory of the running `ferrostack serve`.
    #[arg(
        long,
        env = "FERROSTACK_DATA_DIR",
        default_value = "/var/lib/ferrostack"
    )]
    pub data_dir: PathBuf,
}

/// Whether `serve` runs the node agent.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMode {
    /// Run it when root (it changes the host's network), else warn.
    Auto,
    /// Run it; fail to start without the privileges it needs.
    On,
    /// Do not run it: ports stay DOWN (an API-only controller).
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where the database, keys and generated client configuration live.
    #[arg(
        long,
        env = "FERROSTACK_DATA_DIR",
        default_value = "/var/lib/ferrostack"
    )]
    pub data_dir: PathBuf,
    /// The address of the one HTTP listener.
    #[arg(long, env = "FERROSTACK_LISTEN", default_value = "0.0.0.0:5000")]
    pub listen: SocketAddr,
    /// The base URL clients reach this server at (catalog endpoints use it).
    /// Defaults to http://<listen address>, with 0.0.0.0 read as 127.0.0.1.
    #[arg(long, env = "FERROSTACK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The admin user's password at first start; generated and printed once
    /// if not given.
    #[arg(long, env = "FERROSTACK_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Token lifetime in seconds ([token] expiration).
    #[arg(long, default_value_t = 3600)]
    pub token_expiration: i64,
    /// bcrypt cost for password hashes ([identity] password_hash_rounds).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub password_hash_rounds: u32,
    /// Lock a user out after this many failed logins
    /// ([security_compliance] lockout_failure_attempts); off when absent.
    #[arg(long)]
    pub lockout_failure_attempts: Option<u32>,
    /// How long a lockout lasts, in seconds ([security_compliance] lockout_duration).
    #[arg(long, default_value_t = 1800)]
    pub lockout_duration: i64,
    /// A user changing their own password may not reuse any of their last N
    /// passwords ([security_compliance] unique_last_password_count); 0: off.
    #[arg(long, default_value_t = 0)]
    pub unique_last_password_count: u32,
    /// Days a user must keep a password they set before changing it again
    /// ([security_compliance] minimum_password_age); 0: off.
    #[arg(long, default_value_t = 0)]
    pub minimum_password_age: u32,
    /// The Fernet key repository (default: DATA_DIR/fernet-keys).
    #[arg(long)]
    pub key_repository: Option<PathBuf>,
    /// Images a project may own (Glance's image_count_total); unlimited
    /// when absent.
    #[arg(long)]
    pub image_quota_images: Option<u64>,
    /// Bytes of image data a project may store (Glance's image_size_total,
    /// in bytes here); unlimited when absent.
    #[arg(long)]
    pub image_quota_bytes: Option<u64>,
    /// Largest single image in bytes ([DEFAULT] image_size_cap).
    #[arg(long, default_value_t = 1 << 40)]
    pub image_size_cap: u64,
    /// This node's name ([DEFAULT] host): routers and DHCP ports are
    /// scheduled here. Defaults to the machine's host name.
    #[arg(long, env = "FERROSTACK_HOST")]
    pub host: Option<String>,
    /// VXLAN VNIs for tenant networks, FIRST:LAST ([ml2_type_vxlan] vni_ranges).
    #[arg(long, default_value = "1000:1999", value_parser = parse_vni_range)]
    pub vni_range: (u32, u32),
    /// A physical network for flat and VLAN provider networks, NAME:IFACE
    /// (bridge_mappings); repeatable.
    #[arg(long = "physical-network", value_parser = parse_physical_network)]
    pub physical_networks: Vec<(String, String)>,
    /// This host's VXLAN underlay address ([vxlan] local_ip).
    #[arg(long)]
    pub tunnel_ip: Option<std::net::IpAddr>,
    /// Run the node agent that builds the network data plane on this host
    /// (bridges, VXLAN, security groups, routers, DHCP, metadata).
    #[arg(long, value_enum, default_value_t = AgentMode::Auto, env = "FERROSTACK_AGENT")]
    pub agent: AgentMode,
    /// The named network namespace holding the agent's bridges (default:
    /// the host's own). For tests that run several clouds on one machine.
    #[arg(long, hide = true)]
    pub agent_netns: Option<String>,
    /// A scope for the agent's namespace names (`fsr-SCOPE-<id>`). For
    /// tests that run several clouds on one machine.
    #[arg(long, hide = true, default_value = "")]
    pub agent_netns_scope: String,
    /// Default networks per project ([quotas] quota_network; -1: unlimited).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub quota_network: i64,
    /// Default subnets per project ([quotas] quota_subnet).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub quota_subnet: i64,
    /// Default ports per project ([quotas] quota_port).
    #[arg(long, default_value_t = 500, allow_negative_numbers = true)]
    pub quota_port: i64,
    /// Default routers per project ([quotas] quota_router).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub quota_router: i64,
    /// Default floating IPs per project ([quotas] quota_floatingip).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    pub quota_floatingip: i64,
    /// Default security groups per project ([quotas] quota_security_group).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub quota_security_group: i64,
    /// Default security group rules per project ([quotas] quota_security_group_rule).
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub quota_security_group_rule: i64,
}

fn parse_vni_range(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not FIRST:LAST"))?;
    let a: u32 = a.parse().map_err(|_| format!("{a:?} is not a VNI"))?;
    let b: u32 = b.parse().map_err(|_| format!("{b:?} is not a VNI"))?;
    if a == 0 || a > b || b > 16_777_215 {
        return Err(format!("{s:?}: VNIs run from 1 to 16777215, FIRST <= LAST"));
    }
    Ok((a, b))
}

fn parse_physical_network(s: &str) -> Result<(String, String), String> {
    let (name, iface) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME:IFACE"))?;
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let ok_iface = !iface.is_empty()
        && iface.len() <= 15
        && iface
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !ok_name || !ok_iface {
        return Err(format!(
            "{s:?}: the name is 1-64 of [A-Za-z0-9-_.], the interface 1-15 of [A-Za-z0-9-_.@]"
        ));
    }
    Ok((name.to_string(), iface.to_string()))
}

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Rotate: the staged key becomes primary, a new staged key is made,
    /// and the oldest keys beyond --max-active-keys are removed.
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    #[arg(
        long,
        env = "FERROSTACK_DATA_DIR",
        default_value = "/var/lib/ferrostack"
    )]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub key_repository: Option<PathBuf>,
    /// Keys kept: staged + primary + secondaries ([fernet_tokens] max_active_keys).
    #[arg(long, default_value_t = 3)]
    pub max_active_keys: usize,
}

impl ServeArgs {
    pub fn into_settings(self) -> anyhow::Result<ferrostack::serve::Settings> {
        let root = nix::unistd::geteuid().is_root();
        let agent = match self.agent {
            AgentMode::Off => None,
            AgentMode::Auto if !root => {
                tracing::warn!(
                    "not running as root: the network agent is off and ports stay DOWN \
                     (--agent off silences this)"
                );
                None
            }
            AgentMode::On if !root => {
                anyhow::bail!("--agent on needs root: the agent changes the host's network")
            }
            _ => Some(ferrostack::serve::AgentSettings {
                host_netns: self.agent_netns,
                netns_scope: self.agent_netns_scope,
            }),
        };
        Ok(ferrostack::serve::Settings {
            data_dir: self.data_dir,
            listen: self.listen,
            public_url: self.public_url,
            admin_password: self.admin_password,
            token_expiration: self.token_expiration,
            password_hash_rounds: self.password_hash_rounds,
            lockout_failure_attempts: self.lockout_failure_attempts,
            lockout_duration: self.lockout_duration,
            unique_last_password_count: self.unique_last_password_count,
            minimum_password_age: self.minimum_password_age,
            key_repository: self.key_repository,
            image_quota_count: self.image_quota_images,
            image_quota_bytes: self.image_quota_bytes,
            image_size_cap: self.image_size_cap,
            image_import_allow_loopback: false,
            host: self.host.unwrap_or_else(ferrostack::serve::local_hostname),
            vni_range: self.vni_range,
            physical_networks: self.physical_networks,
            tunnel_ip: self.tunnel_ip,
            network_quotas: {
                let mut q = network::Quotas::default();
                for (r, v) in [
                    ("network", self.quota_network),
                    ("subnet", self.quota_subnet),
                    ("port", self.quota_port),
                    ("router", self.quota_router),
                    ("floatingip", self.quota_floatingip),
                    ("security_group", self.quota_security_group),
                    ("security_group_rule", self.quota_security_group_rule),
                ] {
                    q.set(r, v);
                }
                q
            },
            image_import_extra_root_certs: Vec::new(),
            agent,
        })
    }
}
