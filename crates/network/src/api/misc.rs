//! Extensions, quotas, agents, availability zones and IP availability.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use api::{Ctx, Error, Target};

use super::body;
use super::query::ListQuery;
use super::{entity, no_content, ok, JsonBody, Q, S};
use crate::app::network::AVAILABILITY_ZONE;
use crate::app::port::uuid_from;
use crate::app::quota::RESOURCES;
use crate::app::{db_err, fault, ipam::SubnetInfo};
use crate::store as db;

/// Every extension this service implements: (alias, name, description,
/// updated), as neutron-lib describes them. Nothing is listed that is not
/// implemented; clients probe this list.
pub const EXTENSIONS: &[(&str, &str, &str, &str)] = &[
    ("agent", "agent", "The agent management extension.", "2013-02-03T10:00:00-00:00"),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs", "2013-07-23T10:00:00-00:00"),
    ("availability_zone", "Availability Zone", "The availability zone extension.", "2015-01-01T10:00:00-00:00"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application", "2014-02-03T10:00:00-00:00"),
    ("dns-integration", "DNS Integration", "Provides integration with DNS.", "2015-08-15T18:00:00-00:00"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource.", "2013-01-14T10:00:00-00:00"),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway", "2013-03-28T10:00:00-00:00"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router", "2013-02-01T10:00:00-00:00"),
    ("extraroute-atomic", "Atomically add/remove extra routes", "Edit extra routes of a router on server side by atomically adding/removing extra routes", "2019-07-10T00:00:00+00:00"),
    ("filter-validation", "Filter parameters validation", "Provides validation on filter parameters.", "2018-07-04T10:00:00-00:00"),
    ("fip-port-details", "Floating IP Port Details Extension", "Add port_details attribute to Floating IP resource", "2018-04-09T10:00:00-00:00"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource.", "2015-03-25T10:00:00-00:00"),
    ("net-mtu-writable", "Network MTU (writable)", "Provides a writable MTU attribute for a network resource.", "2017-07-12T00:00:00-00:00"),
    ("network-ip-availability", "Network IP Availability", "Provides IP availability data for each network and subnet.", "2015-09-24T00:00:00-00:00"),
    ("network_availability_zone", "Network Availability Zone", "Availability zone support for network.", "2015-01-01T10:00:00-00:00"),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled.", "2016-06-12T00:00:00-00:00"),
    ("port-security", "Port Security", "Provides port security", "2012-07-23T10:00:00-00:00"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled.", "2016-09-09T09:09:09-09:09"),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks", "2012-09-07T10:00:00-00:00"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics per project", "2017-02-10T10:00:00-00:00"),
    ("quotas", "Quota management support", "Expose functions for quotas management per project", "2012-07-29T10:00:00-00:00"),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.", "2012-07-20T10:00:00-00:00"),
    ("router_availability_zone", "Router Availability Zone", "Availability zone support for router.", "2015-01-01T10:00:00-00:00"),
    ("security-group", "security-group", "The security groups extension.", "2012-10-05T10:00:00-00:00"),
    ("service-type", "Neutron Service Type Management", "API for retrieving service providers for Neutron advanced services", "2013-01-20T00:00:00-00:00"),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled.", "2016-06-12T00:00:00-00:00"),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes", "2016-02-10T10:00:00-00:00"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources.", "2016-04-11T10:00:00-00:00"),
    ("standard-attr-tag", "Tag support for resources with standard attribute: subnet, trunk, network_segment_range, router, network, policy, subnetpool, port, security_group, floatingip", "Enables to set tag on resources with standard attribute.", "2017-01-01T00:00:00-00:00"),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.", "2016-09-12T10:00:00-00:00"),
    ("subnet-external-network", "Subnet belongs to an external network", "Informs if the subnet belongs to an external network", "2024-02-05T18:00:00-00:00"),
    // The alias of Neutron's first tag extension (networks only), which
    // clients still probe before they use tags.
    ("tag", "Tag support", "Enables to set tag on resources.", "2016-01-01T00:00:00-00:00"),
    ("tag-creation", "Tag creation extension", "Allow to create multiple tags for a resource", "2024-23-07T10:00:00-00:00"),
];

fn extension_json(e: &(&str, &str, &str, &str)) -> Value {
    json!({"alias": e.0, "name": e.1, "description": e.2, "updated": e.3, "links": []})
}

pub async fn extensions(_ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, &["alias", "name", "description", "updated", "links"])?;
    let items = EXTENSIONS.iter().map(extension_json).collect();
    Ok(ok(lq.respond("extensions", "", items, &[])?))
}

pub async fn extension(_ctx: Ctx, Path(alias): Path<String>) -> Result<Response, Error> {
    EXTENSIONS
        .iter()
        .find(|e| e.0 == alias)
        .map(|e| entity(StatusCode::OK, "extension", extension_json(e)))
        .ok_or_else(|| {
            fault::not_found(
                "ExtensionsNotFound",
                format!("Extensions not found: ['{}'].", body::shown(&alias)),
            )
        })
}

// -- quotas ------------------------------------------------------------------

fn quota_target(project: &str) -> Target {
    Target::new()
        .with("project_id", project)
        .with("tenant_id", project)
}

fn quota_json(q: &crate::app::Quotas) -> Value {
    let mut m = Map::new();
    for r in RESOURCES {
        m.insert((*r).to_string(), json!(q.get(r)));
    }
    Value::Object(m)
}

pub async fn quota_list(State(n): S, ctx: Ctx) -> Result<Response, Error> {
    let mut by_project: HashMap<String, crate::app::Quotas> = HashMap::new();
    for (p, res, limit) in db::misc::all_quotas(&n.pool).await.map_err(db_err)? {
        by_project
            .entry(p)
            .or_insert_with(|| n.cfg.quotas.clone())
            .set(&res, limit);
    }
    let mut items: Vec<Value> = by_project
        .into_iter()
        .filter(|(p, _)| n.allowed(&ctx, "get_quota", &quota_target(p)))
        .map(|(p, q)| {
            let mut v = quota_json(&q);
            v["project_id"] = json!(p);
            v["tenant_id"] = json!(p);
            v
        })
        .collect();
    items.sort_by(|a, b| a["project_id"].as_str().cmp(&b["project_id"].as_str()));
    Ok(ok(json!({ "quotas": items })))
}

pub async fn quota_show(
    State(n): S,
    ctx: Ctx,
    Path(project): Path<String>,
) -> Result<Response, Error> {
    // `/quotas/tenant` and `/quotas/project` name the caller's project.
    if project == "tenant" || project == "project" {
        let id = ctx.project_id().unwrap_or_default();
        return Ok(ok(if project == "tenant" {
            json!({"tenant": {"tenant_id": id}})
        } else {
            json!({"project": {"project_id": id}})
        }));
    }
    // A project may always read its own quotas (as Neutron's controller
    // does); others need `get_quota`.
    if ctx.project_id() != Some(project.as_str()) {
        n.enforce(&ctx, "get_quota", &quota_target(&project))?;
    }
    let q = n.quotas_for(&n.pool, &project).await?;
    Ok(entity(StatusCode::OK, "quota", quota_json(&q)))
}

pub async fn quota_default(
    State(n): S,
    ctx: Ctx,
    Path(project): Path<String>,
) -> Result<Response, Error> {
    n.enforce(&ctx, "get_quota", &quota_target(&project))?;
    Ok(entity(StatusCode::OK, "quota", quota_json(&n.cfg.quotas)))
}

pub async fn quota_details(
    State(n): S,
    ctx: Ctx,
    Path(project): Path<String>,
) -> Result<Response, Error> {
    if ctx.project_id() != Some(project.as_str()) {
        n.enforce(&ctx, "get_quota", &quota_target(&project))?;
    }
    let q = n.quotas_for(&n.pool, &project).await?;
    let mut m = Map::new();
    for r in RESOURCES {
        let used = n.usage(&n.pool, &project, r).await?;
        m.insert(
            (*r).to_string(),
            json!({"limit": q.get(r), "used": used, "reserved": 0}),
        );
    }
    Ok(entity(StatusCode::OK, "quota", Value::Object(m)))
}

pub async fn quota_update(
    State(n): S,
    ctx: Ctx,
    Path(project): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    n.enforce(&ctx, "update_quota", &quota_target(&project))?;
    let mut b = body::Body::new(v, "quota")?;
    // `force` skips the usage check; `check_limit` is what it always is now.
    let force = b.boolean("force")?.unwrap_or(false);
    b.boolean("check_limit")?;
    let mut changes = Vec::new();
    for r in RESOURCES {
        if let Some(v) = b.int_or_null(r)? {
            match v {
                Some(l) if l >= -1 => changes.push((*r, l)),
                other => {
                    return Err(fault::invalid_attr(
                        r,
                        format!(
                            "'{}' should be greater than or equal to -1",
                            other.map(|o| o.to_string()).unwrap_or("None".into())
                        ),
                    ))
                }
            }
        }
    }
    b.finish(body::Op::Update, &[])?;
    let mut tx = n.begin().await?;
    for (r, l) in &changes {
        if *l < 0 || force {
            continue;
        }
        let used = n.usage(tx.c(), &project, r).await?;
        if used > *l {
            return Err(fault::bad_request(format!(
                "Quota limit {l} for {r} must be greater than or equal to already used {used}"
            )));
        }
    }
    for (r, l) in changes {
        db::misc::set_quota(tx.c(), &project, r, l)
            .await
            .map_err(db_err)?;
    }
    n.commit(tx).await?;
    let q = n.quotas_for(&n.pool, &project).await?;
    Ok(entity(StatusCode::OK, "quota", quota_json(&q)))
}

pub async fn quota_delete(
    State(n): S,
    ctx: Ctx,
    Path(project): Path<String>,
) -> Result<Response, Error> {
    n.enforce(&ctx, "delete_quota", &quota_target(&project))?;
    let mut tx = n.begin().await?;
    db::misc::clear_quotas(tx.c(), &project)
        .await
        .map_err(db_err)?;
    n.commit(tx).await?;
    Ok(no_content())
}

// -- agents --------------------------------------------------------------------

const AGENT_ATTRS: &[&str] = &[
    "id",
    "agent_type",
    "binary",
    "topic",
    "host",
    "admin_state_up",
    "created_at",
    "started_at",
    "heartbeat_timestamp",
    "alive",
    "configurations",
    "description",
    "availability_zone",
    "resources_synced",
];

/// Neutron's agent timestamps: `2026-11-21 18:00:00`.
fn agent_ts(micros: i64) -> Value {
    if micros <= 0 {
        return Value::Null;
    }
    json!(api::time_fmt::seconds_z(micros)
        .trim_end_matches('Z')
        .replace('T', " "))
}

/// The agents of this deployment: the L2 function on every host that ever
/// ran an agent (and this one), and L3, DHCP and metadata on this host,
/// where routers and DHCP are scheduled. Alive means heard from (a watch
/// or report call) within `agent_down_time`, or inside a long poll now.
async fn agents(n: &crate::app::Network) -> Result<Vec<Value>, Error> {
    let mut hosts: Vec<db::misc::Host> = db::misc::hosts(&n.pool).await.map_err(db_err)?;
    if !hosts.iter().any(|h| h.host == n.cfg.host) {
        hosts.push(db::misc::Host {
            host: n.cfg.host.clone(),
            tunnel_ip: None,
            started_at: 0,
            heartbeat_at: 0,
        });
    }
    let now = store::now_micros();
    let down = n.cfg.agent_down_time.as_micros() as i64;
    let mut out = Vec::new();
    for h in &hosts {
        let alive = n.is_polling(&h.host) || (h.heartbeat_at > 0 && now - h.heartbeat_at <= down);
        let kinds: &[(&str, &str, Option<&str>)] = if h.host == n.cfg.host {
            &[
                ("Linux bridge agent", "N/A", None),
                ("L3 agent", "l3_agent", Some(AVAILABILITY_ZONE)),
                ("DHCP agent", "dhcp_agent", Some(AVAILABILITY_ZONE)),
                ("Metadata agent", "N/A", None),
            ]
        } else {
            &[("Linux bridge agent", "N/A", None)]
        };
        for (kind, topic, az) in kinds {
            let mut configurations = json!({});
            if *kind == "Linux bridge agent" {
                let mappings: Map<String, Value> = n
                    .cfg
                    .physical_networks
                    .iter()
                    .map(|(p, i)| (p.clone(), json!(i)))
                    .collect();
                configurations = json!({
                    "interface_mappings": mappings,
                    "tunnel_types": ["vxlan"],
                    "tunneling_ip": h.tunnel_ip,
                });
            }
            out.push(json!({
                "id": uuid_from(&format!("{}/{kind}", h.host)),
                "agent_type": kind,
                "binary": "ferrostack-agent",
                "topic": topic,
                "host": h.host,
                "admin_state_up": true,
                "created_at": agent_ts(h.started_at),
                "started_at": agent_ts(h.started_at),
                "heartbeat_timestamp": agent_ts(h.heartbeat_at),
                "alive": alive,
                "configurations": configurations,
                "description": Value::Null,
                "availability_zone": az,
                "resources_synced": Value::Null,
            }));
        }
    }
    Ok(out)
}

/// The policy target of an agent (agents belong to no project).
fn agent_target(a: &Value) -> Target {
    Target::new()
        .with("id", a["id"].as_str().unwrap_or_default())
        .with("host", a["host"].as_str().unwrap_or_default())
        .with("agent_type", a["agent_type"].as_str().unwrap_or_default())
}

/// Like every list, the agents are filtered by `get_agent` item by item:
/// a caller who may see none gets 200 and an empty list (Neutron's rule),
/// not 403.
pub async fn agent_list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, AGENT_ATTRS)?;
    let items = agents(&n)
        .await?
        .into_iter()
        .filter(|a| n.allowed(&ctx, "get_agent", &agent_target(a)))
        .collect();
    Ok(ok(lq.respond("agents", &n.url("/agents"), items, &[])?))
}

/// An agent the caller may not read answers 404, like any resource it may
/// not see (Neutron's policy hook does the same for every single GET).
pub async fn agent_show(State(n): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    agents(&n)
        .await?
        .into_iter()
        .find(|a| a["id"] == id.as_str())
        .filter(|a| n.allowed(&ctx, "get_agent", &agent_target(a)))
        .map(|a| entity(StatusCode::OK, "agent", a))
        .ok_or_else(|| {
            fault::not_found(
                "AgentNotFound",
                format!("Agent {} could not be found.", body::shown(&id)),
            )
        })
}

// -- availability zones ----------------------------------------------------------

pub async fn availability_zones(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, &["name", "resource", "state"])?;
    let items = ["network", "router"]
        .iter()
        .map(|r| json!({"name": AVAILABILITY_ZONE, "resource": r, "state": "available"}))
        .filter(|z| {
            let t = Target::new()
                .with("name", AVAILABILITY_ZONE)
                .with("resource", z["resource"].as_str().unwrap_or_default());
            n.allowed(&ctx, "get_availability_zone", &t)
        })
        .collect();
    Ok(ok(lq.respond("availability_zones", "", items, &[])?))
}

// -- service providers -----------------------------------------------------------

const PROVIDER_ATTRS: &[&str] = &["service_type", "name", "default"];

/// `GET /v2.0/service-providers` (extension `service-type`): the drivers of
/// the advanced services. The one service here is the L3 router, whose
/// only driver is the single-node one (no HA, no DVR); Neutron lists its
/// legacy L3 providers with `default` false, and so does this.
pub async fn service_providers(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, PROVIDER_ATTRS)?;
    let items = [json!({"service_type": "L3_ROUTER_NAT", "name": "single_node", "default": false})]
        .into_iter()
        .filter(|p| {
            let t = Target::new()
                .with(
                    "service_type",
                    p["service_type"].as_str().unwrap_or_default(),
                )
                .with("name", p["name"].as_str().unwrap_or_default());
            n.allowed(&ctx, "get_service_provider", &t)
        })
        .collect();
    Ok(ok(lq.respond(
        "service_providers",
        &n.url("/service-providers"),
        items,
        &[],
    )?))
}

// -- network IP availability -------------------------------------------------------

const IPA_ATTRS: &[&str] = &[
    "network_id",
    "network_name",
    "tenant_id",
    "project_id",
    "total_ips",
    "used_ips",
    "subnet_ip_availability",
    "ip_version",
];

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

async fn availabilities(
    n: &crate::app::Network,
    ctx: &api::AuthContext,
) -> Result<Vec<Value>, Error> {
    let nets = db::network::list(&n.pool).await.map_err(db_err)?;
    let subnets: Vec<SubnetInfo> = db::subnet::list(&n.pool)
        .await
        .map_err(db_err)?
        .into_iter()
        .map(SubnetInfo::new)
        .collect();
    let mut used: HashMap<String, u64> = HashMap::new();
    for a in db::port::allocations(&n.pool).await.map_err(db_err)? {
        *used.entry(a.subnet_id).or_default() += 1;
    }
    let mut out = Vec::new();
    for net in nets {
        let t = Target::new()
            .with("project_id", &net.project_id)
            .with("tenant_id", &net.project_id);
        if !n.allowed(ctx, "get_network_ip_availability", &t) {
            continue;
        }
        let mine: Vec<&SubnetInfo> = subnets
            .iter()
            .filter(|s| s.row.network_id == net.id)
            .collect();
        let per: Vec<Value> = mine
            .iter()
            .map(|s| {
                json!({
                    "subnet_id": s.row.id,
                    "subnet_name": s.row.name,
                    "cidr": s.row.cidr,
                    "ip_version": s.row.ip_version,
                    "total_ips": saturate(s.pool_size()),
                    "used_ips": used.get(&s.row.id).copied().unwrap_or(0),
                })
            })
            .collect();
        let total = mine
            .iter()
            .fold(0u128, |a, s| a.saturating_add(s.pool_size()));
        let used_total: u64 = mine
            .iter()
            .map(|s| used.get(&s.row.id).copied().unwrap_or(0))
            .sum();
        let versions: Vec<i64> = mine.iter().map(|s| s.row.ip_version).collect();
        out.push(json!({
            "network_id": net.id,
            "network_name": net.name,
            "tenant_id": net.project_id,
            "project_id": net.project_id,
            "total_ips": saturate(total),
            "used_ips": used_total,
            "subnet_ip_availability": per,
            "ip_version": versions,
        }));
    }
    Ok(out)
}

pub async fn ip_availability_list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, IPA_ATTRS)?;
    let items = availabilities(&n, &ctx).await?;
    Ok(ok(lq.respond(
        "network_ip_availabilities",
        &n.url("/network-ip-availabilities"),
        items,
        &["ip_version"],
    )?))
}

pub async fn ip_availability_show(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let mut v = availabilities(&n, &ctx)
        .await?
        .into_iter()
        .find(|a| a["network_id"] == id.as_str())
        .ok_or_else(|| fault::network_not_found(&id))?;
    if let Value::Object(m) = &mut v {
        m.remove("ip_version");
    }
    Ok(entity(StatusCode::OK, "network_ip_availability", v))
}
