//! nftables for the `linux` network backend: security groups, anti-
//! spoofing, per-network conntrack zones and router NAT.
//!
//! * [`model`] is the typed description of what must be filtered or
//!   translated ([`PortRules`], [`RouterNat`], [`RemoteGroup`]).
//! * [`render`] turns it into nft JSON commands. One change (a port, a
//!   group, a router) is one `nft -j -f -` transaction, so the kernel
//!   swaps old rules for new atomically and never reloads the whole rule
//!   set for one port (recipe §9: 20–30 ms per port versus 7–11 s).
//! * [`Nft`] applies them with the `nft` binary, inside a namespace when
//!   asked, and reads them back (`nft -j list`) for reconciliation.
//! * `Fake` keeps the same model in memory (feature `testing`, which
//!   only tests enable).
//!
//! Why the `nft` binary and JSON we render ourselves: `nft -j` is
//! libnftables' stable, documented interface (the JSON schema,
//! `libnftables-json(5)`), the one tool that does nft's expression
//! evaluation (protocol dependencies, set intervals); talking nf_tables
//! netlink directly would mean redoing that. The `nftables` crate offers
//! typed schema structs, but we emit a small, fixed vocabulary (some
//! forty expressions), and `serde_json::json!` keeps each rule readable
//! next to the nft text it stands for, with snapshot tests on the output.
//!
//! Table layout (per host, in its namespace). A port is only elements
//! of the shared sets and maps; chains exist once, or once per
//! security-group set, never per port (nft reads every chain and every
//! anonymous set before each transaction that adds an element or a rule,
//! so per-port chains made each port's change cost grow with the number
//! of ports):
//!
//! ```text
//! table bridge fs_port    port marks and anti-spoofing (stateless)
//!   map port_mark  ifname : mark (comment: the port's digest)
//!   map gone_mark  ifname : mark (timeout) removed ports' devices: their old mark
//!   set secured    ifname               ports with port security on
//!   sets as_mac / as_ip4 / as_ip6       ifname . MAC / address allowed
//!   sets as_net4 / as_net6 (interval)   ifname . prefix allowed (address pairs)
//!   chain antispoof_pre  prerouting -350   iifname @secured jump antispoof
//!   chain antispoof / antispoof_arp        set lookups, DHCP server drop, drop
//!   chain mark_pre       prerouting -300   meta mark set iifname map @port_mark, @gone_mark
//!   chain mark_fwd       forward    -200   meta mark set oifname map @port_mark, @gone_mark
//! table inet fs_sg        conntrack zones and security groups (stateful)
//!   set revoked_rules   mark . mark (timeout)   port . rule (in either half) that left the port
//!   set revoked_remote4/6  mark . addr (timeout)  rule half . address that left its remote group
//!   map zones  iifname : ct zone        map egress / ingress  mark : verdict
//!   chain zone_raw  prerouting raw  ct zone set iifname map @zones
//!   chain sg_pre    prerouting 0    original: meta mark . ct mark & 0xffff0000 @revoked_rules drop;
//!                                   reply: meta mark . ct mark & 0xffff @revoked_rules drop;
//!                                   established accept; meta mark vmap @egress
//!   chain sg_fwd    forward 0       original: meta mark . ct mark & 0xffff @revoked_rules drop;
//!                                   reply: meta mark . ct mark & 0xffff0000 @revoked_rules drop;
//!                                   ct mark half . ct original saddr/daddr @revoked_remote4/6 drop;
//!                                   established accept; invalid drop; meta mark vmap @ingress
//!   chain sg_eg_common / sg_in_common   DHCP client, ND (sets nd_out / nd_in)
//!   chain eg-<12 hex> / in-<12 hex>     one pair per security-group set: jump
//!                                       sg_*_common; rules (ct mark set ct mark
//!                                       | <rule half> accept); drop
//!   sets rh4-<sg> / rh6-<sg>            members of a remote group (plain sets of host addresses)
//! table ip fs_nat         in each router namespace
//!   chain nat-pre dstnat · fip-post srcnat-10 · nat-post srcnat
//! ```
//!
//! Marks: a port's packet mark is `index << 16`; a rule's mark (1–65535)
//! is the same on every port; a session's conntrack mark holds two rule
//! marks: the initiator's egress rule in the high half, the answering
//! port's ingress rule in the low half (a session between two ports of
//! one host needs both). Which port a half belongs to is the packet mark
//! (`sg_pre`: the sending port, `sg_fwd`: the receiving one), read by
//! conntrack direction, so a rule that leaves a port cuts exactly the
//! sessions it admitted for that port, from either end (`revoked_rules`);
//! a remote-group member that leaves cuts the sessions the group's rules
//! admitted with its address (`revoked_remote4/6`); a removed port's
//! device keeps its mark (`gone_mark`) with all its rules revoked.

#[cfg(any(test, feature = "testing"))]
pub mod fake;
pub mod model;
pub mod real;
pub mod render;

#[cfg(any(test, feature = "testing"))]
pub use fake::Fake;
pub use model::{
    AllowedPair, Direction, EtherType, FloatingIp, InstalledPort, InternalLeg, PortRules, Protocol,
    Remote, RemoteGroup, RouterNat, SgRule, PORT_MARK_MASK, RULE_MARK_MASK,
};
pub use real::Nft;

/// Errors of the firewall drivers. Messages name the object and the
/// namespace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The desired state is malformed; nothing was applied.
    #[error("invalid {object}: {reason}")]
    Invalid {
        /// What was refused.
        object: String,
        /// Why.
        reason: String,
    },
    /// `nft` refused a transaction; nothing of it was applied.
    #[error("nft refused to {op} in {netns}: {stderr}")]
    Rejected {
        /// What was being done, e.g. `upsert port tap3f1c2a4b-5d`.
        op: String,
        /// Namespace.
        netns: String,
        /// nft's own explanation.
        stderr: String,
    },
    /// `nft` could not be run.
    #[error("cannot run nft in {netns}")]
    Spawn {
        /// Namespace.
        netns: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The namespace could not be entered.
    #[error("cannot enter the namespace")]
    Netns(#[from] hostlink::Error),
    /// `nft -j list` printed something this crate does not understand.
    #[error("cannot read the rules of table {table} in {netns}: {detail}")]
    Parse {
        /// Table.
        table: String,
        /// Namespace.
        netns: String,
        /// What was wrong.
        detail: String,
    },
    /// The base tables are missing: call [`Firewall::ensure_base`] first.
    #[error("the base tables are missing in {0}")]
    NoBase(String),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The host firewall and router NAT driver.
///
/// The driver is bound to the namespace holding the host's bridges (the
/// agent's own, normally). Calls block while `nft` runs (milliseconds):
/// async callers use `spawn_blocking`. Every operation is idempotent.
pub trait Firewall: Send + Sync {
    /// Creates the base tables, maps and hook chains unless present.
    fn ensure_base(&self) -> Result<()>;
    /// Maps a network's bridge to its conntrack zone (1–65535), so
    /// tenants with overlapping addresses never share connection state.
    fn upsert_network(&self, bridge: &str, zone: u16) -> Result<()>;
    /// Removes a bridge's zone entry. Absent is fine.
    fn remove_network(&self, bridge: &str) -> Result<()>;
    /// Replaces the member sets of a remote security group. Sessions that
    /// rules naming the group admitted with a member that left are cut
    /// (`revoked_remote4`/`6`); a member that comes back is admitted again.
    fn upsert_remote_group(&self, group: &RemoteGroup) -> Result<()>;
    /// Deletes a remote group's sets; fails while a port rule uses them.
    fn remove_remote_group(&self, id: &str) -> Result<()>;
    /// Installs or updates one port in one transaction. Unchanged rules
    /// (same digest) cause no transaction at all; rules that left the port
    /// have their sessions cut through the `revoked_rules` set; a port with port
    /// security off is in no set or map (it is removed if it was). A port
    /// whose security-group set is installed costs elements only; the
    /// set's chains are created with its first port and deleted with its
    /// last.
    fn upsert_port(&self, port: &PortRules) -> Result<()>;
    /// Removes a port's elements (and its security-group set's chains if
    /// no other port uses them), cutting its sessions (its rules revoked, its device keeping its mark in `gone_mark`).
    /// Absent is fine.
    fn remove_port(&self, name: &str) -> Result<()>;
    /// The ports installed on the host, read from the kernel, sorted.
    fn list_ports(&self) -> Result<Vec<InstalledPort>>;
    /// Installs or replaces a router's NAT table in its namespace.
    fn upsert_router_nat(&self, nat: &RouterNat) -> Result<()>;
    /// The digest of the router's installed NAT, if any.
    fn router_nat_digest(&self, netns: &str) -> Result<Option<String>>;
    /// Deletes a router's NAT table. Absent (or no namespace) is fine.
    fn remove_router(&self, netns: &str) -> Result<()>;
    /// Deletes the host's tables: every port, zone and group.
    fn delete_all(&self) -> Result<()>;
}
