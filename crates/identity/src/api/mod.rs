//! Identity v3 HTTP handlers: parse and validate the request, check policy,
//! call the store or the app layer, render Keystone's JSON.

mod appcred;
mod auth;
mod body;
mod catalog;
mod grant;
mod resource;
mod role;
mod user;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::{json, Value};

use crate::app::Identity;

pub use body::Body;

/// The API state.
pub type S = State<Arc<Identity>>;

/// The identity router, mounted by the binary at `/identity`.
pub fn router(identity: Arc<Identity>) -> Router {
    let v3 = Router::new()
        .route("/", get(version))
        .route(
            "/auth/tokens",
            post(auth::issue)
                .get(auth::validate)
                .head(auth::check)
                .delete(auth::revoke),
        )
        .route("/auth/catalog", get(auth::catalog))
        .route("/auth/projects", get(auth::projects))
        .route("/auth/domains", get(auth::domains))
        .route("/auth/system", get(auth::system))
        .route(
            "/domains",
            get(resource::domain_list).post(resource::domain_create),
        )
        .route(
            "/domains/{id}",
            get(resource::domain_get)
                .patch(resource::domain_update)
                .delete(resource::domain_delete),
        )
        .route(
            "/projects",
            get(resource::project_list).post(resource::project_create),
        )
        .route(
            "/projects/{id}",
            get(resource::project_get)
                .patch(resource::project_update)
                .delete(resource::project_delete),
        )
        .route(
            "/projects/{id}/tags",
            get(resource::tags_list)
                .put(resource::tags_replace)
                .delete(resource::tags_clear),
        )
        .route(
            "/projects/{id}/tags/{tag}",
            get(resource::tag_check)
                .put(resource::tag_add)
                .delete(resource::tag_delete),
        )
        .route("/users", get(user::user_list).post(user::user_create))
        .route(
            "/users/{id}",
            get(user::user_get)
                .patch(user::user_update)
                .delete(user::user_delete),
        )
        .route("/users/{id}/password", post(user::change_password))
        .route("/users/{id}/groups", get(user::groups_for_user))
        .route("/users/{id}/projects", get(user::projects_for_user))
        .route(
            "/users/{id}/application_credentials",
            get(appcred::list).post(appcred::create),
        )
        .route(
            "/users/{id}/application_credentials/{acid}",
            get(appcred::get).delete(appcred::delete),
        )
        .route("/groups", get(user::group_list).post(user::group_create))
        .route(
            "/groups/{id}",
            get(user::group_get)
                .patch(user::group_update)
                .delete(user::group_delete),
        )
        .route("/groups/{id}/users", get(user::group_users))
        .route(
            "/groups/{id}/users/{uid}",
            put(user::group_add_user)
                .head(user::group_check_user)
                .get(user::group_check_user)
                .delete(user::group_remove_user),
        )
        .route("/roles", get(role::role_list).post(role::role_create))
        .route(
            "/roles/{id}",
            get(role::role_get)
                .patch(role::role_update)
                .delete(role::role_delete),
        )
        .route("/roles/{id}/implies", get(role::implies_list))
        .route(
            "/roles/{id}/implies/{implied}",
            put(role::implies_create)
                .get(role::implies_get)
                .head(role::implies_check)
                .delete(role::implies_delete),
        )
        .route("/role_inferences", get(role::inferences))
        .route("/role_assignments", get(grant::assignments))
        .route("/{ttype}/{tid}/{atype}/{aid}/roles", get(grant::grant_list))
        .route(
            "/{ttype}/{tid}/{atype}/{aid}/roles/{rid}",
            put(grant::grant_create)
                .head(grant::grant_check)
                .get(grant::grant_check)
                .delete(grant::grant_revoke),
        )
        .route("/system/{atype}/{aid}/roles", get(grant::system_grant_list))
        .route(
            "/system/{atype}/{aid}/roles/{rid}",
            put(grant::system_grant_create)
                .head(grant::system_grant_check)
                .get(grant::system_grant_check)
                .delete(grant::system_grant_revoke),
        )
        .route(
            "/regions",
            get(catalog::region_list).post(catalog::region_create),
        )
        .route(
            "/regions/{id}",
            get(catalog::region_get)
                .patch(catalog::region_update)
                .put(catalog::region_put)
                .delete(catalog::region_delete),
        )
        .route(
            "/services",
            get(catalog::service_list).post(catalog::service_create),
        )
        .route(
            "/services/{id}",
            get(catalog::service_get)
                .patch(catalog::service_update)
                .delete(catalog::service_delete),
        )
        .route(
            "/endpoints",
            get(catalog::endpoint_list).post(catalog::endpoint_create),
        )
        .route(
            "/endpoints/{id}",
            get(catalog::endpoint_get)
                .patch(catalog::endpoint_update)
                .delete(catalog::endpoint_delete),
        )
        .fallback(not_found)
        .with_state(identity.clone());
    let root = Router::new()
        .route("/", get(versions))
        .fallback(not_found)
        .with_state(identity.clone())
        .nest("/v3", v3);
    api::service_layers(root, api::ErrorStyle::Keystone, identity, MAX_BODY_BYTES)
}

/// Keystone's `max_request_body_size` default (112 KiB).
pub const MAX_BODY_BYTES: usize = 114_688;

async fn not_found() -> api::Error {
    api::Error::not_found("The resource could not be found.")
}

fn version_info(id: &Identity) -> api::discovery::VersionInfo {
    api::discovery::VersionInfo {
        // The newest minor version whose additions are all served: 3.10
        // (Queens: application credentials, system scope). 3.11 adds the
        // limits model, 3.12 auth receipts, 3.13 access rules for
        // application credentials, which are refused here.
        id: "v3.10",
        status: "stable",
        updated: "2018-02-28T00:00:00Z",
        href: format!("{}/", id.url("")),
        media_type: "application/vnd.openstack.identity-v3+json",
        min_version: None,
        max_version: None,
    }
}

/// `GET /identity`: Keystone answers 300 Multiple Choices with its versions.
async fn versions(State(id): S) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(json!({"versions": {"values": [version_info(&id).to_json()]}})),
    )
        .into_response()
}

async fn version(State(id): S) -> Response {
    axum::Json(json!({"version": version_info(&id).to_json()})).into_response()
}

/// A collection body: `{"<key>": [...], "links": {...}}`.
pub fn collection(id: &Identity, key: &str, path: &str, items: Vec<Value>) -> Response {
    axum::Json(json!({
        key: items,
        "links": {"self": id.url(path), "previous": Value::Null, "next": Value::Null}
    }))
    .into_response()
}

/// A single entity body with a status.
pub fn entity(status: StatusCode, key: &str, v: Value) -> Response {
    (status, axum::Json(json!({ key: v }))).into_response()
}

/// Merges a stored `extra` JSON document into an entity, as Keystone does.
pub fn merge_extra(v: &mut Value, extra: &str) {
    if let (Some(obj), Ok(Value::Object(ex))) =
        (v.as_object_mut(), serde_json::from_str::<Value>(extra))
    {
        for (k, val) in ex {
            obj.entry(k).or_insert(val);
        }
    }
}

/// Query parameters as pairs.
pub type Q = axum::extract::Query<Vec<(String, String)>>;

/// The first value of a query parameter.
pub fn qget<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A boolean query parameter as Keystone reads them (`true`, `1`, `yes`,
/// or present without a value, are true).
pub fn qbool(q: &[(String, String)], key: &str) -> Result<Option<bool>, api::Error> {
    match qget(q, key) {
        None => Ok(None),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            other => Err(api::Error::bad_request(format!(
                "Invalid value {other:?} for query parameter '{key}': expected a boolean."
            ))),
        },
    }
}

/// 204 No Content.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
