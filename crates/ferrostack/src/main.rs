//! The `ferrostack` binary: command line and configuration. Wiring is in the
//! library ([`ferrostack::serve`]); every service is a library crate.

mod cli;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    match args.command {
        cli::Command::Serve(s) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let running = ferrostack::serve::start((*s).into_settings()?).await?;
                if let Some(pw) = &running.generated_password {
                    // Printed once, to the operator who started it; it is
                    // also in the 0600 clouds.yaml.
                    println!("Generated admin password: {pw}");
                }
                running.until_signal().await
            })
        }
        cli::Command::ExplainPort(e) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let dir = ferrostack::serve::agent_state_dir(&e.data_dir);
            let text = rt
                .block_on(agent::socket::explain_port(&dir, &e.port_id))
                .map_err(|err| anyhow::anyhow!("{err}"))?;
            print!("{text}");
            Ok(())
        }
        cli::Command::Keys(k) => match k.command {
            cli::KeysCommand::Rotate(r) => {
                let dir = r
                    .key_repository
                    .unwrap_or_else(|| r.data_dir.join("fernet-keys"));
                let repo = fernet::KeyRepository::new(&dir);
                repo.setup()?;
                let set = repo.rotate(r.max_active_keys)?;
                println!(
                    "rotated the Fernet keys in {} ({} keys active)",
                    dir.display(),
                    set.len()
                );
                Ok(())
            }
        },
    }
}
