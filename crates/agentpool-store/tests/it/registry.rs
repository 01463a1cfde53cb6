//! Workers, projects, credentials and tokens: the records around the queue.

use agentpool_core::project::ProjectSpec;
use agentpool_core::{TaskResult, WorkerStatus};
use agentpool_store::{StoreError, TokenRecord};

use crate::both;
use crate::harness::{Harness, cmd};

both!(
    workers_register_drain_and_deregister,
    projects_credentials_and_tokens_round_trip,
    profiles_round_trip,
    follow_up_resumes_the_earlier_session,
    a_workers_cache_report_is_kept_and_listed,
);

async fn a_workers_cache_report_is_kept_and_listed(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let before = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!(before.cache, None, "nothing reported yet");
    let report = agentpool_core::CacheStats {
        hits: 1,
        misses: 1,
        bytes: 40_960,
        mirrors: 1,
    };
    h.store.report_worker_cache(&w.id, &report).await.unwrap();
    // Heartbeats without a report keep it.
    h.store.heartbeat(&w.id, &[], crate::harness::TTL).await.unwrap();
    let listed = h.store.list_workers().await.unwrap();
    assert_eq!(listed[0].cache, Some(report));
    assert_eq!(
        h.store.get_worker(&w.id).await.unwrap().unwrap().cache,
        Some(report)
    );
    let unknown = agentpool_core::WorkerId::parse("nobody").unwrap();
    assert!(matches!(
        h.store.report_worker_cache(&unknown, &report).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn follow_up_resumes_the_earlier_session(h: Harness) {
    let w = h.worker("w", &["command"], &[]).await;
    let first = h.submit(cmd("first")).await;
    let c = w.claim(1).await.remove(0);
    assert_eq!(c.resume_session, None);
    w.complete_with(
        c.lease,
        TaskResult {
            session_id: Some("sess-1".into()),
            ..TaskResult::default()
        },
    )
    .await;
    h.store
        .enqueue(agentpool_core::TaskSpec {
            follow_up_of: Some(first),
            ..cmd("second")
        })
        .await
        .unwrap();
    let c = w.claim(1).await.remove(0);
    assert_eq!(c.resume_session.as_deref(), Some("sess-1"));
}

/// `sqlite::memory:` gives a private, working store (what embedded tests use).
#[tokio::test]
async fn in_memory_sqlite_store_works() {
    let store = agentpool_store::open_store("sqlite::memory:").await.unwrap();
    let id = store.enqueue(cmd("x")).await.unwrap().task.id;
    assert!(store.get_task(id).await.unwrap().is_some());
    store.ping().await.unwrap();
    let other = agentpool_store::open_store("sqlite::memory:").await.unwrap();
    assert!(
        other.get_task(id).await.unwrap().is_none(),
        "each memory store is private"
    );
}

async fn workers_register_drain_and_deregister(h: Harness) {
    let w = h.worker("w-1", &["command", "codex"], &[("zone", "a")]).await;
    let got = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!(got.status, WorkerStatus::Idle);
    assert_eq!(got.agent_names(), vec!["command", "codex"]);
    assert_eq!(got.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(got.slots, 4);
    h.store.enqueue(cmd("x")).await.unwrap();
    let c = w.claim(1).await.remove(0);
    assert_eq!(h.store.list_workers().await.unwrap()[0].running, 1);
    h.store.drain_worker(&w.id).await.unwrap();
    h.store.deregister_worker(&w.id).await.unwrap();
    let got = h.store.get_worker(&w.id).await.unwrap().unwrap();
    assert_eq!(got.status, WorkerStatus::Offline);
    // What it still held is rescued at once by maintenance.
    assert_eq!(h.store.requeue_expired().await.unwrap(), 1);
    assert!(matches!(
        h.store.complete(&w.id, c.lease, TaskResult::default()).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(
        h.store
            .get_worker(&agentpool_core::WorkerId::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

async fn projects_credentials_and_tokens_round_trip(h: Harness) {
    let spec = ProjectSpec {
        name: "web".into(),
        repo: "https://git.example.com/web.git".into(),
        default_base: Some("main".into()),
        slots: Some(3),
        default_agent: Some("claude-code".into()),
        allowed_agents: vec!["claude-code".into()],
        credentials: vec!["anthropic".into()],
        ..ProjectSpec::default()
    };
    let p = h.store.put_project(spec.clone()).await.unwrap();
    assert_eq!(p.spec, spec);
    let updated = ProjectSpec {
        slots: Some(1),
        ..spec.clone()
    };
    h.store.put_project(updated.clone()).await.unwrap();
    assert_eq!(h.store.get_project("web").await.unwrap().unwrap().spec, updated);
    assert_eq!(h.store.list_projects().await.unwrap().len(), 1);
    h.store.delete_project("web").await.unwrap();
    assert!(h.store.get_project("web").await.unwrap().is_none());
    assert!(matches!(
        h.store.delete_project("web").await,
        Err(StoreError::NotFound { .. })
    ));

    h.store.put_credential("anthropic", vec![1, 2, 3]).await.unwrap();
    h.store.put_credential("anthropic", vec![4, 5]).await.unwrap();
    assert_eq!(
        h.store.get_credential("anthropic").await.unwrap(),
        Some(vec![4, 5])
    );
    assert_eq!(
        h.store.list_credentials().await.unwrap(),
        vec!["anthropic".to_string()]
    );
    h.store.delete_credential("anthropic").await.unwrap();
    assert_eq!(h.store.get_credential("anthropic").await.unwrap(), None);

    let tok = TokenRecord {
        id: "t1".into(),
        name: "ci".into(),
        role: "submitter".into(),
        hash: "ab".repeat(32),
        created_at: h.clock.now(),
        revoked: false,
        projects: vec!["web".into(), "api".into()],
        expires_at: Some(h.clock.now() + chrono::Duration::days(30)),
        last_used_at: None,
    };
    h.store.create_token(tok.clone()).await.unwrap();
    assert!(matches!(
        h.store.create_token(tok.clone()).await,
        Err(StoreError::Conflict(_))
    ));
    let found = h.store.find_token(&tok.hash).await.unwrap().unwrap();
    assert_eq!(found.id, "t1");
    assert_eq!(found.role, "submitter");
    assert_eq!(found.projects, tok.projects);
    assert_eq!(
        found.expires_at.map(|t| t.timestamp_millis()),
        tok.expires_at.map(|t| t.timestamp_millis())
    );
    assert_eq!(found.last_used_at, None);
    // A use is noted, and a second within the interval does not move it.
    let used = h.clock.now();
    let minute = chrono::Duration::minutes(1);
    h.store.touch_token("t1", used, used - minute).await.unwrap();
    let later = used + chrono::Duration::seconds(30);
    h.store.touch_token("t1", later, later - minute).await.unwrap();
    let last = |t: TokenRecord| t.last_used_at.map(|t| t.timestamp_millis());
    let found = h.store.find_token(&tok.hash).await.unwrap().unwrap();
    assert_eq!(last(found), Some(used.timestamp_millis()));
    let much_later = used + chrono::Duration::minutes(2);
    h.store
        .touch_token("t1", much_later, much_later - minute)
        .await
        .unwrap();
    let found = h.store.find_token(&tok.hash).await.unwrap().unwrap();
    assert_eq!(last(found), Some(much_later.timestamp_millis()));
    h.store.revoke_token("t1").await.unwrap();
    assert!(h.store.find_token(&tok.hash).await.unwrap().unwrap().revoked);
    assert_eq!(h.store.list_tokens().await.unwrap().len(), 1);
}

async fn profiles_round_trip(h: Harness) {
    use agentpool_core::{AgentProfile, McpServer, Profile};
    let mut settings = AgentProfile {
        model: Some("m".into()),
        ..AgentProfile::default()
    };
    settings
        .env
        .insert("ANTHROPIC_BASE_URL".into(), "http://x".into());
    settings.mcp_servers.insert(
        "tools".into(),
        McpServer {
            command: "node".into(),
            args: vec!["s.js".into()],
            ..McpServer::default()
        },
    );
    let p = Profile {
        name: "eu".into(),
        settings,
    };
    h.store.put_profile(&p).await.unwrap();
    assert_eq!(h.store.get_profile("eu").await.unwrap(), Some(p.clone()));
    let mut q = p.clone();
    q.settings.max_turns = Some(3);
    h.store.put_profile(&q).await.unwrap();
    let other = Profile {
        name: "a".into(),
        settings: AgentProfile::default(),
    };
    h.store.put_profile(&other).await.unwrap();
    assert_eq!(h.store.list_profiles().await.unwrap(), vec![other, q]);
    h.store.delete_profile("eu").await.unwrap();
    assert_eq!(h.store.get_profile("eu").await.unwrap(), None);
    assert!(matches!(
        h.store.delete_profile("eu").await,
        Err(StoreError::NotFound { .. })
    ));
}
