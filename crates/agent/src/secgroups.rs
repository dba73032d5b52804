//! Security groups as seen from the host: the member sets of remote
//! groups (`rh4-<sg>`/`rh6-<sg>`), which remote-group rules of port
//! chains match. A group's set exists while some port's rule uses it; the
//! port rules themselves are installed by [`crate::ports`].

use crate::plan::Plan;
use crate::reconcile::Reconciler;

impl Reconciler {
    /// Creates or updates the member sets of every group a port rule
    /// references (before the ports: a rule needs its set).
    /// A group that fails is retried soon (`rules_failed`), and the ports
    /// whose rules name it are cut off (`group_errors`): its set may hold
    /// a member that left.
    pub(crate) async fn reconcile_groups(&mut self, plan: &Plan) {
        self.group_errors.clear();
        for g in plan.groups.values() {
            // The plan's members are sorted and unique.
            if self.applied_groups.get(&g.id) == Some(g) {
                continue;
            }
            let want = g.clone();
            self.changes += 1;
            // Noted first: a crash right after the set is made must not
            // leave a set nobody knows about.
            self.marks.note_group(&g.id, true);
            let gg = want.clone();
            match self.fw(move |f| f.upsert_remote_group(&gg)).await {
                Ok(()) => {
                    self.applied_groups.insert(g.id.clone(), want);
                }
                Err(e) => {
                    let msg = format!("remote group {}: {}", g.id, crate::Chain(&e));
                    self.warn(msg.clone());
                    self.rules_failed = true;
                    self.group_errors.insert(g.id.clone(), msg);
                }
            }
        }
    }

    /// Removes sets no port uses any more (after the ports: a set in use
    /// cannot be deleted).
    pub(crate) async fn collect_groups(&mut self, plan: &Plan) {
        let stale: std::collections::BTreeSet<String> = self
            .applied_groups
            .keys()
            .chain(self.marks.state().groups.iter())
            .filter(|g| !plan.groups.contains_key(*g))
            .cloned()
            .collect();
        for g in stale {
            self.changes += 1;
            let id = g.clone();
            match self.fw(move |f| f.remove_remote_group(&id)).await {
                Ok(()) => {
                    self.marks.note_group(&g, false);
                    self.applied_groups.remove(&g);
                }
                Err(e) => self.warn(format!("removing remote group {g}: {}", crate::Chain(&e))),
            }
        }
    }
}
