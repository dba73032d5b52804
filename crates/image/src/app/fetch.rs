//! The `web-download` fetcher: HTTP(S) GET of a user-supplied URL, with
//! every address checked by [`super::addr`] before it is connected to.
//!
//! The host is resolved here, every resolved address must pass the guard,
//! and the connection goes to a checked address (the resolver is never
//! asked twice, so a name that first resolves to a public address and then
//! to 127.0.0.1 gains nothing). Redirects are followed by hand, at most
//! [`MAX_REDIRECTS`], and each new location is checked the same way,
//! whichever way it crosses between `http` and `https`.
//!
//! `https` runs TLS (rustls, with the `ring` provider) over the TCP stream
//! to the checked address: SNI and certificate verification use the URL's
//! host name (or its IP address, for an IP literal), against the Mozilla
//! root store bundled in `webpki-roots` plus the configured extra roots.
//! A certificate that does not verify fails the fetch with a message that
//! says why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, DnsName, ServerName};

use super::addr;

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A URL scheme web-download fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A parsed `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    /// Lowercase; IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// `host[:port]`, the port left out when it is the scheme's default:
    /// the `Host` header value, and the authority of relative redirects.
    fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Fetches URLs for `web-download`: the address guard's setting and the
/// TLS client configuration, built once.
#[derive(Clone)]
pub struct Fetcher {
    allow_loopback: bool,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("allow_loopback", &self.allow_loopback)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// `allow_loopback` lets the guard pass loopback addresses (tests
    /// only). `extra_roots` are DER certificates trusted besides the
    /// Mozilla root store (tests serve https with a certificate of their
    /// own); the error names a certificate that cannot be used.
    pub fn new(allow_loopback: bool, extra_roots: &[Vec<u8>]) -> Result<Fetcher, String> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for (i, der) in extra_roots.iter().enumerate() {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| format!("extra root certificate {i} cannot be used: {e}"))?;
        }
        // The provider is named here rather than taken from a process-wide
        // default, so no other crate's choice of provider changes this one.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Fetcher {
            allow_loopback,
            tls: Arc::new(tls),
        })
    }

    /// Whether the guard lets loopback addresses through.
    pub fn allow_loopback(&self) -> bool {
        self.allow_loopback
    }
}

/// Parses and checks the form of a URL (not yet its addresses). The error
/// is a message for the user.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let s = s.trim();
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| format!("{s:?} is not an absolute URL"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => {
            return Err(format!(
                "URL scheme {other:?} is not supported: use http or https"
            ))
        }
    };
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
        None | Some("") => scheme.default_port(),
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
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        path,
    })
}

/// Resolves the URL's host and checks every address; returns them all, in
/// the resolver's order, to be connected to and nothing else.
pub async fn resolve(url: &Url, allow_loopback: bool) -> Result<Vec<SocketAddr>, String> {
    if let Some(ip) = addr::parse_ip_literal(&url.host) {
        if let Some(why) = addr::refusal(ip, allow_loopback) {
            return Err(format!(
                "the URL's host {} is {why} ({ip}), which web-download does not fetch from",
                url.host
            ));
        }
        return Ok(vec![SocketAddr::new(ip, url.port)]);
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
    Ok(addrs)
}

/// Resolves a `Location` header against the URL it came from. A relative
/// or scheme-relative location keeps the base's scheme.
pub fn join(base: &Url, location: &str) -> Result<Url, String> {
    let l = location.trim();
    let scheme = base.scheme.as_str();
    if l.contains("://") {
        return parse_url(l);
    }
    if let Some(rest) = l.strip_prefix("//") {
        return parse_url(&format!("{scheme}://{rest}"));
    }
    let host = base.authority();
    if l.starts_with('/') {
        return parse_url(&format!("{scheme}://{host}{l}"));
    }
    let dir = match base.path.split('?').next().unwrap_or("/").rfind('/') {
        Some(i) => &base.path[..=i],
        None => "/",
    };
    parse_url(&format!("{scheme}://{host}{dir}{l}"))
}

/// The name the server's certificate must carry: the URL's IP address for
/// an IP literal (in whatever spelling the URL used), its DNS name
/// otherwise.
fn server_name(url: &Url) -> Result<ServerName<'static>, String> {
    if let Some(ip) = addr::parse_ip_literal(&url.host) {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    let name = url.host.trim_end_matches('.').to_string();
    DnsName::try_from(name)
        .map(ServerName::DnsName)
        .map_err(|_| format!("the URL's host {} is not a valid TLS server name", url.host))
}

/// The user's message for a failed TLS handshake, naming the certificate
/// problem when there is one.
fn tls_failure(host: &str, e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let Some(err) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return format!("the TLS handshake with {host} failed: {e}");
    };
    let why = match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "it is not issued by a certificate authority this cloud trusts".to_string()
            }
            C::NotValidForName => format!("it is not valid for the name {host}"),
            C::NotValidForNameContext { presented, .. } => format!(
                "it is not valid for the name {host} (it names {})",
                if presented.is_empty() {
                    "no host".to_string()
                } else {
                    presented.join(", ")
                }
            ),
            C::Expired | C::ExpiredContext { .. } => "it has expired".to_string(),
            C::NotValidYet | C::NotValidYetContext { .. } => "it is not valid yet".to_string(),
            C::Revoked => "it has been revoked".to_string(),
            C::BadSignature => "its signature does not verify".to_string(),
            C::BadEncoding => "it is malformed".to_string(),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "it is not meant for a TLS server".to_string()
            }
            other => other.to_string(),
        },
        other => return format!("the TLS handshake with {host} failed: {other}"),
    };
    format!("the TLS certificate of {host} was refused: {why}")
}

/// The body of a successful answer, whichever transport carried it.
pub type BodyStream = http_body_util::BodyDataStream<hyper::body::Incoming>;

impl Fetcher {
    /// Opens the URL: connects to checked addresses only, speaks TLS for
    /// `https`, follows redirects (checking each), and returns the body of
    /// the final 2xx answer as a stream.
    pub async fn open(&self, url: &str) -> Result<(BodyStream, Option<u64>), String> {
        let mut current = parse_url(url)?;
        for hop in 0..=MAX_REDIRECTS {
            let addrs = resolve(&current, self.allow_loopback).await.map_err(|e| {
                if hop > 0 {
                    format!("redirect refused: {e}")
                } else {
                    e
                }
            })?;
            let resp = self.get(&current, &addrs).await?;
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
            let length = resp
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.trim().parse().ok());
            return Ok((resp.into_body().into_data_stream(), length));
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    /// One GET of `url` over a connection to one of `addrs` (all checked).
    async fn get(
        &self,
        url: &Url,
        addrs: &[SocketAddr],
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let tcp = connect(url, addrs).await?;
        let mut sender = match url.scheme {
            Scheme::Http => handshake(url, TokioIo::new(tcp)).await?,
            Scheme::Https => {
                let name = server_name(url)?;
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
                )
                .await
                .map_err(|_| format!("the TLS handshake with {} timed out", url.host))?
                .map_err(|e| tls_failure(&url.host, &e))?;
                handshake(url, TokioIo::new(tls)).await?
            }
        };
        let req = hyper::Request::get(url.path.as_str())
            .header(hyper::header::HOST, url.authority())
            .header(hyper::header::USER_AGENT, "ferrostack-image-web-download")
            .body(Empty::<Bytes>::new())
            .map_err(|_| "the URL cannot be requested".to_string())?;
        tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| format!("{} did not answer in time", url.host))?
            .map_err(|e| format!("fetching from {} failed: {e}", url.host))
    }
}

/// Connects to the first of the checked addresses that answers.
async fn connect(url: &Url, addrs: &[SocketAddr]) -> Result<tokio::net::TcpStream, String> {
    let mut last = format!("the host {} has no address", url.host);
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = format!("connecting to {} failed: {e}", url.host),
            Err(_) => last = format!("connecting to {} timed out", url.host),
        }
    }
    Err(last)
}

/// The HTTP/1.1 client handshake over a connected stream; the connection
/// is driven by its own task.
async fn handshake<T>(
    url: &Url,
    io: T,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("talking to {} failed: {e}", url.host))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
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
        assert_eq!(u.scheme, Scheme::Http);
        let u = parse_url("HTTPS://example.com/x.img").unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Https, 443));
        assert_eq!(u.authority(), "example.com");
        let u = parse_url("https://example.com:8443").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8443, "/"));
        assert_eq!(u.authority(), "example.com:8443");
        assert_eq!(parse_url("http://h:443/").unwrap().authority(), "h:443");
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
        // Relative and scheme-relative locations keep the scheme; absolute
        // ones may change it either way.
        let tls = parse_url("https://h/dir/file").unwrap();
        let u = join(&tls, "x.img").unwrap();
        assert_eq!(
            (u.scheme, u.port, u.path.as_str()),
            (Scheme::Https, 443, "/dir/x.img")
        );
        assert_eq!(join(&tls, "//other/y").unwrap().scheme, Scheme::Https);
        let down = join(&tls, "http://h/z").unwrap();
        assert_eq!((down.scheme, down.port), (Scheme::Http, 80));
        let up = join(&base, "https://h/z").unwrap();
        assert_eq!((up.scheme, up.port), (Scheme::Https, 443));
    }

    #[test]
    fn tls_names_are_the_urls_host() {
        let name = |u: &str| {
            server_name(&parse_url(u).unwrap())
                .unwrap()
                .to_str()
                .into_owned()
        };
        assert_eq!(name("https://Images.Example.com/x"), "images.example.com");
        assert_eq!(name("https://images.example.com./x"), "images.example.com");
        // IP literals are verified against the certificate's IP addresses,
        // in whatever spelling the URL used.
        assert_eq!(name("https://8.8.8.8/x"), "8.8.8.8");
        assert_eq!(name("https://0x08080808/x"), "8.8.8.8");
        assert_eq!(name("https://[2606:4700::1111]/x"), "2606:4700::1111");
        assert!(server_name(&parse_url("https://-bad.example/").unwrap()).is_err());
    }

    #[test]
    fn extra_roots_must_be_certificates() {
        assert!(Fetcher::new(false, &[]).is_ok());
        let err = Fetcher::new(false, &[b"not a certificate".to_vec()]).unwrap_err();
        assert!(err.contains("extra root certificate 0"), "{err}");
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
            "https://169.254.169.254/latest/meta-data",
            "https://127.0.0.1/",
            "https://0x7f000001/",
            "https://[::1]:8443/",
            "https://localhost/",
        ] {
            let url = parse_url(u).unwrap();
            let err = resolve(&url, false).await.unwrap_err();
            assert!(err.contains("web-download does not fetch"), "{u}: {err}");
        }
        let url = parse_url("http://127.0.0.1:9/").unwrap();
        assert!(resolve(&url, true).await.is_ok());
    }
}
