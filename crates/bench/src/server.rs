//! Running `ferrostack serve` as a child process: spawn, wait until it
//! answers, stop. [`Server`] kills the child when dropped, so an error, a
//! panic or Ctrl-C in the benchmark never leaves a server behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::http;

/// How the server is started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub binary: PathBuf,
    pub admin_password: String,
    pub hash_rounds: u32,
    /// Further arguments of `serve`.
    pub extra_args: Vec<String>,
}

/// A running server. Dropping it kills the process.
pub struct Server {
    child: Child,
    spawned_at: Instant,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    /// Spawns `ferrostack serve` on `data_dir`, its stderr (the server's log)
    /// and stdout going to `log`.
    pub fn spawn(cfg: &ServerConfig, data_dir: &Path, log: &Path) -> anyhow::Result<Server> {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&cfg.binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-password")
            .arg(&cfg.admin_password)
            .arg("--password-hash-rounds")
            .arg(cfg.hash_rounds.to_string())
            .args(&cfg.extra_args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let spawned_at = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", cfg.binary.display()))?;
        Ok(Server {
            child,
            spawned_at,
            addr,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /identity/v3` every 5 ms until it answers 200; returns the
    /// time from spawn to that answer.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the server exited ({status}) before answering; its log:\n{}",
                    self.log_tail()
                );
            }
            let attempt = tokio::time::timeout(
                Duration::from_secs(1),
                http::get_status_once(self.addr, "/identity/v3"),
            )
            .await;
            if let Ok(Ok(200)) = attempt {
                return Ok(self.spawned_at.elapsed());
            }
            if self.spawned_at.elapsed() > timeout {
                bail!(
                    "the server did not answer GET /identity/v3 with 200 within {timeout:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the server as an operator would (SIGTERM, graceful shutdown),
    /// killing it if it has not exited after 10 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // std only sends SIGKILL; `kill` sends SIGTERM without unsafe code.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!("the server ignored SIGTERM for 10 s; killing it");
        self.kill();
        Ok(())
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
