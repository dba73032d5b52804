//! Security groups and security group rules.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{Ctx, Error};

use super::body::{self, Body, Op};
use super::query::ListQuery;
use super::{entity, no_content, ok, ts, JsonBody, Q, S};
use crate::app::addr;
use crate::app::fault;
use crate::app::secgroup::{convert_protocol, RuleCreate};
use crate::app::view::{rule_target, SecurityGroupView};
use crate::store as db;

pub const ATTRS: &[&str] = &[
    "id",
    "name",
    "description",
    "tenant_id",
    "project_id",
    "security_group_rules",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

pub const RULE_ATTRS: &[&str] = &[
    "id",
    "security_group_id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "description",
    "tenant_id",
    "project_id",
    "created_at",
    "updated_at",
    "revision_number",
];

const READ_ONLY: &[&str] = &[
    "security_group_rules",
    "created_at",
    "updated_at",
    "revision_number",
];

pub fn rule_json(r: &db::secgroup::Rule) -> Value {
    json!({
        "id": r.id,
        "security_group_id": r.security_group_id,
        "direction": r.direction,
        "ethertype": r.ethertype,
        "protocol": r.protocol,
        "port_range_min": r.port_range_min,
        "port_range_max": r.port_range_max,
        "remote_ip_prefix": r.remote_ip_prefix,
        "remote_group_id": r.remote_group_id,
        "description": r.description,
        "tenant_id": r.project_id,
        "project_id": r.project_id,
        "created_at": ts(r.created_at),
        "updated_at": ts(r.updated_at),
        "revision_number": r.revision_number,
    })
}

pub fn to_json(v: &SecurityGroupView) -> Value {
    let g = &v.sg;
    json!({
        "id": g.id,
        "name": g.name,
        "description": g.description,
        "tenant_id": g.project_id,
        "project_id": g.project_id,
        "security_group_rules": v.rules.iter().map(rule_json).collect::<Vec<_>>(),
        "tags": v.tags,
        "created_at": ts(g.created_at),
        "updated_at": ts(g.updated_at),
        "revision_number": g.revision_number,
    })
}

pub async fn list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, ATTRS)?;
    // Neutron creates the caller's default group when it lists groups.
    n.ensure_default_for_caller(&ctx).await?;
    let items = n
        .security_group_views(None)
        .await?
        .iter()
        .filter(|v| n.allowed(&ctx, "get_security_group", &v.target()))
        .map(to_json)
        .collect();
    Ok(ok(lq.respond(
        "security_groups",
        &n.url("/security-groups"),
        items,
        &[],
    )?))
}

pub async fn show(State(n): S, ctx: Ctx, Path(id): Path<String>, q: Q) -> Result<Response, Error> {
    let v = n.load_security_group(&id).await?;
    if !n.allowed(&ctx, "get_security_group", &v.target()) {
        return Err(fault::security_group_not_found(&id));
    }
    Ok(entity(
        StatusCode::OK,
        "security_group",
        ListQuery::fields(&q).select(to_json(&v), &[]),
    ))
}

pub async fn create(State(n): S, ctx: Ctx, JsonBody(v): JsonBody) -> Result<Response, Error> {
    let mut b = Body::new(v, "security_group")?;
    let project = b.project()?;
    let name = b.name("name")?.unwrap_or_default();
    let description = b.description()?.unwrap_or_default();
    let tags = b.tags()?;
    if let Some(s) = b.take("stateful") {
        if body::to_bool(&s) != Some(true) {
            return Err(fault::bad_request(
                "Stateless security groups are not supported",
            ));
        }
    }
    b.finish(Op::Create, READ_ONLY)?;
    let view = n
        .security_group_create(&ctx, project, name, description, tags)
        .await?;
    Ok(entity(
        StatusCode::CREATED,
        "security_group",
        to_json(&view),
    ))
}

pub async fn update(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "security_group")?;
    let name = b.name("name")?;
    let description = b.description()?;
    if let Some(s) = b.take("stateful") {
        if body::to_bool(&s) != Some(true) {
            return Err(fault::bad_request(
                "Stateless security groups are not supported",
            ));
        }
    }
    let mut ro = READ_ONLY.to_vec();
    ro.extend(["tenant_id", "project_id", "tags"]);
    b.finish(Op::Update, &ro)?;
    let view = n
        .security_group_update(&ctx, &id, name, description)
        .await?;
    Ok(entity(StatusCode::OK, "security_group", to_json(&view)))
}

pub async fn delete(State(n): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    n.security_group_delete(&ctx, &id).await?;
    Ok(no_content())
}

pub async fn rule_list(State(n): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let lq = ListQuery::parse(&q, RULE_ATTRS)?;
    let items = n
        .rule_views(None)
        .await?
        .iter()
        .filter(|(r, owner)| n.allowed(&ctx, "get_security_group_rule", &rule_target(r, owner)))
        .map(|(r, _)| rule_json(r))
        .collect();
    Ok(ok(lq.respond(
        "security_group_rules",
        &n.url("/security-group-rules"),
        items,
        &[],
    )?))
}

pub async fn rule_show(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    q: Q,
) -> Result<Response, Error> {
    let (r, owner) = n.load_rule(&id).await?;
    if !n.allowed(&ctx, "get_security_group_rule", &rule_target(&r, &owner)) {
        return Err(fault::security_group_rule_not_found(&id));
    }
    Ok(entity(
        StatusCode::OK,
        "security_group_rule",
        ListQuery::fields(&q).select(rule_json(&r), &[]),
    ))
}

fn port_value(v: Value) -> Result<Option<i64>, Error> {
    match v {
        Value::Null => Ok(None),
        other => match body::to_int(&other) {
            Some(p) if (0..=65535).contains(&p) => Ok(Some(p)),
            _ => Err(fault::bad(
                "SecurityGroupInvalidPortValue",
                format!("Invalid value for port {}", body::shown(&other.to_string())),
            )),
        },
    }
}

pub async fn rule_create(State(n): S, ctx: Ctx, JsonBody(v): JsonBody) -> Result<Response, Error> {
    let mut b = Body::new(v, "security_group_rule")?;
    let project_id = b.project()?;
    let security_group_id = b.string("security_group_id", 255)?.ok_or_else(|| {
        fault::bad_request(
            "Failed to parse request. Required attribute 'security_group_id' not specified",
        )
    })?;
    let direction = match b.take("direction") {
        Some(Value::String(d)) if d == "ingress" || d == "egress" => d,
        Some(other) => {
            return Err(fault::invalid_attr(
                "direction",
                format!(
                    "{} is not in ['ingress', 'egress']",
                    body::shown(&other.to_string())
                ),
            ))
        }
        None => {
            return Err(fault::bad_request(
                "Failed to parse request. Required attribute 'direction' not specified",
            ))
        }
    };
    let ethertype = match b.take("ethertype") {
        None => "IPv4".to_string(),
        Some(Value::String(e)) if e.eq_ignore_ascii_case("ipv4") => "IPv4".into(),
        Some(Value::String(e)) if e.eq_ignore_ascii_case("ipv6") => "IPv6".into(),
        Some(other) => {
            return Err(fault::bad(
                "SecurityGroupRuleInvalidEtherType",
                format!(
                    "Security group rule for ethertype '{}' not supported. Allowed values are ['IPv4', 'IPv6'].",
                    body::shown(&other.to_string())
                ),
            ))
        }
    };
    let protocol = match b.take("protocol") {
        None => None,
        Some(v) => convert_protocol(&v)?,
    };
    let port_range_min = b
        .take("port_range_min")
        .map(port_value)
        .transpose()?
        .flatten();
    let port_range_max = b
        .take("port_range_max")
        .map(port_value)
        .transpose()?
        .flatten();
    let remote_ip_prefix = match b.take("remote_ip_prefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(
            addr::parse_cidr(&s)
                .or_else(|| {
                    addr::parse_ip(&s).map(|a| netmodel::Cidr {
                        addr: a,
                        prefix: addr::bits(a) as u8,
                    })
                })
                .ok_or_else(|| {
                    fault::bad(
                        "InvalidCIDR",
                        format!("Invalid CIDR {} given as IP prefix.", body::shown(&s)),
                    )
                })?,
        ),
        Some(other) => {
            return Err(fault::bad(
                "InvalidCIDR",
                format!(
                    "Invalid CIDR {} given as IP prefix.",
                    body::shown(&other.to_string())
                ),
            ))
        }
    };
    let remote_group_id = match b.take("remote_group_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 255 && !s.chars().any(body::is_unprintable) => Some(s),
        Some(other) => {
            return Err(fault::invalid_attr(
                "remote_group_id",
                format!(
                    "'{}' is not a valid string",
                    body::shown(&other.to_string())
                ),
            ))
        }
    };
    if let Some(v) = b.take("remote_address_group_id") {
        if !v.is_null() {
            return Err(fault::bad_request("Address groups are not supported"));
        }
    }
    let description = b.description()?.unwrap_or_default();
    b.finish(Op::Create, &["created_at", "updated_at", "revision_number"])?;
    let (rule, _) = n
        .rule_create(
            &ctx,
            RuleCreate {
                project_id,
                security_group_id,
                direction,
                ethertype,
                protocol,
                port_range_min,
                port_range_max,
                remote_ip_prefix,
                remote_group_id,
                description,
            },
        )
        .await?;
    Ok(entity(
        StatusCode::CREATED,
        "security_group_rule",
        rule_json(&rule),
    ))
}

pub async fn rule_update(
    State(n): S,
    ctx: Ctx,
    Path(id): Path<String>,
    JsonBody(v): JsonBody,
) -> Result<Response, Error> {
    let mut b = Body::new(v, "security_group_rule")?;
    let description = b.description()?;
    let mut ro: Vec<&str> = RULE_ATTRS.to_vec();
    ro.retain(|a| *a != "description");
    b.finish(Op::Update, &ro)?;
    let (rule, _) = n.rule_update(&ctx, &id, description).await?;
    Ok(entity(
        StatusCode::OK,
        "security_group_rule",
        rule_json(&rule),
    ))
}

pub async fn rule_delete(State(n): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    n.rule_delete(&ctx, &id).await?;
    Ok(no_content())
}
