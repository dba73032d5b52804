//! Floating IPs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{Ctx, Error};

use super::body::{self, Body, Op};
use super::query::ListQuery;
use super::{entity, no_content, ok, ts, JsonBody, Q, S};
use crate::app::fault;
use crate::app::floatingip::{FloatingIpCreate, FloatingIpUpdate};
use crate::app::view::FloatingIpView;

/// The attributes a list may filter on and sort by. `port_details` is
/// shown but is neither (neutron-lib gives it no `is_filter`, and with
/// `filter-validation` Neutron answers 400 for it), so it is not here.
pub const ATTRS: &[&str] = &[
    "id",
    "floating_ip_address",
    "floating_network_id",
    "router_id",
    "port_id",
    "fixed_ip_address",
    "status",
    "tenant_id",
    "project_id",
    "description",
    "dns_name",
    "dns_domain",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

const READ_ONLY: &[&str] = &[
    "router_id",
    "status",
    "port_details",
    "created_at",
    "updated_at",
    "revision_number",
];

pub fn to_json(v: &FloatingIpView) -> Value {
    let f = &v.fip;
    json!({
        "id": f.id,
        "floating_ip_address": f.floating_ip_address,
        "floating_network_id": f.floating_network_id,
        "router_id": f.router_id,
        "port_id": f.port_id,
        "fixed_ip_address": f.fixed_ip_address,
        "status": f.status,
        "tenant_id": f.project_id,
        "project_id": f.project_id,
        "description": f.description,
        "dns_name": f.dns_name,
        "dns_domain": f.dns_domain,
        "tags": v.tags,
        "created_at": ts(f.created_at),
        "updated_at": ts(f.updated_at),
        "revision_number": f.revision_number,
        "port_details": v.port.as_ref().map(|p| json!({
            "name": p.name,
            "network_id": p.network_id,
            "mac_address": p.mac_address,
            "admin_state_up": p.admin_state_up,
            "status": p.status,
            "device_id": p.device_id,
            "device_owner": p.device_owner,
        })),
    })
}

pub async fn list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, ATTRS)?;
    let items = n
        .floatingip_views(None)
        .await?
        .iter()
        .filter(|v| n.allowed(&ctx, "get_floatingip", &v.target()))
        .map(to_json)
        .collect();
    Ok(ok(lq.respond(
        "floatingips",
        &n.url("/floatingips"),
        items,
        &[],
    )?))
}

pub async fn show(State(n): S, ctx: Ctx, Path(id): Path<String>, q: Q) -> Result<Response, Error> {
    let v = n.load_floatingip(&id).await?;
    if !n.allowed(&ctx, "get_floatingip", &v.target()) {
        return Err(fault::floatingip_not_found(&id));
    }
    Ok(entity(
        StatusCode::OK,
        "floatingip",
        ListQuery::fields(&q).select(to_json(&v), &[]),
    ))
}

fn dns(b: &mut Body) -> Result<(String, String), Error> {
    let name = b.string("dns_name", 255)?.unwrap_or_default();
    body::valid_dns_name(&name).map_err(|r| fault::invalid_attr("dns_name", r))?;
    let domain = b.string("dns_domain", 255)?.unwrap_or_default();
    body::valid_dns_domain(&domain).map_err(|r| fault::invalid_attr("dns_domain", r))?;
    Ok((name, domain))
}

pub async fn create(State(n): S, ctx: Ctx, JsonBody(v): JsonBody) -> Result<Response, Error> {
    let mut b = Body::new(v, "floatingip")?;
    let floating_network_id = b.uuid("floating_network_id")?.ok_or_else(|| {
        fault::bad_request(
            "Failed to parse request. Required attribute 'floating_network_id' not specified",
        )
    })?;
    let (dns_name, dns_domain) = dns(&mut b)?;
    let req = FloatingIpCreate {
        project_id: b.project()?,
        floating_network_id,
        floating_ip_address: b.ip_or_null("floating_ip_address")?.flatten(),
        subnet_id: b.uuid_or_null("subnet_id")?.flatten(),
        port_id: b.uuid_or_null("port_id")?.flatten(),
        fixed_ip_address: b.ip_or_null("fixed_ip_address")?.flatten(),
        description: b.description()?.unwrap_or_default(),
        dns_name,
        dns_domain,
        tags: b.tags()?,
    };
    b.finish(Op::Create, READ_ONLY)?;
    let view = n.floatingip_create(&ctx, req).await?;
    Ok(entity(StatusCode::CREATED, "floatingip", to_json(&view)))
}

pub async fn update(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "floatingip")?;
    let req = FloatingIpUpdate {
        port_id: b.uuid_or_null("port_id")?,
        fixed_ip_address: b.ip_or_null("fixed_ip_address")?,
        description: b.description()?,
    };
    let mut ro = READ_ONLY.to_vec();
    ro.extend([
        "tenant_id",
        "project_id",
        "floating_network_id",
        "floating_ip_address",
        "subnet_id",
        "dns_name",
        "dns_domain",
        "tags",
    ]);
    b.finish(Op::Update, &ro)?;
    let view = n.floatingip_update(&ctx, &id, req).await?;
    Ok(entity(StatusCode::OK, "floatingip", to_json(&view)))
}

pub async fn delete(State(n): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    n.floatingip_delete(&ctx, &id).await?;
    Ok(no_content())
}
