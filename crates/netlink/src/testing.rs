//! Helpers for privileged tests of this crate and of crates built on it:
//! a root check that lets tests skip with a reason, unique names, a guard
//! that deletes test namespaces even when the test panics, and TCP probes
//! run from inside namespaces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{netns, Netns};

/// What a test that needs root does in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootGate {
    /// Root: run.
    Run,
    /// Not root, and the developer asked to skip such tests
    /// (`FERROSTACK_SKIP_ROOT=1`): return early, passing.
    Skip,
    /// Not root otherwise: fail, so a run that could not test the data
    /// plane never reports it as tested.
    Fail,
}

/// Decides what a root-only test does, from whether the process is root
/// and its environment (`env` looks a variable up). Not root, it fails
/// unless the developer opted out with `FERROSTACK_SKIP_ROOT=1`; under CI
/// (`CI` set to a true value) or `scripts/test` (`FERROSTACK_STRICT_TESTS=1`)
/// the opt-out is not honoured, so a suite that ran nothing cannot pass.
pub fn root_gate(is_root: bool, env: impl Fn(&str) -> Option<String>) -> RootGate {
    let truthy = |name: &str| {
        env(name).is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
    };
    if is_root {
        RootGate::Run
    } else if truthy("CI") || truthy("FERROSTACK_STRICT_TESTS") {
        RootGate::Fail
    } else if truthy("FERROSTACK_SKIP_ROOT") {
        RootGate::Skip
    } else {
        RootGate::Fail
    }
}

/// Whether the calling test should run: true as root. Not root, it
/// returns false (the test should then return) only when the developer
/// opted out with `FERROSTACK_SKIP_ROOT=1` outside CI, and panics —
/// failing the test — otherwise (see [`root_gate`]).
pub fn require_root(test: &str) -> bool {
    let is_root = nix::unistd::geteuid().is_root();
    match root_gate(is_root, |name| std::env::var(name).ok()) {
        RootGate::Run => true,
        RootGate::Skip => {
            eprintln!("SKIP {test}: needs root (network namespaces, netlink, nftables); FERROSTACK_SKIP_ROOT=1 is set");
            false
        }
        RootGate::Fail => panic!(
            "{test} needs root (network namespaces, netlink, nftables) and this process is not root. \
             Run it as root; a developer may skip it with FERROSTACK_SKIP_ROOT=1, which CI \
             (CI=true) and scripts/test (FERROSTACK_STRICT_TESTS=1) do not honour."
        ),
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

#[cfg(test)]
mod tests {
    use super::{root_gate, RootGate};

    fn gate(is_root: bool, vars: &[(&str, &str)]) -> RootGate {
        root_gate(is_root, |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn root_only_tests_fail_unless_a_developer_opts_out() {
        let skip = ("FERROSTACK_SKIP_ROOT", "1");
        // Root runs them, whatever the environment says.
        assert_eq!(gate(true, &[]), RootGate::Run);
        assert_eq!(gate(true, &[("CI", "true"), skip]), RootGate::Run);
        // Not root and nothing said: fail, never a silent pass.
        assert_eq!(gate(false, &[]), RootGate::Fail);
        assert_eq!(
            gate(false, &[("FERROSTACK_SKIP_ROOT", "0")]),
            RootGate::Fail
        );
        assert_eq!(gate(false, &[("FERROSTACK_SKIP_ROOT", "")]), RootGate::Fail);
        // A developer's explicit opt-out skips.
        assert_eq!(gate(false, &[skip]), RootGate::Skip);
        assert_eq!(
            gate(false, &[("FERROSTACK_SKIP_ROOT", "true")]),
            RootGate::Skip
        );
        assert_eq!(gate(false, &[skip, ("CI", "false")]), RootGate::Skip);
        assert_eq!(gate(false, &[skip, ("CI", "")]), RootGate::Skip);
        // Under CI or scripts/test the opt-out is not honoured.
        assert_eq!(gate(false, &[("CI", "true")]), RootGate::Fail);
        assert_eq!(gate(false, &[skip, ("CI", "true")]), RootGate::Fail);
        assert_eq!(gate(false, &[skip, ("CI", "1")]), RootGate::Fail);
        assert_eq!(
            gate(false, &[skip, ("FERROSTACK_STRICT_TESTS", "1")]),
            RootGate::Fail
        );
    }
}
