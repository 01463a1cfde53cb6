//! The agent's runs within one task: the first run and the feedback rounds that follow failing
//! checks (docs/checks.md), with tokens and cost added up across them.

use std::sync::Arc;
use std::time::Instant;

use agentpool_agents::{AgentRequest, CodeAgent, EventSink};
use agentpool_core::{CheckRun, ErrorClass, Lifecycle, NewEvent, TaskResult};

use super::{Failed, Pipeline, Scope, failed, snapshot};
use crate::budget::CostWatch;
use crate::checks;
use crate::git::Git;

/// Longest final answer a task's result keeps (the rest is cut, and said to be).
pub(crate) const MAX_FINAL_TEXT: usize = 64 * 1024;

impl Pipeline {
    /// Run the agent once (the first run or a feedback round), adding what it reports to
    /// `result`: tokens and cost add up across rounds, the last round's text, session and exit
    /// code win.
    pub(super) async fn run_agent(
        &self,
        agent: &Arc<dyn CodeAgent>,
        prompt: String,
        resume_session: Option<String>,
        scope: &Scope<'_>,
        result: &mut TaskResult,
    ) -> Result<(), Failed> {
        let Scope {
            work,
            ws,
            env,
            deadline,
            events,
            cancel,
            ..
        } = *scope;
        let spec = &work.claimed.task.spec;
        let name = agent.capabilities().name.to_string();
        result.agent = Some(name.clone());
        events.emit(NewEvent::new(Lifecycle::AgentStarted { agent: name }));
        let remaining = deadline.saturating_duration_since(Instant::now());
        // The session is kept under this task; a feedback round resumes it as this task's
        // previous round left it, the first run as the task followed up left it.
        let task = work.claimed.task.id;
        let own_round = resume_session.is_some() && result.session_id == resume_session;
        let restore_from = if own_round { Some(task) } else { spec.follow_up_of };
        // Each run reports its own cost (of a resumed session, what it had cost before is left
        // out), so this round may spend what earlier rounds left.
        let spent_before = result.cost_usd.unwrap_or(0.0);
        let left = spec.max_cost_usd.map(|limit| (limit - spent_before).max(0.0));
        let req = AgentRequest {
            prompt,
            workdir: ws.dir.clone(),
            model: spec.model.clone(),
            max_turns: spec.max_turns,
            max_cost_usd: left,
            timeout: remaining,
            resume_session,
            keep_as: Some(task.to_string()),
            restore_from: restore_from.map(|t| t.to_string()),
            env: env
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "PATH" | "HOME" | "LANG"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            home: ws.home.clone(),
            max_output_bytes: self.cfg.max_output_bytes,
            local_login: self.cfg.local_logins.get(agent.capabilities().name).cloned(),
            profile: spec.profile_settings.clone().unwrap_or_default(),
            record: Some(self.group_record(work.claimed.task.id)),
        };
        // Backstop for the adapter's own timeout: cancel it once time is up (plus grace).
        let agent_cancel = cancel.token().child_token();
        let backstop = agent_cancel.clone();
        let grace = self.cfg.kill_grace;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(remaining + grace).await;
            backstop.cancel();
        });
        let watch = spec.max_cost_usd.zip(left).map(|(limit, left)| {
            if !agent.capabilities().cost {
                events.emit(NewEvent::log(
                    "agentpool",
                    format!(
                        "{} reports tokens but no cost: max_cost_usd ${limit} cannot be enforced",
                        agent.capabilities().name
                    ),
                ));
            }
            Arc::new(CostWatch::new(events.clone(), left, agent_cancel.clone()))
        });
        let sink: Arc<dyn EventSink> = match &watch {
            Some(w) => w.clone(),
            None => events.clone(),
        };
        let ran = agent.run(req, sink, agent_cancel.clone()).await;
        timer.abort();
        if let Some(w) = &watch
            && let Some(cost) = w.exceeded(ran.as_ref().ok().and_then(|o| o.cost_usd))
        {
            if let Ok(o) = &ran {
                result.usage.add(&o.usage);
                if o.session_id.is_some() {
                    result.session_id = o.session_id.clone();
                }
                result.num_turns = o.num_turns;
            }
            let total = spent_before + cost;
            result.cost_usd = Some(total);
            let limit = spec.max_cost_usd.unwrap_or_default();
            return Err(failed(
                ErrorClass::BudgetExceeded,
                format!(
                    "the agent's reported cost ${total:.6} passed the task's limit ${limit}; it was stopped"
                ),
            ));
        }
        let timed_out = agent_cancel.is_cancelled() && !cancel.token().is_cancelled();
        let outcome = ran.map_err(|e| failed(e.class(), e.to_string()))?;
        // Cut, as the answer can be as long as the agent's output (tens of MiB): the result
        // travels in one report the server takes up to 2 MiB of, and is the commit's message.
        result.final_text = outcome
            .final_text
            .as_deref()
            .map(|t| agentpool_agents::events::truncate(t, MAX_FINAL_TEXT));
        if outcome.session_id.is_some() {
            result.session_id = outcome.session_id.clone();
        }
        result.num_turns = match (result.num_turns, outcome.num_turns) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        result.usage.add(&outcome.usage);
        result.cost_usd = match (result.cost_usd, outcome.cost_usd) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        result.exit_code = outcome.exit_code;
        if cancel.token().is_cancelled() {
            return Err(failed(ErrorClass::Canceled, "canceled"));
        }
        if timed_out {
            return Err(failed(ErrorClass::Timeout, "the task's timeout was hit"));
        }
        if outcome.is_error {
            let class = outcome.error_class.unwrap_or(ErrorClass::AgentError);
            return Err(Failed {
                class,
                message: outcome
                    .error_message
                    .clone()
                    .unwrap_or_else(|| "the agent reported an error".into()),
                retry_after: outcome.retry_after,
                // The provider refused a key the task did not bring: the worker's own.
                worker_fault: class == ErrorClass::AuthFailed && !brings_agent_credentials(work),
            });
        }
        Ok(())
    }

    /// Run the task's checks; while some fail and rounds are left, run the agent again with
    /// their output (resuming its session where it can). Returns the failure message when
    /// checks still fail after the last round (docs/checks.md).
    ///
    /// Checks that pass but change the work (a formatter, `eslint --fix`) run once more on
    /// what they changed, so that the commit is a tree every check passed on; checks that
    /// change it again fail.
    pub(super) async fn check_rounds(
        &self,
        agent: Option<&Arc<dyn CodeAgent>>,
        git: &Git,
        scope: &Scope<'_>,
        result: &mut TaskResult,
    ) -> Result<Option<String>, Failed> {
        let spec = &scope.work.claimed.task.spec;
        let list = spec.checks();
        if list.is_empty() {
            return Ok(None);
        }
        let max_rounds = if agent.is_some() { spec.max_rounds() } else { 1 };
        let cx = checks::CheckEnv {
            dir: &scope.ws.dir,
            env: scope.env,
            record: self.group_record(scope.work.claimed.task.id),
            kill_grace: self.cfg.kill_grace,
            deadline: scope.deadline,
            mask: scope.mask.clone(),
        };
        let mut round = 1;
        // Whether this pass re-runs the checks on what the last pass changed.
        let mut again = false;
        loop {
            let before = self.snapshot(git, scope).await;
            let runs = checks::run_round(round, list, &cx, scope.events, scope.cancel.token())
                .await
                .map_err(|e| match e {
                    checks::ChecksError::Canceled => failed(ErrorClass::Canceled, "canceled"),
                    checks::ChecksError::TaskTimeout(_) => failed(ErrorClass::Timeout, e.to_string()),
                    checks::ChecksError::Spawn(..) => failed(ErrorClass::AgentError, e.to_string()),
                })?;
            result.rounds = Some(round);
            result.checks.extend(runs.iter().cloned());
            let failing: Vec<&CheckRun> = runs.iter().filter(|r| !r.passed).collect();
            result.checks_passed = Some(failing.is_empty());
            if failing.is_empty() {
                let Some(files) = self.changed_by_checks(git, scope, before).await else {
                    return Ok(None);
                };
                if again {
                    result.checks_passed = Some(false);
                    return Ok(Some(format!(
                        "the checks changed files again when run on their own changes: {} \
                         (files a check writes each time belong in .gitignore)",
                        files.join(", ")
                    )));
                }
                again = true;
                scope
                    .events
                    .emit(NewEvent::new(Lifecycle::ChecksChangedFiles { round, files }));
                continue;
            }
            again = false;
            let names: Vec<String> = failing.iter().map(|r| r.name.clone()).collect();
            let Some(agent) = agent.filter(|_| round < max_rounds) else {
                let after = if max_rounds == 1 {
                    String::new()
                } else {
                    format!(" after {round} rounds")
                };
                return Ok(Some(format!("checks failed{after}: {}", names.join(", "))));
            };
            round += 1;
            // Resume the conversation where the agent can; otherwise a fresh run in the same
            // workspace that is told the task again.
            let resume = result.session_id.clone().filter(|_| agent.capabilities().resume);
            let original = resume.is_none().then(|| spec.prompt.as_deref().unwrap_or(""));
            let prompt = checks::feedback_prompt(&failing, list, round, max_rounds, original);
            scope.events.emit(NewEvent::new(Lifecycle::FeedbackRound {
                round,
                failing: names,
                resumed: resume.is_some(),
            }));
            self.run_agent(agent, prompt, resume, scope, result).await?;
        }
    }
}

impl Pipeline {
    /// The workspace's tree now, or `None` when it cannot be read (the agent broke the
    /// repository: committing it will say so).
    async fn snapshot(&self, git: &Git, scope: &Scope<'_>) -> Option<String> {
        match snapshot::worktree_tree(git, scope.ws, scope.cancel.token()).await {
            Ok(tree) => Some(tree),
            Err(e) => {
                tracing::debug!(error = %e, "the workspace's tree could not be read");
                None
            }
        }
    }

    /// The files the checks just changed, if any: the workspace's tree now against `before`.
    async fn changed_by_checks(
        &self,
        git: &Git,
        scope: &Scope<'_>,
        before: Option<String>,
    ) -> Option<Vec<String>> {
        let before = before?;
        let after = self.snapshot(git, scope).await?;
        if after == before {
            return None;
        }
        let files = snapshot::changed_paths(git, scope.ws, &before, &after, scope.cancel.token())
            .await
            .ok()?;
        (!files.is_empty()).then_some(files)
    }
}

/// Say in the task's log when it follows up a task whose agent session it does not resume: the
/// server resumes that session only when what the earlier task did is in the workspace this
/// task starts from (docs/guarantees.md), so that the agent is not told of changes that are not
/// there.
pub(super) fn say_if_not_resumed(work: &crate::api::ClaimedWork, events: &Arc<dyn EventSink>) {
    let claimed = &work.claimed;
    if let Some(earlier) = claimed.task.spec.follow_up_of
        && claimed.resume_session.is_none()
    {
        events.emit(NewEvent::log(
            "agentpool",
            format!(
                "task {earlier}'s session is not resumed: what that task did is not in this \
                 workspace (it pushed nothing this task starts from), or it left no session; the \
                 agent starts a new one"
            ),
        ));
    }
}

/// Whether the task brought credentials of its own for its agent (any besides the git token):
/// then a refused key is the task's, not the worker's.
fn brings_agent_credentials(work: &crate::api::ClaimedWork) -> bool {
    work.credentials
        .iter()
        .any(|(name, _)| !super::GIT_TOKEN_CREDENTIALS.contains(&name))
}
