//! Networking v2.0 HTTP handlers: parse and validate the request, call the
//! app layer (which checks policy on the loaded resources), render
//! Neutron's JSON, apply list queries.

pub mod body;
mod floatingip;
mod misc;
mod network;
mod port;
pub mod query;
mod router;
mod secgroup;
mod subnet;
mod tags;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Value};

use crate::app::Network;

/// The API state.
pub type S = State<Arc<Network>>;
/// Query parameters as pairs.
pub type Q = axum::extract::Query<Vec<(String, String)>>;

/// Neutron's default `max_request_body_size`-like bound: enough for bulk
/// bodies of a few thousand attributes, far below anything abusive.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The network router, mounted by the binary at `/network`.
pub fn router(net: Arc<Network>, authenticator: Arc<dyn api::Authenticator>) -> Router {
    let mut r = Router::new()
        .route("/", get(versions))
        .route("/v2.0", get(resources))
        .route("/v2.0/", get(resources))
        .route("/v2.0/extensions", get(misc::extensions))
        .route("/v2.0/extensions/{alias}", get(misc::extension))
        .route("/v2.0/networks", get(network::list).post(network::create))
        .route(
            "/v2.0/networks/{id}",
            get(network::show)
                .put(network::update)
                .delete(network::delete),
        )
        .route("/v2.0/subnets", get(subnet::list).post(subnet::create))
        .route(
            "/v2.0/subnets/{id}",
            get(subnet::show).put(subnet::update).delete(subnet::delete),
        )
        .route("/v2.0/ports", get(port::list).post(port::create))
        .route(
            "/v2.0/ports/{id}",
            get(port::show).put(port::update).delete(port::delete),
        )
        .route(
            "/v2.0/security-groups",
            get(secgroup::list).post(secgroup::create),
        )
        .route(
            "/v2.0/security-groups/{id}",
            get(secgroup::show)
                .put(secgroup::update)
                .delete(secgroup::delete),
        )
        .route(
            "/v2.0/security-group-rules",
            get(secgroup::rule_list).post(secgroup::rule_create),
        )
        .route(
            "/v2.0/security-group-rules/{id}",
            get(secgroup::rule_show)
                .put(secgroup::rule_update)
                .delete(secgroup::rule_delete),
        )
        .route("/v2.0/routers", get(router::list).post(router::create))
        .route(
            "/v2.0/routers/{id}",
            get(router::show).put(router::update).delete(router::delete),
        )
        .route(
            "/v2.0/routers/{id}/add_router_interface",
            put(router::add_interface),
        )
        .route(
            "/v2.0/routers/{id}/remove_router_interface",
            put(router::remove_interface),
        )
        .route(
            "/v2.0/routers/{id}/add_extraroutes",
            put(router::add_routes),
        )
        .route(
            "/v2.0/routers/{id}/remove_extraroutes",
            put(router::remove_routes),
        )
        .route(
            "/v2.0/floatingips",
            get(floatingip::list).post(floatingip::create),
        )
        .route(
            "/v2.0/floatingips/{id}",
            get(floatingip::show)
                .put(floatingip::update)
                .delete(floatingip::delete),
        )
        .route("/v2.0/quotas", get(misc::quota_list))
        .route(
            "/v2.0/quotas/{project}",
            get(misc::quota_show)
                .put(misc::quota_update)
                .delete(misc::quota_delete),
        )
        .route("/v2.0/quotas/{project}/default", get(misc::quota_default))
        .route("/v2.0/quotas/{project}/details", get(misc::quota_details))
        .route("/v2.0/agents", get(misc::agent_list))
        .route("/v2.0/agents/{id}", get(misc::agent_show))
        .route("/v2.0/availability_zones", get(misc::availability_zones))
        .route("/v2.0/service-providers", get(misc::service_providers))
        .route(
            "/v2.0/network-ip-availabilities",
            get(misc::ip_availability_list),
        )
        .route(
            "/v2.0/network-ip-availabilities/{id}",
            get(misc::ip_availability_show),
        );
    for coll in tags::COLLECTIONS {
        r = r
            .route(
                &format!("/v2.0/{coll}/{{id}}/tags"),
                get(tags::list)
                    .put(tags::replace)
                    .post(tags::create)
                    .delete(tags::clear),
            )
            .route(
                &format!("/v2.0/{coll}/{{id}}/tags/{{tag}}"),
                get(tags::check).put(tags::add).delete(tags::remove),
            );
    }
    let r = r.fallback(not_found).with_state(net);
    api::service_layers(r, api::ErrorStyle::Neutron, authenticator, MAX_BODY_BYTES)
}

async fn not_found() -> api::Error {
    api::Error::not_found("The resource could not be found.").kind("HTTPNotFound")
}

/// `GET /network`: Neutron's version list.
async fn versions(State(n): S) -> Response {
    axum::Json(json!({"versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"href": format!("{}/", n.url("")), "rel": "self"}],
    }]}))
    .into_response()
}

/// `GET /network/v2.0`: the core resources.
async fn resources(State(n): S) -> Response {
    let items: Vec<Value> = [
        ("subnet", "subnets"),
        ("network", "networks"),
        ("port", "ports"),
    ]
    .iter()
    .map(|(name, coll)| {
        json!({"name": name, "collection": coll,
               "links": [{"href": n.url(&format!("/{coll}")), "rel": "self"}]})
    })
    .collect();
    axum::Json(json!({"resources": items})).into_response()
}

/// 200 with a JSON body.
pub fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// `{key: v}` with a status.
pub fn entity(status: StatusCode, key: &str, v: Value) -> Response {
    (status, axum::Json(json!({ key: v }))).into_response()
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Neutron's timestamp form.
pub fn ts(micros: i64) -> String {
    api::time_fmt::seconds_z(micros)
}

/// A JSON list stored as text.
pub fn json_list(s: &str) -> Value {
    serde_json::from_str::<Value>(s)
        .ok()
        .filter(Value::is_array)
        .unwrap_or_else(|| json!([]))
}

/// A create body: one resource, or a bulk of them.
pub enum CreateBody {
    /// `{"port": {...}}`, as the single-resource parser takes it.
    One(Value),
    /// `{"ports": [...]}`: each element rewrapped as `{"port": {...}}`.
    Bulk(Vec<Value>),
}

/// Tells a bulk create (`{"<plural>": [...]}`, Neutron's native bulk) from
/// a single one. Elements may be given bare or under the singular key, as
/// Neutron accepts; an empty list is 400 "Resources required".
pub fn create_body(v: Value, singular: &str, plural: &str) -> Result<CreateBody, api::Error> {
    let Value::Object(mut top) = v else {
        return Ok(CreateBody::One(v));
    };
    if top.contains_key(singular) || !top.contains_key(plural) {
        return Ok(CreateBody::One(Value::Object(top)));
    }
    if top.len() != 1 {
        return Err(crate::app::fault::bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            top.keys()
                .filter(|k| *k != plural)
                .map(|k| body::shown(k))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    match top.remove(plural) {
        Some(Value::Array(items)) if !items.is_empty() => Ok(CreateBody::Bulk(
            items
                .into_iter()
                .map(|item| match item {
                    Value::Object(o) if o.len() == 1 && o.contains_key(singular) => {
                        Value::Object(o)
                    }
                    other => json!({ singular: other }),
                })
                .collect(),
        )),
        Some(Value::Array(_)) => Err(crate::app::fault::bad_request("Resources required")),
        _ => Err(crate::app::fault::bad_request(format!(
            "Invalid input for {plural}. Reason: expected a list of {singular} objects."
        ))),
    }
}

/// The JSON request body, as a `serde_json::Value`.
pub struct JsonBody(pub Value);

impl<St: Send + Sync> axum::extract::FromRequest<St> for JsonBody {
    type Rejection = api::Error;
    async fn from_request(
        req: axum::extract::Request,
        state: &St,
    ) -> Result<Self, Self::Rejection> {
        let api::Json(bytes) = api::Json::<serde_json::Value>::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status == StatusCode::BAD_REQUEST {
                    crate::app::fault::bad(
                        "MalformedRequestBody",
                        format!("Malformed request body: {}", e.message),
                    )
                } else if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                    // Neutron answers with webob's exception, whose class
                    // name is the error's type.
                    api::Error::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "The request media type is not supported by this server.",
                    )
                    .kind("HTTPUnsupportedMediaType")
                } else {
                    e
                }
            })?;
        Ok(JsonBody(bytes))
    }
}
