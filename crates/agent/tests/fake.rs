//! Reconciler logic over the fake drivers (no root needed): idempotency,
//! restart, device arrival, rule revocation, removal of everything.

use std::sync::Arc;

use agent::testing::fixtures::*;
use agent::testing::FakeControl;
use agent::{Agent, Config};
use hostlink::{HostNet, Netns, VethSpec};
use netmodel::{
    Direction, FloatingIp, HostState, PortStatus, Router, RouterGateway, RouterInterface, Segment,
};
use nft::Firewall;

struct World {
    net: Arc<hostlink::Fake>,
    fw: Arc<nft::Fake>,
    dir: tempfile::TempDir,
    state: HostState,
    vm: Vec<String>,
    rule_ssh: String,
}

async fn vm_tap(net: &hostlink::Fake, tap: &str, ns: &str) {
    net.ensure_netns(ns).await.unwrap();
    net.ensure_veth(
        &Netns::Current,
        &VethSpec {
            name: tap.into(),
            peer: "eth0".into(),
            peer_netns: Netns::Named(ns.into()),
            mtu: 1500,
            peer_mac: None,
            up: true,
        },
    )
    .await
    .unwrap();
}

async fn world() -> World {
    let net = Arc::new(hostlink::Fake::new());
    let fw = Arc::new(nft::Fake::new());
    let (n1, s1, ext, sext) = (new_id(), new_id(), new_id(), new_id());
    let (sgid, sg2) = (new_id(), new_id());
    let (p1, p2) = (new_id(), new_id());
    let mut ssh = rule(Direction::Ingress, Some("tcp"), Some(22), None);
    let rule_ssh = ssh.id.clone();
    ssh.remote_ip_prefix = None;
    let mut from_group = rule(Direction::Ingress, Some("tcp"), Some(80), None);
    from_group.remote_group_id = Some(sg2.clone());
    let mut group = sg(
        &sgid,
        vec![rule(Direction::Egress, None, None, None), ssh, from_group],
    );
    group.member_ips = vec!["10.0.0.5".parse().unwrap()];
    let mut other = sg(&sg2, vec![]);
    other.member_ips = vec!["10.0.0.6".parse().unwrap()];
    let mut extnet = network(
        &ext,
        2,
        Segment::Flat {
            physical_network: "public".into(),
            interface: "ext0".into(),
        },
        vec![subnet(&sext, "203.0.113.0/24", Some("203.0.113.1"), None)],
    );
    extnet.external = true;
    let state = HostState {
        host: "h1".into(),
        revision: 1,
        networks: vec![
            network(
                &n1,
                1,
                Segment::Local,
                vec![subnet(
                    &s1,
                    "10.0.0.0/24",
                    Some("10.0.0.1"),
                    Some("10.0.0.2"),
                )],
            ),
            extnet,
        ],
        ports: vec![
            Arc::new(vm_port(&p1, &n1, &s1, &mac(1), "10.0.0.5", &[&sgid])),
            Arc::new(vm_port(&p2, &n1, &s1, &mac(2), "10.0.0.6", &[&sgid, &sg2])),
        ],
        security_groups: vec![group, other],
        routers: vec![Router {
            id: new_id(),
            project_id: "p".into(),
            admin_state_up: true,
            gateway: Some(RouterGateway {
                network_id: ext.clone(),
                port_id: new_id(),
                mac: mac(100),
                ips: vec![netmodel::Cidr::parse("203.0.113.10/24").unwrap()],
                nexthop: Some("203.0.113.1".parse().unwrap()),
                enable_snat: true,
            }),
            interfaces: vec![RouterInterface {
                port_id: new_id(),
                network_id: n1.clone(),
                subnet_id: s1.clone(),
                mac: mac(101),
                ip: netmodel::Cidr::parse("10.0.0.1/24").unwrap(),
            }],
            routes: vec![],
            floating_ips: vec![FloatingIp {
                id: new_id(),
                floating_ip: "203.0.113.20".parse().unwrap(),
                fixed_ip: "10.0.0.5".parse().unwrap(),
                port_id: p1.clone(),
            }],
        }],
    };
    // The outside interface of the flat network.
    net.ensure_netns("out").await.unwrap();
    net.ensure_veth(
        &Netns::Current,
        &VethSpec {
            name: "ext0".into(),
            peer: "eth0".into(),
            peer_netns: Netns::Named("out".into()),
            mtu: 1500,
            peer_mac: None,
            up: true,
        },
    )
    .await
    .unwrap();
    let vm = state.ports.iter().map(|p| p.id.clone()).collect();
    World {
        net,
        fw,
        dir: tempfile::tempdir().unwrap(),
        state,
        vm,
        rule_ssh,
    }
}

fn agent(w: &World) -> Agent {
    let mut cfg = Config::new(w.dir.path());
    cfg.dhcp_servers = false;
    Agent::new(
        "h1",
        Arc::new(FakeControl::new(w.state.clone())),
        w.net.clone(),
        w.fw.clone(),
        cfg,
    )
    .unwrap()
}

#[tokio::test]
async fn a_second_pass_changes_nothing_and_ports_wait_for_their_device() {
    let w = world().await;
    let mut a = agent(&w);
    let r = a.reconcile(&w.state, true).await.unwrap();
    assert!(r.changes > 0);
    for p in &w.vm {
        assert_eq!(r.statuses[p].0, PortStatus::Down, "no device yet: {r:?}");
    }
    // Rules are in before the device exists.
    assert_eq!(w.fw.list_ports().unwrap().len(), 2);
    for (i, p) in w.state.ports.iter().enumerate() {
        vm_tap(&w.net, &p.device_name, &format!("vm{i}")).await;
    }
    let r = a.reconcile(&w.state, false).await.unwrap();
    for p in &w.vm {
        assert_eq!(r.statuses[p].0, PortStatus::Active, "{r:?}");
    }
    let tx = w.fw.transactions();
    let r = a.reconcile(&w.state, false).await.unwrap();
    assert_eq!(r.changes, 0, "{r:?}");
    let r = a.reconcile(&w.state, true).await.unwrap();
    assert_eq!(r.changes, 0, "deep pass: {r:?}");
    assert_eq!(w.fw.transactions(), tx);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // Everything is where the plan says.
    let links = w.net.list_links(&Netns::Current).await.unwrap();
    let on_bridges = links
        .iter()
        .filter(|l| l.master.as_deref().is_some_and(|m| m.starts_with("fsb-")))
        .count();
    // 2 VM taps + router leg + DHCP leg on the network; gateway leg + ext0 on
    // the external network.
    assert_eq!(on_bridges, 6, "{links:#?}");
    let netns = w.net.list_netns().await.unwrap();
    assert!(netns.iter().any(|n| n.starts_with("fsr-")));
    assert!(netns.iter().any(|n| n.starts_with("fsd-")));
    let r0 = netns.iter().find(|n| n.starts_with("fsr-")).unwrap();
    let nat = w.fw.router(r0).unwrap();
    assert_eq!(nat.floating_ips.len(), 1);
    assert!(nat.snat);
    let addrs = w
        .net
        .list_addresses(&Netns::Named(r0.clone()))
        .await
        .unwrap();
    assert!(addrs.iter().any(|a| a.net.to_string() == "203.0.113.20/32"));
    let routes = w.net.list_routes(&Netns::Named(r0.clone())).await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(
        w.net
            .get_sysctl(&Netns::Named(r0.clone()), "net.ipv4.ip_forward")
            .await
            .unwrap(),
        "1"
    );

    let text = a.explainer().explain_port(&w.vm[0]);
    for want in [
        "fsb-",
        "chain eg-",
        "chain in-",
        "chain antispoof",
        "fsr-",
        "203.0.113.20",
        "ACTIVE",
        // What the marks really are: both ends' rules, one half each,
        // each end known by its packet mark.
        "into the ct mark's high half",
        "into the ct mark's low half",
        "revoked_rules",
        "cut in both directions",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

#[tokio::test]
async fn a_restarted_agent_rewrites_nothing_and_keeps_its_marks() {
    let w = world().await;
    for (i, p) in w.state.ports.iter().enumerate() {
        vm_tap(&w.net, &p.device_name, &format!("vm{i}")).await;
    }
    let mut a = agent(&w);
    a.reconcile(&w.state, true).await.unwrap();
    let before = w.fw.list_ports().unwrap();
    let tx = w.fw.transactions();
    drop(a);
    let mut b = agent(&w);
    let r = b.reconcile(&w.state, true).await.unwrap();
    // No port is rewritten. The one remote group's set is (atomically)
    // refilled: the firewall cannot list group sets, so a new process
    // cannot tell whether they are current.
    assert_eq!(w.fw.transactions(), tx + 1, "nothing rewritten");
    assert_eq!(w.fw.list_ports().unwrap(), before);
    // Only the in-process metadata listener, the group set and the two
    // zone entries (idempotent calls the agent cannot skip without a way
    // to list them).
    assert_eq!(r.changes, 4, "{r:?}");
    assert_eq!(b.reconcile(&w.state, false).await.unwrap().changes, 0);
}

#[tokio::test]
async fn a_deleted_rule_revokes_its_sessions_and_an_empty_state_cleans_up() {
    let w = world().await;
    for (i, p) in w.state.ports.iter().enumerate() {
        vm_tap(&w.net, &p.device_name, &format!("vm{i}")).await;
    }
    let mut a = agent(&w);
    a.reconcile(&w.state, true).await.unwrap();
    let mark = |w: &World| {
        w.fw.list_ports()
            .unwrap()
            .iter()
            .flat_map(|p| p.ct_marks.clone())
            .collect::<Vec<u32>>()
    };
    let marks_before = mark(&w);
    let mut s = w.state.clone();
    s.security_groups[0].rules.retain(|r| r.id != w.rule_ssh);
    a.reconcile(&s, false).await.unwrap();
    let revoked = w.fw.revoked();
    assert_eq!(revoked.len(), 2, "one ssh mark per port: {revoked:?}");
    assert!(revoked.iter().all(|m| marks_before.contains(m)));
    // A rule coming back gets fresh marks (never a revoked one).
    a.reconcile(&w.state, false).await.unwrap();
    assert!(mark(&w).iter().all(|m| !revoked.contains(m)));

    let empty = HostState {
        host: "h1".into(),
        revision: 9,
        ..Default::default()
    };
    let r = a.reconcile(&empty, false).await.unwrap();
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    assert!(w.fw.list_ports().unwrap().is_empty());
    let links = w.net.list_links(&Netns::Current).await.unwrap();
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    assert!(
        links.iter().all(|l| l.master.is_none()),
        "nothing on a bridge: {links:#?}"
    );
    // VM taps (the compute driver's) and the flat interface stay.
    let mut names = names;
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"ext0") && names.contains(&"lo"));
    let netns = w.net.list_netns().await.unwrap();
    assert!(netns.iter().all(|n| !n.starts_with("fs")), "{netns:?}");
    assert_eq!(a.reconcile(&empty, true).await.unwrap().changes, 0);
}

#[tokio::test]
async fn a_bad_port_fails_alone() {
    let w = world().await;
    let mut s = w.state.clone();
    s.security_groups[0].rules[0].protocol = Some("bogus".into());
    Arc::make_mut(&mut s.ports[1]).security_group_ids.clear();
    let mut a = agent(&w);
    let r = a.reconcile(&s, true).await.unwrap();
    assert_eq!(r.statuses[&w.vm[0]].0, PortStatus::Error);
    assert!(r.statuses[&w.vm[0]].1.as_ref().unwrap().contains("bogus"));
    assert_eq!(r.statuses[&w.vm[1]].0, PortStatus::Down, "just no device");
}

/// The fake's announcements once the agent's announcing tasks (spawned,
/// and immediate over the fake) have run.
async fn announced(net: &hostlink::Fake) -> Vec<hostlink::Announcement> {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    net.announcements()
}

#[tokio::test]
async fn new_gateway_addresses_and_floating_ips_are_announced_once() {
    let w = world().await;
    let mut a = agent(&w);
    a.reconcile(&w.state, true).await.unwrap();
    let got = announced(&w.net).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let g = &got[0];
    assert!(
        g.netns.name().is_some_and(|n| n.starts_with("fsr-")),
        "{g:?}"
    );
    assert!(g.link.starts_with("qg-"), "{g:?}");
    assert_eq!(g.mac.to_string(), mac(100));
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    assert_eq!(g.ips, [ip("203.0.113.10"), ip("203.0.113.20")]);
    assert_eq!(
        (g.rounds, g.interval),
        (3, std::time::Duration::from_millis(500))
    );
    // The same state again, in a full and a deep pass: nothing new.
    a.reconcile(&w.state, false).await.unwrap();
    a.reconcile(&w.state, true).await.unwrap();
    assert_eq!(announced(&w.net).await.len(), 1);
    // A second floating IP: just it.
    let mut s = w.state.clone();
    s.revision = 2;
    s.routers[0].floating_ips.push(FloatingIp {
        id: new_id(),
        floating_ip: "203.0.113.21".parse().unwrap(),
        fixed_ip: "10.0.0.6".parse().unwrap(),
        port_id: w.vm[1].clone(),
    });
    a.reconcile(&s, false).await.unwrap();
    let got = announced(&w.net).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].ips, [ip("203.0.113.21")]);
    assert_eq!((&got[1].link, got[1].mac), (&got[0].link, got[0].mac));
    a.reconcile(&s, false).await.unwrap();
    // Disassociated: nothing to announce. A restarted agent finds the
    // addresses in place and announces nothing either.
    a.reconcile(&w.state, false).await.unwrap();
    drop(a);
    let mut b = agent(&w);
    b.reconcile(&w.state, true).await.unwrap();
    assert_eq!(announced(&w.net).await.len(), 2);
    // Internal legs (`qr-`) are never announced.
    assert!(announced(&w.net)
        .await
        .iter()
        .all(|g| g.link.starts_with("qg-")));
}

async fn wait_until(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    f()
}

/// Where a device is: (its bridge, up).
async fn link_of(net: &hostlink::Fake, dev: &str) -> (Option<String>, bool) {
    let l = net
        .list_links(&Netns::Current)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.name == dev)
        .unwrap();
    (l.master, l.up)
}

/// Fail closed: when a port's changed rules cannot be applied, its device
/// leaves the bridge and goes down (its old rules would keep admitting
/// what was revoked), it is reported ERROR, and the agent retries on its
/// own until the rules apply, then wires it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_whose_rules_cannot_be_applied_is_cut_off_and_retried() {
    use std::time::Duration;
    let w = world().await;
    for (i, p) in w.state.ports.iter().enumerate() {
        vm_tap(&w.net, &p.device_name, &format!("vm{i}")).await;
    }
    let fw = Arc::new(agent::testing::FaultyFirewall::new(w.fw.clone()));
    let ctl = Arc::new(FakeControl::new(w.state.clone()));
    let mut cfg = Config::new(w.dir.path());
    cfg.dhcp_servers = false;
    // Only the agent's own retry can bring the ports back in this test.
    cfg.resync_interval = Duration::from_secs(120);
    let a = Agent::new("h1", ctl.clone(), w.net.clone(), fw.clone(), cfg).unwrap();
    let _run = agent::AbortOnDrop(tokio::spawn(async move {
        let _ = a.run().await;
    }));
    let t = Duration::from_secs(10);
    for p in &w.vm {
        assert!(ctl.wait_status(p, PortStatus::Active, t).await);
    }
    let devs: Vec<String> = w
        .state
        .ports
        .iter()
        .map(|p| p.device_name.clone())
        .collect();
    for d in &devs {
        let (master, up) = link_of(&w.net, d).await;
        assert!(master.is_some_and(|m| m.starts_with("fsb-")) && up, "{d}");
    }
    // The ssh rule is deleted, and the firewall refuses every port update.
    fw.fail_port_updates(true);
    let ssh = w.rule_ssh.clone();
    ctl.update(|s| {
        for g in &mut s.security_groups {
            g.rules.retain(|r| r.id != ssh);
        }
    });
    for p in &w.vm {
        assert!(ctl.wait_status(p, PortStatus::Error, t).await, "{p}");
    }
    // (The fake records a report just after its status.)
    let faulted = || {
        ctl.reports()
            .iter()
            .rev()
            .find(|r| r.port_id == w.vm[0])
            .is_some_and(|r| {
                r.message
                    .as_deref()
                    .is_some_and(|m| m.contains("injected fault"))
            })
    };
    assert!(wait_until(t, faulted).await, "{:?}", ctl.reports());
    for d in &devs {
        assert_eq!(
            link_of(&w.net, d).await,
            (None, false),
            "{d} still forwards"
        );
    }
    // Still cut off on the retries while the fault lasts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for d in &devs {
        assert_eq!(link_of(&w.net, d).await, (None, false), "{d}");
    }
    // The fault clears: with no new revision, the agent's own retry
    // applies the rules and wires the ports again.
    fw.fail_port_updates(false);
    for p in &w.vm {
        assert!(
            ctl.wait_status(p, PortStatus::Active, Duration::from_secs(20))
                .await,
            "{p}"
        );
    }
    for d in &devs {
        let (master, up) = link_of(&w.net, d).await;
        assert!(master.is_some_and(|m| m.starts_with("fsb-")) && up, "{d}");
    }
    assert!(!w.fw.revoked().is_empty(), "the deleted rule's sessions");
}

/// Changes keep coming while a port's rules fail: each light pass fails
/// too, but none postpones the retry already due, so the ports come back
/// soon after the fault clears (not a doubled backoff after the last
/// change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_light_passes_do_not_postpone_the_retry() {
    use std::time::Duration;
    let w = world().await;
    for (i, p) in w.state.ports.iter().enumerate() {
        vm_tap(&w.net, &p.device_name, &format!("vm{i}")).await;
    }
    let fw = Arc::new(agent::testing::FaultyFirewall::new(w.fw.clone()));
    let ctl = Arc::new(FakeControl::new(w.state.clone()));
    let mut cfg = Config::new(w.dir.path());
    cfg.dhcp_servers = false;
    // Only the agent's own retry can bring the ports back in this test.
    cfg.resync_interval = Duration::from_secs(120);
    let a = Agent::new("h1", ctl.clone(), w.net.clone(), fw.clone(), cfg).unwrap();
    let _run = agent::AbortOnDrop(tokio::spawn(async move {
        let _ = a.run().await;
    }));
    let t = Duration::from_secs(10);
    for p in &w.vm {
        assert!(ctl.wait_status(p, PortStatus::Active, t).await);
    }
    fw.fail_port_updates(true);
    // Six rule changes 300 ms apart, each failing a light pass.
    let extra = rule(Direction::Ingress, Some("tcp"), Some(8080), None);
    for i in 0..6 {
        let e = extra.clone();
        ctl.update(move |s| {
            for g in &mut s.security_groups {
                g.rules.retain(|r| r.id != e.id);
                if i % 2 == 0 {
                    g.rules.push(e.clone());
                }
            }
        });
        if i == 0 {
            for p in &w.vm {
                assert!(ctl.wait_status(p, PortStatus::Error, t).await, "{p}");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Postponed by each change, the retry would come 8 s after the last;
    // kept, it comes within 2 s.
    fw.fail_port_updates(false);
    for p in &w.vm {
        assert!(
            ctl.wait_status(p, PortStatus::Active, Duration::from_secs(5))
                .await,
            "{p}: the retry was postponed"
        );
    }
}

/// A remote group whose members cannot be updated (its set may still
/// admit a member that left): the ports whose rules name it are cut off
/// and reported ERROR, and the agent retries soon on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_remote_group_update_cuts_off_its_ports_and_is_retried() {
    use std::time::Duration;
    let w = world().await;
    for (i, p) in w.state.ports.iter().enumerate() {
        vm_tap(&w.net, &p.device_name, &format!("vm{i}")).await;
    }
    let fw = Arc::new(agent::testing::FaultyFirewall::new(w.fw.clone()));
    let ctl = Arc::new(FakeControl::new(w.state.clone()));
    let mut cfg = Config::new(w.dir.path());
    cfg.dhcp_servers = false;
    // Only the agent's own retry can bring the ports back in this test.
    cfg.resync_interval = Duration::from_secs(120);
    let a = Agent::new("h1", ctl.clone(), w.net.clone(), fw.clone(), cfg).unwrap();
    let _run = agent::AbortOnDrop(tokio::spawn(async move {
        let _ = a.run().await;
    }));
    let t = Duration::from_secs(10);
    for p in &w.vm {
        assert!(ctl.wait_status(p, PortStatus::Active, t).await);
    }
    // 10.0.0.6 leaves the group both ports' rules name; the update fails.
    fw.fail_group_updates(true);
    let sg2 = w.state.security_groups[1].id.clone();
    ctl.update(|s| {
        for g in &mut s.security_groups {
            if g.id == sg2 {
                g.member_ips.clear();
            }
        }
    });
    for p in &w.vm {
        assert!(ctl.wait_status(p, PortStatus::Error, t).await, "{p}");
    }
    // (The fake records a report just after its status.)
    let why = format!("remote group {sg2}");
    let said = || {
        ctl.reports()
            .iter()
            .rev()
            .find(|r| r.port_id == w.vm[0])
            .is_some_and(|r| r.message.as_deref().is_some_and(|m| m.contains(&why)))
    };
    assert!(wait_until(t, said).await, "{:?}", ctl.reports());
    for p in &w.state.ports {
        assert_eq!(
            link_of(&w.net, &p.device_name).await,
            (None, false),
            "{} still forwards",
            p.device_name
        );
    }
    // The fault clears: the agent's retry (not the periodic pass) applies
    // the group and wires the ports again.
    fw.fail_group_updates(false);
    for p in &w.vm {
        assert!(
            ctl.wait_status(p, PortStatus::Active, Duration::from_secs(20))
                .await,
            "{p}"
        );
    }
}

/// Log lines written through a test subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// A panic in the agent's loop: the supervisor logs it, reports the
/// agent down, and starts a new agent after its backoff, which wires the
/// ports and is heard from again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_agents_loop_is_logged_reported_and_restarted() {
    use std::time::Duration;
    use tracing::instrument::WithSubscriber;
    let w = world().await;
    for (i, p) in w.state.ports.iter().enumerate() {
        vm_tap(&w.net, &p.device_name, &format!("vm{i}")).await;
    }
    let fw = Arc::new(agent::testing::FaultyFirewall::new(w.fw.clone()));
    fw.panic_on_port_updates(1);
    let ctl = Arc::new(FakeControl::new(w.state.clone()));
    let mut cfg = Config::new(w.dir.path());
    cfg.dhcp_servers = false;
    let (c, net, f) = (ctl.clone(), w.net.clone(), fw.clone());
    let make = move || Agent::new("h1", c.clone(), net.clone(), f.clone(), cfg.clone());
    let logs = Logs::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    // A long first wait: the check that nobody watches while down below
    // has a window of seconds even on a loaded machine.
    let backoff = agent::supervise::Backoff {
        first: Duration::from_secs(3),
        ..Default::default()
    };
    let _sup = agent::AbortOnDrop(tokio::spawn(
        agent::supervise::supervise("h1".into(), ctl.clone(), make, backoff).with_subscriber(sub),
    ));
    let t = Duration::from_secs(10);
    assert!(
        wait_until(t, || ctl.agent_down_calls() == ["h1"]).await,
        "the agent was not reported down"
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("ERROR") && text.contains("panicked: injected panic in upsert_port"),
        "{text}"
    );
    // Down while it waits: no agent watches.
    let watches = ctl.watch_calls();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ctl.watch_calls(), watches, "someone watched while down");
    // Restarted: heard from again, and the ports are wired.
    for p in &w.vm {
        assert!(ctl.wait_status(p, PortStatus::Active, t).await, "{p}");
    }
    assert!(ctl.watch_calls() > watches);
    assert_eq!(ctl.agent_down_calls().len(), 1, "restarted more than once");
}

/// A panic while the supervisor builds the agent: logged, reported, and
/// retried after the backoff like one in the agent's loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_building_the_agent_is_reported_and_restarted() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tracing::instrument::WithSubscriber;
    let w = world().await;
    for (i, p) in w.state.ports.iter().enumerate() {
        vm_tap(&w.net, &p.device_name, &format!("vm{i}")).await;
    }
    let ctl = Arc::new(FakeControl::new(w.state.clone()));
    let mut cfg = Config::new(w.dir.path());
    cfg.dhcp_servers = false;
    let (c, net, f) = (ctl.clone(), w.net.clone(), w.fw.clone());
    let made = Arc::new(AtomicUsize::new(0));
    let m = made.clone();
    let make = move || {
        if m.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("injected panic building the agent");
        }
        Agent::new("h1", c.clone(), net.clone(), f.clone(), cfg.clone())
    };
    let backoff = agent::supervise::Backoff {
        first: Duration::from_millis(200),
        ..Default::default()
    };
    // Logged through a subscriber of its own (as the test of a panic in
    // the loop does: a callsite first hit with no subscriber around can
    // stay disabled for the other test's).
    let logs = Logs::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _sup = agent::AbortOnDrop(tokio::spawn(
        agent::supervise::supervise("h1".into(), ctl.clone(), make, backoff).with_subscriber(sub),
    ));
    let t = Duration::from_secs(20);
    for p in &w.vm {
        assert!(ctl.wait_status(p, PortStatus::Active, t).await, "{p}");
    }
    assert_eq!(ctl.agent_down_calls(), ["h1"]);
    assert_eq!(made.load(Ordering::SeqCst), 2);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("ERROR") && text.contains("injected panic building the agent"),
        "{text}"
    );
}

/// Sends one GET over a fresh connection from `from` (any address when
/// `None`); the status code (0 when the connection failed) and the body.
async fn get_from(
    from: Option<std::net::IpAddr>,
    addr: std::net::SocketAddr,
    path: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        sock.bind(std::net::SocketAddr::new(ip, 0)).unwrap();
    }
    let Ok(mut s) = sock.connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// Sends one GET over a fresh connection; the status code (0 when the
/// connection failed).
async fn get_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    get_from(None, addr, path).await.0
}

/// The host state of the metadata tests: network `n` (127.0.0.0/8,
/// subnet `s`) with `port`.
fn metadata_state(n: &str, s: &str, port: netmodel::Port) -> HostState {
    HostState {
        host: "h1".into(),
        revision: 1,
        networks: vec![network(
            n,
            1,
            Segment::Local,
            vec![subnet(s, "127.0.0.0/8", None, None)],
        )],
        ports: vec![Arc::new(port)],
        ..Default::default()
    }
}

/// A refused connection is closed at once (no task is kept reading it):
/// after the 429 the guest's next writes find the connection gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_proxy_closes_a_refused_connection_at_once() {
    use agent::metadata::{Limits, Listener, Proxy, Site};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (n, s) = (new_id(), new_id());
    let port = vm_port(&new_id(), &n, &s, &mac(1), "127.0.0.1", &[]);
    let ctl = Arc::new(FakeControl::new(metadata_state(&n, &s, port)));
    ctl.set_metadata_delay(Duration::from_secs(3));
    let proxy = Proxy::new(
        ctl.clone(),
        Limits {
            per_caller: 1,
            ..Default::default()
        },
    );
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let _l = Listener::spawn(sock, addr, Site::Network(n.clone()), proxy).unwrap();
    // The one connection allowed waits for the slow controller.
    let first = tokio::spawn(get_from(None, addr, "/openstack"));
    assert!(wait_until(Duration::from_secs(10), || ctl.metadata_calls().len() == 1).await);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /openstack HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 429"), "{buf:?}");
    // Closed, not just shut for writing: writing on gets a reset.
    let mut gone = false;
    for _ in 0..10 {
        if s.write_all(b"more").await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the refused connection is still open");
    assert_eq!(first.await.unwrap().0, 200);
}

/// A port detached from one VM and another port on the same address for
/// the next VM: right after the agent's pass over the new state the
/// proxy answers for the new VM, not from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_proxy_forgets_its_answers_when_the_host_state_changes() {
    use agent::metadata::{Limits, Listener, Site};
    use std::time::Duration;
    let (n, s) = (new_id(), new_id());
    let vm1 = vm_port(&new_id(), &n, &s, &mac(1), "127.0.0.1", &[]);
    let ctl = Arc::new(FakeControl::new(metadata_state(&n, &s, vm1.clone())));
    ctl.set_user_data(&vm1.id, b"vm1 secret");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(dir.path());
    cfg.dhcp_servers = false;
    cfg.metadata_limits = Limits {
        cache_ttl: Duration::from_secs(600),
        ..Default::default()
    };
    let mut agent = Agent::new(
        "h1",
        ctl.clone(),
        Arc::new(hostlink::Fake::new()),
        Arc::new(nft::Fake::new()),
        cfg,
    )
    .unwrap();
    agent.reconcile(&ctl.state(), false).await.unwrap();
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let _l = Listener::spawn(sock, addr, Site::Network(n.clone()), agent.metadata_proxy()).unwrap();
    let path = "/openstack/latest/user_data";
    let first = get_from(None, addr, path).await;
    assert_eq!(first, (200, "vm1 secret".to_string()));
    assert_eq!(get_from(None, addr, path).await, first, "cached");
    assert_eq!(ctl.metadata_calls().len(), 1);
    // VM1's port goes; VM2's port gets its address at once.
    let vm2 = vm_port(&new_id(), &n, &s, &mac(2), "127.0.0.1", &[]);
    ctl.set_user_data(&vm2.id, b"vm2 data");
    ctl.update(|st| st.ports = vec![Arc::new(vm2)]);
    agent.reconcile(&ctl.state(), false).await.unwrap();
    assert_eq!(
        get_from(None, addr, path).await,
        (200, "vm2 data".to_string()),
        "VM1's answer served to VM2"
    );
    assert_eq!(ctl.metadata_calls().len(), 2);
}

/// Many source addresses (a guest without port security) still put at
/// most `controller_lookups` questions to the controller at once; expired
/// answers are swept, and no more than `CACHE_MAX` are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_proxy_bounds_questions_and_answers_over_all_callers() {
    use agent::metadata::{Limits, Listener, Proxy, Site, CACHE_MAX};
    use std::time::Duration;
    let (n, s) = (new_id(), new_id());
    let port = vm_port(&new_id(), &n, &s, &mac(1), "127.0.0.1", &[]);
    let ctl = Arc::new(FakeControl::new(metadata_state(&n, &s, port)));
    ctl.set_metadata_delay(Duration::from_millis(300));
    let ttl = Duration::from_millis(500);
    let proxy = Proxy::new(
        ctl.clone(),
        Limits {
            per_caller: 4,
            cache_ttl: ttl,
            controller_lookups: 2,
        },
    );
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let _l = Listener::spawn(sock, addr, Site::Network(n.clone()), proxy.clone()).unwrap();
    // The agent's pass over revision 7.
    proxy.observe(7);
    let mut set = tokio::task::JoinSet::new();
    for i in 2..=9u8 {
        let from = std::net::IpAddr::from([127, 0, 0, i]);
        set.spawn(async move { get_from(Some(from), addr, "/openstack").await.0 });
    }
    let mut codes = Vec::new();
    while let Some(c) = set.join_next().await {
        codes.push(c.unwrap());
    }
    // Unknown callers get 404 after the controller's answer; all were asked.
    assert_eq!(codes, [404; 8], "{codes:?}");
    assert_eq!(ctl.metadata_calls().len(), 8);
    assert_eq!(ctl.metadata_most_in_flight(), 2);
    // Expired answers are swept on the agent's next pass, though the
    // revision is the same.
    assert_eq!(proxy.cached(), 8);
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    proxy.observe(7);
    assert_eq!(proxy.cached(), 0);
    // However many callers, at most CACHE_MAX answers are kept.
    ctl.set_metadata_delay(Duration::ZERO);
    for i in 0..(CACHE_MAX as u32 + 100) {
        let caller = netmodel::MetadataCaller {
            network_id: n.clone(),
            ip: std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
        };
        proxy.lookup(caller).await.unwrap();
    }
    assert!(proxy.cached() <= CACHE_MAX, "{}", proxy.cached());
}

/// One caller cannot load the controller through the metadata proxy: its
/// connections beyond the limit are refused with 429 at once, and the
/// controller is asked once per caller per cache period however many
/// requests come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_proxy_bounds_a_callers_connections_and_caches_answers() {
    use agent::metadata::{Limits, Listener, Proxy, Site};
    use std::time::Duration;
    let (n, s) = (new_id(), new_id());
    let port = vm_port(&new_id(), &n, &s, &mac(1), "127.0.0.1", &[]);
    let state = HostState {
        host: "h1".into(),
        revision: 1,
        networks: vec![network(
            &n,
            1,
            Segment::Local,
            vec![subnet(&s, "127.0.0.0/8", None, None)],
        )],
        ports: vec![Arc::new(port)],
        ..Default::default()
    };
    let ctl = Arc::new(FakeControl::new(state));
    // A slow controller: the first connections are all still open when
    // the last ones arrive.
    ctl.set_metadata_delay(Duration::from_millis(1500));
    let ttl = Duration::from_secs(3);
    let proxy = Proxy::new(
        ctl.clone(),
        Limits {
            per_caller: 4,
            cache_ttl: ttl,
            ..Default::default()
        },
    );
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let _l = Listener::spawn(sock, addr, Site::Network(n.clone()), proxy).unwrap();
    let path = "/openstack/latest/meta_data.json";
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        set.spawn(get_status(addr, path));
    }
    let mut codes = Vec::new();
    while let Some(c) = set.join_next().await {
        codes.push(c.unwrap());
    }
    codes.sort();
    assert_eq!(
        (
            codes.iter().filter(|c| **c == 200).count(),
            codes.iter().filter(|c| **c == 429).count()
        ),
        (4, 16),
        "{codes:?}"
    );
    assert_eq!(ctl.metadata_calls().len(), 1, "asked more than once");
    // The answer was cached when the controller gave it, before the last
    // of the first connections ended.
    let answered = std::time::Instant::now();
    // Within the cache period: answered without asking.
    ctl.set_metadata_delay(Duration::ZERO);
    for _ in 0..5 {
        assert_eq!(get_status(addr, path).await, 200);
    }
    assert_eq!(
        ctl.metadata_calls().len(),
        1,
        "asked again within the period"
    );
    // After it: asked once more.
    tokio::time::sleep(
        (answered + ttl + Duration::from_secs(1))
            .saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get_status(addr, path).await, 200);
    }
    assert_eq!(ctl.metadata_calls().len(), 2);
}
