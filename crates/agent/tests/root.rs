//! Privileged end-to-end tests of the agent over the real drivers, with
//! namespaces as VMs (see `agent::testing::lab`). Each skips with a
//! printed reason when not run as root, uses unique names, cleans up in
//! drop guards and is bounded in time.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::testing::fixtures::*;
use agent::testing::lab::{self, Lab};
use agent::testing::FakeControl;
use hostlink::testing::{require_root, stream_alive, tcp_connect_in, tcp_echo_ok, tcp_echo_server};
use hostlink::{HostNet, Netns};
use netmodel::{
    Cidr, Direction, FloatingIp, HostState, Port, PortStatus, Router, RouterGateway,
    RouterInterface, Segment,
};
use nft::Firewall;

const T: Duration = Duration::from_secs(15);

async fn bounded<F: Future<Output = ()>>(limit: Duration, name: &str, f: F) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "agent=info".into()),
        )
        .with_test_writer()
        .try_init();
    let start = Instant::now();
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {limit:?}"));
    eprintln!("TIMING {name}: {:.1} s", start.elapsed().as_secs_f64());
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

async fn ping(ns: &Netns, dst: &str) -> bool {
    let (ns, dst) = (ns.clone(), dst.to_string());
    blocking(move || lab::ping(&ns, &dst, 1)).await
}

/// Ping with a few tries (the first packet may wait for ARP).
async fn reaches(ns: &Netns, dst: &str) -> bool {
    for _ in 0..3 {
        if ping(ns, dst).await {
            return true;
        }
    }
    false
}

async fn dhcp(lab: &Lab, ns: &Netns, tag: &str) -> lab::DhcpResult {
    let (ns, dir, t) = (ns.clone(), lab.dir().to_path_buf(), tag.to_string());
    blocking(move || lab::udhcpc(&ns, &dir, &t))
        .await
        .unwrap_or_else(|| panic!("no DHCP lease for {tag}"))
}

async fn echo_ok(ns: &Netns, addr: &str) -> bool {
    let (ns, addr) = (ns.clone(), addr.parse::<SocketAddr>().unwrap());
    blocking(move || tcp_echo_ok(&ns, addr, Duration::from_millis(700))).await
}

fn echo_server(ns: &Netns, addr: &str) {
    tcp_echo_server(ns, addr.parse().unwrap());
}

/// One tenant network with a subnet (gateway .1, DHCP .2) and a security
/// group allowing all egress and ICMP in.
struct Net {
    id: String,
    subnet: String,
    sg: String,
}

fn tenant_net(state: &mut HostState, zone: u16, cidr: &str) -> Net {
    let (id, subnet, sgid) = (new_id(), new_id(), new_id());
    let base = cidr.trim_end_matches(".0/24");
    state.networks.push(network(
        &id,
        zone,
        Segment::Local,
        vec![agent::testing::fixtures::subnet(
            &subnet,
            cidr,
            Some(&format!("{base}.1")),
            Some(&format!("{base}.2")),
        )],
    ));
    state.security_groups.push(sg(
        &sgid,
        vec![
            rule(Direction::Egress, None, None, None),
            rule(Direction::Ingress, Some("icmp"), None, None),
        ],
    ));
    Net {
        id,
        subnet,
        sg: sgid,
    }
}

fn add_vm(state: &mut HostState, n: &Net, mac_n: u32, ip: &str) -> Port {
    let p = vm_port(&new_id(), &n.id, &n.subnet, &mac(mac_n), ip, &[&n.sg]);
    state.ports.push(Arc::new(p.clone()));
    p
}

fn empty_state() -> HostState {
    HostState {
        host: "h1".into(),
        revision: 1,
        ..Default::default()
    }
}

/// An external flat network on interface `iface` (203.0.113.0/24,
/// outside world at .1) and a router for `nets` with gateway address
/// `gw` on it.
fn external(state: &mut HostState, iface: &str) -> String {
    let (id, sn) = (new_id(), new_id());
    let mut n = network(
        &id,
        100,
        Segment::Flat {
            physical_network: "public".into(),
            interface: iface.into(),
        },
        vec![agent::testing::fixtures::subnet(
            &sn,
            "203.0.113.0/24",
            Some("203.0.113.1"),
            None,
        )],
    );
    n.external = true;
    state.networks.push(n);
    id
}

fn router(state: &mut HostState, ext: &str, gw: &str, nets: &[&Net], mac_n: u32) -> String {
    let id = new_id();
    let interfaces = nets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let sn = state
                .networks
                .iter()
                .find(|x| x.id == n.id)
                .unwrap()
                .subnets[0]
                .clone();
            RouterInterface {
                port_id: new_id(),
                network_id: n.id.clone(),
                subnet_id: n.subnet.clone(),
                mac: mac(mac_n + 1 + i as u32),
                ip: Cidr {
                    addr: sn.gateway_ip.unwrap(),
                    prefix: sn.cidr.prefix,
                },
            }
        })
        .collect();
    state.routers.push(Router {
        id: id.clone(),
        project_id: "p".into(),
        admin_state_up: true,
        gateway: Some(RouterGateway {
            network_id: ext.into(),
            port_id: new_id(),
            mac: mac(mac_n),
            ips: vec![Cidr::parse(&format!("{gw}/24")).unwrap()],
            nexthop: Some("203.0.113.1".parse().unwrap()),
            enable_snat: true,
        }),
        interfaces,
        routes: vec![],
        floating_ips: vec![],
    });
    id
}

/// The host's interface name for the flat network in a lab.
fn ext_iface(lab: &Lab) -> String {
    format!("fst{}x", &lab.prefix[4..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t1_two_vms_get_leases_ping_each_other_and_go_active() {
    if !require_root("t1_two_vms_get_leases_ping_each_other_and_go_active") {
        return;
    }
    bounded(Duration::from_secs(90), "t1 dhcp+ping+status", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let p2 = add_vm(&mut st, &n, 2, "10.0.0.6");
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        assert!(
            ctl.wait_status(&p1.id, PortStatus::Down, T).await,
            "DOWN before the device"
        );
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        let t0 = Instant::now();
        assert!(ctl.wait_status(&p1.id, PortStatus::Active, T).await);
        assert!(ctl.wait_status(&p2.id, PortStatus::Active, T).await);
        eprintln!(
            "both ports ACTIVE {:?} after their devices appeared",
            t0.elapsed()
        );
        // The taps came down (as a hypervisor leaves them); the agent
        // turned IPv6 off on them before bringing them up: a bridge port
        // has no address of its own.
        for p in [&p1, &p2] {
            let key = format!("net.ipv6.conf.{}.disable_ipv6", p.device_name);
            assert_eq!(lab.net.get_sysctl(&lab.host, &key).await.unwrap(), "1");
            let addrs = lab.net.list_addresses(&lab.host).await.unwrap();
            assert!(
                addrs.iter().all(|a| a.link != p.device_name),
                "{} has addresses: {addrs:?}",
                p.device_name
            );
        }
        let l1 = dhcp(&lab, &vm1, "vm1").await;
        let l2 = dhcp(&lab, &vm2, "vm2").await;
        assert_eq!(l1.ip.to_string(), "10.0.0.5");
        assert_eq!(l2.ip.to_string(), "10.0.0.6");
        assert_eq!(l1.mask, 24);
        assert_eq!(l1.mtu, "1500");
        assert_eq!(l1.hostname, p1.hostname);
        // No router: metadata is answered by the DHCP namespace.
        assert!(
            l1.staticroutes.contains("169.254.169.254/32 10.0.0.2")
                && l1.staticroutes.contains("0.0.0.0/0 10.0.0.1"),
            "{l1:?}"
        );
        assert!(reaches(&vm1, "10.0.0.6").await);
        assert!(reaches(&vm2, "10.0.0.5").await);
    })
    .await;
}

/// A TCP server in `ns` that answers each connection with the peer's
/// address and closes it.
fn whoami_server(ns: &Netns, addr: &str) {
    use std::io::Write;
    let l = hostlink::netns::listen_tcp(ns, addr.parse().unwrap()).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let _ = s.write_all(peer.as_bytes());
        }
    });
}

/// Who `addr` sees when `ns` connects to it (`None` if unreachable).
async fn seen_as(ns: &Netns, addr: &str) -> Option<String> {
    let (ns, addr) = (ns.clone(), addr.parse::<SocketAddr>().unwrap());
    blocking(move || {
        use std::io::Read;
        let mut s = tcp_connect_in(&ns, addr, Duration::from_millis(800)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .await
}

/// A raw HTTP/1.0 GET from `ns` with extra header lines; (status, body).
async fn http_get(ns: &Netns, addr: &str, path: &str, headers: &[&str]) -> Option<(u16, String)> {
    let (ns, addr) = (ns.clone(), addr.parse::<SocketAddr>().unwrap());
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: 169.254.169.254\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    blocking(move || {
        use std::io::{Read, Write};
        let mut s = tcp_connect_in(&ns, addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
        Some((status, body))
    })
    .await
}

/// Polls `f` until it returns true or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2_router_snat_and_floating_ip() {
    if !require_root("t2_router_snat_and_floating_ip") {
        return;
    }
    bounded(Duration::from_secs(90), "t2 snat+fip", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let p2 = add_vm(&mut st, &n, 2, "10.0.0.6");
        let iface = ext_iface(&lab);
        let ext = external(&mut st, &iface);
        let rid = router(&mut st, &ext, "203.0.113.10", &[&n], 200);
        let out = lab.outside("out", &iface, "203.0.113.1/24").await;
        // One port per check: a connection reusing an old one's tuple
        // would reuse its conntrack entry and so its NAT binding.
        for port in [8000, 8001, 8002] {
            whoami_server(&out, &format!("203.0.113.1:{port}"));
        }
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        assert!(ctl.wait_status(&p1.id, PortStatus::Active, T).await);
        assert!(ctl.wait_status(&p2.id, PortStatus::Active, T).await);
        let l = dhcp(&lab, &vm1, "vm1").await;
        assert!(
            l.staticroutes.contains("169.254.169.254/32 10.0.0.1"),
            "{l:?}"
        );
        dhcp(&lab, &vm2, "vm2").await;
        // SNAT: the outside sees the router's gateway address.
        assert_eq!(
            seen_as(&vm1, "203.0.113.1:8000").await.as_deref(),
            Some("203.0.113.10")
        );
        // Without a floating IP the outside cannot reach the VM.
        assert!(!ping(&out, "203.0.113.20").await);
        // Floating IP.
        ctl.update(|s| {
            let r = s.routers.iter_mut().find(|r| r.id == rid).unwrap();
            r.floating_ips.push(FloatingIp {
                id: new_id(),
                floating_ip: "203.0.113.20".parse().unwrap(),
                fixed_ip: "10.0.0.5".parse().unwrap(),
                port_id: p1.id.clone(),
            });
        });
        // The router holds the floating IP's address a moment before its
        // NAT rules are in (and answers pings to it itself meanwhile), so
        // first wait for the NAT, which comes in one transaction.
        let t0 = Instant::now();
        assert!(
            eventually(T, || async {
                seen_as(&vm1, "203.0.113.1:8001").await.as_deref() == Some("203.0.113.20")
            })
            .await,
            "a VM with a floating IP leaves as its floating IP"
        );
        eprintln!("floating IP in use {:?} after the change", t0.elapsed());
        assert!(reaches(&out, "203.0.113.20").await, "FIP reachable");
        // Hairpin: a neighbour reaches the VM by its floating IP too.
        assert!(
            reaches(&vm2, "203.0.113.20").await,
            "hairpin to a floating IP"
        );
        // Disassociated: unreachable again.
        ctl.update(|s| {
            s.routers
                .iter_mut()
                .find(|r| r.id == rid)
                .unwrap()
                .floating_ips
                .clear();
        });
        assert!(
            eventually(T, || async { !ping(&out, "203.0.113.20").await }).await,
            "FIP gone"
        );
        assert_eq!(
            seen_as(&vm1, "203.0.113.1:8002").await.as_deref(),
            Some("203.0.113.10")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2b_a_new_floating_ip_is_announced_to_the_outside_by_gratuitous_arp() {
    if !require_root("t2b_a_new_floating_ip_is_announced_to_the_outside_by_gratuitous_arp") {
        return;
    }
    bounded(Duration::from_secs(60), "t2b gratuitous arp", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let iface = ext_iface(&lab);
        let ext = external(&mut st, &iface);
        let rid = router(&mut st, &ext, "203.0.113.10", &[&n], 200);
        let leg_mac = mac(200);
        let out = lab.outside("out", &iface, "203.0.113.1/24").await;
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        assert!(
            eventually(T, || ping(&out, "203.0.113.10")).await,
            "the router's gateway address answers"
        );
        // The outside believes the floating IP is at some other MAC (where
        // it was before it moved, say): a stale entry, last updated over a
        // second ago (the neighbour lock time, within which Linux keeps
        // the first answer it got).
        let wrong = "02:00:00:00:00:99";
        let o = out.clone();
        let set = blocking(move || {
            lab::exec(
                &o,
                Duration::from_secs(5),
                "ip",
                &[
                    "neigh",
                    "replace",
                    "203.0.113.20",
                    "lladdr",
                    wrong,
                    "dev",
                    "eth0",
                    "nud",
                    "stale",
                ],
            )
        })
        .await;
        assert!(set.status.success(), "{set:?}");
        assert_eq!(
            arp_entry(&out, "203.0.113.20").await.as_deref(),
            Some(wrong)
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
        // The floating IP comes to this router; the outside sends nothing
        // to it, so only an announcement can correct its entry.
        ctl.update(|s| {
            let r = s.routers.iter_mut().find(|r| r.id == rid).unwrap();
            r.floating_ips.push(FloatingIp {
                id: new_id(),
                floating_ip: "203.0.113.20".parse().unwrap(),
                fixed_ip: "10.0.0.5".parse().unwrap(),
                port_id: p1.id.clone(),
            });
        });
        let t0 = Instant::now();
        let learnt = eventually(Duration::from_secs(5), || async {
            arp_entry(&out, "203.0.113.20").await.as_deref() == Some(leg_mac.as_str())
        })
        .await;
        assert!(
            learnt,
            "the outside still has {:?} for the floating IP, not the gateway leg's {leg_mac}",
            arp_entry(&out, "203.0.113.20").await
        );
        eprintln!(
            "the outside learnt the floating IP's MAC {:?} after the change",
            t0.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t3_metadata_identifies_callers_by_network_and_source_only() {
    if !require_root("t3_metadata_identifies_callers_by_network_and_source_only") {
        return;
    }
    bounded(Duration::from_secs(90), "t3 metadata", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let iso = tenant_net(&mut st, 2, "10.1.0.0/24");
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let p2 = add_vm(&mut st, &n, 2, "10.0.0.6");
        let p3 = add_vm(&mut st, &iso, 3, "10.1.0.5");
        let mut p4 = add_vm(&mut st, &n, 4, "10.0.0.7");
        p4.port_security_enabled = false;
        Arc::make_mut(st.ports.last_mut().unwrap()).port_security_enabled = false;
        let iface = ext_iface(&lab);
        let ext = external(&mut st, &iface);
        router(&mut st, &ext, "203.0.113.10", &[&n], 200);
        let _out = lab.outside("out", &iface, "203.0.113.1/24").await;
        let ctl = Arc::new(FakeControl::new(st));
        ctl.set_user_data(&p1.id, b"#!/bin/sh\necho hi\n");
        let _agent = lab.start_agent(ctl.clone()).await;
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        let vm3 = lab.vm("vm3", &p3).await;
        let vm4 = lab.vm("vm4", &p4).await;
        for p in [&p1, &p2, &p3, &p4] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
        }
        dhcp(&lab, &vm1, "vm1").await;
        dhcp(&lab, &vm2, "vm2").await;
        let l3 = dhcp(&lab, &vm3, "vm3").await;
        assert!(
            l3.staticroutes.contains("169.254.169.254/32 10.1.0.2"),
            "{l3:?}"
        );
        let md = "169.254.169.254:80";
        let path = "/openstack/latest/network_data.json";
        // Through the router namespace.
        let (code, body) = http_get(&vm1, md, path, &[]).await.expect("answer");
        assert_eq!(code, 200, "{body}");
        assert!(
            body.contains(&p1.mac) && body.contains("10.0.0.5"),
            "{body}"
        );
        assert!(!body.contains(&p2.mac));
        // Forged headers change nothing (checklist 17).
        let forged = [
            format!("X-Instance-ID: {}", p2.device_id),
            "X-Forwarded-For: 10.0.0.6".to_string(),
            "X-Tenant-ID: someone-else".to_string(),
            format!("X-Neutron-Network-ID: {}", iso.id),
        ];
        let forged: Vec<&str> = forged.iter().map(String::as_str).collect();
        let (code2, body2) = http_get(&vm1, md, path, &forged).await.expect("answer");
        assert_eq!((code2, &body2), (200, &body));
        let (_, b2) = http_get(&vm2, md, path, &forged).await.expect("answer");
        assert!(b2.contains(&p2.mac) && !b2.contains(&p1.mac), "{b2}");
        // The other documents.
        let (_, meta) = http_get(&vm1, md, "/openstack/latest/meta_data.json", &[])
            .await
            .unwrap();
        assert!(meta.contains(&p1.device_id), "{meta}");
        let (_, ud) = http_get(&vm1, md, "/openstack/latest/user_data", &[])
            .await
            .unwrap();
        assert_eq!(ud, "#!/bin/sh\necho hi\n");
        let (_, versions) = http_get(&vm1, md, "/openstack", &[]).await.unwrap();
        assert!(versions.contains("latest"));
        // busybox wget, as a guest would.
        let ns = vm1.clone();
        let out = blocking(move || {
            lab::exec(
                &ns,
                Duration::from_secs(5),
                "busybox",
                &[
                    "wget",
                    "-q",
                    "-O",
                    "-",
                    "http://169.254.169.254/openstack/latest/meta_data.json",
                ],
            )
        })
        .await;
        assert!(String::from_utf8_lossy(&out.stdout).contains(&p1.device_id));
        // An isolated network: answered in its DHCP namespace.
        let (c3, b3) = http_get(&vm3, md, path, &[]).await.expect("answer");
        assert_eq!(c3, 200);
        assert!(b3.contains(&p3.mac) && b3.contains(&iso.id), "{b3}");
        // An address that is no port's: 404 (port security is off on
        // this port, so the address goes out unchanged).
        lab.address(&vm4, "10.0.0.99/24", None).await;
        let ns = vm4.clone();
        blocking(move || {
            lab::exec(
                &ns,
                Duration::from_secs(3),
                "busybox",
                &[
                    "ip",
                    "route",
                    "add",
                    "169.254.169.254/32",
                    "via",
                    "10.0.0.1",
                ],
            )
        })
        .await;
        let (c4, _) = http_get(&vm4, md, path, &["X-Forwarded-For: 10.0.0.5"])
            .await
            .expect("answer");
        assert_eq!(c4, 404);
        // Every caller was identified by network and source address.
        let calls = ctl.metadata_calls();
        assert!(calls
            .iter()
            .any(|c| c.ip.to_string() == "10.0.0.99" && c.network_id == n.id));
        assert!(calls
            .iter()
            .all(|c| c.ip.to_string() != "10.0.0.6" || c.network_id == n.id));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t4_two_projects_with_the_same_subnet_stay_apart() {
    if !require_root("t4_two_projects_with_the_same_subnet_stay_apart") {
        return;
    }
    bounded(Duration::from_secs(90), "t4 overlapping tenants", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let a = tenant_net(&mut st, 1, "10.0.0.0/24");
        let b = tenant_net(&mut st, 2, "10.0.0.0/24");
        // A allows TCP 7001 and UDP 6000 in; B only TCP 7002.
        st.security_groups[0]
            .rules
            .push(rule(Direction::Ingress, Some("tcp"), Some(7001), None));
        st.security_groups[0]
            .rules
            .push(rule(Direction::Ingress, Some("udp"), Some(6000), None));
        st.security_groups[1]
            .rules
            .push(rule(Direction::Ingress, Some("tcp"), Some(7002), None));
        let a1 = add_vm(&mut st, &a, 1, "10.0.0.5");
        let a2 = add_vm(&mut st, &a, 2, "10.0.0.6");
        let b1 = add_vm(&mut st, &b, 3, "10.0.0.5");
        let b2 = add_vm(&mut st, &b, 4, "10.0.0.6");
        let iface = ext_iface(&lab);
        let ext = external(&mut st, &iface);
        router(&mut st, &ext, "203.0.113.10", &[&a], 200);
        router(&mut st, &ext, "203.0.113.11", &[&b], 210);
        let out = lab.outside("out", &iface, "203.0.113.1/24").await;
        whoami_server(&out, "203.0.113.1:8000");
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        let va1 = lab.vm("a1", &a1).await;
        let va2 = lab.vm("a2", &a2).await;
        let vb1 = lab.vm("b1", &b1).await;
        let vb2 = lab.vm("b2", &b2).await;
        for p in [&a1, &a2, &b1, &b2] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
        }
        for (ns, tag) in [(&va1, "a1"), (&va2, "a2"), (&vb1, "b1"), (&vb2, "b2")] {
            assert_eq!(
                dhcp(&lab, ns, tag).await.ip.to_string().as_str(),
                if tag.ends_with('1') {
                    "10.0.0.5"
                } else {
                    "10.0.0.6"
                }
            );
        }
        echo_server(&va2, "10.0.0.6:7001");
        echo_server(&vb2, "10.0.0.6:7002");
        assert!(echo_ok(&va1, "10.0.0.6:7001").await);
        assert!(!echo_ok(&va1, "10.0.0.6:7002").await, "A reached B's VM");
        assert!(echo_ok(&vb1, "10.0.0.6:7002").await);
        assert!(!echo_ok(&vb1, "10.0.0.6:7001").await, "B reached A's VM");
        // Same UDP tuple in both tenants: A's flow must not make B's
        // "established" (recipe §3; checklist 8).
        let rx_b = udp_listener(&vb2, "10.0.0.6:6000");
        let rx_a = udp_listener(&va2, "10.0.0.6:6000");
        udp_send(&va1, "10.0.0.5:5000", "10.0.0.6:6000", b"from-a").await;
        udp_send(&vb1, "10.0.0.5:5000", "10.0.0.6:6000", b"from-b").await;
        assert!(
            eventually(Duration::from_secs(5), || async {
                !rx_a.received().is_empty()
            })
            .await,
            "A's allowed UDP arrives"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got_a = rx_a.received();
        assert!(got_a.iter().all(|m| m == b"from-a"), "{got_a:?}");
        assert!(rx_b.received().is_empty(), "B's VM got UDP its rules drop");
        // Each leaves through its own router, and gets its own metadata.
        assert_eq!(
            seen_as(&va1, "203.0.113.1:8000").await.as_deref(),
            Some("203.0.113.10")
        );
        assert_eq!(
            seen_as(&vb1, "203.0.113.1:8000").await.as_deref(),
            Some("203.0.113.11")
        );
        let path = "/openstack/latest/network_data.json";
        let (_, ba) = http_get(&va1, "169.254.169.254:80", path, &[])
            .await
            .unwrap();
        let (_, bb) = http_get(&vb1, "169.254.169.254:80", path, &[])
            .await
            .unwrap();
        assert!(ba.contains(&a1.mac) && ba.contains(&a.id), "{ba}");
        assert!(bb.contains(&b1.mac) && bb.contains(&b.id), "{bb}");
    })
    .await;
}

/// A UDP socket in `ns` collecting what it receives.
struct UdpRx(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl UdpRx {
    fn received(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
}

fn udp_listener(ns: &Netns, addr: &str) -> UdpRx {
    let addr: SocketAddr = addr.parse().unwrap();
    let s = hostlink::netns::run_in(ns, || std::net::UdpSocket::bind(addr))
        .unwrap()
        .unwrap();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        while let Ok(n) = s.recv(&mut buf) {
            g.lock().unwrap().push(buf[..n].to_vec());
        }
    });
    UdpRx(got)
}

async fn udp_send(ns: &Netns, from: &str, to: &str, data: &[u8]) {
    let (ns, from, to, data) = (
        ns.clone(),
        from.parse::<SocketAddr>().unwrap(),
        to.parse::<SocketAddr>().unwrap(),
        data.to_vec(),
    );
    blocking(move || {
        let s = hostlink::netns::run_in(&ns, || std::net::UdpSocket::bind(from))
            .unwrap()
            .unwrap();
        for _ in 0..3 {
            let _ = s.send_to(&data, to);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await;
}

async fn static_ip(lab: &Lab, ns: &Netns, ip: &str) {
    lab.address(ns, &format!("{ip}/24"), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5a_security_group_rules_apply_change_and_cut_sessions() {
    if !require_root("t5a_security_group_rules_apply_change_and_cut_sessions") {
        return;
    }
    bounded(Duration::from_secs(90), "t5a sg rules", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let (web, members) = (new_id(), new_id());
        let mut from_members = rule(Direction::Ingress, Some("tcp"), Some(80), None);
        from_members.remote_group_id = Some(members.clone());
        let ssh = rule(Direction::Ingress, Some("tcp"), Some(22), None);
        let ssh_id = ssh.id.clone();
        st.security_groups.push(sg(
            &web,
            vec![
                rule(Direction::Egress, None, None, None),
                rule(Direction::Ingress, Some("icmp"), None, None),
                ssh,
                from_members,
            ],
        ));
        let mut m = sg(&members, vec![rule(Direction::Egress, None, None, None)]);
        m.member_ips = vec!["10.0.0.7".parse().unwrap()];
        st.security_groups.push(m);
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let p2 = vm_port(&new_id(), &n.id, &n.subnet, &mac(2), "10.0.0.6", &[&web]);
        let p3 = vm_port(
            &new_id(),
            &n.id,
            &n.subnet,
            &mac(3),
            "10.0.0.7",
            &[&members],
        );
        st.ports.push(Arc::new(p2.clone()));
        st.ports.push(Arc::new(p3.clone()));
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        let vm3 = lab.vm("vm3", &p3).await;
        for (ns, p, ip) in [
            (&vm1, &p1, "10.0.0.5"),
            (&vm2, &p2, "10.0.0.6"),
            (&vm3, &p3, "10.0.0.7"),
        ] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
            static_ip(&lab, ns, ip).await;
        }
        for port in [22, 23, 80] {
            echo_server(&vm2, &format!("10.0.0.6:{port}"));
        }
        // A tap a hypervisor left down comes up when it is wired; its
        // first frames can take up to a second to pass.
        assert!(
            eventually(T, || echo_ok(&vm1, "10.0.0.6:22")).await,
            "allowed port"
        );
        assert!(!echo_ok(&vm1, "10.0.0.6:23").await, "port without a rule");
        // A rule added takes effect.
        ctl.update(|s| {
            let g = s.security_groups.iter_mut().find(|g| g.id == web).unwrap();
            g.rules
                .push(rule(Direction::Ingress, Some("tcp"), Some(23), None));
        });
        let t0 = Instant::now();
        assert!(
            eventually(T, || echo_ok(&vm1, "10.0.0.6:23")).await,
            "added rule"
        );
        eprintln!("added rule effective after {:?}", t0.elapsed());
        // A rule deleted cuts the sessions it let in (checklist 13).
        let addr: SocketAddr = "10.0.0.6:22".parse().unwrap();
        let ns = vm1.clone();
        let mut s = blocking(move || tcp_connect_in(&ns, addr, T).unwrap()).await;
        let (alive, s2) = blocking(move || {
            let a = stream_alive(&mut s, Duration::from_secs(2));
            (a, s)
        })
        .await;
        assert!(alive);
        let mut s = s2;
        // Re-applying unchanged rules (a new revision, same content) lets
        // the session live.
        ctl.update(|_| {});
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (alive, s2) = blocking(move || {
            let a = stream_alive(&mut s, Duration::from_secs(2));
            (a, s)
        })
        .await;
        assert!(alive, "an unchanged rule set must not disturb sessions");
        s = s2;
        ctl.update(|st| {
            for g in &mut st.security_groups {
                g.rules.retain(|r| r.id != ssh_id);
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let alive = blocking(move || stream_alive(&mut s, Duration::from_secs(2))).await;
        assert!(
            !alive,
            "the established session survived its rule's deletion"
        );
        assert!(!echo_ok(&vm1, "10.0.0.6:22").await);
        // Remote group: members reach port 80, others do not, until they
        // become members.
        assert!(echo_ok(&vm3, "10.0.0.6:80").await, "member");
        assert!(!echo_ok(&vm1, "10.0.0.6:80").await, "not a member");
        ctl.update(|s| {
            let g = s
                .security_groups
                .iter_mut()
                .find(|g| g.id == members)
                .unwrap();
            g.member_ips.push("10.0.0.5".parse().unwrap());
        });
        assert!(
            eventually(T, || echo_ok(&vm1, "10.0.0.6:80")).await,
            "new member"
        );
    })
    .await;
}

/// The groups of the session-cut tests (checklist 13): `client` lets its
/// ports open TCP 7000, 7001 and 7002, one rule each and nothing else (so
/// a session to 7000 is admitted by that rule alone); `server` lets its
/// ports send anything and admits TCP 7000 and 7001 from anywhere and 7002
/// from the members of `members` (a group without rules of its own).
struct CutGroups {
    client: String,
    server: String,
    members: String,
    /// The id of `client`'s rule for 7000.
    to_7000: String,
}

fn cut_groups(st: &mut HostState) -> CutGroups {
    let (client, server, members) = (new_id(), new_id(), new_id());
    let to_7000 = rule(Direction::Egress, Some("tcp"), Some(7000), None);
    let id = to_7000.id.clone();
    st.security_groups.push(sg(
        &client,
        vec![
            to_7000,
            rule(Direction::Egress, Some("tcp"), Some(7001), None),
            rule(Direction::Egress, Some("tcp"), Some(7002), None),
        ],
    ));
    let mut from_members = rule(Direction::Ingress, Some("tcp"), Some(7002), None);
    from_members.remote_group_id = Some(members.clone());
    st.security_groups.push(sg(
        &server,
        vec![
            rule(Direction::Egress, None, None, None),
            rule(Direction::Ingress, Some("tcp"), Some(7000), None),
            rule(Direction::Ingress, Some("tcp"), Some(7001), None),
            from_members,
        ],
    ));
    st.security_groups.push(sg(&members, vec![]));
    CutGroups {
        client,
        server,
        members,
        to_7000: id,
    }
}

/// A TCP session from `ns` to the echo server at `addr`, checked alive.
async fn session(ns: &Netns, addr: &str) -> std::net::TcpStream {
    let (ns, addr): (Netns, SocketAddr) = (ns.clone(), addr.parse().unwrap());
    let (ok, s) = blocking(move || {
        let mut s = tcp_connect_in(&ns, addr, T).unwrap();
        (stream_alive(&mut s, T), s)
    })
    .await;
    assert!(ok, "a new session to {addr} echoes");
    s
}

/// Whether the session still echoes within `limit`.
async fn echoes(s: std::net::TcpStream, limit: Duration) -> (bool, std::net::TcpStream) {
    blocking(move || {
        let mut s = s;
        (stream_alive(&mut s, limit), s)
    })
    .await
}

/// Whether the session is cut within 5 s of now (a loaded machine may
/// take seconds for the agent's pass): checked every 250 ms until a ping
/// is not echoed within 1.3 s.
async fn cut_within_5s(s: std::net::TcpStream) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut s = s;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (alive, back) = echoes(s, Duration::from_millis(1300)).await;
        if !alive {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        s = back;
    }
}

/// Rounds of: sessions to 7000 and 7001 through `client`'s rules; the
/// rule for 7000 deleted → that session is cut within 5 s while the other
/// flows on; the rule added back → new sessions to 7000 pass again.
async fn egress_revocation_rounds(ctl: &FakeControl, g: &CutGroups, from: &Netns, to: &str) {
    let mut rule_id = g.to_7000.clone();
    let to_7000 = format!("{to}:7000");
    for round in 0..4 {
        let s0 = session(from, &format!("{to}:7000")).await;
        let s1 = session(from, &format!("{to}:7001")).await;
        let gone = rule_id.clone();
        ctl.update(|st| {
            for sg in &mut st.security_groups {
                sg.rules.retain(|r| r.id != gone);
            }
        });
        assert!(
            cut_within_5s(s0).await,
            "round {round}: the session survived its egress rule's deletion"
        );
        let (alive, _s1) = echoes(s1, T).await;
        assert!(alive, "round {round}: a session still allowed was cut");
        assert!(!echo_ok(from, &format!("{to}:7000")).await, "round {round}");
        let back = rule(Direction::Egress, Some("tcp"), Some(7000), None);
        rule_id = back.id.clone();
        let client = g.client.clone();
        ctl.update(move |st| {
            let sg = st
                .security_groups
                .iter_mut()
                .find(|x| x.id == client)
                .unwrap();
            sg.rules.push(back);
        });
        assert!(
            eventually(T, || echo_ok(from, &to_7000)).await,
            "round {round}: the rule added back admits new sessions"
        );
    }
}

/// Checklist 13, VM → VM on one host: the sender's egress rule deleted
/// cuts its session though the receiver's ingress rule still admits it
/// (the receiver stamps the session too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5e_deleting_the_senders_egress_rule_cuts_its_sessions_on_one_host() {
    if !require_root("t5e_deleting_the_senders_egress_rule_cuts_its_sessions_on_one_host") {
        return;
    }
    bounded(Duration::from_secs(120), "t5e egress cut", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let g = cut_groups(&mut st);
        let tx = vm_port(
            &new_id(),
            &n.id,
            &n.subnet,
            &mac(1),
            "10.0.0.5",
            &[&g.client],
        );
        let rx = vm_port(
            &new_id(),
            &n.id,
            &n.subnet,
            &mac(2),
            "10.0.0.6",
            &[&n.sg, &g.server],
        );
        st.ports.push(Arc::new(tx.clone()));
        st.ports.push(Arc::new(rx.clone()));
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        let vm_tx = lab.vm("tx", &tx).await;
        let vm_rx = lab.vm("rx", &rx).await;
        for (ns, p, ip) in [(&vm_tx, &tx, "10.0.0.5"), (&vm_rx, &rx, "10.0.0.6")] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
            static_ip(&lab, ns, ip).await;
        }
        for port in 7000..=7002 {
            echo_server(&vm_rx, &format!("10.0.0.6:{port}"));
        }
        assert!(eventually(T, || echo_ok(&vm_tx, "10.0.0.6:7000")).await);
        egress_revocation_rounds(&ctl, &g, &vm_tx, "10.0.0.6").await;
    })
    .await;
}

/// Checklist 13 across a router: sender and receiver on two networks of
/// one router (each network its own conntrack zone, the router its own
/// namespace), the sender's egress rule deleted cuts the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5f_deleting_the_senders_egress_rule_cuts_its_sessions_across_a_router() {
    if !require_root("t5f_deleting_the_senders_egress_rule_cuts_its_sessions_across_a_router") {
        return;
    }
    bounded(Duration::from_secs(120), "t5f egress cut, routed", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n1 = tenant_net(&mut st, 1, "10.0.1.0/24");
        let n2 = tenant_net(&mut st, 2, "10.0.2.0/24");
        let g = cut_groups(&mut st);
        let tx = vm_port(
            &new_id(),
            &n1.id,
            &n1.subnet,
            &mac(1),
            "10.0.1.5",
            &[&g.client],
        );
        let rx = vm_port(
            &new_id(),
            &n2.id,
            &n2.subnet,
            &mac(2),
            "10.0.2.6",
            &[&n2.sg, &g.server],
        );
        st.ports.push(Arc::new(tx.clone()));
        st.ports.push(Arc::new(rx.clone()));
        let iface = ext_iface(&lab);
        let ext = external(&mut st, &iface);
        router(&mut st, &ext, "203.0.113.10", &[&n1, &n2], 200);
        let _out = lab.outside("out", &iface, "203.0.113.1/24").await;
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        let vm_tx = lab.vm("tx", &tx).await;
        let vm_rx = lab.vm("rx", &rx).await;
        assert!(ctl.wait_status(&tx.id, PortStatus::Active, T).await);
        assert!(ctl.wait_status(&rx.id, PortStatus::Active, T).await);
        dhcp(&lab, &vm_tx, "tx").await;
        dhcp(&lab, &vm_rx, "rx").await;
        for port in 7000..=7002 {
            echo_server(&vm_rx, &format!("10.0.2.6:{port}"));
        }
        assert!(eventually(T, || echo_ok(&vm_tx, "10.0.2.6:7000")).await);
        egress_revocation_rounds(&ctl, &g, &vm_tx, "10.0.2.6").await;
    })
    .await;
}

/// Checklist 13, remote groups: the receiver admits 7002 from the members
/// of a group; the sender leaving that group cuts its session (its own
/// rules do not change), others flow on, and joining again admits new
/// sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5g_a_port_leaving_a_remote_group_loses_the_sessions_it_admitted() {
    if !require_root("t5g_a_port_leaving_a_remote_group_loses_the_sessions_it_admitted") {
        return;
    }
    bounded(Duration::from_secs(120), "t5g remote group cut", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let g = cut_groups(&mut st);
        let tx = vm_port(
            &new_id(),
            &n.id,
            &n.subnet,
            &mac(1),
            "10.0.0.5",
            &[&g.client, &g.members],
        );
        let rx = vm_port(
            &new_id(),
            &n.id,
            &n.subnet,
            &mac(2),
            "10.0.0.6",
            &[&n.sg, &g.server],
        );
        st.security_groups
            .iter_mut()
            .find(|x| x.id == g.members)
            .unwrap()
            .member_ips = vec!["10.0.0.5".parse().unwrap()];
        st.ports.push(Arc::new(tx.clone()));
        st.ports.push(Arc::new(rx.clone()));
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        let vm_tx = lab.vm("tx", &tx).await;
        let vm_rx = lab.vm("rx", &rx).await;
        for (ns, p, ip) in [(&vm_tx, &tx, "10.0.0.5"), (&vm_rx, &rx, "10.0.0.6")] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
            static_ip(&lab, ns, ip).await;
        }
        for port in 7000..=7002 {
            echo_server(&vm_rx, &format!("10.0.0.6:{port}"));
        }
        assert!(eventually(T, || echo_ok(&vm_tx, "10.0.0.6:7002")).await);
        // Membership as the controller reports it: the port's groups and
        // the group's member addresses change together.
        let set_member = |member: bool| {
            let (members, port) = (g.members.clone(), tx.id.clone());
            move |st: &mut HostState| {
                let grp = st
                    .security_groups
                    .iter_mut()
                    .find(|x| x.id == members)
                    .unwrap();
                grp.member_ips = if member {
                    vec!["10.0.0.5".parse().unwrap()]
                } else {
                    vec![]
                };
                let p = st.ports.iter_mut().find(|p| p.id == port).unwrap();
                let p = Arc::make_mut(p);
                p.security_group_ids.retain(|x| *x != members);
                if member {
                    p.security_group_ids.push(members.clone());
                }
            }
        };
        for round in 0..4 {
            let s2 = session(&vm_tx, "10.0.0.6:7002").await;
            let s1 = session(&vm_tx, "10.0.0.6:7001").await;
            ctl.update(set_member(false));
            assert!(
                cut_within_5s(s2).await,
                "round {round}: the session survived its sender leaving the remote group"
            );
            let (alive, _s1) = echoes(s1, T).await;
            assert!(alive, "round {round}: a session still allowed was cut");
            assert!(!echo_ok(&vm_tx, "10.0.0.6:7002").await, "round {round}");
            ctl.update(set_member(true));
            assert!(
                eventually(T, || echo_ok(&vm_tx, "10.0.0.6:7002")).await,
                "round {round}: a member again is admitted again"
            );
        }
    })
    .await;
}

/// Fail closed with the real kernel: when the firewall refuses a port's
/// changed rules, the port forwards nothing — not even what its old and
/// new rules both allow — until the rules apply; then traffic flows again
/// without any new change from the controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5d_a_port_whose_rules_cannot_be_applied_forwards_nothing_until_they_are() {
    if !require_root("t5d_a_port_whose_rules_cannot_be_applied_forwards_nothing_until_they_are") {
        return;
    }
    bounded(Duration::from_secs(90), "t5d fail closed", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let web = new_id();
        st.security_groups.push(sg(
            &web,
            vec![
                rule(Direction::Egress, None, None, None),
                rule(Direction::Ingress, Some("icmp"), None, None),
                rule(Direction::Ingress, Some("tcp"), Some(22), None),
            ],
        ));
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let p2 = vm_port(&new_id(), &n.id, &n.subnet, &mac(2), "10.0.0.6", &[&web]);
        st.ports.push(Arc::new(p2.clone()));
        let ctl = Arc::new(FakeControl::new(st));
        let fw = Arc::new(agent::testing::FaultyFirewall::new(lab.fw.clone()));
        let _agent = lab
            .start_agent_over(ctl.clone(), lab.config(), fw.clone())
            .await;
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        for (ns, p, ip) in [(&vm1, &p1, "10.0.0.5"), (&vm2, &p2, "10.0.0.6")] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
            static_ip(&lab, ns, ip).await;
        }
        echo_server(&vm2, "10.0.0.6:22");
        assert!(eventually(T, || echo_ok(&vm1, "10.0.0.6:22")).await);
        assert!(reaches(&vm1, "10.0.0.6").await);
        // vm2's group gains a rule; the firewall refuses the update.
        fw.fail_port_updates(true);
        ctl.update(|s| {
            let g = s.security_groups.iter_mut().find(|g| g.id == web).unwrap();
            g.rules
                .push(rule(Direction::Ingress, Some("tcp"), Some(23), None));
        });
        assert!(ctl.wait_status(&p2.id, PortStatus::Error, T).await);
        assert!(
            !echo_ok(&vm1, "10.0.0.6:22").await,
            "a cut-off port forwarded"
        );
        assert!(
            !ping(&vm1, "10.0.0.6").await,
            "a cut-off port answered ping"
        );
        // The fault clears: the agent's retry applies the rules.
        fw.fail_port_updates(false);
        assert!(ctl.wait_status(&p2.id, PortStatus::Active, T).await);
        assert!(eventually(T, || echo_ok(&vm1, "10.0.0.6:22")).await);
        echo_server(&vm2, "10.0.0.6:23");
        assert!(eventually(T, || echo_ok(&vm1, "10.0.0.6:23")).await);
    })
    .await;
}

/// The MAC `ip`'s neighbour entry has in `ns` (from /proc).
async fn arp_entry(ns: &Netns, ip: &str) -> Option<String> {
    let (ns, ip) = (ns.clone(), ip.to_string());
    blocking(move || {
        hostlink::netns::run_in(&ns, || std::fs::read_to_string("/proc/thread-self/net/arp"))
            .ok()?
            .ok()?
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ip.as_str()))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
    })
    .await
}

async fn sh(ns: &Netns, args: &[&str]) -> std::process::Output {
    let ns = ns.clone();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        lab::exec(&ns, Duration::from_secs(6), "busybox", &a)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5b_spoofed_addresses_and_arp_are_dropped_unless_port_security_is_off() {
    if !require_root("t5b_spoofed_addresses_and_arp_are_dropped_unless_port_security_is_off") {
        return;
    }
    bounded(Duration::from_secs(90), "t5b anti-spoofing", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let p2 = add_vm(&mut st, &n, 2, "10.0.0.6");
        let p3 = add_vm(&mut st, &n, 3, "10.0.0.7");
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        let vm3 = lab.vm("vm3", &p3).await;
        for (ns, p, ip) in [
            (&vm1, &p1, "10.0.0.5"),
            (&vm2, &p2, "10.0.0.6"),
            (&vm3, &p3, "10.0.0.7"),
        ] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
            static_ip(&lab, ns, ip).await;
        }
        assert!(
            reaches(&vm1, "10.0.0.6").await,
            "normal traffic and ARP work"
        );
        assert!(reaches(&vm3, "10.0.0.6").await);
        // Spoofed source IP (checklist 9).
        lab.address(&vm1, "10.0.0.99/24", None).await;
        let spoof = ["ping", "-c", "2", "-W", "1", "-I", "10.0.0.99", "10.0.0.6"];
        assert!(
            !sh(&vm1, &spoof).await.status.success(),
            "spoofed IP passed"
        );
        // Spoofed MAC.
        let real: hostlink::MacAddr = p3.mac.parse().unwrap();
        lab.net
            .set_mac(&vm3, "eth0", "fa:16:3e:99:99:99".parse().unwrap())
            .await
            .unwrap();
        assert!(!ping(&vm3, "10.0.0.6").await, "spoofed MAC passed");
        lab.net.set_mac(&vm3, "eth0", real).await.unwrap();
        assert!(reaches(&vm3, "10.0.0.6").await, "own MAC again");
        // ARP with another VM's address (checklist 10): vm2 keeps vm3's MAC
        // for 10.0.0.7.
        assert_eq!(
            arp_entry(&vm2, "10.0.0.7").await.as_deref(),
            Some(p3.mac.as_str())
        );
        lab.net
            .set_sysctl(&vm1, "net.ipv4.ip_nonlocal_bind", "1")
            .await
            .unwrap();
        let garp = [
            "arping", "-U", "-c", "2", "-s", "10.0.0.7", "-I", "eth0", "10.0.0.7",
        ];
        sh(&vm1, &garp).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            arp_entry(&vm2, "10.0.0.7").await.as_deref(),
            Some(p3.mac.as_str()),
            "a forged ARP changed a neighbour"
        );
        // Port security off: the same packets pass.
        ctl.update(|s| {
            let p = s.ports.iter_mut().find(|p| p.id == p1.id).unwrap();
            Arc::make_mut(p).port_security_enabled = false;
        });
        assert!(
            eventually(T, || async { sh(&vm1, &spoof).await.status.success() }).await,
            "spoofed IP with port security off"
        );
        // Wait for the lock time of the neighbour entry, then forge again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        sh(&vm1, &garp).await;
        assert!(
            eventually(Duration::from_secs(3), || async {
                arp_entry(&vm2, "10.0.0.7").await.as_deref() == Some(p1.mac.as_str())
            })
            .await,
            "with port security off the forged ARP arrives (the test can see it)"
        );
    })
    .await;
}

/// A UDP socket in `ns` on `port`, bound to eth0, allowed to broadcast.
fn udp_socket(ns: &Netns, port: u16) -> std::net::UdpSocket {
    hostlink::netns::run_in(ns, || -> std::io::Result<std::net::UdpSocket> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(b"eth0"))?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(s.into())
    })
    .unwrap()
    .unwrap()
}

fn discover(chaddr: [u8; 6], xid: u32) -> Vec<u8> {
    use dhcproto::v4::{DhcpOption, Message, MessageType};
    use dhcproto::{Encodable, Encoder};
    let z = std::net::Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &chaddr);
    m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t5c_rogue_dhcp_servers_and_discover_floods_get_nowhere() {
    if !require_root("t5c_rogue_dhcp_servers_and_discover_floods_get_nowhere") {
        return;
    }
    bounded(Duration::from_secs(90), "t5c dhcp abuse", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let p2 = add_vm(&mut st, &n, 2, "10.0.0.6");
        let ctl = Arc::new(FakeControl::new(st));
        let _agent = lab.start_agent(ctl.clone()).await;
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        for p in [&p1, &p2] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
        }
        assert_eq!(dhcp(&lab, &vm1, "vm1").await.ip.to_string(), "10.0.0.5");
        // A DISCOVER flood with random MACs (checklist 12): no answer.
        let (ns1, ns2) = (vm1.clone(), vm2.clone());
        let offers = blocking(move || {
            let s = udp_socket(&ns1, 68);
            let mut sent = std::collections::HashSet::new();
            for i in 0..300u32 {
                let b = (i.wrapping_mul(2_654_435_761)).to_be_bytes();
                let mac = [0x02, 0x42, b[0], b[1], b[2], b[3]];
                sent.insert(mac);
                let _ = s.send_to(&discover(mac, i), "255.255.255.255:67");
            }
            let mut offers = 0;
            let end = Instant::now() + Duration::from_millis(1500);
            let mut buf = [0u8; 1500];
            while Instant::now() < end {
                if let Ok(n) = s.recv(&mut buf) {
                    if n > 34 && sent.iter().any(|m| buf[28..34] == m[..]) {
                        offers += 1;
                    }
                }
            }
            offers
        })
        .await;
        assert_eq!(offers, 0, "leases for random MACs");
        // The server still serves the network's ports.
        assert_eq!(dhcp(&lab, &vm2, "vm2").await.ip.to_string(), "10.0.0.6");
        // A VM running a DHCP server (checklist 11): its offers reach no one.
        let rx = blocking(move || {
            let r = udp_socket(&ns2, 68);
            let got = Arc::new(std::sync::Mutex::new(0usize));
            let g = got.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(20);
                let mut buf = [0u8; 1500];
                while Instant::now() < end {
                    if let Ok(n) = r.recv(&mut buf) {
                        if &buf[..n] == b"rogue-offer" {
                            *g.lock().unwrap() += 1;
                        }
                    }
                }
            });
            got
        })
        .await;
        let rogue = |ns: Netns| async move {
            blocking(move || {
                let s = udp_socket(&ns, 67);
                for _ in 0..3 {
                    let _ = s.send_to(b"rogue-offer", "255.255.255.255:68");
                    let _ = s.send_to(b"rogue-offer", "10.0.0.6:68");
                }
            })
            .await
        };
        rogue(vm1.clone()).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            *rx.lock().unwrap(),
            0,
            "a VM's DHCP offer reached another VM"
        );
        // With port security off, the same offers arrive: the test sees them.
        ctl.update(|s| {
            let p = s.ports.iter_mut().find(|p| p.id == p1.id).unwrap();
            Arc::make_mut(p).port_security_enabled = false;
        });
        let ok = eventually(T, || {
            let (vm1, rx) = (vm1.clone(), rx.clone());
            async move {
                rogue(vm1).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let n = *rx.lock().unwrap();
                n > 0
            }
        })
        .await;
        assert!(ok, "control: offers pass without port security");
    })
    .await;
}

/// What the agent's objects look like on the host of a lab.
#[derive(Debug, PartialEq, Eq)]
struct HostView {
    bridges: std::collections::BTreeSet<String>,
    /// (device, bridge) of everything on a bridge.
    on_bridges: std::collections::BTreeSet<(String, String)>,
    agent_links: std::collections::BTreeSet<String>,
    fw_ports: std::collections::BTreeSet<String>,
    agent_netns: std::collections::BTreeSet<String>,
    tables: String,
}

async fn host_view(lab: &Lab) -> HostView {
    let links = lab.net.list_links(&lab.host).await.unwrap();
    let fw = lab.fw.clone();
    let fw_ports = blocking(move || fw.list_ports().unwrap())
        .await
        .into_iter()
        .map(|p| p.name)
        .collect();
    let host = lab.host.clone();
    let tables =
        blocking(move || lab::exec(&host, Duration::from_secs(5), "nft", &["list", "tables"]))
            .await;
    HostView {
        bridges: links
            .iter()
            .filter(|l| l.name.starts_with("fsb-"))
            .map(|l| l.name.clone())
            .collect(),
        on_bridges: links
            .iter()
            .filter_map(|l| l.master.clone().map(|m| (l.name.clone(), m)))
            .collect(),
        agent_links: links
            .iter()
            .filter(|l| agent::names::is_agent_link(&l.name))
            .map(|l| l.name.clone())
            .collect(),
        fw_ports,
        agent_netns: lab.agent_netns().into_iter().collect(),
        tables: String::from_utf8_lossy(&tables.stdout).trim().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t6_an_agent_killed_mid_wiring_converges_on_restart_and_traffic_flows() {
    if !require_root("t6_an_agent_killed_mid_wiring_converges_on_restart_and_traffic_flows") {
        return;
    }
    bounded(Duration::from_secs(120), "t6 restart", async {
        let mut lab = Lab::new();
        let mut st = empty_state();
        let n = tenant_net(&mut st, 1, "10.0.0.0/24");
        st.security_groups[0]
            .rules
            .push(rule(Direction::Ingress, Some("tcp"), Some(22), None));
        let p1 = add_vm(&mut st, &n, 1, "10.0.0.5");
        let p2 = add_vm(&mut st, &n, 2, "10.0.0.6");
        let iface = ext_iface(&lab);
        let ext = external(&mut st, &iface);
        router(&mut st, &ext, "203.0.113.10", &[&n], 200);
        let _out = lab.outside("out", &iface, "203.0.113.1/24").await;
        let ctl = Arc::new(FakeControl::new(st));
        let first = lab.start_agent(ctl.clone()).await;
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        for p in [&p1, &p2] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
        }
        dhcp(&lab, &vm1, "vm1").await;
        dhcp(&lab, &vm2, "vm2").await;
        echo_server(&vm2, "10.0.0.6:22");
        let addr: SocketAddr = "10.0.0.6:22".parse().unwrap();
        let ns = vm1.clone();
        let mut stream = blocking(move || tcp_connect_in(&ns, addr, T).unwrap()).await;
        // Pings across the whole restart.
        let ns = vm1.clone();
        let pinger = tokio::task::spawn_blocking(move || {
            lab::exec(
                &ns,
                Duration::from_secs(30),
                "busybox",
                &["ping", "-c", "60", "-i", "0.1", "10.0.0.6"],
            )
        });
        // Twelve new ports: the agent is killed while it wires them.
        let mut extra = Vec::new();
        ctl.update(|s| {
            for i in 0..12u32 {
                let p = vm_port(
                    &new_id(),
                    &n.id,
                    &n.subnet,
                    &mac(10 + i),
                    &format!("10.0.0.{}", 10 + i),
                    &[&n.sg],
                );
                extra.push(p.clone());
                s.ports.push(Arc::new(p));
            }
        });
        // Devices appear one by one; the agent is killed after the fifth,
        // whatever it is doing, and five more appear while it dies.
        let mut first = Some(first);
        for (i, p) in extra.iter().take(10).enumerate() {
            lab.vm(&format!("x{i}"), p).await;
            if i == 4 {
                // Killed as soon as the first new port is wired (its rules
                // are in, others' may not be).
                ctl.wait_status(&extra[0].id, PortStatus::Active, T).await;
                drop(first.take());
            }
        }
        let wired = lab
            .net
            .list_links(&lab.host)
            .await
            .unwrap()
            .iter()
            .filter(|l| extra.iter().any(|p| p.device_name == l.name) && l.master.is_some())
            .count();
        eprintln!("agent killed with {wired} of 12 new ports on their bridge");
        // Taps created while no agent runs.
        for (i, p) in extra.iter().enumerate().skip(10) {
            lab.vm(&format!("x{i}"), p).await;
        }
        let t0 = Instant::now();
        let second = lab.start_agent(ctl.clone()).await;
        for p in &extra {
            assert!(
                ctl.wait_status(&p.id, PortStatus::Active, T).await,
                "{} wired",
                p.id
            );
        }
        eprintln!("restarted agent wired everything in {:?}", t0.elapsed());
        let alive = blocking(move || stream_alive(&mut stream, Duration::from_secs(2))).await;
        assert!(alive, "the TCP session through the restart");
        let out = pinger.await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let received: u32 = text
            .lines()
            .find(|l| l.contains("packets received"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|x| x.split_whitespace().next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        eprintln!("pings across the restart: {received}/60 answered");
        assert!(received >= 58, "pings lost across the restart: {text}");
        // Nothing leaked: the host has exactly what the state asks for.
        let want_ports: std::collections::BTreeSet<String> = ctl
            .state()
            .ports
            .iter()
            .map(|p| p.device_name.clone())
            .collect();
        let v = host_view(&lab).await;
        assert_eq!(v.fw_ports, want_ports);
        assert_eq!(v.bridges.len(), 2, "{v:?}");
        assert_eq!(
            v.agent_netns.len(),
            2,
            "one router, one DHCP namespace: {v:?}"
        );
        let on: Vec<&String> = v.on_bridges.iter().map(|(d, _)| d).collect();
        // 14 VM taps, router leg, DHCP leg, gateway leg, flat interface.
        assert_eq!(on.len(), 18, "{v:?}");
        assert!(v
            .agent_links
            .iter()
            .all(|l| l.starts_with("fsb-") || l.starts_with("fsd-")));
        // The snapshot and the journal replayed over it, as a restart reads them.
        let marks = agent::marks::MarkStore::open(&lab.state_dir).unwrap();
        let m = marks.state();
        assert_eq!(
            m.ports
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            want_ports
        );
        drop(second);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t7_an_empty_state_leaves_the_host_as_clean_as_before() {
    if !require_root("t7_an_empty_state_leaves_the_host_as_clean_as_before") {
        return;
    }
    bounded(Duration::from_secs(90), "t7 cleanup", async {
        let mut lab = Lab::new();
        let iface = ext_iface(&lab);
        let mut st = empty_state();
        let a = tenant_net(&mut st, 1, "10.0.0.0/24");
        let b = tenant_net(&mut st, 2, "10.1.0.0/24");
        let (web, members) = (new_id(), new_id());
        let mut from_members = rule(Direction::Ingress, Some("tcp"), Some(80), None);
        from_members.remote_group_id = Some(members.clone());
        st.security_groups.push(sg(&web, vec![from_members]));
        let mut m = sg(&members, vec![]);
        m.member_ips = vec!["10.0.0.5".parse().unwrap()];
        st.security_groups.push(m);
        let p1 = add_vm(&mut st, &a, 1, "10.0.0.5");
        let p2 = vm_port(
            &new_id(),
            &a.id,
            &a.subnet,
            &mac(2),
            "10.0.0.6",
            &[&web, &a.sg],
        );
        st.ports.push(Arc::new(p2.clone()));
        let p3 = add_vm(&mut st, &b, 3, "10.1.0.5");
        let ext = external(&mut st, &iface);
        let rid = router(&mut st, &ext, "203.0.113.10", &[&a, &b], 200);
        st.routers[0].floating_ips.push(FloatingIp {
            id: new_id(),
            floating_ip: "203.0.113.20".parse().unwrap(),
            fixed_ip: "10.0.0.5".parse().unwrap(),
            port_id: p1.id.clone(),
        });
        let _ = rid;
        let out = lab.outside("out", &iface, "203.0.113.1/24").await;
        let vm1 = lab.vm("vm1", &p1).await;
        let _vm2 = lab.vm("vm2", &p2).await;
        let _vm3 = lab.vm("vm3", &p3).await;
        let before = host_view(&lab).await;
        let ctl = Arc::new(FakeControl::new(st));
        let agent = lab.start_agent(ctl.clone()).await;
        for p in [&p1, &p2, &p3] {
            assert!(ctl.wait_status(&p.id, PortStatus::Active, T).await);
        }
        dhcp(&lab, &vm1, "vm1").await;
        assert!(eventually(T, || ping(&out, "203.0.113.20")).await);
        let text = agent.explainer.explain_port(&p1.id);
        eprintln!("{text}");
        assert!(
            text.contains("203.0.113.20") && text.contains("ACTIVE"),
            "{text}"
        );
        let during = host_view(&lab).await;
        assert_eq!(during.agent_netns.len(), 3, "{during:?}");
        ctl.update(|s| {
            s.networks.clear();
            s.ports.clear();
            s.routers.clear();
            s.security_groups.clear();
        });
        let clean = eventually(T, || async { host_view(&lab).await == before }).await;
        assert!(
            clean,
            "before {before:?}\nafter {:?}",
            host_view(&lab).await
        );
        agent.stop().await;
        assert_eq!(host_view(&lab).await, before);
        assert!(before.tables.is_empty() && before.agent_netns.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t8_two_hosts_share_a_vxlan_network() {
    if !require_root("t8_two_hosts_share_a_vxlan_network") {
        return;
    }
    bounded(
        Duration::from_secs(90),
        "t8 vxlan between two hosts",
        async {
            let mut lab1 = Lab::new();
            let mut lab2 = Lab::new();
            // The underlay: the two host namespaces joined by a veth.
            lab1.net
                .ensure_veth(
                    &lab1.host,
                    &hostlink::VethSpec {
                        name: "ul".into(),
                        peer: "ul".into(),
                        peer_netns: lab2.host.clone(),
                        mtu: 1500,
                        peer_mac: None,
                        up: true,
                    },
                )
                .await
                .unwrap();
            for (lab, a) in [(&lab1, "10.250.0.1/24"), (&lab2, "10.250.0.2/24")] {
                lab.net
                    .ensure_address(&lab.host, "ul", a.parse().unwrap())
                    .await
                    .unwrap();
            }
            let (nid, sid) = (new_id(), new_id());
            let vni = 1000 + (std::process::id() % 1000);
            let mut net = network(
                &nid,
                7,
                Segment::Vxlan { vni },
                vec![agent::testing::fixtures::subnet(
                    &sid,
                    "10.0.0.0/24",
                    Some("10.0.0.1"),
                    Some("10.0.0.2"),
                )],
            );
            net.mtu = 1450;
            let sgid = new_id();
            let group = sg(
                &sgid,
                vec![
                    rule(Direction::Egress, None, None, None),
                    rule(Direction::Ingress, Some("icmp"), None, None),
                ],
            );
            let p1 = vm_port(&new_id(), &nid, &sid, &mac(1), "10.0.0.5", &[&sgid]);
            let p2 = vm_port(&new_id(), &nid, &sid, &mac(2), "10.0.0.6", &[&sgid]);
            // Each host's DHCP server answers its own ports (static leases from
            // its own state); broadcasts cross the tunnel through the BUM
            // entries, and the other host's server stays silent.
            let mut n1 = net.clone();
            n1.remote_ports = vec![netmodel::RemotePort {
                mac: p2.mac.clone(),
                host_ip: "10.250.0.2".parse().unwrap(),
            }];
            n1.remote_hosts = vec!["10.250.0.2".parse().unwrap()];
            let mut n2 = net.clone();
            n2.remote_ports = vec![netmodel::RemotePort {
                mac: p1.mac.clone(),
                host_ip: "10.250.0.1".parse().unwrap(),
            }];
            n2.remote_hosts = vec!["10.250.0.1".parse().unwrap()];
            let st = |n: netmodel::Network, p: &Port| HostState {
                host: "h1".into(),
                revision: 1,
                networks: vec![n],
                ports: vec![Arc::new(p.clone())],
                security_groups: vec![group.clone()],
                routers: vec![],
            };
            let c1 = Arc::new(FakeControl::new(st(n1, &p1)));
            let c2 = Arc::new(FakeControl::new(st(n2, &p2)));
            let mut cfg1 = lab1.config();
            cfg1.vxlan_local = Some("10.250.0.1".parse().unwrap());
            let mut cfg2 = lab2.config();
            cfg2.vxlan_local = Some("10.250.0.2".parse().unwrap());
            let _a1 = lab1.start_agent_with(c1.clone(), cfg1).await;
            let _a2 = lab2.start_agent_with(c2.clone(), cfg2).await;
            let vm1 = lab1.vm("vm1", &p1).await;
            let vm2 = lab2.vm("vm2", &p2).await;
            assert!(c1.wait_status(&p1.id, PortStatus::Active, T).await);
            assert!(c2.wait_status(&p2.id, PortStatus::Active, T).await);
            let vx = format!("fsx-{vni}");
            let fdb = lab1.net.list_fdb(&lab1.host, &vx).await.unwrap();
            assert!(
                fdb.iter()
                    .any(|e| e.mac.to_string() == p2.mac && e.dst.to_string() == "10.250.0.2")
                    && fdb.iter().any(|e| e.mac == hostlink::MacAddr::ZERO),
                "{fdb:?}"
            );
            assert_eq!(dhcp(&lab1, &vm1, "vm1").await.ip.to_string(), "10.0.0.5");
            let l2 = dhcp(&lab2, &vm2, "vm2").await;
            assert_eq!(l2.ip.to_string(), "10.0.0.6");
            assert_eq!(l2.mtu, "1450");
            assert!(reaches(&vm1, "10.0.0.6").await);
            assert!(reaches(&vm2, "10.0.0.5").await);
            // The controller moves the remote port away: its entry goes.
            c1.update(|s| s.networks[0].remote_ports.clear());
            let (net1, host1, vx1) = (lab1.net.clone(), lab1.host.clone(), vx.clone());
            assert!(
                eventually(T, || {
                    let (n, h, v) = (net1.clone(), host1.clone(), vx1.clone());
                    async move {
                        n.list_fdb(&h, &v)
                            .await
                            .map(|f| f.iter().all(|e| e.mac == hostlink::MacAddr::ZERO))
                            .unwrap_or(false)
                    }
                })
                .await
            );
            let _ = (&mut lab1, &mut lab2);
        },
    )
    .await;
}
