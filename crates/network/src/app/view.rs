//! Resources as the API shows them: a row plus what hangs off it (subnets
//! of a network, fixed IPs and groups of a port, rules of a group, tags),
//! loaded in a few queries per collection, and the policy target of each.

use std::collections::HashMap;

use api::{Error, Target};

use super::{db_err, py_bool, Network};
use crate::store as db;

/// What subnets and ports need to know of their network for policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetMeta {
    pub project_id: String,
    pub shared: bool,
    pub external: bool,
}

impl NetMeta {
    pub fn of(n: &db::network::Network) -> NetMeta {
        NetMeta {
            project_id: n.project_id.clone(),
            shared: n.shared,
            external: n.external,
        }
    }
    fn add_to(&self, t: Target) -> Target {
        t.with("network:project_id", &self.project_id)
            .with("shared", py_bool(self.shared))
            .with("router:external", py_bool(self.external))
    }
}

#[derive(Debug, Clone)]
pub struct NetworkView {
    pub net: db::network::Network,
    pub subnets: Vec<String>,
    pub tags: Vec<String>,
}

impl NetworkView {
    pub fn target(&self) -> Target {
        network_target(&self.net)
    }
}

pub fn network_target(n: &db::network::Network) -> Target {
    Target::new()
        .with("project_id", &n.project_id)
        .with("tenant_id", &n.project_id)
        .with("id", &n.id)
        .with("shared", py_bool(n.shared))
        .with("router:external", py_bool(n.external))
        .with("network:project_id", &n.project_id)
}

#[derive(Debug, Clone)]
pub struct SubnetView {
    pub subnet: db::subnet::Subnet,
    pub net: NetMeta,
    pub tags: Vec<String>,
}

impl SubnetView {
    pub fn target(&self) -> Target {
        subnet_target(&self.subnet, &self.net)
    }
}

pub fn subnet_target(s: &db::subnet::Subnet, net: &NetMeta) -> Target {
    net.add_to(
        Target::new()
            .with("project_id", &s.project_id)
            .with("tenant_id", &s.project_id)
            .with("id", &s.id)
            .with("network_id", &s.network_id),
    )
}

#[derive(Debug, Clone)]
pub struct PortView {
    pub port: db::port::Port,
    pub fixed_ips: Vec<db::port::Allocation>,
    pub security_groups: Vec<String>,
    pub net: NetMeta,
    pub tags: Vec<String>,
}

impl PortView {
    pub fn target(&self) -> Target {
        port_target(&self.port, &self.net)
    }
}

pub fn port_target(p: &db::port::Port, net: &NetMeta) -> Target {
    net.add_to(
        Target::new()
            .with("project_id", &p.project_id)
            .with("tenant_id", &p.project_id)
            .with("id", &p.id)
            .with("network_id", &p.network_id)
            .with("device_owner", &p.device_owner)
            .with("device_id", &p.device_id),
    )
}

#[derive(Debug, Clone)]
pub struct SecurityGroupView {
    pub sg: db::secgroup::SecurityGroup,
    pub rules: Vec<db::secgroup::Rule>,
    pub tags: Vec<String>,
}

impl SecurityGroupView {
    pub fn target(&self) -> Target {
        sg_target(&self.sg)
    }
}

pub fn sg_target(g: &db::secgroup::SecurityGroup) -> Target {
    Target::new()
        .with("project_id", &g.project_id)
        .with("tenant_id", &g.project_id)
        .with("id", &g.id)
        .with("security_group:project_id", &g.project_id)
}

pub fn rule_target(r: &db::secgroup::Rule, sg_project: &str) -> Target {
    Target::new()
        .with("project_id", &r.project_id)
        .with("tenant_id", &r.project_id)
        .with("id", &r.id)
        .with("security_group:project_id", sg_project)
}

#[derive(Debug, Clone)]
pub struct RouterView {
    pub router: db::router::Router,
    /// The gateway port's network and fixed IPs.
    pub gateway: Option<(String, Vec<db::port::Allocation>)>,
    pub tags: Vec<String>,
}

impl RouterView {
    pub fn target(&self) -> Target {
        router_target(&self.router)
    }
}

pub fn router_target(r: &db::router::Router) -> Target {
    Target::new()
        .with("project_id", &r.project_id)
        .with("tenant_id", &r.project_id)
        .with("id", &r.id)
}

#[derive(Debug, Clone)]
pub struct FloatingIpView {
    pub fip: db::floatingip::FloatingIp,
    /// The associated port (`port_details`, extension `fip-port-details`).
    pub port: Option<db::port::Port>,
    pub tags: Vec<String>,
}

impl FloatingIpView {
    pub fn target(&self) -> Target {
        fip_target(&self.fip)
    }
}

pub fn fip_target(f: &db::floatingip::FloatingIp) -> Target {
    Target::new()
        .with("project_id", &f.project_id)
        .with("tenant_id", &f.project_id)
        .with("id", &f.id)
}

fn group<T, K: std::hash::Hash + Eq>(items: Vec<T>, key: impl Fn(&T) -> K) -> HashMap<K, Vec<T>> {
    let mut out: HashMap<K, Vec<T>> = HashMap::new();
    for it in items {
        out.entry(key(&it)).or_default().push(it);
    }
    out
}

impl Network {
    pub async fn network_views(&self, id: Option<&str>) -> Result<Vec<NetworkView>, Error> {
        let nets = match id {
            Some(id) => db::network::get(&self.pool, id)
                .await
                .map_err(db_err)?
                .into_iter()
                .collect(),
            None => db::network::list(&self.pool).await.map_err(db_err)?,
        };
        let subnets = group(db::subnet::list(&self.pool).await.map_err(db_err)?, |s| {
            s.network_id.clone()
        });
        let mut tags = db::misc::tags_of_type(&self.pool, "networks")
            .await
            .map_err(db_err)?;
        Ok(nets
            .into_iter()
            .map(|net| NetworkView {
                subnets: subnets
                    .get(&net.id)
                    .map(|v| v.iter().map(|s| s.id.clone()).collect())
                    .unwrap_or_default(),
                tags: tags.remove(&net.id).unwrap_or_default(),
                net,
            })
            .collect())
    }

    async fn net_metas(&self) -> Result<HashMap<String, NetMeta>, Error> {
        Ok(db::network::list(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(|n| (n.id.clone(), NetMeta::of(n)))
            .collect())
    }

    pub async fn subnet_views(&self, id: Option<&str>) -> Result<Vec<SubnetView>, Error> {
        let subnets = match id {
            Some(id) => db::subnet::get(&self.pool, id)
                .await
                .map_err(db_err)?
                .into_iter()
                .collect(),
            None => db::subnet::list(&self.pool).await.map_err(db_err)?,
        };
        let metas = self.net_metas().await?;
        let mut tags = db::misc::tags_of_type(&self.pool, "subnets")
            .await
            .map_err(db_err)?;
        Ok(subnets
            .into_iter()
            .filter_map(|s| {
                let net = metas.get(&s.network_id)?.clone();
                Some(SubnetView {
                    tags: tags.remove(&s.id).unwrap_or_default(),
                    net,
                    subnet: s,
                })
            })
            .collect())
    }

    pub async fn port_views(&self, sel: &db::port::Select<'_>) -> Result<Vec<PortView>, Error> {
        let ports = db::port::select(&self.pool, sel).await.map_err(db_err)?;
        let single = sel.id.is_some() || ports.len() == 1;
        let (mut allocs, mut sgs) = if single {
            let mut a = HashMap::new();
            let mut g = HashMap::new();
            for p in &ports {
                a.insert(
                    p.id.clone(),
                    db::port::allocations_of_port(&self.pool, &p.id)
                        .await
                        .map_err(db_err)?,
                );
                g.insert(
                    p.id.clone(),
                    db::port::security_groups_of(&self.pool, &p.id)
                        .await
                        .map_err(db_err)?,
                );
            }
            (a, g)
        } else {
            let a = group(
                db::port::allocations(&self.pool).await.map_err(db_err)?,
                |a| a.port_id.clone(),
            );
            let mut g: HashMap<String, Vec<String>> = HashMap::new();
            for (p, sg) in db::port::security_group_bindings(&self.pool)
                .await
                .map_err(db_err)?
            {
                g.entry(p).or_default().push(sg);
            }
            (a, g)
        };
        let metas = self.net_metas().await?;
        let mut tags = db::misc::tags_of_type(&self.pool, "ports")
            .await
            .map_err(db_err)?;
        Ok(ports
            .into_iter()
            .filter_map(|p| {
                let net = metas.get(&p.network_id)?.clone();
                Some(PortView {
                    fixed_ips: allocs.remove(&p.id).unwrap_or_default(),
                    security_groups: sgs.remove(&p.id).unwrap_or_default(),
                    tags: tags.remove(&p.id).unwrap_or_default(),
                    net,
                    port: p,
                })
            })
            .collect())
    }

    pub async fn port_view(&self, id: &str) -> Result<Option<PortView>, Error> {
        Ok(self
            .port_views(&db::port::Select {
                id: Some(id),
                ..Default::default()
            })
            .await?
            .pop())
    }

    pub async fn security_group_views(
        &self,
        id: Option<&str>,
    ) -> Result<Vec<SecurityGroupView>, Error> {
        let sgs = match id {
            Some(id) => db::secgroup::get(&self.pool, id)
                .await
                .map_err(db_err)?
                .into_iter()
                .collect(),
            None => db::secgroup::list(&self.pool).await.map_err(db_err)?,
        };
        let mut rules = match id {
            Some(id) => group(
                db::secgroup::rules_of(&self.pool, id)
                    .await
                    .map_err(db_err)?,
                |r| r.security_group_id.clone(),
            ),
            None => group(
                db::secgroup::rules(&self.pool).await.map_err(db_err)?,
                |r| r.security_group_id.clone(),
            ),
        };
        let mut tags = db::misc::tags_of_type(&self.pool, "security-groups")
            .await
            .map_err(db_err)?;
        Ok(sgs
            .into_iter()
            .map(|sg| SecurityGroupView {
                rules: rules.remove(&sg.id).unwrap_or_default(),
                tags: tags.remove(&sg.id).unwrap_or_default(),
                sg,
            })
            .collect())
    }

    /// Rules with the project of their group (for policy).
    pub async fn rule_views(
        &self,
        id: Option<&str>,
    ) -> Result<Vec<(db::secgroup::Rule, String)>, Error> {
        let rules = match id {
            Some(id) => db::secgroup::rule_get(&self.pool, id)
                .await
                .map_err(db_err)?
                .into_iter()
                .collect(),
            None => db::secgroup::rules(&self.pool).await.map_err(db_err)?,
        };
        let owners: HashMap<String, String> = db::secgroup::list(&self.pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|g| (g.id, g.project_id))
            .collect();
        Ok(rules
            .into_iter()
            .filter_map(|r| {
                let owner = owners.get(&r.security_group_id)?.clone();
                Some((r, owner))
            })
            .collect())
    }

    pub async fn router_views(&self, id: Option<&str>) -> Result<Vec<RouterView>, Error> {
        let routers = match id {
            Some(id) => db::router::get(&self.pool, id)
                .await
                .map_err(db_err)?
                .into_iter()
                .collect(),
            None => db::router::list(&self.pool).await.map_err(db_err)?,
        };
        let mut tags = db::misc::tags_of_type(&self.pool, "routers")
            .await
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(routers.len());
        for r in routers {
            let gateway = match &r.gw_port_id {
                Some(pid) => match db::port::get(&self.pool, pid).await.map_err(db_err)? {
                    Some(p) => Some((
                        p.network_id,
                        db::port::allocations_of_port(&self.pool, pid)
                            .await
                            .map_err(db_err)?,
                    )),
                    None => None,
                },
                None => None,
            };
            out.push(RouterView {
                gateway,
                tags: tags.remove(&r.id).unwrap_or_default(),
                router: r,
            });
        }
        Ok(out)
    }

    pub async fn floatingip_views(&self, id: Option<&str>) -> Result<Vec<FloatingIpView>, Error> {
        let fips = match id {
            Some(id) => db::floatingip::get(&self.pool, id)
                .await
                .map_err(db_err)?
                .into_iter()
                .collect(),
            None => db::floatingip::list(&self.pool).await.map_err(db_err)?,
        };
        let mut tags = db::misc::tags_of_type(&self.pool, "floatingips")
            .await
            .map_err(db_err)?;
        // The associated ports: for a list, all in one query (not one per
        // floating IP); for one floating IP, only its port.
        let ports: std::collections::HashMap<String, db::port::Port> = match id {
            None => db::floatingip::associated_ports(&self.pool)
                .await
                .map_err(db_err)?,
            Some(_) => match fips.first().and_then(|f| f.port_id.as_deref()) {
                Some(pid) => db::port::get(&self.pool, pid)
                    .await
                    .map_err(db_err)?
                    .into_iter()
                    .collect(),
                None => Vec::new(),
            },
        }
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
        let mut out = Vec::with_capacity(fips.len());
        for fip in fips {
            let port = fip.port_id.as_ref().and_then(|pid| ports.get(pid).cloned());
            out.push(FloatingIpView {
                tags: tags.remove(&fip.id).unwrap_or_default(),
                port,
                fip,
            });
        }
        Ok(out)
    }
}
