//! What every CLI adapter shares: finding the binary, validating a request, building the
//! agent's private environment, redacting secrets, and the loop that runs the process, feeds
//! stdout lines to the adapter's pure [`LineParser`] and turns the end of the run into an
//! [`AgentOutcome`] with an error class.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentpool_core::{ErrorClass, NewEvent, Redactor};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::events;
use crate::process::{
    KillReason, LongLines, OutputStream, ProcessOutcome, ProcessSpec, base_env, run_process,
};
use crate::{AgentError, AgentOutcome, AgentRequest, EventSink};

/// Where adapters look for their CLI.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    /// Checked before PATH (e.g. `tools/agents/node_modules/.bin`).
    pub bin_dir: Option<PathBuf>,
    /// Per-agent binary overrides by agent name (`claude-code` → `/opt/claude`).
    pub binaries: BTreeMap<String, PathBuf>,
    /// Where adapters keep session transcripts between runs (under the task that ran each, with
    /// the totals the CLI had reported; see [`crate::kept`]), so that a follow-up task — which
    /// gets a fresh home and workspace — can resume the earlier session on this worker. `None`:
    /// a directory under the system temp dir.
    pub session_dir: Option<PathBuf>,
    /// How long a kept session copy is kept after it was last written; `None`:
    /// [`crate::kept::DEFAULT_KEEP_FOR`].
    pub keep_sessions_for: Option<Duration>,
}

/// The directory the variable `name` names; none when it is unset or empty (`VAR=` in a shell
/// or a manifest means "not set", not the current directory).
pub fn dir_from_env(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl AgentConfig {
    /// `AGENTPOOL_AGENT_BIN_DIR`, `AGENTPOOL_AGENT_SESSION_DIR` and
    /// `AGENTPOOL_AGENT_SESSION_DAYS` (a whole number of days; anything else is the default)
    /// from the environment.
    pub fn from_env() -> Self {
        let days = std::env::var("AGENTPOOL_AGENT_SESSION_DAYS")
            .ok()
            .and_then(|d| d.trim().parse::<u64>().ok())
            .filter(|d| *d > 0);
        Self {
            bin_dir: dir_from_env("AGENTPOOL_AGENT_BIN_DIR"),
            binaries: BTreeMap::new(),
            session_dir: dir_from_env("AGENTPOOL_AGENT_SESSION_DIR"),
            keep_sessions_for: days.map(|d| Duration::from_secs(d.saturating_mul(24 * 3600))),
        }
    }

    /// The directory for `agent`'s kept sessions.
    pub fn sessions_of(&self, agent: &str) -> PathBuf {
        self.session_dir
            .clone()
            .unwrap_or_else(|| {
                // SAFETY: getuid has no preconditions and cannot fail.
                let uid = unsafe { libc::getuid() };
                std::env::temp_dir().join(format!("agentpool-agent-sessions-{uid}"))
            })
            .join(agent)
    }

    /// The binary for `agent`, named `exe`: an explicit override, else `bin_dir/exe`, else PATH.
    pub fn find(&self, agent: &str, exe: &str) -> Option<PathBuf> {
        if let Some(p) = self.binaries.get(agent) {
            return Some(p.clone());
        }
        if let Some(dir) = &self.bin_dir {
            let p = dir.join(exe);
            if is_executable(&p) {
                return Some(p);
            }
        }
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(exe))
                .find(|p| is_executable(p))
        })
    }

    /// The PATH agents run with: the bin dir first (node CLIs find their siblings), then the
    /// worker's PATH (node, git, sh).
    pub fn child_path(&self) -> String {
        let mut parts: Vec<PathBuf> = Vec::new();
        if let Some(d) = &self.bin_dir {
            parts.push(d.clone());
        }
        if let Some(p) = std::env::var_os("PATH") {
            parts.extend(std::env::split_paths(&p));
        } else {
            parts.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(PathBuf::from));
        }
        std::env::join_paths(parts)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
    }
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The shortest timeout accepted: below this no agent even starts.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks every adapter applies before starting anything (INVALID_TASK on failure).
pub fn validate_common(req: &AgentRequest, prompt_name: &str) -> Result<(), AgentError> {
    if req.prompt.trim().is_empty() {
        return Err(AgentError::Invalid(format!("{prompt_name} is required")));
    }
    if req.prompt.len() > 1 << 20 {
        return Err(AgentError::Invalid(format!("{prompt_name} is longer than 1 MiB")));
    }
    let max = Duration::from_secs(agentpool_core::spec::MAX_TIMEOUT_SECS);
    if req.timeout.is_zero() || req.timeout > max {
        return Err(AgentError::Invalid(format!(
            "timeout must be between {}s and {}s",
            MIN_TIMEOUT.as_secs(),
            max.as_secs()
        )));
    }
    if let Some(m) = &req.model {
        validate_model(m)?;
    }
    if req.max_turns == Some(0) {
        return Err(AgentError::Invalid("max_turns must be at least 1".into()));
    }
    if let Some(s) = &req.resume_session {
        let ok = !s.is_empty()
            && s.len() <= 200
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(AgentError::Invalid(format!(
                "session id to resume is malformed: {s:?}"
            )));
        }
    }
    if req.timeout < MIN_TIMEOUT {
        return Err(AgentError::NoTimeLeft(req.timeout));
    }
    if !req.workdir.is_dir() {
        return Err(AgentError::Invalid(format!(
            "workspace {} is not a directory",
            req.workdir.display()
        )));
    }
    if req.max_output_bytes == 0 {
        return Err(AgentError::Invalid("max_output_bytes must be positive".into()));
    }
    Ok(())
}

/// A model name as the CLIs take it: `claude-sonnet-4-5`, `gpt-5.5`, `provider/model`.
pub fn validate_model(m: &str) -> Result<(), AgentError> {
    let ok = !m.is_empty()
        && m.len() <= 200
        && !m.starts_with('-')
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!("unknown or malformed model {m:?}")))
    }
}

/// The environment an agent starts with: PATH, locale, a private HOME/TMPDIR/XDG dirs under
/// `req.home`, then `defaults` (the adapter's telemetry/update switches), then the request's
/// own variables (keys, endpoints), which win.
pub fn agent_env(
    cfg: &AgentConfig,
    req: &AgentRequest,
    defaults: &[(&str, String)],
) -> Result<BTreeMap<String, String>, AgentError> {
    let home = &req.home;
    let tmp = home.join("tmp");
    for d in [
        home.to_path_buf(),
        tmp.clone(),
        home.join(".config"),
        home.join(".cache"),
        home.join(".local/share"),
        home.join(".local/state"),
    ] {
        std::fs::create_dir_all(&d)?;
    }
    let mut env = base_env(Some(&cfg.child_path()));
    let s = |p: &Path| p.to_string_lossy().into_owned();
    env.insert("HOME".into(), s(home));
    env.insert("TMPDIR".into(), s(&tmp));
    env.insert("XDG_CONFIG_HOME".into(), s(&home.join(".config")));
    env.insert("XDG_CACHE_HOME".into(), s(&home.join(".cache")));
    env.insert("XDG_DATA_HOME".into(), s(&home.join(".local/share")));
    env.insert("XDG_STATE_HOME".into(), s(&home.join(".local/state")));
    env.insert("NO_COLOR".into(), "1".into());
    env.insert("CI".into(), "1".into());
    for (k, v) in defaults {
        env.insert((*k).to_string(), v.clone());
    }
    for (k, v) in &req.env {
        env.insert(k.clone(), v.clone());
    }
    Ok(env)
}

/// What a parser has learned from the lines so far: the outcome as the lines tell it (its
/// `error_class` is what the agent's own signals suggest; the exit, the duration and the final
/// class are added by [`finish`]), and whether a final result line came (a run without one did
/// not finish normally).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub outcome: AgentOutcome,
    pub saw_result: bool,
}

impl Summary {
    /// Record the run's session id unless one is already known (the CLI repeats it on later
    /// lines); true when `id` is the first, so the caller reports the session start once.
    pub fn set_session_id_once(&mut self, id: &str) -> bool {
        if self.outcome.session_id.is_some() {
            return false;
        }
        self.outcome.session_id = Some(id.to_string());
        true
    }

    /// Record an error: keep the first message, and the most specific class seen.
    pub fn error(&mut self, class: Option<ErrorClass>, message: &str) {
        self.outcome.is_error = true;
        if self.outcome.error_message.is_none() && !message.is_empty() {
            self.outcome.error_message = Some(message.to_string());
        }
        let class = class.or_else(|| classify_text(message));
        if let Some(c) = class
            && (self.outcome.error_class.is_none()
                || self.outcome.error_class == Some(ErrorClass::AgentError))
        {
            self.outcome.error_class = Some(c);
        }
    }
}

/// An adapter's output parser: pure (no I/O), one stdout line at a time.
pub trait LineParser: Send {
    /// Events for one line. Never empty for a non-blank line: a line that is not a JSON
    /// object, or an object [`parse_object`](Self::parse_object) makes nothing of, becomes a
    /// `raw` event (hinted with the object's `type`). Never panics.
    fn parse_line(&mut self, line: &str) -> Vec<NewEvent> {
        let Some(v) = json_object(line) else {
            return vec![events::raw(line)];
        };
        let out = self.parse_object(line, &v);
        if out.is_empty() {
            let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
            vec![events::raw_json(line, Some(ty))]
        } else {
            out
        }
    }
    /// Events for one JSON object line (`v`, parsed from `line`); empty when it means nothing
    /// to the adapter.
    fn parse_object(&mut self, line: &str, v: &Value) -> Vec<NewEvent>;
    fn summary(&self) -> &Summary;
    /// Why the run cannot end well any more, said by its lines (e.g. OpenCode asking again and
    /// again for answers that are cut off): the run is stopped now and fails `AGENT_ERROR` with
    /// this message, rather than running to the task's timeout.
    fn gave_up(&self) -> Option<&str> {
        None
    }
    /// Adapter-specific reading of the exit code after the run (e.g. Gemini's exit codes).
    fn classify_exit(&self, _code: Option<i32>) -> Option<ErrorClass> {
        None
    }
    /// Whether a clean run must end with a final result line; a run that exits 0 without one
    /// (a crash that still exits 0, a truncated stream) is an agent error.
    fn requires_result(&self) -> bool {
        true
    }
}

/// What an adapter hands the shared runner.
pub struct CliRun {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: BTreeMap<String, String>,
    /// Kept for the outcome; the run itself uses `request`.
    pub request: AgentRequest,
    /// Values masked in the run's events and outcome besides those of variables whose names
    /// look secret: the tokens of a lent login ([`crate::login::Borrowed::secrets`]).
    pub secrets: Vec<String>,
}

pub use crate::error_text::{class_of_status, classify_text, retry_after_in, status_in};

/// The longest output line parsed; the rest of a longer line is dropped (still counted against
/// the output limit), so one runaway line cannot exhaust memory. As large as the default output
/// limit, because a line is one JSON event and a cut one no longer parses: a long final answer
/// is one line (Claude Code's `result` carries the whole text next to the run's cost and
/// usage), and cutting it turned a finished run into a failure with its spend uncounted. One
/// line at a time is held; the events built from it cut their texts for storage
/// ([`events::MAX_FIELD_CHARS`]).
pub const MAX_LINE_BYTES: usize = crate::DEFAULT_MAX_OUTPUT_BYTES as usize;

/// Lines of stderr kept to explain a failure.
const STDERR_TAIL: usize = 20;

/// Run the CLI, stream its events, build the outcome.
pub async fn run_cli(
    run: CliRun,
    mut parser: Box<dyn LineParser>,
    sink: Arc<dyn EventSink>,
    cancel: CancellationToken,
) -> Result<AgentOutcome, AgentError> {
    let mut redactor = Redactor::from_env(&run.env);
    redactor.extend(run.secrets);
    let spec = ProcessSpec::new(run.program)
        .args(run.args)
        .cwd(&run.request.workdir)
        .envs(run.env)
        .timeout(run.request.timeout)
        .max_output_bytes(run.request.max_output_bytes)
        .max_line_bytes(MAX_LINE_BYTES)
        .long_lines(LongLines::Truncate)
        .kill_grace(Duration::from_secs(5));
    let spec = match run.request.record.clone() {
        Some(r) => spec.record_group(r),
        None => spec,
    };
    let mut stderr_tail: Vec<String> = Vec::new();
    // Stopped by the caller's cancel, or by the parser giving up on the run.
    let stop = cancel.child_token();
    let mut on_line = |stream: OutputStream, line: &str| match stream {
        OutputStream::Stdout => {
            if line.trim().is_empty() {
                return;
            }
            for e in parser.parse_line(line) {
                sink.emit(redactor.event(e));
            }
            if parser.gave_up().is_some() {
                stop.cancel();
            }
        }
        OutputStream::Stderr => {
            let line = events::without_colour(line);
            if stderr_tail.len() == STDERR_TAIL {
                stderr_tail.remove(0);
            }
            stderr_tail.push(line.to_string());
            sink.emit(redactor.event(events::log("stderr", &line)));
        }
    };
    let exit = run_process(spec, &mut on_line, &stop).await?;
    let mut outcome = finish(parser.as_ref(), &exit, &stderr_tail);
    if let Some(why) = parser.gave_up().filter(|_| !cancel.is_cancelled()) {
        outcome.is_error = true;
        outcome.error_class = Some(ErrorClass::AgentError);
        outcome.error_message = Some(why.to_string());
    }
    Ok(redact_outcome(&redactor, outcome))
}

fn redact_outcome(r: &Redactor, mut o: AgentOutcome) -> AgentOutcome {
    o.final_text = o.final_text.map(|t| r.redact(&t));
    o.error_message = o.error_message.map(|t| r.redact(&t));
    o
}

/// The outcome of a finished run from the parser's summary, the exit, and stderr.
pub fn finish(parser: &dyn LineParser, exit: &ProcessOutcome, stderr_tail: &[String]) -> AgentOutcome {
    let s = parser.summary();
    let said = &s.outcome;
    let mut o = AgentOutcome {
        duration_ms: exit.duration.as_millis() as u64,
        exit_code: exit.exit_code,
        // Decided below, from the agent's signals, the exit and stderr.
        error_class: None,
        ..said.clone()
    };
    match exit.killed {
        Some(KillReason::Timeout) => {
            o.is_error = true;
            o.error_class = Some(ErrorClass::Timeout);
            o.error_message = Some(format!("timed out after {}s", exit.duration.as_secs()));
            return o;
        }
        Some(KillReason::Canceled) => {
            o.is_error = true;
            o.error_class = Some(ErrorClass::Canceled);
            o.error_message = Some("canceled".into());
            return o;
        }
        Some(KillReason::OutputLimit) => {
            o.is_error = true;
            o.error_class = Some(ErrorClass::AgentError);
            o.error_message = Some(format!(
                "output exceeded the limit of {} bytes",
                exit.output_bytes
            ));
            return o;
        }
        None => {}
    }
    if !said.is_error && exit.exit_code == Some(0) {
        if s.saw_result || !parser.requires_result() {
            return o;
        }
        o.is_error = true;
        o.error_class = Some(ErrorClass::AgentError);
        o.error_message = Some("the agent exited without reporting a final result".into());
        return o;
    }
    o.is_error = true;
    let stderr = stderr_tail.join("\n");
    o.error_class = said
        .error_class
        .filter(|c| *c != ErrorClass::AgentError)
        .or_else(|| parser.classify_exit(exit.exit_code))
        .or_else(|| said.error_message.as_deref().and_then(classify_text))
        .or_else(|| classify_text(&stderr))
        .or(Some(ErrorClass::AgentError));
    if o.error_message.is_none() {
        o.error_message = Some(if !stderr.trim().is_empty() {
            events::truncate(stderr.trim(), events::MAX_FIELD_CHARS)
        } else {
            match (exit.exit_code, exit.signal) {
                (Some(c), _) => format!("agent exited with code {c}"),
                (None, Some(sig)) => format!("agent died of signal {sig}"),
                _ => "agent failed".into(),
            }
        });
    }
    o
}

/// `-p PROMPT --output-format stream-json`, then `flags`: a headless run printing one JSON
/// object per line, as Claude Code spells it and Gemini CLI (which follows its flags) too.
pub fn stream_json_run(prompt: &str, flags: &[&str]) -> Vec<OsString> {
    ["-p", prompt, "--output-format", "stream-json"]
        .iter()
        .chain(flags)
        .map(OsString::from)
        .collect()
}

/// `flag value` for each option that is set, in order (a CLI's optional arguments).
pub fn options<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<String>)>) -> Vec<OsString> {
    pairs
        .into_iter()
        .filter_map(|(flag, value)| Some([flag.into(), value?.into()]))
        .flatten()
        .collect()
}

/// Parse a line as a JSON object; `None` for anything else (a raw line).
pub fn json_object(line: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(line.trim()) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_are_set_become_flag_value_pairs_in_order() {
        let a = options([
            ("--model", Some("m".into())),
            ("--max-turns", None),
            ("resume", Some("s p".into())),
        ]);
        assert_eq!(a, ["--model", "m", "resume", "s p"]);
    }

    #[test]
    fn models_are_validated() {
        assert!(validate_model("claude-sonnet-4-5").is_ok());
        assert!(validate_model("stub/stub-model").is_ok());
        assert!(validate_model("--dangerous").is_err());
        assert!(validate_model("a b").is_err());
        assert!(validate_model("").is_err());
    }
}
