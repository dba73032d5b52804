//! Ports.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{AuthContext, Ctx, Error, Target};

use super::body::{self, Body, Op, DEVICE_MAX};
use super::query::ListQuery;
use super::{entity, json_list, no_content, ok, ts, JsonBody, Q, S};
use crate::app::addr;
use crate::app::fault;
use crate::app::ipam::FixedIpRequest;
use crate::app::port::{hostname, vif_type, AddressPair, PortCreate, PortUpdate, VNIC_TYPES};
use crate::app::view::PortView;
use crate::app::Network;
use crate::store as db;

pub const ATTRS: &[&str] = &[
    "id",
    "name",
    "network_id",
    "tenant_id",
    "project_id",
    "mac_address",
    "admin_state_up",
    "status",
    "device_id",
    "device_owner",
    "fixed_ips",
    "allowed_address_pairs",
    "security_groups",
    "port_security_enabled",
    "binding:host_id",
    "binding:vif_type",
    "binding:vif_details",
    "binding:vnic_type",
    "binding:profile",
    "dns_name",
    "dns_assignment",
    "description",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

const BINDING: &[&str] = &[
    "binding:vif_type",
    "binding:vif_details",
    "binding:host_id",
    "binding:profile",
];

const READ_ONLY: &[&str] = &[
    "status",
    "binding:vif_type",
    "binding:vif_details",
    "dns_assignment",
    "created_at",
    "updated_at",
    "revision_number",
];

/// Neutron's default `dns_domain`.
const DNS_DOMAIN: &str = "openstacklocal.";

pub fn to_json(v: &PortView) -> Value {
    let p = &v.port;
    let fixed: Vec<Value> = v
        .fixed_ips
        .iter()
        .map(|a| json!({"subnet_id": a.subnet_id, "ip_address": a.ip_address}))
        .collect();
    let dns: Vec<Value> = v
        .fixed_ips
        .iter()
        .map(|a| {
            let h = hostname(&p.dns_name, Some(&a.ip_address));
            json!({"hostname": h, "ip_address": a.ip_address, "fqdn": format!("{h}.{DNS_DOMAIN}")})
        })
        .collect();
    let vif = vif_type(p);
    let details = if vif == "bridge" {
        json!({"port_filter": true, "connectivity": "l2"})
    } else {
        json!({})
    };
    let sgs = if p.port_security_enabled {
        v.security_groups.clone()
    } else {
        Vec::new()
    };
    json!({
        "id": p.id,
        "name": p.name,
        "network_id": p.network_id,
        "tenant_id": p.project_id,
        "project_id": p.project_id,
        "mac_address": p.mac_address,
        "admin_state_up": p.admin_state_up,
        "status": p.status,
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "fixed_ips": fixed,
        "allowed_address_pairs": json_list(&p.allowed_address_pairs),
        "security_groups": sgs,
        "port_security_enabled": p.port_security_enabled,
        "binding:host_id": p.host_id,
        "binding:vif_type": vif,
        "binding:vif_details": details,
        "binding:vnic_type": p.vnic_type,
        "binding:profile": serde_json::from_str::<Value>(&p.binding_profile).unwrap_or(json!({})),
        "dns_name": p.dns_name,
        "dns_assignment": dns,
        "description": p.description,
        "tags": v.tags,
        "created_at": ts(p.created_at),
        "updated_at": ts(p.updated_at),
        "revision_number": p.revision_number,
    })
}

fn hidden(n: &Network, ctx: &AuthContext) -> Vec<&'static str> {
    BINDING
        .iter()
        .copied()
        .filter(|a| !n.allowed(ctx, &format!("get_port:{a}"), &Target::new()))
        .collect()
}

pub async fn list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let unreadable = hidden(&n, &ctx);
    let lq = ListQuery::parse(&q, ATTRS)?.unreadable(&unreadable);
    let sel = db::port::Select {
        network_id: lq.single("network_id"),
        device_id: lq.single("device_id"),
        ..Default::default()
    };
    let items = n
        .port_views(&sel)
        .await?
        .iter()
        .filter(|v| n.allowed(&ctx, "get_port", &v.target()))
        .map(to_json)
        .collect();
    Ok(ok(lq.respond(
        "ports",
        &n.url("/ports"),
        items,
        &unreadable,
    )?))
}

pub async fn show(State(n): S, ctx: Ctx, Path(id): Path<String>, q: Q) -> Result<Response, Error> {
    let v = n.load_port(&id).await?;
    if !n.allowed(&ctx, "get_port", &v.target()) {
        return Err(fault::port_not_found(&id));
    }
    Ok(entity(
        StatusCode::OK,
        "port",
        ListQuery::fields(&q).select(to_json(&v), &hidden(&n, &ctx)),
    ))
}

fn mac(v: &Value) -> Result<String, Error> {
    let bad = || {
        fault::invalid_attr(
            "mac_address",
            format!(
                "'{}' is not a valid MAC address",
                body::shown(&v.to_string())
            ),
        )
    };
    let Value::String(s) = v else {
        return Err(bad());
    };
    let m = addr::parse_mac(s)
        .filter(addr::is_unicast_mac)
        .ok_or_else(bad)?;
    Ok(addr::format_mac(&m))
}

fn fixed_ips(v: &Value) -> Result<Vec<FixedIpRequest>, Error> {
    let bad = |x: &Value| {
        fault::invalid_attr(
            "fixed_ips",
            format!(
                "Invalid data format for fixed IP: '{}'",
                body::shown(&x.to_string())
            ),
        )
    };
    let Value::Array(items) = v else {
        return Err(bad(v));
    };
    let mut out: Vec<FixedIpRequest> = Vec::new();
    for i in items {
        let obj = i.as_object().ok_or_else(|| bad(i))?;
        if obj.keys().any(|k| k != "subnet_id" && k != "ip_address") {
            return Err(bad(i));
        }
        let subnet_id = obj
            .get("subnet_id")
            .map(|s| body::uuid_value("fixed_ips", s))
            .transpose()?;
        let ip_address = obj
            .get("ip_address")
            .map(|s| body::ip_value("fixed_ips", s))
            .transpose()?;
        if let Some(ip) = ip_address {
            if out.iter().any(|o| o.ip_address == Some(ip)) {
                return Err(fault::invalid_attr(
                    "fixed_ips",
                    format!("Duplicate IP address '{ip}'"),
                ));
            }
        }
        out.push(FixedIpRequest {
            subnet_id,
            ip_address,
        });
    }
    Ok(out)
}

/// Allowed address pairs with Neutron's checks, plus ours: a /0 pair would
/// switch anti-spoofing off for the whole address family, so it is
/// refused (security checklist item 14).
fn address_pairs(n: &Network, v: &Value) -> Result<Vec<AddressPair>, Error> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(fault::bad_request("Allowed address pairs must be a list.")),
    };
    if items.len() > n.cfg.max_allowed_address_pairs {
        return Err(fault::bad(
            "AllowedAddressPairExhausted",
            format!(
                "The number of allowed address pair exceeds the maximum {}.",
                n.cfg.max_allowed_address_pairs
            ),
        ));
    }
    let mut out: Vec<AddressPair> = Vec::new();
    for i in items {
        let Some(obj) = i.as_object() else {
            return Err(fault::bad_request(format!(
                "'{}' is not a dictionary",
                body::shown(&i.to_string())
            )));
        };
        let extra: Vec<&String> = obj
            .keys()
            .filter(|k| *k != "ip_address" && *k != "mac_address")
            .collect();
        if !extra.is_empty() {
            return Err(fault::bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                extra
                    .iter()
                    .map(|k| body::shown(k))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mac_address = match obj.get("mac_address") {
            None | Some(Value::Null) => None,
            Some(m) => Some(mac(m).map_err(|e| fault::bad_request(e.message))?),
        };
        let Some(ip) = obj.get("ip_address") else {
            return Err(fault::bad(
                "AllowedAddressPairsMissingIP",
                "AllowedAddressPair must contain ip_address",
            ));
        };
        let Value::String(ip) = ip else {
            return Err(fault::bad_request(format!(
                "'{}' is not a valid IP address",
                body::shown(&ip.to_string())
            )));
        };
        let parsed = if ip.contains('/') {
            let c = addr::parse_cidr(ip).ok_or_else(|| {
                fault::bad_request(format!("'{}' is not a valid IP subnet", body::shown(ip)))
            })?;
            if c.prefix == 0 {
                return Err(fault::bad(
                    "AllowedAddressPairsZeroPrefixNotAllowed",
                    format!(
                        "Allowed address pair {} would allow any source address: a prefix of /0 is not allowed.",
                        body::shown(ip)
                    ),
                ));
            }
            c
        } else {
            let a = addr::parse_ip(ip).ok_or_else(|| {
                fault::bad_request(format!("'{}' is not a valid IP address", body::shown(ip)))
            })?;
            netmodel::Cidr {
                addr: a,
                prefix: addr::bits(a) as u8,
            }
        };
        if parsed.addr.is_multicast() {
            return Err(fault::bad_request(format!(
                "Multicast IP subnet is not supported: {}",
                body::shown(ip)
            )));
        }
        let ip_address = if ip.contains('/') {
            parsed.to_string()
        } else {
            parsed.addr.to_string()
        };
        if out
            .iter()
            .any(|o| o.ip_address == ip_address && o.mac_address == mac_address)
        {
            return Err(fault::bad(
                "DuplicateAddressPairInRequest",
                format!(
                    "Request contains duplicate address pair: mac_address {} ip_address {ip_address}.",
                    mac_address.as_deref().unwrap_or("None")
                ),
            ));
        }
        out.push(AddressPair {
            ip_address,
            mac_address,
        });
    }
    Ok(out)
}

fn security_groups(v: &Value) -> Result<Vec<String>, Error> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => {
            let mut out: Vec<String> = Vec::new();
            for i in items {
                let id = body::uuid_value("security_groups", i)?;
                if !out.contains(&id) {
                    out.push(id);
                }
            }
            Ok(out)
        }
        other => Err(fault::invalid_attr(
            "security_groups",
            format!("'{}' is not a list", body::shown(&other.to_string())),
        )),
    }
}

fn vnic(b: &mut Body) -> Result<Option<String>, Error> {
    match b.string("binding:vnic_type", 64)? {
        Some(v) if !VNIC_TYPES.contains(&v.as_str()) => Err(fault::invalid_attr(
            "binding:vnic_type",
            format!("'{}' is not in {VNIC_TYPES:?}", body::shown(&v)),
        )),
        other => Ok(other),
    }
}

fn profile(b: &mut Body) -> Result<Option<Value>, Error> {
    match b.take("binding:profile") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(json!({}))),
        Some(v @ Value::Object(_)) => {
            if v.to_string().len() > 4096 {
                return Err(fault::invalid_attr("binding:profile", "too large"));
            }
            Ok(Some(v))
        }
        Some(other) => Err(fault::invalid_attr(
            "binding:profile",
            format!("'{}' is not a dictionary", body::shown(&other.to_string())),
        )),
    }
}

fn dns_name(b: &mut Body) -> Result<Option<String>, Error> {
    match b.take("dns_name") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(String::new())),
        Some(Value::String(s)) => {
            body::valid_dns_name(&s).map_err(|r| fault::invalid_attr("dns_name", r))?;
            Ok(Some(s.to_ascii_lowercase()))
        }
        Some(other) => Err(fault::invalid_attr(
            "dns_name",
            format!(
                "'{}' is not a valid string",
                body::shown(&other.to_string())
            ),
        )),
    }
}

/// One element of a create body, parsed.
fn create_request(n: &Network, v: Value) -> Result<PortCreate, Error> {
    let mut b = Body::new(v, "port")?;
    let network_id = b.uuid("network_id")?.ok_or_else(|| {
        fault::bad_request("Failed to parse request. Required attribute 'network_id' not specified")
    })?;
    let req = PortCreate {
        project_id: b.project()?,
        network_id,
        name: b.name("name")?.unwrap_or_default(),
        description: b.description()?.unwrap_or_default(),
        admin_state_up: b.boolean("admin_state_up")?.unwrap_or(true),
        mac_address: b.take("mac_address").map(|v| mac(&v)).transpose()?,
        fixed_ips: b.take("fixed_ips").map(|v| fixed_ips(&v)).transpose()?,
        device_owner: b.string("device_owner", DEVICE_MAX)?.unwrap_or_default(),
        device_id: b.string("device_id", DEVICE_MAX)?.unwrap_or_default(),
        host_id: b.string("binding:host_id", 255)?,
        vnic_type: vnic(&mut b)?,
        profile: profile(&mut b)?,
        port_security_enabled: b.boolean("port_security_enabled")?,
        security_groups: b
            .take("security_groups")
            .map(|v| security_groups(&v))
            .transpose()?,
        allowed_address_pairs: b
            .take("allowed_address_pairs")
            .map(|v| address_pairs(n, &v))
            .transpose()?,
        dns_name: dns_name(&mut b)?,
        tags: b.tags()?,
    };
    b.finish(Op::Create, READ_ONLY)?;
    Ok(req)
}

/// `POST /v2.0/ports`: one port, or many at once
/// (`{"ports": [...]}`), created all or none.
pub async fn create(State(n): S, ctx: Ctx, JsonBody(v): JsonBody) -> Result<Response, Error> {
    match super::create_body(v, "port", "ports")? {
        super::CreateBody::One(v) => {
            let view = n.port_create(&ctx, create_request(&n, v)?).await?;
            Ok(entity(
                StatusCode::CREATED,
                "port",
                ListQuery::default().select(to_json(&view), &hidden(&n, &ctx)),
            ))
        }
        super::CreateBody::Bulk(items) => {
            let reqs = items
                .into_iter()
                .map(|v| create_request(&n, v))
                .collect::<Result<Vec<_>, Error>>()?;
            let views = n.port_create_bulk(&ctx, &reqs).await?;
            let items = views
                .iter()
                .map(|view| ListQuery::default().select(to_json(view), &hidden(&n, &ctx)))
                .collect();
            Ok(entity(StatusCode::CREATED, "ports", Value::Array(items)))
        }
    }
}

pub async fn update(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "port")?;
    let req = PortUpdate {
        name: b.name("name")?,
        description: b.description()?,
        admin_state_up: b.boolean("admin_state_up")?,
        mac_address: b.take("mac_address").map(|v| mac(&v)).transpose()?,
        fixed_ips: b.take("fixed_ips").map(|v| fixed_ips(&v)).transpose()?,
        device_owner: b.string("device_owner", DEVICE_MAX)?,
        device_id: b.string("device_id", DEVICE_MAX)?,
        host_id: b.string("binding:host_id", 255)?,
        vnic_type: vnic(&mut b)?,
        profile: profile(&mut b)?,
        port_security_enabled: b.boolean("port_security_enabled")?,
        security_groups: b
            .take("security_groups")
            .map(|v| security_groups(&v))
            .transpose()?,
        allowed_address_pairs: b
            .take("allowed_address_pairs")
            .map(|v| address_pairs(&n, &v))
            .transpose()?,
        dns_name: dns_name(&mut b)?,
    };
    let mut ro = READ_ONLY.to_vec();
    ro.extend(["tenant_id", "project_id", "network_id", "tags"]);
    b.finish(Op::Update, &ro)?;
    let view = n.port_update(&ctx, &id, req).await?;
    Ok(entity(
        StatusCode::OK,
        "port",
        ListQuery::default().select(to_json(&view), &hidden(&n, &ctx)),
    ))
}

pub async fn delete(State(n): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    n.port_delete(&ctx, &id).await?;
    Ok(no_content())
}
