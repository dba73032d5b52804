//! The network API's policy, in one place, in oslo.policy's language.
//!
//! These are Neutron's defaults (neutron/conf/policies/*.py, with
//! neutron-lib's `ADMIN_OR_PROJECT_MEMBER` and friends expanded): an admin
//! may do everything; a member manages its project's resources and may use
//! (but not change) shared and external networks; a reader reads. Targets
//! carry `project_id` (the resource's), `network:project_id` (the owner of
//! the resource's network), `security_group:project_id`, and the fields
//! Neutron's `field:` checks read (`shared`, `router:external`,
//! `device_owner`).
//!
//! One deliberate difference: upstream lets the *network owner* create or
//! update a port with a `network:*` device owner. Ours is admin (or
//! service) only — security checklist item 16: such ports are trusted by
//! the data plane (no anti-spoofing, no security groups), so a tenant that
//! could make one could spoof on its network.

const ADMIN: &str = "rule:admin_only";
const SERVICE: &str = "rule:service_api";
const ADMIN_OR_SERVICE: &str = "(rule:admin_only) or (rule:service_api)";
const ADMIN_OR_PROJECT_MEMBER: &str =
    "(rule:admin_only) or (role:member and project_id:%(project_id)s)";
const ADMIN_OR_PROJECT_READER: &str =
    "(rule:admin_only) or (role:reader and project_id:%(project_id)s)";
const ADMIN_OR_PROJECT_MANAGER: &str =
    "(rule:admin_only) or (role:manager and project_id:%(project_id)s)";
const ADMIN_OR_NET_OWNER_MEMBER: &str = "(rule:admin_only) or (role:member and rule:network_owner)";
const ADMIN_OR_SG_OWNER_MEMBER: &str = "(rule:admin_only) or (role:member and rule:sg_owner)";
const ADMIN_OR_SG_OWNER_READER: &str = "(rule:admin_only) or (role:reader and rule:sg_owner)";
/// neutron-lib's `PROJECT_MEMBER` or neutron's `ADMIN_OR_NET_OWNER_MEMBER`
/// (subnets, and deleting a port's tags).
const SUBNET_MEMBER: &str =
    "(role:member and project_id:%(project_id)s) or (rule:admin_only) or (role:member and rule:network_owner)";

/// `(rule name, rule)` pairs.
pub const DEFAULTS: &[(&str, &str)] = &[
    // Base rules (neutron/conf/policies/base.py).
    ("context_is_admin", "role:admin"),
    ("admin_only", "rule:context_is_admin"),
    ("service_api", "role:service"),
    ("regular_user", ""),
    ("owner", "project_id:%(project_id)s"),
    ("admin_or_owner", "rule:context_is_admin or rule:owner"),
    ("network_owner", "project_id:%(network:project_id)s"),
    ("admin_or_network_owner", "rule:context_is_admin or project_id:%(network:project_id)s"),
    ("sg_owner", "project_id:%(security_group:project_id)s"),
    ("shared", "field:networks:shared=True"),
    ("external", "field:networks:router:external=True"),
    ("external_network", "field:subnets:router:external=True"),
    ("network_device", "field:port:device_owner=~^network:"),
    ("default", "rule:admin_or_owner"),
    // Networks.
    ("create_network", ADMIN_OR_PROJECT_MEMBER),
    ("create_network:shared", ADMIN),
    ("create_network:router:external", ADMIN),
    ("create_network:port_security_enabled", ADMIN_OR_PROJECT_MEMBER),
    ("create_network:provider:network_type", ADMIN),
    ("create_network:provider:physical_network", ADMIN),
    ("create_network:provider:segmentation_id", ADMIN),
    ("create_network:tags", ADMIN_OR_PROJECT_MEMBER),
    (
        "get_network",
        "(rule:admin_only) or (role:reader and project_id:%(project_id)s) or (rule:service_api) or (rule:shared) or (rule:external)",
    ),
    (
        "get_network:tags",
        "(rule:admin_only) or (role:reader and project_id:%(project_id)s) or (rule:service_api) or (rule:shared) or (rule:external)",
    ),
    ("get_network:provider:network_type", ADMIN),
    ("get_network:provider:physical_network", ADMIN),
    ("get_network:provider:segmentation_id", ADMIN),
    ("update_network", ADMIN_OR_PROJECT_MEMBER),
    ("update_network:shared", ADMIN),
    ("update_network:provider:network_type", ADMIN),
    ("update_network:provider:physical_network", ADMIN),
    ("update_network:provider:segmentation_id", ADMIN),
    ("update_network:router:external", ADMIN),
    ("update_network:port_security_enabled", ADMIN_OR_PROJECT_MEMBER),
    ("update_network:tags", ADMIN_OR_PROJECT_MEMBER),
    ("delete_network", ADMIN_OR_PROJECT_MEMBER),
    ("delete_network:tags", ADMIN_OR_PROJECT_MEMBER),
    // Subnets.
    ("create_subnet", ADMIN_OR_NET_OWNER_MEMBER),
    ("create_subnet:tags", SUBNET_MEMBER),
    (
        "get_subnet",
        "(role:reader and project_id:%(project_id)s) or (rule:shared) or (rule:external_network) or (rule:admin_only) or (role:reader and rule:network_owner) or (rule:service_api)",
    ),
    (
        "get_subnet:tags",
        "(role:reader and project_id:%(project_id)s) or (rule:shared) or (rule:external_network) or (rule:admin_only) or (role:reader and rule:network_owner)",
    ),
    ("update_subnet", SUBNET_MEMBER),
    ("update_subnet:tags", SUBNET_MEMBER),
    ("delete_subnet", SUBNET_MEMBER),
    ("delete_subnet:tags", SUBNET_MEMBER),
    // Ports.
    (
        "create_port",
        "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner) or (rule:shared)",
    ),
    ("create_port:device_id", "(rule:admin_only) or (role:member and project_id:%(project_id)s) or (rule:service_api)"),
    ("create_port:device_owner", "(not rule:network_device) or (rule:admin_only) or (rule:service_api)"),
    ("create_port:mac_address", "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner)"),
    (
        "create_port:fixed_ips",
        "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner) or (rule:shared)",
    ),
    ("create_port:fixed_ips:ip_address", "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner)"),
    (
        "create_port:fixed_ips:subnet_id",
        "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner) or (rule:shared)",
    ),
    ("create_port:port_security_enabled", "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner)"),
    ("create_port:binding:host_id", ADMIN_OR_SERVICE),
    ("create_port:binding:profile", SERVICE),
    ("create_port:binding:vnic_type", "(rule:admin_only) or (role:member and project_id:%(project_id)s) or (rule:service_api)"),
    ("create_port:allowed_address_pairs", "(rule:admin_only) or (role:member and rule:network_owner) or (rule:service_api)"),
    ("create_port:tags", ADMIN_OR_PROJECT_MEMBER),
    (
        "get_port",
        "(rule:admin_only) or (rule:service_api) or (role:reader and rule:network_owner) or (role:reader and project_id:%(project_id)s)",
    ),
    (
        "get_port:tags",
        "(rule:admin_only) or (role:reader and rule:network_owner) or (role:reader and project_id:%(project_id)s)",
    ),
    ("get_port:binding:vif_type", ADMIN_OR_SERVICE),
    ("get_port:binding:vif_details", ADMIN_OR_SERVICE),
    ("get_port:binding:host_id", ADMIN_OR_SERVICE),
    ("get_port:binding:profile", ADMIN_OR_SERVICE),
    ("update_port", "(rule:admin_only) or (rule:service_api) or (role:member and project_id:%(project_id)s)"),
    ("update_port:device_id", "(rule:admin_only) or (role:member and project_id:%(project_id)s) or (rule:service_api)"),
    ("update_port:device_owner", "(not rule:network_device) or (rule:admin_only) or (rule:service_api)"),
    ("update_port:mac_address", "(rule:admin_only) or (rule:service_api) or (role:manager and rule:network_owner)"),
    ("update_port:fixed_ips", "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner)"),
    ("update_port:fixed_ips:ip_address", "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner)"),
    (
        "update_port:fixed_ips:subnet_id",
        "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner) or (rule:shared)",
    ),
    ("update_port:port_security_enabled", "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner)"),
    ("update_port:binding:host_id", ADMIN_OR_SERVICE),
    ("update_port:binding:profile", SERVICE),
    ("update_port:binding:vnic_type", "(rule:admin_only) or (rule:service_api) or (role:member and project_id:%(project_id)s)"),
    ("update_port:allowed_address_pairs", "(rule:admin_only) or (role:member and rule:network_owner) or (rule:service_api)"),
    ("update_port:tags", ADMIN_OR_PROJECT_MEMBER),
    (
        "delete_port",
        "(rule:admin_only) or (rule:service_api) or (role:member and rule:network_owner) or (role:member and project_id:%(project_id)s)",
    ),
    ("delete_port:tags", SUBNET_MEMBER),
    // Security groups and rules.
    ("create_security_group", ADMIN_OR_PROJECT_MEMBER),
    ("create_security_group:tags", ADMIN_OR_PROJECT_MEMBER),
    ("get_security_group", ADMIN_OR_PROJECT_READER),
    ("get_security_group:tags", ADMIN_OR_PROJECT_READER),
    ("update_security_group", ADMIN_OR_PROJECT_MEMBER),
    ("update_security_group:tags", ADMIN_OR_PROJECT_MEMBER),
    ("delete_security_group", ADMIN_OR_PROJECT_MEMBER),
    ("delete_security_group:tags", ADMIN_OR_PROJECT_MEMBER),
    ("create_security_group_rule", ADMIN_OR_SG_OWNER_MEMBER),
    ("get_security_group_rule", ADMIN_OR_SG_OWNER_READER),
    ("update_security_group_rule", ADMIN_OR_SG_OWNER_MEMBER),
    ("delete_security_group_rule", ADMIN_OR_SG_OWNER_MEMBER),
    // Routers.
    ("create_router", ADMIN_OR_PROJECT_MEMBER),
    ("create_router:external_gateway_info", ADMIN_OR_PROJECT_MEMBER),
    ("create_router:external_gateway_info:network_id", ADMIN_OR_PROJECT_MEMBER),
    ("create_router:external_gateway_info:enable_snat", ADMIN),
    ("create_router:external_gateway_info:external_fixed_ips", ADMIN),
    ("create_router:tags", ADMIN_OR_PROJECT_MEMBER),
    ("get_router", ADMIN_OR_PROJECT_READER),
    ("get_router:tags", ADMIN_OR_PROJECT_READER),
    ("update_router", ADMIN_OR_PROJECT_MEMBER),
    ("update_router:external_gateway_info", ADMIN_OR_PROJECT_MEMBER),
    ("update_router:external_gateway_info:network_id", ADMIN_OR_PROJECT_MEMBER),
    ("update_router:external_gateway_info:enable_snat", ADMIN),
    ("update_router:external_gateway_info:external_fixed_ips", ADMIN),
    ("update_router:tags", ADMIN_OR_PROJECT_MEMBER),
    ("delete_router", ADMIN_OR_PROJECT_MEMBER),
    ("delete_router:tags", ADMIN_OR_PROJECT_MEMBER),
    ("add_router_interface", ADMIN_OR_PROJECT_MEMBER),
    ("remove_router_interface", ADMIN_OR_PROJECT_MEMBER),
    ("add_extraroutes", ADMIN_OR_PROJECT_MEMBER),
    ("remove_extraroutes", ADMIN_OR_PROJECT_MEMBER),
    // Floating IPs.
    ("create_floatingip", ADMIN_OR_PROJECT_MEMBER),
    ("create_floatingip:floating_ip_address", ADMIN_OR_PROJECT_MANAGER),
    ("create_floatingip:tags", ADMIN_OR_PROJECT_MEMBER),
    ("get_floatingip", ADMIN_OR_PROJECT_READER),
    ("get_floatingip:tags", ADMIN_OR_PROJECT_READER),
    ("update_floatingip", ADMIN_OR_PROJECT_MEMBER),
    ("update_floatingip:tags", ADMIN_OR_PROJECT_MEMBER),
    ("delete_floatingip", ADMIN_OR_PROJECT_MEMBER),
    ("delete_floatingip:tags", ADMIN_OR_PROJECT_MEMBER),
    // Agents, availability zones, IP availability, quotas.
    ("get_agent", ADMIN),
    ("get_availability_zone", "role:reader"),
    ("get_network_ip_availability", ADMIN_OR_SERVICE),
    ("get_service_provider", "rule:regular_user"),
    ("get_quota", ADMIN_OR_PROJECT_MANAGER),
    ("update_quota", ADMIN),
    ("delete_quota", ADMIN),
];

/// Rules renamed upstream, `(old name, new name)`: the tag rules were
/// `<action>_<collection>_tags` until Neutron 2025.1 made them
/// `<action>_<resource>:tags` (the old names are oslo.policy deprecated
/// rules there). An operator's file that overrides an old name and not the
/// new one overrides the new one, as oslo.policy does.
pub const DEPRECATED_NAMES: &[(&str, &str)] = &[
    ("create_networks_tags", "create_network:tags"),
    ("get_networks_tags", "get_network:tags"),
    ("update_networks_tags", "update_network:tags"),
    ("delete_networks_tags", "delete_network:tags"),
    ("create_subnets_tags", "create_subnet:tags"),
    ("get_subnets_tags", "get_subnet:tags"),
    ("update_subnets_tags", "update_subnet:tags"),
    ("delete_subnets_tags", "delete_subnet:tags"),
    ("create_ports_tags", "create_port:tags"),
    ("get_ports_tags", "get_port:tags"),
    ("update_ports_tags", "update_port:tags"),
    ("delete_ports_tags", "delete_port:tags"),
    ("create_routers_tags", "create_router:tags"),
    ("get_routers_tags", "get_router:tags"),
    ("update_routers_tags", "update_router:tags"),
    ("delete_routers_tags", "delete_router:tags"),
    ("create_floatingips_tags", "create_floatingip:tags"),
    ("get_floatingips_tags", "get_floatingip:tags"),
    ("update_floatingips_tags", "update_floatingip:tags"),
    ("delete_floatingips_tags", "delete_floatingip:tags"),
    ("create_security_groups_tags", "create_security_group:tags"),
    ("get_security_groups_tags", "get_security_group:tags"),
    ("update_security_groups_tags", "update_security_group:tags"),
    ("delete_security_groups_tags", "delete_security_group:tags"),
];

/// Builds the enforcer. The defaults are compiled in and tested, so a parse
/// failure here is a bug.
pub fn enforcer() -> api::Enforcer {
    api::Enforcer::new(DEFAULTS).expect("network policy defaults parse")
}

#[cfg(test)]
mod tests {
    /// Every `rule:` reference names a rule and none is circular, as an
    /// operator's file is checked at start.
    #[test]
    fn defaults_validate() {
        super::enforcer().validate().unwrap();
    }

    /// Every renamed rule's new name is a rule here.
    #[test]
    fn deprecated_names_map_to_rules() {
        let e = super::enforcer();
        for (old, new) in super::DEPRECATED_NAMES {
            assert!(e.has(new), "{old} -> {new}");
            assert!(!e.has(old), "{old}");
        }
    }

    #[test]
    fn defaults_parse() {
        for (name, rule) in super::DEFAULTS {
            api::policy::parse(rule).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
