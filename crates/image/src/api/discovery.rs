//! Version discovery at `/image` and `/image/v2`, in Glance's shape:
//! `{"versions": [{"id": "v2.9", "status": "CURRENT", "links": [...]}, ...]}`.
//!
//! Only versions whose calls are all served are advertised. Glance's minor
//! versions add: 2.1 members, 2.3 deactivate/reactivate, 2.5 community
//! images, 2.6 the interoperable import, 2.7 hidden images and multihash,
//! 2.8 stores (`/v2/info/stores`, `stores` in imports, the store-ids
//! header; one store here), 2.9 `copy-image` (an import method an operator
//! may leave disabled, as here) — all served. The next ones are not:
//! 2.10 deleting an image from one store (`DELETE /v2/stores/...`), 2.13
//! the quota usage call (`/v2/info/usage`), 2.14/2.16/2.18 the cache API
//! (`/v2/cache`), 2.15 `/v2/info/stores/detail`, 2.17 the location calls
//! (`/v2/images/{id}/locations`). `GET /v2/images/{id}/tasks` (2.12) is
//! served anyway: clients call it without negotiating a version.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{reply, S};
use crate::app::Images;

/// The newest image API version served, and the older ones still listed.
pub const CURRENT: &str = "v2.9";
const SUPPORTED: &[&str] = &[
    "v2.8", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0",
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
