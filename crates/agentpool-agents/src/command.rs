//! The `command` adapter: a task's shell command run as `sh -c COMMAND` in the workspace, with
//! the same process control as the agents; stdout and stderr lines become `log` events.

use std::sync::Arc;

use agentpool_core::{ErrorClass, NewEvent};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::cli::{self, AgentConfig, CliRun, LineParser, Summary};
use crate::events;
use crate::{AgentError, AgentOutcome, AgentRequest, Capabilities, CodeAgent, EventSink};

pub const NAME: &str = "command";

/// Lines of stdout kept as the outcome's final text.
const TAIL_LINES: usize = 20;

pub struct Command {
    cfg: AgentConfig,
}

impl Command {
    pub fn new(cfg: AgentConfig) -> Self {
        Self { cfg }
    }
}

#[async_trait]
impl CodeAgent for Command {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: NAME,
            resume: false,
            cost: false,
            max_turns: false,
        }
    }

    async fn version(&self) -> Option<String> {
        None
    }

    fn validate(&self, req: &AgentRequest) -> Result<(), AgentError> {
        cli::validate_common(req, "command")?;
        if req.resume_session.is_some() {
            return Err(AgentError::Invalid("a command cannot resume a session".into()));
        }
        Ok(())
    }

    /// `request.prompt` is the command.
    async fn run(
        &self,
        request: AgentRequest,
        events: Arc<dyn EventSink>,
        cancel: CancellationToken,
    ) -> Result<AgentOutcome, AgentError> {
        self.validate(&request)?;
        let env = cli::agent_env(&self.cfg, &request, &[])?;
        let run = CliRun {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), request.prompt.clone().into()],
            env,
            request,
        };
        cli::run_cli(run, Box::new(Parser::default()), events, cancel).await
    }
}

/// Every stdout line is a log event; the last lines are the final text.
#[derive(Debug, Default)]
pub struct Parser {
    summary: Summary,
    tail: Vec<String>,
}

impl LineParser for Parser {
    fn summary(&self) -> &Summary {
        &self.summary
    }

    fn parse_line(&mut self, line: &str) -> Vec<NewEvent> {
        if self.tail.len() == TAIL_LINES {
            self.tail.remove(0);
        }
        self.tail.push(line.to_string());
        self.summary.final_text = Some(self.tail.join("\n"));
        vec![events::log("stdout", line)]
    }

    fn requires_result(&self) -> bool {
        false
    }

    /// A failing command is the command's failure, whatever its output says (a test printing
    /// "401" is not an authentication problem).
    fn classify_exit(&self, code: Option<i32>) -> Option<ErrorClass> {
        match code {
            Some(0) => None,
            _ => Some(ErrorClass::AgentError),
        }
    }
}
