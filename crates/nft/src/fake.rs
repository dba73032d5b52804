//! The in-memory firewall: the same model, validation and idempotency as
//! [`crate::Nft`], no kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::model::{
    check_group_id, check_ifname, InstalledPort, PortRules, RemoteGroup, RouterNat,
};
use crate::{Error, Firewall, Remote, Result};

/// In-memory firewall. Besides the trait it exposes what the real rules
/// would do with a session ([`Fake::revoked`]) and how many transactions
/// were "applied" ([`Fake::transactions`]), so tests can check that
/// unchanged state costs nothing.
#[derive(Debug, Default)]
pub struct Fake {
    s: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    base: bool,
    ports: BTreeMap<String, (PortRules, InstalledPort)>,
    zones: BTreeMap<String, u16>,
    groups: BTreeMap<String, RemoteGroup>,
    routers: BTreeMap<String, RouterNat>,
    /// Security-group chain pairs by suffix → ports using them.
    chains: BTreeMap<String, usize>,
    revoked: BTreeSet<u32>,
    revoked_ports: BTreeSet<u32>,
    transactions: usize,
}

impl State {
    fn leave_chains(&mut self, id: &str) {
        if let Some(n) = self.chains.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.chains.remove(id);
            }
        }
    }
}

impl Fake {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        f(&mut self.s.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Port marks whose sessions were all revoked (removed ports).
    pub fn revoked_ports(&self) -> Vec<u32> {
        self.s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .revoked_ports
            .iter()
            .copied()
            .collect()
    }

    /// Suffixes of the security-group chain pairs installed (one per
    /// distinct security-group set of the ports).
    pub fn chains(&self) -> Vec<String> {
        self.s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .chains
            .keys()
            .cloned()
            .collect()
    }

    /// Session marks (port | rule) revoked so far.
    pub fn revoked(&self) -> Vec<u32> {
        self.s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .revoked
            .iter()
            .copied()
            .collect()
    }

    /// Number of transactions applied so far.
    pub fn transactions(&self) -> usize {
        self.s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .transactions
    }

    /// The zone of a bridge.
    pub fn zone(&self, bridge: &str) -> Option<u16> {
        self.s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .zones
            .get(bridge)
            .copied()
    }

    /// The NAT installed for a router.
    pub fn router(&self, netns: &str) -> Option<RouterNat> {
        self.s
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .routers
            .get(netns)
            .cloned()
    }
}

fn need_base(s: &State) -> Result<()> {
    if s.base {
        Ok(())
    } else {
        Err(Error::NoBase("the fake host".into()))
    }
}

impl Firewall for Fake {
    fn ensure_base(&self) -> Result<()> {
        self.with(|s| {
            if !s.base {
                s.base = true;
                s.transactions += 1;
            }
            Ok(())
        })
    }

    fn upsert_network(&self, bridge: &str, zone: u16) -> Result<()> {
        check_ifname(bridge)?;
        if zone == 0 {
            return Err(Error::Invalid {
                object: format!("zone of bridge {bridge}"),
                reason: "zone 0 is the shared default".into(),
            });
        }
        self.with(|s| {
            need_base(s)?;
            if s.zones.insert(bridge.to_string(), zone) != Some(zone) {
                s.transactions += 1;
            }
            Ok(())
        })
    }

    fn remove_network(&self, bridge: &str) -> Result<()> {
        check_ifname(bridge)?;
        self.with(|s| {
            if s.zones.remove(bridge).is_some() {
                s.transactions += 1;
            }
            Ok(())
        })
    }

    fn upsert_remote_group(&self, group: &RemoteGroup) -> Result<()> {
        group.validate()?;
        self.with(|s| {
            need_base(s)?;
            s.groups.insert(group.id.clone(), group.clone());
            s.transactions += 1;
            Ok(())
        })
    }

    fn remove_remote_group(&self, id: &str) -> Result<()> {
        check_group_id(id)?;
        self.with(|s| {
            let used = s.ports.values().any(|(p, _)| {
                p.rules
                    .iter()
                    .any(|r| r.remote == Remote::Group(id.to_string()))
            });
            if used {
                return Err(Error::Rejected {
                    op: format!("remove remote group {id}"),
                    netns: "the fake host".into(),
                    stderr: "Error: Could not process rule: Device or resource busy".into(),
                });
            }
            s.groups.remove(id);
            s.transactions += 1;
            Ok(())
        })
    }

    fn upsert_port(&self, port: &PortRules) -> Result<()> {
        port.validate()?;
        if !port.port_security {
            return self.remove_port(&port.name);
        }
        let digest = port.digest();
        let id = crate::render::sg_chains_id(port);
        let mut rule_marks: Vec<u32> = port.rules.iter().map(|r| r.ct_mark).collect();
        rule_marks.sort_unstable();
        rule_marks.dedup();
        self.with(|s| {
            need_base(s)?;
            if let Some((old, inst)) = s.ports.get(&port.name).cloned() {
                if inst.digest == digest && inst.mark == port.mark {
                    return Ok(());
                }
                // As the real driver: the rules that left, under the
                // mark the port's packets now carry.
                let gone = old
                    .rules
                    .iter()
                    .filter(|r| !rule_marks.contains(&r.ct_mark))
                    .map(|r| port.mark | r.ct_mark);
                s.revoked.extend(gone.collect::<Vec<_>>());
                s.leave_chains(&crate::render::sg_chains_id(&old));
            }
            for m in &rule_marks {
                s.revoked.remove(&(port.mark | m));
            }
            *s.chains.entry(id).or_default() += 1;
            let inst = InstalledPort {
                name: port.name.clone(),
                mark: port.mark,
                digest,
                ct_marks: rule_marks.iter().map(|m| port.mark | m).collect(),
            };
            s.ports.insert(port.name.clone(), (port.clone(), inst));
            s.transactions += 1;
            Ok(())
        })
    }

    fn remove_port(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        self.with(|s| {
            if let Some((p, inst)) = s.ports.remove(name) {
                s.revoked_ports.insert(inst.mark);
                s.leave_chains(&crate::render::sg_chains_id(&p));
                s.transactions += 1;
            }
            Ok(())
        })
    }

    fn list_ports(&self) -> Result<Vec<InstalledPort>> {
        self.with(|s| Ok(s.ports.values().map(|(_, i)| i.clone()).collect()))
    }

    fn upsert_router_nat(&self, nat: &RouterNat) -> Result<()> {
        nat.validate()?;
        self.with(|s| {
            if s.routers.get(&nat.netns) != Some(nat) {
                s.routers.insert(nat.netns.clone(), nat.clone());
                s.transactions += 1;
            }
            Ok(())
        })
    }

    fn router_nat_digest(&self, netns: &str) -> Result<Option<String>> {
        self.with(|s| Ok(s.routers.get(netns).map(RouterNat::digest)))
    }

    fn remove_router(&self, netns: &str) -> Result<()> {
        self.with(|s| {
            if s.routers.remove(netns).is_some() {
                s.transactions += 1;
            }
            Ok(())
        })
    }

    fn delete_all(&self) -> Result<()> {
        self.with(|s| {
            s.base = false;
            s.ports.clear();
            s.chains.clear();
            s.zones.clear();
            s.groups.clear();
            s.transactions += 1;
            Ok(())
        })
    }
}
