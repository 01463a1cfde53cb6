//! A task's checks (docs/checks.md): run each one in the workspace under the agent's process
//! control (own process group, its own timeout bounded by the task's, an output limit, killed
//! on cancel), keep the end of its output and the failing tests it names, and build the
//! prompt that feeds failures back to the agent.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentpool_agents::EventSink;
use agentpool_core::{CheckRun, CheckSpec, Lifecycle, NewEvent};
use tokio_util::sync::CancellationToken;

use crate::process::{GroupRecord, KillReason, LineMask, LongLines, OutputStream, ProcessSpec, run_process};

/// How much of a check's output its record (and the feedback prompt) keeps: the end.
pub const OUTPUT_TAIL_BYTES: usize = 4000;
/// Failing test names kept per check.
const MAX_FAILED_TESTS: usize = 50;

/// Why a round of checks stopped before every check ran.
#[derive(Debug, thiserror::Error)]
pub enum ChecksError {
    #[error("canceled")]
    Canceled,
    /// The task's own timeout (not the check's) ran out during check `0`.
    #[error("the task's timeout was hit during check {0}")]
    TaskTimeout(String),
    #[error("cannot start check {0}: {1}")]
    Spawn(String, std::io::Error),
}

/// Where and how checks run: the task's workspace and environment.
pub struct CheckEnv<'a> {
    pub dir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    /// Where the task's process groups are recorded, for crash clean-up.
    pub record: GroupRecord,
    pub kill_grace: Duration,
    /// When the task's timeout runs out.
    pub deadline: Instant,
    /// Masks the checks' output lines as they are read: the tail a check's record keeps is
    /// then cut from masked text, and cannot start with the rest of a secret cut in two.
    pub mask: LineMask,
}

/// Run every check of round `round` in order (all of them, so the agent hears of every
/// failure at once), emitting `checks_started` and one `check_finished` per check.
pub async fn run_round(
    round: u32,
    checks: &[CheckSpec],
    cx: &CheckEnv<'_>,
    events: &Arc<dyn EventSink>,
    cancel: &CancellationToken,
) -> Result<Vec<CheckRun>, ChecksError> {
    events.emit(NewEvent::new(Lifecycle::ChecksStarted {
        round,
        checks: checks.len(),
    }));
    let mut runs = Vec::with_capacity(checks.len());
    for check in checks {
        let run = run_one(round, check, cx, events, cancel).await?;
        events.emit(NewEvent::new(Lifecycle::CheckFinished(run.clone())));
        runs.push(run);
    }
    Ok(runs)
}

async fn run_one(
    round: u32,
    check: &CheckSpec,
    cx: &CheckEnv<'_>,
    events: &Arc<dyn EventSink>,
    cancel: &CancellationToken,
) -> Result<CheckRun, ChecksError> {
    let name = check.display_name();
    let own = Duration::from_secs(check.timeout_secs());
    let left = cx.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ChecksError::TaskTimeout(name));
    }
    let mut spec = ProcessSpec::new("sh")
        .arg("-c")
        .arg(&check.command)
        .cwd(cx.dir)
        .timeout(own.min(left))
        .kill_grace(cx.kill_grace)
        .max_output_bytes(check.max_output_bytes())
        .long_lines(LongLines::Split)
        .mask_lines(cx.mask.clone())
        .record_group(cx.record.clone());
    spec.env = cx
        .env
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
    let mut output = Output::default();
    let sink = events.clone();
    let outcome = run_process(
        spec,
        &mut |stream: OutputStream, line: &str| {
            output.push(line);
            sink.emit(NewEvent::log(stream.as_str(), line));
        },
        cancel,
    )
    .await
    .map_err(|e| ChecksError::Spawn(name.clone(), e))?;
    let killed = match outcome.killed {
        Some(KillReason::Canceled) => return Err(ChecksError::Canceled),
        // The check's limit was the task's remaining time: the task timed out, not the check.
        Some(KillReason::Timeout) if own > left => return Err(ChecksError::TaskTimeout(name)),
        Some(k) => Some(k.as_str().to_string()),
        None => None,
    };
    Ok(CheckRun {
        round,
        name,
        passed: outcome.success(),
        exit_code: outcome.exit_code,
        killed,
        duration_ms: outcome.duration.as_millis() as u64,
        output_tail: output.tail(),
        failed_tests: output.failed_tests,
    })
}

/// The end of a check's output and the failing tests seen in all of it.
#[derive(Default)]
struct Output {
    lines: VecDeque<String>,
    bytes: usize,
    failed_tests: Vec<String>,
}

impl Output {
    fn push(&mut self, line: &str) {
        if let Some(t) = failed_test(line)
            && self.failed_tests.len() < MAX_FAILED_TESTS
            && !self.failed_tests.iter().any(|x| x == t)
        {
            self.failed_tests.push(t.to_string());
        }
        let line = cut_start(line, OUTPUT_TAIL_BYTES);
        self.bytes += line.len() + 1;
        self.lines.push_back(line.to_string());
        // `bytes` counts a line break after every line; the tail has one fewer, so a last line
        // of the whole size is kept (not dropped with everything before it).
        while self.bytes > OUTPUT_TAIL_BYTES + 1
            && let Some(old) = self.lines.pop_front()
        {
            self.bytes -= old.len() + 1;
        }
    }

    fn tail(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The last `max` bytes of `s`, on a character boundary.
fn cut_start(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A failing test's name, when `line` reports one in a format agentpool recognises: cargo
/// test (`test a::b ... FAILED`), nextest (`FAIL [ 0.1s] crate a::b`), pytest (`FAILED
/// path::test - …`), go test (`--- FAIL: TestX (0.00s)`) and TAP / node's runner (`not ok 3 - x`).
pub fn failed_test(line: &str) -> Option<&str> {
    let l = line.trim();
    if let Some(rest) = l.strip_prefix("test ")
        && let Some(name) = rest.strip_suffix(" ... FAILED")
    {
        return Some(name.trim());
    }
    if let Some(rest) = l.strip_prefix("FAIL [")
        && let Some((_, after)) = rest.split_once(']')
    {
        return after.split_whitespace().last();
    }
    if let Some(rest) = l.strip_prefix("FAILED ") {
        return rest.split(" - ").next().map(str::trim).filter(|s| !s.is_empty());
    }
    if let Some(rest) = l.strip_prefix("--- FAIL: ") {
        return rest.split_whitespace().next();
    }
    if let Some(rest) = l.strip_prefix("not ok ") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
        let name = rest.strip_prefix("- ").unwrap_or(rest);
        let name = name.split(" # ").next().unwrap_or(name).trim();
        return (!name.is_empty()).then_some(name);
    }
    None
}

/// The prompt of feedback round `round`: the failing checks with the end of their output.
/// `original` is the task's prompt, repeated when the agent cannot resume its session and so
/// starts without the conversation so far.
pub fn feedback_prompt(
    failing: &[&CheckRun],
    checks: &[CheckSpec],
    round: u32,
    max_rounds: u32,
    original: Option<&str>,
) -> String {
    let mut p = String::new();
    if let Some(task) = original {
        p.push_str("You are continuing work on this task; the workspace holds your earlier changes.\n\n");
        p.push_str("The task:\n");
        p.push_str(task);
        p.push_str("\n\n");
    }
    p.push_str(&format!(
        "The checks that run after you finish failed. This is round {round} of {max_rounds}. \
         Fix the code so that every check passes; do not weaken, skip or delete the checks.\n"
    ));
    for run in failing {
        let command = checks
            .iter()
            .find(|c| c.display_name() == run.name)
            .map(|c| c.command.as_str())
            .unwrap_or(run.name.as_str());
        let how = match (&run.killed, run.exit_code) {
            (Some(k), _) if k == "timeout" => "it was killed at its timeout".to_string(),
            (Some(k), _) => format!("it was killed ({})", k.replace('_', " ")),
            (None, Some(c)) => format!("exit code {c}"),
            (None, None) => "killed by a signal".to_string(),
        };
        p.push_str(&format!(
            "\n## Check `{}` failed ({how})\n\nCommand: `{command}`\n",
            run.name
        ));
        if !run.failed_tests.is_empty() {
            p.push_str(&format!("Failing tests: {}\n", run.failed_tests.join(", ")));
        }
        p.push_str("\nThe end of its output:\n```\n");
        p.push_str(&run.output_tail);
        p.push_str("\n```\n");
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_failing_tests_of_common_runners() {
        let cases = [
            ("test tests::adds ... FAILED", Some("tests::adds")),
            ("test tests::adds ... ok", None),
            (
                "        FAIL [   0.004s] mycrate tests::adds",
                Some("tests::adds"),
            ),
            (
                "FAILED tests/test_x.py::test_y - AssertionError: 1 != 2",
                Some("tests/test_x.py::test_y"),
            ),
            ("--- FAIL: TestAdd (0.00s)", Some("TestAdd")),
            ("not ok 3 - adds numbers", Some("adds numbers")),
            ("not ok 4 - skipped # SKIP", Some("skipped")),
            ("ok 1 - fine", None),
        ];
        for (line, want) in cases {
            assert_eq!(failed_test(line), want, "{line}");
        }
    }

    #[test]
    fn keeps_the_end_of_the_output() {
        let mut o = Output::default();
        for i in 0..2000 {
            o.push(&format!("line {i}"));
        }
        let tail = o.tail();
        assert!(tail.len() <= OUTPUT_TAIL_BYTES, "{}", tail.len());
        assert!(tail.ends_with("line 1999"));
        assert!(!tail.contains("line 1\n"));
        let mut o = Output::default();
        o.push(&"é".repeat(OUTPUT_TAIL_BYTES));
        assert!(o.tail().len() <= OUTPUT_TAIL_BYTES);
    }

    #[test]
    fn the_prompt_names_each_failing_check_with_its_output() {
        let run = CheckRun {
            round: 1,
            name: "unit".into(),
            passed: false,
            exit_code: Some(101),
            killed: None,
            duration_ms: 5,
            output_tail: "assertion failed: left == right".into(),
            failed_tests: vec!["tests::adds".into()],
        };
        let checks = [CheckSpec {
            name: Some("unit".into()),
            ..CheckSpec::command("cargo test")
        }];
        let p = feedback_prompt(&[&run], &checks, 2, 3, None);
        assert!(p.contains("round 2 of 3"), "{p}");
        assert!(p.contains("Check `unit` failed (exit code 101)"), "{p}");
        assert!(p.contains("Command: `cargo test`"), "{p}");
        assert!(p.contains("Failing tests: tests::adds"), "{p}");
        assert!(p.contains("assertion failed: left == right"), "{p}");
        assert!(!p.contains("The task:"));
        let fresh = feedback_prompt(&[&run], &checks, 2, 3, Some("fix the adder"));
        assert!(fresh.contains("The task:\nfix the adder"), "{fresh}");
    }
}
