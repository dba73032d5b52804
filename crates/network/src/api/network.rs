//! Networks.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{AuthContext, Ctx, Error, Target};

use super::body::{self, Body, Op};
use super::query::ListQuery;
use super::{entity, json_list, no_content, ok, ts, JsonBody, Q, S};
use crate::app::network::{NetworkCreate, NetworkUpdate, AVAILABILITY_ZONE};
use crate::app::view::NetworkView;
use crate::app::{fault, Network};

pub const ATTRS: &[&str] = &[
    "id",
    "name",
    "tenant_id",
    "project_id",
    "admin_state_up",
    "status",
    "subnets",
    "shared",
    "availability_zone_hints",
    "availability_zones",
    "router:external",
    "description",
    "port_security_enabled",
    "mtu",
    "dns_domain",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
];

const PROVIDER: &[&str] = &[
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
];

const READ_ONLY: &[&str] = &[
    "status",
    "subnets",
    "availability_zones",
    "created_at",
    "updated_at",
    "revision_number",
];

pub fn to_json(v: &NetworkView) -> Value {
    let n = &v.net;
    json!({
        "id": n.id,
        "name": n.name,
        "tenant_id": n.project_id,
        "project_id": n.project_id,
        "admin_state_up": n.admin_state_up,
        "status": n.status,
        "subnets": v.subnets,
        "shared": n.shared,
        "availability_zone_hints": json_list(&n.availability_zone_hints),
        "availability_zones": [AVAILABILITY_ZONE],
        "router:external": n.external,
        "description": n.description,
        "port_security_enabled": n.port_security_enabled,
        "mtu": n.mtu,
        "dns_domain": n.dns_domain,
        "tags": v.tags,
        "created_at": ts(n.created_at),
        "updated_at": ts(n.updated_at),
        "revision_number": n.revision_number,
        "provider:network_type": n.network_type,
        "provider:physical_network": n.physical_network,
        "provider:segmentation_id": n.segmentation_id,
    })
}

/// Attributes this caller may not read.
fn hidden(n: &Network, ctx: &AuthContext) -> Vec<&'static str> {
    PROVIDER
        .iter()
        .copied()
        .filter(|a| !n.allowed(ctx, &format!("get_network:{a}"), &Target::new()))
        .collect()
}

pub async fn list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let unreadable = hidden(&n, &ctx);
    let lq = ListQuery::parse(&q, ATTRS)?.unreadable(&unreadable);
    let items = n
        .network_views(None)
        .await?
        .iter()
        .filter(|v| n.allowed(&ctx, "get_network", &v.target()))
        .map(to_json)
        .collect();
    Ok(ok(lq.respond(
        "networks",
        &n.url("/networks"),
        items,
        &unreadable,
    )?))
}

pub async fn show(State(n): S, ctx: Ctx, Path(id): Path<String>, q: Q) -> Result<Response, Error> {
    let fields = ListQuery::fields(&q);
    let v = n.visible_network(&ctx, &id).await?;
    Ok(entity(
        StatusCode::OK,
        "network",
        fields.select(to_json(&v), &hidden(&n, &ctx)),
    ))
}

/// The provider attributes of a body: `None` when absent, `Some(None)`
/// when `null`.
struct Provider {
    network_type: Option<String>,
    physical_network: Option<Option<String>>,
    segmentation_id: Option<Option<i64>>,
}

fn provider(b: &mut Body) -> Result<Provider, Error> {
    let t = b.string("provider:network_type", 64)?;
    let p = match b.take("provider:physical_network") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(match v {
            Value::String(s) if s.len() <= 64 && body::valid_name(&s) && !s.is_empty() => s,
            other => {
                return Err(fault::invalid_attr(
                    "provider:physical_network",
                    format!(
                        "'{}' is not a valid string",
                        body::shown(&other.to_string())
                    ),
                ))
            }
        })),
    };
    let s = b.int_or_null("provider:segmentation_id")?;
    Ok(Provider {
        network_type: t,
        physical_network: p,
        segmentation_id: s,
    })
}

fn az_hints(b: &mut Body) -> Result<Option<Vec<String>>, Error> {
    match b.take("availability_zone_hints") {
        None => Ok(None),
        Some(v) => body::string_list("availability_zone_hints", &v, 255).map(Some),
    }
}

fn dns_domain(b: &mut Body) -> Result<Option<String>, Error> {
    let d = b.string("dns_domain", 255)?;
    if let Some(d) = &d {
        body::valid_dns_domain(d).map_err(|r| fault::invalid_attr("dns_domain", r))?;
    }
    Ok(d)
}

fn mtu(b: &mut Body) -> Result<Option<u32>, Error> {
    match b.int_or_null("mtu")? {
        None | Some(None) => Ok(None),
        Some(Some(m)) if (0..=u32::MAX as i64).contains(&m) => Ok(Some(m as u32)),
        Some(Some(m)) => Err(fault::invalid_attr(
            "mtu",
            format!("'{m}' is not a valid MTU"),
        )),
    }
}

/// One element of a create body, parsed.
fn create_request(v: Value) -> Result<NetworkCreate, Error> {
    let mut b = Body::new(v, "network")?;
    let pv = provider(&mut b)?;
    let req = NetworkCreate {
        project_id: b.project()?,
        name: b.name("name")?.unwrap_or_default(),
        description: b.description()?.unwrap_or_default(),
        admin_state_up: b.boolean("admin_state_up")?.unwrap_or(true),
        shared: b.boolean("shared")?.unwrap_or(false),
        external: b.boolean("router:external")?.unwrap_or(false),
        mtu: mtu(&mut b)?,
        network_type: pv.network_type,
        physical_network: pv.physical_network.flatten(),
        segmentation_id: pv.segmentation_id.flatten(),
        port_security_enabled: b.boolean("port_security_enabled")?,
        dns_domain: dns_domain(&mut b)?.unwrap_or_default(),
        availability_zone_hints: az_hints(&mut b)?.unwrap_or_default(),
        tags: b.tags()?,
    };
    b.finish(Op::Create, READ_ONLY)?;
    Ok(req)
}

/// `POST /v2.0/networks`: one network, or many at once
/// (`{"networks": [...]}`), created all or none.
pub async fn create(State(n): S, ctx: Ctx, JsonBody(v): JsonBody) -> Result<Response, Error> {
    match super::create_body(v, "network", "networks")? {
        super::CreateBody::One(v) => {
            let view = n.network_create(&ctx, create_request(v)?).await?;
            Ok(entity(
                StatusCode::CREATED,
                "network",
                ListQuery::default().select(to_json(&view), &hidden(&n, &ctx)),
            ))
        }
        super::CreateBody::Bulk(items) => {
            let reqs = items
                .into_iter()
                .map(create_request)
                .collect::<Result<Vec<_>, Error>>()?;
            let views = n.network_create_bulk(&ctx, reqs).await?;
            let items = views
                .iter()
                .map(|view| ListQuery::default().select(to_json(view), &hidden(&n, &ctx)))
                .collect();
            Ok(entity(StatusCode::CREATED, "networks", Value::Array(items)))
        }
    }
}

pub async fn update(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "network")?;
    let pv = provider(&mut b)?;
    let req = NetworkUpdate {
        name: b.name("name")?,
        description: b.description()?,
        admin_state_up: b.boolean("admin_state_up")?,
        shared: b.boolean("shared")?,
        external: b.boolean("router:external")?,
        mtu: mtu(&mut b)?,
        port_security_enabled: b.boolean("port_security_enabled")?,
        dns_domain: dns_domain(&mut b)?,
        availability_zone_hints: az_hints(&mut b)?,
        network_type: pv.network_type,
        physical_network: pv.physical_network,
        segmentation_id: pv.segmentation_id,
    };
    let mut ro = READ_ONLY.to_vec();
    ro.extend(["tenant_id", "project_id", "tags"]);
    b.finish(Op::Update, &ro)?;
    let view = n.network_update(&ctx, &id, req).await?;
    Ok(entity(
        StatusCode::OK,
        "network",
        ListQuery::default().select(to_json(&view), &hidden(&n, &ctx)),
    ))
}

pub async fn delete(State(n): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    n.network_delete(&ctx, &id).await?;
    Ok(no_content())
}
