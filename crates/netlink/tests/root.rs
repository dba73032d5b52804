//! Privileged tests against the real kernel: they run as root (CI does)
//! and skip with a printed reason otherwise. Every test works in its own
//! `fst-XXXXXX-*` namespaces, deleted by a guard even on panic, and is
//! bounded in time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hostlink::testing::{require_root, tcp_echo_ok, tcp_echo_server, unique_prefix, NetnsGuard};
use hostlink::{
    netns, BridgeSpec, Fake, FdbEntry, HostNet, IpNet, Kernel, LinkKind, MacAddr, Neighbour, Netns,
    Route, VethSpec, VxlanSpec,
};

const LIMIT: Duration = Duration::from_secs(60);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}
fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}
fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One host namespace with a bridge, two "VM" namespaces on it, a VXLAN
/// device over an underlay veth, addresses, routes, neighbours and FDB
/// entries: every kind of object the driver manages.
async fn build(d: &dyn HostNet, p: &str) -> hostlink::Result<()> {
    let (h, a, b, u) = (
        Netns::named(format!("{p}-h"))?,
        Netns::named(format!("{p}-a"))?,
        Netns::named(format!("{p}-b"))?,
        Netns::named(format!("{p}-u"))?,
    );
    for n in [&h, &a, &b, &u] {
        d.ensure_netns(n.name().unwrap()).await?;
    }
    d.ensure_bridge(
        &h,
        &BridgeSpec {
            name: "fsb-0a".into(),
            mtu: 1450,
        },
    )
    .await?;
    for (vm, tap, m, addr) in [
        (&a, "tap-a", "fa:16:3e:00:0a:01", "10.0.0.5/24"),
        (&b, "tap-b", "fa:16:3e:00:0a:02", "10.0.0.6/24"),
    ] {
        d.ensure_veth(
            &h,
            &VethSpec {
                name: tap.into(),
                peer: "eth0".into(),
                peer_netns: vm.clone(),
                mtu: 1450,
                peer_mac: Some(mac(m)),
                up: true,
            },
        )
        .await?;
        if tap == "tap-b" {
            // The agent's one-call wiring (MTU, bridge, up).
            d.wire_port(&h, tap, "fsb-0a", 1450).await?;
        } else {
            d.set_master(&h, tap, Some("fsb-0a")).await?;
        }
        d.ensure_address(vm, "eth0", net(addr)).await?;
    }
    d.ensure_address(&a, "eth0", net("fd00::5/64")).await?;
    d.ensure_route(
        &a,
        &Route {
            dest: IpNet::default_v4(),
            gateway: Some(ip("10.0.0.1")),
            dev: None,
        },
    )
    .await?;
    d.ensure_route(
        &a,
        &Route {
            dest: net("192.0.2.0/24"),
            gateway: None,
            dev: Some("eth0".into()),
        },
    )
    .await?;
    d.ensure_neighbour(
        &a,
        &Neighbour {
            link: "eth0".into(),
            ip: ip("10.0.0.6"),
            mac: mac("fa:16:3e:00:0a:02"),
        },
    )
    .await?;
    d.set_sysctl(&a, "net.ipv4.ip_forward", "1").await?;
    // Underlay and VXLAN.
    d.ensure_veth(
        &h,
        &VethSpec {
            name: "ul0".into(),
            peer: "ul1".into(),
            peer_netns: u.clone(),
            mtu: 1500,
            peer_mac: None,
            up: true,
        },
    )
    .await?;
    d.ensure_address(&h, "ul0", net("10.99.0.1/24")).await?;
    d.ensure_vxlan(
        &h,
        &VxlanSpec {
            name: "fsx-100".into(),
            vni: 100,
            local: "10.99.0.1".parse().unwrap(),
            port: VxlanSpec::IANA_PORT,
            underlay: Some("ul0".into()),
            mtu: 1450,
        },
    )
    .await?;
    d.set_master(&h, "fsx-100", Some("fsb-0a")).await?;
    for e in [
        FdbEntry {
            mac: MacAddr::ZERO,
            dst: ip("10.99.0.2"),
        },
        FdbEntry {
            mac: MacAddr::ZERO,
            dst: ip("10.99.0.3"),
        },
        FdbEntry {
            mac: mac("fa:16:3e:00:0b:01"),
            dst: ip("10.99.0.2"),
        },
    ] {
        d.append_fdb(&h, "fsx-100", &e).await?;
    }
    Ok(())
}

/// Everything the driver can list in the scenario's namespaces, as text
/// without the kernel's random parts (indices, random MACs), so the real
/// and the fake driver can be compared line by line.
async fn snapshot(d: &dyn HostNet, p: &str) -> String {
    let mut out = String::new();
    let mine: Vec<String> = d
        .list_netns()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(p))
        .collect();
    out += &format!(
        "netns {:?}\n",
        mine.iter()
            .map(|n| n.replacen(p, "P", 1))
            .collect::<Vec<_>>()
    );
    for n in &mine {
        let ns = Netns::Named(n.clone());
        out += &format!("[{}]\n", n.replacen(p, "P", 1));
        let mut links = d.list_links(&ns).await.unwrap();
        links.sort_by(|a, b| a.name.cmp(&b.name));
        for l in &links {
            let m = l.mac.filter(|m| m.0[..3] == [0xfa, 0x16, 0x3e]);
            out += &format!(
                "link {} {:?} master={:?} mtu={} up={} mac={:?}\n",
                l.name,
                l.kind,
                l.master,
                l.mtu,
                l.up,
                m.map(|m| m.to_string())
            );
            if matches!(l.kind, LinkKind::Vxlan(_)) {
                for e in d.list_fdb(&ns, &l.name).await.unwrap() {
                    out += &format!("  fdb {} dst {}\n", e.mac, e.dst);
                }
            }
        }
        for a in d.list_addresses(&ns).await.unwrap() {
            out += &format!("addr {} {}\n", a.link, a.net);
        }
        for r in d.list_routes(&ns).await.unwrap() {
            out += &format!("route {} via {:?} dev {:?}\n", r.dest, r.gateway, r.dev);
        }
        for nb in d.list_neighbours(&ns).await.unwrap() {
            out += &format!("neigh {} {} {}\n", nb.link, nb.ip, nb.mac);
        }
        out += &format!(
            "ip_forward={}\n",
            d.get_sysctl(&ns, "net.ipv4.ip_forward").await.unwrap()
        );
    }
    out
}

async fn teardown(d: &dyn HostNet, p: &str) {
    for s in ["h", "a", "b", "u"] {
        d.delete_netns(&format!("{p}-{s}")).await.unwrap();
    }
}

#[tokio::test]
async fn kernel_and_fake_agree_and_ensure_twice_changes_nothing() {
    if !require_root("kernel_and_fake_agree_and_ensure_twice_changes_nothing") {
        return;
    }
    let started = Instant::now();
    let p = unique_prefix();
    let mut guard = NetnsGuard::new();
    for s in ["h", "a", "b", "u"] {
        guard.adopt(&format!("{p}-{s}"));
    }
    tokio::time::timeout(LIMIT, async {
        let k = Kernel::new();
        let f = Fake::new();
        build(&k, &p).await.unwrap();
        build(&f, &p).await.unwrap();
        let real = snapshot(&k, &p).await;
        let fake = snapshot(&f, &p).await;
        assert_eq!(real, fake, "real:\n{real}\nfake:\n{fake}");
        assert!(
            real.contains("fdb 00:00:00:00:00:00 dst 10.99.0.3"),
            "{real}"
        );
        assert!(real.contains("port: 4789"), "{real}");

        // Idempotency: the same desired state again changes nothing.
        build(&k, &p).await.unwrap();
        assert_eq!(snapshot(&k, &p).await, real);

        // The two VMs on the bridge talk to each other.
        let (a, b) = (
            Netns::Named(format!("{p}-a")),
            Netns::Named(format!("{p}-b")),
        );
        tcp_echo_server(&b, sa("10.0.0.6:7000"));
        assert!(tcp_echo_ok(&a, sa("10.0.0.6:7000"), Duration::from_secs(5)));

        // Deletes, including of what is absent, behave the same too.
        for d in [&k as &dyn HostNet, &f] {
            let h = Netns::Named(format!("{p}-h"));
            d.delete_fdb(
                &h,
                "fsx-100",
                &FdbEntry {
                    mac: MacAddr::ZERO,
                    dst: ip("10.99.0.3"),
                },
            )
            .await
            .unwrap();
            d.delete_fdb(
                &h,
                "fsx-100",
                &FdbEntry {
                    mac: MacAddr::ZERO,
                    dst: ip("10.99.0.3"),
                },
            )
            .await
            .unwrap();
            d.delete_route(&a, net("192.0.2.0/24")).await.unwrap();
            d.delete_route(&a, net("192.0.2.0/24")).await.unwrap();
            d.delete_neighbour(&a, "eth0", ip("10.0.0.6"))
                .await
                .unwrap();
            d.delete_neighbour(&a, "eth0", ip("10.0.0.6"))
                .await
                .unwrap();
            d.delete_address(&a, "eth0", net("fd00::5/64"))
                .await
                .unwrap();
            d.delete_address(&a, "eth0", net("fd00::5/64"))
                .await
                .unwrap();
            d.set_master(&h, "tap-b", None).await.unwrap();
            d.set_mtu(&h, "tap-b", 1400).await.unwrap();
            d.set_up(&h, "tap-b", false).await.unwrap();
            d.set_mac(&h, "tap-b", mac("fa:16:3e:00:0c:01"))
                .await
                .unwrap();
            d.delete_link(&h, "tap-a").await.unwrap();
            d.delete_link(&h, "tap-a").await.unwrap();
        }
        let real = snapshot(&k, &p).await;
        let fake = snapshot(&f, &p).await;
        assert_eq!(real, fake, "real:\n{real}\nfake:\n{fake}");
        assert!(
            !real.contains("tap-a") && !real.contains("eth0 fa:16:3e:00:0a:01"),
            "veth peer gone:\n{real}"
        );

        teardown(&k, &p).await;
        teardown(&f, &p).await;
        teardown(&k, &p).await; // deleting absent namespaces is fine
        assert_eq!(snapshot(&k, &p).await, "netns []\n");
    })
    .await
    .expect("test took too long");
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test]
async fn mistakes_fail_alike_and_name_the_object() {
    if !require_root("mistakes_fail_alike_and_name_the_object") {
        return;
    }
    let p = unique_prefix();
    let mut guard = NetnsGuard::new();
    guard.adopt(&format!("{p}-h"));
    let k = Kernel::new();
    let f = Fake::new();
    let h = Netns::Named(format!("{p}-h"));
    for d in [&k as &dyn HostNet, &f] {
        d.ensure_netns(&format!("{p}-h")).await.unwrap();
        d.ensure_bridge(
            &h,
            &BridgeSpec {
                name: "br1".into(),
                mtu: 1500,
            },
        )
        .await
        .unwrap();
        let e = d.set_master(&h, "nope", Some("br1")).await.unwrap_err();
        assert!(matches!(e, hostlink::Error::NoSuchLink { .. }), "{e}");
        assert!(
            e.to_string().contains("nope") && e.to_string().contains(&p),
            "{e}"
        );
        d.ensure_veth(
            &h,
            &VethSpec {
                name: "v0".into(),
                peer: "v1".into(),
                peer_netns: h.clone(),
                mtu: 1500,
                peer_mac: None,
                up: true,
            },
        )
        .await
        .unwrap();
        // A veth where a bridge is wanted, and a vxlan with another VNI.
        let e = d
            .ensure_bridge(
                &h,
                &BridgeSpec {
                    name: "v0".into(),
                    mtu: 1500,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(e, hostlink::Error::Conflict { .. }), "{e}");
        let vx = VxlanSpec {
            name: "vx1".into(),
            vni: 7,
            local: "10.9.9.9".parse().unwrap(),
            port: 4789,
            underlay: None,
            mtu: 1450,
        };
        d.ensure_vxlan(&h, &vx).await.unwrap();
        d.ensure_vxlan(&h, &vx).await.unwrap();
        let e = d
            .ensure_vxlan(
                &h,
                &VxlanSpec {
                    vni: 8,
                    ..vx.clone()
                },
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("vx1"), "{e}");
        // A bridge port cannot be a master.
        let e = d.set_master(&h, "v0", Some("v1")).await.unwrap_err();
        assert!(e.errno().is_some(), "{e}");
        // Unreachable gateway.
        let e = d
            .ensure_route(
                &h,
                &Route {
                    dest: IpNet::default_v4(),
                    gateway: Some(ip("10.1.1.1")),
                    dev: None,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.errno(), Some(101), "{e}");
        // Gratuitous ARP out of a link that is not there.
        let garp = |ns: Netns, link: &'static str| async move {
            d.announce_ipv4(
                &ns,
                link,
                mac("fa:16:3e:00:00:01"),
                &["10.0.0.1".parse().unwrap()],
                1,
                Duration::ZERO,
            )
            .await
            .unwrap_err()
        };
        let e = garp(h.clone(), "nope").await;
        assert!(matches!(e, hostlink::Error::NoSuchLink { .. }), "{e}");
        let e = garp(Netns::Named(format!("{p}-absent")), "v0").await;
        assert!(matches!(e, hostlink::Error::NoSuchNetns(_)), "{e}");
        let e = d.ensure_netns("../etc").await.unwrap_err();
        assert!(matches!(e, hostlink::Error::InvalidName { .. }));
        assert!(matches!(
            d.list_links(&Netns::Named(format!("{p}-absent")))
                .await
                .unwrap_err(),
            hostlink::Error::NoSuchNetns(_)
        ));
        d.delete_netns(&format!("{p}-h")).await.unwrap();
    }
}

#[tokio::test]
async fn vxlan_carries_traffic_between_two_hosts_with_programmed_fdb() {
    if !require_root("vxlan_carries_traffic_between_two_hosts_with_programmed_fdb") {
        return;
    }
    let started = Instant::now();
    let p = unique_prefix();
    let mut g = NetnsGuard::new();
    let d = Kernel::new();
    tokio::time::timeout(LIMIT, async {
        let names: Vec<Netns> = ["h1", "h2", "a", "c"]
            .iter()
            .map(|s| g.adopt(&format!("{p}-{s}")))
            .collect();
        let (h1, h2, a, c) = (&names[0], &names[1], &names[2], &names[3]);
        for n in &names {
            d.ensure_netns(n.name().unwrap()).await.unwrap();
        }
        // Underlay: a veth between the two "hosts".
        d.ensure_veth(
            h1,
            &VethSpec {
                name: "ul".into(),
                peer: "ul".into(),
                peer_netns: h2.clone(),
                mtu: 1500,
                peer_mac: None,
                up: true,
            },
        )
        .await
        .unwrap();
        let mut peers = Vec::new();
        for (i, (h, vm, vm_mac, vm_ip)) in [
            (h1, a, "fa:16:3e:00:0a:01", "10.0.0.5/24"),
            (h2, c, "fa:16:3e:00:0a:03", "10.0.0.7/24"),
        ]
        .into_iter()
        .enumerate()
        {
            let local = format!("10.99.0.{}", i + 1);
            d.ensure_address(h, "ul", net(&format!("{local}/24")))
                .await
                .unwrap();
            d.ensure_bridge(
                h,
                &BridgeSpec {
                    name: "fsb-n".into(),
                    mtu: 1450,
                },
            )
            .await
            .unwrap();
            d.ensure_vxlan(
                h,
                &VxlanSpec {
                    name: "fsx-100".into(),
                    vni: 100,
                    local: local.parse().unwrap(),
                    port: 4789,
                    underlay: Some("ul".into()),
                    mtu: 1450,
                },
            )
            .await
            .unwrap();
            d.set_master(h, "fsx-100", Some("fsb-n")).await.unwrap();
            d.ensure_veth(
                h,
                &VethSpec {
                    name: "tap".into(),
                    peer: "eth0".into(),
                    peer_netns: vm.clone(),
                    mtu: 1450,
                    peer_mac: Some(mac(vm_mac)),
                    up: true,
                },
            )
            .await
            .unwrap();
            d.set_master(h, "tap", Some("fsb-n")).await.unwrap();
            d.ensure_address(vm, "eth0", net(vm_ip)).await.unwrap();
            peers.push((local, vm_mac));
        }
        // No FDB entries yet: nothing crosses (learning is off, no flooding).
        tcp_echo_server(c, sa("10.0.0.7:7001"));
        assert!(!tcp_echo_ok(
            a,
            sa("10.0.0.7:7001"),
            Duration::from_millis(700)
        ));
        // l2population-style entries: BUM to the other host, and the remote
        // VM's MAC.
        for (h, (remote, remote_mac)) in [(h1, &peers[1]), (h2, &peers[0])] {
            for e in [
                FdbEntry {
                    mac: MacAddr::ZERO,
                    dst: ip(remote),
                },
                FdbEntry {
                    mac: mac(remote_mac),
                    dst: ip(remote),
                },
            ] {
                d.append_fdb(h, "fsx-100", &e).await.unwrap();
                d.append_fdb(h, "fsx-100", &e).await.unwrap();
            }
        }
        let fdb = d.list_fdb(h1, "fsx-100").await.unwrap();
        assert_eq!(
            fdb,
            vec![
                FdbEntry {
                    mac: MacAddr::ZERO,
                    dst: ip("10.99.0.2")
                },
                FdbEntry {
                    mac: mac("fa:16:3e:00:0a:03"),
                    dst: ip("10.99.0.2")
                }
            ]
        );
        assert!(tcp_echo_ok(a, sa("10.0.0.7:7001"), Duration::from_secs(5)));
        // Moving the remote MAC to another host replaces its entry.
        d.append_fdb(
            h1,
            "fsx-100",
            &FdbEntry {
                mac: mac("fa:16:3e:00:0a:03"),
                dst: ip("10.99.0.9"),
            },
        )
        .await
        .unwrap();
        assert!(d
            .list_fdb(h1, "fsx-100")
            .await
            .unwrap()
            .contains(&FdbEntry {
                mac: mac("fa:16:3e:00:0a:03"),
                dst: ip("10.99.0.9")
            }));
        assert_eq!(d.list_fdb(h1, "fsx-100").await.unwrap().len(), 2);
    })
    .await
    .expect("test took too long");
    drop(g);
    let left: Vec<String> = netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&p))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test]
async fn netns_services_sysctls_and_listeners_work_inside() {
    if !require_root("netns_services_sysctls_and_listeners_work_inside") {
        return;
    }
    let p = unique_prefix();
    let mut g = NetnsGuard::new();
    let d = Kernel::new();
    let r = g.adopt(&format!("{p}-r"));
    d.ensure_netns(r.name().unwrap()).await.unwrap();
    d.ensure_netns(r.name().unwrap()).await.unwrap();
    assert!(d.list_netns().await.unwrap().contains(&format!("{p}-r")));
    // Per-namespace sysctl: set inside, the host's own value is untouched.
    let host_fwd = d
        .get_sysctl(&Netns::Current, "net.ipv4.ip_forward")
        .await
        .unwrap();
    let want = if host_fwd == "1" { "0" } else { "1" };
    d.set_sysctl(&r, "net.ipv4.ip_forward", want).await.unwrap();
    assert_eq!(d.get_sysctl(&r, "net.ipv4.ip_forward").await.unwrap(), want);
    assert_eq!(
        d.get_sysctl(&Netns::Current, "net.ipv4.ip_forward")
            .await
            .unwrap(),
        host_fwd
    );
    assert!(d.set_sysctl(&r, "kernel.hostname", "x").await.is_err());
    assert!(d
        .set_sysctl(&r, "net.ipv4/../../kernel", "x")
        .await
        .is_err());
    // A listener opened from the host process lives in the namespace:
    // reachable from inside on loopback, not from the host.
    let l = d.listen_tcp(&r, sa("127.0.0.1:0")).await.unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for s in l.incoming().flatten().take(1) {
            let mut s = s;
            let _ = s.write_all(b"ping\n");
        }
    });
    let inside = netns::run_in(&r, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .unwrap();
    assert!(inside);
    // block_on_in gives async code inside the namespace.
    let links = netns::block_on_in(&r, || async {
        std::fs::read_to_string("/proc/thread-self/net/dev").unwrap()
    })
    .unwrap();
    assert_eq!(links.lines().count(), 3, "only lo inside: {links}");
    d.delete_netns(r.name().unwrap()).await.unwrap();
    assert!(!netns::exists(r.name().unwrap()));
}

/// Ethernet frames of type ARP arriving on `link` in `ns` until `n` came
/// or `limit` passed, on a thread inside the namespace; `ready` is told
/// once the capture is open.
fn capture_arp(
    ns: Netns,
    link: &'static str,
    n: usize,
    limit: Duration,
    ready: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        netns::run_in(&ns, move || {
            // A veth carries frames only once both ends are up; on a loaded
            // machine that can lag behind the netlink answer, and frames
            // sent before are dropped. Wait for carrier (IFF_RUNNING).
            let wait = Instant::now();
            let iface = loop {
                let iface = pnet_datalink::interfaces()
                    .into_iter()
                    .find(|i| i.name == link)
                    .expect("capture link");
                if iface.is_running() || wait.elapsed() > limit {
                    break iface;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let config = pnet_datalink::Config {
                read_timeout: Some(Duration::from_millis(100)),
                promiscuous: false,
                ..Default::default()
            };
            let Ok(pnet_datalink::Channel::Ethernet(_tx, mut rx)) =
                pnet_datalink::channel(&iface, config)
            else {
                panic!("capture channel on {link}");
            };
            ready.send(()).unwrap();
            let start = Instant::now();
            let mut got = Vec::new();
            while got.len() < n && start.elapsed() < limit {
                if let Ok(f) = rx.next() {
                    if f.len() >= 14 && f[12..14] == [0x08, 0x06] {
                        got.push(f.to_vec());
                    }
                }
            }
            got
        })
        .expect("enter netns")
    })
}

#[tokio::test]
async fn gratuitous_arp_leaves_by_the_link_in_its_namespace() {
    if !require_root("gratuitous_arp_leaves_by_the_link_in_its_namespace") {
        return;
    }
    let p = unique_prefix();
    let mut g = NetnsGuard::new();
    let d = Kernel::new();
    let (a, b) = (g.adopt(&format!("{p}-a")), g.adopt(&format!("{p}-b")));
    tokio::time::timeout(LIMIT, async {
        for n in [&a, &b] {
            d.ensure_netns(n.name().unwrap()).await.unwrap();
        }
        d.ensure_veth(
            &a,
            &VethSpec {
                name: "qg-x".into(),
                peer: "eth0".into(),
                peer_netns: b.clone(),
                mtu: 1500,
                peer_mac: None,
                up: true,
            },
        )
        .await
        .unwrap();
        let m = mac("fa:16:3e:00:00:c8");
        let ips: Vec<std::net::Ipv4Addr> = ["203.0.113.10", "203.0.113.20"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let cap = capture_arp(b.clone(), "eth0", 6, Duration::from_secs(5), tx);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("capture open");
        let t0 = Instant::now();
        d.announce_ipv4(&a, "qg-x", m, &ips, 3, Duration::from_millis(100))
            .await
            .unwrap();
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200), "rounds apart: {took:?}");
        let got = tokio::task::spawn_blocking(move || cap.join().unwrap())
            .await
            .unwrap();
        // Three rounds, one frame per address in each, as built (a veth
        // does not pad short frames).
        let want: Vec<Vec<u8>> = (0..3)
            .flat_map(|_| &ips)
            .map(|ip| hostlink::arp::gratuitous_request(m, *ip).to_vec())
            .collect();
        assert_eq!(got, want);
        // Nothing to announce: fine, nothing sent.
        d.announce_ipv4(&a, "qg-x", m, &[], 3, Duration::from_secs(10))
            .await
            .unwrap();
    })
    .await
    .expect("test took too long");
}
