//! The metadata proxy: answers `http://169.254.169.254/` for guests.
//!
//! One agent process serves every namespace: a listener opened *inside*
//! each router namespace (where nftables redirects 169.254.169.254:80 on
//! `qr-` legs to a local port) and inside each DHCP namespace of a network
//! that has a subnet without a router here (where 169.254.169.254/32 is on
//! the namespace's leg and the DHCP answer routes it there).
//!
//! **The caller is identified only by where the connection comes from**
//! (checklist 17, 18): the network of the leg it arrived on — in a router
//! namespace, the leg whose address the redirect delivered it to, and the
//! source must lie in that leg's subnet — and the TCP peer address, which
//! anti-spoofing guarantees is the VM's own. No header is read: a guest
//! that sends `X-Instance-ID`, `X-Forwarded-For` or `X-Tenant-ID` gets
//! exactly what it would get without them. Unknown callers get 404.
//!
//! **A guest cannot use the proxy to load the controller** ([`Proxy`]):
//! one caller (network + source address) may hold only
//! [`Limits::per_caller`] connections at once — the next is answered 429
//! at once and closed — and what the controller answered for a caller is
//! reused for [`Limits::cache_ttl`], concurrent requests of one caller
//! waiting for the one question in flight. Whatever addresses a guest
//! uses, at most [`Limits::controller_lookups`] questions are in flight
//! at once.
//!
//! **An answer never outlives the host state it was read under**: the
//! agent calls [`Proxy::observe`] before every pass, and a new revision
//! (a port moved to another VM, an address reused) drops every cached
//! answer. Expired answers are swept at most a `cache_ttl` after they
//! expire, and at most [`CACHE_MAX`] are kept.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hostlink::IpNet;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use netmodel::{MetadataAnswer, MetadataCaller, NetworkControl};
use tokio::sync::watch;

use crate::AbortOnDrop;

/// The versions `/openstack` lists (as Nova does); every one serves the
/// same documents.
pub const VERSIONS: &[&str] = &[
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "latest",
];

/// A router leg as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteLeg {
    /// The leg's own address (where redirected connections land).
    pub local: IpAddr,
    /// The subnet behind it.
    pub subnet: IpNet,
    /// Its network.
    pub network_id: String,
}

/// Where a listener answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// In a router namespace, with its internal legs.
    Router(Vec<SiteLeg>),
    /// In a network's DHCP namespace.
    Network(String),
}

impl Site {
    /// Who is calling, from the connection's two ends only.
    pub fn caller(&self, local: SocketAddr, peer: SocketAddr) -> Option<MetadataCaller> {
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let local_ip = match local.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match self {
            Site::Router(legs) => legs
                .iter()
                .find(|l| l.local == local_ip && l.subnet.contains(ip))
                .map(|l| MetadataCaller {
                    network_id: l.network_id.clone(),
                    ip,
                }),
            Site::Network(n) => Some(MetadataCaller {
                network_id: n.clone(),
                ip,
            }),
        }
    }
}

/// How much one caller may ask of the proxy, and through it of the
/// controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections one caller (network + source address) may have open
    /// at once; one more is answered `429 Too Many Requests` and closed.
    pub per_caller: usize,
    /// How long the controller's answer for a caller is reused (zero: it
    /// is asked on every request).
    pub cache_ttl: Duration,
    /// Questions to the controller in flight at once, over all callers
    /// (the others wait).
    pub controller_lookups: usize,
}

impl Default for Limits {
    /// 8 connections per caller (cloud-init makes them one at a time);
    /// answers kept 5 seconds (a boot reads a handful of documents in
    /// that time); 64 questions to the controller at once.
    fn default() -> Self {
        Limits {
            per_caller: 8,
            cache_ttl: Duration::from_secs(5),
            controller_lookups: 64,
        }
    }
}

/// A caller as the limits count it: its network (empty when the
/// connection matched no leg) and source address.
type Key = (String, IpAddr);

/// A cached answer: when it was read, and what.
type Cached = Option<(Instant, Option<MetadataAnswer>)>;

/// The most answers kept; a caller beyond them is answered uncached.
pub const CACHE_MAX: usize = 1024;

/// The cached answers, and the host state revision they were read under.
#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Arc<tokio::sync::Mutex<Cached>>>,
    revision: Option<u64>,
    swept: Option<Instant>,
}

impl Cache {
    /// Drops expired answers that nobody is reading or asking for.
    fn sweep(&mut self, ttl: Duration) {
        self.entries.retain(|_, c| {
            c.try_lock()
                .map_or(true, |g| g.as_ref().is_some_and(|(t, _)| t.elapsed() < ttl))
        });
        self.swept = Some(Instant::now());
    }
}

/// What every listener of one agent shares: the controller, the answers
/// it gave per caller, and the connections each caller has open.
pub struct Proxy {
    control: Arc<dyn NetworkControl>,
    limits: Limits,
    open: Mutex<HashMap<Key, usize>>,
    cache: Mutex<Cache>,
    lookups: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("limits", &self.limits)
            .finish()
    }
}

/// One open connection of a caller; counted until dropped.
struct Slot {
    proxy: Arc<Proxy>,
    key: Key,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.proxy.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Proxy {
    /// A proxy asking `control`, within `limits`.
    pub fn new(control: Arc<dyn NetworkControl>, limits: Limits) -> Arc<Proxy> {
        Arc::new(Proxy {
            control,
            limits,
            open: Mutex::default(),
            cache: Mutex::default(),
            lookups: tokio::sync::Semaphore::new(limits.controller_lookups.max(1)),
        })
    }

    /// Told the host state revision before every pass: a new one drops
    /// every cached answer (the port behind an address may have moved to
    /// another VM); the same one sweeps the expired answers.
    pub fn observe(&self, revision: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.revision != Some(revision) {
            cache.entries.clear();
            cache.revision = Some(revision);
        } else {
            cache.sweep(self.limits.cache_ttl);
        }
    }

    /// How many answers are cached (tests).
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    /// Counts a connection of `key`; `None` when it already has as many
    /// as it may.
    fn enter(self: &Arc<Self>, key: Key) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.limits.per_caller {
            return None;
        }
        *n += 1;
        Some(Slot {
            proxy: self.clone(),
            key,
        })
    }

    /// The controller's answer for `caller`, asked at most once per
    /// `cache_ttl` (errors are not kept: the next request asks again).
    pub async fn lookup(
        &self,
        caller: MetadataCaller,
    ) -> Result<Option<MetadataAnswer>, netmodel::Error> {
        let ttl = self.limits.cache_ttl;
        let key = (caller.network_id.clone(), caller.ip);
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            // Expired answers go at least once per period, and whenever
            // the cache is full.
            let full = cache.entries.len() >= CACHE_MAX && !cache.entries.contains_key(&key);
            if full || cache.swept.is_none_or(|t| t.elapsed() >= ttl) {
                cache.sweep(ttl);
            }
            if cache.entries.len() >= CACHE_MAX && !cache.entries.contains_key(&key) {
                // Full of live answers: this one is not kept.
                Arc::default()
            } else {
                cache.entries.entry(key).or_default().clone()
            }
        };
        // One question per caller at a time: the others wait for it.
        let mut entry = cell.lock().await;
        if let Some((at, answer)) = &*entry {
            if at.elapsed() < ttl {
                return Ok(answer.clone());
            }
        }
        let answer = {
            let _permit = self
                .lookups
                .acquire()
                .await
                .expect("the semaphore is never closed");
            self.control.metadata(caller).await?
        };
        *entry = Some((Instant::now(), answer.clone()));
        Ok(answer)
    }
}

/// What a caller over its limit gets: an answer without reading its
/// request, then the connection closes.
const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n\
retry-after: 1\r\ncontent-length: 4\r\nconnection: close\r\n\r\n429\n";

/// Answers a refused connection and closes it at once, without a task:
/// the answer fits the empty send buffer, and what the guest already
/// sent is read so that closing does not reset the connection under the
/// answer.
fn refuse(stream: tokio::net::TcpStream) {
    let _ = stream.try_write(TOO_MANY);
    let mut buf = [0u8; 4096];
    while matches!(stream.try_read(&mut buf), Ok(n) if n > 0) {}
    if let Ok(s) = stream.into_std() {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
}

/// A running listener; dropping it closes the socket and every
/// connection.
pub struct Listener {
    /// The address it listens on inside its namespace.
    pub addr: SocketAddr,
    site: watch::Sender<Site>,
    _task: AbortOnDrop,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Listener {
    /// Serves `sock` (already bound inside its namespace) on the current
    /// runtime.
    pub fn spawn(
        sock: std::net::TcpListener,
        addr: SocketAddr,
        site: Site,
        proxy: Arc<Proxy>,
    ) -> std::io::Result<Listener> {
        sock.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(sock)?;
        let (tx, rx) = watch::channel(site);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let (stream, peer) = match l.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("metadata accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while conns.try_join_next().is_some() {}
                let local = match stream.local_addr() {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                let caller = rx.borrow().caller(local, peer);
                let key = match &caller {
                    Some(c) => (c.network_id.clone(), c.ip),
                    None => (String::new(), peer.ip()),
                };
                let Some(slot) = proxy.enter(key) else {
                    tracing::debug!(%peer, "metadata: too many connections from one caller");
                    refuse(stream);
                    continue;
                };
                let proxy = proxy.clone();
                conns.spawn(async move {
                    let _slot = slot;
                    let svc = hyper::service::service_fn(move |req| {
                        let (proxy, caller) = (proxy.clone(), caller.clone());
                        async move { Ok::<_, Infallible>(answer(&proxy, caller, req).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(io, svc);
                    // A guest that never finishes its request holds nothing
                    // for long.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
                });
            }
        });
        Ok(Listener {
            addr,
            site: tx,
            _task: AbortOnDrop(task),
        })
    }

    /// Changes what the listener knows about its namespace's legs.
    pub fn update(&self, site: Site) {
        self.site.send_if_modified(|s| {
            if *s == site {
                false
            } else {
                *s = site;
                true
            }
        });
    }
}

fn text(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()))
        .expect("static response parts")
}

fn not_found() -> Response<Full<Bytes>> {
    text(StatusCode::NOT_FOUND, "text/plain", "404 Not Found\n")
}

/// Answers one request. Only the method and the path are read.
async fn answer<B>(
    proxy: &Proxy,
    caller: Option<MetadataCaller>,
    req: Request<B>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "405\n");
    }
    let Some(caller) = caller else {
        return not_found();
    };
    let ans = match proxy.lookup(caller).await {
        Ok(Some(a)) => a,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::warn!("metadata: {}", crate::Chain(&e));
            return text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "503\n");
        }
    };
    let body = serve_path(&ans, req.uri().path());
    match body {
        Some((ctype, b)) => text(StatusCode::OK, ctype, b),
        None => not_found(),
    }
}

/// The document at `path` for a caller whose answer is `ans`.
pub fn serve_path(ans: &MetadataAnswer, path: &str) -> Option<(&'static str, Bytes)> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["openstack"] => Some(("text/plain", Bytes::from(VERSIONS.join("\n")))),
        ["openstack", v] if VERSIONS.contains(v) => {
            let mut docs: Vec<&str> = ans.openstack.iter().map(|(p, _)| p.as_str()).collect();
            if ans.user_data.is_some() {
                docs.push("user_data");
            }
            Some(("text/plain", Bytes::from(docs.join("\n"))))
        }
        ["openstack", v, "user_data"] if VERSIONS.contains(v) => ans
            .user_data
            .as_ref()
            .map(|u| ("application/octet-stream", Bytes::from(u.clone()))),
        ["openstack", v, doc] if VERSIONS.contains(v) => ans
            .openstack
            .iter()
            .find(|(p, _)| p == doc)
            .map(|(_, j)| ("application/json", Bytes::from(j.to_string()))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_found_by_leg_and_source_only() {
        let site = Site::Router(vec![
            SiteLeg {
                local: "10.0.0.1".parse().unwrap(),
                subnet: "10.0.0.0/24".parse().unwrap(),
                network_id: "a".into(),
            },
            SiteLeg {
                local: "10.1.0.1".parse().unwrap(),
                subnet: "10.1.0.0/24".parse().unwrap(),
                network_id: "b".into(),
            },
        ]);
        let c = site
            .caller(
                "10.1.0.1:9697".parse().unwrap(),
                "10.1.0.5:4000".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(
            (c.network_id.as_str(), c.ip.to_string().as_str()),
            ("b", "10.1.0.5")
        );
        // A source outside the leg's subnet (routed in from elsewhere) is
        // nobody.
        assert!(site
            .caller(
                "10.0.0.1:9697".parse().unwrap(),
                "203.0.113.9:4000".parse().unwrap()
            )
            .is_none());
        // Arriving at an address that is not an internal leg (the gateway).
        assert!(site
            .caller(
                "203.0.113.10:9697".parse().unwrap(),
                "10.0.0.5:4000".parse().unwrap()
            )
            .is_none());
    }

    #[test]
    fn paths_map_to_documents() {
        let ans = MetadataAnswer {
            openstack: vec![("meta_data.json".into(), serde_json::json!({"uuid": "u"}))],
            user_data: Some(b"#!/bin/sh\n".to_vec()),
        };
        assert!(serve_path(&ans, "/openstack")
            .unwrap()
            .1
            .starts_with(b"2012-08-10"));
        let l = serve_path(&ans, "/openstack/latest/").unwrap().1;
        assert_eq!(&l[..], b"meta_data.json\nuser_data");
        assert_eq!(
            &serve_path(&ans, "/openstack/2013-04-04/meta_data.json")
                .unwrap()
                .1[..],
            br#"{"uuid":"u"}"#
        );
        assert_eq!(
            &serve_path(&ans, "/openstack/latest/user_data").unwrap().1[..],
            b"#!/bin/sh\n"
        );
        assert!(serve_path(&ans, "/openstack/1999-01-01/meta_data.json").is_none());
        assert!(serve_path(&ans, "/openstack/latest/../../etc/passwd").is_none());
        assert!(serve_path(&ans, "/openstack/latest/network_data.json").is_none());
    }
}
