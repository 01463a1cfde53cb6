//! Kept sessions: where each run's copy of its CLI session is kept for follow-ups, and the
//! running totals the CLI had reported when it left the session, so that a run which resumes
//! it reports only what it spent itself.
//!
//! A resumed session keeps its id, so copies are kept under the task that produced them
//! ([`AgentRequest::keep_as`]): a second follow-up of a task resumes the session as that task
//! left it, not as the first follow-up did. Some CLIs report running totals over a resumed
//! session (Claude Code its cost, Codex its tokens); beside each copy lies what the CLI had
//! reported at that run's end (`<session id>.totals.json`), and a run that resumes the copy
//! subtracts it, from its live `usage` events and from its final figures alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agentpool_core::{EventPayload, NewEvent, Usage};
use serde::{Deserialize, Serialize};

use crate::adapter::plain_id;
use crate::{AgentOutcome, AgentRequest, EventSink};

/// Which of a CLI's reported figures are running totals over a resumed session (its earlier
/// runs included) instead of the run's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunningTotals {
    pub cost: bool,
    pub tokens: bool,
}

impl RunningTotals {
    /// Every figure is the run's own.
    pub const NONE: Self = Self {
        cost: false,
        tokens: false,
    };

    fn any(self) -> bool {
        self.cost || self.tokens
    }
}

/// Where a copy kept under `key` lives in `root` (an agent's [`crate::AgentConfig::sessions_of`]):
/// `root/tasks/<key>`; without a usable key, `root` itself, where copies are filed by session
/// id alone.
pub fn slot(root: &Path, key: Option<&str>) -> PathBuf {
    match key.filter(|k| plain_id(k)) {
        Some(k) => root.join("tasks").join(k),
        None => root.to_path_buf(),
    }
}

/// The slot a resumed session is put back from: the copy `request.restore_from` kept, or,
/// when that task kept none here, the copy filed by session id (what runs without a task
/// key keep, and where sessions were kept before copies were kept per task).
pub fn restore_slot(root: &Path, request: &AgentRequest) -> PathBuf {
    let own = slot(root, request.restore_from.as_deref());
    if own.is_dir() { own } else { root.to_path_buf() }
}

/// How long a kept copy is kept when nothing says otherwise: well past the server's default
/// retention of a finished task (7 days), after which no follow-up of the task can be made.
pub const DEFAULT_KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often one process prunes a directory of kept copies at most.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Remove the copies in `root` (a task's slot, or a copy filed by session id) not written for
/// `keep_for`: one copy is kept per task, and nothing else ever removes them. A copy's time is
/// when it was last kept (its slot's, for a task's). Returns how many were removed.
pub fn prune(root: &Path, keep_for: Duration) -> usize {
    let Some(cutoff) = SystemTime::now().checked_sub(keep_for) else {
        return 0;
    };
    let tasks = root.join("tasks");
    let mut removed = 0;
    for dir in [tasks.as_path(), root] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if path == tasks || !old {
                continue;
            }
            let gone = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            removed += usize::from(gone.is_ok());
        }
    }
    removed
}

/// [`prune`] `root`, unless this process did within the last hour; `None` when it did.
pub fn prune_now_and_then(root: &Path, keep_for: Duration) -> Option<usize> {
    static LAST: Mutex<BTreeMap<PathBuf, Instant>> = Mutex::new(BTreeMap::new());
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last
            .get(root)
            .is_some_and(|t| now.duration_since(*t) < PRUNE_EVERY)
        {
            return None;
        }
        last.insert(root.to_path_buf(), now);
    }
    Some(prune(root, keep_for))
}

/// What a CLI had reported at the end of the run that left a kept session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub usage: Usage,
    pub cost_usd: Option<f64>,
}

fn totals_file(slot: &Path, id: &str) -> Option<PathBuf> {
    plain_id(id).then(|| slot.join(format!("{id}.totals.json")))
}

impl Totals {
    /// The figures a run reported.
    pub fn of(outcome: &AgentOutcome) -> Self {
        Self {
            usage: outcome.usage,
            cost_usd: outcome.cost_usd,
        }
    }

    /// The totals kept beside session `id` in `slot`; `None` when there are none (a copy kept
    /// before totals were, or none at all).
    pub fn read(slot: &Path, id: &str) -> Option<Self> {
        let bytes = std::fs::read(totals_file(slot, id)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keep these totals beside session `id` in `slot`.
    pub fn write(&self, slot: &Path, id: &str) -> std::io::Result<()> {
        let Some(path) = totals_file(slot, id) else {
            return Ok(());
        };
        std::fs::create_dir_all(slot)?;
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = slot.join(format!(".{id}.totals.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }

    /// The session's totals after a run that reported `self` and resumed it from `base`:
    /// running totals never go down, so a figure the run did not report (it was stopped before
    /// its final line) stays what it was.
    pub fn after(self, base: Option<&Totals>) -> Self {
        let Some(b) = base else { return self };
        let u = |a: u64, b: u64| a.max(b);
        Self {
            usage: Usage {
                input_tokens: u(self.usage.input_tokens, b.usage.input_tokens),
                output_tokens: u(self.usage.output_tokens, b.usage.output_tokens),
                cache_read_tokens: u(self.usage.cache_read_tokens, b.usage.cache_read_tokens),
                cache_write_tokens: u(self.usage.cache_write_tokens, b.usage.cache_write_tokens),
            },
            cost_usd: match (self.cost_usd, b.cost_usd) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// Subtracts a resumed session's earlier totals from what a run reports, never going below
/// zero: from each `usage` event as it passes (what is left of the baseline carries over to
/// the next one, so the events add up to the run's own figures) and from the final outcome.
pub struct Baseline {
    which: RunningTotals,
    session: String,
    /// What is still to be subtracted from later usage events, once the CLI said it resumed
    /// `session` (`None` before).
    left: Mutex<Option<Totals>>,
    base: Totals,
}

impl Baseline {
    /// `None` when nothing is to be subtracted: the CLI reports only its own figures, or the
    /// run resumes no session, or no totals were kept with it.
    pub fn new(which: RunningTotals, session: Option<&str>, base: Option<Totals>) -> Option<Self> {
        let (session, base) = (session?, base?);
        which.any().then(|| Self {
            which,
            session: session.to_string(),
            left: Mutex::new(None),
            base,
        })
    }

    /// The run's own figures from the outcome of a run that resumed the session (an outcome
    /// of another session is left as it is).
    pub fn apply(&self, outcome: &mut AgentOutcome) {
        if outcome.session_id.as_deref() != Some(self.session.as_str()) {
            return;
        }
        let mut left = self.base;
        if self.which.tokens {
            outcome.usage = take(&outcome.usage, &mut left.usage);
        }
        if self.which.cost {
            outcome.cost_usd = outcome.cost_usd.map(|c| take_cost(c, &mut left.cost_usd));
        }
    }

    fn event(&self, mut event: NewEvent) -> NewEvent {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        match &mut event.payload {
            EventPayload::SessionStarted { session_id, .. } if *session_id == self.session => {
                *left = Some(self.base);
            }
            EventPayload::Usage {
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                cost_usd,
            } => {
                if let Some(left) = left.as_mut() {
                    if self.which.tokens {
                        let reported = Usage {
                            input_tokens: *input_tokens,
                            output_tokens: *output_tokens,
                            cache_read_tokens: *cache_read_tokens,
                            cache_write_tokens: *cache_write_tokens,
                        };
                        let own = take(&reported, &mut left.usage);
                        *input_tokens = own.input_tokens;
                        *output_tokens = own.output_tokens;
                        *cache_read_tokens = own.cache_read_tokens;
                        *cache_write_tokens = own.cache_write_tokens;
                    }
                    if self.which.cost {
                        *cost_usd = cost_usd.map(|c| take_cost(c, &mut left.cost_usd));
                    }
                }
            }
            _ => {}
        }
        event
    }

    /// `inner` with this baseline subtracted from the usage events that pass.
    pub fn sink(self: &Arc<Self>, inner: Arc<dyn EventSink>) -> Arc<dyn EventSink> {
        Arc::new(Subtracting {
            baseline: self.clone(),
            inner,
        })
    }
}

/// `reported` less what is `left` of the baseline, field by field and never below zero; what
/// was subtracted is used up.
fn take(reported: &Usage, left: &mut Usage) -> Usage {
    let one = |r: u64, l: &mut u64| {
        let t = r.min(*l);
        *l -= t;
        r - t
    };
    Usage {
        input_tokens: one(reported.input_tokens, &mut left.input_tokens),
        output_tokens: one(reported.output_tokens, &mut left.output_tokens),
        cache_read_tokens: one(reported.cache_read_tokens, &mut left.cache_read_tokens),
        cache_write_tokens: one(reported.cache_write_tokens, &mut left.cache_write_tokens),
    }
}

/// A reported cost less what is `left` of the baseline's, never below zero; rounded to a
/// billionth of a dollar, so that subtracting does not leave float noise in the records.
fn take_cost(reported: f64, left: &mut Option<f64>) -> f64 {
    let l = left.unwrap_or(0.0).max(0.0);
    let t = reported.min(l).max(0.0);
    *left = Some(l - t);
    ((reported - t) * 1e9).round() / 1e9
}

struct Subtracting {
    baseline: Arc<Baseline>,
    inner: Arc<dyn EventSink>,
}

impl EventSink for Subtracting {
    fn emit(&self, event: NewEvent) {
        self.inner.emit(self.baseline.event(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `path` (a file or a directory) as last written `age` ago.
    fn aged(path: &Path, age: Duration) {
        let t = SystemTime::now() - age;
        std::fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn copies_not_kept_for_the_period_are_removed_and_the_rest_stay() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let day = Duration::from_secs(24 * 3600);
        for (slot, age) in [("old", 40), ("new", 2)] {
            let dir = root.join("tasks").join(slot);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("s.jsonl"), "{}").unwrap();
            aged(&dir, day * age);
        }
        // Filed by session id alone: a file and its totals, a CLI's directory.
        for (name, age) in [("old.jsonl", 40), ("old.totals.json", 40), ("new.jsonl", 1)] {
            std::fs::write(root.join(name), "{}").unwrap();
            aged(&root.join(name), day * age);
        }
        std::fs::create_dir_all(root.join("thread-old/2026/01")).unwrap();
        aged(&root.join("thread-old"), day * 31);
        aged(&root.join("tasks"), day * 90);

        assert_eq!(prune(root, DEFAULT_KEEP_FOR), 4);
        let mut left: Vec<String> = walk(root);
        left.sort();
        assert_eq!(left, ["new.jsonl", "tasks", "tasks/new", "tasks/new/s.jsonl"]);
        assert_eq!(prune(root, DEFAULT_KEEP_FOR), 0);
    }

    #[test]
    fn a_directory_is_pruned_at_most_once_an_hour() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(prune_now_and_then(root.path(), DEFAULT_KEEP_FOR), Some(0));
        assert_eq!(prune_now_and_then(root.path(), DEFAULT_KEEP_FOR), None);
        let other = tempfile::tempdir().unwrap();
        assert_eq!(prune_now_and_then(other.path(), DEFAULT_KEEP_FOR), Some(0));
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                if p.is_dir() {
                    dirs.push(p);
                }
            }
        }
        out
    }

    fn usage(i: u64, o: u64) -> Usage {
        Usage {
            input_tokens: i,
            output_tokens: o,
            ..Usage::default()
        }
    }

    #[test]
    fn the_baseline_is_used_up_across_usage_events_and_never_goes_below_zero() {
        let mut left = usage(250, 10);
        assert_eq!(take(&usage(200, 40), &mut left), usage(0, 30));
        assert_eq!(take(&usage(100, 20), &mut left), usage(50, 20));
        assert_eq!(left, usage(0, 0));
        let mut left = Some(0.0016);
        assert_eq!(take_cost(0.0024, &mut left), 0.0008);
        assert_eq!(take_cost(0.001, &mut left), 0.001);
    }

    #[test]
    fn a_run_that_reported_nothing_leaves_the_totals_as_they_were() {
        let base = Totals {
            usage: usage(200, 40),
            cost_usd: Some(0.0016),
        };
        assert_eq!(Totals::default().after(Some(&base)), base);
        let more = Totals {
            usage: usage(300, 60),
            cost_usd: Some(0.0024),
        };
        assert_eq!(more.after(Some(&base)), more);
    }

    #[test]
    fn keys_that_could_leave_the_directory_fall_back_to_the_session_id() {
        let root = Path::new("/kept");
        assert_eq!(slot(root, Some("t-1")), root.join("tasks/t-1"));
        assert_eq!(slot(root, Some("../x")), root);
        assert_eq!(slot(root, None), root);
    }
}
