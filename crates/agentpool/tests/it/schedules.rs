//! `agentpool schedules`: a schedule put with the task flags of `submit` (refusals told by
//! flag), listed with its next run, run by hand through the pool's worker to a commit on the
//! remote, paused and resumed, and deleted.

use crate::run::Pool;
use crate::{assert_exit, git, json, stderr, stdout};

#[test]
fn a_schedule_is_put_listed_run_by_hand_paused_resumed_and_deleted() {
    let pool = Pool::start();
    let remote = pool.remote.to_str().unwrap().to_string();
    let put = |extra: &[&str]| {
        let mut args = vec!["schedules", "put", "notes", "--repo", remote.as_str()];
        args.extend_from_slice(extra);
        pool.on_server(&args)
    };

    // Refusals name the flags: the schedule's own and the task's.
    let o = put(&[
        "--cron",
        "0 6 * *",
        "--time-zone",
        "Mars/Olympus",
        "--command",
        "true",
    ]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(err.starts_with("agentpool: schedule refused: --cron: "), "{err}");
    assert!(
        err.contains("; --time-zone: unknown time zone \"Mars/Olympus\""),
        "{err}"
    );
    let o = put(&["--cron", "@daily", "--command", "true", "--delay", "10m"]);
    assert_exit(&o, 2);
    assert_eq!(
        stderr(&o).trim(),
        "agentpool: schedule refused: --delay: has no meaning for a scheduled task: leave it out"
    );

    let o = put(&[
        "--cron",
        "0 6 * * 1-5",
        "--time-zone",
        "Europe/Berlin",
        "--branch",
        "notes",
        "--command",
        "date >> NOTES && echo noted",
    ]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).starts_with("schedule notes stored; next run 20"),
        "{}",
        stdout(&o)
    );
    let o = pool.on_server(&["schedules", "list"]);
    assert_exit(&o, 0);
    let list = stdout(&o);
    let lines: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "WHEN", "NEXT RUN", "LAST RUN"], "{list}");
    assert_eq!(lines[1][..2], ["notes", "0 6 * * 1-5 (Europe/Berlin)"], "{list}");
    assert!(
        lines[1][2].starts_with("20") && lines[1][2].ends_with(" UTC"),
        "{list}"
    );
    assert_eq!(lines[1][3], "not run yet", "{list}");

    // Run by hand: the id on stdout, and the worker runs it to a commit on the schedule's
    // branch.
    let o = pool.on_server(&["schedules", "run", "notes"]);
    assert_exit(&o, 0);
    let id = stdout(&o).trim().to_string();
    assert_exit(&pool.on_server(&["tasks", "wait", &id]), 0);
    let task = json(&pool.json_of(&["tasks", "show", &id]));
    assert_eq!(task["state"], "succeeded");
    assert!(
        task["spec"]["idempotency_key"]
            .as_str()
            .unwrap()
            .starts_with("schedule:notes:manual:"),
        "{task}"
    );
    let log = git(&pool.remote, &["log", "--format=%s", "notes"]);
    assert!(log.lines().count() >= 2, "a commit on the branch: {log}");
    let listed = json(&pool.json_of(&["tasks", "list", "--schedule", "notes"]));
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [id.as_str()]);
    let shown = json(&pool.json_of(&["schedules", "show", "notes"]));
    assert_eq!(shown["last_task"], id.as_str());
    assert_eq!(
        shown["last_message"],
        format!("submitted task {id} (run by hand)")
    );
    // The human view: one aligned line a value.
    let o = pool.on_server(&["schedules", "show", "notes"]);
    assert_exit(&o, 0);
    let view = stdout(&o);
    let lines: Vec<&str> = view.lines().collect();
    assert_eq!(lines[0], "schedule   notes", "{view}");
    assert_eq!(lines[1], "when       0 6 * * 1-5 (Europe/Berlin)", "{view}");
    assert!(
        lines[2].starts_with("next run   20") && lines[2].ends_with(" UTC"),
        "{view}"
    );
    assert_eq!(lines[3], "submits    $ date >> NOTES && echo noted", "{view}");
    assert_eq!(lines[4], format!("repo       {remote}"), "{view}");
    assert_eq!(
        lines[5], "overlap    skip a run while the last task is unfinished",
        "{view}"
    );
    assert!(
        lines[6].starts_with("last run   20")
            && lines[6].ends_with(&format!(" UTC: submitted task {id} (run by hand)")),
        "{view}"
    );
    assert_eq!(lines[7], format!("last task  {id}"), "{view}");

    // Paused, it has no next run; resumed, it has one again.
    let o = pool.on_server(&["schedules", "pause", "notes"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o).trim(), "schedule notes paused");
    assert_eq!(
        json(&pool.json_of(&["schedules", "show", "notes"]))["next_run_at"],
        serde_json::Value::Null
    );
    let o = pool.on_server(&["schedules", "resume", "notes"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).starts_with("schedule notes resumed; next run 20"),
        "{}",
        stdout(&o)
    );

    assert_exit(&pool.on_server(&["schedules", "delete", "notes"]), 0);
    let o = pool.on_server(&["schedules", "show", "notes"]);
    assert_exit(&o, 1);
    assert_eq!(stderr(&o).trim(), "agentpool: schedule notes not found");
    let o = pool.on_server(&["schedules", "list"]);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o).trim(), "no schedules");
}
