//! `/v2/images`: create, list, show, update (JSON patch), delete,
//! deactivate and reactivate.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use api::{Ctx, Error, Target};

use super::{image_json, json_object, no_content, reply, Q, S};
use crate::app::image::{Attr, NewImage, PatchOp};
use crate::app::{
    db_err, is_uuid, listed, Image, Images, CONTAINER_FORMATS, DISK_FORMATS, READ_ONLY, RESERVED,
    VISIBILITIES,
};
use crate::store as db;
use crate::store::image::ImageRow;

/// The import methods this cloud offers, as the
/// `OpenStack-image-import-methods` header and `/v2/info/import` list them.
pub const IMPORT_METHODS: &[&str] = &["glance-direct", "web-download"];

fn forbidden_attr(key: &str) -> Option<Error> {
    if READ_ONLY.contains(&key) {
        return Some(Error::forbidden(format!("Attribute '{key}' is read-only.")));
    }
    if RESERVED.contains(&key) || key.starts_with("os_glance") {
        return Some(Error::forbidden(format!("Attribute '{key}' is reserved.")));
    }
    None
}

fn str_or_null(key: &str, v: &Value, max: usize) -> Result<Option<String>, Error> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
        Value::String(_) => Err(Error::bad_request(format!(
            "Invalid value for '{key}': longer than {max} characters."
        ))),
        _ => Err(Error::bad_request(format!(
            "Invalid value for '{key}': expected a string or null."
        ))),
    }
}

fn enum_or_null(key: &str, v: &Value, allowed: &[&str]) -> Result<Option<String>, Error> {
    let s = str_or_null(key, v, 255)?;
    if let Some(s) = &s {
        if !allowed.contains(&s.as_str()) {
            return Err(Error::bad_request(format!(
                "Invalid value {s:?} for '{key}': must be one of {}.",
                allowed.join(", ")
            )));
        }
    }
    Ok(s)
}

fn boolean(key: &str, v: &Value) -> Result<bool, Error> {
    v.as_bool().ok_or_else(|| {
        Error::bad_request(format!("Invalid value for '{key}': expected a boolean."))
    })
}

fn non_negative(key: &str, v: &Value) -> Result<i64, Error> {
    v.as_i64().filter(|n| *n >= 0).ok_or_else(|| {
        Error::bad_request(format!(
            "Invalid value for '{key}': expected a non-negative integer."
        ))
    })
}

fn tag_list(v: &Value) -> Result<BTreeSet<String>, Error> {
    let arr = v.as_array().ok_or_else(|| {
        Error::bad_request("Invalid value for 'tags': expected a list of strings.")
    })?;
    let mut out = BTreeSet::new();
    for t in arr {
        out.insert(tag_value(t.as_str().ok_or_else(|| {
            Error::bad_request("Invalid value for 'tags': expected a list of strings.")
        })?)?);
    }
    Ok(out)
}

/// Validates one tag.
pub fn tag_value(t: &str) -> Result<String, Error> {
    if t.is_empty() || t.chars().count() > 255 {
        return Err(Error::bad_request(
            "Invalid tag: a tag is 1 to 255 characters long.",
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "Invalid tag: control characters are not allowed.",
        ));
    }
    Ok(t.to_string())
}

fn property_value(key: &str, v: &Value) -> Result<String, Error> {
    if key.is_empty() || key.chars().count() > 255 || key.chars().any(char::is_control) {
        return Err(Error::bad_request(format!(
            "Invalid property name {key:?}: 1 to 255 characters, no control characters."
        )));
    }
    match v {
        Value::String(s) if s.len() <= 65535 => Ok(s.clone()),
        Value::String(_) => Err(Error::bad_request(format!(
            "Invalid value for '{key}': longer than 65535 bytes."
        ))),
        _ => Err(Error::bad_request(format!(
            "Invalid value for '{key}': additional properties must be strings."
        ))),
    }
}

/// Parses one attribute (core or custom) of a create or patch request.
fn parse_attr(key: &str, v: &Value) -> Result<Attr, Error> {
    if let Some(e) = forbidden_attr(key) {
        return Err(e);
    }
    Ok(match key {
        "name" => Attr::Name(str_or_null(key, v, 255)?),
        "visibility" => Attr::Visibility(enum_or_null(key, v, VISIBILITIES)?.ok_or_else(|| {
            Error::bad_request("Invalid value for 'visibility': must be a string.")
        })?),
        "protected" => Attr::Protected(boolean(key, v)?),
        "os_hidden" => Attr::OsHidden(boolean(key, v)?),
        "owner" => Attr::Owner(str_or_null(key, v, 255)?),
        "disk_format" => Attr::DiskFormat(enum_or_null(key, v, DISK_FORMATS)?),
        "container_format" => Attr::ContainerFormat(enum_or_null(key, v, CONTAINER_FORMATS)?),
        "min_disk" => Attr::MinDisk(non_negative(key, v)?),
        "min_ram" => Attr::MinRam(non_negative(key, v)?),
        "tags" => Attr::Tags(tag_list(v)?),
        other => Attr::Property(other.to_string(), property_value(other, v)?),
    })
}

const CORE: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "owner",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "tags",
];

pub async fn create(State(svc): S, ctx: Ctx, body: Bytes) -> Result<Response, Error> {
    let body = json_object(&body)?;
    let mut new = NewImage::default();
    for (k, v) in &body {
        if k == "id" {
            let id = v
                .as_str()
                .filter(|s| is_uuid(s))
                .ok_or_else(|| Error::bad_request("Invalid value for 'id': expected a UUID."))?;
            new.id = Some(id.to_ascii_lowercase());
            continue;
        }
        new.attrs.push(parse_attr(k, v)?);
    }
    let img = svc.create_image(&ctx, new).await?;
    let mut resp = reply(StatusCode::CREATED, image_json(&svc, &img));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&svc.url(&format!("/v2/images/{}", img.row.id))) {
        h.insert(header::LOCATION, v);
    }
    h.insert(
        "openstack-image-import-methods",
        HeaderValue::from_static("glance-direct,web-download"),
    );
    if let Ok(v) = HeaderValue::from_str(svc.store.id()) {
        h.insert("openstack-image-store-ids", v);
    }
    Ok(resp)
}

pub async fn show(State(svc): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    let (img, _) = svc.visible(&ctx, &id).await?;
    Ok(reply(StatusCode::OK, image_json(&svc, &img)))
}

/// One JSON-patch operation, in the 2.1 (`{"op", "path"}`) or 2.0
/// (`{"<op>": path}`) form.
fn patch_op(v: &Value) -> Result<PatchOp, Error> {
    let o = v
        .as_object()
        .ok_or_else(|| Error::bad_request("Each patch operation must be a JSON object."))?;
    let (op, path) = match (o.get("op"), o.get("path")) {
        (Some(op), Some(path)) => (
            op.as_str().unwrap_or_default().to_string(),
            path.as_str()
                .ok_or_else(|| Error::bad_request("A patch 'path' must be a string."))?
                .to_string(),
        ),
        _ => {
            let found = ["add", "replace", "remove"]
                .iter()
                .find_map(|k| o.get(*k).map(|p| (k.to_string(), p)));
            match found {
                Some((op, Value::String(p))) => (op, p.clone()),
                Some((op, Value::Array(parts))) if parts.len() == 1 => {
                    (op, format!("/{}", parts[0].as_str().unwrap_or_default()))
                }
                _ => {
                    return Err(Error::bad_request(
                        "Unable to find 'op' and 'path' in the patch operation.",
                    ))
                }
            }
        }
    };
    if !matches!(op.as_str(), "add" | "replace" | "remove") {
        return Err(Error::bad_request(format!(
            "Invalid operation {op:?}: must be one of add, replace, remove."
        )));
    }
    let value = o.get("value").cloned();
    if op != "remove" && value.is_none() {
        return Err(Error::bad_request(format!(
            "Operation '{op}' requires a 'value'."
        )));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Error::bad_request(format!(
            "Json path should start with a '/', got {path:?}."
        )));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(Error::bad_request(format!(
            "Invalid path {path:?}: only top-level attributes can be changed."
        )));
    }
    let key = rest.replace("~1", "/").replace("~0", "~");
    if let Some(e) = forbidden_attr(&key) {
        return Err(e);
    }
    Ok(match op.as_str() {
        "remove" if CORE.contains(&key.as_str()) => {
            return Err(Error::forbidden(format!(
                "Attribute '{key}' cannot be removed."
            )))
        }
        "remove" => PatchOp::Remove(key),
        "add" => PatchOp::Add(parse_attr(&key, value.as_ref().unwrap_or(&Value::Null))?),
        _ => PatchOp::Replace(parse_attr(&key, value.as_ref().unwrap_or(&Value::Null))?),
    })
}

pub async fn update(
    State(svc): S,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Error> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ct != "application/openstack-images-v2.1-json-patch"
        && ct != "application/openstack-images-v2.0-json-patch"
    {
        return Err(Error::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The Content-Type of an image update must be application/openstack-images-v2.1-json-patch.",
        ));
    }
    let ops = match api::json::parse::<Value>(&body)? {
        Value::Array(a) => a,
        _ => {
            return Err(Error::bad_request(
                "The request body must be a JSON list of patch operations.",
            ))
        }
    };
    let ops = ops.iter().map(patch_op).collect::<Result<Vec<_>, _>>()?;
    let img = svc.update_image(&ctx, &id, ops).await?;
    Ok(reply(StatusCode::OK, image_json(&svc, &img)))
}

pub async fn delete(State(svc): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    svc.delete_image(&ctx, &id).await?;
    Ok(no_content())
}

pub async fn deactivate(
    State(svc): S,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    svc.set_active(&ctx, &id, false).await?;
    Ok(no_content())
}

pub async fn reactivate(
    State(svc): S,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    svc.set_active(&ctx, &id, true).await?;
    Ok(no_content())
}

// ----- listing -------------------------------------------------------------

/// Glance's sort keys.
const SORT_KEYS: &[&str] = &[
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
];
/// Parameters that are not attribute filters.
const NOT_FILTERS: &[&str] = &[
    "limit",
    "marker",
    "sort",
    "sort_key",
    "sort_dir",
    "visibility",
    "member_status",
    "tag",
    "size_min",
    "size_max",
    "created_at",
    "updated_at",
    "os_hidden",
    "protected",
];
const LIMIT_DEFAULT: usize = 25;
const LIMIT_MAX: usize = 1000;

/// `in:a,"b,c"` → the values; anything else → the one value.
fn in_values(v: &str) -> Vec<String> {
    let Some(list) = v.strip_prefix("in:") else {
        return vec![v.to_string()];
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in list.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A time filter, `[op:]timestamp`.
fn time_filter(key: &str, v: &str) -> Result<(String, i64), Error> {
    let (op, t) = match v.split_once(':') {
        Some((op, t)) if ["gt", "gte", "lt", "lte", "eq", "neq"].contains(&op) => (op, t),
        // No operator: the value is the timestamp itself (it contains ':').
        _ => ("eq", v),
    };
    let micros = api::time_fmt::parse(t).ok_or_else(|| {
        Error::bad_request(format!(
            "Invalid value {v:?} for '{key}': expected [gt|gte|lt|lte|eq|neq:]<ISO 8601 time>."
        ))
    })?;
    Ok((op.to_string(), micros))
}

fn time_matches(op: &str, have: i64, want: i64) -> bool {
    // Timestamps are shown (and compared) at one-second precision.
    let have = have.div_euclid(1_000_000);
    let want = want.div_euclid(1_000_000);
    match op {
        "gt" => have > want,
        "gte" => have >= want,
        "lt" => have < want,
        "lte" => have <= want,
        "neq" => have != want,
        _ => have == want,
    }
}

fn qbool(key: &str, v: &str) -> Result<bool, Error> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::bad_request(format!(
            "Invalid value {v:?} for '{key}': expected true or false."
        ))),
    }
}

fn qint(key: &str, v: &str) -> Result<i64, Error> {
    v.parse::<i64>().map_err(|_| {
        Error::bad_request(format!(
            "Invalid value {v:?} for '{key}': expected an integer."
        ))
    })
}

fn attr_string(r: &ImageRow, key: &str) -> Option<Option<String>> {
    Some(match key {
        "id" => Some(r.id.clone()),
        "name" => r.name.clone(),
        "owner" => r.owner.clone(),
        "status" => Some(r.status.clone()),
        "disk_format" => r.disk_format.clone(),
        "container_format" => r.container_format.clone(),
        "checksum" => r.checksum.clone(),
        "os_hash_value" => r.os_hash_value.clone(),
        "os_hash_algo" => r.os_hash_algo.clone(),
        "min_disk" => Some(r.min_disk.to_string()),
        "min_ram" => Some(r.min_ram.to_string()),
        "size" => r.size.map(|s| s.to_string()),
        "virtual_size" => r.virtual_size.map(|s| s.to_string()),
        _ => return None,
    })
}

fn cmp_key(a: &ImageRow, b: &ImageRow, key: &str) -> std::cmp::Ordering {
    match key {
        "name" => a.name.cmp(&b.name),
        "status" => a.status.cmp(&b.status),
        "container_format" => a.container_format.cmp(&b.container_format),
        "disk_format" => a.disk_format.cmp(&b.disk_format),
        "size" => a.size.cmp(&b.size),
        "id" => a.id.cmp(&b.id),
        "created_at" => a.created_at.cmp(&b.created_at),
        _ => a.updated_at.cmp(&b.updated_at),
    }
}

pub async fn list(State(svc): S, ctx: Ctx, q: Q) -> Result<Response, Error> {
    let q = q.0;
    let caller = ctx.project_id().map(str::to_string);
    let target = Target::new().with_opt("project_id", caller.clone());
    svc.policy.enforce("get_images", &ctx, &target)?;

    let visibility = super::qget(&q, "visibility");
    if let Some(v) = visibility {
        if v != "all" && !VISIBILITIES.contains(&v) {
            return Err(Error::bad_request(format!("Invalid visibility value: {v}")));
        }
    }
    let member_status = super::qget(&q, "member_status").unwrap_or("accepted");
    if !["accepted", "pending", "rejected", "all"].contains(&member_status) {
        return Err(Error::bad_request(format!(
            "Invalid status value: {member_status}"
        )));
    }
    let os_hidden = match super::qget(&q, "os_hidden") {
        Some(v) => qbool("os_hidden", v)?,
        None => false,
    };
    let protected = super::qget(&q, "protected")
        .map(|v| qbool("protected", v))
        .transpose()?;
    let size_min = super::qget(&q, "size_min")
        .map(|v| qint("size_min", v))
        .transpose()?;
    let size_max = super::qget(&q, "size_max")
        .map(|v| qint("size_max", v))
        .transpose()?;
    let mut times = Vec::new();
    for (k, v) in &q {
        if k == "created_at" || k == "updated_at" {
            let (op, t) = time_filter(k, v)?;
            times.push((k.clone(), op, t));
        }
    }
    let tags: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.as_str())
        .collect();
    let filters: Vec<(&str, Vec<String>)> = q
        .iter()
        .filter(|(k, _)| !NOT_FILTERS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), in_values(v)))
        .collect();
    let limit = match super::qget(&q, "limit") {
        Some(v) => {
            let n = qint("limit", v)?;
            if n < 0 {
                return Err(Error::bad_request("limit param must be positive"));
            }
            (n as usize).min(LIMIT_MAX)
        }
        None => LIMIT_DEFAULT,
    };
    let has_sort = super::qget(&q, "sort").is_some();
    let has_sort_key =
        super::qget(&q, "sort_key").is_some() || super::qget(&q, "sort_dir").is_some();
    if has_sort && has_sort_key {
        return Err(Error::bad_request(
            "The 'sort' parameter cannot be combined with 'sort_key' or 'sort_dir'.",
        ));
    }
    let mut sort = api::pagination::sort_keys(&q, SORT_KEYS)?;
    if has_sort_key && sort.is_empty() {
        // sort_dir alone applies to the default key.
        let dir = api::pagination::sort_keys(
            &[
                ("sort_key".to_string(), "created_at".to_string()),
                (
                    "sort_dir".to_string(),
                    super::qget(&q, "sort_dir").unwrap_or("desc").to_string(),
                ),
            ],
            SORT_KEYS,
        )?;
        sort = dir;
    }
    if sort.is_empty() {
        sort.push(("created_at".into(), api::pagination::Dir::Desc));
    }
    if !sort.iter().any(|(k, _)| k == "id") {
        let last = sort
            .last()
            .map(|s| s.1)
            .unwrap_or(api::pagination::Dir::Desc);
        sort.push(("id".into(), last));
    }

    let rows = db::image::all(&svc.pool).await.map_err(db_err)?;
    let mut props = db::image::all_properties(&svc.pool).await.map_err(db_err)?;
    let mut all_tags = db::image::all_tags(&svc.pool).await.map_err(db_err)?;
    let memberships: BTreeMap<String, String> = match &caller {
        Some(p) => db::member::of_project(&svc.pool, p)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|m| (m.image_id, m.status))
            .collect(),
        None => BTreeMap::new(),
    };
    let mut images: Vec<Image> = Vec::new();
    for r in rows {
        let membership = memberships.get(&r.id).map(String::as_str);
        let shown = listed(&ctx, &r, membership, visibility, member_status);
        if !shown || r.os_hidden != os_hidden {
            continue;
        }
        if protected.is_some_and(|p| p != r.protected) {
            continue;
        }
        if size_min.is_some_and(|m| r.size.is_none_or(|s| s < m))
            || size_max.is_some_and(|m| r.size.is_none_or(|s| s > m))
        {
            continue;
        }
        if !times.iter().all(|(k, op, t)| {
            let have = if k == "created_at" {
                r.created_at
            } else {
                r.updated_at
            };
            time_matches(op, have, *t)
        }) {
            continue;
        }
        let p = props.remove(&r.id).unwrap_or_default();
        let t = all_tags.remove(&r.id).unwrap_or_default();
        if !tags.iter().all(|want| t.contains(*want)) {
            continue;
        }
        let attrs_ok = filters.iter().all(|(k, want)| match attr_string(&r, k) {
            Some(have) => have.is_some_and(|h| want.contains(&h)),
            None => p.get(*k).is_some_and(|h| want.contains(h)),
        });
        if !attrs_ok {
            continue;
        }
        images.push(Image {
            row: r,
            properties: p,
            tags: t,
        });
    }
    images.sort_by(|a, b| {
        for (k, d) in &sort {
            let o = cmp_key(&a.row, &b.row, k);
            let o = if *d == api::pagination::Dir::Desc {
                o.reverse()
            } else {
                o
            };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
    let page = api::pagination::Page {
        limit: Some(limit),
        marker: super::qget(&q, "marker").map(str::to_string),
    };
    let (items, more) = page.apply(images, |i| i.row.id.as_str()).map_err(|e| {
        // Glance answers an unknown marker with 400.
        Error::bad_request(e.message)
    })?;
    let mut body = json!({
        "images": items.iter().map(|i| image_json(&svc, i)).collect::<Vec<_>>(),
        "first": first_link(&svc, &q),
        "schema": svc.href("/schemas/images"),
    });
    if more {
        if let Some(last) = items.last() {
            body["next"] = json!(api::pagination::next_link(
                &svc.href("/images"),
                &q,
                &last.row.id
            ));
        }
    }
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

fn first_link(svc: &Images, q: &[(String, String)]) -> String {
    let rest: Vec<(String, String)> = q.iter().filter(|(k, _)| k != "marker").cloned().collect();
    if rest.is_empty() {
        return svc.href("/images");
    }
    // next_link appends a marker; strip it again for `first`.
    let link = api::pagination::next_link(&svc.href("/images"), &rest, "");
    link.trim_end_matches("&marker=").to_string()
}
