//! `ferrostack-bench-network`: the node agent's data plane, measured on
//! this host with namespaces as VMs (root only).
//!
//! 1. **Port created → wired**: N ports (default 2,000) are added one by
//!    one to the desired state, each with its device (a veth named like
//!    the tap); the time from the state change to the agent's `ACTIVE`
//!    report is recorded. Printed: p50/p99/max overall, and the p50 of
//!    each 250-port bucket, to show whether the per-port cost stays flat.
//! 2. **TCP throughput** (a small Rust sender/receiver, one stream) with
//!    the N ports still loaded: a bare veth pair, two VMs through the
//!    bridge and their security groups, and two VMs on two networks
//!    across a router namespace — in the same run, side by side.
//!
//! Figures only: targets are printed next to them, nothing fails on them.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::testing::fixtures::*;
use agent::testing::lab::Lab;
use agent::testing::FakeControl;
use clap::Parser;
use hostlink::{netns, HostNet, IpNet, Netns, VethSpec};
use netmodel::{Cidr, Direction, HostState, PortStatus, Router, RouterInterface, Segment};

#[derive(Parser, Debug)]
#[command(
    name = "ferrostack-bench-network",
    about = "Benchmarks of the node agent's data plane"
)]
struct Args {
    /// Ports to wire.
    #[arg(long, default_value_t = 2000)]
    ports: usize,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Give every port the default security group's remote-group rule
    /// (ingress from the group's own members), as Neutron's default group
    /// has: each new port then also changes the group's member set.
    #[arg(long, default_value_t = false)]
    remote_group: bool,
    /// Bucket size for the flatness report.
    #[arg(long, default_value_t = 250)]
    bucket: usize,
    /// Rounds of the three throughput measurements, interleaved (the
    /// median of each is printed: a shared machine's load moves).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Ports per network. A Linux bridge takes at most 1,024 ports, so
    /// 2,000 ports on a host are on several networks, as they would be.
    #[arg(long, default_value_t = 250)]
    per_network: usize,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// The address of the `j`-th port of port network `k` (10.(10+k).0.0/16).
fn ip_of(k: usize, j: usize) -> String {
    format!("10.{}.{}.{}", 10 + k, j / 250 + 1, j % 250 + 2)
}

/// One TCP stream for `secs` from `client` to `addr` (served in `server`);
/// Gbit/s.
fn throughput(server: &Netns, addr: SocketAddr, client: &Netns, secs: u64) -> f64 {
    let l = netns::listen_tcp(server, addr).expect("listen");
    let rx = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let mut s =
        hostlink::testing::tcp_connect_in(client, addr, Duration::from_secs(3)).expect("connect");
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let total = rx.join().expect("receiver");
    total as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// Milliseconds one small `nft` transaction that adds a rule takes in `ns`
/// (median of 5), outside the agent's tables: nft's fixed cost per change,
/// which grows with the number of chains and anonymous sets already loaded
/// (it reads them all first).
fn nft_probe(ns: &Netns, dir: &std::path::Path) -> f64 {
    // A table of its own with one chain, rewritten (flush, then add a
    // rule): the same cache nft must read before any port's change.
    let f = dir.join("probe.nft");
    let _ = std::fs::write(
        &f,
        "add table inet fs_probe\nadd chain inet fs_probe c\nflush chain inet fs_probe c\nadd rule inet fs_probe c drop\n",
    );
    let path = f.to_str().unwrap_or("probe.nft").to_string();
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            netns::run_in(ns, || {
                let t = Instant::now();
                let _ = std::process::Command::new("nft")
                    .args(["-f", &path])
                    .output();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .unwrap_or(f64::NAN)
        })
        .collect();
    pct(&mut v, 0.5)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if !hostlink::testing::require_root("ferrostack-bench-network") {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut lab = Lab::new();
    let (na, sa, nb, sb, sgid) = (new_id(), new_id(), new_id(), new_id(), new_id());
    let mut rules = vec![
        rule(Direction::Egress, None, None, None),
        rule(Direction::Ingress, Some("icmp"), None, None),
        rule(
            Direction::Ingress,
            Some("tcp"),
            Some(5201),
            Some("10.0.0.0/8"),
        ),
    ];
    if args.remote_group {
        let mut r = rule(Direction::Ingress, None, None, None);
        r.remote_group_id = Some(sgid.clone());
        rules.push(r);
    }
    let mut st = HostState {
        host: "h1".into(),
        revision: 1,
        networks: vec![
            network(
                &na,
                1,
                Segment::Local,
                vec![subnet(
                    &sa,
                    "10.0.0.0/16",
                    Some("10.0.0.1"),
                    Some("10.0.0.2"),
                )],
            ),
            network(
                &nb,
                2,
                Segment::Local,
                vec![subnet(
                    &sb,
                    "10.1.0.0/24",
                    Some("10.1.0.1"),
                    Some("10.1.0.2"),
                )],
            ),
        ],
        ports: vec![],
        security_groups: vec![sg(&sgid, rules)],
        routers: vec![Router {
            id: new_id(),
            project_id: "p".into(),
            admin_state_up: true,
            gateway: None,
            interfaces: vec![
                RouterInterface {
                    port_id: new_id(),
                    network_id: na.clone(),
                    subnet_id: sa.clone(),
                    mac: mac(0xff_0001),
                    ip: Cidr::parse("10.0.0.1/16").unwrap(),
                },
                RouterInterface {
                    port_id: new_id(),
                    network_id: nb.clone(),
                    subnet_id: sb.clone(),
                    mac: mac(0xff_0002),
                    ip: Cidr::parse("10.1.0.1/24").unwrap(),
                },
            ],
            routes: vec![],
            floating_ips: vec![],
        }],
    };
    // The networks the benchmark's ports go on, with DHCP.
    let per = args.per_network.clamp(1, 1000);
    let nets: Vec<(String, String)> = (0..args.ports.div_ceil(per))
        .map(|_| (new_id(), new_id()))
        .collect();
    for (k, (n, s)) in nets.iter().enumerate() {
        st.networks.push(network(
            n,
            10 + k as u16,
            Segment::Local,
            vec![subnet(
                s,
                &format!("10.{}.0.0/16", 10 + k),
                Some(&format!("10.{}.0.1", 10 + k)),
                Some(&format!("10.{}.0.2", 10 + k)),
            )],
        ));
    }
    // Throughput VMs, wired first.
    let t1 = vm_port(&new_id(), &na, &sa, &mac(0xfe_0001), "10.0.200.1", &[&sgid]);
    let t2 = vm_port(&new_id(), &na, &sa, &mac(0xfe_0002), "10.0.200.2", &[&sgid]);
    let t3 = vm_port(&new_id(), &nb, &sb, &mac(0xfe_0003), "10.1.0.10", &[&sgid]);
    st.ports
        .extend([t1.clone(), t2.clone(), t3.clone()].map(Arc::new));
    if let Some(g) = st.security_groups.first_mut() {
        g.member_ips = ["10.0.200.1", "10.0.200.2", "10.1.0.10"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
    }
    let ctl = Arc::new(FakeControl::new(st));
    let mut cfg = lab.config();
    // The periodic pass stays, the deep read-back of 2,000 ports' rules
    // is left to its default (5 min) so it does not land in the middle.
    cfg.resync_interval = Duration::from_secs(10);
    let agent = lab.start_agent_with(ctl.clone(), cfg).await;
    let vm1 = lab.vm("tvm1", &t1).await;
    let vm2 = lab.vm("tvm2", &t2).await;
    let vm3 = lab.vm("tvm3", &t3).await;
    for p in [&t1, &t2, &t3] {
        assert!(
            ctl.wait_status(&p.id, PortStatus::Active, Duration::from_secs(30))
                .await
        );
    }
    lab.address(&vm1, "10.0.200.1/16", Some("10.0.0.1")).await;
    lab.address(&vm2, "10.0.200.2/16", Some("10.0.0.1")).await;
    lab.address(&vm3, "10.1.0.10/24", Some("10.1.0.1")).await;

    let (host, dir) = (lab.host.clone(), lab.dir().to_path_buf());
    let probe_before = tokio::task::spawn_blocking(move || nft_probe(&host, &dir)).await?;
    // 1. Wiring latency.
    // The VMs' ends share one namespace here; real VMs each have their
    // own stack, so IPv6 (whose per-interface routes walk every interface
    // of a namespace) is off in it.
    let pool = lab.netns("pool");
    for k in ["all", "default"] {
        lab.net
            .set_sysctl(&pool, &format!("net.ipv6.conf.{k}.disable_ipv6"), "1")
            .await?;
    }
    let mut lat: Vec<f64> = Vec::with_capacity(args.ports);
    let mut probes: Vec<f64> = Vec::new();
    let started = Instant::now();
    eprintln!("wiring {} ports on {} networks …", args.ports, nets.len());
    for i in 0..args.ports {
        let (k, j) = (i / per, i % per);
        let (n, s) = &nets[k];
        let ip = ip_of(k, j);
        let p = vm_port(&new_id(), n, s, &mac(i as u32 + 1), &ip, &[&sgid]);
        let t0 = Instant::now();
        let remote = args.remote_group;
        let port = p.clone();
        ctl.update(move |s| {
            s.ports.push(Arc::new(port));
            if remote {
                if let Some(g) = s.security_groups.first_mut() {
                    g.member_ips.push(ip.parse().unwrap());
                }
            }
        });
        lab.plug_tap(
            &pool,
            &p.device_name,
            &format!("v{i}"),
            &p.mac.parse()?,
            1500,
        )
        .await;
        if !ctl
            .wait_status(&p.id, PortStatus::Active, Duration::from_secs(30))
            .await
        {
            let last: Vec<_> = ctl
                .reports()
                .into_iter()
                .filter(|r| r.port_id == p.id)
                .collect();
            return Err(format!(
                "port {i} ({}) not wired within 30 s; its reports: {last:?}\n{}",
                p.device_name,
                agent.explainer.explain_port(&p.id)
            )
            .into());
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        if (i + 1) % args.bucket == 0 || i + 1 == args.ports {
            let (host, dir) = (lab.host.clone(), lab.dir().to_path_buf());
            let probe = tokio::task::spawn_blocking(move || nft_probe(&host, &dir)).await?;
            probes.push(probe);
            let from = (i / args.bucket) * args.bucket;
            let b = &lat[from..];
            eprintln!(
                "  {:>5} ports: bucket p50 {:.1} ms, one-rule nft transaction {:.1} ms",
                i + 1,
                pct(&mut b.to_vec(), 0.5),
                probe
            );
        }
    }
    let wall = started.elapsed();

    let probe_after = probes.last().copied().unwrap_or(probe_before);
    // 2. Throughput, with the ports loaded.
    let bare_a = lab.netns("bare-a");
    let bare_b = lab.netns("bare-b");
    lab.net
        .ensure_veth(
            &bare_a,
            &VethSpec {
                name: "eth0".into(),
                peer: "eth0".into(),
                peer_netns: bare_b.clone(),
                mtu: 1500,
                peer_mac: None,
                up: true,
            },
        )
        .await?;
    lab.net
        .ensure_address(&bare_a, "eth0", "10.99.0.1/24".parse::<IpNet>()?)
        .await?;
    lab.net
        .ensure_address(&bare_b, "eth0", "10.99.0.2/24".parse::<IpNet>()?)
        .await?;
    let secs = args.seconds;
    let (ba, bb, v1, v2, v3) = (
        bare_a.clone(),
        bare_b.clone(),
        vm1.clone(),
        vm2.clone(),
        vm3.clone(),
    );
    eprintln!("throughput, {secs} s each …");
    let rounds = args.rounds.max(1);
    let (bare, bridged, routed) = tokio::task::spawn_blocking(move || {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            a.push(throughput(
                &bb,
                "10.99.0.2:5201".parse().unwrap(),
                &ba,
                secs,
            ));
            b.push(throughput(
                &v2,
                "10.0.200.2:5201".parse().unwrap(),
                &v1,
                secs,
            ));
            c.push(throughput(
                &v3,
                "10.1.0.10:5201".parse().unwrap(),
                &v1,
                secs,
            ));
            eprintln!(
                "  round {}: bare {:.2}, bridge+SG {:.2}, router {:.2} Gbit/s",
                r + 1,
                a[r],
                b[r],
                c[r]
            );
        }
        (pct(&mut a, 0.5), pct(&mut b, 0.5), pct(&mut c, 0.5))
    })
    .await?;
    let explain = agent.explainer.explain_port(&t1.id);
    agent.stop().await;

    let mut all = lat.clone();
    let p50 = pct(&mut all, 0.5);
    let p99 = pct(&mut all, 0.99);
    let max = all.last().copied().unwrap_or(0.0);
    println!(
        "ferrostack-bench-network — {} ports on one host",
        args.ports
    );
    println!(
        "security group: egress any, ingress icmp, tcp 5201{}",
        if args.remote_group {
            ", all from the group's own members (remote group)"
        } else {
            ""
        }
    );
    println!();
    println!("port created → wired (state change to ACTIVE report), ms");
    println!(
        "  p50 {p50:.1}   p99 {p99:.1}   max {max:.1}   (target: p99 ≤ 50 ms, flat to 2,000 ports)   total {:.1} s",
        wall.as_secs_f64()
    );
    let mut buckets = Vec::new();
    for (k, chunk) in lat.chunks(args.bucket.max(1)).enumerate() {
        let mut c = chunk.to_vec();
        let b50 = pct(&mut c, 0.5);
        buckets.push(b50);
        println!(
            "  ports {:>5}–{:<5} p50 {:>6.1}   p99 {:>6.1}   (a one-rule nft transaction at the end: {:.1})",
            k * args.bucket + 1,
            k * args.bucket + chunk.len(),
            b50,
            pct(&mut c, 0.99),
            probes.get(k).copied().unwrap_or(0.0)
        );
    }
    if let (Some(first), Some(last)) = (buckets.first(), buckets.last()) {
        let ratio = last / first.max(0.001);
        println!(
            "  last bucket / first bucket p50: {ratio:.2} ({})",
            if ratio <= 1.5 {
                "flat"
            } else {
                "grows with the number of ports"
            }
        );
    }
    println!(
        "  a one-rule nft transaction outside the agent's tables: {probe_before:.1} ms with 3 ports loaded, \
         {probe_after:.1} ms with {} (nft 1.0.6 reads every chain and anonymous set before every change)",
        args.ports + 3
    );
    println!();
    println!(
        "TCP throughput, one stream, {secs} s, median of {rounds} interleaved rounds, with the ports above loaded (Gbit/s)"
    );
    println!("  bare veth pair                      {bare:>6.2}");
    println!(
        "  VM → VM through bridge + SG         {bridged:>6.2}   ({:.0}% of bare; target ≥ 80%)",
        bridged / bare * 100.0
    );
    println!(
        "  VM → VM across a router namespace   {routed:>6.2}   ({:.0}% of bare)",
        routed / bare * 100.0
    );
    println!();
    mark_store(&lab.dir().join("marks-bench"), args.ports)?;
    println!();
    println!("one port's path:\n{explain}");
    drop(lab);
    Ok(())
}

/// The mark store's share of a new port: `port()` (allocation) and
/// `save()` (a journal append) of one new port on a store of `ports`
/// ports, 500 times, then reopening it (snapshot + journal replay).
fn mark_store(dir: &std::path::Path, ports: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut s = agent::marks::MarkStore::open(dir)?;
    let rules: Vec<String> = (0..50).map(|i| format!("rule-{i}")).collect();
    for i in 0..ports {
        let ids: Vec<&str> = (0..4).map(|k| rules[(i + k) % 50].as_str()).collect();
        s.port(&format!("tap{i:011}"), &ids)?;
    }
    s.save()?;
    let (mut allocs, mut saves) = (Vec::new(), Vec::new());
    for i in 0..500 {
        let t = Instant::now();
        s.port(&format!("tapnew{i:08}"), &["rule-1", "rule-2"])?;
        allocs.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        s.save()?;
        saves.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let t = Instant::now();
    let reopened = agent::marks::MarkStore::open(dir)?;
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "mark store, one new port on {ports}–{} ports, µs (p50 / p99)",
        ports + 500
    );
    println!(
        "  allocate {:.1} / {:.1}   save {:.1} / {:.1}   reopen {open_ms:.1} ms ({} ports)",
        pct(&mut allocs, 0.5),
        pct(&mut allocs, 0.99),
        pct(&mut saves, 0.5),
        pct(&mut saves, 0.99),
        reopened.state().ports.len()
    );
    Ok(())
}
