//! The `ferrostack` binary: command line, configuration and wiring. Nothing
//! else lives here — every service is a library crate.

mod cli;
mod serve;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = cli::Cli::parse();
    match args.command {
        cli::Command::Serve(s) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve::run(s))
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
