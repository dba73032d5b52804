//! Host network drivers over netlink, for the node agent's reconcilers.
//!
//! Everything the `linux` network backend builds on a host that is not a
//! firewall rule lives here: named network namespaces (router namespaces,
//! test "hosts" and "VMs"), links (bridges, veth pairs, VXLAN devices),
//! addresses, routes, permanent neighbours and VXLAN forwarding (FDB)
//! entries; and gratuitous ARP, which announces a new address to a link's
//! neighbours ([`arp`]).
//!
//! * [`HostNet`] is the driver interface. Its operations are idempotent:
//!   `ensure_*` of what already exists with the same settings succeeds and
//!   changes nothing, `delete_*` of what is absent succeeds, and every kind
//!   of object can be listed so a reconciler can compare the host with the
//!   desired state after a crash.
//! * [`Kernel`] is the real implementation: rtnetlink requests, over a
//!   socket opened inside the target namespace ([`netns`]).
//! * `Fake` keeps the same model in memory, with the same errors for the
//!   same mistakes, so control-plane tests run without root.
//! * [`names`] derives every interface and namespace name from resource
//!   ids, within the kernel's 15-byte limit.
//!
//! **Nothing here shells out to `ip`, `bridge` or `arping`:** netlink does
//! all of it (gratuitous ARP frames go out on a packet socket), and the
//! namespace plumbing is `unshare`/`setns`/bind mounts, the same
//! as iproute2's, so `ip netns` sees our namespaces and we see its.

pub mod arp;
mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod kernel;
pub mod names;
pub mod netns;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod types;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use error::Error;
#[cfg(any(test, feature = "testing"))]
pub use fake::{Announcement, Fake};
pub use kernel::Kernel;
pub use types::{
    AddressInfo, BridgeSpec, FdbEntry, IpNet, LinkInfo, LinkKind, MacAddr, Neighbour, Netns, Route,
    VethSpec, VxlanInfo, VxlanSpec,
};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The host network driver: namespaces, links, addresses, routes,
/// neighbours and VXLAN FDB entries.
///
/// Methods take the namespace they act in; link arguments are interface
/// names in that namespace. All "ensure" operations converge (create or
/// fix); all deletes tolerate absence.
#[async_trait::async_trait]
pub trait HostNet: Send + Sync {
    // ----- namespaces -----

    /// Creates the named namespace `/run/netns/<name>` if it is missing, and
    /// brings its loopback up.
    async fn ensure_netns(&self, name: &str) -> Result<()>;
    /// Deletes the named namespace; the kernel destroys its links once no
    /// process or socket holds it. Absent is fine.
    async fn delete_netns(&self, name: &str) -> Result<()>;
    /// Names of all named namespaces (ours and anyone else's), sorted.
    async fn list_netns(&self) -> Result<Vec<String>>;
    /// Writes a sysctl of the namespace, by its dotted key under `net.`
    /// (for example `net.ipv4.ip_forward`).
    async fn set_sysctl(&self, netns: &Netns, key: &str, value: &str) -> Result<()>;
    /// Reads a sysctl of the namespace, trimmed.
    async fn get_sysctl(&self, netns: &Netns, key: &str) -> Result<String>;
    /// Opens a listening TCP socket inside the namespace, for a service that
    /// runs in the agent's process but answers inside a router namespace
    /// (the metadata proxy). The socket stays in that namespace and pins it
    /// until closed.
    async fn listen_tcp(&self, netns: &Netns, addr: SocketAddr) -> Result<std::net::TcpListener>;

    // ----- links -----

    /// Creates the bridge if missing; sets its MTU and brings it up.
    async fn ensure_bridge(&self, netns: &Netns, spec: &BridgeSpec) -> Result<()>;
    /// Creates the veth pair if missing, the peer directly in
    /// `spec.peer_netns`; sets MTU (and the peer's MAC) and brings both ends
    /// up. A link named like either end that is not this pair is an error.
    async fn ensure_veth(&self, netns: &Netns, spec: &VethSpec) -> Result<()>;
    /// Creates the VXLAN device if missing (learning off), sets its MTU and
    /// brings it up. An existing device with another VNI, local address,
    /// port or underlay is an error: those cannot change in place.
    async fn ensure_vxlan(&self, netns: &Netns, spec: &VxlanSpec) -> Result<()>;
    /// Makes `link` a port of bridge `master`, or of none.
    async fn set_master(&self, netns: &Netns, link: &str, master: Option<&str>) -> Result<()>;
    /// Sets the administrative state.
    async fn set_up(&self, netns: &Netns, link: &str, up: bool) -> Result<()>;
    /// Sets the MTU.
    async fn set_mtu(&self, netns: &Netns, link: &str, mtu: u32) -> Result<()>;
    /// Converges a bridge port in one go: MTU `mtu`, on bridge `master`,
    /// up. Does nothing when it already is. The kernel driver turns IPv6
    /// off on a port it raises (a bridge port needs no address); the
    /// default, used by the fake, sets the three one by one.
    async fn wire_port(&self, netns: &Netns, link: &str, master: &str, mtu: u32) -> Result<()> {
        self.set_mtu(netns, link, mtu).await?;
        self.set_master(netns, link, Some(master)).await?;
        self.set_up(netns, link, true).await
    }
    /// Sets the MAC.
    async fn set_mac(&self, netns: &Netns, link: &str, mac: MacAddr) -> Result<()>;
    /// Deletes the link (a veth takes its peer with it). Absent is fine.
    async fn delete_link(&self, netns: &Netns, link: &str) -> Result<()>;
    /// Every link in the namespace, by index.
    async fn list_links(&self, netns: &Netns) -> Result<Vec<LinkInfo>>;

    // ----- addresses -----

    /// Adds the address to the link unless it is there.
    async fn ensure_address(&self, netns: &Netns, link: &str, net: IpNet) -> Result<()>;
    /// Removes the address from the link. Absent is fine.
    async fn delete_address(&self, netns: &Netns, link: &str, net: IpNet) -> Result<()>;
    /// Every global address in the namespace (link-local IPv6 and loopback
    /// addresses, which the kernel manages, are left out), sorted.
    async fn list_addresses(&self, netns: &Netns) -> Result<Vec<AddressInfo>>;

    // ----- routes (main table) -----

    /// Adds or replaces the route to `route.dest`.
    async fn ensure_route(&self, netns: &Netns, route: &Route) -> Result<()>;
    /// Deletes the route to `dest`. Absent is fine.
    async fn delete_route(&self, netns: &Netns, dest: IpNet) -> Result<()>;
    /// Routes of the main table that someone added (the kernel's own
    /// connected routes are left out), sorted.
    async fn list_routes(&self, netns: &Netns) -> Result<Vec<Route>>;

    // ----- neighbours -----

    /// Adds or replaces a permanent neighbour entry.
    async fn ensure_neighbour(&self, netns: &Netns, neigh: &Neighbour) -> Result<()>;
    /// Deletes the neighbour entry for `ip` on `link`. Absent is fine.
    async fn delete_neighbour(&self, netns: &Netns, link: &str, ip: IpAddr) -> Result<()>;
    /// Every permanent neighbour entry in the namespace, sorted.
    async fn list_neighbours(&self, netns: &Netns) -> Result<Vec<Neighbour>>;
    /// Tells the neighbours on `link` that each of `ips` is at `mac`, with
    /// gratuitous ARP ([`arp::gratuitous_request`], what `arping -U`
    /// sends): `rounds` rounds `interval` apart, one frame per address in
    /// each. A neighbour that has an entry for the address takes the new
    /// MAC at once; one without an entry ignores it (Linux's default
    /// `arp_accept=0`). The addresses are not checked against the link's.
    /// Returns when the last round is out, so a caller that must not wait
    /// for `(rounds - 1) × interval` spawns it. Changes nothing on the host.
    async fn announce_ipv4(
        &self,
        netns: &Netns,
        link: &str,
        mac: MacAddr,
        ips: &[Ipv4Addr],
        rounds: u32,
        interval: Duration,
    ) -> Result<()>;

    // ----- VXLAN forwarding database -----

    /// Adds a forwarding entry to VXLAN device `dev`. For
    /// [`MacAddr::ZERO`] (and multicast MACs) the destination is appended
    /// to the entry's list, so BUM traffic goes to every remote host; for a
    /// unicast MAC the entry is created or replaced (one destination).
    async fn append_fdb(&self, netns: &Netns, dev: &str, entry: &FdbEntry) -> Result<()>;
    /// Removes one destination of a forwarding entry. Absent is fine.
    async fn delete_fdb(&self, netns: &Netns, dev: &str, entry: &FdbEntry) -> Result<()>;
    /// Forwarding entries of `dev` that carry a destination, sorted.
    async fn list_fdb(&self, netns: &Netns, dev: &str) -> Result<Vec<FdbEntry>>;
}

/// Sysctl keys must name a per-namespace `net.` setting, in dotted form
/// without path tricks, because they become paths under `/proc/sys`.
pub(crate) fn sysctl_path(key: &str) -> Result<String> {
    let ok = key.starts_with("net.")
        && key.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        });
    if !ok {
        return Err(Error::InvalidValue {
            value: key.to_string(),
            expected: "a dotted net.* sysctl key",
        });
    }
    Ok(format!("/proc/sys/{}", key.replace('.', "/")))
}
