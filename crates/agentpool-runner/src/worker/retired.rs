//! Agents a running worker stops offering: one whose provider refused the worker's own key
//! for `unhealthy_after` tasks in a row. One agent's key says nothing of another's, so the
//! worker registers again without that agent (the queue hands it no more of its tasks, which
//! wait for a worker that runs it) and goes on with the others, saying on its beats which
//! agent it no longer runs and why. Only a new key mends a refused one, and it comes with a
//! restart. A worker left with no agent that runs prompts turns unhealthy instead
//! ([`Shared::can_retire`]). The same registration again carries agents' versions that came
//! after the worker first registered ([`Shared::learn_versions`]).

use std::collections::BTreeMap;

use agentpool_core::{AgentInfo, TaskKind};

use super::*;

impl Shared {
    /// What the worker registers with now: without the agents it retired.
    pub(super) fn registration(&self) -> WorkerRegistration {
        self.registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_retired(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.retired.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_retired(&self, agent: &str) -> bool {
        self.lock_retired().contains_key(agent)
    }

    /// Whether `agent` can be retired and leave the worker another agent that runs prompts;
    /// without one it would claim nothing it was set up for, so it turns unhealthy instead.
    pub(super) fn can_retire(&self, agent: &str) -> bool {
        let retired = self.lock_retired();
        self.pipeline
            .agents()
            .names()
            .iter()
            .any(|n| n != agent && !retired.contains_key(n))
    }

    /// Which agents the worker no longer runs, and why: said on its beats while it claims.
    pub(super) fn retired_note(&self) -> Option<String> {
        let retired = self.lock_retired();
        if retired.is_empty() {
            return None;
        }
        let note = retired
            .iter()
            .map(|(agent, why)| format!("runs no {agent} tasks: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        Some(agentpool_core::render::clip(
            &note,
            agentpool_core::protocol::MAX_STATUS_MESSAGE,
        ))
    }

    /// Stop offering `agent`, for `why`: register again without it, before the report of the
    /// task that made it so goes (and frees a slot for another claim).
    pub(super) async fn retire(&self, agent: &str, why: String) {
        tracing::error!(
            %agent,
            "{why}; this worker runs no more {agent} tasks until it is restarted, and goes on \
             with its other agents"
        );
        self.lock_retired().insert(agent.to_owned(), why);
        self.registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .agents
            .retain(|a| a.name != agent);
        self.register_again().await;
        self.beat_now.notify_one();
    }

    /// The versions of the worker's agents, known after it registered (a `--version` slow to
    /// answer): registered again with them. A retired agent stays out.
    pub(super) async fn learn_versions(&self, infos: Vec<AgentInfo>) {
        let mut learned = false;
        {
            let mut reg = self.registration.lock().unwrap_or_else(|e| e.into_inner());
            for agent in &mut reg.agents {
                if let Some(known) = infos.iter().find(|i| i.name == agent.name)
                    && known.version != agent.version
                {
                    agent.version.clone_from(&known.version);
                    learned = true;
                }
            }
        }
        if learned {
            self.register_again().await;
        }
    }

    /// Register with what the worker offers now. Not heard (the server is unreachable), the
    /// heartbeat loop tries again at every beat: until the server hears it, it may hand over
    /// a task of a retired agent, which goes back unstarted ([`Shared::fit_agent`]).
    pub(super) async fn register_again(&self) {
        let _one_at_a_time = self.registering.lock().await;
        match self.api.register(self.registration()).await {
            Ok(_) => self.register_pending.store(false, Ordering::SeqCst),
            Err(e) => {
                tracing::warn!("could not register again with the agents this worker runs now: {e}");
                self.register_pending.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Make `work` one this worker runs now: a task of a retired agent is not (the reason is
    /// returned, for handing it back); one that names no agent runs the worker's first agent
    /// that is not retired, rather than its default.
    pub(super) fn fit_agent(&self, work: &mut ClaimedWork) -> Result<(), String> {
        let spec = &mut work.claimed.task.spec;
        let retired = self.lock_retired();
        if retired.is_empty() || spec.kind != TaskKind::Agent {
            return Ok(());
        }
        match &spec.agent {
            Some(agent) => match retired.get(agent) {
                Some(why) => Err(format!("this worker no longer runs {agent} tasks: {why}")),
                None => Ok(()),
            },
            None => {
                let names = self.pipeline.agents().names();
                let first = names.into_iter().find(|n| !retired.contains_key(n));
                spec.agent = Some(first.ok_or("this worker runs no agent any more")?);
                Ok(())
            }
        }
    }
}
