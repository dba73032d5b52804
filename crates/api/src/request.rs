//! Request ids and request logging.
//!
//! Every response carries `x-openstack-request-id` (and Nova's older
//! `x-compute-request-id`). Each request runs in a `tracing` span named by
//! that id; one line is logged when it completes with the method, the path,
//! the status and the latency. Headers, query strings and bodies are never
//! logged: tokens, passwords and user data travel in them.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

/// The id of the current request, as a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Middleware: assigns the request id, logs the request, sets the headers.
pub async fn request_id_and_log(mut req: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = redact_path(req.uri().path());
    let span = tracing::info_span!("request", id = %id);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    span.in_scope(|| {
        tracing::info!(
            %method,
            %path,
            status = resp.status().as_u16(),
            micros = elapsed.as_micros() as u64,
            "request"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut()
            .insert("x-openstack-request-id", v.clone());
        resp.headers_mut().insert("x-compute-request-id", v);
    }
    resp
}

/// Bodies at most this large are read and discarded before an oversized
/// request is refused; larger ones are refused at once with
/// `Connection: close`.
pub const DRAIN_MAX_BYTES: u64 = 16 << 20;

/// Middleware: refuses a JSON request whose declared `Content-Length`
/// exceeds `max` with 413. A client still sending when the server answers and closes
/// gets a connection reset instead of the answer, so a body of moderate size
/// is drained first; a huge one is refused at once and the connection
/// closed. Bodies without a length are limited as they are read
/// (`DefaultBodyLimit`).
pub async fn refuse_oversized(
    axum::extract::State(max): axum::extract::State<usize>,
    req: Request,
    next: Next,
) -> Response {
    // The limit is for JSON documents; data routes (image uploads) stream
    // octet-streams of any size and set their own limits.
    let is_json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/json") || v.contains("json")
        })
        .unwrap_or(false);
    if !is_json {
        return next.run(req).await;
    }
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(len) = declared.filter(|l| *l > max as u64) else {
        return next.run(req).await;
    };
    let mut resp = crate::Error::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request is too large: the body is {len} bytes, the limit is {max}."),
    )
    .into_response();
    if len <= DRAIN_MAX_BYTES {
        use http_body_util::BodyExt;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    } else {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    resp
}

/// Drops one trailing slash from a path before routing, so a service's
/// root as clients send it (`/identity/`, `/image/`, `/network/`) and any
/// other path with a trailing slash route as without it, as they do
/// upstream (Flask's and Pecan's lenient routing).
pub fn trim_trailing_slash(uri: &mut axum::http::Uri) {
    let path = uri.path();
    if path.len() < 2 || !path.ends_with('/') {
        return;
    }
    let trimmed = &path[..path.len() - 1];
    let pq = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    let Ok(pq) = pq.parse() else { return };
    parts.path_and_query = Some(pq);
    if let Ok(u) = axum::http::Uri::from_parts(parts) {
        *uri = u;
    }
}

/// Paths can carry secrets too (an EC2-style signature, a token in a
/// revocation URL in some APIs); anything that looks like a long opaque
/// credential is cut from the logged path.
pub fn redact_path(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.len() > 64 { "<redacted>" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_slash_is_dropped() {
        for (from, to) in [
            ("/identity/", "/identity"),
            (
                "/network/v2.0/networks/?limit=1",
                "/network/v2.0/networks?limit=1",
            ),
            ("/", "/"),
            ("/image", "/image"),
        ] {
            let mut u: axum::http::Uri = from.parse().unwrap();
            trim_trailing_slash(&mut u);
            assert_eq!(u.to_string(), to);
        }
    }

    #[test]
    fn long_segments_are_redacted() {
        let tok = "g".repeat(180);
        assert_eq!(
            redact_path(&format!("/identity/v3/x/{tok}")),
            "/identity/v3/x/<redacted>"
        );
        assert_eq!(
            redact_path("/identity/v3/users/abc"),
            "/identity/v3/users/abc"
        );
    }
}
