//! The agent's local socket, through which `ferrostack explain-port` asks
//! a running agent to explain a port.
//!
//! A Unix stream socket in the agent's state directory (mode 0600 inside a
//! 0700 directory: only the agent's own user can ask). The protocol is one
//! line each way: the client sends `explain-port <port id>\n`, the agent
//! answers with the explanation and closes the connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::{AbortOnDrop, Explainer};

/// The name of the socket inside the agent's state directory.
pub const SOCKET_NAME: &str = "agent.sock";

/// Longest request line accepted.
const MAX_REQUEST: usize = 256;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket path for a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Listens on `path` (replacing a stale socket left by a crash) and answers
/// requests from `explainer` until the returned guard is dropped.
pub fn serve(path: &Path, explainer: Explainer) -> std::io::Result<AbortOnDrop> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let explainer = explainer.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &explainer).await {
                    tracing::debug!("agent socket client: {e}");
                }
            });
        }
    });
    Ok(AbortOnDrop(task))
}

async fn answer(stream: UnixStream, explainer: &Explainer) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = BufReader::new(r.take(MAX_REQUEST as u64));
    tokio::time::timeout(REQUEST_TIMEOUT, r.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let reply = match line.trim_end_matches('\n').split_once(' ') {
        Some(("explain-port", id)) if id.len() == 36 && crate::names::is_id(id) => {
            explainer.explain_port(id)
        }
        Some(("explain-port", _)) => {
            "error: a port id is 36 characters of hex digits and dashes\n".to_string()
        }
        _ => "error: unknown request (expected `explain-port <port id>`)\n".to_string(),
    };
    w.write_all(reply.as_bytes()).await?;
    w.shutdown().await
}

/// Errors of [`explain_port`].
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No agent listens on the socket.
    #[error("no agent is running with state directory {0} (cannot connect to its socket)")]
    NotRunning(String),
    /// The conversation failed.
    #[error("talking to the agent: {0}")]
    Io(#[from] std::io::Error),
    /// The agent refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Asks the agent whose state directory is `state_dir` to explain a port.
pub async fn explain_port(state_dir: &Path, port_id: &str) -> Result<String, AskError> {
    let path = socket_path(state_dir);
    let mut s = UnixStream::connect(&path)
        .await
        .map_err(|_| AskError::NotRunning(state_dir.display().to_string()))?;
    s.write_all(format!("explain-port {port_id}\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    match out.strip_prefix("error: ") {
        Some(msg) => Err(AskError::Refused(msg.trim_end().to_string())),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanSettings;

    fn settings() -> PlanSettings {
        PlanSettings {
            scope: crate::names::Scope::default(),
            vxlan_local: None,
            vxlan_underlay: None,
            metadata_port: 9697,
            lease_time: 60,
        }
    }

    #[tokio::test]
    async fn a_client_gets_the_explanation_and_bad_requests_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let explainer = Explainer::new(settings());
        let guard = serve(&socket_path(dir.path()), explainer).unwrap();
        let mode = std::fs::metadata(socket_path(dir.path())).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let id = "3f1c2a4b-5d6e-4f70-8192-a3b4c5d6e7f8";
        let out = explain_port(dir.path(), id).await.unwrap();
        assert!(out.contains(id) && out.contains("not bound"), "{out}");
        match explain_port(dir.path(), "../../etc").await {
            Err(AskError::Refused(m)) => assert!(m.contains("port id"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A second server replaces a stale socket file.
        drop(guard);
        let _again = serve(&socket_path(dir.path()), Explainer::new(settings())).unwrap();
        assert!(explain_port(dir.path(), id).await.is_ok());
    }

    #[tokio::test]
    async fn no_agent_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        match explain_port(dir.path(), "3f1c2a4b-5d6e-4f70-8192-a3b4c5d6e7f8").await {
            Err(AskError::NotRunning(d)) => assert!(d.contains(&dir.path().display().to_string())),
            other => panic!("expected NotRunning, got {other:?}"),
        }
    }
}
