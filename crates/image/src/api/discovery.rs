//! Version discovery at `/image` and `/image/v2`, in Glance's shape:
//! `{"versions": [{"id": "v2.16", "status": "CURRENT", "links": [...]}, ...]}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{reply, S};
use crate::app::Images;

/// The newest image API version served, and the older ones still listed.
pub const CURRENT: &str = "v2.16";
const SUPPORTED: &[&str] = &[
    "v2.15", "v2.14", "v2.13", "v2.12", "v2.11", "v2.10", "v2.9", "v2.8", "v2.7", "v2.6", "v2.5",
    "v2.4", "v2.3", "v2.2", "v2.1", "v2.0",
];

fn versions(svc: &Images) -> Value {
    let href = svc.url("/v2/");
    let mut out =
        vec![json!({"id": CURRENT, "status": "CURRENT", "links": [{"rel": "self", "href": href}]})];
    out.extend(SUPPORTED.iter().map(
        |v| json!({"id": v, "status": "SUPPORTED", "links": [{"rel": "self", "href": href}]}),
    ));
    json!({ "versions": out })
}

/// `GET /image`: 300 Multiple Choices, as Glance answers its root.
pub async fn versions_multiple(State(svc): S) -> Response {
    reply(StatusCode::MULTIPLE_CHOICES, versions(&svc))
}

/// `GET /image/versions` and `GET /image/v2`: the same document, 200.
pub async fn versions_ok(State(svc): S) -> Response {
    reply(StatusCode::OK, versions(&svc))
}
