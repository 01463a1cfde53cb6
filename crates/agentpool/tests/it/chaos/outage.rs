//! PostgreSQL stopped under a running `agentpool serve`: requests that need it are answered
//! 503 (`database_unavailable`) within the time a worker waits for an answer, not after a long
//! hang; the server's log says once that the database does not answer and once that it answers
//! again, and requests succeed once it is back.

use std::time::{Duration, Instant};

use super::pg::PrivatePg;
use crate::{Env, Up, assert_exit, stderr};

/// How long a worker waits for a heartbeat's answer before it sends another (the runner's
/// default: a 10 s beat plus a second): an outage's 503 must come sooner.
const WORKER_WAITS: Duration = Duration::from_secs(11);

#[test]
fn a_stopped_database_is_answered_503_at_once_and_said_once_in_the_log() {
    let Some(pg) = PrivatePg::start() else {
        assert!(
            !agentpool_testkit::services_required(),
            "PostgreSQL is not installed"
        );
        return;
    };
    let env = Env::new();
    let db = pg.url();
    let admin = env.create_token(&db, "root", "admin");
    let mut serve = env.cmd();
    serve.args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db]);
    let (server, log) = Up::spawn_watching_stderr(serve);
    let url = server.url.clone();
    let list = || env.run(&["--server", &url, "--token", &admin, "tasks", "list"]);
    assert_exit(&list(), 0);

    pg.stop();
    let asked = Instant::now();
    let o = list();
    let took = asked.elapsed();
    assert_exit(&o, 4);
    assert!(
        stderr(&o).contains("the database cannot be reached"),
        "{}",
        stderr(&o)
    );
    assert!(took < WORKER_WAITS, "answered after {took:?}");

    // The maintenance pass (every 5 s) notices, and says so once.
    let mut said = Vec::new();
    let mut next = |what: &str| {
        let found = std::iter::from_fn(|| log.recv_timeout(Duration::from_secs(30)).ok())
            .inspect(|l| said.push(l.clone()))
            .any(|l| l.contains(what));
        assert!(found, "no {what:?} in the log: {said:#?}");
    };
    next("the database does not answer");
    pg.resume();
    next("the database answers again");
    assert_exit(&list(), 0);
    let down = said
        .iter()
        .filter(|l| l.contains("the database does not answer"))
        .count();
    assert_eq!(down, 1, "{said:#?}");
    // The first 503 is a warning with its cause; the rest of the outage's are not logged.
    let per_request = said
        .iter()
        .filter(|l| l.contains("database unavailable; answered 503"))
        .count();
    assert!(per_request <= 1, "a line per request: {said:#?}");
}
