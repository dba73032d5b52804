//! A lab for privileged tests and benchmarks: a "host" namespace holding
//! the agent's bridges, namespaces acting as VMs (a veth named like the
//! port's tap, its peer `eth0` in the VM namespace with the port's MAC),
//! an "outside world" namespace on a flat network, and a running agent
//! over the real drivers.
//!
//! Everything is named `fst-XXXXXX-…` (test namespaces) or carries the
//! lab's namespace scope (the agent's `fsr-`/`fsd-` namespaces), and is
//! deleted when the lab is dropped, panic or not.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostlink::testing::NetnsGuard;
use hostlink::{netns, HostNet, IpNet, Kernel, MacAddr, Netns, Route, VethSpec};
use netmodel::{NetworkControl, Port};

use crate::{AbortOnDrop, Agent, Config, Explainer};

/// The lab.
pub struct Lab {
    /// `fst-XXXXXX`.
    pub prefix: String,
    /// The agent's namespace scope (`tXXXXXX`).
    pub scope: String,
    /// The namespace holding the bridges.
    pub host: Netns,
    /// The real host driver.
    pub net: Arc<Kernel>,
    /// The real firewall driver, bound to [`Lab::host`].
    pub fw: Arc<nft::Nft>,
    /// State directory of the agents (kept across restarts).
    pub state_dir: PathBuf,
    _dir: tempfile::TempDir,
    guard: NetnsGuard,
}

/// A running agent; dropping it stops it (like killing the process: what
/// it built stays).
pub struct RunningAgent {
    task: Option<AbortOnDrop>,
    /// Explains ports from what the agent applied.
    pub explainer: Explainer,
}

impl RunningAgent {
    /// Stops the agent and waits until its task (and every listener it
    /// owned) is gone.
    pub async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.stop().await;
        }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Lab {
    /// Makes the host namespace. Needs root.
    pub fn new() -> Lab {
        let prefix = hostlink::testing::unique_prefix();
        let scope = format!("t{}", &prefix[4..]);
        let mut guard = NetnsGuard::new();
        let host = guard.create(&format!("{prefix}-h"));
        let dir = tempfile::tempdir().expect("temp dir");
        let fw = Arc::new(nft::Nft::new(host.clone()));
        Lab {
            state_dir: dir.path().join("agent"),
            _dir: dir,
            prefix,
            scope,
            host,
            net: Arc::new(Kernel::new()),
            fw,
            guard,
        }
    }

    /// A test namespace `fst-XXXXXX-<name>`, deleted with the lab.
    pub fn netns(&mut self, name: &str) -> Netns {
        self.guard.create(&format!("{}-{name}", self.prefix))
    }

    /// A temporary directory that lives as long as the lab.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The agent's configuration for this lab.
    pub fn config(&self) -> Config {
        let mut c = Config::new(&self.state_dir);
        c.host_netns = self.host.clone();
        c.netns_scope = self.scope.clone();
        c
    }

    /// Starts an agent for host `h1`.
    pub async fn start_agent(&self, control: Arc<dyn NetworkControl>) -> RunningAgent {
        self.start_agent_with(control, self.config()).await
    }

    /// Starts an agent with a given configuration.
    pub async fn start_agent_with(
        &self,
        control: Arc<dyn NetworkControl>,
        cfg: Config,
    ) -> RunningAgent {
        self.start_agent_over(control, cfg, self.fw.clone()).await
    }

    /// Starts an agent over a given firewall driver (one wrapping
    /// [`Lab::fw`], e.g. [`super::FaultyFirewall`]).
    pub async fn start_agent_over(
        &self,
        control: Arc<dyn NetworkControl>,
        cfg: Config,
        fw: Arc<dyn nft::Firewall>,
    ) -> RunningAgent {
        let a = Agent::new("h1", control, self.net.clone(), fw, cfg).expect("agent");
        let explainer = a.explainer();
        let task = tokio::spawn(async move {
            if let Err(e) = a.run().await {
                eprintln!("agent stopped: {e}");
            }
        });
        RunningAgent {
            task: Some(AbortOnDrop(task)),
            explainer,
        }
    }

    /// A namespace `fst-XXXXXX-<name>` acting as a VM for `port`: a veth
    /// whose host end is the port's tap and whose other end is `eth0`
    /// with the port's MAC. No address: DHCP or [`Lab::address`] gives one.
    pub async fn vm(&mut self, name: &str, port: &Port) -> Netns {
        let ns = self.guard.create(&format!("{}-{name}", self.prefix));
        self.plug_tap(
            &ns,
            &port.device_name,
            "eth0",
            &port.mac.parse().expect("mac"),
            1500,
        )
        .await;
        ns
    }

    /// Plugs a VM's device as a hypervisor does: the host end `tap` stays
    /// down until the agent wires it; `peer` in `ns` is up with `mac`.
    pub async fn plug_tap(&self, ns: &Netns, tap: &str, peer: &str, mac: &MacAddr, mtu: u32) {
        self.veth(ns, tap, peer, mac, mtu, false).await
    }

    /// Plugs a veth `tap` (host end) / `eth0` (in `ns`) with MAC `mac`.
    pub async fn plug(&self, ns: &Netns, tap: &str, mac: &MacAddr, mtu: u32) {
        self.plug_as(ns, tap, "eth0", mac, mtu).await
    }

    /// Plugs a veth `tap` (host end) / `peer` (in `ns`) with MAC `mac`.
    pub async fn plug_as(&self, ns: &Netns, tap: &str, peer: &str, mac: &MacAddr, mtu: u32) {
        self.veth(ns, tap, peer, mac, mtu, true).await
    }

    async fn veth(&self, ns: &Netns, tap: &str, peer: &str, mac: &MacAddr, mtu: u32, up: bool) {
        self.net
            .ensure_veth(
                &self.host,
                &VethSpec {
                    name: tap.to_string(),
                    peer: peer.into(),
                    peer_netns: ns.clone(),
                    mtu,
                    peer_mac: Some(*mac),
                    up,
                },
            )
            .await
            .expect("veth");
    }

    /// A namespace `fst-XXXXXX-<name>` joined to the host by a veth whose
    /// host end is `iface` (the flat network's interface), holding `addr`.
    pub async fn outside(&mut self, name: &str, iface: &str, addr: &str) -> Netns {
        let ns = self.guard.create(&format!("{}-{name}", self.prefix));
        self.plug(&ns, iface, &"02:00:00:00:00:fe".parse().expect("mac"), 1500)
            .await;
        self.address(&ns, addr, None).await;
        ns
    }

    /// Gives `eth0` in `ns` an address and, optionally, a default route.
    pub async fn address(&self, ns: &Netns, addr: &str, gateway: Option<&str>) {
        let net: IpNet = addr.parse().expect("address");
        self.net
            .ensure_address(ns, "eth0", net)
            .await
            .expect("address");
        if let Some(gw) = gateway {
            self.net
                .ensure_route(
                    ns,
                    &Route {
                        dest: IpNet::default_v4(),
                        gateway: Some(gw.parse().expect("gateway")),
                        dev: Some("eth0".into()),
                    },
                )
                .await
                .expect("route");
        }
    }

    /// Names of the agent's namespaces of this lab that exist.
    pub fn agent_netns(&self) -> Vec<String> {
        let scope = crate::names::Scope::new(&self.scope).expect("scope");
        netns::list()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| scope.owns_router_netns(n) || scope.owns_dhcp_netns(n))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.agent_netns() {
            let _ = netns::delete(&n);
        }
    }
}

/// Runs a program inside `ns` with a deadline; the child is killed when
/// the deadline passes. Blocking: call from a blocking context.
pub fn exec(ns: &Netns, deadline: Duration, prog: &str, args: &[&str]) -> Output {
    exec_env(ns, deadline, prog, args, &[])
}

/// [`exec`] with extra environment variables.
pub fn exec_env(
    ns: &Netns,
    deadline: Duration,
    prog: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let child = netns::run_in(ns, || {
        Command::new(prog)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    })
    .expect("enter netns")
    .unwrap_or_else(|e| panic!("spawn {prog}: {e}"));
    let pid = child.id();
    let start = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let killer = std::thread::spawn(move || {
        while start.elapsed() < deadline {
            if d.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !d.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = nix_kill(pid);
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = killer.join();
    out
}

fn nix_kill(pid: u32) -> std::io::Result<()> {
    // `kill` from procps-less systems: busybox has it too, but a plain
    // signal through /bin/kill keeps this free of unsafe code.
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map(drop)
}

/// `busybox ping -c <n>` from `ns`; true if any reply came back.
pub fn ping(ns: &Netns, dst: &str, count: u32) -> bool {
    let c = count.to_string();
    let out = exec(
        ns,
        Duration::from_secs(u64::from(count) + 2),
        "busybox",
        &[
            "ping",
            "-c",
            &c,
            "-W",
            "1",
            "-w",
            &(count + 1).to_string(),
            dst,
        ],
    );
    out.status.success()
}

/// What a DHCP client got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpResult {
    /// Address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub mask: u8,
    /// Hostname option.
    pub hostname: String,
    /// MTU option.
    pub mtu: String,
    /// Classless static routes, as udhcpc prints them.
    pub staticroutes: String,
}

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# udhcpc hook for tests: configure eth0 and record what was offered.
case "$1" in
  bound|renew)
    busybox ip addr flush dev "$interface"
    busybox ip addr add "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && busybox ip link set dev "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do
        busybox ip route replace "$1" via "$2" dev "$interface"
        shift 2
      done
    elif [ -n "$router" ]; then
      busybox ip route replace default via "${router%% *}" dev "$interface"
    fi
    printf '%s\n%s\n%s\n%s\n%s\n' "$ip" "$mask" "$hostname" "$mtu" "$staticroutes" > "$DHCP_RESULT"
    ;;
esac
exit 0
"#;

/// Runs `busybox udhcpc -O staticroutes` on `eth0` in `ns` with a script
/// that configures the address and routes; `None` when no lease came.
pub fn udhcpc(ns: &Netns, dir: &Path, tag: &str) -> Option<DhcpResult> {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("udhcpc.sh");
    if !script.exists() {
        std::fs::write(&script, UDHCPC_SCRIPT).expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let result = dir.join(format!("dhcp-{tag}.txt"));
    let _ = std::fs::remove_file(&result);
    let out = exec_env(
        ns,
        Duration::from_secs(15),
        "busybox",
        &[
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-i",
            "eth0",
            "-t",
            "5",
            "-T",
            "1",
            "-O",
            "staticroutes",
            "-O",
            "mtu",
            "-s",
            script.to_str().expect("utf-8 path"),
        ],
        &[("DHCP_RESULT", result.to_str().expect("utf-8 path"))],
    );
    let text = std::fs::read_to_string(&result).ok()?;
    let l: Vec<&str> = text.lines().collect();
    if !out.status.success() || l.len() < 5 {
        return None;
    }
    Some(DhcpResult {
        ip: l[0].parse().ok()?,
        mask: l[1].parse().ok()?,
        hostname: l[2].to_string(),
        mtu: l[3].to_string(),
        staticroutes: l[4].to_string(),
    })
}
