//! The `web-download` fetcher: HTTP GET of a user-supplied URL, with every
//! address checked by [`super::addr`] before it is connected to.
//!
//! The host is resolved here, every resolved address must pass the guard,
//! and the connection goes to the checked address (the resolver is never
//! asked twice, so a name that first resolves to a public address and then
//! to 127.0.0.1 gains nothing). Redirects are followed by hand, at most
//! [`MAX_REDIRECTS`], and each new location is checked the same way.
//!
//! Only `http` is supported: this build has no TLS client, and an `https`
//! URL is refused with a message that says so.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::addr;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed `http` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// The `Host` header value.
    fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses and checks the form of a URL (not yet its addresses). The error
/// is a message for the user.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let s = s.trim();
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{s:?} is not an absolute URL"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "http" => {}
        "https" => {
            return Err(
                "https URLs are not supported by web-download on this cloud (no TLS client is built in); use an http URL"
                    .into(),
            )
        }
        other => return Err(format!("URL scheme {other:?} is not supported: use http")),
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if authority.contains('@') {
        return Err("URLs with credentials are not supported".into());
    }
    let (host, port) = if let Some(end) = authority.find(']') {
        let host = &authority[..=end];
        let port = authority[end + 1..].strip_prefix(':');
        if !host.starts_with('[') || (!authority[end + 1..].is_empty() && port.is_none()) {
            return Err(format!("the URL's host {authority:?} is malformed"));
        }
        (host.to_string(), port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None | Some("") => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("the URL's port {p:?} is not a valid port"))?,
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
    if !host_ok {
        return Err(format!("the URL's host {host:?} is not valid"));
    }
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("the URL's path contains spaces or control characters".into());
    }
    Ok(Url {
        host: host.to_ascii_lowercase(),
        port,
        path,
    })
}

/// Resolves the URL's host and checks every address; returns the one to
/// connect to.
pub async fn resolve(url: &Url, allow_loopback: bool) -> Result<SocketAddr, String> {
    if let Some(ip) = addr::parse_ip_literal(&url.host) {
        if let Some(why) = addr::refusal(ip, allow_loopback) {
            return Err(format!(
                "the URL's host {} is {why} ({ip}), which web-download does not fetch from",
                url.host
            ));
        }
        return Ok(SocketAddr::new(ip, url.port));
    }
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((url.host.as_str(), url.port)),
    )
    .await
    .map_err(|_| format!("resolving {} timed out", url.host))?
    .map_err(|_| format!("the host {} could not be resolved", url.host))?
    .collect();
    if addrs.is_empty() {
        return Err(format!("the host {} could not be resolved", url.host));
    }
    for a in &addrs {
        if let Some(why) = addr::refusal(a.ip(), allow_loopback) {
            return Err(format!(
                "the host {} resolves to {why} ({}), which web-download does not fetch from",
                url.host,
                a.ip()
            ));
        }
    }
    Ok(addrs[0])
}

/// Resolves a `Location` header against the URL it came from.
pub fn join(base: &Url, location: &str) -> Result<Url, String> {
    let l = location.trim();
    if l.contains("://") {
        return parse_url(l);
    }
    if let Some(rest) = l.strip_prefix("//") {
        return parse_url(&format!("http://{rest}"));
    }
    let host = if base.port == 80 {
        base.host.clone()
    } else {
        format!("{}:{}", base.host, base.port)
    };
    if l.starts_with('/') {
        return parse_url(&format!("http://{host}{l}"));
    }
    let dir = match base.path.split('?').next().unwrap_or("/").rfind('/') {
        Some(i) => &base.path[..=i],
        None => "/",
    };
    parse_url(&format!("http://{host}{dir}{l}"))
}

/// Opens the URL: connects to checked addresses only, follows redirects
/// (checking each), and returns the body of the final 2xx answer as a
/// stream.
pub async fn open(
    url: &str,
    allow_loopback: bool,
) -> Result<http_body_util::BodyDataStream<hyper::body::Incoming>, String> {
    let mut current = parse_url(url)?;
    for hop in 0..=MAX_REDIRECTS {
        let addr = resolve(&current, allow_loopback).await.map_err(|e| {
            if hop > 0 {
                format!("redirect refused: {e}")
            } else {
                e
            }
        })?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {} timed out", current.host))?
            .map_err(|e| format!("connecting to {} failed: {e}", current.host))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("talking to {} failed: {e}", current.host))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::get(current.path.as_str())
            .header(hyper::header::HOST, current.host_header())
            .header(hyper::header::USER_AGENT, "ferrostack-image-web-download")
            .body(Empty::<Bytes>::new())
            .map_err(|_| "the URL cannot be requested".to_string())?;
        let resp = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| format!("{} did not answer in time", current.host))?
            .map_err(|e| format!("fetching from {} failed: {e}", current.host))?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("{} redirected without a Location", current.host))?;
            current = join(&current, loc).map_err(|e| format!("redirect refused: {e}"))?;
            continue;
        }
        if !status.is_success() {
            return Err(format!("the URL answered HTTP {}", status.as_u16()));
        }
        return Ok(resp.into_body().into_data_stream());
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://Example.com:8080/a/b.qcow2?x=1#frag").unwrap();
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, 8080);
        assert_eq!(u.path, "/a/b.qcow2?x=1");
        let u = parse_url("http://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 80));
        assert!(parse_url("https://example.com/")
            .unwrap_err()
            .contains("https"));
        assert!(parse_url("file:///etc/passwd").is_err());
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("http://user:pw@example.com/").is_err());
        assert!(parse_url("http://example.com:99999/").is_err());
        assert!(parse_url("http://exa mple.com/").is_err());
        assert!(parse_url("example.com/x").is_err());
    }

    #[test]
    fn redirect_targets() {
        let base = parse_url("http://h:81/dir/file?q").unwrap();
        assert_eq!(join(&base, "/other").unwrap().path, "/other");
        assert_eq!(join(&base, "x.img").unwrap().path, "/dir/x.img");
        assert_eq!(join(&base, "x.img").unwrap().port, 81);
        assert_eq!(join(&base, "//evil:82/y").unwrap().host, "evil");
        assert_eq!(
            join(&base, "http://169.254.169.254/latest").unwrap().host,
            "169.254.169.254"
        );
    }

    #[tokio::test]
    async fn resolution_refuses_internal_addresses() {
        for u in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://017700000001/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.1.2.3/",
            "http://localhost/",
        ] {
            let url = parse_url(u).unwrap();
            let err = resolve(&url, false).await.unwrap_err();
            assert!(err.contains("web-download does not fetch"), "{u}: {err}");
        }
        let url = parse_url("http://127.0.0.1:9/").unwrap();
        assert!(resolve(&url, true).await.is_ok());
    }
}
