//! A minimal HTTP/1.1 client over hyper: one keep-alive connection per
//! client task, requests built from a [`RequestSpec`].

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: HeaderValue::from_str(&addr.to_string())?,
        })
    }

    /// Sends a request and reads the whole response body.
    pub async fn send(&mut self, spec: &RequestSpec) -> anyhow::Result<(StatusCode, Bytes)> {
        let (status, _, body) = self.send_full(spec).await?;
        Ok((status, body))
    }

    /// Like [`Conn::send`], also returning the response headers.
    pub async fn send_full(
        &mut self,
        spec: &RequestSpec,
    ) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(spec.build(&self.host)?).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

/// A request to repeat: method, path, headers, body.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl RequestSpec {
    pub fn get(path: &str) -> RequestSpec {
        RequestSpec {
            method: Method::GET,
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn post_json(path: &str, body: &serde_json::Value) -> RequestSpec {
        RequestSpec::json(Method::POST, path, body)
    }

    pub fn json(method: Method, path: &str, body: &serde_json::Value) -> RequestSpec {
        RequestSpec {
            method,
            path: path.to_string(),
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body: Bytes::from(body.to_string()),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> anyhow::Result<RequestSpec> {
        let v = HeaderValue::from_str(value).with_context(|| format!("header {name}"))?;
        self.headers.push((HeaderName::from_static(name), v));
        Ok(self)
    }

    fn build(&self, host: &HeaderValue) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(HOST, host.clone());
        for (k, v) in &self.headers {
            b = b.header(k.clone(), v.clone());
        }
        Ok(b.body(Full::new(self.body.clone()))?)
    }
}

/// One GET on a new connection; its status. Used to poll for readiness.
pub async fn get_status_once(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut c = Conn::connect(addr).await?;
    let (status, _) = c.send(&RequestSpec::get(path)).await?;
    Ok(status.as_u16())
}
