//! Interoperable image import: `POST /v2/images/{id}/import`,
//! `GET /v2/images/{id}/tasks`, `/v2/info/import`, `/v2/info/stores`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use api::{Ctx, Error};

use super::images::IMPORT_METHODS;
use super::{json_object, reply, S};
use crate::app::data::{self, Method};
use crate::app::db_err;
use crate::store as db;

pub async fn import(
    State(svc): S,
    ctx: Ctx,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Error> {
    let body = json_object(&body)?;
    for k in body.keys() {
        if !["method", "stores", "all_stores", "all_stores_must_succeed"].contains(&k.as_str()) {
            return Err(Error::bad_request(format!(
                "Additional properties are not allowed ('{k}' was unexpected)."
            )));
        }
    }
    let method = body
        .get("method")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::bad_request("The body must have a 'method' object."))?;
    let name = method
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_request("The import method needs a 'name'."))?;
    if let Some(stores) = body.get("stores") {
        let list = stores
            .as_array()
            .ok_or_else(|| Error::bad_request("'stores' must be a list of store ids."))?;
        for s in list {
            if s.as_str() != Some(svc.store.id()) {
                return Err(Error::conflict(format!(
                    "Unknown store {s}: this cloud has the store '{}'.",
                    svc.store.id()
                )));
            }
        }
    }
    if body.get("all_stores").is_some_and(|v| !v.is_boolean())
        || body
            .get("all_stores_must_succeed")
            .is_some_and(|v| !v.is_boolean())
    {
        return Err(Error::bad_request(
            "'all_stores' and 'all_stores_must_succeed' must be booleans.",
        ));
    }
    let method = match name {
        "glance-direct" => Method::GlanceDirect,
        "web-download" => {
            let uri = method
                .get("uri")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .ok_or_else(|| Error::bad_request("The 'web-download' method needs a 'uri'."))?;
            Method::WebDownload(uri.to_string())
        }
        "copy-image" | "glance-download" => {
            return Err(Error::bad_request(format!(
                "Import method {name} is not enabled on this cloud: use one of {}.",
                IMPORT_METHODS.join(", ")
            )))
        }
        other => {
            return Err(Error::bad_request(format!(
                "Unknown import method name '{other}'."
            )))
        }
    };
    data::start_import(&svc, &ctx, &id, method).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn tasks(State(svc): S, ctx: Ctx, Path(id): Path<String>) -> Result<Response, Error> {
    let (_, target) = svc.visible(&ctx, &id).await?;
    svc.policy.enforce("get_tasks", &ctx, &target)?;
    let tasks: Vec<Value> = db::task::for_image(&svc.pool, &id)
        .await
        .map_err(db_err)?
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "type": "api_image_import",
                "status": t.status,
                "owner": t.owner,
                "image_id": t.image_id,
                "input": {"import_req": {"method": {"name": t.method}}},
                "message": t.message,
                "result": Value::Null,
                "created_at": api::time_fmt::seconds_z(t.created_at),
                "updated_at": api::time_fmt::seconds_z(t.updated_at),
                "expires_at": Value::Null,
                "request_id": Value::Null,
                "user_id": Value::Null,
            })
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({ "tasks": tasks })))
}

pub async fn info_import(State(_svc): S, _ctx: Ctx) -> Response {
    reply(
        StatusCode::OK,
        json!({"import-methods": {
            "description": "Import methods available.",
            "type": "array",
            "value": IMPORT_METHODS,
        }}),
    )
}

pub async fn info_stores(State(svc): S, _ctx: Ctx) -> Response {
    reply(
        StatusCode::OK,
        json!({"stores": [{
            "id": svc.store.id(),
            "description": "Image files under the data directory",
            "default": true,
        }]}),
    )
}
