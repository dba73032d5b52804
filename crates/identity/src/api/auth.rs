//! `/v3/auth/*`: issue, validate, check and revoke tokens; the catalog,
//! projects, domains and system a token's user may scope to.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use api::{Ctx, Error, Json, Target};

use super::{collection, qbool, Q, S};
use crate::app::auth::{resolve_scope_names, AuthRequest};
use crate::app::db_err;
use crate::store as db;
use crate::token::ScopeId;

fn subject_token(h: &HeaderMap) -> Result<String, Error> {
    h.get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::bad_request("The X-Subject-Token header is required."))
}

/// `POST /v3/auth/tokens`.
pub async fn issue(State(id): S, q: Q, Json(body): Json<Value>) -> Result<Response, Error> {
    let mut req: AuthRequest = api::json::parse(body.to_string().as_bytes())?;
    resolve_scope_names(&id, &mut req).await?;
    let issued = id.authenticate(req).await?;
    let nocatalog = qbool(&q, "nocatalog")?.unwrap_or(false);
    let snap = id.snapshot();
    let body = id.token_body(&snap, &issued.payload, &issued.ctx, !nocatalog);
    let mut resp = (StatusCode::CREATED, json_bytes(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&issued.token) {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

fn check_subject_policy(
    id: &crate::app::Identity,
    ctx: &Ctx,
    action: &str,
    subject_user: &str,
) -> Result<(), Error> {
    id.policy.enforce(
        action,
        ctx,
        &Target::new().with("target.token.user_id", subject_user),
    )
}

/// `GET /v3/auth/tokens`: validates `X-Subject-Token`.
pub async fn validate(State(id): S, ctx: Ctx, q: Q, headers: HeaderMap) -> Result<Response, Error> {
    let token = subject_token(&headers)?;
    let v = id.validate_subject(&token)?;
    check_subject_policy(&id, &ctx, "identity:validate_token", &v.payload.user_id)?;
    let nocatalog = qbool(&q, "nocatalog")?.unwrap_or(false);
    let body = id.token_body(&v.snapshot, &v.payload, &v.ctx, !nocatalog);
    let mut resp = json_bytes(body).into_response();
    if let Ok(h) = HeaderValue::from_str(&token) {
        resp.headers_mut().insert("x-subject-token", h);
    }
    Ok(resp)
}

/// `HEAD /v3/auth/tokens`.
pub async fn check(State(id): S, ctx: Ctx, headers: HeaderMap) -> Result<Response, Error> {
    let token = subject_token(&headers)?;
    let v = id.validate_subject(&token)?;
    check_subject_policy(&id, &ctx, "identity:check_token", &v.payload.user_id)?;
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /v3/auth/tokens`: revokes the subject token (by its audit id).
pub async fn revoke(State(id): S, ctx: Ctx, headers: HeaderMap) -> Result<Response, Error> {
    let token = subject_token(&headers)?;
    let v = id.validate_subject(&token)?;
    check_subject_policy(&id, &ctx, "identity:revoke_token", &v.payload.user_id)?;
    let mut tx = id.begin().await?;
    id.revoke(
        &mut tx,
        db::revocation::Event {
            audit_id: Some(crate::token::audit_id_str(&v.payload.audit_id)),
            ..Default::default()
        },
    )
    .await?;
    id.commit(tx).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v3/auth/catalog`.
pub async fn catalog(State(id): S, ctx: Ctx) -> Result<Response, Error> {
    if matches!(ctx.scope, api::Scope::Unscoped) {
        return Err(Error::forbidden(
            "The service catalog needs a scoped token.",
        ));
    }
    let snap = id.snapshot();
    Ok(axum::Json(json!({"catalog": snap.catalog, "links": {"self": id.url("/auth/catalog"), "previous": null, "next": null}})).into_response())
}

/// `GET /v3/auth/projects`: projects the caller has a role on.
pub async fn projects(State(id): S, ctx: Ctx) -> Result<Response, Error> {
    let snap = id.snapshot();
    let mut items = Vec::new();
    let mut ids: Vec<&String> = snap.projects.keys().collect();
    ids.sort_by(|a, b| snap.projects[*a].name.cmp(&snap.projects[*b].name));
    for pid in ids {
        if !snap
            .effective_roles(&ctx.user_id, &ScopeId::Project(pid.clone()))
            .is_empty()
            && snap.project_usable(pid)
        {
            if let Some(p) = db::resource::project_get(&id.pool, pid)
                .await
                .map_err(db_err)?
            {
                let tags = db::resource::tags(&id.pool, "project_tag", "project_id", pid)
                    .await
                    .map_err(db_err)?;
                items.push(super::resource::project_json(&id, &p, tags));
            }
        }
    }
    Ok(collection(&id, "projects", "/auth/projects", items))
}

/// `GET /v3/auth/domains`: domains the caller has a role on.
pub async fn domains(State(id): S, ctx: Ctx) -> Result<Response, Error> {
    let snap = id.snapshot();
    let mut items = Vec::new();
    for d in db::resource::domain_list(&id.pool, &[])
        .await
        .map_err(db_err)?
    {
        if d.enabled
            && !snap
                .effective_roles(&ctx.user_id, &ScopeId::Domain(d.id.clone()))
                .is_empty()
        {
            let tags = db::resource::tags(&id.pool, "domain_tag", "domain_id", &d.id)
                .await
                .map_err(db_err)?;
            items.push(super::resource::domain_json(&id, &d, tags));
        }
    }
    Ok(collection(&id, "domains", "/auth/domains", items))
}

/// `GET /v3/auth/system`: whether the caller has a role on the system.
pub async fn system(State(id): S, ctx: Ctx) -> Result<Response, Error> {
    let snap = id.snapshot();
    let has = !snap
        .effective_roles(&ctx.user_id, &ScopeId::System)
        .is_empty();
    let items: Vec<Value> = if has {
        vec![json!({"all": true})]
    } else {
        vec![]
    };
    Ok(collection(&id, "system", "/auth/system", items))
}

/// A pre-serialized JSON body.
fn json_bytes(body: Vec<u8>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}
