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
    let (ns, dir, tag) = (ns.clone(), lab.dir().to_path_buf(), tag.to_string());
    blocking(move || lab::udhcpc(&ns, &dir, &tag))
        .await
        .expect("a DHCP lease")
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
    state.ports.push(p.clone());
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
        assert!(ctl.wait_status(&p1.id, PortStatus::Down, T).await, "DOWN before the device");
        let vm1 = lab.vm("vm1", &p1).await;
        let vm2 = lab.vm("vm2", &p2).await;
        let t0 = Instant::now();
        assert!(ctl.wait_status(&p1.id, PortStatus::Active, T).await);
        assert!(ctl.wait_status(&p2.id, PortStatus::Active, T).await);
        eprintln!("both ports ACTIVE {:?} after their devices appeared", t0.elapsed());
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
