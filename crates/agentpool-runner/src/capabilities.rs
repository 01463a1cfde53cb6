//! The agents a worker registers with, and their versions. Each version comes from the CLI's
//! `--version`, and most agent CLIs are Node.js programs that take seconds to start (Gemini
//! CLI's takes about four on an idle machine): they are asked all at once, and registration
//! waits for them only briefly, so that a worker or `agentpool up` takes tasks at once rather
//! than after its slowest CLI started (a one-task pool does not ask). A version not known by then
//! is registered later: the worker registers again when the last probe has answered
//! ([`Probed::finish`]). Versions are for display only; claims go by agent name.

use std::time::Duration;

use agentpool_agents::Registry;
use agentpool_core::AgentInfo;

/// How long registration waits for the agents' versions by default.
pub const VERSION_WAIT: Duration = Duration::from_millis(500);

/// The agents as probed so far: every one, with the versions known in time.
pub struct Probed {
    pub infos: Vec<AgentInfo>,
    /// Probes still running: the index of their agent in `infos`, and the probe.
    late: Vec<(usize, tokio::task::JoinHandle<Option<String>>)>,
}

impl Probed {
    /// Whether every probe had answered in time.
    pub fn is_complete(&self) -> bool {
        self.late.is_empty()
    }

    /// Every agent, with the versions of the late probes too once they answered (each probe
    /// has its own time limit, so this ends).
    pub async fn finish(mut self) -> Vec<AgentInfo> {
        for (at, probe) in self.late {
            self.infos[at].version = probe.await.ok().flatten();
        }
        self.infos
    }
}

/// `command` (always offered) and every agent of `agents`, with the versions known within
/// `wait`; with no `wait`, versions are not asked.
pub async fn agent_infos(agents: &Registry, wait: Option<Duration>) -> Probed {
    let Some(wait) = wait else {
        let mut infos = vec![AgentInfo::unversioned(agentpool_core::spec::COMMAND_AGENT)];
        infos.extend(agents.names().into_iter().map(AgentInfo::unversioned));
        return Probed {
            infos,
            late: Vec::new(),
        };
    };
    let deadline = tokio::time::Instant::now() + wait;
    // Spawned, not joined in a set: a probe past the wait must not be aborted.
    let probes: Vec<(String, Option<tokio::task::JoinHandle<Option<String>>>)> = agents
        .names()
        .into_iter()
        .map(|name| {
            let probe = agents
                .get(&name)
                .map(|a| tokio::spawn(async move { a.version().await }));
            (name, probe)
        })
        .collect();
    let mut infos = vec![AgentInfo::unversioned(agentpool_core::spec::COMMAND_AGENT)];
    let mut late = Vec::new();
    for (name, probe) in probes {
        let Some(mut probe) = probe else { continue };
        let version = match tokio::time::timeout_at(deadline, &mut probe).await {
            Ok(v) => v.ok().flatten(),
            Err(_) => {
                late.push((infos.len(), probe));
                None
            }
        };
        infos.push(AgentInfo { name, version });
    }
    if !late.is_empty() {
        let names: Vec<&str> = late.iter().map(|(at, _)| infos[*at].name.as_str()).collect();
        tracing::debug!(
            agents = %names.join(", "),
            "registering before these agents' `--version` answered; their versions follow"
        );
    }
    Probed { infos, late }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn command_is_always_offered() {
        let probed = agent_infos(&Registry::new(), Some(VERSION_WAIT)).await;
        assert!(probed.is_complete());
        let infos = probed.finish().await;
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].name, agentpool_core::spec::COMMAND_AGENT);
    }
}
