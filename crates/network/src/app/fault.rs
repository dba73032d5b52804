//! Neutron's errors: the status, the `type` (upstream's exception class
//! name) and the message, as upstream words them.

use api::Error;
use axum::http::StatusCode;

fn e(status: StatusCode, kind: &'static str, msg: impl Into<String>) -> Error {
    Error::new(status, msg).kind(kind)
}

pub fn network_not_found(id: &str) -> Error {
    e(
        StatusCode::NOT_FOUND,
        "NetworkNotFound",
        format!("Network {id} could not be found."),
    )
}
pub fn subnet_not_found(id: &str) -> Error {
    e(
        StatusCode::NOT_FOUND,
        "SubnetNotFound",
        format!("Subnet {id} could not be found."),
    )
}
pub fn port_not_found(id: &str) -> Error {
    e(
        StatusCode::NOT_FOUND,
        "PortNotFound",
        format!("Port {id} could not be found."),
    )
}
pub fn router_not_found(id: &str) -> Error {
    e(
        StatusCode::NOT_FOUND,
        "RouterNotFound",
        format!("Router {id} could not be found"),
    )
}
pub fn floatingip_not_found(id: &str) -> Error {
    e(
        StatusCode::NOT_FOUND,
        "FloatingIPNotFound",
        format!("Floating IP {id} could not be found"),
    )
}
pub fn security_group_not_found(id: &str) -> Error {
    e(
        StatusCode::NOT_FOUND,
        "SecurityGroupNotFound",
        format!("Security group {id} does not exist"),
    )
}
pub fn security_group_rule_not_found(id: &str) -> Error {
    e(
        StatusCode::NOT_FOUND,
        "SecurityGroupRuleNotFound",
        format!("Security group rule {id} does not exist"),
    )
}
pub fn not_found(kind: &'static str, msg: impl Into<String>) -> Error {
    e(StatusCode::NOT_FOUND, kind, msg)
}

/// A request Neutron's API layer refuses before the plugin sees it
/// (webob's `HTTPBadRequest`).
pub fn bad_request(msg: impl Into<String>) -> Error {
    e(StatusCode::BAD_REQUEST, "HTTPBadRequest", msg)
}
/// An attribute that failed its validator.
pub fn invalid_attr(attr: &str, reason: impl std::fmt::Display) -> Error {
    bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}
/// `InvalidInput`: "Invalid input for operation: …".
pub fn invalid_input(msg: impl std::fmt::Display) -> Error {
    e(
        StatusCode::BAD_REQUEST,
        "InvalidInput",
        format!("Invalid input for operation: {msg}."),
    )
}
/// `BadRequest`: "Bad \<resource\> request: …".
pub fn bad_resource(resource: &str, msg: impl std::fmt::Display) -> Error {
    e(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Bad {resource} request: {msg}."),
    )
}
pub fn bad(kind: &'static str, msg: impl Into<String>) -> Error {
    e(StatusCode::BAD_REQUEST, kind, msg)
}
pub fn conflict(kind: &'static str, msg: impl Into<String>) -> Error {
    e(StatusCode::CONFLICT, kind, msg)
}
pub fn unavailable(kind: &'static str, msg: impl Into<String>) -> Error {
    e(StatusCode::SERVICE_UNAVAILABLE, kind, msg)
}
/// 403 for an action the policy denies.
pub fn policy(action: &str) -> Error {
    e(
        StatusCode::FORBIDDEN,
        "PolicyNotAuthorized",
        format!("{action} is disallowed by policy"),
    )
}
pub fn over_quota(resource: &str) -> Error {
    conflict(
        "OverQuota",
        format!("Quota exceeded for resources: ['{resource}']."),
    )
}
pub fn ip_generation_failure(net_id: &str) -> Error {
    conflict(
        "IpAddressGenerationFailure",
        format!("No more IP addresses available on network {net_id}."),
    )
}
pub fn ip_already_allocated(ip: &str, subnet_id: &str) -> Error {
    conflict(
        "IpAddressAlreadyAllocated",
        format!("IP address {ip} already allocated in subnet {subnet_id}"),
    )
}

/// Maps a store error. Constraint violations that reach here lost a race
/// the serialized transaction should have prevented (or came from another
/// controller): they are conflicts, named after the table.
pub fn db(err: store::Error) -> Error {
    match err {
        store::Error::Conflict(cols) => {
            let (kind, what) = if cols.contains("ip_allocation") {
                ("IpAddressAlreadyAllocated", RACE_IP)
            } else if cols.contains("mac_address") {
                ("MacAddressInUse", RACE_MAC)
            } else if cols.contains("segment_key") || cols.contains("conntrack_zone") {
                ("SegmentInUse", "The network segment is already in use.")
            } else if cols.contains("fingerprint") {
                (
                    "SecurityGroupRuleExists",
                    "Security group rule already exists.",
                )
            } else if cols.contains("floatingip") {
                (
                    "FloatingIPPortAlreadyAssociated",
                    "The fixed IP already has a floating IP.",
                )
            } else {
                (
                    "Conflict",
                    "The request conflicts with the current state of the resource.",
                )
            };
            conflict(kind, what)
        }
        store::Error::ForeignKey => conflict(
            "InUse",
            "A referenced resource does not exist or is still in use.",
        ),
        store::Error::NotFound => not_found("NotFound", "The resource could not be found."),
        other => Error::internal(&other),
    }
}

const RACE_IP: &str = "An IP address is already allocated.";
const RACE_MAC: &str = "The MAC address is already in use on this network.";

/// Whether an error is a lost race (a constraint caught two writers taking
/// the same address) worth retrying the whole operation for.
pub fn is_race(err: &Error) -> bool {
    err.status == StatusCode::CONFLICT && (err.message == RACE_IP || err.message == RACE_MAC)
}
