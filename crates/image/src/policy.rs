//! Every policy rule of the image API, written as Glance's defaults
//! (`glance/policies/base.py`, `image.py`) write them, so an operator can
//! read them side by side with upstream.
//!
//! Targets built by the handlers carry Glance's names: `project_id` and
//! `owner` (the image's owner), `visibility`, and `member_id` (the caller's
//! project when it is a member of the image).

const PROJECT_MEMBER: &str = "role:member and project_id:%(project_id)s";
const PROJECT_READER: &str = "role:reader and project_id:%(project_id)s";

/// `(name, rule)` pairs.
pub fn defaults() -> Vec<(&'static str, String)> {
    let admin_or_project_member = format!("role:admin or ({PROJECT_MEMBER})");
    let admin_or_project_reader = format!("role:admin or ({PROJECT_READER})");
    let image_member_or_visible = "project_id:%(project_id)s or project_id:%(member_id)s or \"community\":%(visibility)s or \"public\":%(visibility)s or \"shared\":%(visibility)s";
    let get_image = format!("role:admin or (role:reader and ({image_member_or_visible}))");
    let download = format!("role:admin or (role:member and ({image_member_or_visible}))");
    vec![
        ("context_is_admin", "role:admin".into()),
        ("add_image", admin_or_project_member.clone()),
        ("delete_image", admin_or_project_member.clone()),
        ("get_image", get_image),
        ("get_images", admin_or_project_reader.clone()),
        ("modify_image", admin_or_project_member.clone()),
        ("publicize_image", "role:admin".into()),
        ("communitize_image", admin_or_project_member.clone()),
        ("download_image", download),
        ("upload_image", admin_or_project_member.clone()),
        ("add_member", admin_or_project_member.clone()),
        ("delete_member", admin_or_project_member.clone()),
        ("get_member", admin_or_project_reader.clone()),
        ("get_members", admin_or_project_reader.clone()),
        ("modify_member", admin_or_project_member.clone()),
        ("deactivate", admin_or_project_member.clone()),
        ("reactivate", admin_or_project_member.clone()),
        ("copy_image", "role:admin".into()),
        ("get_tasks", admin_or_project_reader),
        ("stores_info_detail", "role:admin".into()),
    ]
}

/// The enforcer with Glance's defaults.
pub fn enforcer() -> api::Enforcer {
    let rules = defaults();
    let pairs: Vec<(&str, &str)> = rules.iter().map(|(n, r)| (*n, r.as_str())).collect();
    api::Enforcer::new(&pairs).expect("the built-in image policy parses")
}

#[cfg(test)]
mod tests {
    /// Every `rule:` reference names a rule and none is circular, as an
    /// operator's file is checked at start.
    #[test]
    fn defaults_validate() {
        super::enforcer().validate().unwrap();
    }

    use super::*;
    use api::{AuthContext, RoleRef, Scope, Target};

    fn ctx(roles: &[&str], project: &str) -> AuthContext {
        AuthContext {
            user_id: "u".into(),
            user_name: "u".into(),
            user_domain_id: "default".into(),
            user_domain_name: "Default".into(),
            scope: Scope::Project {
                id: project.into(),
                name: project.into(),
                domain_id: "default".into(),
                domain_name: "Default".into(),
            },
            roles: roles
                .iter()
                .map(|r| RoleRef {
                    id: r.to_string(),
                    name: r.to_string(),
                })
                .collect(),
            methods: vec!["password"],
            audit_ids: vec![],
            issued_at: 0,
            expires_at: 0,
            application_credential: None,
        }
    }

    fn image(owner: &str, visibility: &str) -> Target {
        Target::new()
            .with("project_id", owner)
            .with("owner", owner)
            .with("visibility", visibility)
    }

    #[test]
    fn glance_defaults() {
        let e = enforcer();
        let member = ctx(&["member", "reader"], "p1");
        let reader = ctx(&["reader"], "p1");
        let admin = ctx(&["admin", "member", "reader"], "p0");
        assert!(e.check("get_image", &member, &image("p2", "public")));
        assert!(e.check("get_image", &member, &image("p2", "community")));
        assert!(!e.check("get_image", &member, &image("p2", "private")));
        assert!(e.check(
            "get_image",
            &member,
            &image("p2", "private").with("member_id", "p1")
        ));
        assert!(e.check("get_image", &admin, &image("p2", "private")));
        assert!(e.check("modify_image", &member, &image("p1", "private")));
        assert!(!e.check("modify_image", &reader, &image("p1", "private")));
        assert!(!e.check("delete_image", &member, &image("p2", "public")));
        assert!(!e.check("publicize_image", &member, &image("p1", "private")));
        assert!(e.check("publicize_image", &admin, &image("p1", "private")));
        assert!(e.check("download_image", &member, &image("p2", "public")));
        assert!(!e.check("download_image", &reader, &image("p2", "public")));
    }
}
