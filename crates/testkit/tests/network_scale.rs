//! The control plane's side of "port created → wired", as ports grow.
//!
//! Creates N ports bound to one host through the API (as admin, on one
//! network) and checks that each reaches the host's desired state
//! (`Network::host_state`, what every agent watch returns after a change),
//! printing per bucket of ports the p50 of the create call and of bringing
//! that state up to the new revision: the control plane's work per revision, which the agent
//! benchmark (`scripts/bench-network`) leaves out. CI runs it with 200
//! ports; the figures in `docs/networking.md` come from
//! `PORTS=2000 cargo test --release -p testkit --test network_scale -- --nocapture`.
//! Nothing is asserted about time.

use std::time::Instant;

use serde_json::json;
use testkit::Stack;

const HOST: &str = "node-1";

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bound_port_reaches_its_hosts_state_as_ports_grow() {
    let n: usize = std::env::var("PORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let bucket = (n / 8).max(1);
    let s = Stack::start_with(|st| st.host = HOST.into()).await;
    let c = s.client();
    let admin = c.admin_token().await;
    let projects = c.get("/identity/v3/projects?name=admin", &admin).await;
    let pid = projects.body["projects"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let q = c
        .call(
            hyper::Method::PUT,
            &format!("/network/v2.0/quotas/{pid}"),
            Some(&admin),
            &[],
            Some(json!({"quota": {"port": -1}})),
        )
        .await;
    assert_eq!(q.status, 200, "{}", q.body);
    let net = c
        .post(
            "/network/v2.0/networks",
            &admin,
            json!({"network": {"name": "scale"}}),
        )
        .await;
    let net_id = net.body["network"]["id"].as_str().unwrap().to_string();
    let sub = c
        .post(
            "/network/v2.0/subnets",
            &admin,
            json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.0.0.0/16"}}),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    let ctl = s.network();
    println!("ports   create p50   host_state p50 (ms)");
    let (mut creates, mut states) = (Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        let r = c
            .post(
                "/network/v2.0/ports",
                &admin,
                json!({"port": {"network_id": net_id, "device_owner": "compute:nova",
                                "binding:host_id": HOST}}),
            )
            .await;
        creates.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(r.status, 201, "{}", r.body);
        // What an agent's watch does after each revision.
        let t = Instant::now();
        let st = ctl.host_state(HOST).await.unwrap();
        states.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(
            st.ports.len(),
            i + 2,
            "every port (and the DHCP port) is in the state"
        );
        if (i + 1) % bucket == 0 {
            println!(
                "{:>5}   {:>10.1}   {:>14.2}",
                i + 1,
                p50(&mut creates),
                p50(&mut states)
            );
            creates.clear();
            states.clear();
        }
    }
}
