//! An immutable, in-memory picture of everything token validation needs.
//!
//! Validating a token must not cost database round trips (the target is
//! 20,000 validations a second on two cores), yet a role removed or a user
//! disabled must take effect at once. So validation reads a [`Snapshot`]:
//! users, projects, domains, roles and their implications, grants, group
//! memberships, application credentials, revocation events and the catalog,
//! loaded in one read transaction. Every identity write rebuilds it before
//! answering; a controller sharing the database with others notices their
//! writes through `identity_revision` within a second (see
//! `Identity::watch`).
//!
//! Revocation events are indexed by each field they match on, so checking a
//! token costs a handful of hash lookups however many events accumulate.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use store::Pool;

use crate::store::assignment::Assignment;
use crate::store::revocation::Event;
use crate::store::{self as db, Error};
use crate::token::{Payload, ScopeId};

#[derive(Debug, Clone)]
pub struct DomainInfo {
    pub name: String,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct ProjectInfo {
    pub name: String,
    pub domain_id: String,
    pub parent_id: Option<String>,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct UserInfo {
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
}

#[derive(Debug, Clone)]
pub struct RoleInfo {
    pub name: String,
    pub domain_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AppCredInfo {
    pub name: String,
    pub user_id: String,
    pub project_id: String,
    pub expires_at: Option<i64>,
    pub unrestricted: bool,
    pub role_ids: Vec<String>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub domains: HashMap<String, DomainInfo>,
    pub projects: HashMap<String, ProjectInfo>,
    pub users: HashMap<String, UserInfo>,
    pub roles: HashMap<String, RoleInfo>,
    /// prior role → roles it implies directly.
    pub implies: HashMap<String, Vec<String>>,
    /// user → groups.
    pub user_groups: HashMap<String, Vec<String>>,
    /// (actor_type, actor_id) → grants.
    pub grants: HashMap<(String, String), Vec<Assignment>>,
    pub app_creds: HashMap<String, AppCredInfo>,
    revocations: HashMap<(u8, String), Vec<Event>>,
    /// The catalog as tokens carry it.
    pub catalog: Value,
    /// The same, serialized once per snapshot: every token body splices it
    /// in instead of cloning and serializing the tree again.
    pub catalog_raw: Option<Box<serde_json::value::RawValue>>,
}

// Keys of the revocation index: which field an event is filed under.
const BY_AUDIT: u8 = 0;
const BY_CHAIN: u8 = 1;
const BY_USER: u8 = 2;
const BY_PROJECT: u8 = 3;
const BY_DOMAIN: u8 = 4;
const BY_APPCRED: u8 = 5;

impl Snapshot {
    /// Loads a consistent snapshot (one read transaction).
    pub async fn load(pool: &Pool) -> Result<Snapshot, Error> {
        let mut tx = pool.begin().await?;
        let mut s = Snapshot::default();
        let (rev,): (i64,) = sqlx::query_as("SELECT revision FROM identity_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        s.revision = rev;
        let rows: Vec<(String, String, bool)> =
            sqlx::query_as("SELECT id, name, enabled FROM domain")
                .fetch_all(&mut *tx)
                .await?;
        for (id, name, enabled) in rows {
            s.domains.insert(id, DomainInfo { name, enabled });
        }
        let rows: Vec<(String, String, String, Option<String>, bool)> =
            sqlx::query_as("SELECT id, name, domain_id, parent_id, enabled FROM project")
                .fetch_all(&mut *tx)
                .await?;
        for (id, name, domain_id, parent_id, enabled) in rows {
            s.projects.insert(
                id,
                ProjectInfo {
                    name,
                    domain_id,
                    parent_id,
                    enabled,
                },
            );
        }
        let rows: Vec<(String, String, String, bool)> =
            sqlx::query_as("SELECT id, name, domain_id, enabled FROM identity_user")
                .fetch_all(&mut *tx)
                .await?;
        for (id, name, domain_id, enabled) in rows {
            s.users.insert(
                id,
                UserInfo {
                    name,
                    domain_id,
                    enabled,
                },
            );
        }
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT id, name, domain_id FROM role")
                .fetch_all(&mut *tx)
                .await?;
        for (id, name, domain_id) in rows {
            let domain_id = (!domain_id.is_empty()).then_some(domain_id);
            s.roles.insert(id, RoleInfo { name, domain_id });
        }
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT prior_role_id, implied_role_id FROM implied_role")
                .fetch_all(&mut *tx)
                .await?;
        for (p, i) in rows {
            s.implies.entry(p).or_default().push(i);
        }
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT group_id, user_id FROM group_member")
                .fetch_all(&mut *tx)
                .await?;
        for (g, u) in rows {
            s.user_groups.entry(u).or_default().push(g);
        }
        let rows: Vec<Assignment> = sqlx::query_as("SELECT * FROM assignment")
            .fetch_all(&mut *tx)
            .await?;
        for a in rows {
            s.grants
                .entry((a.actor_type.clone(), a.actor_id.clone()))
                .or_default()
                .push(a);
        }
        let rows: Vec<(String, String, String, String, Option<i64>, bool)> = sqlx::query_as(
            "SELECT id, name, user_id, project_id, expires_at, unrestricted FROM application_credential",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (id, name, user_id, project_id, expires_at, unrestricted) in rows {
            s.app_creds.insert(
                id,
                AppCredInfo {
                    name,
                    user_id,
                    project_id,
                    expires_at,
                    unrestricted,
                    role_ids: vec![],
                },
            );
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT application_credential_id, role_id FROM application_credential_role",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (ac, r) in rows {
            if let Some(a) = s.app_creds.get_mut(&ac) {
                a.role_ids.push(r);
            }
        }
        let events: Vec<Event> = sqlx::query_as("SELECT * FROM revocation_event")
            .fetch_all(&mut *tx)
            .await?;
        for e in events {
            let key = if let Some(a) = &e.audit_id {
                (BY_AUDIT, a.clone())
            } else if let Some(u) = &e.user_id {
                (BY_USER, u.clone())
            } else if let Some(p) = &e.project_id {
                (BY_PROJECT, p.clone())
            } else if let Some(d) = &e.domain_id {
                (BY_DOMAIN, d.clone())
            } else if let Some(a) = &e.application_credential_id {
                (BY_APPCRED, a.clone())
            } else if let Some(c) = &e.audit_chain_id {
                (BY_CHAIN, c.clone())
            } else {
                continue;
            };
            s.revocations.entry(key).or_default().push(e);
        }
        let services: Vec<db::catalog::Service> =
            sqlx::query_as("SELECT * FROM service WHERE enabled = TRUE ORDER BY type, name")
                .fetch_all(&mut *tx)
                .await?;
        let endpoints: Vec<db::catalog::Endpoint> =
            sqlx::query_as("SELECT * FROM endpoint WHERE enabled = TRUE ORDER BY interface")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        s.catalog = Value::Array(
            services
                .iter()
                .map(|svc| {
                    let eps: Vec<Value> = endpoints
                        .iter()
                        .filter(|e| e.service_id == svc.id)
                        .map(|e| {
                            json!({
                                "id": e.id, "interface": e.interface, "url": e.url,
                                "region_id": e.region_id, "region": e.region_id,
                            })
                        })
                        .collect();
                    json!({"id": svc.id, "type": svc.kind, "name": svc.name, "endpoints": eps})
                })
                .collect(),
        );
        s.catalog_raw = serde_json::value::to_raw_value(&s.catalog).ok();
        Ok(s)
    }

    /// Whether any revocation event covers this token.
    pub fn is_revoked(&self, p: &Payload) -> bool {
        let audit = crate::token::audit_id_str(&p.audit_id);
        let chain = p.chain_audit_id();
        let (project, domain) = match &p.scope {
            ScopeId::Project(id) => (Some(id.as_str()), None),
            ScopeId::Domain(id) => (None, Some(id.as_str())),
            _ => (None, None),
        };
        let keys: [(u8, Option<&str>); 6] = [
            (BY_AUDIT, Some(&audit)),
            (BY_CHAIN, Some(&chain)),
            (BY_USER, Some(&p.user_id)),
            (BY_PROJECT, project),
            (BY_DOMAIN, domain),
            (BY_APPCRED, p.app_cred_id.as_deref()),
        ];
        for (kind, value) in keys {
            let Some(value) = value else { continue };
            let Some(events) = self.revocations.get(&(kind, value.to_string())) else {
                continue;
            };
            if events
                .iter()
                .any(|e| event_matches(e, p, &audit, &chain, project, domain))
            {
                return true;
            }
        }
        false
    }

    /// The effective role ids of a user on a scope: direct and group grants,
    /// grants inherited from the domain and parent projects, and every role
    /// those imply. Domain-specific roles only stand for the roles they
    /// imply: like Keystone, they are left out once implications are
    /// expanded. Application-credential restriction is the caller's.
    pub fn effective_roles(&self, user_id: &str, scope: &ScopeId) -> Vec<String> {
        let mut actors: Vec<(String, String)> = vec![("user".into(), user_id.to_string())];
        if let Some(groups) = self.user_groups.get(user_id) {
            actors.extend(groups.iter().map(|g| ("group".to_string(), g.clone())));
        }
        let mut direct: HashSet<String> = HashSet::new();
        for actor in &actors {
            let Some(grants) = self.grants.get(actor) else {
                continue;
            };
            for g in grants {
                if self.grant_applies(g, scope) {
                    direct.insert(g.role_id.clone());
                }
            }
        }
        let mut roles = self.expand_implied(direct);
        roles.retain(|r| self.is_global_role(r));
        roles
    }

    /// Whether a role is global (not domain-specific).
    pub fn is_global_role(&self, role_id: &str) -> bool {
        self.roles
            .get(role_id)
            .is_some_and(|r| r.domain_id.is_none())
    }

    /// Whether a grant gives its role on `scope`.
    pub fn grant_applies(&self, g: &Assignment, scope: &ScopeId) -> bool {
        match scope {
            ScopeId::Unscoped => false,
            ScopeId::System => g.target_type == "system" && !g.inherited,
            ScopeId::Domain(d) => g.target_type == "domain" && &g.target_id == d && !g.inherited,
            ScopeId::Project(p) => {
                if g.target_type == "project" && &g.target_id == p && !g.inherited {
                    return true;
                }
                if !g.inherited {
                    return false;
                }
                let Some(proj) = self.projects.get(p) else {
                    return false;
                };
                if g.target_type == "domain" && g.target_id == proj.domain_id {
                    return true;
                }
                // Inherited grants on any ancestor project.
                let mut cur = proj.parent_id.clone();
                let mut hops = 0;
                while let Some(pid) = cur {
                    if g.target_type == "project" && g.target_id == pid {
                        return true;
                    }
                    hops += 1;
                    if hops > 64 {
                        break;
                    }
                    cur = self.projects.get(&pid).and_then(|x| x.parent_id.clone());
                }
                false
            }
        }
    }

    /// Adds every role implied (transitively) by the given ones.
    pub fn expand_implied(&self, roles: HashSet<String>) -> Vec<String> {
        let mut out = roles.clone();
        let mut stack: Vec<String> = roles.into_iter().collect();
        while let Some(r) = stack.pop() {
            if let Some(imp) = self.implies.get(&r) {
                for i in imp {
                    if out.insert(i.clone()) {
                        stack.push(i.clone());
                    }
                }
            }
        }
        let mut v: Vec<String> = out
            .into_iter()
            .filter(|r| self.roles.contains_key(r))
            .collect();
        v.sort_by(|a, b| self.roles[a].name.cmp(&self.roles[b].name));
        v
    }

    /// Whether a project and its domain are enabled (and exist).
    pub fn project_usable(&self, id: &str) -> bool {
        self.projects
            .get(id)
            .is_some_and(|p| p.enabled && self.domains.get(&p.domain_id).is_some_and(|d| d.enabled))
    }

    /// Whether a user and its domain are enabled (and exist).
    pub fn user_usable(&self, id: &str) -> bool {
        self.users
            .get(id)
            .is_some_and(|u| u.enabled && self.domains.get(&u.domain_id).is_some_and(|d| d.enabled))
    }

    pub fn domain_name(&self, id: &str) -> String {
        self.domains
            .get(id)
            .map(|d| d.name.clone())
            .unwrap_or_default()
    }
}

fn event_matches(
    e: &Event,
    p: &Payload,
    audit: &str,
    chain: &str,
    project: Option<&str>,
    domain: Option<&str>,
) -> bool {
    if p.issued_at > e.issued_before {
        return false;
    }
    let eq = |want: &Option<String>, have: Option<&str>| match want {
        None => true,
        Some(w) => have == Some(w.as_str()),
    };
    eq(&e.audit_id, Some(audit))
        && eq(&e.audit_chain_id, Some(chain))
        && eq(&e.user_id, Some(&p.user_id))
        && eq(&e.project_id, project)
        && eq(&e.domain_id, domain)
        && eq(&e.application_credential_id, p.app_cred_id.as_deref())
}
