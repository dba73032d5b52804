//! The identity API's policy, in one place, in oslo.policy's language.
//!
//! These follow Keystone's defaults (keystone/common/policies/*.py) with its
//! three personas: `admin` may do everything (Keystone's ADMIN_REQUIRED is
//! `role:admin` in any scope); `reader` on the system may read everything; a
//! `reader` on a domain may read that domain's users, groups, projects and
//! grants; every user may read and manage what is their own (their token,
//! their projects, their application credentials, their password).

/// `(rule name, rule)` pairs.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("admin_required", "role:admin or is_admin:1"),
    ("system_reader", "role:reader and system_scope:all"),
    ("admin_or_system_reader", "rule:admin_required or rule:system_reader"),
    ("owner", "user_id:%(target.user.id)s"),
    ("token_subject", "user_id:%(target.token.user_id)s"),
    ("admin_or_token_subject", "rule:admin_required or rule:system_reader or rule:token_subject"),
    ("domain_reader_of_target", "role:reader and domain_id:%(target.domain_id)s"),
    ("admin_or_reader_of_target_domain", "rule:admin_or_system_reader or rule:domain_reader_of_target"),
    // Tokens.
    ("identity:validate_token", "rule:admin_or_token_subject"),
    ("identity:check_token", "rule:admin_or_token_subject"),
    ("identity:revoke_token", "rule:admin_required or rule:token_subject"),
    // Regions: readable by anyone authenticated (clients need them).
    ("identity:get_region", ""),
    ("identity:list_regions", ""),
    ("identity:create_region", "rule:admin_required"),
    ("identity:update_region", "rule:admin_required"),
    ("identity:delete_region", "rule:admin_required"),
    // Services and endpoints.
    ("identity:get_service", "rule:admin_or_system_reader"),
    ("identity:list_services", "rule:admin_or_system_reader"),
    ("identity:create_service", "rule:admin_required"),
    ("identity:update_service", "rule:admin_required"),
    ("identity:delete_service", "rule:admin_required"),
    ("identity:get_endpoint", "rule:admin_or_system_reader"),
    ("identity:list_endpoints", "rule:admin_or_system_reader"),
    ("identity:create_endpoint", "rule:admin_required"),
    ("identity:update_endpoint", "rule:admin_required"),
    ("identity:delete_endpoint", "rule:admin_required"),
    // Domains.
    ("identity:get_domain", "rule:admin_or_system_reader or domain_id:%(target.domain.id)s or project_domain_id:%(target.domain.id)s"),
    ("identity:list_domains", "rule:admin_or_system_reader"),
    ("identity:create_domain", "rule:admin_required"),
    ("identity:update_domain", "rule:admin_required"),
    ("identity:delete_domain", "rule:admin_required"),
    // Projects.
    ("identity:get_project", "rule:admin_or_reader_of_target_domain or project_id:%(target.project.id)s"),
    ("identity:list_projects", "rule:admin_or_reader_of_target_domain"),
    ("identity:list_user_projects", "rule:admin_or_reader_of_target_domain or rule:owner"),
    ("identity:create_project", "rule:admin_required"),
    ("identity:update_project", "rule:admin_required"),
    ("identity:delete_project", "rule:admin_required"),
    ("identity:get_project_tag", "rule:admin_or_reader_of_target_domain or project_id:%(target.project.id)s"),
    ("identity:list_project_tags", "rule:admin_or_reader_of_target_domain or project_id:%(target.project.id)s"),
    ("identity:update_project_tags", "rule:admin_required"),
    ("identity:create_project_tag", "rule:admin_required"),
    ("identity:delete_project_tag", "rule:admin_required"),
    ("identity:delete_project_tags", "rule:admin_required"),
    // Users.
    ("identity:get_user", "rule:admin_or_reader_of_target_domain or rule:owner"),
    ("identity:list_users", "rule:admin_or_reader_of_target_domain"),
    ("identity:create_user", "rule:admin_required"),
    ("identity:update_user", "rule:admin_required"),
    ("identity:delete_user", "rule:admin_required"),
    ("identity:list_groups_for_user", "rule:admin_or_reader_of_target_domain or rule:owner"),
    // Groups.
    ("identity:get_group", "rule:admin_or_reader_of_target_domain"),
    ("identity:list_groups", "rule:admin_or_reader_of_target_domain"),
    ("identity:list_users_in_group", "rule:admin_or_reader_of_target_domain"),
    ("identity:check_user_in_group", "rule:admin_or_reader_of_target_domain"),
    ("identity:create_group", "rule:admin_required"),
    ("identity:update_group", "rule:admin_required"),
    ("identity:delete_group", "rule:admin_required"),
    ("identity:add_user_to_group", "rule:admin_required"),
    ("identity:remove_user_from_group", "rule:admin_required"),
    // Roles and implied roles.
    ("identity:get_role", "rule:admin_or_system_reader or role:reader"),
    ("identity:list_roles", "rule:admin_or_system_reader or role:reader"),
    ("identity:create_role", "rule:admin_required"),
    ("identity:update_role", "rule:admin_required"),
    ("identity:delete_role", "rule:admin_required"),
    ("identity:get_implied_role", "rule:admin_or_system_reader"),
    ("identity:list_implied_roles", "rule:admin_or_system_reader"),
    ("identity:list_role_inference_rules", "rule:admin_or_system_reader"),
    ("identity:create_implied_role", "rule:admin_required"),
    ("identity:delete_implied_role", "rule:admin_required"),
    // Grants and assignments.
    ("identity:check_grant", "rule:admin_or_reader_of_target_domain"),
    ("identity:list_grants", "rule:admin_or_reader_of_target_domain"),
    ("identity:create_grant", "rule:admin_required"),
    ("identity:revoke_grant", "rule:admin_required"),
    ("identity:list_system_grants_for_user", "rule:admin_or_system_reader"),
    ("identity:check_system_grant_for_user", "rule:admin_or_system_reader"),
    ("identity:create_system_grant_for_user", "rule:admin_required"),
    ("identity:revoke_system_grant_for_user", "rule:admin_required"),
    ("identity:list_role_assignments", "rule:admin_or_reader_of_target_domain"),
    // Application credentials: the owner's, and only from a token that is
    // not itself from a restricted application credential (checked in code).
    ("identity:get_application_credential", "rule:admin_required or rule:owner"),
    ("identity:list_application_credentials", "rule:admin_required or rule:owner"),
    ("identity:create_application_credential", "rule:owner"),
    ("identity:delete_application_credential", "rule:admin_required or rule:owner"),
];

/// Builds the enforcer. The defaults are compiled in and tested, so a parse
/// failure here is a bug.
pub fn enforcer() -> api::Enforcer {
    api::Enforcer::new(DEFAULTS).expect("identity policy defaults parse")
}

#[cfg(test)]
mod tests {
    /// Every `rule:` reference names a rule and none is circular, as an
    /// operator's file is checked at start.
    #[test]
    fn defaults_validate() {
        super::enforcer().validate().unwrap();
    }

    #[test]
    fn defaults_parse() {
        for (name, rule) in super::DEFAULTS {
            api::policy::parse(rule).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
