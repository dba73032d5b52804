//! OpenStack's JSON error bodies.
//!
//! Handlers return [`Error`]; its `IntoResponse` leaves the body empty and
//! attaches the error as a response extension. The per-service [`render`]
//! layer then writes the body in that service's shape. This way every error —
//! a handler's, an extractor's, the router's own 404/405, a body-limit 413 —
//! leaves in the same shape without each service converting each one.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// How a service writes its error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"error": {"code", "title", "message"}}`
    Keystone,
    /// `{"NeutronError": {"type", "message", "detail"}}`
    Neutron,
    /// `{"<faultName>": {"code", "message"}}`
    Nova,
    /// Glance (webob's JSON error body):
    /// `{"message", "code": "404 Not Found", "title": "Not Found"}`.
    Glance,
}

/// An API error: a status, a message for the user that names the problem,
/// and optionally the service-specific error kind (Neutron's `type`, Nova's
/// fault name). Internal details never go into `message`.
#[derive(Debug, Clone)]
pub struct Error {
    pub status: StatusCode,
    pub message: String,
    pub kind: Option<&'static str>,
}

impl Error {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
            kind: None,
        }
    }
    /// Sets the service-specific error kind.
    pub fn kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// A failure of ours. The cause is logged here, with the request's span,
    /// and never sent to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error prevented the server from fulfilling your request.",
        )
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let mut r = self.status.into_response();
        r.extensions_mut().insert(self);
        r
    }
}

/// The layer function that writes error bodies in a service's style. Error
/// responses produced by anything other than [`Error`] (axum's 404, 405, 413
/// and extractor rejections) get a body too, with a message from their status.
pub async fn render(State(style): State<ErrorStyle>, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let err = match response.extensions().get::<Error>() {
        Some(e) => e.clone(),
        None => {
            let message = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "Request is too large.".to_string(),
                StatusCode::METHOD_NOT_ALLOWED => {
                    "The method is not allowed for the requested URL.".to_string()
                }
                StatusCode::NOT_FOUND => "The resource could not be found.".to_string(),
                s => s.canonical_reason().unwrap_or("Error").to_string(),
            };
            Error::new(status, message)
        }
    };
    let (parts, _) = response.into_parts();
    let body = body_for(style, &err);
    let mut r = Response::from_parts(parts, Body::from(body.to_string()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().remove(header::CONTENT_LENGTH);
    r
}

/// The JSON body of an error in a service's style.
pub fn body_for(style: ErrorStyle, err: &Error) -> serde_json::Value {
    let code = err.status.as_u16();
    let title = err.status.canonical_reason().unwrap_or("Error");
    match style {
        ErrorStyle::Keystone => serde_json::json!({
            "error": {"code": code, "title": title, "message": err.message}
        }),
        ErrorStyle::Neutron => serde_json::json!({
            "NeutronError": {
                "type": err.kind.unwrap_or_else(|| neutron_type(err.status)),
                "message": err.message,
                "detail": ""
            }
        }),
        ErrorStyle::Nova => {
            let fault = err.kind.unwrap_or_else(|| nova_fault(err.status));
            serde_json::json!({ fault: {"code": code, "message": err.message} })
        }
        ErrorStyle::Glance => serde_json::json!({
            "message": err.message, "code": format!("{code} {title}"), "title": title
        }),
    }
}

fn neutron_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "PolicyNotAuthorized",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::METHOD_NOT_ALLOWED => "HTTPMethodNotAllowed",
        StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
        _ => "ServiceUnavailable",
    }
}

fn nova_fault(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "badRequest",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "itemNotFound",
        StatusCode::CONFLICT => "conflictingRequest",
        StatusCode::METHOD_NOT_ALLOWED => "badMethod",
        StatusCode::NOT_ACCEPTABLE => "notAcceptable",
        StatusCode::PAYLOAD_TOO_LARGE => "overLimit",
        _ => "computeFault",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_each_services_shape() {
        let e = Error::not_found("Could not find project: x.");
        let k = body_for(ErrorStyle::Keystone, &e);
        assert_eq!(k["error"]["code"], 404);
        assert_eq!(k["error"]["title"], "Not Found");
        assert_eq!(k["error"]["message"], "Could not find project: x.");
        let n = body_for(ErrorStyle::Neutron, &e.clone().kind("NetworkNotFound"));
        assert_eq!(n["NeutronError"]["type"], "NetworkNotFound");
        let v = body_for(ErrorStyle::Nova, &e);
        assert_eq!(v["itemNotFound"]["code"], 404);
        let g = body_for(ErrorStyle::Glance, &e);
        assert_eq!(g["code"], "404 Not Found");
        assert_eq!(g["title"], "Not Found");
        assert_eq!(g["message"], "Could not find project: x.");
    }
}
