//! `ferrostack-bench`: benchmarks of the ferrostack binary, run against a
//! real server process. They print figures; nothing here is a pass/fail test
//! of speed (targets are shown next to the figures for the reader).

mod http;
mod identity;
mod load;
mod procfs;
mod report;
mod server;
mod stats;
mod wiring;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "ferrostack-bench", version, about = "Benchmarks of ferrostack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The Identity service: start-up time, idle memory, token validation and
    /// issue throughput and latency.
    #[command(args_override_self = true)]
    Identity(IdentityArgs),
    /// The Networking service with its node agent (root): port bound →
    /// wired (ACTIVE) over many ports on one host, through the API.
    Wiring(WiringArgs),
}

#[derive(Args, Debug, Clone)]
pub struct WiringArgs {
    /// The ferrostack binary (as for `identity`).
    #[arg(long, default_value = DEFAULT_FERROSTACK)]
    pub ferrostack: PathBuf,
    /// How many ports to create, bind and wait for.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub ports: u64,
    /// Ports per network (a Linux bridge takes at most 1,024 ports).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub per_network: u64,
}

#[derive(Args, Debug, Clone)]
pub struct IdentityArgs {
    /// The ferrostack binary to benchmark. When the default path does not
    /// exist, the `ferrostack` next to this binary is used.
    #[arg(long, default_value = DEFAULT_FERROSTACK)]
    pub ferrostack: PathBuf,
    /// Measured seconds per scenario and concurrency (after a 1 s warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Numbers of concurrent clients, each with one keep-alive connection.
    #[arg(long, value_delimiter = ',', default_value = "1,16", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: Vec<u64>,
    /// The server's bcrypt cost (--password-hash-rounds).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub hash_rounds: u32,
    /// Print one JSON document instead of the table (progress still goes to
    /// stderr).
    #[arg(long)]
    pub json: bool,
}

pub const DEFAULT_FERROSTACK: &str = "target/release/ferrostack";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async move {
        // On Ctrl-C or SIGTERM the benchmark future is dropped, and with it
        // the guards inside it: the server is killed, the wiring run's
        // namespaces deleted.
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        };
        match cli.command {
            Command::Identity(args) => tokio::select! {
                r = identity::run(args) => Some(r),
                _ = stop => None,
            },
            Command::Wiring(args) => tokio::select! {
                r = wiring::run(args) => Some(r),
                _ = stop => None,
            },
        }
    });
    match outcome {
        Some(r) => r,
        None => {
            eprintln!("interrupted; the server was stopped and what the run made removed");
            std::process::exit(130)
        }
    }
}
