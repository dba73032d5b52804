//! [`FakeControl`]: the controller side of [`NetworkControl`] from a
//! hand-written [`HostState`], recording what the agent reports. Used by
//! the agent's tests and benchmarks; [`fixtures`] builds host states by
//! hand; [`lab`] runs real agents among namespaces (root only).

pub mod lab;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
    metadata_delay: Mutex<Duration>,
    metadata_in_flight: AtomicUsize,
    metadata_most_in_flight: AtomicUsize,
    agent_down: Mutex<Vec<String>>,
    watches: AtomicUsize,
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
            metadata_delay: Mutex::default(),
            metadata_in_flight: AtomicUsize::new(0),
            metadata_most_in_flight: AtomicUsize::new(0),
            agent_down: Mutex::default(),
            watches: AtomicUsize::new(0),
        }
    }

    /// Makes every metadata question take `d` (a slow controller).
    pub fn set_metadata_delay(&self, d: Duration) {
        *self
            .metadata_delay
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = d;
    }

    /// The most metadata questions that were in flight at once.
    pub fn metadata_most_in_flight(&self) -> usize {
        self.metadata_most_in_flight.load(Ordering::SeqCst)
    }

    /// Hosts whose agent said it was down, in order.
    pub fn agent_down_calls(&self) -> Vec<String> {
        self.agent_down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many `watch` calls were made (each is a heartbeat).
    pub fn watch_calls(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
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
            self.watches.fetch_add(1, Ordering::SeqCst);
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
            let delay = *self
                .metadata_delay
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = self.metadata_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.metadata_most_in_flight.fetch_max(n, Ordering::SeqCst);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.metadata_in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(self.answer_for(&caller))
        })
    }

    fn agent_down<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            self.agent_down
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(host.to_string());
            Ok(())
        })
    }
}

/// A firewall driver wrapping another that fails or panics on demand:
/// the fault injection of the fail-closed and supervision tests.
pub struct FaultyFirewall {
    inner: Arc<dyn nft::Firewall>,
    fail_ports: AtomicBool,
    fail_groups: AtomicBool,
    panics: AtomicUsize,
}

impl std::fmt::Debug for FaultyFirewall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyFirewall")
            .field("fail_ports", &self.fail_ports)
            .field("fail_groups", &self.fail_groups)
            .field("panics", &self.panics)
            .finish()
    }
}

impl FaultyFirewall {
    /// Passes every call to `inner` until told otherwise.
    pub fn new(inner: Arc<dyn nft::Firewall>) -> Self {
        FaultyFirewall {
            inner,
            fail_ports: AtomicBool::new(false),
            fail_groups: AtomicBool::new(false),
            panics: AtomicUsize::new(0),
        }
    }

    /// While on, every `upsert_port` fails (nothing applied), as `nft`
    /// refusing a transaction does.
    pub fn fail_port_updates(&self, on: bool) {
        self.fail_ports.store(on, Ordering::SeqCst);
    }

    /// While on, every `upsert_remote_group` fails (nothing applied).
    pub fn fail_group_updates(&self, on: bool) {
        self.fail_groups.store(on, Ordering::SeqCst);
    }

    /// The next `n` calls of `upsert_port` panic.
    pub fn panic_on_port_updates(&self, n: usize) {
        self.panics.store(n, Ordering::SeqCst);
    }
}

impl nft::Firewall for FaultyFirewall {
    fn ensure_base(&self) -> nft::Result<()> {
        self.inner.ensure_base()
    }
    fn upsert_network(&self, bridge: &str, zone: u16) -> nft::Result<()> {
        self.inner.upsert_network(bridge, zone)
    }
    fn remove_network(&self, bridge: &str) -> nft::Result<()> {
        self.inner.remove_network(bridge)
    }
    fn upsert_remote_group(&self, group: &nft::RemoteGroup) -> nft::Result<()> {
        if self.fail_groups.load(Ordering::SeqCst) {
            return Err(nft::Error::Rejected {
                op: format!("update remote group {}", group.id),
                netns: "(test)".into(),
                stderr: "injected fault".into(),
            });
        }
        self.inner.upsert_remote_group(group)
    }
    fn remove_remote_group(&self, id: &str) -> nft::Result<()> {
        self.inner.remove_remote_group(id)
    }
    fn upsert_port(&self, port: &nft::PortRules) -> nft::Result<()> {
        let panics = self
            .panics
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if panics.is_ok() {
            panic!("injected panic in upsert_port {}", port.name);
        }
        if self.fail_ports.load(Ordering::SeqCst) {
            return Err(nft::Error::Rejected {
                op: format!("upsert port {}", port.name),
                netns: "(test)".into(),
                stderr: "injected fault".into(),
            });
        }
        self.inner.upsert_port(port)
    }
    fn remove_port(&self, name: &str) -> nft::Result<()> {
        self.inner.remove_port(name)
    }
    fn list_ports(&self) -> nft::Result<Vec<nft::InstalledPort>> {
        self.inner.list_ports()
    }
    fn upsert_router_nat(&self, nat: &nft::RouterNat) -> nft::Result<()> {
        self.inner.upsert_router_nat(nat)
    }
    fn router_nat_digest(&self, netns: &str) -> nft::Result<Option<String>> {
        self.inner.router_nat_digest(netns)
    }
    fn remove_router(&self, netns: &str) -> nft::Result<()> {
        self.inner.remove_router(netns)
    }
    fn delete_all(&self) -> nft::Result<()> {
        self.inner.delete_all()
    }
}

/// Builders for hand-written host states.
pub mod fixtures {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU64, Ordering};

    use netmodel::{
        Cidr, Direction, FixedIp, Network, Port, SecurityGroup, SecurityGroupRule, Segment, Subnet,
    };

    /// A fresh UUID-shaped id (lowercase hex), unique in the process and
    /// unlikely to repeat across runs.
    pub fn new_id() -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mix = |x: u64| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in x.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            h
        };
        let a = mix(t ^ (u64::from(std::process::id()) << 32));
        let b = mix(a ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let h = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// A MAC with OpenStack's prefix.
    pub fn mac(n: u32) -> String {
        let b = n.to_be_bytes();
        format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
    }

    /// An IPv4 subnet.
    pub fn subnet(id: &str, cidr: &str, gateway: Option<&str>, dhcp: Option<&str>) -> Subnet {
        Subnet {
            id: id.to_string(),
            cidr: Cidr::parse(cidr).expect("cidr"),
            gateway_ip: gateway.map(|g| g.parse().expect("gateway")),
            enable_dhcp: dhcp.is_some(),
            dns_nameservers: vec![],
            host_routes: vec![],
            dhcp_server_ip: dhcp.map(|d| d.parse().expect("dhcp ip")),
        }
    }

    /// A network (MTU 1500, project `p`).
    pub fn network(id: &str, zone: u16, segment: Segment, subnets: Vec<Subnet>) -> Network {
        Network {
            id: id.to_string(),
            project_id: "p".into(),
            mtu: 1500,
            segment,
            external: false,
            admin_state_up: true,
            subnets,
            conntrack_zone: zone,
            remote_ports: vec![],
            remote_hosts: vec![],
        }
    }

    /// A VM port with one fixed IP.
    pub fn vm_port(id: &str, net: &str, subnet: &str, mac: &str, ip: &str, sgs: &[&str]) -> Port {
        Port {
            id: id.to_string(),
            network_id: net.to_string(),
            mac: mac.to_string(),
            fixed_ips: vec![FixedIp {
                subnet_id: subnet.to_string(),
                ip: ip.parse::<IpAddr>().expect("ip"),
            }],
            device_owner: "compute:nova".into(),
            device_id: new_id(),
            admin_state_up: true,
            port_security_enabled: true,
            allowed_address_pairs: vec![],
            security_group_ids: sgs.iter().map(|s| s.to_string()).collect(),
            hostname: format!("vm-{}", &id[..8]),
            device_name: hostlink::names::tap_name(id).expect("port id"),
        }
    }

    /// A rule: `proto` `tcp`/`udp`/`icmp` or `None` for any, `port` a
    /// single destination port, `remote` a CIDR.
    pub fn rule(
        dir: Direction,
        proto: Option<&str>,
        port: Option<u16>,
        remote: Option<&str>,
    ) -> SecurityGroupRule {
        SecurityGroupRule {
            id: new_id(),
            direction: dir,
            ethertype: "IPv4".into(),
            protocol: proto.map(str::to_string),
            port_range_min: port,
            port_range_max: port,
            remote_ip_prefix: remote.map(|r| Cidr::parse(r).expect("cidr")),
            remote_group_id: None,
        }
    }

    /// A security group.
    pub fn sg(id: &str, rules: Vec<SecurityGroupRule>) -> SecurityGroup {
        SecurityGroup {
            id: id.to_string(),
            rules,
            member_ips: vec![],
        }
    }
}
