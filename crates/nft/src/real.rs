//! The real driver: `nft -j -f -` inside the target namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hostlink::{netns, IpNet, Netns};
use serde_json::Value;

use crate::model::{
    check_group_id, check_ifname, InstalledPort, PortRules, RemoteGroup, RouterNat,
};
use crate::render::{
    self, AntispoofElems, PortChange, PortState, BRIDGE_TABLE, DIGEST_TAG, INET_TABLE, NAT_TABLE,
};
use crate::{Error, Firewall, Result};

/// The real firewall driver, bound to the host namespace.
///
/// It remembers what it installed (each port's mark, digest, chains and
/// anti-spoofing elements; which security-group chains exist and how many
/// ports use them; which session marks are revoked), loaded from the
/// kernel on first use, so an update needs no read-back: the agent is the
/// only writer of these tables. After a refused transaction the memory is
/// dropped and reloaded.
#[derive(Debug)]
pub struct Nft {
    host: Netns,
    nft: String,
    installed: Mutex<Option<Mem>>,
    zones: Mutex<BTreeMap<String, u16>>,
    /// Remote groups' members as this process last wrote them (merged):
    /// later changes go in as element deltas. Unknown after a restart,
    /// so a group's first update replaces its sets whole.
    groups: Mutex<BTreeMap<String, Vec<IpNet>>>,
}

/// The base tables found on the host.
enum Base {
    /// This layout.
    Current,
    /// The previous layout: shared chains, one conntrack mark per session.
    SharedChains,
    /// The per-port layout of an older agent (chains per port).
    PerPort,
    /// None, or only one of the tables.
    Missing,
}

/// What the driver knows is installed.
#[derive(Debug, Default)]
struct Mem {
    ports: BTreeMap<String, PortState>,
    /// Security-group chain pairs by suffix → ports using them.
    chains: BTreeMap<String, usize>,
    /// Revoked session marks (port | rule, see [`render::revoke_command`])
    /// → when their entry expires.
    revoked: BTreeMap<u32, Instant>,
    /// Removed ports' devices → the mark they keep in `gone_mark`.
    gone: BTreeMap<String, u32>,
    /// Security-group chain pairs by suffix → the remote-group sets their
    /// rules match, each with the rule's conntrack-mark half
    /// ([`render::session_half`]).
    remote_rules: BTreeMap<String, Vec<(String, u32)>>,
    /// Remote-group member sets as read from the kernel (for a group this
    /// process has not written yet: its first change must know who left).
    group_members: BTreeMap<String, Vec<IpNet>>,
    /// Remote-group interval sets of an older agent
    /// ([`render::legacy_group_set`]), deleted once no chain uses them.
    legacy_sets: BTreeSet<String>,
}

impl Mem {
    fn installed(name: &str, p: &PortState) -> InstalledPort {
        let mut ct_marks: Vec<u32> = p.rule_marks.iter().map(|r| p.mark | r).collect();
        ct_marks.sort_unstable();
        ct_marks.dedup();
        InstalledPort {
            name: name.to_string(),
            mark: p.mark,
            digest: p.digest.clone(),
            ct_marks,
        }
    }

    /// Chains that are unused once `leaving` (a chain suffix a port stops
    /// using) loses one user.
    fn unused_after(&self, leaving: Option<&str>, keep: Option<&str>) -> Vec<String> {
        self.chains
            .iter()
            .filter(|(id, n)| {
                Some(id.as_str()) != keep
                    && (**n == 0 || (Some(id.as_str()) == leaving && **n == 1))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn unuse(&mut self, id: &str) {
        if let Some(n) = self.chains.get_mut(id) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Nft {
    /// A driver for the tables in `host` using `nft` from `PATH`.
    pub fn new(host: Netns) -> Self {
        Nft {
            host,
            nft: "nft".into(),
            installed: Mutex::new(None),
            zones: Mutex::new(BTreeMap::new()),
            groups: Mutex::new(BTreeMap::new()),
        }
    }

    /// A driver for the tables in `host` running `nft` at `path` (tests
    /// put a failing wrapper there).
    pub fn with_nft(host: Netns, path: impl Into<String>) -> Self {
        Nft {
            nft: path.into(),
            ..Nft::new(host)
        }
    }

    /// The namespace the host tables live in.
    pub fn host(&self) -> &Netns {
        &self.host
    }

    /// Runs `nft` with `args` in `ns`, feeding `input`; returns stdout.
    fn run(&self, ns: &Netns, op: &str, args: &[&str], input: &str) -> Result<String> {
        let shown = ns.name().unwrap_or("the host netns").to_string();
        let out = netns::run_in(ns, || -> std::io::Result<std::process::Output> {
            let mut child = Command::new(&self.nft)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(input.as_bytes())?;
            child.wait_with_output()
        })?
        .map_err(|source| Error::Spawn {
            netns: shown.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(Error::Rejected {
                op: op.to_string(),
                netns: shown,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn apply(&self, ns: &Netns, op: &str, cmds: Vec<Value>) -> Result<()> {
        let doc = render::document(cmds).to_string();
        self.run(ns, op, &["-j", "-f", "-"], &doc).map(drop)
    }

    /// `nft -j list table`, or `None` when the table does not exist.
    fn list_table(&self, ns: &Netns, family: &str, table: &str) -> Result<Option<Vec<Value>>> {
        self.list_json(ns, table, &["-j", "list", "table", family, table])
    }

    /// Runs an `nft -j list …` of `table`: its objects, or `None` when the
    /// table does not exist.
    fn list_json(&self, ns: &Netns, table: &str, args: &[&str]) -> Result<Option<Vec<Value>>> {
        match self.run(ns, "list", args, "") {
            Ok(out) => {
                let v: Value = serde_json::from_str(&out).map_err(|e| Error::Parse {
                    table: table.into(),
                    netns: ns.to_string(),
                    detail: e.to_string(),
                })?;
                Ok(Some(v["nftables"].as_array().cloned().unwrap_or_default()))
            }
            Err(Error::Rejected { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn with_installed<T>(&self, f: impl FnOnce(&mut Mem) -> Result<T>) -> Result<T> {
        let mut g = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(self.read_state()?);
        }
        let r = f(g.as_mut().expect("loaded"));
        if r.is_err() {
            *g = None;
        }
        r
    }

    /// Reads back what is installed: ports from the `port_mark` map (its
    /// comments carry digests), their anti-spoofing elements, their
    /// verdict-map entries and the rule marks of the chains those jump to.
    fn read_state(&self) -> Result<Mem> {
        let (Some(bridge), Some(inet)) = (
            self.list_table(&self.host, "bridge", BRIDGE_TABLE)?,
            self.list_table(&self.host, "inet", INET_TABLE)?,
        ) else {
            return Ok(Mem::default());
        };
        let mut mem = Mem::default();
        let mut elems: BTreeMap<String, AntispoofElems> = BTreeMap::new();
        let mut legacy: BTreeSet<String> = BTreeSet::new();
        for o in &bridge {
            let set = &o["set"];
            let map = &o["map"];
            if map["name"] == "port_mark" {
                for e in map["elem"].as_array().into_iter().flatten() {
                    let (key, mark) = (&e[0], e[1].as_u64());
                    let (name, comment) = match key.as_str() {
                        Some(n) => (Some(n), None),
                        None => (key["elem"]["val"].as_str(), key["elem"]["comment"].as_str()),
                    };
                    if let (Some(n), Some(m)) = (name, mark) {
                        mem.ports.insert(
                            n.to_string(),
                            PortState {
                                mark: m as u32,
                                digest: comment
                                    .and_then(|c| c.strip_prefix(DIGEST_TAG))
                                    .unwrap_or_default()
                                    .to_string(),
                                ..Default::default()
                            },
                        );
                    }
                }
            }
            if map["name"] == "gone_mark" {
                for e in map["elem"].as_array().into_iter().flatten() {
                    let name = e[0].as_str().or_else(|| e[0]["elem"]["val"].as_str());
                    if let (Some(n), Some(m)) = (name, e[1].as_u64()) {
                        mem.gone.insert(n.to_string(), m as u32);
                    }
                }
            }
            if map["name"] == "antispoof" {
                // The per-port layout's verdict map: its ports move over.
                for e in map["elem"].as_array().into_iter().flatten() {
                    if let Some(n) = e[0].as_str() {
                        legacy.insert(n.to_string());
                    }
                }
            }
            let Some(sname) = set["name"].as_str() else {
                continue;
            };
            if !render::AS_SETS.contains(&sname) {
                continue;
            }
            for e in set["elem"].as_array().into_iter().flatten() {
                let c = &e["concat"];
                let (Some(n), v) = (c[0].as_str(), &c[1]) else {
                    continue;
                };
                let el = elems.entry(n.to_string()).or_default();
                match sname {
                    "as_mac" => {
                        if let Some(m) = v.as_str().and_then(|m| m.parse().ok()) {
                            el.macs.insert(m);
                        }
                    }
                    "as_ip4" | "as_ip6" => {
                        if let Some(a) = v.as_str().and_then(|a| a.parse().ok()) {
                            el.hosts.insert(a);
                        }
                    }
                    _ => {
                        let pfx = &v["prefix"];
                        let net = pfx["addr"]
                            .as_str()
                            .zip(pfx["len"].as_u64())
                            .and_then(|(a, l)| format!("{a}/{l}").parse().ok());
                        if let Some(n) = net {
                            el.nets.insert(n);
                        }
                    }
                }
            }
        }
        let mut verdicts: BTreeMap<u32, String> = BTreeMap::new();
        let mut rule_marks: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        let now = Instant::now();
        for o in &inet {
            if let Some(name) = o["set"]["name"].as_str() {
                if name.starts_with("rg4-") || name.starts_with("rg6-") {
                    mem.legacy_sets.insert(name.to_string());
                }
                if name.starts_with("rh4-") || name.starts_with("rh6-") {
                    let members = o["set"]["elem"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str().or_else(|| e["elem"]["val"].as_str()))
                        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
                        .filter_map(|a| IpNet::new(a, if a.is_ipv4() { 32 } else { 128 }).ok())
                        .collect();
                    mem.group_members.insert(name.to_string(), members);
                }
            }
            if let Some(name) = o["chain"]["name"].as_str() {
                if let Some(id) = name
                    .strip_prefix("eg-")
                    .or_else(|| name.strip_prefix("in-"))
                {
                    mem.chains.insert(id.to_string(), 0);
                    rule_marks.entry(id.to_string()).or_default();
                }
            }
            if o["map"]["name"] == "egress" {
                for e in o["map"]["elem"].as_array().into_iter().flatten() {
                    if let (Some(m), Some(t)) = (e[0].as_u64(), e[1]["jump"]["target"].as_str()) {
                        if let Some(id) = t.strip_prefix("eg-") {
                            verdicts.insert(m as u32, id.to_string());
                        }
                    }
                }
            }
            if o["set"]["name"] == "revoked_rules" {
                for e in o["set"]["elem"].as_array().into_iter().flatten() {
                    let val = e["concat"]
                        .as_array()
                        .or_else(|| e["elem"]["val"]["concat"].as_array());
                    let left = e["elem"]["expires"]
                        .as_u64()
                        .unwrap_or(render::REVOKE_TIMEOUT_S);
                    if let Some((Some(port), Some(half))) =
                        val.map(|v| (v[0].as_u64(), v.get(1).and_then(Value::as_u64)))
                    {
                        let m = port as u32 | render::rule_of_half(half as u32);
                        let at = now + Duration::from_secs(left);
                        let e = mem.revoked.entry(m).or_insert(at);
                        *e = (*e).min(at);
                    }
                }
            }
            let r = &o["rule"];
            let Some(chain) = r["chain"].as_str() else {
                continue;
            };
            let Some(id) = chain
                .strip_prefix("eg-")
                .or_else(|| chain.strip_prefix("in-"))
            else {
                continue;
            };
            let mut remote_set = None;
            for e in r["expr"].as_array().into_iter().flatten() {
                if let Some(set) = e["match"]["right"]
                    .as_str()
                    .and_then(|r| r.strip_prefix('@'))
                {
                    if set.starts_with("rh4-") || set.starts_with("rh6-") {
                        remote_set = Some(set.to_string());
                    }
                }
                if e["mangle"]["key"]["ct"]["key"] == "mark" {
                    if let Some(m) = e["mangle"]["value"]["|"][1].as_u64() {
                        rule_marks
                            .entry(id.to_string())
                            .or_default()
                            .insert(render::rule_of_half(m as u32));
                        if let Some(set) = remote_set.take() {
                            mem.remote_rules
                                .entry(id.to_string())
                                .or_default()
                                .push((set, m as u32));
                        }
                    }
                }
            }
        }
        for (name, p) in mem.ports.iter_mut() {
            p.elems = elems.remove(name).unwrap_or_default();
            p.legacy = legacy.contains(name);
            if let Some(id) = verdicts.get(&p.mark) {
                p.chains = id.clone();
                p.rule_marks = rule_marks
                    .get(id)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                *mem.chains.entry(id.clone()).or_default() += 1;
            }
        }
        Ok(mem)
    }

    /// Which base the host has.
    fn base_present(&self) -> Result<Base> {
        let has = |objs: &Option<Vec<Value>>, kind: &str, name: &str| {
            objs.as_ref()
                .is_some_and(|o| o.iter().any(|x| x[kind]["name"] == name))
        };
        let inet = self.list_table_objects(&self.host, "inet", INET_TABLE, "sets")?;
        let bridge = self.list_table_objects(&self.host, "bridge", BRIDGE_TABLE, "sets")?;
        Ok(
            if has(&inet, "set", "revoked_rules") && has(&bridge, "set", "secured") {
                Base::Current
            } else if has(&inet, "set", "revoked_ports") && has(&bridge, "set", "secured") {
                Base::SharedChains
            } else if has(&inet, "set", "revoked")
                && bridge.is_some()
                && self.map_exists(BRIDGE_TABLE, "antispoof")?
            {
                Base::PerPort
            } else {
                Base::Missing
            },
        )
    }

    /// Whether the bridge-family map `table`/`name` exists.
    fn map_exists(&self, table: &str, name: &str) -> Result<bool> {
        match self.run(
            &self.host,
            "list",
            &["list", "map", "bridge", table, name],
            "",
        ) {
            Ok(_) => Ok(true),
            Err(Error::Rejected { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// `nft -j list sets|chains table …`: the objects of a table without
    /// their elements or rules, or `None` when the table does not exist.
    fn list_table_objects(
        &self,
        ns: &Netns,
        family: &str,
        table: &str,
        what: &str,
    ) -> Result<Option<Vec<Value>>> {
        self.list_json(ns, table, &["-j", "list", what, "table", family, table])
    }
}

impl Firewall for Nft {
    fn ensure_base(&self) -> Result<()> {
        match self.base_present()? {
            Base::Current => return Ok(()),
            Base::SharedChains => {
                // The previous agent's tables: its hook chains rewritten
                // and the new sets added in place; its ports move to the
                // new chains with their next change.
                self.run(
                    &self.host,
                    "upgrade the base tables",
                    &["-f", "-"],
                    &render::shared_chains_upgrade_script(),
                )?;
                *self.installed.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Ok(());
            }
            Base::PerPort => {
                // An older agent's tables: completed in place, so its ports
                // stay filtered (and its revoked sessions cut) until each
                // moves over with its next change.
                self.run(
                    &self.host,
                    "upgrade the base tables",
                    &["-f", "-"],
                    &render::upgrade_script(),
                )?;
                *self.installed.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Ok(());
            }
            Base::Missing => {}
        }
        // Both tables in one transaction: they exist together or not at
        // all. A half-present base (someone deleted one table) or an older
        // layout is replaced in the same transaction.
        let script = format!(
            "add table bridge {b}\ndelete table bridge {b}\nadd table inet {i}\ndelete table inet {i}\n{}",
            render::base_script(),
            b = BRIDGE_TABLE,
            i = INET_TABLE
        );
        self.run(&self.host, "create the base tables", &["-f", "-"], &script)?;
        *self.installed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    fn upsert_network(&self, bridge: &str, zone: u16) -> Result<()> {
        check_ifname(bridge)?;
        if zone == 0 {
            return Err(Error::Invalid {
                object: format!("zone of bridge {bridge}"),
                reason: "zone 0 is the shared default".into(),
            });
        }
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        let prev = zones.get(bridge).copied();
        if prev == Some(zone) {
            return Ok(());
        }
        let prev = match prev {
            Some(p) => Some(p),
            None => self.read_zone(bridge)?,
        };
        self.apply(
            &self.host,
            &format!("set the zone of bridge {bridge}"),
            render::network_commands(bridge, zone, prev),
        )?;
        zones.insert(bridge.to_string(), zone);
        Ok(())
    }

    fn remove_network(&self, bridge: &str) -> Result<()> {
        check_ifname(bridge)?;
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        zones.remove(bridge);
        if self.read_zone(bridge)?.is_none() {
            return Ok(());
        }
        self.apply(
            &self.host,
            &format!("remove the zone of bridge {bridge}"),
            vec![serde_json::json!({"delete": {"element": {"family": "inet", "table": INET_TABLE, "name": "zones", "elem": [bridge]}}})],
        )
    }

    fn upsert_remote_group(&self, group: &RemoteGroup) -> Result<()> {
        group.validate()?;
        let want = render::merged(group.members.iter().copied());
        let mut known = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let op = format!("update remote group {}", group.id);
        // Sessions that rules naming the group admitted from (or to) a
        // member that left are cut; a member that came back is admitted
        // again. Who left is what this process last wrote, or else what
        // the kernel had when the driver read it.
        let (halves, before) = self.with_installed(|mem| {
            let halves: Vec<(String, u32)> = mem.remote_rules.values().flatten().cloned().collect();
            let sets = [false, true].map(|v6| render::group_set(&group.id, v6));
            // A group whose sets do not exist yet had no members: nobody
            // left, and nobody's revocation is to be lifted (that would
            // cost an element per member and rule for a group's creation).
            let from_kernel = sets
                .iter()
                .any(|s| mem.group_members.contains_key(s))
                .then(|| {
                    sets.iter()
                        .flat_map(|s| mem.group_members.get(s).cloned().unwrap_or_default())
                        .collect::<Vec<IpNet>>()
                });
            let before = known.get(&group.id).cloned().or(from_kernel);
            for s in &sets {
                mem.group_members.remove(s);
            }
            Ok((halves, before))
        })?;
        let revocations = render::remote_revocation_commands(
            &group.id,
            before.as_deref().unwrap_or(&want),
            &want,
            &halves,
        );
        if let Some(before) = known.get(&group.id) {
            let mut delta = render::group_delta_commands(&group.id, before, &want);
            if delta.is_empty() {
                return Ok(());
            }
            delta.extend(revocations.iter().cloned());
            // A refused delta (the sets changed behind our back) falls
            // back to replacing them whole.
            if self.apply(&self.host, &op, delta).is_ok() {
                known.insert(group.id.clone(), want);
                return Ok(());
            }
        }
        known.remove(&group.id);
        let mut all = render::group_commands(group);
        all.extend(revocations);
        if let Err(e) = self.apply(&self.host, &op, all) {
            // The transaction is atomic: the kernel still has the old
            // members, which memory no longer does. Forgetting it all
            // makes the next attempt read them back, and so revoke the
            // sessions of whoever left.
            *self.installed.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Err(e);
        }
        known.insert(group.id.clone(), want);
        Ok(())
    }

    fn remove_remote_group(&self, id: &str) -> Result<()> {
        check_group_id(id)?;
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let mut c = Vec::new();
        for v6 in [false, true] {
            let s = serde_json::json!({"family": "inet", "table": INET_TABLE, "name": render::group_set(id, v6), "type": if v6 {"ipv6_addr"} else {"ipv4_addr"}});
            c.push(serde_json::json!({"add": {"set": s.clone()}}));
            c.push(serde_json::json!({"delete": {"set": s}}));
        }
        self.apply(&self.host, &format!("remove remote group {id}"), c)
    }

    fn upsert_port(&self, port: &PortRules) -> Result<()> {
        port.validate()?;
        if !port.port_security {
            return self.remove_port(&port.name);
        }
        // Once more after a refusal, from what the kernel has: the memory
        // can be stale (a revoked entry that just expired).
        match self.upsert_port_once(port) {
            Err(Error::Rejected { .. }) => self.upsert_port_once(port),
            r => r,
        }
    }

    fn remove_port(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        self.with_installed(|mem| {
            let Some(p) = mem.ports.get(name) else {
                return Ok(());
            };
            let drop = mem.unused_after(Some(&p.chains), None);
            self.apply(
                &self.host,
                &format!("remove port {name}"),
                render::remove_port_commands(name, p, &drop),
            )?;
            let p = mem.ports.remove(name).expect("present");
            mem.unuse(&p.chains);
            let expires = Instant::now() + Duration::from_secs(render::REVOKE_TIMEOUT_S);
            for r in &p.rule_marks {
                mem.revoked.insert(p.mark | r, expires);
            }
            mem.gone.insert(name.to_string(), p.mark);
            let dropped = !drop.is_empty();
            for id in drop {
                mem.chains.remove(&id);
                mem.remote_rules.remove(&id);
            }
            if dropped {
                self.drop_legacy_sets(mem);
            }
            Ok(())
        })
    }

    fn list_ports(&self) -> Result<Vec<InstalledPort>> {
        let mem = self.read_state()?;
        let ports = mem
            .ports
            .iter()
            .map(|(n, p)| Mem::installed(n, p))
            .collect();
        let orphans = mem.unused_after(None, None);
        *self.installed.lock().unwrap_or_else(|p| p.into_inner()) = Some(mem);
        if !orphans.is_empty() {
            // Chains no port uses (an interrupted older agent's): gone.
            self.with_installed(|mem| {
                self.apply(
                    &self.host,
                    "delete unused security-group chains",
                    render::drop_chains_commands(&orphans),
                )?;
                for id in &orphans {
                    mem.chains.remove(id);
                    mem.remote_rules.remove(id);
                }
                Ok(())
            })?;
        }
        Ok(ports)
    }

    fn upsert_router_nat(&self, nat: &RouterNat) -> Result<()> {
        nat.validate()?;
        if self.router_nat_digest(&nat.netns)? == Some(nat.digest()) {
            return Ok(());
        }
        let ns = Netns::Named(nat.netns.clone());
        self.apply(
            &ns,
            &format!("update the NAT of router {}", nat.netns),
            render::router_commands(nat),
        )
    }

    fn router_nat_digest(&self, netns_name: &str) -> Result<Option<String>> {
        let ns = Netns::named(netns_name)?;
        let Some(objs) = self.list_table(&ns, "ip", NAT_TABLE)? else {
            return Ok(None);
        };
        Ok(objs.iter().find_map(|o| {
            o["rule"]["comment"]
                .as_str()
                .and_then(|c| c.strip_prefix(DIGEST_TAG))
                .map(str::to_string)
        }))
    }

    fn remove_router(&self, netns_name: &str) -> Result<()> {
        let ns = Netns::named(netns_name)?;
        if !netns::exists(netns_name) {
            return Ok(());
        }
        self.apply(
            &ns,
            &format!("remove the NAT of router {netns_name}"),
            render::remove_router_commands(),
        )
    }

    fn delete_all(&self) -> Result<()> {
        self.apply(
            &self.host,
            "delete the host tables",
            render::delete_all_commands(),
        )?;
        *self.installed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Mem::default());
        self.zones.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }
}

impl Nft {
    /// Deletes an older agent's remote-group sets that no chain uses any
    /// more, each in its own transaction (one still in use is refused and
    /// stays for the next time chains go).
    fn drop_legacy_sets(&self, mem: &mut Mem) {
        let sets: Vec<String> = mem.legacy_sets.iter().cloned().collect();
        for name in sets {
            let cmd = serde_json::json!({"delete": {"set": {"family": "inet", "table": INET_TABLE, "name": name}}});
            if self
                .apply(
                    &self.host,
                    &format!("delete the older set {name}"),
                    vec![cmd],
                )
                .is_ok()
            {
                mem.legacy_sets.remove(&name);
            }
        }
    }

    fn upsert_port_once(&self, port: &PortRules) -> Result<()> {
        let digest = port.digest();
        let id = render::sg_chains_id(port);
        self.with_installed(|mem| {
            let prev = mem.ports.get(&port.name);
            if prev.is_some_and(|p| p.digest == digest && p.mark == port.mark) {
                return Ok(());
            }
            let leaving = prev.filter(|p| p.chains != id).map(|p| p.chains.as_str());
            let now = Instant::now();
            let unrevoke: Vec<u32> = port
                .rules
                .iter()
                .map(|r| port.mark | r.ct_mark)
                .filter(|m| mem.revoked.get(m).is_some_and(|t| *t > now))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let change = PortChange {
                port,
                previous: prev,
                create_chains: !mem.chains.contains_key(&id),
                drop_chains: mem.unused_after(leaving, Some(&id)),
                unrevoke,
                gone_mark: mem.gone.get(&port.name).copied(),
            };
            let cmds = render::port_commands(&change);
            self.apply(&self.host, &format!("upsert port {}", port.name), cmds)?;
            let (drop, unrevoke) = (change.drop_chains, change.unrevoke);
            let mut rule_marks: Vec<u32> = port.rules.iter().map(|r| r.ct_mark).collect();
            rule_marks.sort_unstable();
            rule_marks.dedup();
            let expires = now + Duration::from_secs(render::REVOKE_TIMEOUT_S);
            if change.create_chains {
                mem.remote_rules
                    .insert(id.clone(), render::remote_rule_halves(port));
            }
            mem.gone.remove(&port.name);
            if let Some(p) = mem.ports.get(&port.name).cloned() {
                for m in p.rule_marks.iter().filter(|m| !rule_marks.contains(m)) {
                    mem.revoked.insert(port.mark | m, expires);
                }
                mem.unuse(&p.chains);
            }
            for m in unrevoke {
                mem.revoked.remove(&m);
            }
            let dropped = !drop.is_empty();
            for d in drop {
                mem.chains.remove(&d);
                mem.remote_rules.remove(&d);
            }
            if dropped {
                self.drop_legacy_sets(mem);
            }
            *mem.chains.entry(id.clone()).or_default() += 1;
            mem.ports.insert(
                port.name.clone(),
                PortState {
                    mark: port.mark,
                    digest,
                    chains: id,
                    rule_marks,
                    elems: AntispoofElems::of(port),
                    legacy: false,
                },
            );
            Ok(())
        })
    }

    fn read_zone(&self, bridge: &str) -> Result<Option<u16>> {
        let Some(objs) = self.list_table(&self.host, "inet", INET_TABLE)? else {
            return Err(Error::NoBase(self.host.to_string()));
        };
        Ok(objs
            .iter()
            .filter(|o| o["map"]["name"] == "zones")
            .find_map(|o| {
                o["map"]["elem"]
                    .as_array()?
                    .iter()
                    .find(|e| e[0] == bridge)
                    .and_then(|e| e[1].as_u64())
                    .map(|z| z as u16)
            }))
    }

    /// The session marks (port | rule) currently revoked in the
    /// `revoked_rules` set (for tests and diagnostics).
    pub fn revoked(&self) -> Result<Vec<u32>> {
        let mut v: Vec<u32> = self.read_state()?.revoked.into_keys().collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Removed ports' devices and the marks they keep in `gone_mark`,
    /// under which all their rules are revoked (for tests and
    /// diagnostics).
    pub fn gone_ports(&self) -> Result<BTreeMap<String, u32>> {
        Ok(self.read_state()?.gone)
    }

    /// The `revoked_remote4`/`revoked_remote6` elements: a rule's
    /// conntrack-mark half and an address that left the remote group the
    /// rule names (for tests and diagnostics).
    pub fn revoked_remotes(&self) -> Result<Vec<(u32, String)>> {
        let Some(objs) = self.list_table(&self.host, "inet", INET_TABLE)? else {
            return Ok(Vec::new());
        };
        let mut v: Vec<(u32, String)> = objs
            .iter()
            .filter(|o| {
                o["set"]["name"] == "revoked_remote4" || o["set"]["name"] == "revoked_remote6"
            })
            .flat_map(|o| o["set"]["elem"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| {
                let c = e["concat"]
                    .as_array()
                    .or_else(|| e["elem"]["val"]["concat"].as_array())?
                    .clone();
                Some((c.first()?.as_u64()? as u32, c.get(1)?.as_str()?.to_string()))
            })
            .collect();
        v.sort();
        Ok(v)
    }
}
