//! Workers limited to projects: they claim only those projects' tasks (never one of no
//! project), are woken only for them, and a task that only such workers of other projects
//! could run says so.

use std::time::Duration;

use agentpool_core::TaskSpec;
use agentpool_core::protocol::WaitReason;
use agentpool_store::Wake;

use crate::both;
use crate::harness::{Harness, cmd, ids};

both!(
    a_worker_limited_to_projects_claims_only_their_tasks,
    a_waiting_worker_limited_to_projects_is_woken_only_for_their_tasks,
    a_task_only_workers_of_other_projects_could_run_says_so,
);

/// A command task of `project`.
fn of(project: &str, command: &str) -> TaskSpec {
    TaskSpec {
        project: Some(project.into()),
        ..cmd(command)
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

async fn a_worker_limited_to_projects_claims_only_their_tasks(h: Harness) {
    let limited = h
        .worker_of("web-runner", &["command"], &[], &["web", "docs"])
        .await;
    let any = h.worker("any", &["command"], &[]).await;
    let none = h.submit(cmd("no project")).await;
    let api = h.submit(of("api", "api")).await;
    let web = h.submit(of("web", "web")).await;
    let docs = h.submit(of("docs", "docs")).await;
    let w = h.store.get_worker(&limited.id).await.unwrap().unwrap();
    assert_eq!(w.projects, ["web", "docs"]);
    assert_eq!(sorted(ids(&limited.claim(10).await)), sorted(vec![web, docs]));
    assert!(
        limited.claim(10).await.is_empty(),
        "another project's task, or one of none"
    );
    assert_eq!(sorted(ids(&any.claim(10).await)), sorted(vec![none, api]));

    // Registered again without projects, it takes any task.
    let unlimited = h.worker("web-runner", &["command"], &[]).await;
    assert!(
        h.store
            .get_worker(&unlimited.id)
            .await
            .unwrap()
            .unwrap()
            .projects
            .is_empty()
    );
    let later = h.submit(cmd("later")).await;
    assert_eq!(ids(&unlimited.claim(1).await), [later]);
}

async fn a_waiting_worker_limited_to_projects_is_woken_only_for_their_tasks(h: Harness) {
    let web = h.worker_of("web-runner", &["command"], &[], &["web"]).await;
    let mut waiter = h.store.claim_waiter(&web.filter(1));
    assert!(web.claim(1).await.is_empty());
    h.submit(of("api", "api")).await;
    h.submit(cmd("no project")).await;
    assert!(
        matches!(waiter.wait(Duration::ZERO).await, Wake::TimedOut),
        "woken for a task it may not take"
    );
    let id = h.submit(of("web", "web")).await;
    assert!(matches!(waiter.wait(Duration::from_secs(600)).await, Wake::Claim));
    assert_eq!(ids(&web.claim(1).await), [id]);
    waiter.finish(false);
}

async fn a_task_only_workers_of_other_projects_could_run_says_so(h: Harness) {
    h.worker_of("web-runner", &["command"], &[], &["web"]).await;
    let waiting = |id| {
        let store = h.store.clone();
        async move { store.get_task(id).await.unwrap().unwrap().waiting }
    };
    let api = h.submit(of("api", "api")).await;
    let reason = WaitReason::NoWorkerCanRun {
        agent: Some("command".into()),
        labels: Default::default(),
        other_projects: true,
        project: Some("api".into()),
        unhealthy: 0,
        local_repos_not_read: false,
    };
    assert_eq!(
        reason.no_worker_offers().unwrap(),
        "agent command for project api"
    );
    assert_eq!(waiting(api).await, [reason]);
    let none = h.submit(cmd("no project")).await;
    let [reason] = &waiting(none).await[..] else {
        panic!("one reason")
    };
    assert_eq!(
        reason.no_worker_offers().unwrap(),
        "agent command for tasks of no project"
    );
    // A task of its project waits for it to be free, not for a worker that could run it.
    let web = h.submit(of("web", "web")).await;
    assert_eq!(waiting(web).await, [WaitReason::NoWorker]);
}
