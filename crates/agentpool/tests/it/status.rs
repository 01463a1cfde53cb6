//! `agentpool status`: the queue and the workers at a glance, of the whole pool or of the
//! workers a selector names, with what stands out (work no worker takes, or no worker is
//! online for); `--output json` is the queue stats.

use crate::run::Pool;
use crate::{assert_exit, json, stdout};

#[test]
fn status_counts_the_queue_and_workers_and_says_when_no_worker_can_take_the_work() {
    let pool = Pool::start();
    // No worker of the pool has this label: the task stays queued. Its repository is a remote
    // one, as a pool's (of Kubernetes pods, say) would be: a task on a local repository
    // needs a worker that reads them, which a pool selected by its labels alone is not.
    let o = pool.on_server(&[
        "submit",
        "--repo",
        "https://git.example/app.git",
        "--command",
        "true",
        "--label",
        "pool=gpu",
    ]);
    assert_exit(&o, 0);

    let o = pool.on_server(&["status"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.starts_with("queued     1: 1 due, 1 ready (due, dependencies done)\n"),
        "{text}"
    );
    assert!(text.contains("\nrunning    0\n"), "{text}");
    // The pool's worker (it registers before `up` says its URL) has no such label.
    assert!(
        text.ends_with(
            "1 ready task needs what no worker taking tasks offers (an agent, labels or a \
             project): `agentpool tasks show ID` says which\n"
        ),
        "{text}"
    );

    // For the workers that would take it: there are none.
    let o = pool.on_server(&["status", "--label", "pool=gpu", "--agents", "codex"]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "for        workers labelled pool=gpu; offering codex\n\
         queued     1: 1 due, 1 ready (due, dependencies done)\n\
         running    0\n\
         workers    0 online (0 busy, 0 idle), 0 of 0 slots free\n\
         no worker is online: 1 ready task waits for one\n"
    );
    // Workers labelled otherwise see nothing to do.
    let o = pool.json_of(&["status", "--label", "pool=cpu"]);
    assert_exit(&o, 0);
    let stats = json(&o);
    assert_eq!(stats["queued"], 0);
    assert_eq!(stats["queued_runnable"], 0);

    // A bad selector is refused in one line.
    let o = pool.on_server(&["status", "--label", "nope"]);
    assert_exit(&o, 2);
}
