//! Packet marks and rule marks, allocated once and kept in a small state
//! file so they survive agent restarts.
//!
//! * A **port mark** identifies a port between the bridge and the inet
//!   tables (see `docs/networking.md`): `index << 16`, index 1–65,535. It
//!   lives only on packets in flight, but it must stay stable while a
//!   port exists, or the port's map entries would be rewritten for
//!   nothing on every restart.
//! * A **rule mark** (1–65,535) belongs to a security-group rule on this
//!   host, the same on every port that has the rule: the shared chain of
//!   a security-group set stamps `port mark | rule mark` on the sessions
//!   the rule accepts. When the rule leaves a port, that value goes into
//!   the `revoked` set; when a port goes, its mark goes into
//!   `revoked_ports`; either cuts the sessions (checklist 13) for five
//!   days. A mark given up is therefore **not handed out again** for
//!   [`QUARANTINE_S`] (six days), and the file is written (atomically:
//!   temporary file, then rename) *before* any rule using a new mark is
//!   installed. After a crash between the two, the file knows marks the
//!   kernel never saw — harmless; the opposite order could hand one
//!   rule's mark to another.
//!
//! The file is not fsynced: it must outlive the agent process, which the
//! page cache guarantees, not the machine — a reboot empties the
//! conntrack table, the revocation sets and the rules together, so no
//! session can carry an old mark afterwards. (An fsync per new port cost
//! tens of milliseconds with 2,000 ports on a busy disk.)
//!
//! When the file is lost, marks the kernel still has installed go into
//! quarantine ([`MarkStore::reserve_installed`]); marks that only the
//! revocation sets remember could then come back, which is why the file
//! lives in the agent's state directory and not in `/run`. A file of the
//! first layout (version 1: a conntrack mark per port and rule) is read
//! as empty but for its remote groups: it went with the per-port chains,
//! which the firewall driver replaces.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Port indexes: a port's mark is its index << 16 (the high half of the
/// mark).
const PORT_INDEX_MAX: u32 = 0xffff;
/// Rule marks: the low 16 bits of a session's conntrack mark.
const RULE_MARK_MAX: u32 = nft::RULE_MARK_MASK;
/// How long a retired mark is not handed out again: longer than a
/// revoked mark stays in the firewall's `revoked`/`revoked_ports` sets
/// (five days), so a new port or rule never inherits a revocation.
pub const QUARANTINE_S: u64 = nft::render::REVOKE_TIMEOUT_S + 86_400;
/// The layout of the file this module writes.
const VERSION: u32 = 2;

/// Marks of one port, as [`MarkStore::port`] hands them out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMarks {
    /// The port's packet mark (a multiple of 2^16).
    pub mark: u32,
    /// Security-group rule id → its rule mark (the same on every port of
    /// the host: security-group chains are shared).
    pub rules: BTreeMap<String, u32>,
}

/// Marks of one port, as the file keeps them (small: the file is
/// rewritten, and cloned for `explain`, on every change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    /// The port's packet mark (a multiple of 2^16).
    pub mark: u32,
    /// The rule marks of its rules (see [`MarkState::rules`] for their
    /// ids).
    pub rules: BTreeSet<u32>,
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkState {
    /// Format version (2: port marks are multiples of 2^16, rule marks
    /// are per rule on the host).
    pub version: u32,
    /// The next port index to try (mark = index << 16).
    pub next_port_index: u32,
    /// The next rule mark to try.
    pub next_rule_mark: u32,
    /// Per port, by device name.
    pub ports: BTreeMap<String, PortEntry>,
    /// Rule id → rule mark, for every rule some port has.
    pub rules: BTreeMap<String, u32>,
    /// Port marks no port has any more → when they were given up (Unix
    /// seconds): not handed out again for [`QUARANTINE_S`].
    #[serde(default)]
    pub retired_ports: BTreeMap<u32, u64>,
    /// The same for rule marks.
    #[serde(default)]
    pub retired_rules: BTreeMap<u32, u64>,
    /// Remote groups whose member sets were installed (the firewall
    /// cannot list them, and an unused set must still be removed after a
    /// restart).
    #[serde(default)]
    pub groups: BTreeSet<String>,
}

impl MarkState {
    /// The marks of a port, if it has some, with the ids of its rules.
    pub fn port(&self, device: &str) -> Option<PortMarks> {
        let p = self.ports.get(device)?;
        Some(PortMarks {
            mark: p.mark,
            rules: self
                .rules
                .iter()
                .filter(|(_, m)| p.rules.contains(m))
                .map(|(id, m)| (id.clone(), *m))
                .collect(),
        })
    }
}

impl Default for MarkState {
    fn default() -> Self {
        MarkState {
            version: VERSION,
            next_port_index: 1,
            next_rule_mark: 1,
            ports: BTreeMap::new(),
            rules: BTreeMap::new(),
            retired_ports: BTreeMap::new(),
            retired_rules: BTreeMap::new(),
            groups: BTreeSet::new(),
        }
    }
}

/// Errors of the mark store.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    /// The state file could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The state file does not parse.
    #[error("state file {path} is corrupt")]
    Corrupt {
        /// The file.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Every mark is in use or in quarantine (65,535 ports or 65,535
    /// rules).
    #[error("no {0} marks left")]
    Exhausted(&'static str),
}

/// The marks, in memory and on disk.
#[derive(Debug)]
pub struct MarkStore {
    path: Option<PathBuf>,
    state: MarkState,
    dirty: bool,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first value from `*next` on (wrapping within `1..=max`) that
/// `busy` does not refuse; `*next` moves past it.
fn allocate(next: &mut u32, max: u32, busy: impl Fn(u32) -> bool) -> Option<u32> {
    for _ in 0..max {
        let c = (*next).clamp(1, max);
        *next = if c >= max { 1 } else { c + 1 };
        if !busy(c) {
            return Some(c);
        }
    }
    None
}

/// Reads a file of either layout. A version-1 file (a mark per port
/// counted from 1, a conntrack mark per port and rule) belongs with the
/// older firewall layout, which the firewall driver replaces whole: its
/// marks are dropped and new ones allocated (its remote groups are kept,
/// so their sets are still cleaned up).
fn parse(bytes: &[u8]) -> Result<(MarkState, bool), serde_json::Error> {
    let v: serde_json::Value = serde_json::from_slice(bytes)?;
    if v["version"].as_u64() == Some(u64::from(VERSION)) {
        return Ok((serde_json::from_value(v)?, false));
    }
    let groups: BTreeSet<String> = serde_json::from_value(v["groups"].clone()).unwrap_or_default();
    tracing::warn!(
        version = %v["version"],
        "marks file of an older layout: new marks are allocated (the firewall tables are rebuilt)"
    );
    Ok((
        MarkState {
            groups,
            ..Default::default()
        },
        true,
    ))
}

impl MarkStore {
    /// Opens (or starts) the store at `dir/marks.json`.
    pub fn open(dir: &Path) -> Result<Self, MarkError> {
        fs::create_dir_all(dir).map_err(|source| MarkError::Io {
            op: "create state directory",
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("marks.json");
        let (state, dirty) = match fs::read(&path) {
            Ok(b) => parse(&b).map_err(|source| MarkError::Corrupt {
                path: path.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (MarkState::default(), false),
            Err(source) => {
                return Err(MarkError::Io {
                    op: "read",
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Ok(MarkStore {
            path: Some(path),
            state,
            dirty,
        })
    }

    /// A store that is never written (unit tests).
    pub fn in_memory() -> Self {
        MarkStore {
            path: None,
            state: MarkState::default(),
            dirty: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> &MarkState {
        &self.state
    }

    /// Puts in quarantine every mark in `installed` (port mark, session
    /// marks, as read back from the kernel) that the file does not know:
    /// after a lost file, new ports and rules never get a mark the
    /// kernel still uses.
    pub fn reserve_installed<'a>(&mut self, installed: impl IntoIterator<Item = (u32, &'a [u32])>) {
        let now = now_s();
        let st = &mut self.state;
        let ports: BTreeSet<u32> = st.ports.values().map(|p| p.mark).collect();
        let rules: BTreeSet<u32> = st.rules.values().copied().collect();
        for (mark, ct) in installed {
            if !ports.contains(&mark) && st.retired_ports.insert(mark, now).is_none() {
                self.dirty = true;
            }
            for c in ct {
                let r = c & nft::RULE_MARK_MASK;
                if !rules.contains(&r) && st.retired_rules.insert(r, now).is_none() {
                    self.dirty = true;
                }
            }
        }
    }

    fn expire(&mut self, now: u64) {
        let live = |t: &mut u64| now.saturating_sub(*t) < QUARANTINE_S;
        let (a, b) = (
            self.state.retired_ports.len(),
            self.state.retired_rules.len(),
        );
        self.state.retired_ports.retain(|_, t| live(t));
        self.state.retired_rules.retain(|_, t| live(t));
        if (a, b)
            != (
                self.state.retired_ports.len(),
                self.state.retired_rules.len(),
            )
        {
            self.dirty = true;
        }
    }

    /// Retires rule marks no port has any more (and forgets their ids).
    fn retire_rules(&mut self, marks: impl IntoIterator<Item = u32>, now: u64) {
        for m in marks {
            if self.state.ports.values().any(|p| p.rules.contains(&m)) {
                continue;
            }
            let before = self.state.rules.len();
            self.state.rules.retain(|_, r| *r != m);
            if self.state.rules.len() != before {
                self.state.retired_rules.insert(m, now);
                self.dirty = true;
            }
        }
    }

    /// The marks of a port, allocating what is missing: its mark and the
    /// rule mark of each rule id in `rule_ids` (one per rule on the host,
    /// shared by every port that has the rule). Rules no longer listed
    /// leave the port; a rule no port has any more gives up its mark.
    pub fn port(&mut self, device: &str, rule_ids: &[&str]) -> Result<PortMarks, MarkError> {
        let now = now_s();
        if !self.state.ports.contains_key(device) {
            self.expire(now);
            let st = &mut self.state;
            let used: BTreeSet<u32> = st.ports.values().map(|p| p.mark).collect();
            let retired = &st.retired_ports;
            let index = allocate(&mut st.next_port_index, PORT_INDEX_MAX, |i| {
                used.contains(&(i << 16)) || retired.contains_key(&(i << 16))
            })
            .ok_or(MarkError::Exhausted("port"))?;
            st.ports.insert(
                device.to_string(),
                PortEntry {
                    mark: index << 16,
                    rules: BTreeSet::new(),
                },
            );
            self.dirty = true;
        }
        let mut rules = BTreeMap::new();
        for id in rule_ids {
            let mark = match self.state.rules.get(*id) {
                Some(m) => *m,
                None => {
                    self.expire(now);
                    let st = &mut self.state;
                    let used: BTreeSet<u32> = st.rules.values().copied().collect();
                    let retired = &st.retired_rules;
                    let m = allocate(&mut st.next_rule_mark, RULE_MARK_MAX, |m| {
                        used.contains(&m) || retired.contains_key(&m)
                    })
                    .ok_or(MarkError::Exhausted("rule"))?;
                    st.rules.insert(id.to_string(), m);
                    self.dirty = true;
                    m
                }
            };
            rules.insert(id.to_string(), mark);
        }
        let want: BTreeSet<u32> = rules.values().copied().collect();
        let entry = self.state.ports.get_mut(device).expect("just made");
        let mark = entry.mark;
        if entry.rules != want {
            let gone: Vec<u32> = entry.rules.difference(&want).copied().collect();
            entry.rules = want;
            self.dirty = true;
            self.retire_rules(gone, now);
        }
        Ok(PortMarks { mark, rules })
    }

    /// The marks of a port, if it has some, with the ids of its rules.
    pub fn get(&self, device: &str) -> Option<PortMarks> {
        self.state.port(device)
    }

    /// Forgets a port: its mark (whose sessions the firewall revoked) and
    /// rule marks no other port uses go into quarantine.
    pub fn forget(&mut self, device: &str) {
        if let Some(p) = self.state.ports.remove(device) {
            let now = now_s();
            self.state.retired_ports.insert(p.mark, now);
            self.dirty = true;
            self.retire_rules(p.rules, now);
        }
    }

    /// Records that a remote group's sets exist (or no longer do).
    pub fn note_group(&mut self, id: &str, present: bool) {
        let changed = if present {
            self.state.groups.insert(id.to_string())
        } else {
            self.state.groups.remove(id)
        };
        self.dirty |= changed;
    }

    /// Device names that have marks.
    pub fn devices(&self) -> Vec<String> {
        self.state.ports.keys().cloned().collect()
    }

    /// Writes the file if anything changed since the last save.
    pub fn save(&mut self) -> Result<(), MarkError> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(path) = &self.path {
            write_atomic(path, &serde_json::to_vec(&self.state).expect("plain data"))?;
        }
        self.dirty = false;
        Ok(())
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), MarkError> {
    let io = |op: &'static str| {
        let path = path.display().to_string();
        move |source| MarkError::Io { op, path, source }
    };
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp).map_err(io("create"))?;
    f.write_all(data).map_err(io("write"))?;
    drop(f);
    // Atomic for readers and for a crash of the process (see the module
    // documentation for why not for a crash of the machine).
    fs::rename(&tmp, path).map_err(io("rename"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_persist_are_shared_per_rule_and_never_reused_too_soon() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = MarkStore::open(dir.path()).unwrap();
        let a = s.port("tapa", &["r1", "r2"]).unwrap();
        assert_eq!(a.mark, 1 << 16);
        assert_eq!(a.rules["r1"], 1);
        assert_eq!(a.rules["r2"], 2);
        // Same request: same marks.
        assert_eq!(s.port("tapa", &["r1", "r2"]).unwrap(), a);
        // Another port with the same rule: the same rule mark.
        let b = s.port("tapb", &["r2"]).unwrap();
        assert_eq!((b.mark, b.rules["r2"]), (2 << 16, 2));
        // r1 leaves the host and comes back: a fresh mark. r2 leaves one
        // port but stays on the host: it keeps its mark.
        s.port("tapa", &[]).unwrap();
        let again = s.port("tapa", &["r1", "r2"]).unwrap();
        assert_eq!((again.rules["r1"], again.rules["r2"]), (3, 2));
        s.save().unwrap();
        drop(s);
        let mut s = MarkStore::open(dir.path()).unwrap();
        assert_eq!(s.get("tapa").unwrap(), again);
        s.forget("tapa");
        s.forget("tapb");
        let c = s.port("tapc", &["r9"]).unwrap();
        assert_eq!((c.mark, c.rules["r9"]), (3 << 16, 4));
        // Marks the kernel has and the file does not know are not handed out.
        s.reserve_installed([(4 << 16, &[(4 << 16) | 5][..])]);
        let d = s.port("tapd", &["x"]).unwrap();
        assert_eq!((d.mark, d.rules["x"]), (5 << 16, 6));
        // Wrapping around skips marks in use and in quarantine, and takes
        // those whose quarantine is over.
        s.state.next_port_index = PORT_INDEX_MAX;
        assert_eq!(s.port("tape", &[]).unwrap().mark, PORT_INDEX_MAX << 16);
        assert_eq!(
            s.port("tapf", &[]).unwrap().mark,
            6 << 16,
            "1-5 in use or retired"
        );
        for t in s.state.retired_ports.values_mut() {
            *t -= QUARANTINE_S;
        }
        s.state.next_port_index = 1;
        assert_eq!(s.port("tapg", &[]).unwrap().mark, 1 << 16);
    }

    #[test]
    fn a_version_1_file_keeps_only_its_groups() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("marks.json"),
            r#"{"version":1,"next_port_mark":3,"next_ct_mark":9,"ports":{"tapa":{"mark":1,"rules":{"r":1}}},"groups":["g1"]}"#,
        )
        .unwrap();
        let mut s = MarkStore::open(dir.path()).unwrap();
        assert!(s.state().ports.is_empty());
        assert!(s.state().groups.contains("g1"));
        assert_eq!(s.port("tapa", &["r"]).unwrap().mark, 1 << 16);
        s.save().unwrap();
        let s = MarkStore::open(dir.path()).unwrap();
        assert_eq!(s.state().version, VERSION);
    }
}
