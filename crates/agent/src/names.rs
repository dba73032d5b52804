//! Names of the objects the agent creates, on top of [`hostlink::names`].
//!
//! Interface names inside the host namespace come straight from
//! `hostlink::names` (bridges `fsb-`, VXLAN `fsx-`, taps `tap`, router legs
//! `qr-`/`qg-`). Two additions live here:
//!
//! * the DHCP namespace of a network, `fsd-<network id>`, with its veth:
//!   `fsd-<11 hex>` on the bridge and `ns-<11 hex>` inside;
//! * a **scope** for namespace names. Named namespaces are global to the
//!   machine (`/run/netns`), unlike links, which live in the agent's host
//!   namespace. In production the scope is empty and names are exactly
//!   `fsr-<router id>` / `fsd-<network id>`; tests that run several agents
//!   on one machine give each its own scope (`fsr-<scope>-<id>`), so one
//!   agent's garbage collection never sees another's namespaces. A scope
//!   must contain a character that is not a hex digit or a dash, so an
//!   unscoped agent (which only claims `fsr-` + a bare id) never claims a
//!   scoped name either.

use hostlink::names as hn;

/// Prefix of every DHCP namespace, and of the bridge end of its veth.
pub const DHCP_PREFIX: &str = "fsd-";
/// Prefix of the DHCP namespace's end of its veth.
pub const DHCP_NS_LEG_PREFIX: &str = "ns-";

/// The namespace-name scope of one agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(String);

/// Lowercase hex digits and dashes: what resource ids are made of.
pub(crate) fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-')
}

impl Scope {
    /// A scope; `""` is the production scope. Returns `None` for a scope
    /// that could be mistaken for an id or that makes names unusable.
    pub fn new(s: &str) -> Option<Scope> {
        if s.is_empty() {
            return Some(Scope::default());
        }
        let ok = s.len() <= 16
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !is_id(s);
        ok.then(|| Scope(s.to_string()))
    }

    fn ns(&self, prefix: &str, id: &str) -> Result<String, hostlink::Error> {
        // Reuse hostlink's id check (lowercase hex and dashes, >= 11 digits).
        hn::bridge_name(id)?;
        let name = if self.0.is_empty() {
            format!("{prefix}{id}")
        } else {
            format!("{prefix}{}-{id}", self.0)
        };
        hn::validate_netns_name(&name)?;
        Ok(name)
    }

    /// The namespace of a router.
    pub fn router_netns(&self, router_id: &str) -> Result<String, hostlink::Error> {
        self.ns(hn::ROUTER_NETNS_PREFIX, router_id)
    }

    /// The DHCP (and isolated-metadata) namespace of a network.
    pub fn dhcp_netns(&self, network_id: &str) -> Result<String, hostlink::Error> {
        self.ns(DHCP_PREFIX, network_id)
    }

    /// If `name` is a namespace of this scope with `prefix`, the id in it.
    fn owned<'a>(&self, prefix: &str, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(prefix)?;
        let id = if self.0.is_empty() {
            rest
        } else {
            rest.strip_prefix(self.0.as_str())?.strip_prefix('-')?
        };
        is_id(id).then_some(id)
    }

    /// Whether `name` is a router namespace this agent owns.
    pub fn owns_router_netns(&self, name: &str) -> bool {
        self.owned(hn::ROUTER_NETNS_PREFIX, name).is_some()
    }

    /// Whether `name` is a DHCP namespace this agent owns.
    pub fn owns_dhcp_netns(&self, name: &str) -> bool {
        self.owned(DHCP_PREFIX, name).is_some()
    }

    /// The scope as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex11(network_id: &str) -> Result<String, hostlink::Error> {
    Ok(hn::bridge_name(network_id)?[hn::BRIDGE_PREFIX.len()..].to_string())
}

/// The bridge end of a network's DHCP veth: `fsd-` + 11 hex digits.
pub fn dhcp_host_leg(network_id: &str) -> Result<String, hostlink::Error> {
    Ok(format!("{DHCP_PREFIX}{}", hex11(network_id)?))
}

/// The DHCP namespace's end of the veth: `ns-` + 11 hex digits.
pub fn dhcp_ns_leg(network_id: &str) -> Result<String, hostlink::Error> {
    Ok(format!("{DHCP_NS_LEG_PREFIX}{}", hex11(network_id)?))
}

/// Whether an interface of the host namespace is one the agent creates
/// and may delete (bridges, VXLAN devices, DHCP legs). Taps are not in
/// this list: VM taps belong to the compute driver, router legs die with
/// their namespace.
pub fn is_agent_link(name: &str) -> bool {
    name.starts_with(hn::BRIDGE_PREFIX)
        || name.starts_with(hn::VXLAN_PREFIX)
        || name.starts_with(DHCP_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b";

    #[test]
    fn scoped_and_unscoped_names_never_overlap() {
        let prod = Scope::new("").unwrap();
        let test = Scope::new("t1a2b3c").unwrap();
        let p = prod.router_netns(ID).unwrap();
        let t = test.router_netns(ID).unwrap();
        assert_eq!(p, format!("fsr-{ID}"));
        assert_eq!(t, format!("fsr-t1a2b3c-{ID}"));
        assert!(prod.owns_router_netns(&p) && !prod.owns_router_netns(&t));
        assert!(test.owns_router_netns(&t) && !test.owns_router_netns(&p));
        assert!(!prod.owns_router_netns("fsr-"));
        assert!(!prod.owns_dhcp_netns(&p));
        assert!(Scope::new("abc-123").is_none(), "a hex scope is ambiguous");
        assert!(Scope::new("a/b").is_none());
        assert_eq!(dhcp_host_leg(ID).unwrap(), "fsd-3f1c2a4b5d6");
        assert_eq!(dhcp_ns_leg(ID).unwrap(), "ns-3f1c2a4b5d6");
        assert_eq!(test.dhcp_netns(ID).unwrap(), format!("fsd-t1a2b3c-{ID}"));
    }
}
