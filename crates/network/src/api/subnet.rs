//! Subnets.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{Ctx, Error};
use netmodel::Cidr;

use super::body::{self, Body, Op};
use super::query::ListQuery;
use super::{entity, json_list, no_content, ok, ts, JsonBody, Q, S};
use crate::app::fault;
use crate::app::subnet::{SubnetCreate, SubnetUpdate, IPV6_MODES};
use crate::app::view::SubnetView;

pub const ATTRS: &[&str] = &[
    "id",
    "name",
    "tenant_id",
    "project_id",
    "network_id",
    "ip_version",
    "subnetpool_id",
    "enable_dhcp",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "gateway_ip",
    "cidr",
    "allocation_pools",
    "host_routes",
    "dns_nameservers",
    "description",
    "service_types",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
    "shared",
    "router:external",
];

/// Filter-only attributes (from the subnet's network). `router:external`
/// is shown, as Neutron's `subnet-external-network` extension does: it is
/// why members of other projects may read the subnets of an external
/// network (policy `rule:external_network`).
const HIDDEN: &[&str] = &["shared"];

const READ_ONLY: &[&str] = &[
    "subnetpool_id",
    "created_at",
    "updated_at",
    "revision_number",
    "shared",
    "router:external",
];

pub fn to_json(v: &SubnetView) -> Value {
    let s = &v.subnet;
    json!({
        "id": s.id,
        "name": s.name,
        "tenant_id": s.project_id,
        "project_id": s.project_id,
        "network_id": s.network_id,
        "ip_version": s.ip_version,
        "subnetpool_id": null,
        "enable_dhcp": s.enable_dhcp,
        "ipv6_ra_mode": s.ipv6_ra_mode,
        "ipv6_address_mode": s.ipv6_address_mode,
        "gateway_ip": s.gateway_ip,
        "cidr": s.cidr,
        "allocation_pools": json_list(&s.allocation_pools),
        "host_routes": json_list(&s.host_routes),
        "dns_nameservers": json_list(&s.dns_nameservers),
        "description": s.description,
        "service_types": [],
        "tags": v.tags,
        "created_at": ts(s.created_at),
        "updated_at": ts(s.updated_at),
        "revision_number": s.revision_number,
        "shared": v.net.shared,
        "router:external": v.net.external,
    })
}

pub async fn list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, ATTRS)?;
    let items = n
        .subnet_views(None)
        .await?
        .iter()
        .filter(|v| n.allowed(&ctx, "get_subnet", &v.target()))
        .map(to_json)
        .collect();
    Ok(ok(lq.respond(
        "subnets",
        &n.url("/subnets"),
        items,
        HIDDEN,
    )?))
}

pub async fn show(State(n): S, ctx: Ctx, Path(id): Path<String>, q: Q) -> Result<Response, Error> {
    let v = n.load_subnet(&id).await?;
    if !n.allowed(&ctx, "get_subnet", &v.target()) {
        return Err(fault::subnet_not_found(&id));
    }
    Ok(entity(
        StatusCode::OK,
        "subnet",
        ListQuery::fields(&q).select(to_json(&v), HIDDEN),
    ))
}

fn pools(v: &Value) -> Result<Vec<(IpAddr, IpAddr)>, Error> {
    let bad = |why: String| fault::invalid_attr("allocation_pools", why);
    let Value::Array(items) = v else {
        return Err(bad(format!(
            "Invalid data format for IP pool: '{}'",
            body::shown(&v.to_string())
        )));
    };
    items
        .iter()
        .map(|p| {
            let obj = p
                .as_object()
                .filter(|o| o.len() == 2 && o.contains_key("start") && o.contains_key("end"))
                .ok_or_else(|| {
                    bad(format!(
                        "Invalid data format for IP pool: '{}'",
                        body::shown(&p.to_string())
                    ))
                })?;
            Ok((
                body::ip_value("allocation_pools", &obj["start"])?,
                body::ip_value("allocation_pools", &obj["end"])?,
            ))
        })
        .collect()
}

fn nameservers(v: &Value) -> Result<Vec<IpAddr>, Error> {
    let Value::Array(items) = v else {
        return Err(fault::invalid_attr(
            "dns_nameservers",
            format!(
                "Invalid data format for nameserver: '{}'",
                body::shown(&v.to_string())
            ),
        ));
    };
    let mut out = Vec::new();
    for i in items {
        let ip = body::ip_value("dns_nameservers", i)?;
        if out.contains(&ip) {
            return Err(fault::invalid_attr(
                "dns_nameservers",
                format!("Duplicate nameserver '{ip}'"),
            ));
        }
        out.push(ip);
    }
    Ok(out)
}

/// Host routes (also the router's `routes`): unique `{destination, nexthop}`.
pub fn routes(key: &str, v: &Value) -> Result<Vec<(Cidr, IpAddr)>, Error> {
    let Value::Array(items) = v else {
        return Err(fault::invalid_attr(
            key,
            format!(
                "Invalid data format for hostroute: '{}'",
                body::shown(&v.to_string())
            ),
        ));
    };
    let mut out = Vec::new();
    for i in items {
        let obj = i
            .as_object()
            .filter(|o| o.len() == 2 && o.contains_key("destination") && o.contains_key("nexthop"))
            .ok_or_else(|| {
                fault::invalid_attr(
                    key,
                    format!(
                        "Invalid data format for hostroute: '{}'",
                        body::shown(&i.to_string())
                    ),
                )
            })?;
        let dest = match &obj["destination"] {
            Value::String(s) => crate::app::addr::parse_cidr(s)
                .map(|c| crate::app::addr::normalize(&c))
                .ok_or_else(|| {
                    fault::invalid_attr(
                        key,
                        format!("'{}' is not a valid IP subnet", body::shown(s)),
                    )
                })?,
            other => {
                return Err(fault::invalid_attr(
                    key,
                    format!(
                        "'{}' is not a valid IP subnet",
                        body::shown(&other.to_string())
                    ),
                ))
            }
        };
        let nexthop = body::ip_value(key, &obj["nexthop"])?;
        if out.contains(&(dest, nexthop)) {
            return Err(fault::invalid_attr(
                key,
                format!("Duplicate hostroute '{dest} via {nexthop}'"),
            ));
        }
        out.push((dest, nexthop));
    }
    Ok(out)
}

fn ipv6_mode(b: &mut Body, key: &str) -> Result<Option<String>, Error> {
    match b.take(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if IPV6_MODES.contains(&s.as_str()) => Ok(Some(s)),
        Some(other) => Err(fault::invalid_attr(
            key,
            format!(
                "{} is not in {IPV6_MODES:?}",
                body::shown(&other.to_string())
            ),
        )),
    }
}

/// One element of a create body, parsed.
fn create_request(v: Value) -> Result<SubnetCreate, Error> {
    let mut b = Body::new(v, "subnet")?;
    let required = |k: &str| {
        fault::bad_request(format!(
            "Failed to parse request. Required attribute '{k}' not specified"
        ))
    };
    let network_id = b
        .uuid("network_id")?
        .ok_or_else(|| required("network_id"))?;
    let ip_version = match b.int_or_null("ip_version")? {
        Some(Some(4)) => 4,
        Some(Some(6)) => 6,
        Some(other) => {
            return Err(fault::invalid_attr(
                "ip_version",
                format!(
                    "{} is not in [4, 6]",
                    other.map(|v| v.to_string()).unwrap_or("None".into())
                ),
            ))
        }
        None => return Err(required("ip_version")),
    };
    match b.take("subnetpool_id") {
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(fault::not_found(
                "SubnetPoolNotFound",
                format!(
                    "Subnet pool {} could not be found.",
                    body::shown(&other.to_string())
                ),
            ))
        }
    }
    if b.has("prefixlen") || b.has("use_default_subnetpool") {
        return Err(fault::bad_request(
            "Subnet pools are not supported: give the subnet a cidr",
        ));
    }
    let cidr = match b.take("cidr") {
        Some(v) => body::subnet_value("cidr", &v)?,
        None => return Err(required("cidr")),
    };
    let gateway_ip = b.ip_or_null("gateway_ip")?;
    let allocation_pools = b.take("allocation_pools").map(|v| pools(&v)).transpose()?;
    let dns = b.take("dns_nameservers").map(|v| match v {
        Value::Null => Ok(Vec::new()),
        v => nameservers(&v),
    });
    let host_routes = b.take("host_routes").map(|v| match v {
        Value::Null => Ok(Vec::new()),
        v => routes("host_routes", &v),
    });
    if let Some(v) = b.take("service_types") {
        if v != json!([]) {
            return Err(fault::bad_request("Subnet service types are not supported"));
        }
    }
    if let Some(v) = b.take("segment_id") {
        if !v.is_null() {
            return Err(fault::bad_request("Network segments are not supported"));
        }
    }
    let req = SubnetCreate {
        project_id: b.project()?,
        network_id,
        name: b.name("name")?.unwrap_or_default(),
        description: b.description()?.unwrap_or_default(),
        ip_version,
        cidr,
        gateway_ip,
        allocation_pools,
        dns_nameservers: dns.transpose()?.unwrap_or_default(),
        host_routes: host_routes.transpose()?.unwrap_or_default(),
        enable_dhcp: b.boolean("enable_dhcp")?.unwrap_or(true),
        ipv6_ra_mode: ipv6_mode(&mut b, "ipv6_ra_mode")?,
        ipv6_address_mode: ipv6_mode(&mut b, "ipv6_address_mode")?,
        tags: b.tags()?,
    };
    b.finish(Op::Create, READ_ONLY)?;
    Ok(req)
}

/// `POST /v2.0/subnets`: one subnet, or many at once
/// (`{"subnets": [...]}`), created all or none.
pub async fn create(State(n): S, ctx: Ctx, JsonBody(v): JsonBody) -> Result<Response, Error> {
    match super::create_body(v, "subnet", "subnets")? {
        super::CreateBody::One(v) => {
            let view = n.subnet_create(&ctx, create_request(v)?).await?;
            Ok(entity(
                StatusCode::CREATED,
                "subnet",
                ListQuery::default().select(to_json(&view), HIDDEN),
            ))
        }
        super::CreateBody::Bulk(items) => {
            let reqs = items
                .into_iter()
                .map(create_request)
                .collect::<Result<Vec<_>, Error>>()?;
            let views = n.subnet_create_bulk(&ctx, reqs).await?;
            let items = views
                .iter()
                .map(|view| ListQuery::default().select(to_json(view), HIDDEN))
                .collect();
            Ok(entity(StatusCode::CREATED, "subnets", Value::Array(items)))
        }
    }
}

pub async fn update(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "subnet")?;
    let req = SubnetUpdate {
        name: b.name("name")?,
        description: b.description()?,
        gateway_ip: b.ip_or_null("gateway_ip")?,
        allocation_pools: b.take("allocation_pools").map(|v| pools(&v)).transpose()?,
        dns_nameservers: b
            .take("dns_nameservers")
            .map(|v| match v {
                Value::Null => Ok(Vec::new()),
                v => nameservers(&v),
            })
            .transpose()?,
        host_routes: b
            .take("host_routes")
            .map(|v| match v {
                Value::Null => Ok(Vec::new()),
                v => routes("host_routes", &v),
            })
            .transpose()?,
        enable_dhcp: b.boolean("enable_dhcp")?,
    };
    let mut ro = READ_ONLY.to_vec();
    ro.extend([
        "tenant_id",
        "project_id",
        "network_id",
        "ip_version",
        "cidr",
        "ipv6_ra_mode",
        "ipv6_address_mode",
        "tags",
        "service_types",
        "segment_id",
    ]);
    b.finish(Op::Update, &ro)?;
    let view = n.subnet_update(&ctx, &id, req).await?;
    Ok(entity(
        StatusCode::OK,
        "subnet",
        ListQuery::default().select(to_json(&view), HIDDEN),
    ))
}

pub async fn delete(State(n): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    n.subnet_delete(&ctx, &id).await?;
    Ok(no_content())
}
