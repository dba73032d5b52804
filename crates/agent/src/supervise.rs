//! The agent's supervisor: a panic or an error in the agent's loop must
//! not leave the API serving while the data plane stands still. The loop
//! runs in a task of its own; when it ends for any reason, the supervisor
//! logs why, tells the controller the agent is down (it is listed not
//! alive until the next agent is heard from), waits — one second, then
//! doubling to a minute, back to one second after a run that lasted — and
//! starts a new agent, which converges from what the host has.

use std::sync::Arc;
use std::time::{Duration, Instant};

use netmodel::NetworkControl;

use crate::{Agent, Chain, Error};

/// How long the supervisor waits before a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest wait (each restart doubles the previous one).
    pub max: Duration,
    /// A run that lasted this long resets the wait to `first`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(120),
        }
    }
}

/// Aborts a task when dropped, whatever it returns (stopping the
/// supervisor stops the agent it runs).
struct Owned<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs the agents `make` builds for `host`, one at a time, restarting
/// the loop whenever it ends, until the returned future is dropped.
/// `make` is called again for every restart (a new agent reads the mark
/// store and the host afresh); a panic in it is restarted too.
pub async fn supervise<F>(
    host: String,
    control: Arc<dyn NetworkControl>,
    mut make: F,
    backoff: Backoff,
) where
    F: FnMut() -> Result<Agent, Error> + Send,
{
    let mut wait = backoff.first;
    loop {
        let started = Instant::now();
        // A panic while building the agent is restarted like one in its
        // loop.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut make));
        let why = match made {
            Err(p) => format!("the network agent panicked starting: {}", panic_text(&*p)),
            Ok(made) => match made {
                Ok(agent) => {
                    let mut task = Owned(tokio::spawn(agent.run()));
                    match (&mut task.0).await {
                        Ok(Ok(())) => "the network agent's loop ended".to_string(),
                        Ok(Err(e)) => format!("the network agent's loop failed: {}", Chain(&e)),
                        Err(e) if e.is_panic() => {
                            let p = e.into_panic();
                            format!("the network agent's loop panicked: {}", panic_text(&*p))
                        }
                        // Cancelled: the runtime is shutting down.
                        Err(_) => return,
                    }
                }
                Err(e) => format!("the network agent could not start: {}", Chain(&e)),
            },
        };
        if started.elapsed() >= backoff.reset_after {
            wait = backoff.first;
        }
        tracing::error!(%host, restart_in = ?wait, "{why}; restarting it");
        if let Err(e) = control.agent_down(&host).await {
            tracing::warn!("reporting the agent down: {}", Chain(&e));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(backoff.max);
        tracing::info!(%host, "restarting the network agent");
    }
}
