//! Regions, services and endpoints.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use api::{Ctx, Error, Json, Target};

use super::{collection, entity, merge_extra, no_content, qbool, qget, Body, Q, S};
use crate::app::catalog::{EndpointCreate, EndpointUpdate, RegionRef};
use crate::app::{db_err, Identity};
use crate::store::{self as db, Filter};

const INTERFACES: &[&str] = &["public", "internal", "admin"];

fn region_json(id: &Identity, r: &db::catalog::Region) -> Value {
    let mut v = json!({
        "id": r.id, "description": r.description, "parent_region_id": r.parent_region_id,
        "links": {"self": id.url(&format!("/regions/{}", r.id))},
    });
    merge_extra(&mut v, &r.extra);
    v
}

fn service_json(id: &Identity, s: &db::catalog::Service) -> Value {
    let mut v = json!({
        "id": s.id, "type": s.kind, "name": s.name, "description": s.description, "enabled": s.enabled,
        "links": {"self": id.url(&format!("/services/{}", s.id))},
    });
    merge_extra(&mut v, &s.extra);
    v
}

fn endpoint_json(id: &Identity, e: &db::catalog::Endpoint) -> Value {
    let mut v = json!({
        "id": e.id, "service_id": e.service_id, "interface": e.interface, "url": e.url,
        "region_id": e.region_id, "region": e.region_id, "enabled": e.enabled,
        "links": {"self": id.url(&format!("/endpoints/{}", e.id))},
    });
    merge_extra(&mut v, &e.extra);
    v
}

async fn load_region(id: &Identity, rid: &str) -> Result<db::catalog::Region, Error> {
    db::catalog::region_get(&id.pool, rid)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("Could not find region: {rid}.")))
}

async fn check_parent(id: &Identity, rid: &str, parent: &Option<String>) -> Result<(), Error> {
    let Some(p) = parent else { return Ok(()) };
    if p == rid {
        return Err(Error::bad_request("A region cannot be its own parent."));
    }
    // Walk up from the parent: meeting rid means a cycle.
    let mut cur = Some(load_region(id, p).await?);
    let mut hops = 0;
    while let Some(r) = cur {
        if r.id == rid {
            return Err(Error::bad_request(
                "This parent would create a cycle of regions.",
            ));
        }
        hops += 1;
        if hops > 64 {
            break;
        }
        cur = match r.parent_region_id {
            Some(pp) => db::catalog::region_get(&id.pool, &pp)
                .await
                .map_err(db_err)?,
            None => None,
        };
    }
    Ok(())
}

pub async fn region_list(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    id.policy
        .enforce("identity:list_regions", &ctx, &Target::new())?;
    let mut f = Vec::new();
    if let Some(p) = qget(&q, "parent_region_id") {
        f.push(Filter::Text("parent_region_id", p.into()));
    }
    let items = db::catalog::region_list(&id.pool, &f)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| region_json(&id, r))
        .collect();
    Ok(collection(&id, "regions", "/regions", items))
}

pub async fn region_get(
    State(id): S,
    ctx: Ctx,
    Path(rid): Path<String>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:get_region", &ctx, &Target::new())?;
    let r = load_region(&id, &rid).await?;
    Ok(entity(StatusCode::OK, "region", region_json(&id, &r)))
}

async fn region_insert(id: &Identity, rid: Option<String>, v: Value) -> Result<Response, Error> {
    let mut b = Body::new(v, "region")?;
    let body_id = b.id("id")?;
    let rid = match (rid, body_id) {
        (Some(p), Some(bid)) if p != bid => {
            return Err(Error::bad_request(
                "The region id in the body does not match the one in the URL.",
            ))
        }
        (Some(p), _) => p,
        (None, Some(b)) => b,
        (None, None) => store::new_hex_id(),
    };
    let description = b.str("description", 255)?.unwrap_or_default();
    let parent_region_id = b.id("parent_region_id")?;
    let extra = Value::Object(b.extra()).to_string();
    check_parent(id, &rid, &parent_region_id).await?;
    let r = db::catalog::Region {
        id: rid,
        description,
        parent_region_id,
        extra,
    };
    let mut tx = id.begin().await?;
    db::catalog::region_insert(&mut tx, &r)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(entity(StatusCode::CREATED, "region", region_json(id, &r)))
}

pub async fn region_create(
    State(id): S,
    ctx: Ctx,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:create_region", &ctx, &Target::new())?;
    region_insert(&id, None, v).await
}

pub async fn region_put(
    State(id): S,
    ctx: Ctx,
    Path(rid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:create_region", &ctx, &Target::new())?;
    region_insert(&id, Some(rid), v).await
}

pub async fn region_update(
    State(id): S,
    ctx: Ctx,
    Path(rid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:update_region", &ctx, &Target::new())?;
    let mut r = load_region(&id, &rid).await?;
    let mut b = Body::new(v, "region")?;
    b.matching_id(&rid)?;
    if let Some(d) = b.str("description", 255)? {
        r.description = d;
    }
    if b.has("parent_region_id") {
        r.parent_region_id = b.id("parent_region_id")?;
        check_parent(&id, &rid, &r.parent_region_id).await?;
    }
    r.extra = b.merge_extra(&r.extra);
    let mut tx = id.begin().await?;
    db::catalog::region_update(&mut tx, &r)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(entity(StatusCode::OK, "region", region_json(&id, &r)))
}

pub async fn region_delete(
    State(id): S,
    ctx: Ctx,
    Path(rid): Path<String>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:delete_region", &ctx, &Target::new())?;
    load_region(&id, &rid).await?;
    let children =
        db::catalog::region_list(&id.pool, &[Filter::Text("parent_region_id", rid.clone())])
            .await
            .map_err(db_err)?;
    if !children.is_empty() {
        return Err(Error::forbidden(
            "Cannot delete a region that has child regions.",
        ));
    }
    let eps = db::catalog::endpoint_list(&id.pool, &[Filter::Text("region_id", rid.clone())])
        .await
        .map_err(db_err)?;
    if !eps.is_empty() {
        return Err(Error::forbidden(
            "Cannot delete a region that still has endpoints.",
        ));
    }
    let mut tx = id.begin().await?;
    db::catalog::region_delete(&mut tx, &rid)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(no_content())
}

async fn load_service(id: &Identity, sid: &str) -> Result<db::catalog::Service, Error> {
    db::catalog::service_get(&id.pool, sid)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("Could not find service: {sid}.")))
}

pub async fn service_list(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    id.policy
        .enforce("identity:list_services", &ctx, &Target::new())?;
    let mut f = Vec::new();
    if let Some(t) = qget(&q, "type") {
        f.push(Filter::Text("type", t.into()));
    }
    if let Some(n) = qget(&q, "name") {
        f.push(Filter::Text("name", n.into()));
    }
    let items = db::catalog::service_list(&id.pool, &f)
        .await
        .map_err(db_err)?
        .iter()
        .map(|s| service_json(&id, s))
        .collect();
    Ok(collection(&id, "services", "/services", items))
}

pub async fn service_get(
    State(id): S,
    ctx: Ctx,
    Path(sid): Path<String>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:get_service", &ctx, &Target::new())?;
    let s = load_service(&id, &sid).await?;
    Ok(entity(StatusCode::OK, "service", service_json(&id, &s)))
}

pub async fn service_create(
    State(id): S,
    ctx: Ctx,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:create_service", &ctx, &Target::new())?;
    let mut b = Body::new(v, "service")?;
    b.forbid(&["id"])?;
    let kind = b.required_name("type", 255)?;
    let name = b.name("name", 255)?.unwrap_or_default();
    let description = b.str("description", 65535)?.unwrap_or_default();
    let enabled = b.bool("enabled")?.unwrap_or(true);
    let extra = Value::Object(b.extra()).to_string();
    let s = db::catalog::Service {
        id: store::new_hex_id(),
        kind,
        name,
        description,
        enabled,
        extra,
    };
    let mut tx = id.begin().await?;
    db::catalog::service_insert(&mut tx, &s)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(entity(
        StatusCode::CREATED,
        "service",
        service_json(&id, &s),
    ))
}

pub async fn service_update(
    State(id): S,
    ctx: Ctx,
    Path(sid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:update_service", &ctx, &Target::new())?;
    let mut s = load_service(&id, &sid).await?;
    let mut b = Body::new(v, "service")?;
    b.matching_id(&sid)?;
    if let Some(t) = b.name("type", 255)? {
        s.kind = t;
    }
    if let Some(n) = b.name("name", 255)? {
        s.name = n;
    }
    if let Some(d) = b.str("description", 65535)? {
        s.description = d;
    }
    if let Some(e) = b.bool("enabled")? {
        s.enabled = e;
    }
    s.extra = b.merge_extra(&s.extra);
    let mut tx = id.begin().await?;
    db::catalog::service_update(&mut tx, &s)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(entity(StatusCode::OK, "service", service_json(&id, &s)))
}

pub async fn service_delete(
    State(id): S,
    ctx: Ctx,
    Path(sid): Path<String>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:delete_service", &ctx, &Target::new())?;
    load_service(&id, &sid).await?;
    let mut tx = id.begin().await?;
    db::catalog::service_delete(&mut tx, &sid)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(no_content())
}

async fn load_endpoint(id: &Identity, eid: &str) -> Result<db::catalog::Endpoint, Error> {
    db::catalog::endpoint_get(&id.pool, eid)
        .await
        .map_err(db_err)?
        .ok_or_else(|| Error::not_found(format!("Could not find endpoint: {eid}.")))
}

fn check_url(url: &str) -> Result<(), Error> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "Invalid input for field 'endpoint.url': {url:?} is not an http(s) URL."
        )))
    }
}

fn check_interface(i: &str) -> Result<(), Error> {
    if INTERFACES.contains(&i) {
        Ok(())
    } else {
        Err(Error::bad_request(format!("Invalid input for field 'endpoint.interface': {i:?} is not one of public, internal, admin.")))
    }
}

pub async fn endpoint_list(State(id): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    id.policy
        .enforce("identity:list_endpoints", &ctx, &Target::new())?;
    let mut f = Vec::new();
    if let Some(x) = qget(&q, "service_id") {
        f.push(Filter::Text("service_id", x.into()));
    }
    if let Some(x) = qget(&q, "interface") {
        f.push(Filter::Text("interface", x.into()));
    }
    if let Some(x) = qget(&q, "region_id").or_else(|| qget(&q, "region")) {
        f.push(Filter::Text("region_id", x.into()));
    }
    if let Some(e) = qbool(&q, "enabled")? {
        f.push(Filter::Bool("enabled", e));
    }
    let items = db::catalog::endpoint_list(&id.pool, &f)
        .await
        .map_err(db_err)?
        .iter()
        .map(|e| endpoint_json(&id, e))
        .collect();
    Ok(collection(&id, "endpoints", "/endpoints", items))
}

pub async fn endpoint_get(
    State(id): S,
    ctx: Ctx,
    Path(eid): Path<String>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:get_endpoint", &ctx, &Target::new())?;
    let e = load_endpoint(&id, &eid).await?;
    Ok(entity(StatusCode::OK, "endpoint", endpoint_json(&id, &e)))
}

/// The region of an endpoint body: `region_id`, or the legacy `region`
/// (Keystone creates a region named only that way). `Some(None)`: set to
/// null.
fn endpoint_region(b: &mut Body) -> Result<Option<Option<RegionRef>>, Error> {
    if b.has("region_id") {
        b.take("region");
        return Ok(Some(b.id("region_id")?.map(RegionRef::Id)));
    }
    if b.has("region") {
        return Ok(Some(b.id("region")?.map(RegionRef::Legacy)));
    }
    Ok(None)
}

pub async fn endpoint_create(
    State(id): S,
    ctx: Ctx,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:create_endpoint", &ctx, &Target::new())?;
    let mut b = Body::new(v, "endpoint")?;
    b.forbid(&["id"])?;
    let service_id = b.id("service_id")?.ok_or_else(|| {
        Error::bad_request("Invalid input for field 'endpoint.service_id': it is required.")
    })?;
    let interface = b.str("interface", 10)?.ok_or_else(|| {
        Error::bad_request("Invalid input for field 'endpoint.interface': it is required.")
    })?;
    check_interface(&interface)?;
    let url = b.str("url", 225)?.ok_or_else(|| {
        Error::bad_request("Invalid input for field 'endpoint.url': it is required.")
    })?;
    check_url(&url)?;
    let region = endpoint_region(&mut b)?.flatten();
    let enabled = b.bool("enabled")?.unwrap_or(true);
    let req = EndpointCreate {
        service_id,
        interface,
        url,
        region,
        enabled,
        extra: b.extra(),
    };
    let e = id.endpoint_create(&ctx, req).await?;
    Ok(entity(
        StatusCode::CREATED,
        "endpoint",
        endpoint_json(&id, &e),
    ))
}

pub async fn endpoint_update(
    State(id): S,
    ctx: Ctx,
    Path(eid): Path<String>,
    Json(v): Json<Value>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:update_endpoint", &ctx, &Target::new())?;
    let mut b = Body::new(v, "endpoint")?;
    b.matching_id(&eid)?;
    let service_id = b.id("service_id")?;
    let interface = b.str("interface", 10)?;
    if let Some(i) = &interface {
        check_interface(i)?;
    }
    let url = b.str("url", 225)?;
    if let Some(u) = &url {
        check_url(u)?;
    }
    let region = endpoint_region(&mut b)?;
    let enabled = b.bool("enabled")?;
    let req = EndpointUpdate {
        service_id,
        interface,
        url,
        region,
        enabled,
        extra: b.extra(),
    };
    let e = id.endpoint_update(&ctx, &eid, req).await?;
    Ok(entity(StatusCode::OK, "endpoint", endpoint_json(&id, &e)))
}

pub async fn endpoint_delete(
    State(id): S,
    ctx: Ctx,
    Path(eid): Path<String>,
) -> Result<Response, Error> {
    id.policy
        .enforce("identity:delete_endpoint", &ctx, &Target::new())?;
    load_endpoint(&id, &eid).await?;
    let mut tx = id.begin().await?;
    db::catalog::endpoint_delete(&mut tx, &eid)
        .await
        .map_err(db_err)?;
    id.commit(tx).await?;
    Ok(no_content())
}
