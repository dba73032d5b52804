//! Helpers for privileged tests of this crate and of crates built on it:
//! a root check that lets tests skip with a reason, unique names, a guard
//! that deletes test namespaces even when the test panics, and TCP probes
//! run from inside namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{netns, Netns};

/// Whether the process runs as root. When not, prints why the calling
/// test is skipped and returns false; the test should then return.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("SKIP {test}: needs root (network namespaces, netlink, nftables)");
        false
    }
}

/// A name for a test object: `fst-` + 6 random hex digits, unique enough
/// for tests that run in parallel or after a crashed run.
pub fn unique_prefix() -> String {
    let mut b = [0u8; 3];
    // Seeded from the clock and the thread id: good enough for names, and
    // it needs no extra dependency.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!("{:?}", std::thread::current().id());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for c in t.to_le_bytes().iter().chain(id.as_bytes()) {
        h = (h ^ u64::from(*c)).wrapping_mul(0x0100_0000_01b3);
    }
    b.copy_from_slice(&h.to_le_bytes()[..3]);
    format!("fst-{:02x}{:02x}{:02x}", b[0], b[1], b[2])
}

/// Deletes the named namespaces it holds when dropped, panic or not. The
/// kernel then destroys their links, veth peers included.
#[derive(Debug, Default)]
pub struct NetnsGuard {
    names: Vec<String>,
}

impl NetnsGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a namespace (blocking) and takes charge of deleting it.
    pub fn create(&mut self, name: &str) -> Netns {
        self.names.push(name.to_string());
        netns::create(name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
        Netns::Named(name.to_string())
    }

    /// Takes charge of deleting a namespace created some other way.
    pub fn adopt(&mut self, name: &str) -> Netns {
        self.names.push(name.to_string());
        Netns::Named(name.to_string())
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for n in &self.names {
            if let Err(e) = netns::delete(n) {
                eprintln!("cleanup of netns {n} failed: {e}");
            }
        }
    }
}

/// Starts a TCP echo server on `addr` inside `ns` that serves connections
/// until the test process ends (a background thread). Returns once it
/// listens.
pub fn tcp_echo_server(ns: &Netns, addr: SocketAddr) {
    let l = netns::listen_tcp(ns, addr).unwrap_or_else(|e| panic!("listen {addr} in {ns}: {e}"));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Connects from inside `ns` to `addr`, sends a line and expects it back
/// within `timeout`. True when the round trip worked.
pub fn tcp_echo_ok(ns: &Netns, addr: SocketAddr, timeout: Duration) -> bool {
    netns::run_in(ns, || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"ping\n")?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf)?;
        Ok(&buf == b"ping\n")
    })
    .map(|r| r.unwrap_or(false))
    .unwrap_or(false)
}

/// Opens a TCP connection from inside `ns`; the stream stays usable from
/// any thread (sockets keep their namespace).
pub fn tcp_connect_in(
    ns: &Netns,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    netns::run_in(ns, || TcpStream::connect_timeout(&addr, timeout))
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// Whether an established stream still carries data both ways within
/// `timeout` (an echo server at the other end).
pub fn stream_alive(s: &mut TcpStream, timeout: Duration) -> bool {
    let _ = s.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 5];
    s.write_all(b"ping\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
}
