//! [`FakeControl`]: the controller side of [`NetworkControl`] from a
//! hand-written [`HostState`], recording what the agent reports. Used by
//! the agent's tests and benchmarks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use netmodel::{
    BoxFuture, Error, HostState, MetadataAnswer, MetadataCaller, NetworkControl, PortReport,
    PortStatus,
};
use serde_json::json;
use tokio::sync::watch;

/// A controller in memory.
#[derive(Debug)]
pub struct FakeControl {
    state: watch::Sender<HostState>,
    reports: Mutex<Vec<PortReport>>,
    latest: watch::Sender<HashMap<String, PortStatus>>,
    user_data: Mutex<HashMap<String, Vec<u8>>>,
    metadata_calls: Mutex<Vec<MetadataCaller>>,
}

impl FakeControl {
    /// A controller serving `state`.
    pub fn new(state: HostState) -> Self {
        FakeControl {
            state: watch::channel(state).0,
            reports: Mutex::default(),
            latest: watch::channel(HashMap::new()).0,
            user_data: Mutex::default(),
            metadata_calls: Mutex::default(),
        }
    }

    /// Changes the state and bumps its revision (waking watchers).
    pub fn update(&self, f: impl FnOnce(&mut HostState)) {
        self.state.send_modify(|s| {
            f(s);
            s.revision += 1;
        });
    }

    /// The current state.
    pub fn state(&self) -> HostState {
        self.state.borrow().clone()
    }

    /// Every report received, in order.
    pub fn reports(&self) -> Vec<PortReport> {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last status reported for a port.
    pub fn status(&self, port_id: &str) -> Option<PortStatus> {
        self.latest.borrow().get(port_id).copied()
    }

    /// Waits until the port's last reported status is `want`.
    pub async fn wait_status(&self, port_id: &str, want: PortStatus, timeout: Duration) -> bool {
        let mut rx = self.latest.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if rx.borrow_and_update().get(port_id) == Some(&want) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Sets a port's user data (served as `user_data`).
    pub fn set_user_data(&self, port_id: &str, data: &[u8]) {
        self.user_data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port_id.to_string(), data.to_vec());
    }

    /// Callers the metadata proxy asked about, in order.
    pub fn metadata_calls(&self) -> Vec<MetadataCaller> {
        self.metadata_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The documents the fake controller builds for a caller: found by
    /// (network, fixed IP) among the state's VM ports.
    pub fn answer_for(&self, caller: &MetadataCaller) -> Option<MetadataAnswer> {
        let s = self.state.borrow();
        let port = s.ports.iter().find(|p| {
            p.network_id == caller.network_id
                && !p.device_owner.starts_with("network:")
                && p.fixed_ips.iter().any(|f| f.ip == caller.ip)
        })?;
        let net = s.networks.iter().find(|n| n.id == port.network_id)?;
        let nets: Vec<serde_json::Value> = port
            .fixed_ips
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let sn = net.subnets.iter().find(|s| s.id == f.subnet_id);
                json!({
                    "id": format!("network{i}"),
                    "type": if f.ip.is_ipv4() { "ipv4" } else { "ipv6" },
                    "link": port.device_name,
                    "ip_address": f.ip.to_string(),
                    "prefix": sn.map(|s| s.cidr.prefix),
                    "network_id": net.id,
                })
            })
            .collect();
        let ud = self
            .user_data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&port.id)
            .cloned();
        Some(MetadataAnswer {
            openstack: vec![
                (
                    "meta_data.json".into(),
                    json!({
                        "uuid": port.device_id,
                        "name": port.hostname,
                        "hostname": port.hostname,
                        "project_id": net.project_id,
                        "availability_zone": "nova",
                        "launch_index": 0,
                    }),
                ),
                (
                    "network_data.json".into(),
                    json!({
                        "links": [{
                            "id": port.device_name,
                            "vif_id": port.id,
                            "type": "phy",
                            "ethernet_mac_address": port.mac,
                            "mtu": net.mtu,
                        }],
                        "networks": nets,
                        "services": [],
                    }),
                ),
            ],
            user_data: ud,
        })
    }
}

impl NetworkControl for FakeControl {
    fn watch<'a>(
        &'a self,
        host: &'a str,
        after: Option<u64>,
        wait: Duration,
    ) -> BoxFuture<'a, Result<HostState, Error>> {
        Box::pin(async move {
            let mut rx = self.state.subscribe();
            if rx.borrow().host != host {
                return Err(Error::UnknownHost(host.to_string()));
            }
            let _ = tokio::time::timeout(wait, async {
                loop {
                    if after.is_none_or(|a| rx.borrow_and_update().revision > a) {
                        return;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            let s = rx.borrow().clone();
            Ok(s)
        })
    }

    fn report_ports<'a>(
        &'a self,
        _host: &'a str,
        reports: Vec<PortReport>,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.latest.send_modify(|m| {
                for r in &reports {
                    m.insert(r.port_id.clone(), r.status);
                }
            });
            self.reports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(reports);
            Ok(())
        })
    }

    fn metadata<'a>(
        &'a self,
        caller: MetadataCaller,
    ) -> BoxFuture<'a, Result<Option<MetadataAnswer>, Error>> {
        Box::pin(async move {
            self.metadata_calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(caller.clone());
            Ok(self.answer_for(&caller))
        })
    }
}
