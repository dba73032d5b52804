//! The HTTP/1.1 server every service is mounted on.
//!
//! `axum::serve` has no timeouts and no connection limit, and lets hyper
//! answer malformed requests with empty bodies. This accept loop runs each
//! connection through hyper's HTTP/1 connection with:
//!
//! - a connection limit: a semaphore permit is taken before `accept`, so
//!   clients beyond the limit wait in the listen backlog, and each slot is
//!   freed the moment its connection ends;
//! - a header timeout: a request's head must arrive whole within it (from
//!   its first byte; from the accept for a connection's first request), so
//!   a client trickling a header byte every few seconds is dropped;
//! - a keep-alive timeout: an idle connection between requests is closed;
//! - a body idle timeout: a request body being read that receives nothing
//!   for this long fails, the client is answered 408 and the connection
//!   closed. Idle, not total: a large upload that keeps sending is fine;
//! - a body minimum rate: a body trickling a byte now and then still fails
//!   once `body idle timeout + received bytes / min rate` has passed since
//!   it began to be read;
//! - a send timeout: a response the client stops reading (a write that
//!   makes no progress for this long) closes the connection, so a client
//!   that never reads a large download does not hold its slot;
//! - a shutdown grace: on shutdown, connections still open after it are
//!   closed;
//! - a check of every request head before hyper parses it
//!   ([`head::inspect`]), so a head hyper would refuse is answered with the
//!   service's JSON error (the shape chosen by the path's prefix) and the
//!   connection closed.

mod conn;
pub mod head;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::error::{body_for, Error, ErrorStyle};
use conn::{ConnState, Gate, IdleBody, TrackedBody};

/// The server's limits on slow and idle clients and on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's head must arrive whole within this.
    pub header_timeout: Duration,
    /// A request body being read may receive nothing for this long.
    pub body_idle_timeout: Duration,
    /// A request body must arrive at this many bytes per second on
    /// average, beyond the body idle timeout (like Apache mod_reqtimeout's
    /// MinRate): it fails once `body_idle_timeout + received / rate` has
    /// passed since it began to be read. 0 disables the check.
    pub body_min_rate: u64,
    /// A response being written may make no progress (the client reads
    /// nothing) for this long before the connection is closed.
    pub send_timeout: Duration,
    /// A connection may sit idle between requests for this long.
    pub keepalive_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// On shutdown, connections still open after this are closed.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(20),
            body_idle_timeout: Duration::from_secs(60),
            body_min_rate: 500,
            send_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets each connection finish its request in flight, and
/// returns when all are closed. `style_for` gives the error body's shape
/// for a request path, for requests refused before they reach `app`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    style_for: fn(&str) -> ErrorStyle,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap the connections that ended.
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors or a connection reset before its
                    // accept: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        conns.spawn(connection(
            tcp,
            app.clone(),
            limits,
            style_for,
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends; those still open
    // after the grace period are closed (dropping one closes its socket).
    let drained = tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            "closing the connections still open after the shutdown grace period"
        );
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    Ok(())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    app: Router,
    limits: Limits,
    style_for: fn(&str) -> ErrorStyle,
    mut stop: tokio::sync::watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let state = Arc::new(ConnState::new(
        limits.header_timeout,
        limits.keepalive_timeout,
    ));
    let io = TokioIo::new(Gate::new(
        tcp,
        state.clone(),
        style_for,
        limits.send_timeout,
    ));
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        // In flight from the moment hyper hands the request over, before
        // its future first runs: the gate must not end the stream under it.
        let in_flight = svc_state.begin_request();
        handle(
            app.clone(),
            svc_state.clone(),
            in_flight,
            limits,
            style_for,
            req,
        )
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            // Dropping the connection closes the socket.
            _ = state.expired() => {
                tracing::debug!("closing a slow or idle connection");
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

async fn handle(
    app: Router,
    state: Arc<ConnState>,
    in_flight: conn::InFlight,
    limits: Limits,
    style_for: fn(&str) -> ErrorStyle,
    req: Request<Incoming>,
) -> Result<Response<TrackedBody>, Infallible> {
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let (mut parts, body) = req.into_parts();
    crate::request::trim_trailing_slash(&mut parts.uri);
    let path = parts.uri.path().to_string();
    let body = Body::new(IdleBody::new(
        body,
        limits.body_idle_timeout,
        limits.body_min_rate,
        state.clone(),
    ));
    let mut resp = match app.oneshot(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if state.body_timed_out() {
        let err = Error::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "The request body stopped arriving for {} seconds, or arrived \
                 slower than {} bytes per second.",
                limits.body_idle_timeout.as_secs(),
                limits.body_min_rate
            ),
        )
        .kind("HTTPRequestTimeout");
        let mut timed_out = json_error(style_for(&path), &err);
        if let Some(id) = resp.headers().get("x-openstack-request-id") {
            timed_out
                .headers_mut()
                .insert("x-openstack-request-id", id.clone());
        }
        resp = timed_out;
    }
    // The gate does not follow chunked bodies to the next head: a
    // connection that carried one closes after its response.
    if chunked || state.body_timed_out() {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(resp.map(|b| TrackedBody::new(b, in_flight)))
}

fn json_error(style: ErrorStyle, err: &Error) -> Response {
    let mut r = Response::new(Body::from(body_for(style, err).to_string()));
    *r.status_mut() = err.status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The raw response to a refused head: the service's JSON error, a request
/// id, and `Connection: close`.
fn refusal(r: &head::Refusal, style: ErrorStyle) -> Bytes {
    let kind = match r.status {
        StatusCode::URI_TOO_LONG => Some("HTTPRequestURITooLong"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Some("HTTPRequestHeaderFieldsTooLarge"),
        _ => None,
    };
    let mut err = Error::new(r.status, r.message.clone());
    err.kind = kind;
    let body = body_for(style, &err).to_string();
    let id = uuid::Uuid::new_v4();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-openstack-request-id: req-{id}\r\nconnection: close\r\n\r\n",
        r.status.as_u16(),
        r.status.canonical_reason().unwrap_or("Error"),
        body.len(),
    );
    Bytes::from(head + &body)
}
