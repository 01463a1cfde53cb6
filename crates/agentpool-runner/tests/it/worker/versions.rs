//! Agent versions at registration: a worker takes tasks before its slowest agent CLI has
//! answered `--version`, and registers again with that version once it has.

use std::os::unix::fs::PermissionsExt;

use agentpool_agents::{AgentConfig, Registry};

use super::*;

/// Gemini CLI's `--version` takes seconds to answer; here a stand-in for it answers only once
/// the test writes its version into a FIFO, so that "not yet" is certain.
#[tokio::test]
async fn a_worker_takes_tasks_before_a_slow_agent_version_and_registers_it_later() {
    let env = env().await;
    let fifo = env.dir.path().join("gemini-version");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let slow = env.dir.path().join("slow-gemini");
    std::fs::write(
        &slow,
        format!("#!/bin/sh\n[ \"$1\" = --version ] && cat '{}'\n", fifo.display()),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = config(&env, "w1", TOKEN);
    c.agents = Registry::builtin(&AgentConfig {
        bin_dir: Some(crate::agents::bin_dir()),
        binaries: [("gemini".to_string(), slow)].into(),
        ..Default::default()
    });
    c.version_wait = Some(Duration::from_millis(300));
    let (registered, mut told) = tokio::sync::mpsc::unbounded_channel();
    c.on_registered = Some(registered);
    let w = start(c, api(&env.store, Duration::from_secs(30)).await);
    let id = told.recv().await.expect("the worker registers");

    let version_of = async |agent: &str| {
        let w = env.store.get_worker(&id).await.unwrap().unwrap();
        let info = w.agents.iter().find(|a| a.name == agent).cloned();
        info.unwrap_or_else(|| panic!("{agent} is registered: {:?}", w.agents))
            .version
    };
    assert_eq!(version_of("gemini").await, None);
    // It runs tasks meanwhile.
    let task = enqueue_command(&env, "echo ran > ran.txt").await;
    let done = finished(&env.store, task.id).await;
    assert_eq!(done.task.state, TaskState::Succeeded, "{done:?}");

    let write = tokio::task::spawn_blocking(move || std::fs::write(&fifo, "0.99.0\n"));
    write.await.unwrap().unwrap();
    until("the late version to be registered", async || {
        version_of("gemini").await.filter(|v| v == "0.99.0")
    })
    .await;
    // The other agents' versions are there too, and the registration kept the worker as it
    // was: idle, with the task it ran counted.
    let claude = version_of("claude-code").await.expect("claude-code's version");
    assert!(claude.contains("Claude Code"), "{claude}");
    let worker = env.store.get_worker(&id).await.unwrap().unwrap();
    assert_eq!(worker.status, agentpool_core::WorkerStatus::Idle, "{worker:?}");
    assert_eq!(w.stop().await.succeeded, 1);
}
