//! Unit tests of the event types: their wire shape and how they read for people.

use super::*;
use serde_json::json;

/// A retry that gives the attempt back says so, on the wire only when it does, so events
/// stored before the field existed read the same.
#[test]
fn a_given_back_retry_says_it_runs_again_at_once() {
    let at: Timestamp = "2026-01-01T10:00:05Z".parse().unwrap();
    let retry = |given_back| Lifecycle::RetryScheduled {
        attempt: 1,
        run_after: at,
        class: ErrorClass::LeaseExpired,
        message: "the worker stopped heartbeating".into(),
        given_back,
    };
    assert_eq!(
        retry(true).message(),
        "attempt 1 given back (LEASE_EXPIRED: the worker stopped heartbeating); it runs again at once"
    );
    assert_eq!(
        retry(false).message(),
        "attempt 1 failed (LEASE_EXPIRED: the worker stopped heartbeating); next at 10:00:05"
    );
    let old = serde_json::to_value(NewEvent::new(retry(false))).unwrap();
    assert!(old["data"].get("given_back").is_none(), "{old}");
    let back: NewEvent = serde_json::from_value(old).unwrap();
    assert_eq!(back, NewEvent::new(retry(false)));
}

#[test]
fn wire_shape_is_kind_and_data() {
    let e = NewEvent::new(Lifecycle::Claimed {
        attempt: 2,
        worker: WorkerId::parse("w-1").unwrap(),
    });
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v,
        json!({"kind": "lifecycle", "data": {"state": "claimed", "attempt": 2, "worker": "w-1"}})
    );
    assert_eq!(serde_json::from_value::<NewEvent>(v).unwrap(), e);
    let log = json!({"kind": "log", "at": "2026-01-01T00:00:00Z", "data": {"stream": "stdout", "line": "x"}});
    let e: NewEvent = serde_json::from_value(log.clone()).unwrap();
    assert_eq!(e.payload, EventPayload::log("stdout", "x"));
    assert_eq!(serde_json::to_value(&e).unwrap(), log);
}

#[test]
fn optional_data_fields_may_be_left_out() {
    for (kind, data, want) in [
        (
            EventKind::SessionStarted,
            json!({"session_id": "s"}),
            EventPayload::SessionStarted {
                session_id: "s".into(),
                model: None,
            },
        ),
        (
            EventKind::ToolCall,
            json!({"name": "Bash"}),
            EventPayload::ToolCall {
                id: None,
                name: "Bash".into(),
                input: Value::Null,
            },
        ),
        (
            EventKind::Usage,
            json!({}),
            EventPayload::Usage {
                input_tokens: 0,
                output_tokens: 0,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                cost_usd: None,
            },
        ),
        (
            EventKind::ApiRetry,
            json!({}),
            EventPayload::ApiRetry {
                attempt: None,
                max_retries: None,
                delay_ms: None,
                status: None,
                error: None,
            },
        ),
        (
            EventKind::Result,
            json!({}),
            EventPayload::Result {
                text: None,
                is_error: false,
                subtype: None,
            },
        ),
        (
            EventKind::Raw,
            json!({"line": "x"}),
            EventPayload::Raw {
                line: "x".into(),
                hint: None,
            },
        ),
    ] {
        let wire = json!({"kind": kind.as_str(), "data": data.clone()});
        assert_eq!(serde_json::from_value::<NewEvent>(wire).unwrap().payload, want);
        assert_eq!(EventPayload::from_parts(kind, data), want);
    }
}

#[test]
fn unknown_stored_data_reads_as_raw() {
    let p = EventPayload::from_parts(EventKind::Lifecycle, json!({"state": "from_the_future"}));
    assert_eq!(p.kind(), EventKind::Raw);
    let p = EventPayload::from_parts(EventKind::Log, json!({"stream": "stderr", "line": "l"}));
    assert_eq!(p, EventPayload::log("stderr", "l"));
}

#[test]
fn check_events_are_lifecycle_steps_with_their_run() {
    let run = CheckRun {
        round: 1,
        name: "tests".into(),
        passed: false,
        exit_code: Some(1),
        killed: None,
        duration_ms: 12,
        output_tail: "FAILED".into(),
        failed_tests: vec!["a::b".into()],
    };
    let e = NewEvent::new(Lifecycle::CheckFinished(run.clone()));
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["kind"], "lifecycle");
    assert_eq!(v["data"]["state"], "check_finished");
    assert_eq!(v["data"]["exit_code"], 1);
    assert_eq!(v["data"]["failed_tests"], json!(["a::b"]));
    let back = EventPayload::from_parts(EventKind::Lifecycle, e.data());
    assert_eq!(back, EventPayload::Lifecycle(Lifecycle::CheckFinished(run)));
}

#[test]
fn only_finished_states_are_terminal() {
    let failed = EventPayload::from(Lifecycle::Failed {
        class: ErrorClass::AgentError,
        message: "m".into(),
    });
    assert!(failed.is_terminal());
    assert!(EventPayload::from(Lifecycle::Succeeded).is_terminal());
    assert!(!EventPayload::from(Lifecycle::Queued).is_terminal());
    assert!(!EventPayload::log("stdout", "done").is_terminal());
}
