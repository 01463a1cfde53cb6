//! Enqueue, idempotency, claim order and matching, and the many-claimer exactly-once check.

use std::collections::HashSet;
use std::time::Duration;

use agentpool_core::{TaskResult, TaskSpec, TaskState};

use crate::both;
use crate::harness::{Harness, cmd, failure, ids};

both!(
    enqueue_returns_a_queued_task,
    tasks_are_listed_by_a_set_of_projects,
    tasks_are_listed_by_the_agent_they_need,
    idempotency_key_returns_the_first_task,
    claim_takes_priority_then_fifo,
    claim_skips_tasks_scheduled_later,
    claim_matches_agent_and_labels,
    a_dedicated_worker_takes_only_the_tasks_dedicated_to_it,
    a_task_on_a_local_repository_waits_for_a_worker_that_reads_them,
    draining_worker_claims_nothing,
    eight_claimers_take_every_task_exactly_once,
    failure_requeues_with_backoff_then_finishes,
    retry_requeues_a_failed_task,
);

async fn enqueue_returns_a_queued_task(h: Harness) {
    let e = h.store.enqueue(cmd("true")).await.unwrap();
    assert!(e.created);
    assert_eq!(e.task.state, TaskState::Queued);
    assert_eq!(e.task.attempts, 0);
    assert_eq!(e.task.max_attempts, 3);
    let d = h.store.get_task(e.task.id).await.unwrap().unwrap();
    assert_eq!(d.task, e.task);
    assert_eq!(h.store.find_task(e.task.id).await.unwrap(), Some(e.task.clone()));
    let unknown = agentpool_core::TaskId::new();
    assert_eq!(h.store.find_task(unknown).await.unwrap(), None);
    assert!(h.store.get_task(unknown).await.unwrap().is_none());
    let batch = h
        .store
        .enqueue_batch((0..1000).map(|i| cmd(&format!("echo {i}"))).collect())
        .await
        .unwrap();
    assert_eq!(batch.len(), 1000);
    assert_eq!(batch[7].task.spec.command.as_deref(), Some("echo 7"));
    let counts = h.store.count_by_state().await.unwrap();
    assert_eq!(counts[&TaskState::Queued], 1001);
    let page = h
        .store
        .list_tasks(&agentpool_store::TaskFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 10);
    assert_eq!(page[0].id, batch[999].task.id, "newest first");
    let next = h
        .store
        .list_tasks(&agentpool_store::TaskFilter {
            limit: 10,
            before: Some(page[9].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next[0].id, batch[989].task.id);
}

/// A project token's listing: tasks of any of its projects, none of another or of none; an
/// empty set reaches nothing.
async fn tasks_are_listed_by_a_set_of_projects(h: Harness) {
    let of = |project: Option<&str>| TaskSpec {
        project: project.map(str::to_string),
        ..cmd("true")
    };
    let web = h.submit(of(Some("web"))).await;
    let docs = h.submit(of(Some("docs"))).await;
    h.submit(of(Some("api"))).await;
    h.submit(of(None)).await;
    let listed = |projects: Option<Vec<&str>>| {
        let store = h.store.clone();
        let filter = agentpool_store::TaskFilter {
            projects: projects.map(|ps| ps.into_iter().map(str::to_string).collect()),
            limit: 10,
            ..Default::default()
        };
        async move {
            let tasks = store.list_tasks(&filter).await.unwrap();
            tasks.iter().map(|t| t.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(Some(vec!["web", "docs"])).await, vec![docs, web]);
    assert_eq!(listed(Some(vec!["web"])).await, vec![web]);
    assert!(listed(Some(vec![])).await.is_empty());
    assert_eq!(listed(None).await.len(), 4);
    // With another filter: the project set narrows it further.
    let filter = agentpool_store::TaskFilter {
        project: Some("api".into()),
        projects: Some(vec!["web".into()]),
        limit: 10,
        ..Default::default()
    };
    assert!(h.store.list_tasks(&filter).await.unwrap().is_empty());
}

/// The agent filter: the tasks that need that agent, `command` for command tasks; an agent
/// task that names none (any worker's default) matches no agent.
async fn tasks_are_listed_by_the_agent_they_need(h: Harness) {
    let agent = |a: Option<&str>| TaskSpec {
        agent: a.map(str::to_string),
        ..TaskSpec::agent("https://git.example.com/r.git", "x", "do it")
    };
    let command = h.submit(cmd("true")).await;
    let codex = h.submit(agent(Some("codex"))).await;
    let codex2 = h.submit(agent(Some("codex"))).await;
    h.submit(agent(Some("claude-code"))).await;
    h.submit(agent(None)).await;
    let listed = |a: &str, state: Option<TaskState>| {
        let store = h.store.clone();
        let filter = agentpool_store::TaskFilter {
            agent: Some(a.to_string()),
            state,
            limit: 10,
            ..Default::default()
        };
        async move {
            let tasks = store.list_tasks(&filter).await.unwrap();
            tasks.iter().map(|t| t.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("codex", None).await, vec![codex2, codex]);
    assert_eq!(listed("command", None).await, vec![command]);
    assert!(listed("gemini", None).await.is_empty());
    // With another filter: both hold.
    assert_eq!(
        listed("codex", Some(TaskState::Queued)).await,
        vec![codex2, codex]
    );
    assert!(listed("codex", Some(TaskState::Running)).await.is_empty());
}

async fn idempotency_key_returns_the_first_task(h: Harness) {
    let spec = TaskSpec {
        idempotency_key: Some("delivery-1".into()),
        ..cmd("true")
    };
    let a = h.store.enqueue(spec.clone()).await.unwrap();
    let b = h.store.enqueue(spec.clone()).await.unwrap();
    assert!(a.created);
    assert!(!b.created);
    assert_eq!(a.task.id, b.task.id);
    let batch = h
        .store
        .enqueue_batch(vec![
            spec.clone(),
            TaskSpec {
                idempotency_key: Some("delivery-2".into()),
                ..cmd("true")
            },
            TaskSpec {
                idempotency_key: Some("delivery-2".into()),
                ..cmd("true")
            },
        ])
        .await
        .unwrap();
    assert_eq!(batch[0].task.id, a.task.id);
    assert!(!batch[0].created);
    assert!(batch[1].created);
    assert!(!batch[2].created);
    assert_eq!(batch[1].task.id, batch[2].task.id);
    assert_eq!(h.store.count_by_state().await.unwrap()[&TaskState::Queued], 2);

    // A key names one submission within its project: another project's (or no project's) task
    // of the same key is not this submission, alone or in a batch.
    let in_project = |p: &str| TaskSpec {
        project: Some(p.into()),
        ..spec.clone()
    };
    let web = h.store.enqueue(in_project("web")).await.unwrap();
    assert!(web.created);
    assert_ne!(web.task.id, a.task.id);
    let batch = h
        .store
        .enqueue_batch(vec![
            in_project("api"),
            in_project("web"),
            in_project("api"),
            spec.clone(),
        ])
        .await
        .unwrap();
    let got: Vec<(bool, Option<&str>)> = batch
        .iter()
        .map(|e| (e.created, e.task.spec.project.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (true, Some("api")),
            (false, Some("web")),
            (false, Some("api")),
            (false, None)
        ]
    );
    assert_eq!(batch[0].task.id, batch[2].task.id);
    assert_eq!(batch[1].task.id, web.task.id);
    assert_eq!(batch[3].task.id, a.task.id);
    assert_eq!(h.store.count_by_state().await.unwrap()[&TaskState::Queued], 4);
}

async fn claim_takes_priority_then_fifo(h: Harness) {
    let w = h.worker("w1", &["command"], &[]).await;
    let low1 = h.submit(cmd("low1")).await;
    let high = h
        .submit(TaskSpec {
            priority: 10,
            ..cmd("high")
        })
        .await;
    let low2 = h.submit(cmd("low2")).await;
    let c = w.claim(10).await;
    assert_eq!(ids(&c), vec![high, low1, low2]);
    for t in &c {
        assert_eq!(t.task.state, TaskState::Running);
        assert_eq!(t.attempt, 1);
        assert_eq!(t.task.worker_id.as_ref(), Some(&w.id));
    }
    assert!(w.claim(10).await.is_empty());
}

async fn claim_skips_tasks_scheduled_later(h: Harness) {
    let w = h.worker("w1", &["command"], &[]).await;
    let later = h
        .submit(TaskSpec {
            run_after: Some(h.clock.now() + chrono::Duration::seconds(60)),
            ..cmd("later")
        })
        .await;
    assert!(w.claim(1).await.is_empty());
    let d = h.store.get_task(later).await.unwrap().unwrap();
    assert!(matches!(
        d.waiting[0],
        agentpool_store::WaitReason::Scheduled { .. }
    ));
    h.clock.advance(Duration::from_secs(61));
    assert_eq!(ids(&w.claim(1).await), vec![later]);
}

async fn claim_matches_agent_and_labels(h: Harness) {
    let claude = h.worker("claude", &["claude-code"], &[]).await;
    let gpu = h
        .worker("gpu", &["codex", "claude-code"], &[("gpu", "yes"), ("zone", "a")])
        .await;
    let codex_task = h.submit(TaskSpec::agent("https://h/r", "codex", "p")).await;
    let gpu_task = h
        .submit(TaskSpec {
            labels: crate::harness::labels(&[("gpu", "yes")]),
            ..TaskSpec::agent("https://h/r", "claude-code", "p")
        })
        .await;
    let any_agent = h
        .submit(TaskSpec {
            agent: None,
            ..TaskSpec::agent("https://h/r", "x", "p")
        })
        .await;
    // A worker that runs commands only has no agent to give a prompt to: the task without
    // agent is not for it (nor, here, any other).
    let commands = h.worker("commands", &["command"], &[]).await;
    assert_eq!(ids(&commands.claim(10).await), Vec::new());
    let waiting = async |id| h.store.get_task(id).await.unwrap().unwrap().waiting;
    h.store.drain_worker(&commands.id).await.unwrap();
    let cmd_task = h.submit(cmd("true")).await;
    // claude-code only, no labels: only the task without agent.
    assert_eq!(ids(&claude.claim(10).await), vec![any_agent]);
    let got: HashSet<_> = ids(&gpu.claim(10).await).into_iter().collect();
    assert_eq!(got, HashSet::from([codex_task, gpu_task]));
    // No worker offers `command`: the task says why it waits.
    assert_eq!(
        waiting(cmd_task).await,
        vec![agentpool_store::WaitReason::NoWorkerCanRun {
            agent: Some("command".into()),
            labels: Default::default(),
            other_projects: false,
            project: None,
            unhealthy: 0,
            local_repos_not_read: false,
        }]
    );
    // One that does, busy or not: it waits for that worker to be free.
    h.worker("runner", &["command"], &[("zone", "b")]).await;
    assert_eq!(
        waiting(cmd_task).await,
        vec![agentpool_store::WaitReason::NoWorker]
    );
    // A label no worker online carries.
    let far = h
        .submit(TaskSpec {
            labels: crate::harness::labels(&[("zone", "c")]),
            ..cmd("true")
        })
        .await;
    let far_waits = agentpool_store::WaitReason::NoWorkerCanRun {
        agent: Some("command".into()),
        labels: crate::harness::labels(&[("zone", "c")]),
        other_projects: false,
        project: None,
        unhealthy: 0,
        local_repos_not_read: false,
    };
    assert_eq!(waiting(far).await, vec![far_waits.clone()]);
    assert_eq!(
        agentpool_store::WaitReason::needs(Some("command"), &crate::harness::labels(&[("zone", "c")])),
        "agent command with labels zone=c"
    );
    assert_eq!(
        agentpool_store::WaitReason::needs(None, &crate::harness::labels(&[("zone", "c")])),
        "any agent with labels zone=c"
    );
    // A worker with the label that is draining cannot take it either.
    let c = h.worker("zone-c", &["command"], &[("zone", "c")]).await;
    h.store.drain_worker(&c.id).await.unwrap();
    assert_eq!(waiting(far).await, vec![far_waits]);
    // Nor can an unhealthy one, and the task says it is there.
    let sick = h.worker("zone-c-2", &["command"], &[("zone", "c")]).await;
    h.store.mark_worker_unhealthy(&sick.id, None).await.unwrap();
    assert_eq!(
        waiting(far).await,
        vec![agentpool_store::WaitReason::NoWorkerCanRun {
            agent: Some("command".into()),
            labels: crate::harness::labels(&[("zone", "c")]),
            other_projects: false,
            project: None,
            unhealthy: 1,
            local_repos_not_read: false,
        }]
    );
    assert_eq!(
        waiting(far).await[0].no_worker_offers().as_deref(),
        Some("agent command with labels zone=c (1 that does is unhealthy)")
    );
}

/// A worker labelled `agentpool/dedicated=V` takes only the tasks labelled so, whether it
/// claims or waits to be woken (or handed a task) by their enqueue; and such a task goes to
/// no other worker.
async fn a_dedicated_worker_takes_only_the_tasks_dedicated_to_it(h: Harness) {
    use agentpool_core::spec::DEDICATED_LABEL;
    use agentpool_store::Wake;
    let dedicated = |v: &str| TaskSpec {
        labels: crate::harness::labels(&[(DEDICATED_LABEL, v)]),
        ..cmd(v)
    };
    let mine = h.worker("mine", &["command"], &[(DEDICATED_LABEL, "r1")]).await;
    let mut waiter = h.store.claim_waiter(&mine.filter(1));
    assert!(mine.claim(1).await.is_empty());
    let waiting = tokio::spawn(async move {
        let woken = waiter.wait(Duration::from_secs(600)).await;
        (woken, waiter)
    });
    // Queued while it waits: had the plain task fitted it, it would have been woken for it (or
    // handed it) first.
    let plain = h.submit(cmd("for anyone")).await;
    let other = h.submit(dedicated("r2")).await;
    let own = h.submit(dedicated("r1")).await;
    let (woken, waiter) = waiting.await.unwrap();
    let got = match woken {
        Wake::Handed(got) => got,
        Wake::Claim => mine.claim(1).await,
        Wake::TimedOut => panic!("the dedicated waiter was not woken for its task"),
    };
    assert_eq!(ids(&got), vec![own]);
    waiter.finish(false);
    assert_eq!(ids(&mine.claim(10).await), Vec::new());
    // Any other worker takes the plain task, and neither dedicated one.
    let anyone = h.worker("anyone", &["command"], &[]).await;
    assert_eq!(ids(&anyone.claim(10).await), vec![plain]);
    let waits = h.store.get_task(other).await.unwrap().unwrap().waiting;
    assert!(
        matches!(&waits[..], [agentpool_store::WaitReason::NoWorkerCanRun { .. }]),
        "{waits:?}"
    );
}

async fn a_task_on_a_local_repository_waits_for_a_worker_that_reads_them(h: Harness) {
    use agentpool_core::spec::LOCAL_REPOS_LABEL;
    let plain = h.worker("plain", &["command"], &[]).await;
    let local = h.submit(TaskSpec::command("/srv/repos/app", "true")).await;
    let remote = h.submit(cmd("true")).await;
    // The label is the task's own, in its spec, where the API shows it; a remote one has none.
    let spec = async |id| h.store.get_task(id).await.unwrap().unwrap().task.spec;
    assert_eq!(
        spec(local).await.labels,
        crate::harness::labels(&[(LOCAL_REPOS_LABEL, "true")])
    );
    assert!(spec(remote).await.labels.is_empty());
    // A worker that does not read local repositories takes only the other task...
    assert_eq!(ids(&plain.claim(10).await), vec![remote]);
    // ...and the one left says what it waits for, in words, and that this is all it lacks.
    let words = async || {
        let d = h.store.get_task(local).await.unwrap().unwrap();
        d.waiting[0].no_worker_offers()
    };
    assert_eq!(
        words().await.as_deref(),
        Some(
            "agent command on local repositories (those online that offer the rest do not read \
             local repositories: agentpool worker --allow-local-repos)"
        )
    );
    // With none online at all, there is no one to name.
    h.store.drain_worker(&plain.id).await.unwrap();
    assert_eq!(
        words().await.as_deref(),
        Some("agent command on local repositories")
    );
    // A worker that does (the runner registers the label for --allow-local-repos) takes it.
    let reads = h
        .worker("reads", &["command"], &[(LOCAL_REPOS_LABEL, "true")])
        .await;
    assert_eq!(ids(&reads.claim(10).await), vec![local]);
}

async fn draining_worker_claims_nothing(h: Harness) {
    let w = h.worker("w1", &["command"], &[]).await;
    h.store.enqueue(cmd("true")).await.unwrap();
    let drained = h.store.drain_worker(&w.id).await.unwrap();
    assert_eq!(drained.status, agentpool_core::WorkerStatus::Draining);
    assert!(w.claim(5).await.is_empty());
    let hb = h.store.heartbeat(&w.id, &[], crate::harness::TTL).await.unwrap();
    assert!(hb.drain);
    let unknown = agentpool_store::ClaimFilter {
        worker_id: agentpool_core::WorkerId::parse("nobody").unwrap(),
        ..w.filter(1)
    };
    assert!(matches!(
        h.store.claim(&unknown).await,
        Err(agentpool_store::StoreError::NotFound { .. })
    ));
}

async fn eight_claimers_take_every_task_exactly_once(h: Harness) {
    const N: usize = 10_000;
    for chunk in 0..(N / 1000) {
        h.store
            .enqueue_batch((0..1000).map(|i| cmd(&format!("t{chunk}-{i}"))).collect())
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for i in 0..8 {
        let w = h.worker(&format!("w{i}"), &["command"], &[]).await;
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let c = w.claim(25).await;
                if c.is_empty() {
                    break;
                }
                let items = c
                    .iter()
                    .map(|c| (c.lease, TaskResult::default()))
                    .collect::<Vec<_>>();
                let res = w.store.complete_batch(&w.id, items).await.unwrap();
                assert!(res.iter().all(|r| r.is_ok()), "a completion was refused");
                mine.extend(ids(&c));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for hd in handles {
        all.extend(hd.await.unwrap());
    }
    assert_eq!(all.len(), N, "claimed count");
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), N, "a task was claimed twice");
    let counts = h.store.count_by_state().await.unwrap();
    assert_eq!(counts[&TaskState::Succeeded], N as u64);
    assert_eq!(counts[&TaskState::Queued], 0);
    assert_eq!(counts[&TaskState::Running], 0);
}

async fn failure_requeues_with_backoff_then_finishes(h: Harness) {
    let w = h.worker("w1", &["command"], &[]).await;
    let id = h
        .submit(TaskSpec {
            max_attempts: Some(2),
            ..cmd("flaky")
        })
        .await;
    let c = w.claim(1).await;
    let fail = |msg: &str| failure(agentpool_core::ErrorClass::AgentError, msg);
    let out = w.fail(c[0].lease, fail("boom")).await;
    let agentpool_core::protocol::FailOutcome::Retrying {
        run_after,
        attempt,
        given_back,
    } = out
    else {
        panic!("expected a retry, got {out:?}");
    };
    assert_eq!((attempt, given_back), (1, false));
    assert!(run_after > h.clock.now());
    assert!(w.claim(1).await.is_empty(), "backoff must delay the retry");
    h.clock.advance(Duration::from_secs(3600));
    let c2 = w.claim(1).await;
    assert_eq!(c2[0].attempt, 2);
    assert!(c2[0].lease.token > c[0].lease.token);
    let out = w.fail(c2[0].lease, fail("boom again")).await;
    assert_eq!(
        out,
        agentpool_core::protocol::FailOutcome::Finished {
            state: TaskState::Failed
        }
    );
    let d = h.store.get_task(id).await.unwrap().unwrap();
    assert_eq!(d.task.state, TaskState::Failed);
    assert_eq!(d.task.error_class, Some(agentpool_core::ErrorClass::AgentError));
    assert_eq!(d.attempts_detail.len(), 2);
    assert!(
        d.attempts_detail
            .iter()
            .all(|a| a.outcome == agentpool_core::AttemptOutcome::Failed)
    );
    // Non-retryable classes finish at once.
    let id2 = h.submit(cmd("auth")).await;
    let c = w.claim(1).await;
    assert_eq!(c[0].task.id, id2);
    let out = w
        .fail(c[0].lease, failure(agentpool_core::ErrorClass::AuthFailed, "401"))
        .await;
    assert_eq!(
        out,
        agentpool_core::protocol::FailOutcome::Finished {
            state: TaskState::Failed
        }
    );
}

async fn retry_requeues_a_failed_task(h: Harness) {
    let w = h.worker("w1", &["command"], &[]).await;
    let id = h.submit(cmd("x")).await;
    let c = w.claim(1).await;
    w.fail(
        c[0].lease,
        failure(agentpool_core::ErrorClass::InvalidTask, "bad"),
    )
    .await;
    let t = h.store.retry(id).await.unwrap();
    assert_eq!(t.state, TaskState::Queued);
    assert!(t.error_class.is_none());
    // A fresh budget of the task's attempts (the default 3), numbered on from the one it had.
    assert_eq!((t.attempts, t.max_attempts), (1, 4));
    let c = w.claim(1).await;
    assert_eq!(c[0].attempt, 2);
    w.complete(c[0].lease).await;
    let d = h.store.get_task(id).await.unwrap().unwrap();
    let numbers: Vec<u32> = d.attempts_detail.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2]);
    assert!(matches!(
        h.store.retry(id).await,
        Err(agentpool_store::StoreError::Transition(_))
    ));
}
