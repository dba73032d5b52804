//! How many SQL statements a network read runs, counted from sqlx's
//! `sqlx::query` events. One test in its own binary: the counting
//! subscriber is process-global (sqlx logs on its SQLite worker threads,
//! which a thread-local subscriber would not see).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper::StatusCode;
use serde_json::{json, Value};
use testkit::Stack;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Counts sqlx statements whose text contains `needle`.
struct Count {
    needle: &'static str,
    seen: Arc<AtomicUsize>,
}

struct Statement(Option<String>);

impl tracing::field::Visit for Statement {
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        if f.name() == "db.statement" {
            self.0 = Some(v.to_string());
        }
    }
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
        if f.name() == "db.statement" {
            self.0 = Some(format!("{v:?}"));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Count {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut s = Statement(None);
        event.record(&mut s);
        if s.0.is_some_and(|t| t.contains(self.needle)) {
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Listing floating IPs loads their ports (for `port_details`) with one
/// query, not one per associated floating IP; showing one loads one port.
#[tokio::test]
async fn floating_ip_views_load_ports_without_n_plus_one() {
    let seen = Arc::new(AtomicUsize::new(0));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Count {
        needle: "FROM port ",
        seen: seen.clone(),
    }))
    .expect("the only subscriber of this test binary");

    let s = Stack::start_with(|st| {
        st.physical_networks = vec![("physnet1".into(), "eth9".into())];
    })
    .await;
    let c = s.client();
    let admin = c.admin_token().await;
    let post = |path: &'static str, body: Value| {
        let (c, admin) = (&c, &admin);
        async move {
            let r = c.post(&format!("/network/v2.0/{path}"), admin, body).await;
            assert_eq!(r.status, StatusCode::CREATED, "{path}: {}", r.body);
            r.body
        }
    };
    let ext = id(&post(
        "networks",
        json!({"network": {"name": "public", "router:external": true,
               "provider:network_type": "flat", "provider:physical_network": "physnet1"}}),
    )
    .await["network"]);
    post(
        "subnets",
        json!({"subnet": {"network_id": ext, "ip_version": 4, "cidr": "203.0.113.0/24",
               "enable_dhcp": false}}),
    )
    .await;
    let net = id(&post("networks", json!({"network": {"name": "n"}})).await["network"]);
    let sub = id(&post(
        "subnets",
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"}}),
    )
    .await["subnet"]);
    let router = id(&post(
        "routers",
        json!({"router": {"external_gateway_info": {"network_id": ext}}}),
    )
    .await["router"]);
    let r = c
        .call(
            hyper::Method::PUT,
            &format!("/network/v2.0/routers/{router}/add_router_interface"),
            Some(&admin),
            &[],
            Some(json!({"subnet_id": sub})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let mut fips = Vec::new();
    for i in 0..5 {
        let port = id(&post(
            "ports",
            json!({"port": {"network_id": net, "name": format!("p{i}")}}),
        )
        .await["port"]);
        fips.push(id(&post(
            "floatingips",
            json!({"floatingip": {"floating_network_id": ext, "port_id": port}}),
        )
        .await["floatingip"]));
    }
    post(
        "floatingips",
        json!({"floatingip": {"floating_network_id": ext}}),
    )
    .await;

    let n = s.network();
    seen.store(0, Ordering::SeqCst);
    let views = n.floatingip_views(None).await.expect("list");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "ports of 5 floating IPs: one query"
    );
    let mut names: Vec<String> = views
        .iter()
        .filter_map(|v| v.port.as_ref().map(|p| p.name.clone()))
        .collect();
    names.sort();
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    assert_eq!(views.len(), 6);

    seen.store(0, Ordering::SeqCst);
    let one = n.load_floatingip(&fips[2]).await.expect("show");
    assert_eq!(one.port.as_ref().map(|p| p.name.as_str()), Some("p2"));
    assert_eq!(seen.load(Ordering::SeqCst), 1, "showing one loads its port");

    // Through the API, too.
    let r = c.get("/network/v2.0/floatingips", &admin).await;
    let mut names: Vec<&str> = r.body["floatingips"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["port_details"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
}
