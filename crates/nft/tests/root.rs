//! Privileged tests: real bridges, namespaces and nftables. They run as
//! root (CI does) and skip with a printed reason otherwise; each builds
//! its own `fst-XXXXXX-*` namespaces (deleted by a guard, even on panic),
//! so the machine's own ruleset is never touched.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hostlink::testing::{
    require_root, stream_alive, tcp_connect_in, tcp_echo_ok, tcp_echo_server, unique_prefix,
    NetnsGuard,
};
use hostlink::{netns, BridgeSpec, HostNet, IpNet, Kernel, MacAddr, Neighbour, Netns, VethSpec};
use nft::{
    Direction, EtherType, Firewall, FloatingIp, InternalLeg, Nft, PortRules, Protocol, Remote,
    RouterNat, SgRule,
};

const T: Duration = Duration::from_secs(3);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A host namespace with bridges, and VM namespaces plugged into them.
struct Lab {
    p: String,
    host: Netns,
    guard: NetnsGuard,
    rt: tokio::runtime::Runtime,
}

impl Lab {
    fn new() -> Lab {
        let p = unique_prefix();
        let mut guard = NetnsGuard::new();
        let host = guard.create(&format!("{p}-host"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let lab = Lab { p, host, guard, rt };
        // Security groups must be enforced on bridged traffic, and a
        // flushed flow must not come back reversed (recipe §2).
        netns::write_sysctl(&lab.host, "net.bridge.bridge-nf-call-iptables", "1").unwrap();
        lab
    }

    fn bridge(&self, name: &str) {
        self.rt
            .block_on(Kernel.ensure_bridge(
                &self.host,
                &BridgeSpec {
                    name: name.into(),
                    mtu: 1500,
                },
            ))
            .unwrap();
    }

    /// A VM namespace `tag` with eth0 (`mac`, `ip`/24) on `bridge` via `tap`.
    fn vm(&mut self, tag: &str, bridge: &str, tap: &str, mac: &str, ip: &str) -> Netns {
        let ns = self.guard.create(&format!("{}-{tag}", self.p));
        let k = Kernel;
        self.rt.block_on(async {
            k.ensure_veth(
                &self.host,
                &VethSpec {
                    name: tap.into(),
                    peer: "eth0".into(),
                    peer_netns: ns.clone(),
                    mtu: 1500,
                    peer_mac: Some(mac.parse().unwrap()),
                    up: true,
                },
            )
            .await
            .unwrap();
            k.set_master(&self.host, tap, Some(bridge)).await.unwrap();
            k.ensure_address(&ns, "eth0", format!("{ip}/24").parse().unwrap())
                .await
                .unwrap();
            k.ensure_netns(ns.name().unwrap()).await.unwrap(); // lo up
        });
        ns
    }

    /// Bridge `fsb-a` with VMs `a` (10.0.0.5, on `tap-a`) and `b`
    /// (10.0.0.6, on `tap-b`).
    fn pair(&mut self) -> (Netns, Netns) {
        self.bridge("fsb-a");
        let a = self.vm("a", "fsb-a", "tap-a", "fa:16:3e:00:0a:01", "10.0.0.5");
        let b = self.vm("b", "fsb-a", "tap-b", "fa:16:3e:00:0a:02", "10.0.0.6");
        (a, b)
    }
}

fn port(name: &str, mark: u32, mac: &str, ip: &str, rules: Vec<SgRule>) -> PortRules {
    PortRules {
        name: name.into(),
        mark,
        mac: mac.parse().unwrap(),
        fixed_ips: vec![ip.parse().unwrap()],
        allowed_pairs: vec![],
        port_security: true,
        rules,
    }
}

fn allow_all_egress(mark: u32) -> Vec<SgRule> {
    [EtherType::V4, EtherType::V6]
        .into_iter()
        .enumerate()
        .map(|(i, e)| SgRule {
            ct_mark: mark + i as u32,
            direction: Direction::Egress,
            ethertype: e,
            protocol: None,
            port_range: None,
            remote: Remote::Any,
        })
        .collect()
}

fn tcp_in(mark: u32, port: u16) -> SgRule {
    SgRule {
        ct_mark: mark,
        direction: Direction::Ingress,
        ethertype: EtherType::V4,
        protocol: Some(Protocol::TCP),
        port_range: Some((port, port)),
        remote: Remote::Any,
    }
}

/// Sends one UDP datagram from `src` inside `from` to `dst`, and says
/// whether the receiver bound at `dst` inside `to` got it.
fn udp_delivered(from: &Netns, src: &str, to: &Netns, dst: &str) -> bool {
    let rx = netns::run_in(to, || UdpSocket::bind(dst)).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    netns::run_in(from, || {
        let tx = UdpSocket::bind(src).unwrap();
        tx.send_to(b"x", dst).unwrap();
    })
    .unwrap();
    let mut buf = [0u8; 4];
    rx.recv_from(&mut buf).is_ok()
}

#[test]
fn security_group_allows_one_port_drops_another_and_revocation_cuts_the_session() {
    if !require_root("security_group_allows_one_port_drops_another_and_revocation_cuts_the_session")
    {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::new();
    let (a, b) = lab.pair();
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    fw.ensure_base().unwrap();
    netns::write_sysctl(&lab.host, "net.netfilter.nf_conntrack_tcp_loose", "0").unwrap();
    fw.upsert_network("fsb-a", 1).unwrap();
    let pa = port(
        "tap-a",
        1 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        allow_all_egress(0x100),
    );
    let mut pb = port(
        "tap-b",
        2 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        allow_all_egress(0x200),
    );
    pb.rules.push(tcp_in(0x210, 7000));
    fw.upsert_port(&pa).unwrap();
    fw.upsert_port(&pb).unwrap();

    tcp_echo_server(&b, sa("10.0.0.6:7000"));
    tcp_echo_server(&b, sa("10.0.0.6:7001"));
    assert!(
        tcp_echo_ok(&a, sa("10.0.0.6:7000"), T),
        "allowed port must pass"
    );
    assert!(
        !tcp_echo_ok(&a, sa("10.0.0.6:7001"), Duration::from_millis(700)),
        "other port must be dropped"
    );

    // Idempotency: the same state again is no transaction at all, so the
    // kernel's rule handles stay the same.
    let before = netns::run_in(&lab.host, || {
        std::process::Command::new("nft")
            .args(["-a", "list", "ruleset"])
            .output()
            .unwrap()
            .stdout
    })
    .unwrap();
    fw.upsert_port(&pa).unwrap();
    fw.upsert_port(&pb).unwrap();
    fw.ensure_base().unwrap();
    fw.upsert_network("fsb-a", 1).unwrap();
    let after = netns::run_in(&lab.host, || {
        std::process::Command::new("nft")
            .args(["-a", "list", "ruleset"])
            .output()
            .unwrap()
            .stdout
    })
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&before),
        String::from_utf8_lossy(&after)
    );
    let listed = fw.list_ports().unwrap();
    assert_eq!(listed.len(), 2);
    let mb: u32 = 2 << 16;
    assert_eq!(listed[1].ct_marks, vec![mb | 0x200, mb | 0x201, mb | 0x210]);
    assert_eq!(listed[1].digest, pb.digest());
    // A fresh driver (an agent restart) reads the same state back.
    assert_eq!(Nft::new(lab.host.clone()).list_ports().unwrap(), listed);

    // An established session through the rule survives unrelated updates…
    let mut s = tcp_connect_in(&a, sa("10.0.0.6:7000"), T).unwrap();
    assert!(stream_alive(&mut s, T));
    let mut pb2 = pb.clone();
    pb2.rules.push(tcp_in(0x211, 7002));
    fw.upsert_port(&pb2).unwrap();
    assert!(
        stream_alive(&mut s, T),
        "re-applying rules must not cut sessions"
    );
    // …and is cut once the rule is deleted.
    pb2.rules.retain(|r| r.ct_mark != 0x210);
    fw.upsert_port(&pb2).unwrap();
    assert!(fw.revoked().unwrap().contains(&(mb | 0x210)));
    assert!(
        !stream_alive(&mut s, Duration::from_millis(700)),
        "deleted rule must cut the session"
    );
    assert!(!tcp_echo_ok(
        &a,
        sa("10.0.0.6:7000"),
        Duration::from_millis(700)
    ));

    // Cleanup leaves no table behind.
    fw.remove_port("tap-a").unwrap();
    fw.remove_port("tap-a").unwrap();
    assert_eq!(fw.list_ports().unwrap().len(), 1);
    // Removing a port cuts the sessions its rules let in.
    tcp_echo_server(&b, sa("10.0.0.6:7002"));
    let mut s2 = tcp_connect_in(&a, sa("10.0.0.6:7002"), T).unwrap();
    assert!(stream_alive(&mut s2, T));
    fw.remove_port("tap-b").unwrap();
    assert_eq!(fw.gone_ports().unwrap().get("tap-b"), Some(&mb));
    assert!(fw.revoked().unwrap().contains(&(mb | 0x211)));
    assert!(
        !stream_alive(&mut s2, Duration::from_millis(700)),
        "a removed port's sessions must be cut"
    );
    fw.delete_all().unwrap();
    fw.delete_all().unwrap();
    let rs = netns::run_in(&lab.host, || {
        std::process::Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap()
            .stdout
    })
    .unwrap();
    assert!(rs.is_empty(), "{}", String::from_utf8_lossy(&rs));
    drop(lab);
    eprintln!("took {:?}", started.elapsed());
}

#[test]
fn anti_spoofing_drops_a_foreign_source_unless_port_security_is_off() {
    if !require_root("anti_spoofing_drops_a_foreign_source_unless_port_security_is_off") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair();
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    fw.upsert_network("fsb-a", 1).unwrap();
    let udp_in = SgRule {
        ct_mark: 0x210,
        direction: Direction::Ingress,
        ethertype: EtherType::V4,
        protocol: Some(Protocol::UDP),
        port_range: Some((6000, 6000)),
        remote: Remote::Any,
    };
    let pa = port(
        "tap-a",
        1 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        allow_all_egress(0x100),
    );
    let mut pb = port(
        "tap-b",
        2 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        allow_all_egress(0x200),
    );
    pb.rules.push(udp_in);
    fw.upsert_port(&pa).unwrap();
    fw.upsert_port(&pb).unwrap();
    // a also holds 10.0.0.99, and knows b's MAC (so ARP is not what
    // stops it: the source-IP rule must).
    lab.rt.block_on(async {
        Kernel
            .ensure_address(&a, "eth0", "10.0.0.99/24".parse::<IpNet>().unwrap())
            .await
            .unwrap();
        Kernel
            .ensure_neighbour(
                &a,
                &Neighbour {
                    link: "eth0".into(),
                    ip: "10.0.0.6".parse::<IpAddr>().unwrap(),
                    mac: "fa:16:3e:00:0a:02".parse::<MacAddr>().unwrap(),
                },
            )
            .await
            .unwrap();
    });
    assert!(
        udp_delivered(&a, "10.0.0.5:5000", &b, "10.0.0.6:6000"),
        "own address passes"
    );
    assert!(
        !udp_delivered(&a, "10.0.0.99:5000", &b, "10.0.0.6:6000"),
        "spoofed source must be dropped"
    );
    // Allowed address pair: the same source is now legitimate.
    let mut pa2 = pa.clone();
    pa2.allowed_pairs.push(nft::AllowedPair {
        ip: "10.0.0.99/32".parse().unwrap(),
        mac: None,
    });
    fw.upsert_port(&pa2).unwrap();
    assert!(
        udp_delivered(&a, "10.0.0.99:5001", &b, "10.0.0.6:6000"),
        "allowed pair passes"
    );
    // Port security off on a: no chains for it, spoofing passes.
    let mut off = pa.clone();
    off.port_security = false;
    fw.upsert_port(&off).unwrap();
    assert_eq!(
        fw.list_ports()
            .unwrap()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["tap-b"]
    );
    assert!(udp_delivered(&a, "10.0.0.99:5002", &b, "10.0.0.6:6000"));
}

#[test]
fn conntrack_zones_keep_overlapping_tenants_apart() {
    if !require_root("conntrack_zones_keep_overlapping_tenants_apart") {
        return;
    }
    let mut lab = Lab::new();
    lab.bridge("fsb-a");
    lab.bridge("fsb-b");
    // Two tenants, same addresses, same MACs even.
    let a1 = lab.vm("a1", "fsb-a", "tap-a1", "fa:16:3e:00:0a:01", "10.0.0.5");
    let a2 = lab.vm("a2", "fsb-a", "tap-a2", "fa:16:3e:00:0a:02", "10.0.0.6");
    let b1 = lab.vm("b1", "fsb-b", "tap-b1", "fa:16:3e:00:0a:01", "10.0.0.5");
    let b2 = lab.vm("b2", "fsb-b", "tap-b2", "fa:16:3e:00:0a:02", "10.0.0.6");
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    fw.upsert_network("fsb-a", 1).unwrap();
    fw.upsert_network("fsb-b", 2).unwrap();
    let udp_in = SgRule {
        ct_mark: 0x210,
        direction: Direction::Ingress,
        ethertype: EtherType::V4,
        protocol: Some(Protocol::UDP),
        port_range: Some((6000, 6000)),
        remote: Remote::Any,
    };
    fw.upsert_port(&port(
        "tap-a1",
        1 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        allow_all_egress(0x100),
    ))
    .unwrap();
    let mut pa2 = port(
        "tap-a2",
        2 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        allow_all_egress(0x200),
    );
    pa2.rules.push(udp_in);
    fw.upsert_port(&pa2).unwrap();
    fw.upsert_port(&port(
        "tap-b1",
        3 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        allow_all_egress(0x300),
    ))
    .unwrap();
    // b2 admits nothing.
    fw.upsert_port(&port(
        "tap-b2",
        4 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        allow_all_egress(0x400),
    ))
    .unwrap();
    // a1 and a2 exchange datagrams on 5000 <-> 6000: an established flow.
    let rx = netns::run_in(&a2, || UdpSocket::bind("10.0.0.6:6000"))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(T)).unwrap();
    let tx = netns::run_in(&a1, || UdpSocket::bind("10.0.0.5:5000"))
        .unwrap()
        .unwrap();
    tx.set_read_timeout(Some(T)).unwrap();
    tx.send_to(b"x", "10.0.0.6:6000").unwrap();
    let mut buf = [0u8; 4];
    let (_, from) = rx.recv_from(&mut buf).expect("a1 -> a2 allowed");
    rx.send_to(b"y", from).unwrap();
    tx.recv_from(&mut buf).expect("reply a2 -> a1");
    // The same tuple in the other tenant must not ride a1's conntrack
    // entry (recipe §3: without zones it did).
    assert!(
        !udp_delivered(&b1, "10.0.0.5:5000", &b2, "10.0.0.6:6000"),
        "cross-tenant conntrack bypass"
    );
    fw.remove_network("fsb-b").unwrap();
    fw.remove_network("fsb-b").unwrap();
}

#[test]
fn router_nat_applies_in_its_namespace_idempotently() {
    if !require_root("router_nat_applies_in_its_namespace_idempotently") {
        return;
    }
    let mut lab = Lab::new();
    let r = lab.guard.create(&format!("{}-r", lab.p));
    let rname = r.name().unwrap().to_string();
    let fw = Nft::new(lab.host.clone());
    lab.rt.block_on(async {
        for (a, b) in [("qr-1", "x1"), ("qg-1", "x2")] {
            Kernel
                .ensure_veth(
                    &r,
                    &VethSpec {
                        name: a.into(),
                        peer: b.into(),
                        peer_netns: lab.host.clone(),
                        mtu: 1500,
                        peer_mac: None,
                        up: true,
                    },
                )
                .await
                .unwrap();
        }
    });
    let nat = RouterNat {
        netns: rname.clone(),
        gateway_leg: Some("qg-1".into()),
        gateway_ip: Some("203.0.113.10".parse().unwrap()),
        snat: true,
        internal: vec![InternalLeg {
            leg: "qr-1".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
        }],
        floating_ips: vec![FloatingIp {
            floating: "203.0.113.20".parse().unwrap(),
            fixed: "10.0.0.5".parse().unwrap(),
        }],
        metadata_port: Some(9697),
    };
    fw.upsert_router_nat(&nat).unwrap();
    assert_eq!(fw.router_nat_digest(&rname).unwrap(), Some(nat.digest()));
    let text = || {
        String::from_utf8(
            netns::run_in(&r, || {
                std::process::Command::new("nft")
                    .args(["-a", "list", "ruleset"])
                    .output()
                    .unwrap()
                    .stdout
            })
            .unwrap(),
        )
        .unwrap()
    };
    let first = text();
    for want in [
        "redirect to :9697",
        "dnat to 10.0.0.5",
        "snat to 203.0.113.20",
        "ip saddr 10.0.0.0/24 snat to 203.0.113.10",
        "ct status dnat snat to 203.0.113.10",
        "srcnat - 10",
    ] {
        assert!(first.contains(want), "{want} missing:\n{first}");
    }
    fw.upsert_router_nat(&nat).unwrap();
    assert_eq!(text(), first, "same NAT again must change nothing");
    let mut nat2 = nat.clone();
    nat2.floating_ips.clear();
    fw.upsert_router_nat(&nat2).unwrap();
    assert!(!text().contains("203.0.113.20"));
    fw.remove_router(&rname).unwrap();
    fw.remove_router(&rname).unwrap();
    assert_eq!(text(), "");
    assert_eq!(fw.router_nat_digest(&rname).unwrap(), None);
}

/// Chains, and anonymous sets in rules, of the whole namespace: what nft
/// reads before every transaction that adds an element or a rule.
fn chains_and_anonymous_sets(ns: &Netns) -> (usize, usize) {
    let out = netns::run_in(ns, || {
        std::process::Command::new("nft")
            .args(["-j", "list", "ruleset"])
            .output()
            .unwrap()
            .stdout
    })
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let objs = v["nftables"].as_array().unwrap();
    let chains = objs.iter().filter(|o| o.get("chain").is_some()).count();
    let anon = objs
        .iter()
        .filter(|o| o.get("rule").is_some())
        .map(|o| o.to_string().matches(r#""set":["#).count())
        .sum();
    (chains, anon)
}

#[test]
fn the_number_of_chains_does_not_grow_with_the_number_of_ports() {
    if !require_root("the_number_of_chains_does_not_grow_with_the_number_of_ports") {
        return;
    }
    let lab = Lab::new();
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    let (base, anon) = chains_and_anonymous_sets(&lab.host);
    assert_eq!(anon, 0, "the base has anonymous sets");
    let mut web = allow_all_egress(0x100);
    web.push(tcp_in(0x110, 22));
    let db = vec![tcp_in(0x120, 5432)];
    let n = 300u32;
    let port_n = |i: u32| {
        let mut p = port(
            &format!("tapn{i}"),
            (i + 1) << 16,
            &format!("fa:16:3e:00:{:02x}:{:02x}", i >> 8, i & 0xff),
            &format!("10.1.{}.{}", i / 250, i % 250 + 2),
            if i % 2 == 0 { web.clone() } else { db.clone() },
        );
        p.allowed_pairs.push(nft::AllowedPair {
            ip: format!("10.2.{}.0/24", i % 250).parse().unwrap(),
            mac: None,
        });
        p
    };
    for i in 0..n {
        fw.upsert_port(&port_n(i)).unwrap();
    }
    let (chains, anon) = chains_and_anonymous_sets(&lab.host);
    // One chain pair per security-group set, not three chains per port.
    assert_eq!(chains, base + 4, "{n} ports, two security-group sets");
    assert_eq!(anon, 0);
    // A fresh driver (an agent restart) reads the same ports back and
    // finds nothing to do.
    let listed = fw.list_ports().unwrap();
    assert_eq!(listed.len(), n as usize);
    let again = Nft::new(lab.host.clone());
    assert_eq!(again.list_ports().unwrap(), listed);
    let before = netns::run_in(&lab.host, || {
        std::process::Command::new("nft")
            .args(["-a", "list", "ruleset"])
            .output()
            .unwrap()
            .stdout
    })
    .unwrap();
    for i in 0..n {
        again.upsert_port(&port_n(i)).unwrap();
    }
    // Moving a port to the other group set and back, changing its
    // addresses: elements only, the chains stay as they are.
    let mut p = port_n(0);
    p.rules = db.clone();
    again.upsert_port(&p).unwrap();
    p.fixed_ips = vec!["10.1.9.9".parse().unwrap()];
    again.upsert_port(&p).unwrap();
    again.upsert_port(&port_n(0)).unwrap();
    let after = netns::run_in(&lab.host, || {
        std::process::Command::new("nft")
            .args(["-a", "list", "ruleset"])
            .output()
            .unwrap()
            .stdout
    })
    .unwrap();
    let chain_lines = |b: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(b)
            .lines()
            .filter(|l| l.trim_start().starts_with("chain "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(chain_lines(&before), chain_lines(&after));
    // A third set appears and goes with its only port.
    let mut lone = port_n(n);
    lone.rules = vec![tcp_in(0xffff, 443)];
    lone.mark = 0xffff << 16; // the highest marks
    let listed_before = again.list_ports().unwrap().len();
    again.upsert_port(&lone).unwrap();
    assert_eq!(chains_and_anonymous_sets(&lab.host).0, base + 6);
    let l = again.list_ports().unwrap();
    assert_eq!(l.len(), listed_before + 1);
    let got = l.iter().find(|p| p.name == lone.name).unwrap();
    assert_eq!(
        (got.mark, got.ct_marks.clone()),
        (0xffff_0000, vec![u32::MAX])
    );
    again.remove_port(&lone.name).unwrap();
    assert_eq!(
        again.gone_ports().unwrap().get(&lone.name),
        Some(&0xffff_0000)
    );
    assert_eq!(chains_and_anonymous_sets(&lab.host).0, base + 4);
    for i in 0..n {
        again.remove_port(&format!("tapn{i}")).unwrap();
    }
    assert_eq!(chains_and_anonymous_sets(&lab.host).0, base);
    assert!(again.list_ports().unwrap().is_empty());
}

/// An older agent's tables: a chain of each kind per port, an
/// `antispoof` verdict map, ports marked 1, 2, a revoked session mark.
const PER_PORT_LAYOUT: &str = r#"table bridge fs_port {
  chain as-tap-a {
    ether saddr != fa:16:3e:00:0a:01 drop
    arp saddr ether != fa:16:3e:00:0a:01 drop
    arp saddr ip != 10.0.0.5 drop
    ether type arp accept
    udp sport { 67, 547 } drop
    ip saddr 10.0.0.5 accept
    drop
  }
  chain as-tap-b {
    ether saddr != fa:16:3e:00:0a:02 drop
    arp saddr ether != fa:16:3e:00:0a:02 drop
    arp saddr ip != 10.0.0.6 drop
    ether type arp accept
    udp sport { 67, 547 } drop
    ip saddr 10.0.0.6 accept
    drop
  }
  map port_mark { type ifname : mark; elements = { "tap-a" : 1, "tap-b" : 2 }; }
  map antispoof { type ifname : verdict; elements = { "tap-a" : jump as-tap-a, "tap-b" : jump as-tap-b }; }
  chain antispoof_pre { type filter hook prerouting priority -350; policy accept; iifname vmap @antispoof; }
  chain mark_pre { type filter hook prerouting priority -300; policy accept; meta mark set iifname map @port_mark; }
  chain mark_fwd { type filter hook forward priority -200; policy accept; meta mark set 0; meta mark set oifname map @port_mark; }
}
table inet fs_sg {
  set revoked { type mark; flags timeout; elements = { 77 timeout 5d }; }
  map zones {
    typeof iifname : ct zone
    elements = { "fsb-a" : 1 }
  }
  chain eg-tap-a { meta nfproto ipv4 ct mark set 0x100 accept; drop; }
  chain in-tap-a { drop; }
  chain eg-tap-b { meta nfproto ipv4 ct mark set 0x200 accept; drop; }
  chain in-tap-b { meta nfproto ipv4 udp dport 6000 ct mark set 0x210 accept comment "fs-digest:0"; drop; }
  map egress { type mark : verdict; elements = { 1 : jump eg-tap-a, 2 : jump eg-tap-b }; }
  map ingress { type mark : verdict; elements = { 1 : jump in-tap-a, 2 : jump in-tap-b }; }
  chain zone_raw { type filter hook prerouting priority raw; policy accept; ct zone set iifname map @zones; }
  chain sg_pre { type filter hook prerouting priority 0; policy accept; ct state established,related accept; meta mark vmap @egress; }
  chain sg_fwd { type filter hook forward priority 0; policy accept; ct mark @revoked drop; ct state established,related accept; ct state invalid drop; meta mark vmap @ingress; }
}
"#;

fn nft_text(ns: &Netns, args: &[&str], input: &str) -> String {
    let (args, input) = (
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        input.to_string(),
    );
    let out = netns::run_in(ns, move || {
        use std::io::Write;
        let mut c = std::process::Command::new("nft")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    })
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_older_agents_per_port_tables_are_taken_over_in_place() {
    if !require_root("an_older_agents_per_port_tables_are_taken_over_in_place") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair();
    nft_text(&lab.host, &["-f", "-"], PER_PORT_LAYOUT);
    let filtered = |what: &str| {
        assert!(
            udp_delivered(&a, "10.0.0.5:5000", &b, "10.0.0.6:6000"),
            "{what}: allowed"
        );
        assert!(
            !udp_delivered(&a, "10.0.0.5:5001", &b, "10.0.0.6:6001"),
            "{what}: not allowed"
        );
    };
    filtered("the older layout");
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    // Still filtered by the older chains until the ports move over.
    filtered("upgraded base");
    let listed = fw.list_ports().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|p| p.digest.is_empty()), "{listed:?}");
    let pa = port(
        "tap-a",
        1 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        allow_all_egress(0x100),
    );
    let mut pb = port(
        "tap-b",
        2 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        allow_all_egress(0x200),
    );
    pb.rules.push(SgRule {
        ct_mark: 0x210,
        direction: Direction::Ingress,
        ethertype: EtherType::V4,
        protocol: Some(Protocol::UDP),
        port_range: Some((6000, 6000)),
        remote: Remote::Any,
    });
    fw.upsert_port(&pa).unwrap();
    filtered("one port moved");
    fw.upsert_port(&pb).unwrap();
    filtered("both moved");
    let chains = nft_text(&lab.host, &["list", "chains"], "");
    for old in ["as-tap", "eg-tap", "in-tap"] {
        assert!(!chains.contains(old), "{old} left:\n{chains}");
    }
    // The older `revoked` set stays, unused: its values are not session
    // halves.
    assert!(
        nft_text(&lab.host, &["list", "set", "inet", "fs_sg", "revoked"], "")
            .contains("0x0000004d")
    );
    assert!(fw.revoked().unwrap().is_empty());
    // The upgraded base is this layout: nothing more to do, for this
    // driver or a fresh one.
    // (Without the revocations' countdowns.)
    let ruleset = || {
        nft_text(&lab.host, &["-a", "list", "ruleset"], "")
            .split(' ')
            .scan(false, |skip, w| {
                let out = (!*skip && w != "expires").then_some(w.to_string());
                *skip = w == "expires";
                Some(out)
            })
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let before = ruleset();
    fw.ensure_base().unwrap();
    let again = Nft::new(lab.host.clone());
    again.ensure_base().unwrap();
    assert_eq!(again.list_ports().unwrap(), fw.list_ports().unwrap());
    again.upsert_port(&pa).unwrap();
    again.upsert_port(&pb).unwrap();
    assert_eq!(ruleset(), before);
    fw.remove_port("tap-b").unwrap();
    assert!(!udp_delivered(&b, "10.0.0.6:5000", &a, "10.0.0.5:6000"));
}

/// The elements of a remote group's IPv4 set, as the kernel has them.
fn group_members4(ns: &Netns, id: &str) -> Vec<String> {
    let out = nft_text(
        ns,
        &[
            "-j",
            "list",
            "set",
            "inet",
            "fs_sg",
            &nft::render::group_set(id, false),
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut m: Vec<String> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["set"]["elem"].as_array())
        .flatten()
        .map(|e| match e.as_str() {
            Some(s) => s.to_string(),
            None => e.to_string(),
        })
        .collect();
    m.sort();
    m
}

#[test]
fn remote_group_members_change_by_elements_and_recover_from_outside_changes() {
    if !require_root("remote_group_members_change_by_elements_and_recover_from_outside_changes") {
        return;
    }
    const G: &str = "3f1c2a4b-5d6e-4f70-8192-a3b4c5d6e7f8";
    let lab = Lab::new();
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    let ip = |i: u32| format!("10.0.{}.{}", i / 200, i % 200 + 1);
    let mut g = nft::RemoteGroup {
        id: G.into(),
        members: (0..300)
            .map(|i| format!("{}/32", ip(i)).parse().unwrap())
            .collect(),
    };
    let want = |g: &nft::RemoteGroup| {
        let mut v: Vec<String> = g.members.iter().map(|n| n.addr().to_string()).collect();
        v.sort();
        v
    };
    fw.upsert_remote_group(&g).unwrap();
    assert_eq!(group_members4(&lab.host, G), want(&g));
    // One member in, one out: the sets follow (a delta of two elements).
    g.members.remove(10);
    g.members.push("10.9.9.9/32".parse().unwrap());
    fw.upsert_remote_group(&g).unwrap();
    assert_eq!(group_members4(&lab.host, G), want(&g));
    // Changed behind the driver's back: its delta is refused and it
    // replaces the sets whole.
    nft_text(
        &lab.host,
        &["-f", "-"],
        &format!(
            "flush set inet fs_sg {}\n",
            nft::render::group_set(G, false)
        ),
    );
    g.members.remove(0);
    fw.upsert_remote_group(&g).unwrap();
    assert_eq!(group_members4(&lab.host, G), want(&g));
    // A new driver (an agent restart) knows nothing: it replaces whole.
    let fw2 = Nft::new(lab.host.clone());
    g.members.push("10.9.9.10/32".parse().unwrap());
    fw2.upsert_remote_group(&g).unwrap();
    assert_eq!(group_members4(&lab.host, G), want(&g));
    fw2.delete_all().unwrap();
}

/// Chain names of `fs_sg` and set names, from `nft -j list table`.
fn sg_objects(ns: &Netns) -> (Vec<String>, Vec<String>) {
    let out = nft_text(ns, &["-j", "list", "table", "inet", "fs_sg"], "");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (mut chains, mut sets) = (Vec::new(), Vec::new());
    for o in v["nftables"].as_array().unwrap() {
        if let Some(n) = o["chain"]["name"].as_str() {
            chains.push(n.to_string());
        }
        if let Some(n) = o["set"]["name"].as_str() {
            sets.push(n.to_string());
        }
    }
    (chains, sets)
}

#[test]
fn an_older_agents_interval_member_sets_are_replaced_by_plain_ones_in_place() {
    if !require_root("an_older_agents_interval_member_sets_are_replaced_by_plain_ones_in_place") {
        return;
    }
    const G: &str = "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    let mut lab = Lab::new();
    let (a, b) = lab.pair();
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    netns::write_sysctl(&lab.host, "net.netfilter.nf_conntrack_tcp_loose", "0").unwrap();
    fw.upsert_network("fsb-a", 1).unwrap();
    let mut group = nft::RemoteGroup {
        id: G.into(),
        members: vec!["10.0.0.6/32".parse().unwrap()],
    };
    let mut pa = port(
        "tap-a",
        1 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        allow_all_egress(1),
    );
    let mut from_group = tcp_in(2, 7000);
    from_group.remote = Remote::Group(G.into());
    pa.rules.push(from_group);
    let pb = port(
        "tap-b",
        2 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        allow_all_egress(3),
    );
    fw.upsert_remote_group(&group).unwrap();
    fw.upsert_port(&pa).unwrap();
    fw.upsert_port(&pb).unwrap();
    tcp_echo_server(&a, sa("10.0.0.5:7000"));
    assert!(tcp_echo_ok(&b, sa("10.0.0.5:7000"), T), "a member gets in");

    // Rewrite it as an older agent left it: the member set an interval
    // set `rg4-`, chains of another id using it, the port's entries
    // pointing there with an older digest.
    let (chains, _) = sg_objects(&lab.host);
    let new_id = chains
        .iter()
        .find_map(|c| c.strip_prefix("in-"))
        .unwrap()
        .to_string();
    let mut script = format!(
        "add set inet fs_sg {old} {{ type ipv4_addr; flags interval; }}\nadd element inet fs_sg {old} {{ 10.0.0.6 }}\n",
        old = nft::render::legacy_group_set(G, false)
    );
    for dir in ["eg", "in"] {
        let text = nft_text(
            &lab.host,
            &["list", "chain", "inet", "fs_sg", &format!("{dir}-{new_id}")],
            "",
        );
        script.push_str(
            &text
                .replace(&format!("{dir}-{new_id}"), &format!("{dir}-0123456789ab"))
                .replace(
                    &nft::render::group_set(G, false),
                    &nft::render::legacy_group_set(G, false),
                ),
        );
    }
    script.push_str(&format!(
        "delete element inet fs_sg egress {{ {m} }}\nadd element inet fs_sg egress {{ {m} : jump eg-0123456789ab }}\n\
         delete element inet fs_sg ingress {{ {m} }}\nadd element inet fs_sg ingress {{ {m} : jump in-0123456789ab }}\n\
         delete element bridge fs_port port_mark {{ \"tap-a\" }}\n\
         add element bridge fs_port port_mark {{ \"tap-a\" comment \"fs-digest:0000000000000000\" : {m} }}\n\
         delete chain inet fs_sg eg-{new_id}\ndelete chain inet fs_sg in-{new_id}\n\
         delete set inet fs_sg {new}\ndelete set inet fs_sg {new6}\n",
        m = 1 << 16,
        new = nft::render::group_set(G, false),
        new6 = nft::render::group_set(G, true),
    ));
    nft_text(&lab.host, &["-f", "-"], &script);
    let (chains, sets) = sg_objects(&lab.host);
    assert!(
        chains.contains(&"in-0123456789ab".to_string()),
        "{chains:?}"
    );
    assert!(
        sets.contains(&nft::render::legacy_group_set(G, false)),
        "{sets:?}"
    );
    assert!(
        tcp_echo_ok(&b, sa("10.0.0.5:7000"), T),
        "the older layout filters too"
    );

    // The new agent (a restart): groups first, then ports, as it does.
    let fw2 = Nft::new(lab.host.clone());
    fw2.ensure_base().unwrap();
    fw2.upsert_remote_group(&group).unwrap();
    fw2.upsert_port(&pa).unwrap();
    fw2.upsert_port(&pb).unwrap();
    let (chains, sets) = sg_objects(&lab.host);
    assert!(
        !chains.iter().any(|c| c.ends_with("0123456789ab")),
        "older chains go: {chains:?}"
    );
    assert!(chains.contains(&format!("in-{new_id}")), "{chains:?}");
    assert!(
        !sets.contains(&nft::render::legacy_group_set(G, false)),
        "older set goes: {sets:?}"
    );
    assert!(sets.contains(&nft::render::group_set(G, false)), "{sets:?}");
    assert!(
        tcp_echo_ok(&b, sa("10.0.0.5:7000"), T),
        "a member still gets in"
    );
    // The plain set is the one in use: b leaving the group shuts it out.
    group.members.clear();
    fw2.upsert_remote_group(&group).unwrap();
    assert!(
        !tcp_echo_ok(&b, sa("10.0.0.5:7000"), Duration::from_millis(700)),
        "no longer a member"
    );
    // Members are host addresses.
    group.members = vec!["10.0.0.0/24".parse().unwrap()];
    assert!(fw2.upsert_remote_group(&group).is_err());
    pa.rules.clear();
    fw2.delete_all().unwrap();
}

fn tcp_out(mark: u32, port: u16) -> SgRule {
    SgRule {
        direction: Direction::Egress,
        ..tcp_in(mark, port)
    }
}

#[test]
fn revoking_the_senders_egress_rule_or_its_remote_group_membership_cuts_its_sessions() {
    if !require_root(
        "revoking_the_senders_egress_rule_or_its_remote_group_membership_cuts_its_sessions",
    ) {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::new();
    let (a, b) = lab.pair();
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    fw.upsert_network("fsb-a", 1).unwrap();
    let group = nft::RemoteGroup {
        id: "a11ce".into(),
        members: vec!["10.0.0.5/32".parse().unwrap()],
    };
    fw.upsert_remote_group(&group).unwrap();
    // A may send to 7000-7002, one rule each; B admits all three, 7002
    // only from the members of group a11ce (A).
    let mut pa = port(
        "tap-a",
        1 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        vec![
            tcp_out(0x100, 7000),
            tcp_out(0x101, 7001),
            tcp_out(0x102, 7002),
        ],
    );
    let mut from_group = tcp_in(0x212, 7002);
    from_group.remote = Remote::Group("a11ce".into());
    let pb = port(
        "tap-b",
        2 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        vec![tcp_in(0x210, 7000), tcp_in(0x211, 7001), from_group],
    );
    fw.upsert_port(&pa).unwrap();
    fw.upsert_port(&pb).unwrap();
    for p in 7000..=7002 {
        tcp_echo_server(&b, sa(&format!("10.0.0.6:{p}")));
    }
    for round in 0..3 {
        let mut s0 = tcp_connect_in(&a, sa("10.0.0.6:7000"), T).unwrap();
        let mut s1 = tcp_connect_in(&a, sa("10.0.0.6:7001"), T).unwrap();
        let mut s2 = tcp_connect_in(&a, sa("10.0.0.6:7002"), T).unwrap();
        assert!(stream_alive(&mut s0, T) && stream_alive(&mut s1, T) && stream_alive(&mut s2, T));
        // The sender loses its egress rule for 7000: that session goes,
        // though the receiver's ingress rule still admits it.
        pa.rules.retain(|r| r.ct_mark != 0x100);
        fw.upsert_port(&pa).unwrap();
        assert!(
            !stream_alive(&mut s0, Duration::from_millis(700)),
            "round {round}: the revoked egress rule's session must be cut"
        );
        assert!(
            stream_alive(&mut s1, T),
            "round {round}: 7001 is still allowed"
        );
        assert!(
            stream_alive(&mut s2, T),
            "round {round}: 7002 is still allowed"
        );
        // The sender leaves the group B's rule for 7002 names (in the
        // second round as told to a restarted agent's driver, which knows
        // the members only from the kernel).
        let restarted = Nft::new(lab.host.clone());
        let gfw = if round == 1 { &restarted } else { &fw };
        gfw.upsert_remote_group(&nft::RemoteGroup {
            id: "a11ce".into(),
            members: vec![],
        })
        .unwrap();
        assert!(
            !stream_alive(&mut s2, Duration::from_millis(700)),
            "round {round}: leaving the remote group must cut the session"
        );
        assert!(
            stream_alive(&mut s1, T),
            "round {round}: 7001 is still allowed"
        );
        // Both come back: new sessions pass again.
        pa.rules.push(tcp_out(0x100, 7000));
        fw.upsert_port(&pa).unwrap();
        gfw.upsert_remote_group(&group).unwrap();
        assert!(fw.revoked_remotes().unwrap().is_empty());
        assert!(tcp_echo_ok(&a, sa("10.0.0.6:7000"), T), "round {round}");
        assert!(tcp_echo_ok(&a, sa("10.0.0.6:7002"), T), "round {round}");
    }
    fw.remove_port("tap-a").unwrap();
    fw.remove_port("tap-b").unwrap();
    fw.delete_all().unwrap();
    drop(lab);
    eprintln!("took {:?}", started.elapsed());
}

/// The previous agent's tables (shared chains; a session's conntrack
/// mark is `port | rule`, the last stamp winning): ports A (mark 1 << 16,
/// egress anything, rule 0x100) and B (2 << 16, egress anything 0x200,
/// UDP 6000 in 0x210), one revoked session mark.
const SHARED_CHAINS_LAYOUT: &str = r#"table bridge fs_port {
  map port_mark { type ifname : mark; elements = { "tap-a" comment "fs-digest:1" : 0x10000, "tap-b" comment "fs-digest:2" : 0x20000 }; }
  set secured { type ifname; elements = { "tap-a", "tap-b" }; }
  set as_mac { type ifname . ether_addr; elements = { "tap-a" . fa:16:3e:00:0a:01, "tap-b" . fa:16:3e:00:0a:02 }; }
  set as_ip4 { type ifname . ipv4_addr; elements = { "tap-a" . 10.0.0.5, "tap-b" . 10.0.0.6 }; }
  set as_ip6 { type ifname . ipv6_addr; }
  set as_net4 { type ifname . ipv4_addr; flags interval; }
  set as_net6 { type ifname . ipv6_addr; flags interval; }
  chain antispoof {
    iifname . ether saddr != @as_mac drop
    ether type arp accept
    iifname . ip saddr @as_ip4 accept
    drop
  }
  chain antispoof_pre { type filter hook prerouting priority -350; policy accept; iifname @secured jump antispoof; }
  chain mark_pre { type filter hook prerouting priority -300; policy accept; meta mark set iifname map @port_mark; }
  chain mark_fwd { type filter hook forward priority -200; policy accept; meta mark set 0; meta mark set oifname map @port_mark; }
}
table inet fs_sg {
  set revoked { type mark; flags timeout; elements = { 0x20211 timeout 5d }; }
  set revoked_ports { type mark; flags timeout; }
  map zones {
    typeof iifname : ct zone
    elements = { "fsb-a" : 1 }
  }
  chain sg_eg_common { meta nfproto ipv4 udp sport 68 udp dport 67 accept; }
  chain sg_in_common { meta nfproto ipv4 udp sport 67 udp dport 68 accept; }
  chain eg-00000000000a { meta nfproto ipv4 ct mark set meta mark | 0x100 accept; drop; }
  chain in-00000000000a { drop; }
  chain eg-00000000000b { meta nfproto ipv4 ct mark set meta mark | 0x200 accept; drop; }
  chain in-00000000000b { meta nfproto ipv4 udp dport 6000 ct mark set meta mark | 0x210 accept; drop; }
  map egress { type mark : verdict; elements = { 0x10000 : jump eg-00000000000a, 0x20000 : jump eg-00000000000b }; }
  map ingress { type mark : verdict; elements = { 0x10000 : jump in-00000000000a, 0x20000 : jump in-00000000000b }; }
  chain zone_raw { type filter hook prerouting priority raw; policy accept; ct zone set iifname map @zones; }
  chain sg_pre { type filter hook prerouting priority 0; policy accept; ct state established,related accept; meta mark vmap @egress; }
  chain sg_fwd { type filter hook forward priority 0; policy accept; ct mark @revoked drop; ct mark and 0xffff0000 @revoked_ports drop; ct state established,related accept; ct state invalid drop; meta mark vmap @ingress; }
}
"#;

#[test]
fn the_previous_agents_tables_get_session_halves_in_place() {
    if !require_root("the_previous_agents_tables_get_session_halves_in_place") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair();
    nft_text(&lab.host, &["-f", "-"], SHARED_CHAINS_LAYOUT);
    let filtered = |what: &str| {
        assert!(
            udp_delivered(&a, "10.0.0.5:5000", &b, "10.0.0.6:6000"),
            "{what}: allowed"
        );
        assert!(
            !udp_delivered(&a, "10.0.0.5:5001", &b, "10.0.0.6:6001"),
            "{what}: not allowed"
        );
    };
    filtered("the previous layout");
    let fw = Nft::new(lab.host.clone());
    fw.ensure_base().unwrap();
    // The hook chains are this layout's, the ports still the older
    // chains' until they move over.
    let hooks = nft_text(&lab.host, &["list", "chain", "inet", "fs_sg", "sg_fwd"], "");
    assert!(
        hooks.contains("@revoked_rules") && !hooks.contains("@revoked_ports"),
        "{hooks}"
    );
    filtered("upgraded base");
    assert_eq!(fw.list_ports().unwrap().len(), 2);
    let pa = port(
        "tap-a",
        1 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        vec![allow_all_egress(0x100).remove(0)],
    );
    let mut pb = port(
        "tap-b",
        2 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        vec![allow_all_egress(0x200).remove(0)],
    );
    pb.rules.push(SgRule {
        ct_mark: 0x210,
        direction: Direction::Ingress,
        ethertype: EtherType::V4,
        protocol: Some(Protocol::UDP),
        port_range: Some((6000, 6000)),
        remote: Remote::Any,
    });
    fw.upsert_port(&pa).unwrap();
    filtered("one port moved");
    fw.upsert_port(&pb).unwrap();
    filtered("both moved");
    let chains = nft_text(&lab.host, &["list", "chains"], "");
    assert!(!chains.contains("00000000000"), "{chains}");
    // The base is now this layout: nothing more to do.
    let before = nft_text(&lab.host, &["-a", "list", "chains"], "");
    Nft::new(lab.host.clone()).ensure_base().unwrap();
    assert_eq!(nft_text(&lab.host, &["-a", "list", "chains"], ""), before);
    // Sessions between the moved ports are cut from either end.
    tcp_echo_server(&b, sa("10.0.0.6:7000"));
    let mut pb2 = pb.clone();
    pb2.rules.push(tcp_in(0x211, 7000));
    fw.upsert_port(&pb2).unwrap();
    let mut s = tcp_connect_in(&a, sa("10.0.0.6:7000"), T).unwrap();
    assert!(stream_alive(&mut s, T));
    let mut pa2 = pa.clone();
    pa2.rules.clear();
    fw.upsert_port(&pa2).unwrap();
    assert!(
        !stream_alive(&mut s, Duration::from_millis(700)),
        "the sender's revoked egress rule must cut the session"
    );
    fw.delete_all().unwrap();
    drop(lab);
}

/// A remote group update whose nft transaction fails leaves the kernel's
/// member set as it was; the retry must still know who left, and cut
/// their sessions (the driver forgets its memory on the failure and reads
/// the members back).
#[test]
fn a_failed_remote_group_update_still_revokes_the_leavers_sessions_on_retry() {
    if !require_root("a_failed_remote_group_update_still_revokes_the_leavers_sessions_on_retry") {
        return;
    }
    let mut lab = Lab::new();
    let (a, b) = lab.pair();
    // `nft` through a wrapper that fails while `fail` exists.
    let dir = std::env::temp_dir().join(format!("{}-nft", unique_prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    let fail = dir.join("fail");
    let wrapper = dir.join("nft");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -e '{}' ] && exit 1\nexec nft \"$@\"\n",
            fail.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let fw = Nft::with_nft(lab.host.clone(), wrapper.display().to_string());
    fw.ensure_base().unwrap();
    fw.upsert_network("fsb-a", 1).unwrap();
    let group = nft::RemoteGroup {
        id: "a11ce".into(),
        members: vec!["10.0.0.5/32".parse().unwrap()],
    };
    fw.upsert_remote_group(&group).unwrap();
    // A may send to 7002; B admits it only from the members of a11ce (A).
    let pa = port(
        "tap-a",
        1 << 16,
        "fa:16:3e:00:0a:01",
        "10.0.0.5",
        vec![tcp_out(0x102, 7002)],
    );
    let mut from_group = tcp_in(0x212, 7002);
    from_group.remote = Remote::Group("a11ce".into());
    let pb = port(
        "tap-b",
        2 << 16,
        "fa:16:3e:00:0a:02",
        "10.0.0.6",
        vec![from_group],
    );
    fw.upsert_port(&pa).unwrap();
    fw.upsert_port(&pb).unwrap();
    tcp_echo_server(&b, sa("10.0.0.6:7002"));
    let mut s = tcp_connect_in(&a, sa("10.0.0.6:7002"), T).unwrap();
    assert!(stream_alive(&mut s, T));
    // A leaves the group: the first attempt fails, the retry succeeds.
    let left = nft::RemoteGroup {
        id: "a11ce".into(),
        members: vec![],
    };
    std::fs::write(&fail, "").unwrap();
    assert!(fw.upsert_remote_group(&left).is_err());
    std::fs::remove_file(&fail).unwrap();
    fw.upsert_remote_group(&left).unwrap();
    assert!(
        !stream_alive(&mut s, Duration::from_millis(700)),
        "the leaver's session must be cut after the retry"
    );
    fw.remove_port("tap-a").unwrap();
    fw.remove_port("tap-b").unwrap();
    fw.delete_all().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
