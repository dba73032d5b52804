//! Packet marks and rule marks, allocated once and kept in the agent's
//! state directory so they survive agent restarts.
//!
//! * A **port mark** identifies a port between the bridge and the inet
//!   tables (see `docs/networking.md`): `index << 16`, index 1–65,535. It
//!   lives only on packets in flight, but it must stay stable while a
//!   port exists, or the port's map entries would be rewritten for
//!   nothing on every restart.
//! * A **rule mark** (1–65,535) belongs to a security-group rule on this
//!   host, the same on every port that has the rule: the shared chain of
//!   a security-group set stamps the rule mark into the sessions the rule
//!   accepts (an egress rule into the conntrack mark's high half, an
//!   ingress rule into its low half), and the packet mark tells which port
//!   a half belongs to. When the rule leaves a port, `port mark . rule
//!   mark` goes into the `revoked_rules` set; when a port goes, all its
//!   rules do and its device keeps its mark (`gone_mark`); either cuts the
//!   sessions (checklist 13) for five days. A mark given up is therefore **not handed out again** for
//!   [`QUARANTINE_S`] (six days), and a change is saved *before* any rule
//!   using a new mark is installed. After a crash between the two, the
//!   files know marks the kernel never saw — harmless; the opposite order
//!   could hand one rule's mark to another.
//!
//! # On disk
//!
//! Two files, so that saving a change costs what the change is, not what
//! the host has (rewriting the whole state cost up to 3 ms per port
//! change at 2,000 ports in the network benchmark):
//!
//! * `marks.json`, the **snapshot**: the whole [`MarkState`] (version 2),
//!   written atomically (temporary file, then rename).
//! * `marks.journal`: the changes since the snapshot, one JSON object per
//!   line, each *setting* one key to a value or removing it — a port's
//!   entry (`{"port": device, "entry": {…} | null}`), a rule's mark
//!   (`{"rule": id, "mark": n | null}`), a retired mark's date
//!   (`{"retired_port": mark, "at": secs | null}`, and `retired_rule`), a
//!   remote group (`{"group": id, "present": bool}`) and the allocation
//!   cursors (`{"next_port_index": n, "next_rule_mark": m}`).
//!   [`MarkStore::save`] appends the changes since the last save in one
//!   write; opening reads the snapshot and replays the journal over it.
//!
//! Once the journal would hold more lines than `max(4096, 2 × ports)`,
//! `save` writes a snapshot and then empties the journal, having first
//! appended the pending changes to it. A crash between the two steps
//! leaves a journal that ends where the new snapshot is: replaying it
//! over that snapshot leaves each key it names at its last value — the
//! snapshot's — and the others alone, so it changes nothing. (Emptying
//! the journal first would lose its changes in that window.)
//!
//! A line is complete with its newline. A last line that is cut short or
//! does not parse (the agent died in the middle of a save) is ignored
//! with a warning, and cut off before the next append; a bad line before
//! the last is an error. A save's lines put a mark in quarantine before
//! they remove the port or rule that had it, so any prefix of them is a
//! state in which no mark can be handed out too soon.
//!
//! Neither file is fsynced: they must outlive the agent process, which
//! the page cache guarantees, not the machine — a reboot empties the
//! conntrack table, the revocation sets and the rules together, so no
//! session can carry an old mark afterwards. (An fsync per new port cost
//! tens of milliseconds with 2,000 ports on a busy disk.)
//!
//! When the files are lost, marks the kernel still has installed go into
//! quarantine ([`MarkStore::reserve_installed`]); marks that only the
//! revocation sets remember could then come back, which is why the files
//! live in the agent's state directory and not in `/run`. A snapshot of
//! the first layout (version 1: a conntrack mark per port and rule) is
//! read as empty but for its remote groups: it went with the per-port
//! chains, which the firewall driver replaces.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Port indexes: a port's mark is its index << 16 (the high half of the
/// mark).
const PORT_INDEX_MAX: u32 = 0xffff;
/// Rule marks: one half of a session's conntrack mark.
const RULE_MARK_MAX: u32 = nft::RULE_MARK_MASK;
/// How long a retired mark is not handed out again: longer than a
/// revoked mark stays in the firewall's `revoked_rules`/`gone_mark` sets
/// (five days), so a new port or rule never inherits a revocation.
pub const QUARANTINE_S: u64 = nft::render::REVOKE_TIMEOUT_S + 86_400;
/// The layout of the snapshot this module writes.
const VERSION: u32 = 2;
/// The snapshot, in the state directory.
const SNAPSHOT: &str = "marks.json";
/// The changes since the snapshot, in the state directory.
const JOURNAL: &str = "marks.journal";
/// The journal is folded into a new snapshot once it would hold more
/// lines than this or than twice the ports, whichever is more: a
/// snapshot then costs about as much again as the appends it replaces,
/// and opening replays a bounded number of lines.
const JOURNAL_MIN_LINES: usize = 4096;
/// How often retired marks whose quarantine is over are dropped. That is
/// a scan of every retired mark; the allocator checks quarantine dates
/// itself, so a late expiry only keeps an entry a little longer.
const EXPIRE_EVERY_S: u64 = 60;

/// Marks of one port, as [`MarkStore::port`] hands them out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMarks {
    /// The port's packet mark (a multiple of 2^16).
    pub mark: u32,
    /// Security-group rule id → its rule mark (the same on every port of
    /// the host: security-group chains are shared).
    pub rules: BTreeMap<String, u32>,
}

/// Marks of one port, as the files keep them (small: a journal line
/// holds the whole entry, and the state is cloned for `explain` on every
/// change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEntry {
    /// The port's packet mark (a multiple of 2^16).
    pub mark: u32,
    /// The rule marks of its rules (see [`MarkState::rules`] for their
    /// ids).
    pub rules: BTreeSet<u32>,
}

/// The marks: the snapshot's content, and what [`MarkStore::state`] shows.
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
    /// A file could not be read or written.
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
    /// The snapshot does not parse.
    #[error("state file {path} is corrupt")]
    Corrupt {
        /// The file.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A line of the journal other than the last does not parse (a torn
    /// last line is only a save the agent did not finish).
    #[error("journal {path} is corrupt at line {line}")]
    CorruptJournal {
        /// The file.
        path: String,
        /// The line, counted from 1.
        line: usize,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Every mark is in use or in quarantine (65,535 ports or 65,535
    /// rules).
    #[error("no {0} marks left")]
    Exhausted(&'static str),
}

/// One change, and one line of the journal: sets one key of
/// [`MarkState`] to a value (`None` removes it). Applying a change again,
/// or to a state that already has it, changes nothing — which is what
/// lets a journal be replayed over a snapshot that already holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Op {
    /// A port's entry.
    Port {
        port: String,
        entry: Option<PortEntry>,
    },
    /// A rule's mark.
    Rule { rule: String, mark: Option<u32> },
    /// When a port mark was given up.
    RetiredPort { retired_port: u32, at: Option<u64> },
    /// When a rule mark was given up.
    RetiredRule { retired_rule: u32, at: Option<u64> },
    /// Whether a remote group's sets exist.
    Group { group: String, present: bool },
    /// The allocation cursors.
    Next {
        next_port_index: u32,
        next_rule_mark: u32,
    },
}

/// What the store derives from its state so that no change scans every
/// port. Not saved: rebuilt on open and kept in step by [`apply`].
#[derive(Debug, Default, PartialEq, Eq)]
struct Index {
    /// Port mark → how many ports have it (one, unless a file was edited).
    port_marks: HashMap<u32, u32>,
    /// Rule mark → how many ports have it.
    rule_users: HashMap<u32, u32>,
    /// Rule mark → the ids of the rules that have it (one id).
    rule_ids: HashMap<u32, BTreeSet<String>>,
}

impl Index {
    fn of(st: &MarkState) -> Self {
        let mut ix = Index::default();
        for p in st.ports.values() {
            ix.add_port(p);
        }
        for (id, m) in &st.rules {
            ix.rule_ids.entry(*m).or_default().insert(id.clone());
        }
        ix
    }

    fn add_port(&mut self, p: &PortEntry) {
        *self.port_marks.entry(p.mark).or_default() += 1;
        for r in &p.rules {
            *self.rule_users.entry(*r).or_default() += 1;
        }
    }

    fn remove_port(&mut self, p: &PortEntry) {
        release(&mut self.port_marks, p.mark);
        for r in &p.rules {
            release(&mut self.rule_users, *r);
        }
    }
}

/// One user fewer for `key`.
fn release(counts: &mut HashMap<u32, u32>, key: u32) {
    if let Some(n) = counts.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&key);
        }
    }
}

/// Sets or removes `key`; whether that changed anything.
fn set_date(map: &mut BTreeMap<u32, u64>, key: u32, at: Option<u64>) -> bool {
    if map.get(&key) == at.as_ref() {
        return false;
    }
    match at {
        Some(at) => map.insert(key, at),
        None => map.remove(&key),
    };
    true
}

/// Applies one change to the state and its index (the one place that
/// changes either, for new changes and replayed ones alike); whether it
/// changed anything.
fn apply(st: &mut MarkState, ix: &mut Index, op: &Op) -> bool {
    match op {
        Op::Port { port, entry } => {
            if st.ports.get(port) == entry.as_ref() {
                return false;
            }
            let old = match entry {
                Some(e) => {
                    ix.add_port(e);
                    st.ports.insert(port.clone(), e.clone())
                }
                None => st.ports.remove(port),
            };
            if let Some(old) = old {
                ix.remove_port(&old);
            }
            true
        }
        Op::Rule { rule, mark } => {
            if st.rules.get(rule) == mark.as_ref() {
                return false;
            }
            let old = match mark {
                Some(m) => {
                    ix.rule_ids.entry(*m).or_default().insert(rule.clone());
                    st.rules.insert(rule.clone(), *m)
                }
                None => st.rules.remove(rule),
            };
            if let Some(old) = old {
                if let Some(ids) = ix.rule_ids.get_mut(&old) {
                    ids.remove(rule);
                    if ids.is_empty() {
                        ix.rule_ids.remove(&old);
                    }
                }
            }
            true
        }
        Op::RetiredPort { retired_port, at } => set_date(&mut st.retired_ports, *retired_port, *at),
        Op::RetiredRule { retired_rule, at } => set_date(&mut st.retired_rules, *retired_rule, *at),
        Op::Group { group, present } => {
            if *present {
                st.groups.insert(group.clone())
            } else {
                st.groups.remove(group)
            }
        }
        Op::Next {
            next_port_index,
            next_rule_mark,
        } => {
            let next = (*next_port_index, *next_rule_mark);
            let changed = (st.next_port_index, st.next_rule_mark) != next;
            (st.next_port_index, st.next_rule_mark) = next;
            changed
        }
    }
}

/// The two files and what the store knows of the journal.
#[derive(Debug)]
struct Files {
    /// `marks.json`.
    snapshot: PathBuf,
    /// `marks.journal`.
    journal: PathBuf,
    /// Lines in the journal.
    lines: usize,
    /// Bytes of those lines.
    len: u64,
    /// Whether a torn line follows them (cut off before the next append).
    torn: bool,
    /// The next save writes a snapshot, however short the journal (the
    /// snapshot read was of an older layout).
    snapshot_due: bool,
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MarkError {
    let path = path.display().to_string();
    move |source| MarkError::Io { op, path, source }
}

impl Files {
    /// Appends `ops` to the journal in one write and clears them.
    fn append(&mut self, ops: &mut Vec<Op>) -> Result<(), MarkError> {
        let mut buf = Vec::with_capacity(128 * ops.len());
        for op in ops.iter() {
            serde_json::to_writer(&mut buf, op).expect("plain data");
            buf.push(b'\n');
        }
        let mut f = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.journal)
            .map_err(io_error("open", &self.journal))?;
        if self.torn {
            // Appending after half a line would make it a bad line in
            // the middle.
            f.set_len(self.len)
                .map_err(io_error("cut the torn end of", &self.journal))?;
            self.torn = false;
        }
        if let Err(e) = f.write_all(&buf) {
            // Part of it may be there: cut it off next time.
            self.torn = true;
            return Err(io_error("append to", &self.journal)(e));
        }
        self.lines += ops.len();
        self.len += buf.len() as u64;
        ops.clear();
        Ok(())
    }

    /// Writes `state` as the snapshot, after appending `pending` to a
    /// journal that has lines (see the module documentation: the journal
    /// must end where the snapshot is until it is emptied).
    fn write_snapshot(
        &mut self,
        state: &MarkState,
        pending: &mut Vec<Op>,
    ) -> Result<(), MarkError> {
        if self.lines > 0 {
            self.append(pending)?;
        }
        write_atomic(
            &self.snapshot,
            &serde_json::to_vec(state).expect("plain data"),
        )?;
        pending.clear();
        self.snapshot_due = false;
        Ok(())
    }

    /// Empties the journal (once the snapshot has its changes).
    fn truncate_journal(&mut self) -> Result<(), MarkError> {
        if self.len > 0 || self.torn {
            fs::OpenOptions::new()
                .write(true)
                .open(&self.journal)
                .and_then(|f| f.set_len(0))
                .map_err(io_error("empty", &self.journal))?;
        }
        (self.lines, self.len, self.torn) = (0, 0, false);
        Ok(())
    }
}

/// The marks, in memory and on disk.
#[derive(Debug)]
pub struct MarkStore {
    /// `None` for [`MarkStore::in_memory`].
    files: Option<Files>,
    state: MarkState,
    index: Index,
    /// Changes not saved yet, in order.
    pending: Vec<Op>,
    /// When retired marks were last expired (Unix seconds).
    expired_at: Option<u64>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a mark given up at `at` is still kept from being handed out.
fn in_quarantine(at: u64, now: u64) -> bool {
    now.saturating_sub(at) < QUARANTINE_S
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

/// Reads a snapshot of either layout. A version-1 file (a mark per port
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
    /// Opens (or starts) the store in `dir`: `marks.json` and
    /// `marks.journal`.
    pub fn open(dir: &Path) -> Result<Self, MarkError> {
        fs::create_dir_all(dir).map_err(io_error("create state directory", dir))?;
        let snapshot = dir.join(SNAPSHOT);
        let (state, snapshot_due) = match fs::read(&snapshot) {
            Ok(b) => parse(&b).map_err(|source| MarkError::Corrupt {
                path: snapshot.display().to_string(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (MarkState::default(), false),
            Err(e) => return Err(io_error("read", &snapshot)(e)),
        };
        let mut files = Files {
            snapshot,
            journal: dir.join(JOURNAL),
            lines: 0,
            len: 0,
            torn: false,
            snapshot_due,
        };
        let mut store = MarkStore {
            files: None,
            index: Index::of(&state),
            state,
            pending: Vec::new(),
            expired_at: None,
        };
        store.replay(&mut files)?;
        store.files = Some(files);
        Ok(store)
    }

    /// Replays the journal over the state (a missing journal is empty).
    fn replay(&mut self, files: &mut Files) -> Result<(), MarkError> {
        let path = &files.journal;
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("read", path)(e)),
        };
        let mut lines = bytes.split_inclusive(|b| *b == b'\n').peekable();
        while let Some(line) = lines.next() {
            // Only the last line can lack its newline.
            match line.strip_suffix(b"\n").map(serde_json::from_slice::<Op>) {
                Some(Ok(op)) => {
                    apply(&mut self.state, &mut self.index, &op);
                    files.lines += 1;
                    files.len += line.len() as u64;
                }
                Some(Err(source)) if lines.peek().is_some() => {
                    return Err(MarkError::CorruptJournal {
                        path: path.display().to_string(),
                        line: files.lines + 1,
                        source,
                    });
                }
                _ => {
                    tracing::warn!(
                        path = %path.display(),
                        line = files.lines + 1,
                        "the last line of the marks journal is torn (the agent stopped in the middle of a save): ignored"
                    );
                    files.torn = true;
                }
            }
        }
        Ok(())
    }

    /// A store that is never written (unit tests).
    pub fn in_memory() -> Self {
        MarkStore {
            files: None,
            state: MarkState::default(),
            index: Index::default(),
            pending: Vec::new(),
            expired_at: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> &MarkState {
        &self.state
    }

    /// Every change to the state goes through here: applied to the state
    /// and its index, and queued for the journal.
    fn change(&mut self, op: Op) {
        if apply(&mut self.state, &mut self.index, &op) && self.files.is_some() {
            self.pending.push(op);
        }
    }

    fn set_port(&mut self, device: &str, entry: Option<PortEntry>) {
        self.change(Op::Port {
            port: device.to_string(),
            entry,
        });
    }

    fn set_rule(&mut self, id: &str, mark: Option<u32>) {
        self.change(Op::Rule {
            rule: id.to_string(),
            mark,
        });
    }

    fn set_retired_port(&mut self, mark: u32, at: Option<u64>) {
        self.change(Op::RetiredPort {
            retired_port: mark,
            at,
        });
    }

    fn set_retired_rule(&mut self, mark: u32, at: Option<u64>) {
        self.change(Op::RetiredRule {
            retired_rule: mark,
            at,
        });
    }

    fn set_next(&mut self, next_port_index: u32, next_rule_mark: u32) {
        self.change(Op::Next {
            next_port_index,
            next_rule_mark,
        });
    }

    /// Puts in quarantine every mark in `installed` (port mark, session
    /// marks, as read back from the kernel) that the store does not know:
    /// after lost files, new ports and rules never get a mark the kernel
    /// still uses. A mark already in quarantine starts it again.
    pub fn reserve_installed<'a>(&mut self, installed: impl IntoIterator<Item = (u32, &'a [u32])>) {
        let now = now_s();
        for (mark, ct) in installed {
            if !self.index.port_marks.contains_key(&mark) {
                self.set_retired_port(mark, Some(now));
            }
            for c in ct {
                let r = c & nft::RULE_MARK_MASK;
                if !self.index.rule_ids.contains_key(&r) {
                    self.set_retired_rule(r, Some(now));
                }
            }
        }
    }

    /// Drops retired marks whose quarantine is over, at most every
    /// [`EXPIRE_EVERY_S`] (or when the clock jumped).
    fn expire(&mut self, now: u64) {
        if self
            .expired_at
            .is_some_and(|t| t.abs_diff(now) < EXPIRE_EVERY_S)
        {
            return;
        }
        self.expired_at = Some(now);
        let over = |retired: &BTreeMap<u32, u64>| -> Vec<u32> {
            retired
                .iter()
                .filter(|(_, at)| !in_quarantine(**at, now))
                .map(|(m, _)| *m)
                .collect()
        };
        for m in over(&self.state.retired_ports) {
            self.set_retired_port(m, None);
        }
        for m in over(&self.state.retired_rules) {
            self.set_retired_rule(m, None);
        }
    }

    /// A port mark neither in use nor in quarantine.
    fn allocate_port(&mut self, now: u64) -> Result<u32, MarkError> {
        self.expire(now);
        let mut next = self.state.next_port_index;
        let (used, retired) = (&self.index.port_marks, &self.state.retired_ports);
        let index = allocate(&mut next, PORT_INDEX_MAX, |i| {
            used.contains_key(&(i << 16))
                || retired
                    .get(&(i << 16))
                    .is_some_and(|at| in_quarantine(*at, now))
        })
        .ok_or(MarkError::Exhausted("port"))?;
        self.set_next(next, self.state.next_rule_mark);
        // Retired long enough ago, and not expired yet.
        self.set_retired_port(index << 16, None);
        Ok(index << 16)
    }

    /// A rule mark neither in use nor in quarantine.
    fn allocate_rule(&mut self, now: u64) -> Result<u32, MarkError> {
        self.expire(now);
        let mut next = self.state.next_rule_mark;
        let (ix, retired) = (&self.index, &self.state.retired_rules);
        let m = allocate(&mut next, RULE_MARK_MAX, |m| {
            ix.rule_ids.contains_key(&m)
                || ix.rule_users.contains_key(&m)
                || retired.get(&m).is_some_and(|at| in_quarantine(*at, now))
        })
        .ok_or(MarkError::Exhausted("rule"))?;
        self.set_next(self.state.next_port_index, next);
        self.set_retired_rule(m, None);
        Ok(m)
    }

    /// Retires rule marks no port has any more (and forgets their ids).
    fn retire_rules(&mut self, marks: impl IntoIterator<Item = u32>, now: u64) {
        for m in marks {
            if self.index.rule_users.contains_key(&m) {
                continue;
            }
            let Some(ids) = self.index.rule_ids.get(&m) else {
                continue;
            };
            let ids: Vec<String> = ids.iter().cloned().collect();
            // Quarantine first (see the module documentation).
            self.set_retired_rule(m, Some(now));
            for id in ids {
                self.set_rule(&id, None);
            }
        }
    }

    /// The marks of a port, allocating what is missing: its mark and the
    /// rule mark of each rule id in `rule_ids` (one per rule on the host,
    /// shared by every port that has the rule). Rules no longer listed
    /// leave the port; a rule no port has any more gives up its mark.
    pub fn port(&mut self, device: &str, rule_ids: &[&str]) -> Result<PortMarks, MarkError> {
        let now = now_s();
        let mark = match self.state.ports.get(device) {
            Some(p) => p.mark,
            None => self.allocate_port(now)?,
        };
        let mut rules = BTreeMap::new();
        for id in rule_ids {
            let m = match self.state.rules.get(*id) {
                Some(m) => *m,
                None => {
                    let m = self.allocate_rule(now)?;
                    self.set_rule(id, Some(m));
                    m
                }
            };
            rules.insert(id.to_string(), m);
        }
        let want: BTreeSet<u32> = rules.values().copied().collect();
        let gone: Vec<u32> = match self.state.ports.get(device) {
            Some(p) if p.rules == want => return Ok(PortMarks { mark, rules }),
            Some(p) => p.rules.difference(&want).copied().collect(),
            None => Vec::new(),
        };
        self.set_port(device, Some(PortEntry { mark, rules: want }));
        self.retire_rules(gone, now);
        Ok(PortMarks { mark, rules })
    }

    /// The marks of a port, if it has some, with the ids of its rules.
    pub fn get(&self, device: &str) -> Option<PortMarks> {
        let p = self.state.ports.get(device)?;
        let rules = p
            .rules
            .iter()
            .flat_map(|m| {
                let ids = self.index.rule_ids.get(m).into_iter().flatten();
                ids.map(move |id| (id.clone(), *m))
            })
            .collect();
        Some(PortMarks {
            mark: p.mark,
            rules,
        })
    }

    /// Forgets a port: its mark (whose sessions the firewall revoked) and
    /// rule marks no other port uses go into quarantine.
    pub fn forget(&mut self, device: &str) {
        let Some(p) = self.state.ports.get(device) else {
            return;
        };
        let (mark, rules) = (p.mark, p.rules.clone());
        let now = now_s();
        // Quarantine first (see the module documentation).
        self.set_retired_port(mark, Some(now));
        self.set_port(device, None);
        self.retire_rules(rules, now);
    }

    /// Records that a remote group's sets exist (or no longer do).
    pub fn note_group(&mut self, id: &str, present: bool) {
        self.change(Op::Group {
            group: id.to_string(),
            present,
        });
    }

    /// Device names that have marks.
    pub fn devices(&self) -> Vec<String> {
        self.state.ports.keys().cloned().collect()
    }

    /// Saves the changes since the last save: appends them to the
    /// journal, or, once the journal is long (or the snapshot of an older
    /// layout), writes a snapshot and empties the journal.
    pub fn save(&mut self) -> Result<(), MarkError> {
        let Some(files) = &mut self.files else {
            self.pending.clear();
            return Ok(());
        };
        if self.pending.is_empty() && !files.snapshot_due {
            return Ok(());
        }
        let most = JOURNAL_MIN_LINES.max(2 * self.state.ports.len());
        if files.snapshot_due || files.lines + self.pending.len() > most {
            files.write_snapshot(&self.state, &mut self.pending)?;
            files.truncate_journal()
        } else {
            files.append(&mut self.pending)
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), MarkError> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp).map_err(io_error("create", &tmp))?;
    f.write_all(data).map_err(io_error("write", &tmp))?;
    drop(f);
    // Atomic for readers and for a crash of the process (see the module
    // documentation for why not for a crash of the machine).
    fs::rename(&tmp, path).map_err(io_error("rename", &tmp))?;
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
        // Rewritten whole, not only journaled.
        let on_disk: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(SNAPSHOT)).unwrap()).unwrap();
        assert_eq!(on_disk["version"], VERSION);
        assert!(on_disk["ports"]["tapa"].is_object());
    }

    fn journal_lines(dir: &Path) -> usize {
        fs::read(dir.join(JOURNAL))
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0)
    }

    /// The state as the files have it, and the index kept in step.
    fn reopened(s: &MarkStore, dir: &Path) -> MarkStore {
        assert_eq!(s.index, Index::of(&s.state), "index out of step");
        let r = MarkStore::open(dir).unwrap();
        assert_eq!(r.state(), s.state());
        assert_eq!(r.index, s.index);
        r
    }

    /// Every kind of change: ports with shared rules, rules leaving a
    /// port and the host, ports forgotten, groups, installed marks.
    fn history(s: &mut MarkStore) {
        for i in 0..30 {
            let ids = [format!("r{}", i % 7), format!("r{}", (i + 1) % 7)];
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            s.port(&format!("tap{i}"), &ids).unwrap();
        }
        s.port("tapx", &["only-x", "r1"]).unwrap();
        s.port("tap3", &["r0"]).unwrap();
        s.port("tap1", &[]).unwrap();
        for i in (0..30).step_by(4) {
            s.forget(&format!("tap{i}"));
        }
        s.forget("tapx");
        s.note_group("g1", true);
        s.note_group("g2", true);
        s.note_group("g1", false);
        s.reserve_installed([(40 << 16, &[(40 << 16) | 99][..])]);
    }

    #[test]
    fn a_reopened_store_has_the_same_state_and_hands_out_the_same_marks() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = MarkStore::open(dir.path()).unwrap();
        history(&mut a);
        assert!(a.state().retired_rules.len() >= 2, "{:?}", a.state());
        a.save().unwrap();
        assert!(
            !dir.path().join(SNAPSHOT).exists(),
            "a short history is only journaled"
        );
        let mut b = reopened(&a, dir.path());
        for d in a.devices() {
            assert_eq!(b.get(&d), a.get(&d));
            assert_eq!(b.get(&d), b.state().port(&d));
        }
        // The next allocations are those the first store makes, and none
        // is in use or in quarantine.
        let before = a.state().clone();
        for (dev, ids) in [
            ("new1", &["r0", "fresh1"][..]),
            ("new2", &["fresh2"][..]),
            ("tap5", &["fresh1", "r3"][..]),
        ] {
            let (x, y) = (a.port(dev, ids).unwrap(), b.port(dev, ids).unwrap());
            assert_eq!(x, y);
            if !before.ports.contains_key(dev) {
                assert!(before.ports.values().all(|p| p.mark != x.mark));
                assert!(!before.retired_ports.contains_key(&x.mark));
            }
            for (id, m) in &x.rules {
                if !before.rules.contains_key(id) {
                    assert!(!before.rules.values().any(|r| r == m));
                    assert!(!before.retired_rules.contains_key(m), "{id}: {m}");
                }
            }
        }
        assert_eq!(a.state(), b.state());
    }

    #[test]
    fn one_new_port_appends_a_few_lines_and_leaves_the_snapshot_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = MarkStore::open(dir.path()).unwrap();
        for i in 0..2500 {
            s.port(&format!("tap{i}"), &["r1", "r2"]).unwrap();
        }
        // More lines than the journal takes: a snapshot.
        s.save().unwrap();
        let snapshot = fs::read(dir.path().join(SNAPSHOT)).unwrap();
        assert_eq!(journal_lines(dir.path()), 0);
        s.port("tapnew", &["r1", "r3"]).unwrap();
        s.save().unwrap();
        assert_eq!(fs::read(dir.path().join(SNAPSHOT)).unwrap(), snapshot);
        let n = journal_lines(dir.path());
        assert!((1..=4).contains(&n), "{n} lines for one port");
        reopened(&s, dir.path());
    }

    #[test]
    fn a_long_journal_is_folded_into_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = MarkStore::open(dir.path()).unwrap();
        s.port("tapa", &["r"]).unwrap();
        s.save().unwrap();
        let mut folded = false;
        for i in 0..2000 {
            let before = journal_lines(dir.path());
            s.port(&format!("tmp{i}"), &["r"]).unwrap();
            s.forget(&format!("tmp{i}"));
            s.save().unwrap();
            let after = journal_lines(dir.path());
            assert!(after <= JOURNAL_MIN_LINES, "{after} lines");
            if after < before {
                let on_disk = fs::read(dir.path().join(SNAPSHOT)).unwrap();
                let (snap, _) = parse(&on_disk).unwrap();
                assert_eq!(&snap, s.state());
                assert_eq!(after, 0);
                assert_eq!(fs::metadata(dir.path().join(JOURNAL)).unwrap().len(), 0);
                folded = true;
                break;
            }
        }
        assert!(folded, "the journal never got a snapshot");
        // Changes after the snapshot go to the journal again.
        s.forget("tapa");
        s.note_group("g", true);
        s.save().unwrap();
        assert!(journal_lines(dir.path()) > 0);
        reopened(&s, dir.path());
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_bad_line_before_it_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL);
        let append = |b: &[u8]| {
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(b).unwrap();
        };
        let mut s = MarkStore::open(dir.path()).unwrap();
        history(&mut s);
        s.save().unwrap();
        // The agent died in the middle of a save.
        append(br#"{"port":"tapz","entry":{"mark":"#);
        let mut t = reopened(&s, dir.path());
        // The next save cuts the torn line off before appending.
        t.port("tapy", &["r1"]).unwrap();
        t.save().unwrap();
        assert!(!fs::read_to_string(&path).unwrap().contains("tapz"));
        let t = reopened(&t, dir.path());
        // A whole last line that does not parse is ignored too.
        append(b"{\"port\"\n");
        reopened(&t, dir.path());
        // Anywhere else it is an error naming the file and the line.
        let text = fs::read_to_string(&path).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        fs::write(&path, format!("{first}\n{{\"port\": 1}}\n{rest}")).unwrap();
        let e = MarkStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&e, MarkError::CorruptJournal { line: 2, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn a_journal_replayed_over_the_snapshot_that_has_it_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = MarkStore::open(dir.path()).unwrap();
        history(&mut s);
        s.save().unwrap();
        // Changes that undo what the journal says: a port it created
        // goes, rules leave a port, a group goes, a port comes.
        s.forget("tap1");
        s.port("tap2", &["r5"]).unwrap();
        s.note_group("g2", false);
        s.port("tapnew", &["r9"]).unwrap();
        // A compaction that dies after the snapshot, before emptying the
        // journal: the journal ends with the same changes.
        let files = s.files.as_mut().unwrap();
        files.write_snapshot(&s.state, &mut s.pending).unwrap();
        assert!(s.pending.is_empty());
        assert!(journal_lines(dir.path()) > 0);
        let mut s = reopened(&s, dir.path());
        // The same with a journal copied aside before a compaction with
        // nothing pending, and put back after.
        s.forget("tap5");
        s.save().unwrap();
        let journal = fs::read(dir.path().join(JOURNAL)).unwrap();
        s.files.as_mut().unwrap().snapshot_due = true;
        s.save().unwrap();
        assert_eq!(journal_lines(dir.path()), 0);
        fs::write(dir.path().join(JOURNAL), journal).unwrap();
        reopened(&s, dir.path());
    }

    #[test]
    fn an_in_memory_store_keeps_nothing_to_write() {
        let mut s = MarkStore::in_memory();
        history(&mut s);
        assert!(s.pending.is_empty());
        s.save().unwrap();
        assert_eq!(s.index, Index::of(&s.state));
    }
}
