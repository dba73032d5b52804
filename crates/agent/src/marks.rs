//! Packet marks and conntrack marks, allocated once and kept in a small
//! state file so they survive agent restarts.
//!
//! * A **port mark** identifies a port between the bridge and the inet
//!   tables (see `docs/networking.md`). It lives only on packets in
//!   flight, but it must stay stable while a port exists, or the port's
//!   verdict-map entries would be rewritten for nothing on every restart.
//! * A **ct mark** is stamped on every session a security-group rule
//!   accepts; when the rule leaves the port, its mark goes into the
//!   `revoked` set for five days and every session carrying it is cut
//!   (checklist 13). A mark must therefore **never be reused** while a
//!   session may still carry it: both counters only grow, and the file is
//!   written (atomically: temporary file, then rename) *before* any rule
//!   using a new mark is installed. After a crash between the two, the
//!   file knows marks the kernel never saw — harmless; the opposite order
//!   could hand one rule's mark to another.
//!
//! The file is not fsynced: it must outlive the agent process, which the
//! page cache guarantees, not the machine — a reboot empties the
//! conntrack table, the `revoked` set and the rules together, so no
//! session can carry an old mark afterwards. (An fsync per new port cost
//! tens of milliseconds with 2,000 ports on a busy disk.)
//!
//! When the file is lost, the counters restart above every mark the
//! kernel still has installed ([`MarkStore::raise_above`]); marks that
//! only the `revoked` set remembers could then come back, which is why the
//! file lives in the agent's state directory and not in `/run`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The largest port mark nft's model accepts (exclusive).
const PORT_MARK_LIMIT: u32 = 1 << 31;

/// Marks of one port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMarks {
    /// The port's packet mark.
    pub mark: u32,
    /// Security-group rule id → the ct mark of its sessions on this port.
    pub rules: BTreeMap<String, u32>,
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkState {
    /// Format version.
    pub version: u32,
    /// The next port mark to hand out.
    pub next_port_mark: u32,
    /// The next ct mark to hand out.
    pub next_ct_mark: u32,
    /// Per port, by device name.
    pub ports: BTreeMap<String, PortMarks>,
    /// Remote groups whose member sets were installed (the firewall
    /// cannot list them, and an unused set must still be removed after a
    /// restart).
    #[serde(default)]
    pub groups: std::collections::BTreeSet<String>,
}

impl Default for MarkState {
    fn default() -> Self {
        MarkState {
            version: 1,
            next_port_mark: 1,
            next_ct_mark: 1,
            ports: BTreeMap::new(),
            groups: Default::default(),
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
    /// A counter ran out (2^31 port marks or 2^32 ct marks handed out).
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

impl MarkStore {
    /// Opens (or starts) the store at `dir/marks.json`.
    pub fn open(dir: &Path) -> Result<Self, MarkError> {
        fs::create_dir_all(dir).map_err(|source| MarkError::Io {
            op: "create state directory",
            path: dir.display().to_string(),
            source,
        })?;
        let path = dir.join("marks.json");
        let state = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| MarkError::Corrupt {
                path: path.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MarkState::default(),
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
            dirty: false,
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

    /// Makes both counters greater than every mark in `installed`
    /// (port mark, ct marks), as read back from the kernel.
    pub fn raise_above<'a>(&mut self, installed: impl IntoIterator<Item = (u32, &'a [u32])>) {
        for (mark, ct) in installed {
            if mark >= self.state.next_port_mark && mark < PORT_MARK_LIMIT - 1 {
                self.state.next_port_mark = mark + 1;
                self.dirty = true;
            }
            for &c in ct {
                if c >= self.state.next_ct_mark && c < u32::MAX {
                    self.state.next_ct_mark = c + 1;
                    self.dirty = true;
                }
            }
        }
    }

    /// The marks of a port, allocating what is missing: its mark and one
    /// ct mark per rule id in `rule_ids`. Rules no longer listed lose
    /// their entry (their marks are never handed out again).
    pub fn port(&mut self, device: &str, rule_ids: &[&str]) -> Result<PortMarks, MarkError> {
        let st = &mut self.state;
        let entry = match st.ports.get_mut(device) {
            Some(e) => e,
            None => {
                if st.next_port_mark >= PORT_MARK_LIMIT {
                    return Err(MarkError::Exhausted("port"));
                }
                let mark = st.next_port_mark;
                st.next_port_mark += 1;
                self.dirty = true;
                st.ports.entry(device.to_string()).or_insert(PortMarks {
                    mark,
                    rules: BTreeMap::new(),
                })
            }
        };
        let before = entry.rules.len();
        entry.rules.retain(|id, _| rule_ids.contains(&id.as_str()));
        if entry.rules.len() != before {
            self.dirty = true;
        }
        for id in rule_ids {
            if !entry.rules.contains_key(*id) {
                if st.next_ct_mark == u32::MAX {
                    return Err(MarkError::Exhausted("conntrack"));
                }
                entry.rules.insert(id.to_string(), st.next_ct_mark);
                st.next_ct_mark += 1;
                self.dirty = true;
            }
        }
        Ok(entry.clone())
    }

    /// The marks of a port, if it has some.
    pub fn get(&self, device: &str) -> Option<&PortMarks> {
        self.state.ports.get(device)
    }

    /// Forgets a port (its marks are not reused).
    pub fn forget(&mut self, device: &str) {
        if self.state.ports.remove(device).is_some() {
            self.dirty = true;
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
    fn marks_persist_and_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = MarkStore::open(dir.path()).unwrap();
        let a = s.port("tapa", &["r1", "r2"]).unwrap();
        assert_eq!(a.mark, 1);
        assert_eq!(a.rules["r1"], 1);
        assert_eq!(a.rules["r2"], 2);
        // Same request: same marks.
        assert_eq!(s.port("tapa", &["r1", "r2"]).unwrap(), a);
        // A rule leaves and comes back: it gets a fresh mark.
        s.port("tapa", &["r1"]).unwrap();
        let again = s.port("tapa", &["r1", "r2"]).unwrap();
        assert_eq!(again.rules["r2"], 3);
        s.save().unwrap();
        drop(s);
        let mut s = MarkStore::open(dir.path()).unwrap();
        assert_eq!(s.get("tapa").unwrap(), &again);
        s.forget("tapa");
        let b = s.port("tapb", &["r9"]).unwrap();
        assert_eq!((b.mark, b.rules["r9"]), (2, 4));
        s.raise_above([(10, &[100u32][..])]);
        let c = s.port("tapc", &["x"]).unwrap();
        assert_eq!((c.mark, c.rules["x"]), (11, 101));
    }
}
