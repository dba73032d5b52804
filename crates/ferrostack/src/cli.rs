//! Command-line interface. Option names follow Keystone's configuration
//! options where one exists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Seconds a web-download source may send nothing before its import
    /// fails.
    #[arg(long, default_value_t = 60)]
    pub image_import_idle_timeout: u64,
    /// Seconds an import may run before it fails.
    #[arg(long, default_value_t = 6 * 3600)]
    pub image_import_timeout: u64,
    /// Imports run at once; more wait for a slot (task `pending`).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub image_import_workers: u64,
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
    /// This host's VXLAN underlay address ([vxlan] local_ip), IPv4: the
    /// agent builds VXLAN over IPv4 only, so an IPv6 address is refused
    /// here rather than dropped later.
    #[arg(long, value_parser = parse_tunnel_ip)]
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
    /// Metadata requests one guest (network + source address) may have
    /// open at once; more are answered 429.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub metadata_connections_per_caller: u32,
    /// Seconds the metadata proxy reuses what the controller answered for
    /// a guest (0: ask on every request).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub metadata_cache_seconds: u64,
    /// Seconds a client has to send a request's head (request line and
    /// header fields) once it starts, or once connected for its first
    /// request; slower clients are disconnected.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_header_timeout: u64,
    /// Seconds a request body being read may receive nothing before the
    /// request fails with 408 and the connection is closed (idle time, not
    /// total: long uploads that keep sending are fine).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_body_idle_timeout: u64,
    /// Bytes per second a request body must arrive at on average: it
    /// fails with 408 once the body idle timeout plus one second per this
    /// many bytes received has passed since it began (0: no minimum).
    #[arg(long, default_value_t = 500)]
    pub http_body_min_rate: u64,
    /// Seconds a response may make no progress (the client reads nothing)
    /// before the connection is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_send_timeout: u64,
    /// Seconds connections get on shutdown to finish their requests before
    /// they are closed.
    #[arg(long, default_value_t = 30)]
    pub http_shutdown_grace: u64,
    /// Seconds an idle keep-alive connection is kept open between requests.
    #[arg(long, default_value_t = 75, value_parser = clap::value_parser!(u64).range(1..))]
    pub http_keepalive_timeout: u64,
    /// Connections served at once; further clients wait to be accepted.
    /// At start the soft open files limit is raised to the hard one, and
    /// this is lowered (with a warning) to what that limit leaves room for.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub http_max_connections: u64,
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
    /// Most networks, subnets or ports one bulk create may carry (no
    /// Neutron option: a batch is one transaction holding the database's
    /// only writer, so its size is bounded).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_bulk_create: u32,
    /// A service's policy overrides, SERVICE=PATH with SERVICE one of
    /// identity, image, network ([oslo_policy] policy_file); repeatable.
    /// Without it a service reads DATA_DIR/policy/SERVICE.yaml if present.
    #[arg(long = "policy-file", value_parser = parse_policy_file)]
    pub policy_files: Vec<(String, PathBuf)>,
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

/// `--tunnel-ip`: an IPv4 address. The network service takes any
/// address, but the agent's VXLAN devices are IPv4 only; an IPv6 address
/// would leave this host without tunnels while other hosts send to it.
fn parse_tunnel_ip(s: &str) -> Result<std::net::IpAddr, String> {
    match s.parse::<std::net::IpAddr>() {
        Ok(ip @ std::net::IpAddr::V4(_)) => Ok(ip),
        Ok(std::net::IpAddr::V6(_)) => Err(format!(
            "{s:?} is an IPv6 address: VXLAN tunnels run over IPv4 only, give this host's IPv4 underlay address"
        )),
        Err(_) => Err(format!("{s:?} is not an IPv4 address")),
    }
}

/// `--policy-file SERVICE=PATH`.
fn parse_policy_file(s: &str) -> Result<(String, PathBuf), String> {
    let services = ferrostack::serve::POLICY_SERVICES;
    match s.split_once('=') {
        Some((service, path)) if services.contains(&service) && !path.is_empty() => {
            Ok((service.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!(
            "{s:?} is not SERVICE=PATH with SERVICE one of {}",
            services.join(", ")
        )),
    }
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
                metadata_limits: agent::metadata::Limits {
                    per_caller: self.metadata_connections_per_caller as usize,
                    cache_ttl: std::time::Duration::from_secs(self.metadata_cache_seconds),
                    ..Default::default()
                },
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
            image_import_limits: image::ImportLimits {
                idle_timeout: std::time::Duration::from_secs(self.image_import_idle_timeout),
                total_timeout: std::time::Duration::from_secs(self.image_import_timeout),
                max_concurrent: self.image_import_workers as usize,
            },
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
            network_max_bulk_create: self.max_bulk_create as usize,
            image_import_extra_root_certs: Vec::new(),
            agent,
            http: api::server::Limits {
                header_timeout: Duration::from_secs(self.http_header_timeout),
                body_idle_timeout: Duration::from_secs(self.http_body_idle_timeout),
                body_min_rate: self.http_body_min_rate,
                send_timeout: Duration::from_secs(self.http_send_timeout),
                keepalive_timeout: Duration::from_secs(self.http_keepalive_timeout),
                max_connections: self.http_max_connections as usize,
                shutdown_grace: Duration::from_secs(self.http_shutdown_grace),
            },
            policy_files: self.policy_files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let mut argv = vec!["ferrostack", "serve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| match c.command {
            Command::Serve(a) => *a,
            other => panic!("parsed as {other:?}"),
        })
    }

    #[test]
    fn an_ipv4_tunnel_ip_is_taken() {
        let a = serve(&["--tunnel-ip", "192.0.2.7"]).unwrap();
        assert_eq!(a.tunnel_ip, Some("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn an_ipv6_tunnel_ip_is_refused_with_a_clear_message() {
        let e = serve(&["--tunnel-ip", "2001:db8::7"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        let msg = e.to_string();
        assert!(msg.contains("--tunnel-ip"), "{msg}");
        assert!(msg.contains("IPv6") && msg.contains("IPv4 only"), "{msg}");
        assert!(serve(&["--tunnel-ip", "not-an-address"]).is_err());
    }

    #[test]
    fn metadata_limits_have_defaults_and_bounds() {
        let a = serve(&[]).unwrap();
        assert_eq!(
            (a.metadata_connections_per_caller, a.metadata_cache_seconds),
            (8, 5)
        );
        let a = serve(&[
            "--metadata-connections-per-caller",
            "2",
            "--metadata-cache-seconds",
            "0",
        ])
        .unwrap();
        assert_eq!(
            (a.metadata_connections_per_caller, a.metadata_cache_seconds),
            (2, 0)
        );
        assert!(serve(&["--metadata-connections-per-caller", "0"]).is_err());
    }
}
