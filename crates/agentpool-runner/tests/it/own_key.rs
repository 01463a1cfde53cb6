//! A refused key counts against the worker only when the provider refuses the worker's own key
//! without anything the task chose: a task whose profile sends the agent to an endpoint that
//! answers 401 fails `AUTH_FAILED`, but cannot make the worker unhealthy.

use std::time::Duration;

use agentpool_agents::{AgentConfig, Registry};
use agentpool_core::{AgentProfile, ErrorClass, TaskState, WorkerId, WorkerStatus};
use agentpool_testkit::model::{ModelServer, Script, Step};

use super::agents::{agent_env, agent_task, bin_dir, finished_within};
use super::worker::{TOKEN, api, config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_points_its_agent_at_a_refusing_endpoint_does_not_strike_the_worker() {
    // The worker's own endpoint answers; the one the tasks' profile names refuses every key.
    let Some((env, own)) = agent_env("claude-code", [Step::answer("OK")]).await else {
        return;
    };
    let refusing = ModelServer::start(Script::new([Step::fail(401)])).await.unwrap();
    let elsewhere = refusing.env_for("claude-code")["ANTHROPIC_BASE_URL"].clone();
    let mut c = config(&env, "w1", TOKEN);
    c.agents = Registry::builtin(&AgentConfig {
        bin_dir: Some(bin_dir()),
        ..Default::default()
    });
    c.pipeline.extra_env = own.env_for("claude-code");
    c.unhealthy_after = 2;
    let w = start(c, api(&env.store, Duration::from_secs(30)).await);
    // More refusals than the worker takes before it turns unhealthy.
    for i in 0..3 {
        let mut spec = agent_task(&env, "claude-code", &format!("Task {i}"));
        spec.profile_settings = Some(AgentProfile {
            env: [("ANTHROPIC_BASE_URL".to_string(), elsewhere.clone())].into(),
            ..Default::default()
        });
        let id = env.store.enqueue(spec).await.unwrap().task.id;
        let done = finished_within(&env.store, id, Duration::from_secs(120)).await;
        assert_eq!(done.task.error_class, Some(ErrorClass::AuthFailed));
        let message = done.task.error_message.unwrap_or_default();
        assert!(message.contains("not this worker's fault"), "{message}");
    }
    assert!(
        refusing.agent_requests().len() >= 3,
        "the tasks' agent went where their profile said"
    );
    let worker = env
        .store
        .get_worker(&WorkerId::parse("w1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        worker.status,
        WorkerStatus::Unhealthy,
        "{:?}",
        worker.status_message
    );
    // Still claiming: a task without the profile runs on it.
    let spec = agent_task(&env, "claude-code", "Say OK");
    let id = env.store.enqueue(spec).await.unwrap().task.id;
    let done = finished_within(&env.store, id, Duration::from_secs(120)).await;
    assert_eq!(
        done.task.state,
        TaskState::Succeeded,
        "{:?}",
        done.task.error_message
    );
    let summary = w.stop().await;
    assert!(!summary.unhealthy);
}
