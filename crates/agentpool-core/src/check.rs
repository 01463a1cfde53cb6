//! Checks: shell commands (tests, linters) a task runs in its workspace after the agent and
//! before commit; what one check is ([`CheckSpec`]), what one run of it recorded ([`CheckRun`]),
//! and their validation. The runner runs them and feeds failures back to the agent
//! (docs/checks.md).

use serde::{Deserialize, Serialize};

use crate::spec::ValidationError;

/// Feedback rounds when a task names none: the agent's first run plus two resumptions.
pub const DEFAULT_MAX_ROUNDS: u32 = 3;
/// The most rounds a task may ask for.
pub const MAX_ROUNDS: u32 = 20;
/// A check's own time limit when it names none (the task's timeout still bounds it).
pub const DEFAULT_CHECK_TIMEOUT_SECS: u64 = 10 * 60;
/// A check's output limit when it names none; the check is killed beyond it.
pub const DEFAULT_CHECK_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;
/// The largest output limit a check may ask for.
pub const MAX_CHECK_OUTPUT_BYTES: u64 = 256 * 1024 * 1024;
/// The most checks one task (or project) may name.
pub const MAX_CHECKS: usize = 20;

/// One check: a shell command run with `sh -c` in the task's workspace. It passes when it
/// exits 0 within its timeout and output limit.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// How events and results name it; the command itself when absent.
    pub name: Option<String>,
    pub command: String,
    /// Seconds; [`DEFAULT_CHECK_TIMEOUT_SECS`] when absent.
    pub timeout_secs: Option<u64>,
    /// Bytes of stdout+stderr; [`DEFAULT_CHECK_OUTPUT_BYTES`] when absent.
    pub max_output_bytes: Option<u64>,
}

impl CheckSpec {
    /// A check named after its command, with default limits.
    pub fn command(command: impl Into<String>) -> Self {
        Self {
            name: None,
            command: command.into(),
            timeout_secs: None,
            max_output_bytes: None,
        }
    }

    /// The name events and results use: the given name, else the command's first line (cut
    /// to 100 characters).
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self
                .command
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .chars()
                .take(100)
                .collect(),
        }
    }

    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs.unwrap_or(DEFAULT_CHECK_TIMEOUT_SECS)
    }

    pub fn max_output_bytes(&self) -> u64 {
        self.max_output_bytes.unwrap_or(DEFAULT_CHECK_OUTPUT_BYTES)
    }
}

/// Validate a list of checks; errors name fields under `field` (`checks`, say).
pub fn validate_checks(checks: &[CheckSpec], field: &str, max_timeout_secs: u64) -> Vec<ValidationError> {
    let mut errs = Vec::new();
    if checks.len() > MAX_CHECKS {
        errs.push(ValidationError::new(
            field,
            format!("at most {MAX_CHECKS} checks"),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in checks.iter().enumerate() {
        let at = |f: &str| format!("{field}[{i}].{f}");
        if c.command.trim().is_empty() {
            errs.push(ValidationError::new(at("command"), "must not be blank"));
        } else if c.command.len() > 10_000 {
            errs.push(ValidationError::new(at("command"), "is longer than 10000 bytes"));
        }
        if let Some(n) = &c.name
            && (n.trim().is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control))
        {
            errs.push(ValidationError::new(
                at("name"),
                "must be 1-100 characters without control characters",
            ));
        }
        if !names.insert(c.display_name()) {
            errs.push(ValidationError::new(
                at("name"),
                format!("{:?} names another check too", c.display_name()),
            ));
        }
        if let Some(t) = c.timeout_secs
            && (t == 0 || t > max_timeout_secs)
        {
            errs.push(ValidationError::new(
                at("timeout_secs"),
                format!("must be between 1 and {max_timeout_secs} seconds"),
            ));
        }
        if let Some(b) = c.max_output_bytes
            && (b == 0 || b > MAX_CHECK_OUTPUT_BYTES)
        {
            errs.push(ValidationError::new(
                at("max_output_bytes"),
                format!("must be between 1 and {MAX_CHECK_OUTPUT_BYTES}"),
            ));
        }
    }
    errs
}

/// Validate a round limit given on a task or project.
pub fn validate_max_rounds(max_rounds: Option<u32>, field: &str) -> Option<ValidationError> {
    max_rounds
        .filter(|m| !(1..=MAX_ROUNDS).contains(m))
        .map(|_| ValidationError::new(field, format!("must be between 1 and {MAX_ROUNDS}")))
}

/// One run of one check in one round: a lifecycle event (`check_finished`) and an entry of
/// the task result's `checks`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRun {
    /// 1 for the checks after the agent's first run, n for those after its (n-1)-th resumption.
    pub round: u32,
    pub name: String,
    pub passed: bool,
    /// Absent when the check did not exit by itself (killed at its timeout, say).
    pub exit_code: Option<i32>,
    /// Why agentpool ended it: `timeout` or `output_limit`.
    pub killed: Option<String>,
    pub duration_ms: u64,
    /// The end of its output (stdout and stderr interleaved), at most a few KB.
    #[serde(default)]
    pub output_tail: String,
    /// Names of failing tests recognised in its output (cargo, nextest, pytest, go test, TAP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tests: Vec<String>,
}

impl CheckRun {
    /// A one-line description for people.
    pub fn summary(&self) -> String {
        let how = match (&self.killed, self.exit_code) {
            (Some(k), _) => format!("killed: {}", k.replace('_', " ")),
            (None, Some(c)) => format!("exit {c}"),
            (None, None) => "no exit code".into(),
        };
        let verdict = if self.passed { "passed" } else { "failed" };
        let secs = self.duration_ms as f64 / 1000.0;
        format!(
            "round {}: {} {verdict} ({how}, {secs:.1}s)",
            self.round, self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_default_to_the_command_and_must_be_unique() {
        let a = CheckSpec::command("cargo test\n--more");
        assert_eq!(a.display_name(), "cargo test");
        let errs = validate_checks(&[a.clone(), a], "checks", 3600);
        assert!(errs.iter().any(|e| e.field == "checks[1].name"), "{errs:?}");
    }

    #[test]
    fn limits_are_validated_per_field() {
        let c = CheckSpec {
            name: Some(String::new()),
            command: " ".into(),
            timeout_secs: Some(0),
            max_output_bytes: Some(MAX_CHECK_OUTPUT_BYTES + 1),
        };
        let fields: Vec<_> = validate_checks(&[c], "checks", 60)
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "checks[0].command",
                "checks[0].name",
                "checks[0].timeout_secs",
                "checks[0].max_output_bytes"
            ]
        );
        assert!(validate_max_rounds(Some(0), "max_rounds").is_some());
        assert!(validate_max_rounds(Some(MAX_ROUNDS + 1), "max_rounds").is_some());
        assert!(validate_max_rounds(Some(2), "max_rounds").is_none());
    }

    #[test]
    fn summary_says_how_it_ended() {
        let r = CheckRun {
            round: 2,
            name: "tests".into(),
            passed: false,
            exit_code: None,
            killed: Some("timeout".into()),
            duration_ms: 1500,
            output_tail: String::new(),
            failed_tests: vec![],
        };
        assert_eq!(r.summary(), "round 2: tests failed (killed: timeout, 1.5s)");
    }
}
