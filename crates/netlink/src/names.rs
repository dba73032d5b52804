//! Interface and namespace names derived from resource ids.
//!
//! The kernel limits interface names to 15 bytes (`IFNAMSIZ` - 1), so a
//! UUID never fits whole. Every name the agent creates comes from one of the
//! helpers below, which keep a short, recognisable prefix (so a reconciler
//! can tell Ferrostack's devices from anyone else's when it lists a host)
//! plus a slice of the resource id (so an operator can find the resource).
//! Port-derived names copy Neutron's scheme (`tap` + first 11 characters of
//! the port id) so operators' habits and scripts carry over.

use crate::Error;

/// The longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Prefix of every per-network bridge (`fsb-<11 hex>`).
pub const BRIDGE_PREFIX: &str = "fsb-";
/// Prefix of every per-network VXLAN device (`fsx-<vni>`).
pub const VXLAN_PREFIX: &str = "fsx-";
/// Prefix of the host-side device of every port (`tap<11>`), VM or router.
pub const TAP_PREFIX: &str = "tap";
/// Prefix of router legs on internal networks, inside the router netns.
pub const ROUTER_INTERNAL_PREFIX: &str = "qr-";
/// Prefix of a router's gateway leg on the external network.
pub const ROUTER_GATEWAY_PREFIX: &str = "qg-";
/// Prefix of every router network namespace (`fsr-<router id>`).
pub const ROUTER_NETNS_PREFIX: &str = "fsr-";

/// Checks that `name` is a valid Linux interface name.
///
/// The kernel's `dev_valid_name()` rejects empty names, `.` and `..`, names
/// of 16 bytes or more, and names containing `/`, `:` or whitespace. We
/// also reject non-ASCII and control characters: they are legal to the
/// kernel but break every tool an operator would use to look at them.
pub fn validate_ifname(name: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(bad("longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("reserved"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '/' | ':'))
    {
        return Err(bad(&format!("contains {c:?}")));
    }
    Ok(())
}

/// Checks that `name` is a usable named network namespace: a single file
/// name under `/run/netns`, printable ASCII, at most 64 bytes (iproute2
/// accepts up to `NAME_MAX`, but names are shown in tables and logs).
pub fn validate_netns_name(name: &str) -> Result<(), Error> {
    let bad = |reason: &str| Error::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > 64 {
        return Err(bad("longer than 64 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("reserved"));
    }
    if let Some(c) = name.chars().find(|c| !c.is_ascii_graphic() || *c == '/') {
        return Err(bad(&format!("contains {c:?}")));
    }
    Ok(())
}

/// Checks that a resource id is made of lowercase hex digits and dashes,
/// with at least 11 hex digits, so slices of it make valid, unambiguous
/// names. OpenStack ids are UUIDs (with dashes) or 32 hex digits.
fn checked_id(id: &str) -> Result<&str, Error> {
    let bad = |reason: &str| Error::InvalidName {
        name: id.to_string(),
        reason: reason.to_string(),
    };
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_digit() || ('a'..='f').contains(c) || *c == '-'))
    {
        return Err(bad(&format!("resource id contains {c:?}")));
    }
    if id.chars().filter(|c| *c != '-').count() < 11 {
        return Err(bad("resource id has fewer than 11 hex digits"));
    }
    Ok(id)
}

/// The bridge of a network on every host: `fsb-` + the first 11 hex digits
/// of the network id (dashes skipped). 15 bytes.
pub fn bridge_name(network_id: &str) -> Result<String, Error> {
    let id = checked_id(network_id)?;
    let hex: String = id.chars().filter(|c| *c != '-').take(11).collect();
    Ok(format!("{BRIDGE_PREFIX}{hex}"))
}

/// The VXLAN device of a network: `fsx-` + the VNI in decimal. The VNI is
/// unique per VXLAN network in a deployment and at most 2^24 - 1 (8 digits),
/// so the name is at most 12 bytes.
pub fn vxlan_name(vni: u32) -> Result<String, Error> {
    if vni >= 1 << 24 {
        return Err(Error::InvalidName {
            name: vni.to_string(),
            reason: "VNI is larger than 24 bits".into(),
        });
    }
    Ok(format!("{VXLAN_PREFIX}{vni}"))
}

/// The host-side device of a port (a VM's tap, or the bridge end of a
/// router leg's veth): `tap` + the first 11 characters of the port id, as
/// Neutron names them (`tap3f1c2a4b-5d`).
pub fn tap_name(port_id: &str) -> Result<String, Error> {
    prefixed_port_name(TAP_PREFIX, port_id)
}

/// A router's leg on an internal network, inside the router namespace:
/// `qr-` + the first 11 characters of the router port id.
pub fn router_internal_name(port_id: &str) -> Result<String, Error> {
    prefixed_port_name(ROUTER_INTERNAL_PREFIX, port_id)
}

/// A router's gateway leg on the external network, inside the router
/// namespace: `qg-` + the first 11 characters of the gateway port id.
pub fn router_gateway_name(port_id: &str) -> Result<String, Error> {
    prefixed_port_name(ROUTER_GATEWAY_PREFIX, port_id)
}

/// The network namespace of a router: `fsr-` + the whole router id (netns
/// names are not limited to 15 bytes, so no id is truncated here).
pub fn router_netns(router_id: &str) -> Result<String, Error> {
    let id = checked_id(router_id)?;
    let name = format!("{ROUTER_NETNS_PREFIX}{id}");
    validate_netns_name(&name)?;
    Ok(name)
}

fn prefixed_port_name(prefix: &str, port_id: &str) -> Result<String, Error> {
    let id = checked_id(port_id)?;
    let name = format!("{prefix}{}", &id[..11]);
    validate_ifname(&name)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3f1c2a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b";

    #[test]
    fn names_follow_the_scheme_and_fit_ifnamsiz() {
        assert_eq!(bridge_name(UUID).unwrap(), "fsb-3f1c2a4b5d6");
        assert_eq!(tap_name(UUID).unwrap(), "tap3f1c2a4b-5d");
        assert_eq!(router_internal_name(UUID).unwrap(), "qr-3f1c2a4b-5d");
        assert_eq!(router_gateway_name(UUID).unwrap(), "qg-3f1c2a4b-5d");
        assert_eq!(vxlan_name(16_777_215).unwrap(), "fsx-16777215");
        assert_eq!(router_netns(UUID).unwrap(), format!("fsr-{UUID}"));
        for n in [
            bridge_name(UUID).unwrap(),
            tap_name(UUID).unwrap(),
            vxlan_name(16_777_215).unwrap(),
        ] {
            validate_ifname(&n).unwrap();
        }
    }

    #[test]
    fn ids_without_dashes_work_too() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(bridge_name(id).unwrap(), "fsb-0123456789a");
        assert_eq!(tap_name(id).unwrap(), "tap0123456789a");
    }

    #[test]
    fn bad_ids_and_names_are_rejected_with_the_name() {
        for id in [
            "",
            "short",
            "3F1C2A4B-5D6E",
            "../../etc/passwd0000",
            "abc def01234567",
        ] {
            let e = tap_name(id).unwrap_err().to_string();
            assert!(e.contains(&format!("{id:?}")), "{e}");
        }
        assert!(vxlan_name(1 << 24).is_err());
        for n in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "sixteen-bytes-xx",
            "tab\t",
            "é",
        ] {
            assert!(validate_ifname(n).is_err(), "{n:?} accepted");
        }
        validate_ifname("fifteen-bytes-x").unwrap();
        for n in ["", "..", "a/b", "x y"] {
            assert!(validate_netns_name(n).is_err(), "{n:?} accepted");
        }
    }
}
