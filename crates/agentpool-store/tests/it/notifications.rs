//! Notifications: each task end a notification wants is found once (by overlapping scans and
//! by two replicas), ends from before it existed are not, a retried task's new end is new; a
//! due delivery is taken by one replica at a time and tried again only when its attempt says.

use std::collections::HashSet;
use std::time::Duration;

use agentpool_core::notification::{DeliveryState, Format, NotificationSpec};
use agentpool_core::{ErrorClass, TaskId, TaskSpec, TaskState};
use agentpool_store::StoreError;
use agentpool_store::notifications::DeliveryAttempt;

use crate::both;
use crate::harness::{Harness, cmd, failure, labels};

both!(
    a_notification_finds_each_end_it_wants_once,
    a_label_filter_finds_only_the_tasks_that_carry_all_its_labels,
    a_due_delivery_is_taken_by_one_replica_until_its_attempt_is_recorded,
);

const LOOKBACK_MS: i64 = 30_000;

fn on(states: &[TaskState], project: Option<&str>) -> NotificationSpec {
    NotificationSpec {
        url: "https://hooks.example.com/agentpool".into(),
        on: states.to_vec(),
        project: project.map(Into::into),
        labels: Default::default(),
        secret_credential: None,
        format: Format::Json,
    }
}

fn in_project(project: Option<&str>) -> TaskSpec {
    TaskSpec {
        project: project.map(Into::into),
        ..cmd("make")
    }
}

/// Run a task of `project` to `end`: claimed and completed, claimed and failed (not to be
/// retried), or canceled while queued.
async fn ended(h: &Harness, project: Option<&str>, end: TaskState) -> TaskId {
    let id = h.submit(in_project(project)).await;
    finish(h, id, end).await;
    id
}

async fn finish(h: &Harness, id: TaskId, end: TaskState) {
    if end == TaskState::Canceled {
        h.store.cancel(id).await.unwrap();
        return;
    }
    let w = h.worker("w1", &["command"], &[]).await;
    let claimed = w.claim(1).await;
    assert_eq!(claimed.len(), 1);
    let lease = claimed[0].lease;
    assert_eq!(lease.task_id, id);
    match end {
        TaskState::Succeeded => w.complete(lease).await,
        _ => {
            w.fail(lease, failure(ErrorClass::AuthFailed, "no key")).await;
        }
    }
}

async fn a_notification_finds_each_end_it_wants_once(h: Harness) {
    h.project_with_slots("web", 4).await;
    // Ended before the notification existed: not told.
    ended(&h, Some("web"), TaskState::Failed).await;
    h.clock.advance(Duration::from_secs(1));
    let spec = on(&[TaskState::Failed, TaskState::Canceled], Some("web"));
    let n = h.store.put_notification("ops", &spec).await.unwrap();
    assert_eq!((n.name.as_str(), &n.spec), ("ops", &spec));
    h.clock.advance(Duration::from_secs(1));

    ended(&h, Some("web"), TaskState::Succeeded).await; // not an end it wants
    let failed = ended(&h, Some("web"), TaskState::Failed).await;
    ended(&h, None, TaskState::Canceled).await; // another project's
    let canceled = ended(&h, Some("web"), TaskState::Canceled).await;
    assert_eq!(
        h.store.find_deliveries("ops", &spec, LOOKBACK_MS).await.unwrap(),
        2
    );
    // A scan overlapping the last one, and another replica's at the same moment, add nothing.
    let replica = h.replica().await;
    let (a, b) = tokio::join!(
        h.store.find_deliveries("ops", &spec, LOOKBACK_MS),
        replica.find_deliveries("ops", &spec, LOOKBACK_MS)
    );
    assert_eq!((a.unwrap(), b.unwrap()), (0, 0));

    let listed = h.store.list_deliveries("ops", 10).await.unwrap();
    let seen: Vec<(TaskId, &str, DeliveryState, u32)> = listed
        .iter()
        .map(|d| (d.task_id, d.event.as_str(), d.state, d.attempts))
        .collect();
    assert_eq!(
        seen,
        [
            (canceled, "task.canceled", DeliveryState::Pending, 0),
            (failed, "task.failed", DeliveryState::Pending, 0)
        ]
    );
    assert!(
        listed
            .iter()
            .all(|d| d.next_attempt_at.is_some() && d.notification == "ops")
    );

    // Retried and failed again: a new end, told again.
    h.clock.advance(Duration::from_secs(1));
    h.store.retry(failed).await.unwrap();
    finish(&h, failed, TaskState::Failed).await;
    assert_eq!(
        h.store.find_deliveries("ops", &spec, LOOKBACK_MS).await.unwrap(),
        1
    );
    let again = h.store.list_deliveries("ops", 1).await.unwrap();
    assert_eq!(again[0].task_id, failed);

    // A replaced notification keeps its deliveries; listed by name.
    let every = on(&[], None);
    h.store.put_notification("ops", &every).await.unwrap();
    h.store.put_notification("a-chat", &every).await.unwrap();
    let names: Vec<String> = h
        .store
        .list_notifications()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["a-chat", "ops"]);
    assert_eq!(h.store.list_deliveries("ops", 10).await.unwrap().len(), 3);
    // Told of every end now, its next scan (which looks back 30 s) also finds the success
    // and the other project's cancel it passed over two seconds ago.
    assert_eq!(
        h.store.find_deliveries("ops", &every, LOOKBACK_MS).await.unwrap(),
        2
    );

    h.store.delete_notification("ops").await.unwrap();
    assert!(h.store.get_notification("ops").await.unwrap().is_none());
    assert!(h.store.list_deliveries("ops", 10).await.unwrap().is_empty());
    assert!(matches!(
        h.store.delete_notification("ops").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn a_due_delivery_is_taken_by_one_replica_until_its_attempt_is_recorded(h: Harness) {
    let spec = on(&[TaskState::Canceled], None);
    h.store.put_notification("ops", &spec).await.unwrap();
    h.clock.advance(Duration::from_millis(10));
    let ids = h.submit_all((0..20).map(|i| cmd(&format!("make {i}")))).await;
    for id in &ids {
        h.store.cancel(*id).await.unwrap();
    }
    assert_eq!(
        h.store.find_deliveries("ops", &spec, LOOKBACK_MS).await.unwrap(),
        20
    );

    let replica = h.replica().await;
    let (a, b) = tokio::join!(
        h.store.take_due_deliveries(50, 60_000),
        replica.take_due_deliveries(50, 60_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut taken: HashSet<TaskId> = a.iter().map(|d| d.task_id).collect();
    taken.extend(b.iter().map(|d| d.task_id));
    assert_eq!(a.len() + b.len(), 20, "each taken once");
    assert_eq!(taken, ids.iter().copied().collect::<HashSet<_>>());
    assert!(
        h.store.take_due_deliveries(50, 60_000).await.unwrap().is_empty(),
        "leased"
    );

    let all: Vec<_> = a.into_iter().chain(b).collect();
    let retry_at = h.clock.now() + chrono::Duration::seconds(10);
    let attempts = [
        DeliveryAttempt {
            state: DeliveryState::Delivered,
            status: Some(204),
            error: None,
            next_attempt_at: None,
        },
        DeliveryAttempt {
            state: DeliveryState::Failed,
            status: Some(404),
            error: Some("HTTP 404".into()),
            next_attempt_at: None,
        },
        DeliveryAttempt {
            state: DeliveryState::Pending,
            status: Some(503),
            error: Some("HTTP 503".into()),
            next_attempt_at: Some(retry_at),
        },
    ];
    for (d, attempt) in all.iter().zip(&attempts) {
        h.store.record_delivery(d.id, attempt).await.unwrap();
    }
    // Recorded: the lease is released, but the one to retry is not due for 10 s.
    assert!(h.store.take_due_deliveries(50, 60_000).await.unwrap().is_empty());
    h.clock.advance(Duration::from_secs(11));
    let retried = h.store.take_due_deliveries(50, 60_000).await.unwrap();
    assert_eq!(retried.iter().map(|d| d.id).collect::<Vec<_>>(), [all[2].id]);
    assert_eq!(
        (
            retried[0].attempts,
            retried[0].last_status,
            retried[0].last_error.as_deref()
        ),
        (1, Some(503), Some("HTTP 503"))
    );
    // The lease of the rest runs out: taken again.
    h.clock.advance(Duration::from_secs(60));
    assert_eq!(h.store.take_due_deliveries(50, 60_000).await.unwrap().len(), 18);

    // Delivered and failed ones are forgotten once old enough; pending ones never are.
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(h.store.purge_deliveries(h.clock.now()).await.unwrap(), 2);
    assert_eq!(h.store.list_deliveries("ops", 100).await.unwrap().len(), 18);
    assert!(matches!(
        h.store.record_delivery(-1, &attempts[0]).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn a_label_filter_finds_only_the_tasks_that_carry_all_its_labels(h: Harness) {
    let spec = NotificationSpec {
        labels: labels(&[("team", "infra"), ("tier", "1")]),
        ..on(&[], None)
    };
    h.store.put_notification("infra", &spec).await.unwrap();
    h.clock.advance(Duration::from_millis(10));
    let with = |l: &[(&str, &str)]| TaskSpec {
        labels: labels(l),
        ..cmd("make")
    };
    let ids = h
        .submit_all([
            with(&[("team", "infra"), ("tier", "1"), ("gpu", "yes")]),
            with(&[("team", "infra")]),
            with(&[("team", "web"), ("tier", "1")]),
            with(&[]),
        ])
        .await;
    for id in &ids {
        h.store.cancel(*id).await.unwrap();
    }
    assert_eq!(
        h.store
            .find_deliveries("infra", &spec, LOOKBACK_MS)
            .await
            .unwrap(),
        1
    );
    let found = h.store.list_deliveries("infra", 10).await.unwrap();
    assert_eq!(found[0].task_id, ids[0], "only the task with both labels");
}
