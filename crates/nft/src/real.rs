//! The real driver: `nft -j -f -` inside the target namespace.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use hostlink::{netns, Netns};
use serde_json::Value;

use crate::model::{
    check_group_id, check_ifname, InstalledPort, PortRules, RemoteGroup, RouterNat,
};
use crate::render::{self, BRIDGE_TABLE, DIGEST_TAG, INET_TABLE, NAT_TABLE};
use crate::{Error, Firewall, Result};

/// The real firewall driver, bound to the host namespace.
///
/// It remembers what it installed (marks, rule marks, digests), loaded
/// from the kernel on first use, so an update needs no read-back: the
/// agent is the only writer of these tables. After a refused transaction
/// the memory is dropped and reloaded.
#[derive(Debug)]
pub struct Nft {
    host: Netns,
    nft: String,
    installed: Mutex<Option<BTreeMap<String, InstalledPort>>>,
    zones: Mutex<BTreeMap<String, u16>>,
}

impl Nft {
    /// A driver for the tables in `host` using `nft` from `PATH`.
    pub fn new(host: Netns) -> Self {
        Nft {
            host,
            nft: "nft".into(),
            installed: Mutex::new(None),
            zones: Mutex::new(BTreeMap::new()),
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
        match self.run(ns, "list", &["-j", "list", "table", family, table], "") {
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

    fn with_installed<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, InstalledPort>) -> Result<T>,
    ) -> Result<T> {
        let mut g = self.installed.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(
                self.read_ports()?
                    .into_iter()
                    .map(|p| (p.name.clone(), p))
                    .collect(),
            );
        }
        let r = f(g.as_mut().expect("loaded"));
        if r.is_err() {
            *g = None;
        }
        r
    }

    fn read_ports(&self) -> Result<Vec<InstalledPort>> {
        let (Some(bridge), Some(inet)) = (
            self.list_table(&self.host, "bridge", BRIDGE_TABLE)?,
            self.list_table(&self.host, "inet", INET_TABLE)?,
        ) else {
            return Ok(Vec::new());
        };
        let mut ports: BTreeMap<String, InstalledPort> = BTreeMap::new();
        for o in &bridge {
            if o["map"]["name"] == "port_mark" {
                for e in o["map"]["elem"].as_array().into_iter().flatten() {
                    if let (Some(n), Some(m)) = (e[0].as_str(), e[1].as_u64()) {
                        ports.insert(
                            n.to_string(),
                            InstalledPort {
                                name: n.into(),
                                mark: m as u32,
                                digest: String::new(),
                                ct_marks: Vec::new(),
                            },
                        );
                    }
                }
            }
        }
        for o in &inet {
            let r = &o["rule"];
            let Some(chain) = r["chain"].as_str() else {
                continue;
            };
            let Some(port) = chain
                .strip_prefix("eg-")
                .or_else(|| chain.strip_prefix("in-"))
            else {
                continue;
            };
            let Some(p) = ports.get_mut(port) else {
                continue;
            };
            if let Some(d) = r["comment"]
                .as_str()
                .and_then(|c| c.strip_prefix(DIGEST_TAG))
            {
                p.digest = d.to_string();
            }
            for e in r["expr"].as_array().into_iter().flatten() {
                if e["mangle"]["key"]["ct"]["key"] == "mark" {
                    if let Some(m) = e["mangle"]["value"].as_u64() {
                        p.ct_marks.push(m as u32);
                    }
                }
            }
        }
        for p in ports.values_mut() {
            p.ct_marks.sort_unstable();
            p.ct_marks.dedup();
        }
        Ok(ports.into_values().collect())
    }

    fn base_present(&self) -> Result<bool> {
        Ok(self.list_table(&self.host, "inet", INET_TABLE)?.is_some()
            && self
                .list_table(&self.host, "bridge", BRIDGE_TABLE)?
                .is_some())
    }
}

impl Firewall for Nft {
    fn ensure_base(&self) -> Result<()> {
        if self.base_present()? {
            return Ok(());
        }
        // Both tables in one transaction: they exist together or not at
        // all. A half-present base (someone deleted one table) is fixed by
        // deleting the other first.
        self.apply(
            &self.host,
            "clear a partial base",
            render::delete_all_commands(),
        )?;
        self.run(
            &self.host,
            "create the base tables",
            &["-f", "-"],
            &render::base_script(),
        )?;
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
        check_group_id(&group.id)?;
        self.apply(
            &self.host,
            &format!("update remote group {}", group.id),
            render::group_commands(group),
        )
    }

    fn remove_remote_group(&self, id: &str) -> Result<()> {
        check_group_id(id)?;
        let mut c = Vec::new();
        for v6 in [false, true] {
            let s = serde_json::json!({"family": "inet", "table": INET_TABLE, "name": render::group_set(id, v6), "type": if v6 {"ipv6_addr"} else {"ipv4_addr"}, "flags": ["interval"]});
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
        let digest = port.digest();
        self.with_installed(|inst| {
            let prev = inst.get(&port.name);
            if prev.is_some_and(|p| p.digest == digest && p.mark == port.mark) {
                return Ok(());
            }
            let previous = prev.map(|p| (p.mark, p.ct_marks.as_slice()));
            let cmds = render::port_commands(port, previous);
            self.apply(&self.host, &format!("upsert port {}", port.name), cmds)?;
            let mut ct_marks: Vec<u32> = port.rules.iter().map(|r| r.ct_mark).collect();
            ct_marks.sort_unstable();
            ct_marks.dedup();
            inst.insert(
                port.name.clone(),
                InstalledPort {
                    name: port.name.clone(),
                    mark: port.mark,
                    digest,
                    ct_marks,
                },
            );
            Ok(())
        })
    }

    fn remove_port(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        self.with_installed(|inst| {
            let Some(p) = inst.get(name) else {
                return Ok(());
            };
            self.apply(
                &self.host,
                &format!("remove port {name}"),
                render::remove_port_commands(name, p.mark, &p.ct_marks),
            )?;
            inst.remove(name);
            Ok(())
        })
    }

    fn list_ports(&self) -> Result<Vec<InstalledPort>> {
        let ports = self.read_ports()?;
        *self.installed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(ports.iter().map(|p| (p.name.clone(), p.clone())).collect());
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
        *self.installed.lock().unwrap_or_else(|p| p.into_inner()) = Some(BTreeMap::new());
        self.zones.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(())
    }
}

impl Nft {
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

    /// The conntrack marks currently in the `revoked` set (for tests and
    /// diagnostics).
    pub fn revoked(&self) -> Result<Vec<u32>> {
        let Some(objs) = self.list_table(&self.host, "inet", INET_TABLE)? else {
            return Ok(Vec::new());
        };
        let mut v: Vec<u32> = objs
            .iter()
            .filter(|o| o["set"]["name"] == "revoked")
            .flat_map(|o| o["set"]["elem"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| {
                e.as_u64()
                    .or_else(|| e["elem"]["val"].as_u64())
                    .map(|m| m as u32)
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }
}
