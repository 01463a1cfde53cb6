//! The agents a worker registers with, and their versions. Each version comes from the CLI's
//! `--version`, and most agent CLIs are Node.js programs that take seconds to start on a
//! loaded machine: they are asked all at once, and registration waits for them only briefly.
//! A version not known by then is left out (it is for display only; claims go by agent
//! name), and the probe still finishes in the background, so a later registration of this
//! process has it.

use std::time::Duration;

use agentpool_agents::Registry;
use agentpool_core::AgentInfo;

/// How long registration waits for the agents' versions.
pub const VERSION_BUDGET: Duration = Duration::from_secs(5);

/// `command` (always offered) and every agent of `agents`, with the versions known within
/// `budget`.
pub async fn agent_infos(agents: &Registry, budget: Duration) -> Vec<AgentInfo> {
    let deadline = tokio::time::Instant::now() + budget;
    // Spawned, not joined in a set: a probe past the budget must not be aborted.
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
        let Some(probe) = probe else { continue };
        let version = match tokio::time::timeout_at(deadline, probe).await {
            Ok(v) => v.ok().flatten(),
            Err(_) => {
                late.push(name.clone());
                None
            }
        };
        infos.push(AgentInfo { name, version });
    }
    if !late.is_empty() {
        tracing::info!(
            agents = %late.join(", "),
            "registering without these agents' versions: `--version` is slow to answer"
        );
    }
    infos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn command_is_always_offered() {
        let infos = agent_infos(&Registry::new(), VERSION_BUDGET).await;
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].name, agentpool_core::spec::COMMAND_AGENT);
    }
}
