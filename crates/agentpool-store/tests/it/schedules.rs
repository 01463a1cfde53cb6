//! Schedules: stored as set, replaced without losing what their last run did, taken by one
//! replica at a time when due, and moved on to their next run only as the run they were taken
//! for.

use std::time::Duration;

use agentpool_core::schedule::{Overlap, ScheduleSpec};
use agentpool_store::StoreError;
use agentpool_store::schedules::ScheduleRun;

use crate::both;
use crate::harness::{Harness, cmd};

both!(
    schedules_are_stored_replaced_and_deleted,
    a_due_schedule_is_taken_by_one_replica_until_its_run_is_recorded,
);

fn spec(cron: &str) -> ScheduleSpec {
    ScheduleSpec {
        cron: cron.into(),
        time_zone: Some("Europe/Berlin".into()),
        task: cmd("make deps"),
        overlap: Overlap::Allow,
        paused: false,
    }
}

async fn schedules_are_stored_replaced_and_deleted(h: Harness) {
    let next = h.clock.now() + chrono::Duration::hours(1);
    let s = h
        .store
        .put_schedule("nightly", &spec("0 3 * * *"), Some(next))
        .await
        .unwrap();
    assert_eq!((s.name.as_str(), &s.spec), ("nightly", &spec("0 3 * * *")));
    assert_eq!(
        s.next_run_at.map(|t| t.timestamp_millis()),
        Some(next.timestamp_millis())
    );
    assert_eq!((s.last_run_at, s.last_task, s.last_message), (None, None, None));
    h.store
        .put_schedule("a-weekly", &spec("@weekly"), None)
        .await
        .unwrap();
    let names: Vec<String> = h
        .store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a-weekly", "nightly"]);

    // A run by hand is recorded without moving the schedule on.
    let task = h.submit(cmd("make deps")).await;
    let run = ScheduleRun {
        at: h.clock.now(),
        task: Some(task),
        message: format!("submitted task {task}"),
    };
    h.store.record_schedule_run("nightly", &run, None).await.unwrap();
    let after = h.store.get_schedule("nightly").await.unwrap().expect("stored");
    assert_eq!(after.next_run_at, s.next_run_at);
    assert_eq!(after.last_task, Some(task));

    // Replacing the spec (paused now) keeps what the last run did.
    let paused = ScheduleSpec {
        paused: true,
        ..spec("0 4 * * *")
    };
    let replaced = h.store.put_schedule("nightly", &paused, None).await.unwrap();
    assert_eq!((replaced.spec, replaced.next_run_at), (paused, None));
    assert_eq!(
        (replaced.last_task, replaced.last_message),
        (Some(task), Some(run.message))
    );
    assert_eq!(replaced.created_at, s.created_at);

    h.store.delete_schedule("nightly").await.unwrap();
    assert!(h.store.get_schedule("nightly").await.unwrap().is_none());
    assert!(matches!(
        h.store.delete_schedule("nightly").await,
        Err(StoreError::NotFound { what: "schedule", .. })
    ));
}

async fn a_due_schedule_is_taken_by_one_replica_until_its_run_is_recorded(h: Harness) {
    let replica = h.replica().await;
    let due = h.clock.now() + chrono::Duration::minutes(5);
    h.store
        .put_schedule("nightly", &spec("0 3 * * *"), Some(due))
        .await
        .unwrap();
    h.store
        .put_schedule("paused", &spec("0 3 * * *"), None)
        .await
        .unwrap();
    assert!(
        h.store.take_due_schedules(10, 60_000).await.unwrap().is_empty(),
        "not due yet"
    );

    // Many due at once, taken by two replicas at the same moment: each by one of them.
    let many: Vec<String> = (0..40).map(|i| format!("s{i:02}")).collect();
    for name in &many {
        h.store
            .put_schedule(name, &spec("@hourly"), Some(h.clock.now()))
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(
        h.store.take_due_schedules(100, 60_000),
        replica.take_due_schedules(100, 60_000)
    );
    let mut taken: Vec<String> = a.unwrap().into_iter().chain(b.unwrap()).map(|s| s.name).collect();
    taken.sort();
    assert_eq!(taken, many);
    for name in &many {
        h.store.delete_schedule(name).await.unwrap();
    }

    h.clock.advance(Duration::from_secs(6 * 60));
    let (a, b) = tokio::join!(
        h.store.take_due_schedules(10, 60_000),
        replica.take_due_schedules(10, 60_000)
    );
    let taken: Vec<String> = a.unwrap().into_iter().chain(b.unwrap()).map(|s| s.name).collect();
    assert_eq!(
        taken,
        ["nightly"],
        "one replica takes it; the paused one is never due"
    );
    assert!(
        replica.take_due_schedules(10, 60_000).await.unwrap().is_empty(),
        "leased"
    );

    // The holder crashed: once the lease runs out another replica takes the same run.
    h.clock.advance(Duration::from_secs(61));
    let again = replica.take_due_schedules(10, 60_000).await.unwrap();
    assert_eq!(again.len(), 1);
    let due_at = again[0].next_run_at.expect("due");

    // The schedule changed while its run was being submitted: the run is recorded, and the
    // new spec's next run stays.
    let changed = h.clock.now() + chrono::Duration::hours(2);
    h.store
        .put_schedule("nightly", &spec("0 5 * * *"), Some(changed))
        .await
        .unwrap();
    let run = ScheduleRun {
        at: due_at,
        task: None,
        message: "skipped".into(),
    };
    let next = h.clock.now() + chrono::Duration::hours(20);
    replica
        .record_schedule_run("nightly", &run, Some((due_at, Some(next))))
        .await
        .unwrap();
    let s = h.store.get_schedule("nightly").await.unwrap().expect("stored");
    assert_eq!(
        s.next_run_at.map(|t| t.timestamp_millis()),
        Some(changed.timestamp_millis())
    );
    assert_eq!(s.last_message.as_deref(), Some("skipped"));
    assert_eq!(
        s.last_run_at.map(|t| t.timestamp_millis()),
        Some(due_at.timestamp_millis())
    );

    // Unchanged, it moves on to the next run, and is free again.
    h.clock.advance(Duration::from_secs(3 * 3600));
    let taken = h.store.take_due_schedules(10, 60_000).await.unwrap();
    assert_eq!(taken.len(), 1);
    h.store
        .record_schedule_run(
            "nightly",
            &run,
            Some((changed, Some(next + chrono::Duration::days(1)))),
        )
        .await
        .unwrap();
    let s = h.store.get_schedule("nightly").await.unwrap().expect("stored");
    assert_eq!(
        s.next_run_at.map(|t| t.timestamp_millis()),
        Some((next + chrono::Duration::days(1)).timestamp_millis())
    );
    assert!(h.store.take_due_schedules(10, 60_000).await.unwrap().is_empty());
}
