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
    Serve(ServeArgs),
    /// Manage the Fernet key repository.
    Keys(KeysArgs),
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
    pub fn into_settings(self) -> ferrostack::serve::Settings {
        ferrostack::serve::Settings {
            data_dir: self.data_dir,
            listen: self.listen,
            public_url: self.public_url,
            admin_password: self.admin_password,
            token_expiration: self.token_expiration,
            password_hash_rounds: self.password_hash_rounds,
            lockout_failure_attempts: self.lockout_failure_attempts,
            lockout_duration: self.lockout_duration,
            key_repository: self.key_repository,
            image_quota_count: self.image_quota_images,
            image_quota_bytes: self.image_quota_bytes,
            image_size_cap: self.image_size_cap,
            image_import_allow_loopback: false,
            image_import_extra_root_certs: Vec::new(),
        }
    }
}
