//! Routers, their interfaces and extra routes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{Ctx, Error};

use super::body::{self, Body, Op};
use super::query::ListQuery;
use super::{entity, json_list, no_content, ok, ts, JsonBody, Q, S};
use crate::app::fault;
use crate::app::ipam::FixedIpRequest;
use crate::app::network::AVAILABILITY_ZONE;
use crate::app::router::{GatewayRequest, InterfaceRequest, RouterCreate, RouterUpdate};
use crate::app::view::RouterView;

pub const ATTRS: &[&str] = &[
    "id",
    "name",
    "tenant_id",
    "project_id",
    "admin_state_up",
    "status",
    "external_gateway_info",
    "routes",
    "availability_zone_hints",
    "availability_zones",
    "description",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

const READ_ONLY: &[&str] = &[
    "status",
    "availability_zones",
    "created_at",
    "updated_at",
    "revision_number",
];

pub fn to_json(v: &RouterView) -> Value {
    let r = &v.router;
    let gw = match &v.gateway {
        Some((net, allocs)) => json!({
            "network_id": net,
            "enable_snat": r.enable_snat,
            "external_fixed_ips": allocs
                .iter()
                .map(|a| json!({"subnet_id": a.subnet_id, "ip_address": a.ip_address}))
                .collect::<Vec<_>>(),
        }),
        None => Value::Null,
    };
    json!({
        "id": r.id,
        "name": r.name,
        "tenant_id": r.project_id,
        "project_id": r.project_id,
        "admin_state_up": r.admin_state_up,
        "status": r.status,
        "external_gateway_info": gw,
        "routes": json_list(&r.routes),
        "availability_zone_hints": json_list(&r.availability_zone_hints),
        "availability_zones": [AVAILABILITY_ZONE],
        "description": r.description,
        "tags": v.tags,
        "created_at": ts(r.created_at),
        "updated_at": ts(r.updated_at),
        "revision_number": r.revision_number,
    })
}

pub async fn list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, ATTRS)?;
    let items = n
        .router_views(None)
        .await?
        .iter()
        .filter(|v| n.allowed(&ctx, "get_router", &v.target()))
        .map(to_json)
        .collect();
    Ok(ok(lq.respond("routers", &n.url("/routers"), items, &[])?))
}

pub async fn show(State(n): S, ctx: Ctx, Path(id): Path<String>, q: Q) -> Result<Response, Error> {
    let v = n.load_router(&id).await?;
    if !n.allowed(&ctx, "get_router", &v.target()) {
        return Err(fault::router_not_found(&id));
    }
    Ok(entity(
        StatusCode::OK,
        "router",
        ListQuery::fields(&q).select(to_json(&v), &[]),
    ))
}

/// `external_gateway_info`: `null` or `{}` clears it.
fn gateway(v: Value) -> Result<Option<GatewayRequest>, Error> {
    let key = "external_gateway_info";
    let obj = match v {
        Value::Null => return Ok(None),
        Value::Object(o) if o.is_empty() => return Ok(None),
        Value::Object(o) => o,
        other => {
            return Err(fault::invalid_attr(
                key,
                format!("'{}' is not a dictionary", body::shown(&other.to_string())),
            ))
        }
    };
    let mut b = Body::bare(Value::Object(obj))?;
    let network_id = b
        .uuid("network_id")
        .map_err(|e| fault::invalid_attr(key, e.message))?
        .ok_or_else(|| {
            fault::invalid_attr(
                key,
                "Validation of dictionary's keys failed. Expected keys: {'network_id'}",
            )
        })?;
    let enable_snat = b.boolean("enable_snat")?;
    let external_fixed_ips = match b.take("external_fixed_ips") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for i in items {
                let o = i
                    .as_object()
                    .filter(|o| o.keys().all(|k| k == "subnet_id" || k == "ip_address"));
                let Some(o) = o else {
                    return Err(fault::invalid_attr(
                        key,
                        format!(
                            "Invalid data format for fixed IP: '{}'",
                            body::shown(&i.to_string())
                        ),
                    ));
                };
                out.push(FixedIpRequest {
                    subnet_id: o
                        .get("subnet_id")
                        .map(|s| body::uuid_value(key, s))
                        .transpose()?,
                    ip_address: o
                        .get("ip_address")
                        .map(|s| body::ip_value(key, s))
                        .transpose()?,
                });
            }
            Some(out)
        }
        Some(other) => {
            return Err(fault::invalid_attr(
                key,
                format!(
                    "Invalid data format for fixed IP: '{}'",
                    body::shown(&other.to_string())
                ),
            ))
        }
    };
    b.finish(Op::Create, &[])
        .map_err(|e| fault::invalid_attr(key, e.message))?;
    Ok(Some(GatewayRequest {
        network_id,
        enable_snat,
        external_fixed_ips,
    }))
}

fn az_hints(b: &mut Body) -> Result<Option<Vec<String>>, Error> {
    match b.take("availability_zone_hints") {
        None => Ok(None),
        Some(v) => body::string_list("availability_zone_hints", &v, 255).map(Some),
    }
}

pub async fn create(State(n): S, ctx: Ctx, JsonBody(v): JsonBody) -> Result<Response, Error> {
    let mut b = Body::new(v, "router")?;
    let req = RouterCreate {
        project_id: b.project()?,
        name: b.name("name")?.unwrap_or_default(),
        description: b.description()?.unwrap_or_default(),
        admin_state_up: b.boolean("admin_state_up")?.unwrap_or(true),
        gateway: b
            .take("external_gateway_info")
            .map(gateway)
            .transpose()?
            .flatten(),
        availability_zone_hints: az_hints(&mut b)?.unwrap_or_default(),
        tags: b.tags()?,
    };
    let mut ro = READ_ONLY.to_vec();
    ro.push("routes");
    b.finish(Op::Create, &ro)?;
    let view = n.router_create(&ctx, req).await?;
    Ok(entity(StatusCode::CREATED, "router", to_json(&view)))
}

pub async fn update(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "router")?;
    let req = RouterUpdate {
        name: b.name("name")?,
        description: b.description()?,
        admin_state_up: b.boolean("admin_state_up")?,
        gateway: b.take("external_gateway_info").map(gateway).transpose()?,
        routes: match b.take("routes") {
            None => None,
            Some(Value::Null) => Some(Vec::new()),
            Some(v) => Some(super::subnet::routes("routes", &v)?),
        },
    };
    let mut ro = READ_ONLY.to_vec();
    ro.extend(["tenant_id", "project_id", "tags", "availability_zone_hints"]);
    b.finish(Op::Update, &ro)?;
    let view = n.router_update(&ctx, &id, req).await?;
    Ok(entity(StatusCode::OK, "router", to_json(&view)))
}

pub async fn delete(State(n): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    n.router_delete(&ctx, &id).await?;
    Ok(no_content())
}

fn interface(v: Value) -> Result<InterfaceRequest, Error> {
    let mut b = Body::bare(v)?;
    let req = InterfaceRequest {
        subnet_id: b.uuid("subnet_id")?,
        port_id: b.uuid("port_id")?,
    };
    b.finish(Op::Create, &[])?;
    Ok(req)
}

pub async fn add_interface(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let req = interface(v)?;
    Ok(ok(n.router_add_interface(&ctx, &id, req).await?))
}

pub async fn remove_interface(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let req = interface(v)?;
    Ok(ok(n.router_remove_interface(&ctx, &id, req).await?))
}

async fn extra_routes(n: S, ctx: Ctx, id: String, v: Value, add: bool) -> Result<Response, Error> {
    let State(n) = n;
    let mut b = Body::new(v, "router")?;
    let routes = match b.take("routes") {
        Some(v) => super::subnet::routes("routes", &v)?,
        None => {
            return Err(fault::bad_request(
                "Failed to parse request. Required attribute 'routes' not specified",
            ))
        }
    };
    b.finish(Op::Update, &[])?;
    let view = n.router_extra_routes(&ctx, &id, routes, add).await?;
    Ok(entity(StatusCode::OK, "router", to_json(&view)))
}

pub async fn add_routes(
    n: S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    extra_routes(n, ctx, id, v, true).await
}

pub async fn remove_routes(
    n: S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    extra_routes(n, ctx, id, v, false).await
}
