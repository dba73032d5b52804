//! Port bound → wired through the whole stack (needs root).
//!
//! Runs `ferrostack serve` with its node agent, confined to a namespace of
//! its own as the data-plane e2e tests run it (`--agent-netns`,
//! `--agent-netns-scope`), so nothing touches the machine's own network.
//! Networks of `--per-network` ports (a Linux bridge takes at most 1,024)
//! are made through the Networking API; then, for each port, in the order
//! Nova follows:
//!
//! 1. `POST /v2.0/ports` (unbound, `device_owner` `compute:nova`);
//! 2. its tap appears: a veth named from the port id in the agent's
//!    namespace, whose other end sits in one "VMs" namespace (IPv6 off, as
//!    each real VM has a stack of its own);
//! 3. `PUT /v2.0/ports/{id}` with `binding:host_id`, and the clock starts;
//! 4. `GET /v2.0/ports/{id}` every millisecond until it is `ACTIVE`: the
//!    controller wrote the binding, the agent's watch brought the new state,
//!    the agent wired the tap and reported it.
//!
//! Printed: per bucket of ports, the p50 and p99 of bound → ACTIVE and the
//! p50 of the create call; then the whole run's figures. Dropping the run's
//! guard kills the server and deletes its namespaces, so an error leaves
//! nothing behind.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use hyper::Method;
use serde_json::{json, Value};

use crate::http::{Conn, RequestSpec};
use crate::identity::{admin_token, resolve_binary, ADMIN_PASSWORD};
use crate::server::{Server, ServerConfig};
use crate::stats::Summary;
use crate::WiringArgs;

const HOST: &str = "bench-host";
const NET: &str = "/network/v2.0";

/// The run's namespaces; deleted on drop with everything in them (the
/// agent's bridges, taps, nftables tables; the VM ends), and with the
/// router and DHCP namespaces the agent named under the scope.
struct Namespaces {
    host: String,
    vms: String,
    scope: String,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // The agent's router and DHCP namespaces: `fsr-<scope>-<id>`,
        // `fsd-<scope>-<id>`.
        let scoped = [
            format!("fsr-{}-", self.scope),
            format!("fsd-{}-", self.scope),
        ];
        let listed = Command::new("ip").args(["netns", "list"]).output();
        let mut names: Vec<String> = vec![self.host.clone(), self.vms.clone()];
        if let Ok(out) = listed {
            names.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|n| scoped.iter().any(|p| n.starts_with(p.as_str())))
                    .map(str::to_string),
            );
        }
        for n in names {
            let _ = Command::new("ip").args(["netns", "del", &n]).status();
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// One authenticated JSON call; the body, or an error naming the call.
async fn call(
    conn: &mut Conn,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    want: u16,
) -> anyhow::Result<Value> {
    let spec = match &body {
        Some(b) => RequestSpec::json(method.clone(), path, b),
        None => RequestSpec {
            method: method.clone(),
            ..RequestSpec::get(path)
        },
    }
    .header("x-auth-token", token)?;
    let (status, resp) = conn.send(&spec).await?;
    ensure!(
        status.as_u16() == want,
        "{method} {path} answered {status}: {}",
        String::from_utf8_lossy(&resp)
    );
    Ok(if resp.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&resp)?
    })
}

/// Milliseconds of a nanosecond figure.
fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub async fn run(args: WiringArgs) -> anyhow::Result<()> {
    let binary: PathBuf = resolve_binary(&args.ferrostack)?;
    let tag = format!("fsbw{}", std::process::id());
    let ns = Namespaces {
        host: format!("{tag}-h"),
        vms: format!("{tag}-v"),
        scope: tag.clone(),
    };
    ip(&["netns", "add", &ns.host]).context("creating namespaces needs root")?;
    ip(&["netns", "add", &ns.vms])?;
    for knob in ["all", "default"] {
        ip(&[
            "netns",
            "exec",
            &ns.vms,
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{knob}.disable_ipv6=1"),
        ])?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("ferrostack-bench-wiring")
        .tempdir()?;
    let cfg = ServerConfig {
        binary,
        admin_password: ADMIN_PASSWORD.to_string(),
        hash_rounds: 4,
        extra_args: [
            "--agent",
            "on",
            "--agent-netns",
            &ns.host,
            "--agent-netns-scope",
            &ns.scope,
            "--host",
            HOST,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    };
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let mut server = Server::spawn(&cfg, &data, &tmp.path().join("server.log"))?;
    server.wait_ready(Duration::from_secs(60)).await?;
    let result = measure(&server, &ns, &args).await;
    if result.is_err() {
        let kept = std::env::temp_dir().join(format!("{tag}-server.log"));
        let _ = std::fs::copy(tmp.path().join("server.log"), &kept);
        eprintln!("server log kept in {}", kept.display());
    }
    server.stop().await?;
    drop(ns);
    result
}

async fn measure(server: &Server, ns: &Namespaces, args: &WiringArgs) -> anyhow::Result<()> {
    let mut conn = Conn::connect(server.addr).await?;
    let (token, project) = admin_token(&mut conn).await?;
    let t = token.as_str();
    call(
        &mut conn,
        t,
        Method::PUT,
        &format!("{NET}/quotas/{project}"),
        Some(json!({"quota": {"port": -1}})),
        200,
    )
    .await?;
    // A Linux bridge takes at most 1,024 ports: the ports go on networks of
    // `--per-network` each (and a DHCP port), as they would on a real host.
    let mut nets = Vec::new();
    for n in 0..args.ports.div_ceil(args.per_network) {
        let net = call(
            &mut conn,
            t,
            Method::POST,
            &format!("{NET}/networks"),
            Some(json!({"network": {"name": format!("bench-{n}")}})),
            201,
        )
        .await?;
        let net_id = net["network"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        call(
            &mut conn,
            t,
            Method::POST,
            &format!("{NET}/subnets"),
            Some(json!({"subnet": {"network_id": net_id, "ip_version": 4,
                                   "cidr": format!("10.{n}.0.0/16")}})),
            201,
        )
        .await?;
        nets.push(net_id);
    }
    let bucket = (args.ports / 8).max(1);
    let (mut creates, mut wired) = (Vec::new(), Vec::new());
    let (mut all_creates, mut all_wired) = (Vec::new(), Vec::new());
    println!("ports   create p50   bound→ACTIVE p50   p99 (ms)");
    for i in 0..args.ports {
        let t0 = Instant::now();
        let port = call(
            &mut conn,
            t,
            Method::POST,
            &format!("{NET}/ports"),
            Some(
                json!({"port": {"network_id": nets[(i / args.per_network) as usize],
                                "device_owner": "compute:nova",
                                 "device_id": format!("bench-vm-{i}")}}),
            ),
            201,
        )
        .await?;
        creates.push(t0.elapsed().as_nanos() as u64);
        let id = port["port"]["id"].as_str().unwrap_or_default().to_string();
        let tap = format!("tap{}", &id[..11]);
        let peer = format!("v{i}");
        ip(&[
            "-n", &ns.host, "link", "add", &tap, "type", "veth", "peer", "name", &peer, "netns",
            &ns.vms,
        ])?;
        let t0 = Instant::now();
        call(
            &mut conn,
            t,
            Method::PUT,
            &format!("{NET}/ports/{id}"),
            Some(json!({"port": {"binding:host_id": HOST}})),
            200,
        )
        .await?;
        loop {
            let p = call(
                &mut conn,
                t,
                Method::GET,
                &format!("{NET}/ports/{id}?fields=status"),
                None,
                200,
            )
            .await?;
            let status = &p["port"]["status"];
            if status == "ACTIVE" {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("port {id} ({i} ports before it) is {status}, not ACTIVE, 30 s after its binding");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        wired.push(t0.elapsed().as_nanos() as u64);
        if (i + 1) % bucket == 0 || i + 1 == args.ports {
            all_creates.extend_from_slice(&creates);
            all_wired.extend_from_slice(&wired);
            if let (Some(c), Some(w)) = (Summary::of(&mut creates), Summary::of(&mut wired)) {
                println!(
                    "{:>5}   {:>10.1}   {:>16.1}   {:>5.1}",
                    i + 1,
                    ms(c.p50),
                    ms(w.p50),
                    ms(w.p99)
                );
            }
            creates.clear();
            wired.clear();
        }
    }
    if let (Some(c), Some(w)) = (Summary::of(&mut all_creates), Summary::of(&mut all_wired)) {
        println!(
            "\n{} ports bound → ACTIVE: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; port create p50 {:.1} ms, p99 {:.1} ms",
            w.count,
            ms(w.p50),
            ms(w.p99),
            ms(w.max),
            ms(c.p50),
            ms(c.p99),
        );
    }
    Ok(())
}
