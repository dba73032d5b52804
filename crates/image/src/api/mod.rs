//! Image v2 HTTP handlers: parse and validate the request, check policy,
//! call the app layer or the store, render Glance's JSON.

mod discovery;
mod image_data;
mod images;
mod import;
mod members;
mod schemas;
mod tags;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::app::{Image, Images};

/// The API state.
pub type S = State<Arc<Images>>;

/// Query parameters as pairs.
pub type Q = axum::extract::Query<Vec<(String, String)>>;

/// Largest JSON request body (oslo's `max_request_body_size` default).
pub const MAX_BODY_BYTES: usize = 114_688;

/// The image router, mounted by the binary at `/image`. `auth` validates
/// tokens (the identity service, in-process).
pub fn router(svc: Arc<Images>, auth: Arc<dyn api::Authenticator>) -> Router {
    // Image data is streamed: no body limit on these routes (the quota and
    // the size cap bound them instead).
    let data = Router::new()
        .route(
            "/images/{id}/file",
            get(image_data::download).put(image_data::upload),
        )
        .route("/images/{id}/stage", put(image_data::stage))
        .layer(DefaultBodyLimit::disable())
        .with_state(svc.clone());
    let v2 = Router::new()
        .route("/", get(discovery::versions_ok))
        .route("/images", get(images::list).post(images::create))
        .route(
            "/images/{id}",
            get(images::show)
                .patch(images::update)
                .delete(images::delete),
        )
        .route("/images/{id}/actions/deactivate", post(images::deactivate))
        .route("/images/{id}/actions/reactivate", post(images::reactivate))
        .route(
            "/images/{id}/tags/{tag}",
            put(tags::add).delete(tags::delete),
        )
        .route(
            "/images/{id}/members",
            get(members::list).post(members::create),
        )
        .route(
            "/images/{id}/members/{member}",
            get(members::show)
                .put(members::update)
                .delete(members::delete),
        )
        .route("/images/{id}/import", post(import::import))
        .route("/images/{id}/tasks", get(import::tasks))
        .route("/info/import", get(import::info_import))
        .route("/info/stores", get(import::info_stores))
        .route("/schemas/image", get(schemas::image))
        .route("/schemas/images", get(schemas::images))
        .route("/schemas/member", get(schemas::member))
        .route("/schemas/members", get(schemas::members))
        .with_state(svc.clone())
        .merge(data)
        .fallback(not_found);
    let root = Router::new()
        .route("/", get(discovery::versions_multiple))
        .route("/versions", get(discovery::versions_ok))
        .with_state(svc)
        .nest("/v2", v2)
        .fallback(not_found);
    api::service_layers(root, api::ErrorStyle::Glance, auth, MAX_BODY_BYTES)
}

async fn not_found() -> api::Error {
    api::Error::not_found("The resource could not be found.")
}

/// Glance's JSON for an image: core attributes, then custom properties at
/// the top level, then the links.
pub fn image_json(svc: &Images, img: &Image) -> Value {
    let r = &img.row;
    let mut v = Map::new();
    for (k, val) in &img.properties {
        v.insert(k.clone(), json!(val));
    }
    let core = json!({
        "id": r.id,
        "name": r.name,
        "status": r.status,
        "visibility": r.visibility,
        "protected": r.protected,
        "os_hidden": r.os_hidden,
        "owner": r.owner,
        "disk_format": r.disk_format,
        "container_format": r.container_format,
        "size": r.size,
        "virtual_size": r.virtual_size,
        "checksum": r.checksum,
        "os_hash_algo": r.os_hash_algo,
        "os_hash_value": r.os_hash_value,
        "min_disk": r.min_disk,
        "min_ram": r.min_ram,
        "tags": img.tags.iter().collect::<Vec<_>>(),
        "created_at": api::time_fmt::seconds_z(r.created_at),
        "updated_at": api::time_fmt::seconds_z(r.updated_at),
        "self": svc.href(&format!("/images/{}", r.id)),
        "file": svc.href(&format!("/images/{}/file", r.id)),
        "schema": svc.href("/schemas/image"),
    });
    if let Value::Object(core) = core {
        v.extend(core);
    }
    if r.status == "active" {
        if let Some(s) = &r.store {
            v.insert("stores".into(), json!(s));
        }
    }
    Value::Object(v)
}

/// A JSON response with a status.
pub fn reply(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// 204 No Content.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The first value of a query parameter.
pub fn qget<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Reads a JSON object body, with messages that name the problem.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, api::Error> {
    match api::json::parse::<Value>(bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(api::Error::bad_request(
            "The request body must be a JSON object.",
        )),
    }
}
