//! Networking v2.0 through a real socket: every resource's CRUD, IPAM under
//! concurrency, policy between projects, security checklist items 14–16,
//! the host state the agent gets, the simulated agent, metadata, and junk
//! input. Each test starts its own stack.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::{Client, Resp, Stack};

const V2: &str = "/network/v2.0";
const HOST: &str = "node-1";

/// A stack with a physical network, the admin, and members of two projects
/// (alice in demo, bob in other) plus a reader in demo.
struct Env {
    s: Stack,
    c: Client,
    admin: String,
    alice: String,
    bob: String,
    reader: String,
    demo: String,
    other: String,
}

async fn user(c: &Client, admin: &str, project: &str, user: &str, role: &str) -> String {
    let p = c
        .get(&format!("/identity/v3/projects?name={project}"), admin)
        .await;
    let pid = match p.body["projects"][0]["id"].as_str() {
        Some(id) => id.to_string(),
        None => {
            let r = c
                .post(
                    "/identity/v3/projects",
                    admin,
                    json!({"project": {"name": project}}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            r.body["project"]["id"].as_str().unwrap().to_string()
        }
    };
    let u = c
        .post(
            "/identity/v3/users",
            admin,
            json!({"user": {"name": user, "password": "pw", "default_project_id": pid}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::CREATED, "{}", u.body);
    let uid = u.body["user"]["id"].as_str().unwrap().to_string();
    let roles = c
        .get(&format!("/identity/v3/roles?name={role}"), admin)
        .await;
    let rid = roles.body["roles"][0]["id"].as_str().unwrap().to_string();
    let g = c
        .put(
            &format!("/identity/v3/projects/{pid}/users/{uid}/roles/{rid}"),
            admin,
        )
        .await;
    assert_eq!(g.status, StatusCode::NO_CONTENT);
    pid
}

async fn env_with(adjust: impl FnOnce(&mut testkit::Settings)) -> Env {
    let s = Stack::start_with(|st| {
        st.host = HOST.into();
        st.physical_networks = vec![
            ("physnet1".into(), "eth9".into()),
            ("physnet2".into(), "eth8".into()),
        ];
        adjust(st);
    })
    .await;
    let c = s.client();
    let admin = c.admin_token().await;
    let demo = user(&c, &admin, "demo", "alice", "member").await;
    let other = user(&c, &admin, "other", "bob", "member").await;
    user(&c, &admin, "demo", "rita", "reader").await;
    let alice = c.token("alice", "pw", "demo").await;
    let bob = c.token("bob", "pw", "other").await;
    let reader = c.token("rita", "pw", "demo").await;
    Env {
        s,
        c,
        admin,
        alice,
        bob,
        reader,
        demo,
        other,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

impl Env {
    async fn get(&self, tok: &str, path: &str) -> Resp {
        self.c.get(&format!("{V2}{path}"), tok).await
    }
    async fn post(&self, tok: &str, path: &str, body: Value) -> Resp {
        self.c.post(&format!("{V2}{path}"), tok, body).await
    }
    async fn put(&self, tok: &str, path: &str, body: Value) -> Resp {
        self.c
            .call(
                Method::PUT,
                &format!("{V2}{path}"),
                Some(tok),
                &[],
                Some(body),
            )
            .await
    }
    async fn delete(&self, tok: &str, path: &str) -> Resp {
        self.c.delete(&format!("{V2}{path}"), tok).await
    }
    /// POST that must answer 201; returns the entity under `key`.
    async fn create(&self, tok: &str, coll: &str, key: &str, body: Value) -> Value {
        let r = self
            .post(tok, &format!("/{coll}"), json!({ key: body }))
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "POST {coll} {body}: {}",
            r.body
        );
        r.body[key].clone()
    }
    async fn network(&self, tok: &str, name: &str) -> String {
        id(&self
            .create(tok, "networks", "network", json!({"name": name}))
            .await)
    }
    async fn subnet(&self, tok: &str, net: &str, cidr: &str, extra: Value) -> Value {
        let mut b = json!({"network_id": net, "ip_version": 4, "cidr": cidr});
        merge(&mut b, extra);
        self.create(tok, "subnets", "subnet", b).await
    }
    async fn port(&self, tok: &str, net: &str, extra: Value) -> Value {
        let mut b = json!({"network_id": net});
        merge(&mut b, extra);
        self.create(tok, "ports", "port", b).await
    }
    /// A security group named `name`, as `tok` makes it.
    async fn security_group(&self, tok: &str, name: &str) -> Value {
        self.create(
            tok,
            "security-groups",
            "security_group",
            json!({ "name": name }),
        )
        .await
    }
    /// Router `r1` with its gateway on `ext` and a leg on `sub`.
    async fn router(&self, tok: &str, ext: &str, sub: &str) -> String {
        let rid = id(&self
            .create(
                tok,
                "routers",
                "router",
                json!({"name": "r1", "external_gateway_info": {"network_id": ext}}),
            )
            .await);
        let r = self
            .put(
                tok,
                &format!("/routers/{rid}/add_router_interface"),
                json!({"subnet_id": sub}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        rid
    }
    /// The public flat external network with a subnet 203.0.113.0/24
    /// (pool .10–.100), as the admin makes it.
    async fn public(&self) -> (String, String) {
        let net = self
            .create(
                &self.admin,
                "networks",
                "network",
                json!({"name": "public", "router:external": true,
                       "provider:network_type": "flat", "provider:physical_network": "physnet1"}),
            )
            .await;
        let sub = self
            .subnet(
                &self.admin,
                &id(&net),
                "203.0.113.0/24",
                json!({"enable_dhcp": false, "gateway_ip": "203.0.113.1",
                       "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.100"}]}),
            )
            .await;
        (id(&net), id(&sub))
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn merge(a: &mut Value, b: Value) {
    if let (Value::Object(a), Value::Object(b)) = (a, b) {
        a.extend(b);
    }
}

/// Asserts a Neutron error body with `status` and `kind`.
fn err(r: &Resp, status: StatusCode, kind: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["NeutronError"]["type"], kind, "{}", r.body);
    assert!(r.body["NeutronError"]["message"].is_string(), "{}", r.body);
    assert_eq!(r.body["NeutronError"]["detail"], "", "{}", r.body);
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

fn is_neutron_time(s: &str) -> bool {
    s.len() == "2026-11-21T18:00:00Z".len() && s.ends_with('Z') && api::time_fmt::parse(s).is_some()
}

#[tokio::test]
async fn discovery_catalog_and_extensions() {
    let e = env().await;
    let r = e.c.call(Method::GET, "/network", None, &[], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["versions"][0]["id"], "v2.0");
    assert_eq!(r.body["versions"][0]["status"], "CURRENT");
    let tok = e.c.auth_password("alice", "pw", Some("demo")).await;
    let cat = tok.body["token"]["catalog"].as_array().unwrap();
    let net = cat
        .iter()
        .find(|s| s["type"] == "network")
        .expect("network in catalog");
    assert!(net["endpoints"][0]["url"]
        .as_str()
        .unwrap()
        .ends_with("/network"));
    let x = e.get(&e.alice, "/extensions").await;
    assert_eq!(x.status, StatusCode::OK);
    let aliases: HashSet<&str> = x.body["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["alias"].as_str().unwrap())
        .collect();
    for a in [
        "router",
        "security-group",
        "provider",
        "external-net",
        "binding",
        "port-security",
        "allowed-address-pairs",
        "quotas",
        "standard-attr-tag",
        "extraroute",
        "ext-gw-mode",
        "agent",
        "availability_zone",
        "network-ip-availability",
    ] {
        assert!(aliases.contains(a), "{a} missing from {aliases:?}");
    }
    for absent in [
        "external-gateway-multihoming",
        "qos",
        "trunk",
        "extra_dhcp_opt",
        "subnet_allocation",
    ] {
        assert!(
            !aliases.contains(absent),
            "{absent} listed but not implemented"
        );
    }
    let one = e.get(&e.alice, "/extensions/router").await;
    assert_eq!(one.body["extension"]["alias"], "router");
    err(
        &e.get(&e.alice, "/extensions/external-gateway-multihoming")
            .await,
        StatusCode::NOT_FOUND,
        "ExtensionsNotFound",
    );
    let unauth =
        e.c.call(Method::GET, &format!("{V2}/networks"), None, &[], None)
            .await;
    assert_eq!(unauth.status, StatusCode::UNAUTHORIZED);
    assert!(unauth.body["NeutronError"].is_object());
}

#[tokio::test]
async fn networks_crud_with_standard_attributes() {
    let e = env().await;
    let n = e
        .create(
            &e.alice,
            "networks",
            "network",
            json!({"name": "net1", "description": "mine", "tags": ["a", "b"]}),
        )
        .await;
    let nid = id(&n);
    assert_eq!(nid.len(), 36, "dashed UUID");
    assert!(uuid::Uuid::parse_str(&nid).is_ok());
    assert_eq!(n["project_id"], e.demo.as_str());
    assert_eq!(n["tenant_id"], e.demo.as_str());
    assert_eq!(n["status"], "ACTIVE");
    assert_eq!(n["admin_state_up"], true);
    assert_eq!(n["shared"], false);
    assert_eq!(n["router:external"], false);
    assert_eq!(n["mtu"], 1450, "VXLAN tenant network");
    assert_eq!(n["port_security_enabled"], true);
    assert_eq!(n["revision_number"], 1);
    assert_eq!(n["description"], "mine");
    assert_eq!(n["tags"], json!(["a", "b"]));
    assert!(is_neutron_time(n["created_at"].as_str().unwrap()), "{n}");
    assert!(is_neutron_time(n["updated_at"].as_str().unwrap()));
    assert!(
        n.get("provider:network_type").is_none(),
        "members do not see provider attributes"
    );
    let admin_view = e.get(&e.admin, &format!("/networks/{nid}")).await;
    assert_eq!(admin_view.body["network"]["provider:network_type"], "vxlan");
    let vni = admin_view.body["network"]["provider:segmentation_id"]
        .as_i64()
        .unwrap();
    assert!((1000..=1999).contains(&vni), "{vni}");
    let u = e
        .put(
            &e.alice,
            &format!("/networks/{nid}"),
            json!({"network": {"name": "renamed", "admin_state_up": false, "mtu": 1400}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(u.body["network"]["name"], "renamed");
    assert_eq!(u.body["network"]["mtu"], 1400);
    assert_eq!(u.body["network"]["revision_number"], 2);
    err(
        &e.put(
            &e.alice,
            &format!("/networks/{nid}"),
            json!({"network": {"mtu": 9000}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidInput",
    );
    err(
        &e.put(
            &e.alice,
            &format!("/networks/{nid}"),
            json!({"network": {"status": "DOWN"}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &e.put(
            &e.alice,
            &format!("/networks/{nid}"),
            json!({"network": {"shared": true}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    let l = e.get(&e.alice, "/networks?name=renamed").await;
    assert_eq!(ids(&l.body, "networks"), vec![nid.clone()]);
    let d = e.delete(&e.alice, &format!("/networks/{nid}")).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    err(
        &e.get(&e.alice, &format!("/networks/{nid}")).await,
        StatusCode::NOT_FOUND,
        "NetworkNotFound",
    );
    err(
        &e.delete(&e.alice, &format!("/networks/{nid}")).await,
        StatusCode::NOT_FOUND,
        "NetworkNotFound",
    );
}

#[tokio::test]
async fn provider_networks_and_vni_allocation() {
    let e = env_with(|s| s.vni_range = (1000, 1001)).await;
    let mk = |body: Value| e.post(&e.admin, "/networks", json!({ "network": body }));
    let flat = mk(json!({"name": "f", "provider:network_type": "flat", "provider:physical_network": "physnet1"})).await;
    assert_eq!(flat.status, StatusCode::CREATED, "{}", flat.body);
    assert_eq!(flat.body["network"]["mtu"], 1500);
    err(
        &mk(json!({"provider:network_type": "flat", "provider:physical_network": "physnet1"}))
            .await,
        StatusCode::CONFLICT,
        "FlatNetworkInUse",
    );
    err(
        &mk(json!({"provider:network_type": "flat", "provider:physical_network": "nope"})).await,
        StatusCode::BAD_REQUEST,
        "InvalidInput",
    );
    let vlan = mk(json!({"provider:network_type": "vlan", "provider:physical_network": "physnet2", "provider:segmentation_id": 100})).await;
    assert_eq!(vlan.status, StatusCode::CREATED, "{}", vlan.body);
    assert_eq!(vlan.body["network"]["provider:segmentation_id"], 100);
    err(
        &mk(json!({"provider:network_type": "vlan", "provider:physical_network": "physnet2", "provider:segmentation_id": 100})).await,
        StatusCode::CONFLICT,
        "VlanIdInUse",
    );
    err(
        &mk(json!({"provider:network_type": "vlan", "provider:physical_network": "physnet2", "provider:segmentation_id": 5000})).await,
        StatusCode::BAD_REQUEST,
        "InvalidInput",
    );
    let local = mk(json!({"provider:network_type": "local"})).await;
    assert_eq!(local.status, StatusCode::CREATED, "{}", local.body);
    err(
        &mk(json!({"provider:network_type": "gre"})).await,
        StatusCode::BAD_REQUEST,
        "InvalidInput",
    );
    let vx = mk(json!({"provider:network_type": "vxlan", "provider:segmentation_id": 5000})).await;
    assert_eq!(vx.status, StatusCode::CREATED, "{}", vx.body);
    err(
        &mk(json!({"provider:network_type": "vxlan", "provider:segmentation_id": 5000})).await,
        StatusCode::CONFLICT,
        "TunnelIdInUse",
    );
    // Tenant networks take VNIs from the range until it is exhausted.
    let a = e.post(&e.alice, "/networks", json!({"network": {}})).await;
    let b = e.post(&e.alice, "/networks", json!({"network": {}})).await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    let c = e.post(&e.alice, "/networks", json!({"network": {}})).await;
    err(&c, StatusCode::SERVICE_UNAVAILABLE, "NoNetworkAvailable");
    // Deleting one frees its VNI.
    e.delete(&e.alice, &format!("/networks/{}", id(&a.body["network"])))
        .await;
    let d = e.post(&e.alice, "/networks", json!({"network": {}})).await;
    assert_eq!(d.status, StatusCode::CREATED);
    let vnis: HashSet<i64> = e
        .get(&e.admin, "/networks?provider:network_type=vxlan")
        .await
        .body["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["provider:segmentation_id"].as_i64().unwrap())
        .collect();
    assert_eq!(vnis, [1000, 1001, 5000].into_iter().collect());
    // Members may not set provider attributes or make external networks.
    err(
        &e.post(
            &e.alice,
            "/networks",
            json!({"network": {"provider:network_type": "local"}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    err(
        &e.post(
            &e.alice,
            "/networks",
            json!({"network": {"router:external": true}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    err(
        &e.post(&e.alice, "/networks", json!({"network": {"shared": true}}))
            .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    err(
        &e.put(
            &e.admin,
            &format!("/networks/{}", id(&vx.body["network"])),
            json!({"network": {"provider:segmentation_id": 6000}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidInput",
    );
}

#[tokio::test]
async fn subnets_ipv4_and_ipv6() {
    let e = env().await;
    let net = e.network(&e.alice, "n").await;
    let s = e
        .subnet(
            &e.alice,
            &net,
            "10.1.0.0/24",
            json!({"name": "s4", "dns_nameservers": ["10.1.0.53", "8.8.8.8"],
                   "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.1.0.254"}],
                   "allocation_pools": [{"start": "10.1.0.100", "end": "10.1.0.199"}]}),
        )
        .await;
    assert_eq!(s["gateway_ip"], "10.1.0.1");
    assert_eq!(s["enable_dhcp"], true);
    assert_eq!(s["ip_version"], 4);
    assert_eq!(
        s["allocation_pools"],
        json!([{"start": "10.1.0.100", "end": "10.1.0.199"}])
    );
    assert_eq!(s["dns_nameservers"], json!(["10.1.0.53", "8.8.8.8"]));
    assert_eq!(
        s["host_routes"],
        json!([{"destination": "192.168.0.0/16", "nexthop": "10.1.0.254"}])
    );
    assert_eq!(s["subnetpool_id"], Value::Null);
    assert!(s.get("shared").is_none());
    let sid = id(&s);
    // The first DHCP-enabled subnet gets the network its DHCP port.
    let ports = e
        .get(
            &e.admin,
            &format!("/ports?network_id={net}&device_owner=network:dhcp"),
        )
        .await;
    let dhcp = &ports.body["ports"][0];
    assert_eq!(dhcp["fixed_ips"][0]["ip_address"], "10.1.0.100");
    assert_eq!(dhcp["binding:host_id"], HOST);
    let nv = e.get(&e.alice, &format!("/networks/{net}")).await;
    assert_eq!(nv.body["network"]["subnets"], json!([sid]));
    // Default pools skip the network, broadcast and gateway addresses.
    let s2 = e
        .subnet(
            &e.alice,
            &net,
            "10.2.0.0/24",
            json!({"gateway_ip": null, "enable_dhcp": false}),
        )
        .await;
    assert_eq!(s2["gateway_ip"], Value::Null);
    assert_eq!(
        s2["allocation_pools"],
        json!([{"start": "10.2.0.1", "end": "10.2.0.254"}])
    );
    let v6 = e
        .subnet(
            &e.alice,
            &net,
            "fd00:1::/64",
            json!({"ip_version": 6, "ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"}),
        )
        .await;
    assert_eq!(v6["gateway_ip"], "fd00:1::1");
    assert_eq!(v6["ipv6_address_mode"], "slaac");
    let p = e.port(&e.alice, &net, json!({})).await;
    let addrs: Vec<&str> = p["fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["ip_address"].as_str().unwrap())
        .collect();
    assert!(addrs.contains(&"10.1.0.101"), "{addrs:?}");
    assert!(
        addrs
            .iter()
            .any(|a| a.starts_with("fd00:1::") && a.contains("ff:fe")),
        "EUI-64: {addrs:?}"
    );
    let stateful = e
        .subnet(
            &e.alice,
            &net,
            "fd00:2::/64",
            json!({"ip_version": 6, "ipv6_address_mode": "dhcpv6-stateful"}),
        )
        .await;
    assert_eq!(stateful["allocation_pools"][0]["start"], "fd00:2::2");
    let u = e
        .put(
            &e.alice,
            &format!("/subnets/{sid}"),
            json!({"subnet": {"name": "s4b", "dns_nameservers": [], "enable_dhcp": false}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(u.body["subnet"]["dns_nameservers"], json!([]));
    assert_eq!(u.body["subnet"]["revision_number"], 2);
    // Bad input.
    let bad = |body: Value| {
        let mut b = json!({"network_id": net, "ip_version": 4});
        merge(&mut b, body);
        e.post(&e.alice, "/subnets", json!({ "subnet": b }))
    };
    err(
        &bad(json!({"cidr": "10.3.0.5/24"})).await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &bad(json!({"cidr": "10.3.0.0/33"})).await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &bad(json!({"cidr": "10.1.0.128/25"})).await,
        StatusCode::BAD_REQUEST,
        "InvalidInput",
    );
    err(
        &bad(json!({"cidr": "fd00:9::/64"})).await,
        StatusCode::BAD_REQUEST,
        "InvalidInput",
    );
    err(
        &bad(json!({"cidr": "10.4.0.0/24", "ip_version": 5})).await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &bad(json!({"cidr": "10.4.0.0/24", "allocation_pools": [{"start": "10.4.1.1", "end": "10.4.1.9"}]})).await,
        StatusCode::BAD_REQUEST,
        "OutOfBoundsAllocationPool",
    );
    err(
        &bad(json!({"cidr": "10.4.0.0/24", "allocation_pools": [{"start": "10.4.0.1", "end": "10.4.0.9"}]})).await,
        StatusCode::CONFLICT,
        "GatewayConflictWithAllocationPools",
    );
    err(
        &bad(json!({"cidr": "10.4.0.0/24", "gateway_ip": "10.5.0.1"})).await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    );
    err(
        &bad(json!({"cidr": "10.4.0.0/24", "dns_nameservers": ["8.8.8.8", "8.8.8.8"]})).await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &bad(json!({"cidr": "10.4.0.0/24", "dns_nameservers": ["1.1.1.1","1.1.1.2","1.1.1.3","1.1.1.4","1.1.1.5","1.1.1.6"]})).await,
        StatusCode::BAD_REQUEST,
        "DNSNameServersExhausted",
    );
    err(
        &bad(
            json!({"cidr": "10.4.0.0/24", "subnetpool_id": "5e0b4fb2-3e7c-4b5e-9b3c-3c5e8e0f2a11"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "SubnetPoolNotFound",
    );
    // In use while a port holds an address; free once it is gone.
    err(
        &e.delete(&e.alice, &format!("/subnets/{sid}")).await,
        StatusCode::CONFLICT,
        "SubnetInUse",
    );
    assert_eq!(
        e.delete(&e.alice, &format!("/ports/{}", id(&p)))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        e.delete(&e.alice, &format!("/subnets/{sid}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        e.delete(&e.alice, &format!("/networks/{net}")).await.status,
        StatusCode::NO_CONTENT
    );
    let left = e.get(&e.admin, &format!("/ports?network_id={net}")).await;
    assert_eq!(
        left.body["ports"],
        json!([]),
        "the DHCP port went with the network"
    );
}

#[tokio::test]
async fn ports_crud_bindings_security_and_pairs() {
    let e = env().await;
    let net = e.network(&e.alice, "n").await;
    let sub = id(&e
        .subnet(&e.alice, &net, "10.0.0.0/24", json!({"enable_dhcp": false}))
        .await);
    let p = e
        .port(
            &e.alice,
            &net,
            json!({"name": "p1", "device_owner": "compute:nova", "device_id": "vm-1",
                   "dns_name": "vm1",
                   "allowed_address_pairs": [{"ip_address": "10.0.0.200"}, {"ip_address": "10.9.0.0/24", "mac_address": "fa:16:3e:00:00:01"}],
                   "fixed_ips": [{"subnet_id": sub, "ip_address": "10.0.0.10"}]}),
        )
        .await;
    let pid = id(&p);
    let mac = p["mac_address"].as_str().unwrap().to_string();
    assert!(mac.starts_with("fa:16:3e:"), "{mac}");
    assert_eq!(p["status"], "DOWN");
    assert_eq!(
        p["fixed_ips"],
        json!([{"subnet_id": sub, "ip_address": "10.0.0.10"}])
    );
    assert_eq!(p["device_owner"], "compute:nova");
    assert_eq!(
        p["allowed_address_pairs"][0],
        json!({"ip_address": "10.0.0.200", "mac_address": mac})
    );
    assert_eq!(p["port_security_enabled"], true);
    assert_eq!(
        p["security_groups"].as_array().unwrap().len(),
        1,
        "the default group"
    );
    assert_eq!(p["dns_assignment"][0]["hostname"], "vm1");
    assert_eq!(p["binding:vnic_type"], "normal");
    assert!(
        p.get("binding:host_id").is_none(),
        "members do not see bindings"
    );
    err(
        &e.post(
            &e.alice,
            "/ports",
            json!({"port": {"network_id": net, "binding:host_id": HOST}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    let b = e
        .put(
            &e.admin,
            &format!("/ports/{pid}"),
            json!({"port": {"binding:host_id": HOST}}),
        )
        .await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    assert_eq!(b.body["port"]["binding:host_id"], HOST);
    assert_eq!(b.body["port"]["binding:vif_type"], "bridge");
    // Taken address and MAC.
    err(
        &e.post(
            &e.alice,
            "/ports",
            json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.10"}]}}),
        )
        .await,
        StatusCode::CONFLICT,
        "IpAddressAlreadyAllocated",
    );
    err(
        &e.post(
            &e.alice,
            "/ports",
            json!({"port": {"network_id": net, "mac_address": mac}}),
        )
        .await,
        StatusCode::CONFLICT,
        "MacAddressInUse",
    );
    err(
        &e.post(
            &e.alice,
            "/ports",
            json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.7.0.1"}]}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "InvalidIpForNetwork",
    );
    // Change fixed IPs, groups, port security.
    let u = e
        .put(
            &e.alice,
            &format!("/ports/{pid}"),
            json!({"port": {"fixed_ips": [{"subnet_id": sub, "ip_address": "10.0.0.10"}, {"subnet_id": sub}], "name": "p1b"}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(u.body["port"]["fixed_ips"].as_array().unwrap().len(), 2);
    let sg = e.security_group(&e.alice, "web").await;
    let u = e
        .put(
            &e.alice,
            &format!("/ports/{pid}"),
            json!({"port": {"security_groups": [id(&sg)]}}),
        )
        .await;
    assert_eq!(u.body["port"]["security_groups"], json!([id(&sg)]));
    err(
        &e.put(
            &e.alice,
            &format!("/ports/{pid}"),
            json!({"port": {"port_security_enabled": false}}),
        )
        .await,
        StatusCode::CONFLICT,
        "PortSecurityPortHasSecurityGroup",
    );
    let u = e
        .put(
            &e.alice,
            &format!("/ports/{pid}"),
            json!({"port": {"port_security_enabled": false, "security_groups": [], "allowed_address_pairs": []}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(u.body["port"]["port_security_enabled"], false);
    let plain = e
        .port(&e.alice, &net, json!({"port_security_enabled": false}))
        .await;
    assert_eq!(plain["security_groups"], json!([]));
    err(
        &e.post(&e.alice, "/ports", json!({"port": {"network_id": net, "port_security_enabled": false, "allowed_address_pairs": [{"ip_address": "10.0.0.9"}]}})).await,
        StatusCode::CONFLICT,
        "AddressPairAndPortSecurityRequired",
    );
    // Filters on ports.
    let by_ip = e
        .get(&e.alice, "/ports?fixed_ips=ip_address%3D10.0.0.10")
        .await;
    assert_eq!(ids(&by_ip.body, "ports"), vec![pid.clone()]);
    let by_dev = e.get(&e.alice, "/ports?device_id=vm-1").await;
    assert_eq!(ids(&by_dev.body, "ports"), vec![pid.clone()]);
    assert_eq!(
        e.delete(&e.alice, &format!("/ports/{pid}")).await.status,
        StatusCode::NO_CONTENT
    );
    err(
        &e.get(&e.alice, &format!("/ports/{pid}")).await,
        StatusCode::NOT_FOUND,
        "PortNotFound",
    );
}

/// 50 concurrent creates on a /26 get 50 distinct addresses and MACs; the
/// pool then runs out with IpAddressGenerationFailure.
#[tokio::test]
async fn ipam_under_concurrency_never_hands_out_an_address_twice() {
    let e = Arc::new(env().await);
    let net = e.network(&e.alice, "n").await;
    let s = e
        .subnet(
            &e.alice,
            &net,
            "10.20.0.0/26",
            json!({"enable_dhcp": false}),
        )
        .await;
    assert_eq!(
        s["allocation_pools"],
        json!([{"start": "10.20.0.2", "end": "10.20.0.62"}])
    );
    let mut tasks = Vec::new();
    for i in 0..50 {
        let e = e.clone();
        let net = net.clone();
        tasks.push(tokio::spawn(async move {
            let r = e
                .post(
                    &e.alice,
                    "/ports",
                    json!({"port": {"network_id": net, "name": format!("p{i}")}}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            (
                r.body["port"]["fixed_ips"][0]["ip_address"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                r.body["port"]["mac_address"].as_str().unwrap().to_string(),
            )
        }));
    }
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    for t in tasks {
        let (ip, mac) = t.await.unwrap();
        assert!(ips.insert(ip.clone()), "duplicate address {ip}");
        assert!(macs.insert(mac.clone()), "duplicate MAC {mac}");
    }
    assert_eq!(ips.len(), 50);
    // 61 addresses in the pool: 11 more fit, the next does not.
    for _ in 0..11 {
        let r = e
            .post(&e.alice, "/ports", json!({"port": {"network_id": net}}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        assert!(ips.insert(
            r.body["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_string()
        ));
    }
    let r = e
        .post(&e.alice, "/ports", json!({"port": {"network_id": net}}))
        .await;
    err(&r, StatusCode::CONFLICT, "IpAddressGenerationFailure");
    let avail = e
        .get(&e.admin, &format!("/network-ip-availabilities/{net}"))
        .await;
    assert_eq!(avail.body["network_ip_availability"]["total_ips"], 61);
    assert_eq!(avail.body["network_ip_availability"]["used_ips"], 61);
}

/// IPAM hands out the lowest free address of the pools (counting ranges
/// of the `(subnet_id, ip_key)` index): released addresses first, around
/// fixed ones, across pools, until exhaustion; and allocations written
/// before the key existed are keyed at start.
#[tokio::test]
async fn ipam_takes_the_lowest_free_address_of_the_pools() {
    let e = env().await;
    let ctl = e.s.network();
    let net = e.network(&e.alice, "n").await;
    let sub = id(&e
        .subnet(
            &e.alice,
            &net,
            "10.1.0.0/24",
            json!({"enable_dhcp": false, "allocation_pools": [
                {"start": "10.1.0.20", "end": "10.1.0.30"},
                {"start": "10.1.0.10", "end": "10.1.0.12"}]}),
        )
        .await);
    let ip_of = |p: &Value| {
        p["fixed_ips"][0]["ip_address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut ports: HashMap<String, String> = HashMap::new();
    let new_port = |fixed: Option<&str>| {
        let (e, net, sub) = (&e, net.clone(), sub.clone());
        let fixed = fixed.map(str::to_string);
        async move {
            let extra = match fixed {
                Some(ip) => json!({"fixed_ips": [{"subnet_id": sub, "ip_address": ip}]}),
                None => json!({}),
            };
            e.port(&e.alice, &net, extra).await
        }
    };
    let take = async |want: &str, fixed: Option<&str>, ports: &mut HashMap<String, String>| {
        let p = new_port(fixed).await;
        assert_eq!(ip_of(&p), want);
        ports.insert(want.to_string(), id(&p));
    };
    for want in [
        "10.1.0.10",
        "10.1.0.11",
        "10.1.0.12",
        "10.1.0.20",
        "10.1.0.21",
    ] {
        take(want, None, &mut ports).await;
    }
    for ip in ["10.1.0.11", "10.1.0.20", "10.1.0.10"] {
        let pid = ports.remove(ip).unwrap();
        assert_eq!(
            e.delete(&e.alice, &format!("/ports/{pid}")).await.status,
            StatusCode::NO_CONTENT
        );
    }
    for want in ["10.1.0.10", "10.1.0.11", "10.1.0.20", "10.1.0.22"] {
        take(want, None, &mut ports).await;
    }
    take("10.1.0.25", Some("10.1.0.25"), &mut ports).await;
    take("10.1.0.30", Some("10.1.0.30"), &mut ports).await;
    for want in ["10.1.0.23", "10.1.0.24", "10.1.0.26"] {
        take(want, None, &mut ports).await;
    }
    // Allocations from before `ip_key`: a controller starting over the
    // database keys them, and IPAM counts them again.
    store::sqlx::query("UPDATE ip_allocation SET ip_key = NULL")
        .execute(&ctl.pool)
        .await
        .unwrap();
    network::app::Network::new(ctl.pool.clone(), ctl.cfg.clone())
        .await
        .unwrap();
    let unkeyed: (i64,) =
        store::sqlx::query_as("SELECT COUNT(*) FROM ip_allocation WHERE ip_key IS NULL")
            .fetch_one(&ctl.pool)
            .await
            .unwrap();
    assert_eq!(unkeyed.0, 0);
    for want in ["10.1.0.27", "10.1.0.28", "10.1.0.29"] {
        take(want, None, &mut ports).await;
    }
    assert_eq!(ports.len(), 14, "every address of both pools");
    let r = e
        .post(&e.alice, "/ports", json!({"port": {"network_id": net}}))
        .await;
    err(&r, StatusCode::CONFLICT, "IpAddressGenerationFailure");
}

#[tokio::test]
async fn default_security_group_has_exactly_upstreams_rules() {
    let e = env().await;
    let l = e.get(&e.alice, "/security-groups").await;
    assert_eq!(l.status, StatusCode::OK);
    let groups = l.body["security_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "created on first use: {}", l.body);
    let g = &groups[0];
    assert_eq!(g["name"], "default");
    assert_eq!(g["description"], "Default security group");
    assert_eq!(g["project_id"], e.demo.as_str());
    let gid = id(g);
    let mut rules: Vec<(String, String, Value, Value, Value, Value)> = g["security_group_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["direction"].as_str().unwrap().to_string(),
                r["ethertype"].as_str().unwrap().to_string(),
                r["remote_group_id"].clone(),
                r["remote_ip_prefix"].clone(),
                r["protocol"].clone(),
                r["port_range_min"].clone(),
            )
        })
        .collect();
    rules.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        rules,
        vec![
            (
                "egress".into(),
                "IPv4".into(),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null
            ),
            (
                "egress".into(),
                "IPv6".into(),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null
            ),
            (
                "ingress".into(),
                "IPv4".into(),
                json!(gid),
                Value::Null,
                Value::Null,
                Value::Null
            ),
            (
                "ingress".into(),
                "IPv6".into(),
                json!(gid),
                Value::Null,
                Value::Null,
                Value::Null
            ),
        ]
    );
    // Listing again creates nothing more; another project gets its own.
    let again = e.get(&e.alice, "/security-groups").await;
    assert_eq!(again.body["security_groups"].as_array().unwrap().len(), 1);
    let bobs = e.get(&e.bob, "/security-groups").await;
    assert_eq!(bobs.body["security_groups"].as_array().unwrap().len(), 1);
    assert_ne!(id(&bobs.body["security_groups"][0]), gid);
    // A new group gets only the two egress rules.
    let web = e.security_group(&e.alice, "web").await;
    let dirs: Vec<&str> = web["security_group_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["direction"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["egress", "egress"]);
    err(
        &e.post(
            &e.alice,
            "/security-groups",
            json!({"security_group": {"name": "default"}}),
        )
        .await,
        StatusCode::CONFLICT,
        "SecurityGroupDefaultAlreadyExists",
    );
    err(
        &e.delete(&e.alice, &format!("/security-groups/{gid}")).await,
        StatusCode::CONFLICT,
        "SecurityGroupCannotRemoveDefault",
    );
    err(
        &e.put(
            &e.alice,
            &format!("/security-groups/{gid}"),
            json!({"security_group": {"name": "x"}}),
        )
        .await,
        StatusCode::CONFLICT,
        "SecurityGroupCannotUpdateDefault",
    );
    // Rules by protocol name or number, port ranges, remote groups and
    // prefixes, ethertypes.
    let wid = id(&web);
    let rule = |body: Value| {
        let mut b = json!({"security_group_id": wid, "direction": "ingress"});
        merge(&mut b, body);
        e.post(
            &e.alice,
            "/security-group-rules",
            json!({"security_group_rule": b}),
        )
    };
    let r = rule(json!({"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["security_group_rule"]["ethertype"], "IPv4");
    let dup = rule(json!({"protocol": "6", "port_range_min": 22, "port_range_max": 22})).await;
    err(&dup, StatusCode::CONFLICT, "SecurityGroupRuleExists");
    let r = rule(json!({"protocol": 17, "port_range_min": 1000, "port_range_max": 2000, "remote_group_id": gid})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["security_group_rule"]["protocol"], "17");
    let r = rule(json!({"protocol": "icmp", "ethertype": "ipv6", "remote_ip_prefix": "fd00::/64"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["security_group_rule"]["protocol"], "ipv6-icmp");
    assert_eq!(r.body["security_group_rule"]["ethertype"], "IPv6");
    let rid = id(&r.body["security_group_rule"]);
    let full = e.get(&e.alice, &format!("/security-groups/{wid}")).await;
    assert_eq!(
        full.body["security_group"]["security_group_rules"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        e.delete(&e.alice, &format!("/security-group-rules/{rid}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    err(
        &e.get(&e.alice, &format!("/security-group-rules/{rid}"))
            .await,
        StatusCode::NOT_FOUND,
        "SecurityGroupRuleNotFound",
    );
    let by_group = e
        .get(
            &e.alice,
            &format!("/security-group-rules?security_group_id={wid}"),
        )
        .await;
    assert_eq!(
        by_group.body["security_group_rules"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Bob may not see or add to alice's groups.
    err(
        &e.get(&e.bob, &format!("/security-groups/{wid}")).await,
        StatusCode::NOT_FOUND,
        "SecurityGroupNotFound",
    );
    err(
        &e.post(
            &e.bob,
            "/security-group-rules",
            json!({"security_group_rule": {"security_group_id": wid, "direction": "ingress"}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "SecurityGroupNotFound",
    );
    // In use by a port.
    let net = e.network(&e.alice, "n").await;
    e.port(&e.alice, &net, json!({"security_groups": [wid]}))
        .await;
    err(
        &e.delete(&e.alice, &format!("/security-groups/{wid}")).await,
        StatusCode::CONFLICT,
        "SecurityGroupInUse",
    );
}

/// Security checklist item 14: malformed rules and address pairs are
/// refused, and other ports on the host keep getting their updates.
#[tokio::test]
async fn checklist_14_malformed_rules_and_pairs_are_refused() {
    let e = env().await;
    let sg = e.security_group(&e.alice, "g").await;
    let gid = id(&sg);
    let rule = |body: Value| {
        let mut b = json!({"security_group_id": gid, "direction": "ingress"});
        merge(&mut b, body);
        e.post(
            &e.alice,
            "/security-group-rules",
            json!({"security_group_rule": b}),
        )
    };
    err(
        &rule(json!({"remote_ip_prefix": "10.0.0.0/33"})).await,
        StatusCode::BAD_REQUEST,
        "InvalidCIDR",
    );
    err(
        &rule(json!({"remote_ip_prefix": "not-a-cidr"})).await,
        StatusCode::BAD_REQUEST,
        "InvalidCIDR",
    );
    err(
        &rule(json!({"protocol": "tcp", "port_range_min": 200, "port_range_max": 100})).await,
        StatusCode::BAD_REQUEST,
        "SecurityGroupInvalidPortRange",
    );
    err(
        &rule(json!({"protocol": "tcp", "port_range_min": 70000, "port_range_max": 70001})).await,
        StatusCode::BAD_REQUEST,
        "SecurityGroupInvalidPortValue",
    );
    err(
        &rule(json!({"protocol": "bogus"})).await,
        StatusCode::BAD_REQUEST,
        "SecurityGroupRuleInvalidProtocol",
    );
    err(
        &rule(json!({"direction": "sideways"})).await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &rule(json!({"ethertype": "IPv5"})).await,
        StatusCode::BAD_REQUEST,
        "SecurityGroupRuleInvalidEtherType",
    );
    err(
        &rule(json!({"remote_ip_prefix": "fd00::/8"})).await,
        StatusCode::BAD_REQUEST,
        "SecurityGroupRuleParameterConflict",
    );
    let net = e.network(&e.alice, "n").await;
    e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await;
    let pair = |pairs: Value| {
        e.post(
            &e.alice,
            "/ports",
            json!({"port": {"network_id": net, "allowed_address_pairs": pairs}}),
        )
    };
    err(
        &pair(json!([{"ip_address": "0.0.0.0/0"}])).await,
        StatusCode::BAD_REQUEST,
        "AllowedAddressPairsZeroPrefixNotAllowed",
    );
    err(
        &pair(json!([{"ip_address": "::/0"}])).await,
        StatusCode::BAD_REQUEST,
        "AllowedAddressPairsZeroPrefixNotAllowed",
    );
    let many: Vec<Value> = (0..2000)
        .map(|i| json!({"ip_address": format!("10.{}.{}.1", i / 250, i % 250)}))
        .collect();
    err(
        &pair(Value::Array(many)).await,
        StatusCode::BAD_REQUEST,
        "AllowedAddressPairExhausted",
    );
    err(
        &pair(json!([{"ip_address": "10.0.0.300"}])).await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &pair(json!([{"mac_address": "fa:16:3e:00:00:01"}])).await,
        StatusCode::BAD_REQUEST,
        "AllowedAddressPairsMissingIP",
    );
    err(
        &pair(json!([{"ip_address": "10.0.0.5", "mac_address": "01:00:5e:00:00:01"}])).await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &pair(json!([{"ip_address": "10.0.0.5"}, {"ip_address": "10.0.0.5"}])).await,
        StatusCode::BAD_REQUEST,
        "DuplicateAddressPairInRequest",
    );
    // Nothing half-applied; the host's other ports still get updates.
    let ports = e
        .get(&e.alice, &format!("/ports?network_id={net}&device_owner="))
        .await;
    assert_eq!(ports.body["ports"], json!([]));
    let net_ctl = e.s.network();
    let before = net_ctl.host_state(HOST).await.unwrap();
    let p = e
        .port(&e.admin, &net, json!({"binding:host_id": HOST}))
        .await;
    let after = net_ctl.host_state(HOST).await.unwrap();
    assert!(after.revision > before.revision);
    assert!(after.ports.iter().any(|x| x.id == id(&p)));
}

/// Security checklist item 15: control characters in names, descriptions,
/// hostnames, tags and DHCP options are refused.
#[tokio::test]
async fn checklist_15_control_characters_are_refused() {
    let e = env().await;
    let net = e.network(&e.alice, "n").await;
    e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await;
    for (coll, key, body) in [
        ("networks", "network", json!({"name": "a\nb"})),
        ("networks", "network", json!({"name": "bell\u{7}"})),
        (
            "networks",
            "network",
            json!({"description": "esc\u{1b}[31m"}),
        ),
        (
            "subnets",
            "subnet",
            json!({"name": "a\rb", "network_id": net, "ip_version": 4, "cidr": "10.9.0.0/24"}),
        ),
        ("ports", "port", json!({"name": "x\ny", "network_id": net})),
        (
            "ports",
            "port",
            json!({"network_id": net, "dns_name": "host\nname"}),
        ),
        (
            "ports",
            "port",
            json!({"network_id": net, "dns_name": "bad_host!"}),
        ),
        (
            "ports",
            "port",
            json!({"network_id": net, "device_id": "vm\n1"}),
        ),
        (
            "ports",
            "port",
            json!({"network_id": net, "extra_dhcp_opts": [{"opt_name": "domain-name", "opt_value": "a\nb"}]}),
        ),
        ("routers", "router", json!({"name": "r\u{0}"})),
        (
            "security-groups",
            "security_group",
            json!({"name": "g\u{2028}"}),
        ),
        ("networks", "network", json!({"tags": ["t\nx"]})),
        (
            "networks",
            "network",
            json!({"dns_domain": "exa\nmple.org."}),
        ),
    ] {
        let r = e
            .post(&e.alice, &format!("/{coll}"), json!({ key: body }))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{coll} {body}: {}",
            r.body
        );
        assert!(r.body["NeutronError"]["message"].is_string());
        assert!(
            !r.body["NeutronError"]["message"]
                .as_str()
                .unwrap()
                .contains('\n'),
            "messages never echo raw control characters: {}",
            r.body
        );
    }
    let tag =
        e.c.call(
            Method::PUT,
            &format!("{V2}/networks/{net}/tags/a%0Ab"),
            Some(&e.alice),
            &[],
            None,
        )
        .await;
    assert_eq!(tag.status, StatusCode::BAD_REQUEST, "{}", tag.body);
    let ports = e.get(&e.alice, &format!("/ports?network_id={net}")).await;
    assert_eq!(
        ports.body["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["device_owner"] == "")
            .count(),
        0,
        "nothing was created"
    );
}

/// Security checklist item 16: a non-admin may not create (or turn a port
/// into) a `network:*` port, nor plug one into another project's router.
#[tokio::test]
async fn checklist_16_network_owned_ports_need_an_admin() {
    let e = env().await;
    let net = e.network(&e.alice, "n").await;
    e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await;
    let bobs_router = e
        .create(&e.bob, "routers", "router", json!({"name": "rb"}))
        .await;
    for owner in [
        "network:dhcp",
        "network:router_interface",
        "network:router_gateway",
        "network:floatingip",
    ] {
        let r = e
            .post(
                &e.alice,
                "/ports",
                json!({"port": {"network_id": net, "device_owner": owner}}),
            )
            .await;
        err(&r, StatusCode::FORBIDDEN, "PolicyNotAuthorized");
    }
    let r = e
        .post(
            &e.alice,
            "/ports",
            json!({"port": {"network_id": net, "device_owner": "network:router_interface", "device_id": id(&bobs_router)}}),
        )
        .await;
    err(&r, StatusCode::FORBIDDEN, "PolicyNotAuthorized");
    let p = e.port(&e.alice, &net, json!({})).await;
    let r = e
        .put(
            &e.alice,
            &format!("/ports/{}", id(&p)),
            json!({"port": {"device_owner": "network:router_gateway"}}),
        )
        .await;
    err(&r, StatusCode::FORBIDDEN, "PolicyNotAuthorized");
    // Plugging alice's port into bob's router: bob's router is invisible.
    let r = e
        .put(
            &e.alice,
            &format!("/routers/{}/add_router_interface", id(&bobs_router)),
            json!({"port_id": id(&p)}),
        )
        .await;
    err(&r, StatusCode::NOT_FOUND, "RouterNotFound");
    // An admin may.
    let r = e
        .post(&e.admin, "/ports", json!({"port": {"network_id": net, "device_owner": "network:dhcp", "project_id": e.demo}}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Ports owned by routers and floating IPs cannot be deleted directly.
    let (ext, _) = e.public().await;
    let r1 = e
        .create(
            &e.alice,
            "routers",
            "router",
            json!({"name": "r1", "external_gateway_info": {"network_id": ext}}),
        )
        .await;
    let gw = e
        .get(&e.admin, &format!("/ports?device_id={}", id(&r1)))
        .await;
    let gw_id = id(&gw.body["ports"][0]);
    err(
        &e.delete(&e.admin, &format!("/ports/{gw_id}")).await,
        StatusCode::CONFLICT,
        "ServicePortInUse",
    );
}

#[tokio::test]
async fn projects_see_only_their_own_and_shared_or_external_networks() {
    let e = env().await;
    let mine = e.network(&e.alice, "mine").await;
    let sub = id(&e.subnet(&e.alice, &mine, "10.0.0.0/24", json!({})).await);
    let port = id(&e.port(&e.alice, &mine, json!({})).await);
    let router = id(&e
        .create(&e.alice, "routers", "router", json!({"name": "r"}))
        .await);
    let shared = id(&e
        .create(
            &e.admin,
            "networks",
            "network",
            json!({"name": "shared", "shared": true}),
        )
        .await);
    let shared_sub = id(&e.subnet(&e.admin, &shared, "10.50.0.0/24", json!({})).await);
    let (ext, _) = e.public().await;
    // Bob sees none of alice's resources: 404, not 403, and absent from lists.
    for (path, kind) in [
        (format!("/networks/{mine}"), "NetworkNotFound"),
        (format!("/subnets/{sub}"), "SubnetNotFound"),
        (format!("/ports/{port}"), "PortNotFound"),
        (format!("/routers/{router}"), "RouterNotFound"),
    ] {
        err(&e.get(&e.bob, &path).await, StatusCode::NOT_FOUND, kind);
        err(&e.delete(&e.bob, &path).await, StatusCode::NOT_FOUND, kind);
        let coll = path.split('/').nth(1).unwrap();
        let key = coll.trim_end_matches('s');
        err(
            &e.put(&e.bob, &path, json!({ key: {"name": "x"} })).await,
            StatusCode::NOT_FOUND,
            kind,
        );
    }
    let bob_nets = ids(&e.get(&e.bob, "/networks").await.body, "networks");
    assert!(!bob_nets.contains(&mine));
    assert!(bob_nets.contains(&shared), "shared networks are visible");
    assert!(bob_nets.contains(&ext), "external networks are visible");
    assert!(ids(&e.get(&e.bob, "/subnets").await.body, "subnets").contains(&shared_sub));
    assert!(ids(&e.get(&e.bob, "/ports").await.body, "ports").is_empty());
    // Bob may use the shared network, not change it (403: he can see it).
    let bp = e.port(&e.bob, &shared, json!({})).await;
    assert_eq!(bp["project_id"], e.other.as_str());
    err(
        &e.put(
            &e.bob,
            &format!("/networks/{shared}"),
            json!({"network": {"name": "x"}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    err(
        &e.post(
            &e.bob,
            "/subnets",
            json!({"subnet": {"network_id": shared, "ip_version": 4, "cidr": "10.51.0.0/24"}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    // Ports on an external network are for admins (and routers, FIPs).
    err(
        &e.post(&e.bob, "/ports", json!({"port": {"network_id": ext}}))
            .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    // A creator cannot create for another project.
    err(
        &e.post(
            &e.bob,
            "/networks",
            json!({"network": {"project_id": e.demo}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    // Unsharing a network other projects use is refused.
    err(
        &e.put(
            &e.admin,
            &format!("/networks/{shared}"),
            json!({"network": {"shared": false}}),
        )
        .await,
        StatusCode::CONFLICT,
        "InvalidSharedSetting",
    );
    // The reader reads but does not write.
    assert!(ids(&e.get(&e.reader, "/networks").await.body, "networks").contains(&mine));
    err(
        &e.post(&e.reader, "/networks", json!({"network": {}})).await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    err(
        &e.put(
            &e.reader,
            &format!("/networks/{mine}"),
            json!({"network": {"name": "x"}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    // The admin sees everything, including other projects' resources.
    let all = ids(&e.get(&e.admin, "/networks").await.body, "networks");
    assert!(all.contains(&mine) && all.contains(&shared) && all.contains(&ext));
    assert!(ids(&e.get(&e.admin, "/ports").await.body, "ports").contains(&port));
    // Agents, IP availability: admin only; lists are filtered, not refused.
    let agents = e.get(&e.alice, "/agents").await;
    assert_eq!(agents.status, StatusCode::OK, "{}", agents.body);
    assert_eq!(agents.body["agents"], json!([]));
    let avail = e.get(&e.alice, "/network-ip-availabilities").await;
    assert_eq!(avail.body["network_ip_availabilities"], json!([]));
}

#[tokio::test]
async fn routers_interfaces_routes_and_floating_ips() {
    let e = env().await;
    let (ext, ext_sub) = e.public().await;
    let net = e.network(&e.alice, "net1").await;
    let sub = id(&e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await);
    let net2 = e.network(&e.alice, "net2").await;
    let sub2 = id(&e.subnet(&e.alice, &net2, "10.0.2.0/24", json!({})).await);
    let r = e
        .create(&e.alice, "routers", "router", json!({"name": "r1"}))
        .await;
    let rid = id(&r);
    assert_eq!(r["external_gateway_info"], Value::Null);
    assert_eq!(r["status"], "ACTIVE");
    assert_eq!(r["routes"], json!([]));
    // Gateway: only external networks; enable_snat is the admin's.
    err(
        &e.put(
            &e.alice,
            &format!("/routers/{rid}"),
            json!({"router": {"external_gateway_info": {"network_id": net}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    );
    err(
        &e.put(
            &e.alice,
            &format!("/routers/{rid}"),
            json!({"router": {"external_gateway_info": {"network_id": ext, "enable_snat": false}}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    let g = e
        .put(
            &e.alice,
            &format!("/routers/{rid}"),
            json!({"router": {"external_gateway_info": {"network_id": ext}}}),
        )
        .await;
    assert_eq!(g.status, StatusCode::OK, "{}", g.body);
    let gw = &g.body["router"]["external_gateway_info"];
    assert_eq!(gw["network_id"], ext.as_str());
    assert_eq!(gw["enable_snat"], true);
    assert_eq!(gw["external_fixed_ips"][0]["subnet_id"], ext_sub.as_str());
    assert_eq!(gw["external_fixed_ips"][0]["ip_address"], "203.0.113.10");
    // Interface by subnet, then by port.
    let i = e
        .put(
            &e.alice,
            &format!("/routers/{rid}/add_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await;
    assert_eq!(i.status, StatusCode::OK, "{}", i.body);
    assert_eq!(i.body["subnet_id"], sub.as_str());
    assert_eq!(i.body["id"], rid.as_str());
    let leg = i.body["port_id"].as_str().unwrap().to_string();
    let legp = e.get(&e.alice, &format!("/ports/{leg}")).await;
    assert_eq!(
        legp.body["port"]["device_owner"],
        "network:router_interface"
    );
    assert_eq!(legp.body["port"]["fixed_ips"][0]["ip_address"], "10.0.0.1");
    err(
        &e.put(
            &e.alice,
            &format!("/routers/{rid}/add_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    );
    let p2 = e
        .port(
            &e.alice,
            &net2,
            json!({"fixed_ips": [{"subnet_id": sub2, "ip_address": "10.0.2.1"}]}),
        )
        .await;
    let i2 = e
        .put(
            &e.alice,
            &format!("/routers/{rid}/add_router_interface"),
            json!({"port_id": id(&p2)}),
        )
        .await;
    assert_eq!(i2.status, StatusCode::OK, "{}", i2.body);
    assert_eq!(i2.body["subnet_ids"], json!([sub2]));
    // Static routes must go through a connected next hop.
    let ok_route = e
        .put(&e.alice, &format!("/routers/{rid}"), json!({"router": {"routes": [{"destination": "172.16.0.0/16", "nexthop": "10.0.0.254"}]}}))
        .await;
    assert_eq!(ok_route.status, StatusCode::OK, "{}", ok_route.body);
    assert_eq!(
        ok_route.body["router"]["routes"],
        json!([{"destination": "172.16.0.0/16", "nexthop": "10.0.0.254"}])
    );
    err(
        &e.put(&e.alice, &format!("/routers/{rid}"), json!({"router": {"routes": [{"destination": "172.17.0.0/16", "nexthop": "192.0.2.1"}]}})).await,
        StatusCode::BAD_REQUEST,
        "InvalidRoutes",
    );
    let added = e
        .put(&e.alice, &format!("/routers/{rid}/add_extraroutes"), json!({"router": {"routes": [{"destination": "172.18.0.0/16", "nexthop": "10.0.2.254"}]}}))
        .await;
    assert_eq!(
        added.body["router"]["routes"].as_array().unwrap().len(),
        2,
        "{}",
        added.body
    );
    let removed = e
        .put(&e.alice, &format!("/routers/{rid}/remove_extraroutes"), json!({"router": {"routes": [{"destination": "172.18.0.0/16", "nexthop": "10.0.2.254"}]}}))
        .await;
    assert_eq!(
        removed.body["router"]["routes"].as_array().unwrap().len(),
        1
    );
    // Floating IPs.
    let vm = e.port(&e.alice, &net, json!({"name": "vm"})).await;
    let f = e
        .create(
            &e.alice,
            "floatingips",
            "floatingip",
            json!({"floating_network_id": ext}),
        )
        .await;
    let fid = id(&f);
    assert_eq!(f["status"], "DOWN");
    assert_eq!(f["port_id"], Value::Null);
    assert_eq!(f["router_id"], Value::Null);
    assert_eq!(f["floating_ip_address"], "203.0.113.11");
    let a = e
        .put(
            &e.alice,
            &format!("/floatingips/{fid}"),
            json!({"floatingip": {"port_id": id(&vm)}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        a.body["floatingip"]["fixed_ip_address"],
        vm["fixed_ips"][0]["ip_address"]
    );
    assert_eq!(a.body["floatingip"]["router_id"], rid.as_str());
    assert_eq!(a.body["floatingip"]["status"], "ACTIVE");
    let f2 = e
        .post(
            &e.alice,
            "/floatingips",
            json!({"floatingip": {"floating_network_id": ext, "port_id": id(&vm)}}),
        )
        .await;
    err(&f2, StatusCode::CONFLICT, "FloatingIPPortAlreadyAssociated");
    err(
        &e.post(
            &e.alice,
            "/floatingips",
            json!({"floatingip": {"floating_network_id": net}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "BadRequest",
    );
    err(
        &e.post(&e.alice, "/floatingips", json!({"floatingip": {"floating_network_id": ext, "floating_ip_address": "203.0.113.50"}})).await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    // A port on a network no router reaches.
    let net3 = e.network(&e.alice, "net3").await;
    e.subnet(&e.alice, &net3, "10.0.3.0/24", json!({})).await;
    let lonely = e.port(&e.alice, &net3, json!({})).await;
    let f3 = e
        .create(
            &e.alice,
            "floatingips",
            "floatingip",
            json!({"floating_network_id": ext}),
        )
        .await;
    err(
        &e.put(
            &e.alice,
            &format!("/floatingips/{}", id(&f3)),
            json!({"floatingip": {"port_id": id(&lonely)}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "ExternalGatewayForFloatingIPNotFound",
    );
    // What pins what.
    err(
        &e.put(
            &e.alice,
            &format!("/routers/{rid}/remove_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await,
        StatusCode::CONFLICT,
        "RouterInterfaceInUseByFloatingIP",
    );
    err(
        &e.put(
            &e.alice,
            &format!("/routers/{rid}"),
            json!({"router": {"external_gateway_info": {}}}),
        )
        .await,
        StatusCode::CONFLICT,
        "RouterExternalGatewayInUseByFloatingIp",
    );
    err(
        &e.delete(&e.alice, &format!("/routers/{rid}")).await,
        StatusCode::CONFLICT,
        "RouterInUse",
    );
    err(
        &e.delete(&e.alice, &format!("/networks/{net}")).await,
        StatusCode::CONFLICT,
        "NetworkInUse",
    );
    // Disassociate and unwind everything.
    let d = e
        .put(
            &e.alice,
            &format!("/floatingips/{fid}"),
            json!({"floatingip": {"port_id": null}}),
        )
        .await;
    assert_eq!(d.body["floatingip"]["port_id"], Value::Null);
    assert_eq!(d.body["floatingip"]["status"], "DOWN");
    err(
        &e.put(
            &e.alice,
            &format!("/routers/{rid}/remove_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await,
        StatusCode::CONFLICT,
        "RouterInterfaceInUseByRoute",
    );
    let nr = e
        .put(
            &e.alice,
            &format!("/routers/{rid}"),
            json!({"router": {"routes": []}}),
        )
        .await;
    assert_eq!(nr.body["router"]["routes"], json!([]));
    let ri = e
        .put(
            &e.alice,
            &format!("/routers/{rid}/remove_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await;
    assert_eq!(ri.status, StatusCode::OK, "{}", ri.body);
    err(
        &e.get(&e.alice, &format!("/ports/{leg}")).await,
        StatusCode::NOT_FOUND,
        "PortNotFound",
    );
    err(
        &e.put(
            &e.alice,
            &format!("/routers/{rid}/remove_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "RouterInterfaceNotFoundForSubnet",
    );
    let rp = e
        .put(
            &e.alice,
            &format!("/routers/{rid}/remove_router_interface"),
            json!({"port_id": id(&p2)}),
        )
        .await;
    assert_eq!(rp.status, StatusCode::OK, "{}", rp.body);
    assert_eq!(
        e.delete(&e.alice, &format!("/floatingips/{fid}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        e.delete(&e.alice, &format!("/floatingips/{}", id(&f3)))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let cleared = e
        .put(
            &e.alice,
            &format!("/routers/{rid}"),
            json!({"router": {"external_gateway_info": null}}),
        )
        .await;
    assert_eq!(cleared.body["router"]["external_gateway_info"], Value::Null);
    assert_eq!(
        e.delete(&e.alice, &format!("/routers/{rid}")).await.status,
        StatusCode::NO_CONTENT
    );
    let left = e.get(&e.admin, &format!("/ports?network_id={ext}")).await;
    assert_eq!(
        left.body["ports"],
        json!([]),
        "gateway and floating ports are gone"
    );
}

#[tokio::test]
async fn host_state_is_what_the_agent_must_build() {
    let e = env_with(|s| s.tunnel_ip = Some("192.0.2.1".parse().unwrap())).await;
    let ctl = e.s.network();
    ctl.register_host("node-2", "192.0.2.2".parse().unwrap())
        .await
        .unwrap();
    let (ext, _) = e.public().await;
    let net = e.network(&e.alice, "net1").await;
    let sub = id(&e
        .subnet(
            &e.alice,
            &net,
            "10.0.0.0/24",
            json!({"dns_nameservers": ["10.0.0.53"]}),
        )
        .await);
    let rid = e.router(&e.alice, &ext, &sub).await;
    let sg = e.get(&e.alice, "/security-groups").await.body["security_groups"][0].clone();
    let sgid = id(&sg);
    let vm = e
        .port(
            &e.admin,
            &net,
            json!({"project_id": e.demo, "binding:host_id": HOST, "name": "vm",
                                     "allowed_address_pairs": [{"ip_address": "10.0.0.200"}]}),
        )
        .await;
    let remote = e
        .port(
            &e.admin,
            &net,
            json!({"project_id": e.demo, "binding:host_id": "node-2"}),
        )
        .await;
    let f = e
        .create(
            &e.alice,
            "floatingips",
            "floatingip",
            json!({"floating_network_id": ext, "port_id": id(&vm)}),
        )
        .await;

    let st = ctl.host_state(HOST).await.unwrap();
    assert_eq!(st.host, HOST);
    assert_eq!(st.revision, ctl.current_revision());
    // Ports: the VM, the router's two legs, the DHCP port.
    let owners: HashSet<&str> = st.ports.iter().map(|p| p.device_owner.as_str()).collect();
    assert_eq!(
        owners,
        [
            "",
            "network:router_interface",
            "network:router_gateway",
            "network:dhcp"
        ]
        .into_iter()
        .collect()
    );
    assert!(
        !st.ports.iter().any(|p| p.id == id(&remote)),
        "node-2's port is not here"
    );
    let p = st.ports.iter().find(|p| p.id == id(&vm)).unwrap();
    assert_eq!(p.mac, vm["mac_address"].as_str().unwrap());
    assert_eq!(
        p.fixed_ips[0].ip.to_string(),
        vm["fixed_ips"][0]["ip_address"].as_str().unwrap()
    );
    assert!(p.port_security_enabled);
    assert_eq!(p.security_group_ids, vec![sgid.clone()]);
    assert_eq!(p.allowed_address_pairs[0].ip.to_string(), "10.0.0.200/32");
    assert_eq!(p.device_name, format!("tap{}", &id(&vm)[..11]));
    assert_eq!(
        p.hostname,
        format!("host-{}", p.fixed_ips[0].ip.to_string().replace('.', "-"))
    );
    let leg = st
        .ports
        .iter()
        .find(|p| p.device_owner == "network:router_interface")
        .unwrap();
    assert!(!leg.port_security_enabled, "network:* ports are trusted");
    // Networks: the tenant VXLAN network and the external flat one.
    let tn = st.networks.iter().find(|n| n.id == net).unwrap();
    assert!(matches!(tn.segment, netmodel::Segment::Vxlan { vni } if (1000..=1999).contains(&vni)));
    assert_eq!(tn.mtu, 1450);
    assert!(tn.conntrack_zone > 0);
    assert_eq!(tn.subnets[0].id, sub);
    assert_eq!(tn.subnets[0].cidr.to_string(), "10.0.0.0/24");
    assert_eq!(tn.subnets[0].gateway_ip.unwrap().to_string(), "10.0.0.1");
    assert_eq!(
        tn.subnets[0].dhcp_server_ip.unwrap().to_string(),
        "10.0.0.2"
    );
    assert_eq!(tn.subnets[0].dns_nameservers[0].to_string(), "10.0.0.53");
    assert_eq!(tn.remote_ports.len(), 1);
    assert_eq!(
        tn.remote_ports[0].mac,
        remote["mac_address"].as_str().unwrap()
    );
    assert_eq!(tn.remote_ports[0].host_ip.to_string(), "192.0.2.2");
    assert_eq!(
        tn.remote_hosts,
        vec!["192.0.2.2".parse::<std::net::IpAddr>().unwrap()]
    );
    let en = st.networks.iter().find(|n| n.id == ext).unwrap();
    assert!(en.external);
    assert_eq!(
        en.segment,
        netmodel::Segment::Flat {
            physical_network: "physnet1".into(),
            interface: "eth9".into()
        }
    );
    assert_ne!(en.conntrack_zone, tn.conntrack_zone);
    // The router with its gateway, leg and floating IP.
    assert_eq!(st.routers.len(), 1);
    let rt = &st.routers[0];
    assert_eq!(rt.id, rid);
    let gw = rt.gateway.as_ref().unwrap();
    assert_eq!(gw.network_id, ext);
    assert_eq!(gw.ips[0].to_string(), "203.0.113.10/24");
    assert_eq!(gw.nexthop.unwrap().to_string(), "203.0.113.1");
    assert!(gw.enable_snat);
    assert_eq!(rt.interfaces.len(), 1);
    assert_eq!(rt.interfaces[0].ip.to_string(), "10.0.0.1/24");
    assert_eq!(rt.floating_ips.len(), 1);
    assert_eq!(rt.floating_ips[0].id, id(&f));
    assert_eq!(
        rt.floating_ips[0].floating_ip.to_string(),
        f["floating_ip_address"].as_str().unwrap()
    );
    assert_eq!(rt.floating_ips[0].port_id, id(&vm));
    // The default group: upstream's rules, members on every host (with
    // address pairs).
    let g = st.security_groups.iter().find(|g| g.id == sgid).unwrap();
    assert_eq!(g.rules.len(), 4);
    assert!(g
        .rules
        .iter()
        .any(|r| r.direction == netmodel::Direction::Ingress
            && r.remote_group_id.as_deref() == Some(sgid.as_str())));
    let members: HashSet<String> = g.member_ips.iter().map(|i| i.to_string()).collect();
    assert!(members.contains(vm["fixed_ips"][0]["ip_address"].as_str().unwrap()));
    assert!(members.contains(remote["fixed_ips"][0]["ip_address"].as_str().unwrap()));
    assert!(members.contains("10.0.0.200"));
    // node-2 gets its port and the network, no routers, and node-1's ports
    // as remote entries.
    let st2 = ctl.host_state("node-2").await.unwrap();
    assert_eq!(st2.ports.len(), 1);
    assert!(st2.routers.is_empty());
    let tn2 = &st2.networks[0];
    assert_eq!(tn2.conntrack_zone, tn.conntrack_zone);
    assert!(tn2.remote_hosts.contains(&"192.0.2.1".parse().unwrap()));
    // An unknown host has nothing.
    let none = ctl.host_state("nobody").await.unwrap();
    assert!(none.ports.is_empty() && none.networks.is_empty() && none.routers.is_empty());

    // The long poll: at once without `after`; after a change otherwise.
    use netmodel::NetworkControl;
    let ctl2: Arc<dyn NetworkControl> = ctl.clone();
    let rev = st.revision;
    let waiter = tokio::spawn({
        let ctl2 = ctl2.clone();
        async move {
            ctl2.watch(HOST, Some(rev), Duration::from_secs(20))
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "nothing changed yet");
    let newp = e
        .port(
            &e.admin,
            &net,
            json!({"binding:host_id": HOST, "project_id": e.demo}),
        )
        .await;
    let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(woke.revision > rev);
    assert!(woke.ports.iter().any(|p| p.id == id(&newp)));
    let t0 = std::time::Instant::now();
    let idle = ctl2
        .watch(HOST, Some(woke.revision), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(250));
    assert_eq!(idle.revision, woke.revision);
}

/// The controller computes host states from an in-memory copy that it
/// brings up to date from the change journal. After every kind of write,
/// the state from that copy (on this controller, and on a second one
/// sharing the database that only ever reads the journal) equals the state
/// computed from every row.
#[tokio::test]
async fn the_in_memory_host_state_follows_every_kind_of_write() {
    let e = env_with(|s| s.tunnel_ip = Some("192.0.2.1".parse().unwrap())).await;
    let ctl = e.s.network();
    let other = network::app::Network::new(ctl.pool.clone(), ctl.cfg.clone())
        .await
        .unwrap();
    let hosts = [HOST, "node-2"];
    let check = |step: &'static str| {
        let (ctl, other) = (ctl.clone(), other.clone());
        async move {
            for h in hosts {
                let truth = ctl.host_state_from_scratch(h).await.unwrap();
                assert_eq!(ctl.host_state(h).await.unwrap(), truth, "{step}, {h}");
                assert_eq!(
                    other.host_state(h).await.unwrap(),
                    truth,
                    "{step}, {h} (other)"
                );
            }
        }
    };
    check("empty").await;
    ctl.register_host("node-2", "192.0.2.2".parse().unwrap())
        .await
        .unwrap();
    let (ext, _) = e.public().await;
    let net = e.network(&e.alice, "net1").await;
    let sub = id(&e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await);
    check("networks and subnets").await;
    let rid = e.router(&e.alice, &ext, &sub).await;
    check("router with a gateway and a leg").await;
    let vm = id(&e
        .port(
            &e.admin,
            &net,
            json!({"project_id": e.demo, "binding:host_id": HOST}),
        )
        .await);
    let remote = id(&e
        .port(
            &e.admin,
            &net,
            json!({"project_id": e.demo, "binding:host_id": "node-2"}),
        )
        .await);
    check("ports on two hosts").await;
    let upd = |path: String, body: Value| {
        let e = &e;
        async move {
            let r = e.put(&e.admin, &path, body).await;
            assert_eq!(r.status, StatusCode::OK, "PUT {path}: {}", r.body);
        }
    };
    upd(
        format!("/ports/{vm}"),
        json!({"port": {"allowed_address_pairs": [{"ip_address": "10.0.0.200"}],
                        "fixed_ips": [{"subnet_id": sub, "ip_address": "10.0.0.77"}]}}),
    )
    .await;
    check("pairs and fixed IPs").await;
    // Unchanged ports are the same shared values from state to state (the
    // agent compares them by pointer); a changed one is new.
    let before = ctl.host_state(HOST).await.unwrap();
    upd(
        format!("/ports/{vm}"),
        json!({"port": {"name": "renamed", "dns_name": "vm-one"}}),
    )
    .await;
    let after = ctl.host_state(HOST).await.unwrap();
    assert_eq!(before.ports.len(), after.ports.len());
    for (a, b) in before.ports.iter().zip(&after.ports) {
        assert_eq!(Arc::ptr_eq(a, b), a.id != vm, "{}", a.id);
    }
    assert_eq!(
        after.ports.iter().find(|p| p.id == vm).unwrap().hostname,
        "vm-one"
    );
    let sg = e.security_group(&e.alice, "web").await;
    let sgid = id(&sg);
    let rule = e
        .create(
            &e.alice,
            "security-group-rules",
            "security_group_rule",
            json!({"security_group_id": sgid, "direction": "ingress", "protocol": "tcp",
                   "port_range_min": 80, "port_range_max": 80, "remote_group_id": sgid}),
        )
        .await;
    upd(
        format!("/ports/{vm}"),
        json!({"port": {"security_groups": [sgid]}}),
    )
    .await;
    upd(
        format!("/ports/{remote}"),
        json!({"port": {"security_groups": [sgid]}}),
    )
    .await;
    check("a new group with a remote-group rule, two members").await;
    assert_eq!(
        e.delete(&e.alice, &format!("/security-group-rules/{}", id(&rule)))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    check("a rule deleted").await;
    upd(
        format!("/ports/{remote}"),
        json!({"port": {"binding:host_id": HOST}}),
    )
    .await;
    upd(
        format!("/ports/{vm}"),
        json!({"port": {"binding:host_id": "node-2", "device_id": "vm-1",
                        "device_owner": "compute:nova"}}),
    )
    .await;
    check("ports moved between hosts").await;
    let f = e
        .create(
            &e.alice,
            "floatingips",
            "floatingip",
            json!({"floating_network_id": ext, "port_id": remote}),
        )
        .await;
    check("a floating IP").await;
    upd(
        format!("/floatingips/{}", id(&f)),
        json!({"floatingip": {"port_id": null}}),
    )
    .await;
    check("the floating IP disassociated").await;
    // A status report changes no host's state, and fires nothing.
    ctl.apply_port_reports(
        HOST,
        &[netmodel::PortReport {
            port_id: remote.clone(),
            status: netmodel::PortStatus::Active,
            message: None,
        }],
    )
    .await
    .unwrap();
    check("a status report").await;
    ctl.register_host("node-2", "192.0.2.3".parse().unwrap())
        .await
        .unwrap();
    check("a new tunnel address").await;
    upd(
        format!("/subnets/{sub}"),
        json!({"subnet": {"dns_nameservers": ["10.0.0.53"]}}),
    )
    .await;
    upd(
        format!("/networks/{net}"),
        json!({"network": {"admin_state_up": false}}),
    )
    .await;
    upd(
        format!("/routers/{rid}"),
        json!({"router": {"routes": [{"destination": "10.9.0.0/16", "nexthop": "10.0.0.9"}]}}),
    )
    .await;
    check("subnet, network and router attributes").await;
    upd(
        format!("/ports/{remote}"),
        json!({"port": {"port_security_enabled": false, "security_groups": []}}),
    )
    .await;
    check("port security off").await;

    // A journal pruned past a copy: that copy reads everything again.
    let _ = ctl.host_state(HOST).await.unwrap();
    let _ = other.host_state(HOST).await.unwrap();
    let late = id(&e
        .port(
            &e.admin,
            &net,
            json!({"project_id": e.demo, "binding:host_id": HOST}),
        )
        .await);
    ctl.prune_changes(ctl.current_revision()).await.unwrap();
    upd(
        format!("/ports/{remote}"),
        json!({"port": {"name": "after the prune"}}),
    )
    .await;
    check("after pruning").await;
    assert!(ctl
        .host_state(HOST)
        .await
        .unwrap()
        .ports
        .iter()
        .any(|p| p.id == late));

    // Deleting everything.
    for p in [&vm, &remote, &late] {
        assert_eq!(
            e.delete(&e.admin, &format!("/ports/{p}")).await.status,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(
        e.delete(&e.alice, &format!("/floatingips/{}", id(&f)))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    check("ports and the floating IP deleted").await;
    upd(format!("/routers/{rid}"), json!({"router": {"routes": []}})).await;
    upd(
        format!("/routers/{rid}/remove_router_interface"),
        json!({"subnet_id": sub}),
    )
    .await;
    assert_eq!(
        e.delete(&e.alice, &format!("/routers/{rid}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        e.delete(&e.alice, &format!("/networks/{net}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        e.delete(&e.alice, &format!("/security-groups/{sgid}"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    check("router, network and group deleted").await;
    let st = ctl.host_state(HOST).await.unwrap();
    assert!(st.ports.is_empty() && st.routers.is_empty(), "{st:?}");
}

#[tokio::test]
async fn simulated_agent_wires_ports_and_events_are_recorded() {
    let e = env().await;
    let ctl = e.s.network();
    let _agent = network::sim::SimAgent::spawn(ctl.clone(), HOST);
    let net = e.network(&e.alice, "n").await;
    e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await;
    let p = e
        .port(
            &e.alice,
            &net,
            json!({"device_owner": "compute:nova", "device_id": "vm-1"}),
        )
        .await;
    let pid = id(&p);
    assert_eq!(p["status"], "DOWN");
    // Unbound: it stays DOWN.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e.get(&e.alice, &format!("/ports/{pid}")).await.body["port"]["status"],
        "DOWN"
    );
    assert!(ctl.port_events(&pid).await.unwrap().is_empty());
    // Bound to the agent's host: ACTIVE, with a network-vif-plugged event.
    e.put(
        &e.admin,
        &format!("/ports/{pid}"),
        json!({"port": {"binding:host_id": HOST}}),
    )
    .await;
    let mut status = Value::Null;
    for _ in 0..50 {
        status = e.get(&e.alice, &format!("/ports/{pid}")).await.body["port"]["status"].clone();
        if status == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "ACTIVE");
    let events = ctl.port_events(&pid).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, "network-vif-plugged");
    assert_eq!(events[0].status, "completed");
    assert_eq!(events[0].host, HOST);
    // The DHCP port, bound to this host, is wired too.
    let dhcp = e
        .get(
            &e.admin,
            &format!("/ports?network_id={net}&device_owner=network:dhcp"),
        )
        .await;
    assert_eq!(dhcp.body["ports"][0]["status"], "ACTIVE");
    // The agent is alive, with L2, L3, DHCP and metadata functions here.
    let agents = e.get(&e.admin, "/agents").await;
    let kinds: HashSet<&str> = agents.body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["host"] == HOST)
        .map(|a| {
            assert_eq!(a["alive"], true, "{a}");
            a["agent_type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Linux bridge agent",
            "L3 agent",
            "DHCP agent",
            "Metadata agent"
        ]
        .into_iter()
        .collect()
    );
    let one = &agents.body["agents"][0];
    let shown = e.get(&e.admin, &format!("/agents/{}", id(one))).await;
    assert_eq!(shown.body["agent"]["id"], one["id"]);
    // Reports for ports of other hosts are ignored.
    ctl.apply_port_reports(
        "intruder",
        &[netmodel::PortReport {
            port_id: pid.clone(),
            status: netmodel::PortStatus::Error,
            message: None,
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        e.get(&e.alice, &format!("/ports/{pid}")).await.body["port"]["status"],
        "ACTIVE"
    );
}

#[tokio::test]
async fn metadata_is_found_by_network_and_source_address() {
    use netmodel::{MetadataCaller, NetworkControl};
    let e = env().await;
    let ctl = e.s.network();
    let net = e.network(&e.alice, "n").await;
    e.subnet(
        &e.alice,
        &net,
        "10.0.0.0/24",
        json!({"dns_nameservers": ["10.0.0.53"]}),
    )
    .await;
    let p = e
        .port(
            &e.alice,
            &net,
            json!({"device_id": "inst-1", "dns_name": "web1"}),
        )
        .await;
    let ip: std::net::IpAddr = p["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ans = ctl
        .metadata(MetadataCaller {
            network_id: net.clone(),
            ip,
        })
        .await
        .unwrap()
        .expect("a port");
    let doc = |name: &str| {
        ans.openstack
            .iter()
            .find(|(p, _)| p == name)
            .unwrap()
            .1
            .clone()
    };
    let meta = doc("meta_data.json");
    assert_eq!(meta["uuid"], "inst-1");
    assert_eq!(meta["hostname"], "web1");
    assert_eq!(meta["project_id"], e.demo.as_str());
    let nd = doc("network_data.json");
    assert_eq!(nd["links"][0]["vif_id"], id(&p).as_str());
    assert_eq!(nd["links"][0]["ethernet_mac_address"], p["mac_address"]);
    assert_eq!(nd["networks"][0]["type"], "ipv4_dhcp");
    assert_eq!(nd["networks"][0]["network_id"], net.as_str());
    assert_eq!(
        nd["services"],
        json!([{"type": "dns", "address": "10.0.0.53"}])
    );
    // Same address on another network, or an address no port has: nothing.
    let other = e.network(&e.bob, "o").await;
    assert!(ctl
        .metadata(MetadataCaller {
            network_id: other,
            ip
        })
        .await
        .unwrap()
        .is_none());
    let nobody = MetadataCaller {
        network_id: net.clone(),
        ip: "10.0.0.250".parse().unwrap(),
    };
    assert!(ctl.metadata(nobody).await.unwrap().is_none());
    // The DHCP port is no instance.
    let dhcp = MetadataCaller {
        network_id: net,
        ip: "10.0.0.2".parse().unwrap(),
    };
    assert!(ctl.metadata(dhcp).await.unwrap().is_none());
}

#[tokio::test]
async fn lists_filter_sort_page_and_select_fields() {
    let e = env().await;
    for i in 0..5 {
        e.create(&e.alice, "networks", "network", json!({"name": format!("n{i}"), "tags": if i % 2 == 0 { json!(["even"]) } else { json!(["odd"]) }}))
            .await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r = e
        .get(&e.alice, "/networks?sort_key=name&sort_dir=desc")
        .await;
    assert_eq!(names(&r.body), ["n4", "n3", "n2", "n1", "n0"]);
    let r = e
        .get(&e.alice, "/networks?sort_key=name&sort_dir=asc&limit=2")
        .await;
    assert_eq!(names(&r.body), ["n0", "n1"]);
    let next = r.body["networks_links"][0]["href"].as_str().unwrap();
    assert_eq!(r.body["networks_links"][0]["rel"], "next");
    let path = &next[next.find("/network/").unwrap()..];
    let r2 = e.c.get(path, &e.alice).await;
    assert_eq!(names(&r2.body), ["n2", "n3"]);
    let r = e.get(&e.alice, "/networks?tags=even").await;
    assert_eq!(names(&r.body).len(), 3);
    let r = e
        .get(
            &e.alice,
            "/networks?not-tags=even&sort_key=name&sort_dir=asc",
        )
        .await;
    assert_eq!(names(&r.body), ["n1", "n3"]);
    let r = e
        .get(
            &e.alice,
            "/networks?name=n1&name=n2&sort_key=name&sort_dir=asc",
        )
        .await;
    assert_eq!(names(&r.body), ["n1", "n2"]);
    let r = e
        .get(&e.alice, "/networks?fields=id&fields=name&name=n0")
        .await;
    let only = r.body["networks"][0].as_object().unwrap();
    assert_eq!(only.keys().collect::<Vec<_>>(), ["id", "name"]);
    let r = e
        .get(&e.alice, "/networks?admin_state_up=True&shared=false")
        .await;
    assert_eq!(names(&r.body).len(), 5);
    err(
        &e.get(&e.alice, "/networks?bogus=1").await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &e.get(&e.alice, "/networks?sort_key=bogus").await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &e.get(&e.alice, "/networks?limit=x").await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &e.get(&e.alice, "/networks?marker=nope&limit=1").await,
        StatusCode::NOT_FOUND,
        "NotFound",
    );
    let one = e.get(&e.alice, "/networks?name=n0").await;
    let nid = id(&one.body["networks"][0]);
    let f = e
        .get(&e.alice, &format!("/networks/{nid}?fields=name"))
        .await;
    assert_eq!(f.body["network"], json!({"name": "n0"}));
}

#[tokio::test]
async fn tags_quotas_and_availability_zones() {
    let e = env().await;
    let net = e.network(&e.alice, "n").await;
    let tags = |p: &str| format!("{V2}/networks/{net}/tags{p}");
    let r =
        e.c.call(Method::PUT, &tags("/red"), Some(&e.alice), &[], None)
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r =
        e.c.call(Method::GET, &tags("/red"), Some(&e.alice), &[], None)
            .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r =
        e.c.call(Method::GET, &tags("/blue"), Some(&e.alice), &[], None)
            .await;
    err(&r, StatusCode::NOT_FOUND, "TagNotFound");
    let r =
        e.c.call(
            Method::PUT,
            &tags(""),
            Some(&e.alice),
            &[],
            Some(json!({"tags": ["a", "b"]})),
        )
        .await;
    assert_eq!(r.body, json!({"tags": ["a", "b"]}));
    let r = e.c.get(&tags(""), &e.alice).await;
    assert_eq!(r.body, json!({"tags": ["a", "b"]}));
    assert_eq!(
        e.get(&e.alice, &format!("/networks/{net}")).await.body["network"]["tags"],
        json!(["a", "b"])
    );
    let r =
        e.c.call(Method::DELETE, &tags("/a"), Some(&e.alice), &[], None)
            .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r =
        e.c.call(Method::DELETE, &tags(""), Some(&e.alice), &[], None)
            .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(e.c.get(&tags(""), &e.alice).await.body, json!({"tags": []}));
    let r =
        e.c.call(Method::PUT, &tags("/x"), Some(&e.bob), &[], None)
            .await;
    err(&r, StatusCode::NOT_FOUND, "NetworkNotFound");
    let sg = id(&e.get(&e.alice, "/security-groups").await.body["security_groups"][0]);
    let r =
        e.c.call(
            Method::PUT,
            &format!("{V2}/security-groups/{sg}/tags/web"),
            Some(&e.alice),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Quotas: the admin sets, the project hits the limit.
    let q = e.get(&e.admin, &format!("/quotas/{}", e.demo)).await;
    assert_eq!(q.body["quota"]["network"], 100);
    assert_eq!(q.body["quota"]["port"], 500);
    let u = e
        .put(
            &e.admin,
            &format!("/quotas/{}", e.demo),
            json!({"quota": {"network": 2, "router": 0}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(u.body["quota"]["network"], 2);
    let r = e.post(&e.alice, "/networks", json!({"network": {}})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    err(
        &e.post(&e.alice, "/networks", json!({"network": {}})).await,
        StatusCode::CONFLICT,
        "OverQuota",
    );
    err(
        &e.post(&e.alice, "/routers", json!({"router": {}})).await,
        StatusCode::CONFLICT,
        "OverQuota",
    );
    let d = e
        .get(&e.admin, &format!("/quotas/{}/details", e.demo))
        .await;
    assert_eq!(
        d.body["quota"]["network"],
        json!({"limit": 2, "used": 2, "reserved": 0})
    );
    let l = e.get(&e.admin, "/quotas").await;
    assert_eq!(l.body["quotas"][0]["project_id"], e.demo.as_str());
    err(
        &e.put(
            &e.alice,
            &format!("/quotas/{}", e.demo),
            json!({"quota": {"network": 50}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
    );
    err(
        &e.put(
            &e.admin,
            &format!("/quotas/{}", e.demo),
            json!({"quota": {"network": -5}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    err(
        &e.put(
            &e.admin,
            &format!("/quotas/{}", e.demo),
            json!({"quota": {"widgets": 5}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
    assert_eq!(
        e.delete(&e.admin, &format!("/quotas/{}", e.demo))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let r = e.post(&e.alice, "/networks", json!({"network": {}})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let def = e
        .get(&e.admin, &format!("/quotas/{}/default", e.demo))
        .await;
    assert_eq!(def.body["quota"]["security_group_rule"], 100);
    // Availability zones.
    let az = e.get(&e.alice, "/availability_zones").await;
    assert_eq!(
        az.body["availability_zones"],
        json!([{"name": "nova", "resource": "network", "state": "available"},
               {"name": "nova", "resource": "router", "state": "available"}])
    );
    let hinted = e
        .post(
            &e.alice,
            "/networks",
            json!({"network": {"availability_zone_hints": ["nova"]}}),
        )
        .await;
    assert_eq!(
        hinted.body["network"]["availability_zone_hints"],
        json!(["nova"])
    );
    err(
        &e.post(
            &e.alice,
            "/networks",
            json!({"network": {"availability_zone_hints": ["mars"]}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "AvailabilityZoneNotFound",
    );
}

#[tokio::test]
async fn malformed_bodies_get_neutron_errors_and_create_nothing() {
    let e = env().await;
    let net = e.network(&e.alice, "n").await;
    for (body, kind) in [
        (Value::String("{".into()), "MalformedRequestBody"),
        (Value::String("".into()), "MalformedRequestBody"),
        (json!([]), "HTTPBadRequest"),
        (json!({"port": []}), "HTTPBadRequest"),
        // A bulk create is all or nothing: one bad element refuses it.
        (
            json!({"ports": [{"network_id": net}, {"network_id": "nope"}]}),
            "HTTPBadRequest",
        ),
        (json!({"port": {}}), "HTTPBadRequest"),
        (json!({"port": {"network_id": "nope"}}), "HTTPBadRequest"),
        (
            json!({"port": {"network_id": net, "bogus": 1}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "status": "ACTIVE"}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "id": "x"}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "admin_state_up": "maybe"}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "mac_address": "zz:zz"}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "mac_address": "ff:ff:ff:ff:ff:ff"}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "fixed_ips": "10.0.0.1"}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.0.0.01"}]}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "binding:vnic_type": "warp"}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "name": "x".repeat(256)}}),
            "HTTPBadRequest",
        ),
        (
            json!({"port": {"network_id": net, "security_groups": ["not-a-uuid"]}}),
            "HTTPBadRequest",
        ),
    ] {
        let r =
            e.c.call(
                Method::POST,
                &format!("{V2}/ports"),
                Some(&e.alice),
                &[],
                Some(body.clone()),
            )
            .await;
        err(&r, StatusCode::BAD_REQUEST, kind);
        let _ = &body;
    }
    let r =
        e.c.call(
            Method::POST,
            &format!("{V2}/ports"),
            Some(&e.alice),
            &[("content-type", "text/plain")],
            Some(Value::String("x".into())),
        )
        .await;
    assert!(r.status.is_client_error());
    let ports = e.get(&e.admin, &format!("/ports?network_id={net}")).await;
    assert_eq!(ports.body["ports"], json!([]));
    err(
        &e.get(&e.alice, "/networks/00000000-0000-0000-0000-000000000000")
            .await,
        StatusCode::NOT_FOUND,
        "NetworkNotFound",
    );
    let nf = e.get(&e.alice, "/nothing-here").await;
    assert_eq!(nf.status, StatusCode::NOT_FOUND);
    assert!(nf.body["NeutronError"]["type"].is_string());
    let wrong_method =
        e.c.call(
            Method::PATCH,
            &format!("{V2}/networks"),
            Some(&e.alice),
            &[],
            None,
        )
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.body["NeutronError"].is_object());
}

#[tokio::test]
async fn no_route_answers_500_to_junk() {
    let e = env().await;
    let paths = [
        "",
        "/v2.0",
        "/v2.0/",
        "/v2.0/extensions",
        "/v2.0/extensions/x",
        "/v2.0/networks",
        "/v2.0/networks/x",
        "/v2.0/networks/x/tags",
        "/v2.0/networks/x/tags/t",
        "/v2.0/subnets",
        "/v2.0/subnets/x",
        "/v2.0/ports",
        "/v2.0/ports/x",
        "/v2.0/ports/x/tags",
        "/v2.0/security-groups",
        "/v2.0/security-groups/x",
        "/v2.0/security-group-rules",
        "/v2.0/security-group-rules/x",
        "/v2.0/routers",
        "/v2.0/routers/x",
        "/v2.0/routers/x/add_router_interface",
        "/v2.0/routers/x/remove_router_interface",
        "/v2.0/routers/x/add_extraroutes",
        "/v2.0/routers/x/remove_extraroutes",
        "/v2.0/floatingips",
        "/v2.0/floatingips/x",
        "/v2.0/floatingips/x/tags/y",
        "/v2.0/quotas",
        "/v2.0/quotas/x",
        "/v2.0/quotas/x/default",
        "/v2.0/quotas/x/details",
        "/v2.0/agents",
        "/v2.0/agents/x",
        "/v2.0/availability_zones",
        "/v2.0/network-ip-availabilities",
        "/v2.0/network-ip-availabilities/x",
        "/v2.0/nope",
    ];
    let net = e.network(&e.admin, "n").await;
    let bodies = [
        Value::String("".into()),
        Value::String("{".into()),
        json!(null),
        json!({}),
        json!({"network": null, "port": [], "subnet": {"network_id": net, "ip_version": "x", "cidr": 7}}),
        json!({"router": {"external_gateway_info": {"network_id": [1]}, "routes": "x"}, "subnet_id": {}, "port_id": 3}),
        json!({"security_group_rule": {"security_group_id": 1, "protocol": {"x": 1}, "port_range_min": "a"}}),
        json!({"floatingip": {"floating_network_id": net, "port_id": "../../x"}, "quota": {"network": "lots"}, "tags": [[]]}),
    ];
    for p in paths {
        for m in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
        ] {
            for b in &bodies {
                for tok in [&e.admin, &e.alice] {
                    let r =
                        e.c.call(
                            m.clone(),
                            &format!(
                                "/network{p}?limit=-1&marker=%00&sort_key=x&fields=%0A&bogus=1"
                            ),
                            Some(tok),
                            &[],
                            Some(b.clone()),
                        )
                        .await;
                    assert!(
                        !r.status.is_server_error(),
                        "{m} {p} {b}: {} {}",
                        r.status,
                        r.body
                    );
                    if r.status.is_client_error() && m != Method::HEAD {
                        assert!(
                            r.body["NeutronError"]["message"].is_string(),
                            "{m} {p}: error body {}",
                            r.body
                        );
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn migrations_and_state_survive_a_restart() {
    let mut e = env().await;
    let net = e.network(&e.alice, "kept").await;
    e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await;
    let p = e.port(&e.alice, &net, json!({})).await;
    e.s.restart().await;
    let alice = e.c.token("alice", "pw", "demo").await;
    let r = e.c.get(&format!("{V2}/ports/{}", id(&p)), &alice).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["port"]["fixed_ips"], p["fixed_ips"]);
    // The next address is not the restarted one's.
    let p2 =
        e.c.post(
            &format!("{V2}/ports"),
            &alice,
            json!({"port": {"network_id": net}}),
        )
        .await;
    assert_ne!(p2.body["port"]["fixed_ips"], p["fixed_ips"]);
    e.alice = alice;
}

/// An agent whose loop stopped (its supervisor reports it down while it
/// restarts) is listed not alive, and alive again once it is heard from.
#[tokio::test]
async fn an_agent_reported_down_is_not_alive_until_heard_from_again() {
    use netmodel::NetworkControl;
    let e = env().await;
    let ctl = e.s.network();
    let alive = |r: &Resp| -> Vec<bool> {
        r.body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["host"] == HOST)
            .map(|a| a["alive"].as_bool().unwrap())
            .collect()
    };
    NetworkControl::watch(&*ctl, HOST, None, Duration::ZERO)
        .await
        .unwrap();
    let a = alive(&e.get(&e.admin, "/agents").await);
    assert!(a.len() == 4 && a.iter().all(|x| *x), "{a:?}");
    NetworkControl::agent_down(&*ctl, HOST).await.unwrap();
    let a = alive(&e.get(&e.admin, "/agents").await);
    assert!(a.len() == 4 && a.iter().all(|x| !*x), "down: {a:?}");
    NetworkControl::watch(&*ctl, HOST, None, Duration::ZERO)
        .await
        .unwrap();
    let a = alive(&e.get(&e.admin, "/agents").await);
    assert!(a.iter().all(|x| *x), "heard from again: {a:?}");
    // A host never heard from reported down: no agent is made up for it.
    let before = e.get(&e.admin, "/agents").await.body["agents"]
        .as_array()
        .unwrap()
        .len();
    NetworkControl::agent_down(&*ctl, "never-registered-host")
        .await
        .unwrap();
    let r = e.get(&e.admin, "/agents").await;
    let agents = r.body["agents"].as_array().unwrap();
    assert_eq!(agents.len(), before, "{}", r.body);
    assert!(
        agents.iter().all(|a| a["host"] != "never-registered-host"),
        "{}",
        r.body
    );
}

// -- issue 10: what real clients hit ------------------------------------------

/// The extensions clients probe are listed (the old `tag` alias, the
/// service providers, floating IP port details, subnets of external
/// networks), `/service-providers` answers, and a body that is not JSON
/// gets Neutron's 415 (webob's `HTTPUnsupportedMediaType`).
#[tokio::test]
async fn extensions_service_providers_and_unsupported_media_type() {
    let e = env().await;
    let x = e.get(&e.alice, "/extensions").await;
    let aliases: HashSet<&str> = x.body["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alias"].as_str().unwrap())
        .collect();
    for a in [
        "tag",
        "standard-attr-tag",
        "tag-creation",
        "fip-port-details",
        "service-type",
        "subnet-external-network",
    ] {
        assert!(aliases.contains(a), "{a} missing from {aliases:?}");
        let one = e.get(&e.alice, &format!("/extensions/{a}")).await;
        assert_eq!(one.status, StatusCode::OK, "{a}: {}", one.body);
        assert_eq!(one.body["extension"]["alias"], a);
    }
    let sp = e.get(&e.alice, "/service-providers").await;
    assert_eq!(sp.status, StatusCode::OK, "{}", sp.body);
    assert_eq!(
        sp.body,
        json!({"service_providers": [
            {"service_type": "L3_ROUTER_NAT", "name": "single_node", "default": false}
        ]})
    );
    let none = e
        .get(&e.alice, "/service-providers?service_type=LOADBALANCERV2")
        .await;
    assert_eq!(none.body["service_providers"], json!([]));
    let r =
        e.c.call_raw(
            Method::POST,
            &format!("{V2}/networks"),
            Some(&e.alice),
            &[("content-type", "text/plain")],
            bytes::Bytes::from_static(b"{\"network\": {}}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body = r.json();
    assert_eq!(
        body["NeutronError"]["type"], "HTTPUnsupportedMediaType",
        "{body}"
    );
    assert!(body["NeutronError"]["message"].is_string(), "{body}");
    assert_eq!(body["NeutronError"]["detail"], "");
    assert!(e.get(&e.alice, "/networks").await.body["networks"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// Lists checked by policy are filtered item by item: a member gets 200
/// and what it may see (no agents), never 403.
#[tokio::test]
async fn policy_checked_lists_are_filtered_not_refused() {
    let e = env().await;
    for tok in [&e.alice, &e.reader] {
        let r = e.get(tok, "/agents").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body, json!({"agents": []}));
        let r = e.get(tok, &format!("/agents?host={HOST}&fields=id")).await;
        assert_eq!(r.body, json!({"agents": []}));
    }
    let all = e.get(&e.admin, "/agents").await;
    assert!(!all.body["agents"].as_array().unwrap().is_empty());
    // One agent is still the admin's to read: to others it does not exist.
    let one = id(&all.body["agents"][0]);
    err(
        &e.get(&e.alice, &format!("/agents/{one}")).await,
        StatusCode::NOT_FOUND,
        "AgentNotFound",
    );
    assert_eq!(
        e.get(&e.admin, &format!("/agents/{one}")).await.status,
        StatusCode::OK
    );
}

/// `tag-creation`: POST …/tags adds the tags to those present (201 with
/// the request's tags) on every taggable collection, with the rights of
/// the other tag writes, and all or nothing against the per-resource limit.
#[tokio::test]
async fn tags_are_added_with_post_on_every_collection() {
    let e = env().await;
    let (ext, _) = e.public().await;
    let net = e.network(&e.alice, "n").await;
    let sub = id(&e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await);
    let port = id(&e.port(&e.alice, &net, json!({})).await);
    let router = e.router(&e.alice, &ext, &sub).await;
    let sg = id(&e.security_group(&e.alice, "web").await);
    let fip = id(&e
        .create(
            &e.alice,
            "floatingips",
            "floatingip",
            json!({"floating_network_id": ext}),
        )
        .await);
    for (coll, rid, missing) in [
        ("networks", &net, "NetworkNotFound"),
        ("subnets", &sub, "SubnetNotFound"),
        ("ports", &port, "PortNotFound"),
        ("routers", &router, "RouterNotFound"),
        ("security-groups", &sg, "SecurityGroupNotFound"),
        ("floatingips", &fip, "FloatingIPNotFound"),
    ] {
        let path = format!("{V2}/{coll}/{rid}/tags");
        let r =
            e.c.call(
                Method::PUT,
                &format!("{path}/old"),
                Some(&e.alice),
                &[],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{coll}: {}", r.body);
        // Added, not replaced: "old" stays though the body lacks it.
        let r = e.c.post(&path, &e.alice, json!({"tags": ["new"]})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{coll}: {}", r.body);
        assert_eq!(r.body, json!({"tags": ["new"]}), "{coll}");
        assert_eq!(
            e.c.get(&path, &e.alice).await.body,
            json!({"tags": ["new", "old"]}),
            "{coll}"
        );
        let r =
            e.c.post(&path, &e.alice, json!({"tags": ["red", "old", "blue"]}))
                .await;
        assert_eq!(r.status, StatusCode::CREATED, "{coll}: {}", r.body);
        let mut echoed: Vec<String> = serde_json::from_value(r.body["tags"].clone()).expect("tags");
        echoed.sort();
        assert_eq!(echoed, ["blue", "old", "red"], "{coll}");
        assert_eq!(
            e.c.get(&path, &e.alice).await.body,
            json!({"tags": ["blue", "new", "old", "red"]}),
            "{coll}"
        );
        // Another project cannot see it: 404; the project's reader may see
        // it but not change it: 403. Neither changes anything.
        err(
            &e.c.post(&path, &e.bob, json!({"tags": ["x"]})).await,
            StatusCode::NOT_FOUND,
            missing,
        );
        err(
            &e.c.post(&path, &e.reader, json!({"tags": ["x"]})).await,
            StatusCode::FORBIDDEN,
            "PolicyNotAuthorized",
        );
        // Bad bodies and the limit: 400, and nothing added.
        for bad in [
            json!({"tags": "x"}),
            json!({}),
            json!({"tags": ["a"], "x": 1}),
            // Neutron's validate_list_of_unique_strings: no duplicates.
            json!({"tags": ["dup", "dup"]}),
        ] {
            let r = e.c.post(&path, &e.alice, bad).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{coll}: {}", r.body);
            assert!(r.body["NeutronError"]["type"].is_string(), "{}", r.body);
        }
        // The same for PUT of the whole set.
        let r =
            e.c.call(
                Method::PUT,
                &path,
                Some(&e.alice),
                &[],
                Some(json!({"tags": ["dup", "x", "dup"]})),
            )
            .await;
        err(&r, StatusCode::BAD_REQUEST, "HTTPBadRequest");
        assert_eq!(
            r.body["NeutronError"]["message"],
            "Invalid input for tags. Reason: Duplicate items in the list: 'dup'."
        );
        let many: Vec<String> = (0..47).map(|i| format!("t{i}")).collect();
        let r = e.c.post(&path, &e.alice, json!({ "tags": many })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{coll}: {}", r.body);
        assert_eq!(
            e.c.get(&path, &e.alice).await.body,
            json!({"tags": ["blue", "new", "old", "red"]}),
            "{coll}"
        );
    }
}

/// Tag writes check policy on the row they load inside their transaction:
/// racing a delete, a tag write either lands before it (and goes with the
/// resource) or answers 404; it never leaves tags of a resource that is
/// gone.
#[tokio::test]
async fn tag_writes_racing_a_delete_leave_no_orphan_tags() {
    let e = env().await;
    let net_svc = e.s.network();
    for i in 0..40 {
        let net = e.network(&e.alice, &format!("n{i}")).await;
        let put_path = format!("{V2}/networks/{net}/tags");
        let del_path = format!("/networks/{net}");
        let (d, t) = tokio::join!(e.delete(&e.alice, &del_path), async {
            e.c.call(
                Method::PUT,
                &put_path,
                Some(&e.alice),
                &[],
                Some(json!({"tags": ["a", "b"]})),
            )
            .await
        });
        assert_eq!(d.status, StatusCode::NO_CONTENT, "{}", d.body);
        assert!(
            t.status == StatusCode::OK || t.status == StatusCode::NOT_FOUND,
            "{} {}",
            t.status,
            t.body
        );
        let left = network::store::misc::tags(&net_svc.pool, "networks", &net)
            .await
            .expect("tags");
        assert!(left.is_empty(), "iteration {i}: orphan tags {left:?}");
    }
}

/// A router gateway on an external network without a subnet is accepted
/// with no addresses (current Neutron); the network's first subnet gives it
/// one.
#[tokio::test]
async fn router_gateway_on_an_external_network_without_subnet() {
    let e = env().await;
    let ext = id(&e
        .create(
            &e.admin,
            "networks",
            "network",
            json!({"name": "bare", "router:external": true}),
        )
        .await);
    let r = e
        .create(
            &e.alice,
            "routers",
            "router",
            json!({"name": "r", "external_gateway_info": {"network_id": ext}}),
        )
        .await;
    assert_eq!(r["external_gateway_info"]["network_id"], ext.as_str());
    assert_eq!(r["external_gateway_info"]["external_fixed_ips"], json!([]));
    let rid = id(&r);
    // Cleared and set again through an update, too.
    let u = e
        .put(
            &e.alice,
            &format!("/routers/{rid}"),
            json!({"router": {"external_gateway_info": {}}}),
        )
        .await;
    assert_eq!(u.body["router"]["external_gateway_info"], Value::Null);
    let u = e
        .put(
            &e.alice,
            &format!("/routers/{rid}"),
            json!({"router": {"external_gateway_info": {"network_id": ext}}}),
        )
        .await;
    assert_eq!(u.status, StatusCode::OK, "{}", u.body);
    assert_eq!(
        u.body["router"]["external_gateway_info"]["external_fixed_ips"],
        json!([])
    );
    let sub = e
        .subnet(
            &e.admin,
            &ext,
            "198.51.100.0/24",
            json!({"enable_dhcp": false}),
        )
        .await;
    let shown = e.get(&e.alice, &format!("/routers/{rid}")).await;
    let ips = &shown.body["router"]["external_gateway_info"]["external_fixed_ips"];
    assert_eq!(ips.as_array().map(Vec::len), Some(1), "{ips}");
    assert_eq!(ips[0]["subnet_id"], sub["id"]);
}

/// `fip-port-details`: a floating IP shows its port's details, `null` when
/// it is not associated.
#[tokio::test]
async fn floating_ips_show_their_port_details() {
    let e = env().await;
    let (ext, _) = e.public().await;
    let net = e.network(&e.alice, "n").await;
    let sub = id(&e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await);
    e.router(&e.alice, &ext, &sub).await;
    let vm = e
        .port(
            &e.alice,
            &net,
            json!({"name": "vm", "device_id": "d1", "device_owner": "compute:nova"}),
        )
        .await;
    let f = e
        .create(
            &e.alice,
            "floatingips",
            "floatingip",
            json!({"floating_network_id": ext}),
        )
        .await;
    assert!(f.as_object().unwrap().contains_key("port_details"), "{f}");
    assert_eq!(f["port_details"], Value::Null);
    let fid = id(&f);
    let a = e
        .put(
            &e.alice,
            &format!("/floatingips/{fid}"),
            json!({"floatingip": {"port_id": id(&vm)}}),
        )
        .await;
    let want = json!({
        "name": "vm",
        "network_id": net,
        "mac_address": vm["mac_address"],
        "admin_state_up": true,
        "status": vm["status"],
        "device_id": "d1",
        "device_owner": "compute:nova",
    });
    assert_eq!(a.body["floatingip"]["port_details"], want);
    let shown = e.get(&e.alice, &format!("/floatingips/{fid}")).await;
    assert_eq!(shown.body["floatingip"]["port_details"], want);
    let listed = e
        .get(&e.alice, "/floatingips?fields=id&fields=port_details")
        .await;
    assert_eq!(listed.body["floatingips"][0]["port_details"], want);
    // Shown, but neither a filter nor a sort key (no `is_filter` upstream;
    // `filter-validation` answers 400).
    for q in ["port_details=", "port_details=x", "sort_key=port_details"] {
        err(
            &e.get(&e.alice, &format!("/floatingips?{q}")).await,
            StatusCode::BAD_REQUEST,
            "HTTPBadRequest",
        );
    }
    err(
        &e.post(
            &e.alice,
            "/floatingips",
            json!({"floatingip": {"floating_network_id": ext, "port_details": {}}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
    );
}

/// `subnet-external-network`: the subnets of an external network that is
/// not shared are readable by every project, in lists and shown alike, and
/// say `router:external`.
#[tokio::test]
async fn subnets_of_external_networks_are_readable_and_say_so() {
    let e = env().await;
    let (ext, ext_sub) = e.public().await;
    let mine = e.network(&e.alice, "mine").await;
    let my_sub = id(&e.subnet(&e.alice, &mine, "10.0.0.0/24", json!({})).await);
    let listed = e.get(&e.bob, &format!("/subnets?network_id={ext}")).await;
    assert_eq!(ids(&listed.body, "subnets"), [ext_sub.as_str()]);
    assert_eq!(listed.body["subnets"][0]["router:external"], true);
    let shown = e.get(&e.bob, &format!("/subnets/{ext_sub}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(shown.body["subnet"]["router:external"], true);
    let own = e.get(&e.alice, &format!("/subnets/{my_sub}")).await;
    assert_eq!(own.body["subnet"]["router:external"], false);
    let only_ext = e.get(&e.alice, "/subnets?router:external=true").await;
    assert_eq!(ids(&only_ext.body, "subnets"), [ext_sub.as_str()]);
    // Other projects' private subnets stay hidden.
    err(
        &e.get(&e.bob, &format!("/subnets/{my_sub}")).await,
        StatusCode::NOT_FOUND,
        "SubnetNotFound",
    );
}

/// Deleting an external network deletes the floating IPs allocated from it
/// that are not associated; an associated one still makes it 409, and then
/// nothing is deleted.
#[tokio::test]
async fn deleting_an_external_network_takes_its_unassociated_floating_ips() {
    let e = env().await;
    let (ext, _) = e.public().await;
    let net = e.network(&e.alice, "n").await;
    let sub = id(&e.subnet(&e.alice, &net, "10.0.0.0/24", json!({})).await);
    let rid = e.router(&e.alice, &ext, &sub).await;
    let vm = id(&e.port(&e.alice, &net, json!({})).await);
    let free = id(&e
        .create(
            &e.alice,
            "floatingips",
            "floatingip",
            json!({"floating_network_id": ext}),
        )
        .await);
    let bound = id(&e
        .create(
            &e.alice,
            "floatingips",
            "floatingip",
            json!({"floating_network_id": ext, "port_id": vm}),
        )
        .await);
    // Associated (and a router gateway): refused, and nothing goes.
    err(
        &e.delete(&e.admin, &format!("/networks/{ext}")).await,
        StatusCode::CONFLICT,
        "NetworkInUse",
    );
    assert_eq!(
        e.get(&e.alice, &format!("/floatingips/{free}"))
            .await
            .status,
        StatusCode::OK
    );
    // Disassociate, drop the router: only unassociated floating IPs are
    // left, and they go with the network.
    let d = e
        .put(
            &e.alice,
            &format!("/floatingips/{bound}"),
            json!({"floatingip": {"port_id": null}}),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK, "{}", d.body);
    let r = e
        .put(
            &e.alice,
            &format!("/routers/{rid}/remove_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        e.delete(&e.alice, &format!("/routers/{rid}")).await.status,
        StatusCode::NO_CONTENT
    );
    let del = e.delete(&e.admin, &format!("/networks/{ext}")).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT, "{}", del.body);
    for f in [&free, &bound] {
        err(
            &e.get(&e.alice, &format!("/floatingips/{f}")).await,
            StatusCode::NOT_FOUND,
            "FloatingIPNotFound",
        );
    }
    assert_eq!(
        e.get(&e.admin, &format!("/ports?network_id={ext}"))
            .await
            .body["ports"],
        json!([])
    );
}

/// Filters and sort keys on attributes the caller may not read are
/// ignored for that caller, so they cannot be used to probe the values;
/// the admin's still apply.
#[tokio::test]
async fn hidden_attributes_cannot_be_probed_through_filters_or_sorting() {
    let e = env().await;
    let n1 = e.network(&e.alice, "a").await;
    let n2 = e.network(&e.alice, "b").await;
    let vni = |v: &Value| v["network"]["provider:segmentation_id"].as_i64().unwrap();
    let v1 = vni(&e.get(&e.admin, &format!("/networks/{n1}")).await.body);
    let mut mine = vec![n1.clone(), n2.clone()];
    mine.sort();
    for q in [
        format!("provider:segmentation_id={v1}"),
        "provider:segmentation_id=1".to_string(),
        "provider:network_type=flat".to_string(),
        "provider:physical_network=physnet1".to_string(),
    ] {
        let r = e.get(&e.alice, &format!("/networks?{q}")).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.body);
        let mut got = ids(&r.body, "networks");
        got.sort();
        assert_eq!(got, mine, "{q} must be ignored for a member");
        assert!(r.body["networks"][0]
            .get("provider:segmentation_id")
            .is_none());
    }
    // Sorting by a hidden key is ignored too: the order is the default
    // one whatever the direction.
    let asc = e
        .get(
            &e.alice,
            "/networks?sort_key=provider:segmentation_id&sort_dir=asc",
        )
        .await;
    let desc = e
        .get(
            &e.alice,
            "/networks?sort_key=provider:segmentation_id&sort_dir=desc",
        )
        .await;
    assert_eq!(asc.status, StatusCode::OK, "{}", asc.body);
    assert_eq!(ids(&asc.body, "networks"), ids(&desc.body, "networks"));
    // `fields` naming a hidden attribute shows nothing of it.
    let f = e
        .get(
            &e.alice,
            "/networks?fields=id&fields=provider:segmentation_id",
        )
        .await;
    assert!(f.body["networks"][0]
        .get("provider:segmentation_id")
        .is_none());
    // The admin's filters apply.
    let r = e
        .get(
            &e.admin,
            &format!("/networks?provider:segmentation_id={v1}"),
        )
        .await;
    assert_eq!(ids(&r.body, "networks"), [n1.as_str()]);
    // Ports: the binding attributes.
    e.subnet(&e.alice, &n1, "10.0.0.0/24", json!({})).await;
    let p = id(&e.port(&e.alice, &n1, json!({})).await);
    for q in [
        "binding:host_id=nowhere",
        "binding:vif_type=ovs",
        "binding:profile=x",
    ] {
        let r = e.get(&e.alice, &format!("/ports?device_owner=&{q}")).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.body);
        assert_eq!(ids(&r.body, "ports"), [p.as_str()], "{q}");
    }
    let r = e
        .get(&e.admin, &format!("/ports?id={p}&binding:host_id=nowhere"))
        .await;
    assert_eq!(r.body["ports"], json!([]));
}

/// Bulk create (`{"networks": [...]}`, `{"subnets": [...]}`,
/// `{"ports": [...]}`): 201 with every resource, in one transaction, so a
/// bad element — refused by the parser, by policy, by IPAM, by the quota —
/// creates nothing.
#[tokio::test]
async fn bulk_create_makes_all_or_nothing() {
    let e = env().await;
    let names = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {v}"))
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r = e
        .post(
            &e.alice,
            "/networks",
            json!({"networks": [{"name": "b1"}, {"network": {"name": "b2"}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(names(&r.body, "networks"), ["b1", "b2"]);
    assert!(r.body["networks"][0]
        .get("provider:segmentation_id")
        .is_none());
    let (n1, n2) = (id(&r.body["networks"][0]), id(&r.body["networks"][1]));
    let r = e
        .post(
            &e.alice,
            "/subnets",
            json!({"subnets": [
                {"name": "s1", "network_id": n1, "ip_version": 4, "cidr": "10.1.0.0/24"},
                {"name": "s2", "network_id": n2, "ip_version": 4, "cidr": "10.2.0.0/24"},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(names(&r.body, "subnets"), ["s1", "s2"]);
    let r = e
        .post(
            &e.alice,
            "/ports",
            json!({"ports": [
                {"name": "p1", "network_id": n1},
                {"name": "p2", "network_id": n1},
                {"name": "p3", "network_id": n2},
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(names(&r.body, "ports"), ["p1", "p2", "p3"]);
    let ip = |i: usize| r.body["ports"][i]["fixed_ips"][0]["ip_address"].clone();
    assert_ne!(ip(0), ip(1), "{}", r.body);
    assert!(r.body["ports"][0].get("binding:host_id").is_none());
    let taken = ip(0);

    // Each failure below leaves nothing of its batch.
    let count = |coll: &'static str| {
        let e = &e;
        async move {
            e.get(&e.admin, &format!("/{coll}")).await.body[coll]
                .as_array()
                .unwrap()
                .len()
        }
    };
    let before = (
        count("networks").await,
        count("subnets").await,
        count("ports").await,
    );
    let refused = [
        // The parser: the second element is malformed.
        (
            "/networks",
            json!({"networks": [{"name": "x1"}, {"name": "x2", "mtu": "big"}]}),
            StatusCode::BAD_REQUEST,
        ),
        // Policy: members may not set provider attributes.
        (
            "/networks",
            json!({"networks": [{"name": "x1"}, {"name": "x2", "provider:network_type": "vxlan"}]}),
            StatusCode::FORBIDDEN,
        ),
        // The subnets of one batch see each other: overlap.
        (
            "/subnets",
            json!({"subnets": [
                {"network_id": n1, "ip_version": 4, "cidr": "10.3.0.0/24"},
                {"network_id": n1, "ip_version": 4, "cidr": "10.3.0.0/25"},
            ]}),
            StatusCode::BAD_REQUEST,
        ),
        // IPAM: an address already taken, and one taken twice in the batch.
        (
            "/ports",
            json!({"ports": [
                {"name": "x1", "network_id": n1},
                {"name": "x2", "network_id": n1, "fixed_ips": [{"ip_address": taken}]},
            ]}),
            StatusCode::CONFLICT,
        ),
        (
            "/ports",
            json!({"ports": [
                {"name": "x1", "network_id": n2, "fixed_ips": [{"ip_address": "10.2.0.99"}]},
                {"name": "x2", "network_id": n2, "fixed_ips": [{"ip_address": "10.2.0.99"}]},
            ]}),
            StatusCode::CONFLICT,
        ),
        // Shapes.
        ("/ports", json!({"ports": []}), StatusCode::BAD_REQUEST),
        (
            "/ports",
            json!({"ports": {"network_id": n1}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/ports",
            json!({"ports": [{"network_id": n1}], "x": 1}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, body, status) in refused {
        let r = e.post(&e.alice, path, body.clone()).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        assert!(r.body["NeutronError"]["type"].is_string(), "{}", r.body);
    }
    // The quota counts the whole batch (the project's usage, not the
    // cloud's: the admin's list would count other projects' ports too).
    let d = e
        .get(&e.admin, &format!("/quotas/{}/details", e.demo))
        .await;
    let used = d.body["quota"]["port"]["used"]
        .as_i64()
        .unwrap_or_else(|| panic!("port used in {}", d.body));
    let q = e
        .put(
            &e.admin,
            &format!("/quotas/{}", e.demo),
            json!({"quota": {"port": used + 1}}),
        )
        .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.body);
    err(
        &e.post(
            &e.alice,
            "/ports",
            json!({"ports": [{"network_id": n1}, {"network_id": n1}]}),
        )
        .await,
        StatusCode::CONFLICT,
        "OverQuota",
    );
    let after = (
        count("networks").await,
        count("subnets").await,
        count("ports").await,
    );
    assert_eq!(before, after, "a refused batch created something");
}

/// A bulk create checks the quota once per project for the whole batch
/// before doing any element's work (Neutron reserves the batch's quota
/// before the plugin runs): a batch over quota answers OverQuota even when
/// a later element would fail the plugin's checks (an unknown availability
/// zone, a CIDR of the other IP version, an address taken), and nothing is
/// created.
#[tokio::test]
async fn bulk_create_checks_quota_for_the_batch_up_front() {
    let e = env().await;
    let n = e.network(&e.alice, "q").await;
    e.subnet(&e.alice, &n, "10.9.0.0/24", json!({})).await;
    let port = e.port(&e.alice, &n, json!({})).await;
    let taken = port["fixed_ips"][0]["ip_address"].clone();
    let used = |res: &'static str| {
        let e = &e;
        async move {
            let d = e
                .get(&e.admin, &format!("/quotas/{}/details", e.demo))
                .await;
            d.body["quota"][res]["used"]
                .as_i64()
                .unwrap_or_else(|| panic!("{res} used in {}", d.body))
        }
    };
    let before = (
        used("network").await,
        used("subnet").await,
        used("port").await,
    );
    let q = e
        .put(
            &e.admin,
            &format!("/quotas/{}", e.demo),
            json!({"quota": {"network": before.0 + 1, "subnet": before.1 + 1, "port": before.2 + 1}}),
        )
        .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.body);
    for (path, body) in [
        (
            "/networks",
            json!({"networks": [{"name": "q1"}, {"name": "q2", "availability_zone_hints": ["nowhere"]}]}),
        ),
        (
            "/subnets",
            json!({"subnets": [
                {"network_id": n, "ip_version": 4, "cidr": "10.8.0.0/24"},
                {"network_id": n, "ip_version": 6, "cidr": "10.8.1.0/24"},
            ]}),
        ),
        (
            "/ports",
            json!({"ports": [
                {"network_id": n},
                {"network_id": n, "fixed_ips": [{"ip_address": taken}]},
            ]}),
        ),
    ] {
        err(
            &e.post(&e.alice, path, body.clone()).await,
            StatusCode::CONFLICT,
            "OverQuota",
        );
    }
    let after = (
        used("network").await,
        used("subnet").await,
        used("port").await,
    );
    assert_eq!(before, after, "a refused batch created something");
    // Within the quota the batch still works.
    let r = e
        .post(&e.alice, "/networks", json!({"networks": [{"name": "q1"}]}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

/// A bulk create carries at most `max_bulk_create` resources: a longer
/// batch is refused with 400 before anything is done.
#[tokio::test]
async fn bulk_create_is_capped() {
    let e = env_with(|s| s.network_max_bulk_create = 2).await;
    let r = e
        .post(
            &e.alice,
            "/networks",
            json!({"networks": [{"name": "c1"}, {"name": "c2"}, {"name": "c3"}]}),
        )
        .await;
    err(&r, StatusCode::BAD_REQUEST, "HTTPBadRequest");
    assert_eq!(
        r.body["NeutronError"]["message"],
        "Bulk request of 3 networks exceeds the limit of 2 per request",
    );
    let r = e.get(&e.alice, "/networks?name=c1").await;
    assert_eq!(r.body["networks"], json!([]));
    let r = e
        .post(
            &e.alice,
            "/networks",
            json!({"networks": [{"name": "c1"}, {"name": "c2"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let n = id(&r.body["networks"][0]);
    for (path, body) in [
        (
            "/subnets",
            json!({"subnets": [
                {"network_id": n, "ip_version": 4, "cidr": "10.1.0.0/24"},
                {"network_id": n, "ip_version": 4, "cidr": "10.2.0.0/24"},
                {"network_id": n, "ip_version": 4, "cidr": "10.3.0.0/24"},
            ]}),
        ),
        (
            "/ports",
            json!({"ports": [{"network_id": n}, {"network_id": n}, {"network_id": n}]}),
        ),
    ] {
        err(
            &e.post(&e.alice, path, body).await,
            StatusCode::BAD_REQUEST,
            "HTTPBadRequest",
        );
    }
}
