//! A simulated node agent: it watches one host through the same
//! [`NetworkControl`] interface the real agent uses and reports every port
//! it is given as wired at once. API tests use it to see ports go from
//! `DOWN` to `ACTIVE` (and `network-vif-plugged` events appear) without
//! root or a data plane.

use std::sync::Arc;
use std::time::Duration;

use netmodel::{NetworkControl, PortReport, PortStatus};

/// A running simulated agent; stops when dropped.
pub struct SimAgent {
    task: tokio::task::JoinHandle<()>,
}

impl SimAgent {
    /// Starts watching `host`.
    pub fn spawn(control: Arc<dyn NetworkControl>, host: impl Into<String>) -> SimAgent {
        let host = host.into();
        let task = tokio::spawn(async move {
            let mut after = None;
            loop {
                match control.watch(&host, after, Duration::from_secs(30)).await {
                    Ok(state) => {
                        let reports = state
                            .ports
                            .iter()
                            .map(|p| PortReport {
                                port_id: p.id.clone(),
                                status: PortStatus::Active,
                                message: None,
                            })
                            .collect();
                        if let Err(e) = control.report_ports(&host, reports).await {
                            tracing::warn!(error = %e, "simulated agent: report failed");
                        }
                        after = Some(state.revision);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "simulated agent: watch failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        SimAgent { task }
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}
