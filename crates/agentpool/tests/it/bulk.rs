//! `tasks cancel` and `tasks retry`: several named tasks, or every one a filter matches (by
//! label, project, worker, state or the class of the last error), a cancel with the reason
//! given; what could not be done is said, and a filter that names tasks the action does not
//! apply to, or nothing at all, is refused before anything is done.

use std::process::Output;

use crate::run::Pool;
use crate::{assert_exit, assert_stderr_contains, json, stderr, stdout};

impl Pool {
    /// A task no worker of the pool can take (it stays queued), with `labels`; its id.
    fn queued(&self, labels: &[&str]) -> String {
        let mut extra = vec!["--label", "pool=nowhere"];
        for l in labels {
            extra.extend(["--label", l]);
        }
        let o = self.submit("true", &extra);
        assert_exit(&o, 0);
        stdout(&o).trim().to_string()
    }

    fn tasks(&self, args: &[&str]) -> Output {
        let mut all = vec!["tasks"];
        all.extend_from_slice(args);
        self.on_server(&all)
    }

    /// Task `id` as `tasks show --output json` gives it.
    fn shown(&self, id: &str) -> serde_json::Value {
        json(&self.json_of(&["tasks", "show", id]))
    }
}

#[test]
fn tasks_cancel_and_retry_act_on_named_tasks_or_every_one_a_filter_matches() {
    let pool = Pool::start();
    let batch: Vec<String> = (0..3).map(|_| pool.queued(&["batch=7"])).collect();
    let other = pool.queued(&[]);

    // Refused before anything is canceled: nothing named, ids with a filter, a finished state.
    assert_exit(&pool.tasks(&["cancel"]), 2);
    assert_exit(&pool.tasks(&["cancel", &other, "--label", "batch=7"]), 2);
    let o = pool.tasks(&["cancel", "--label", "batch=7", "--state", "succeeded"]);
    assert_exit(&o, 2);
    assert_eq!(
        stderr(&o).trim(),
        "agentpool: --state succeeded: only running or queued tasks can be canceled"
    );
    let o = pool.tasks(&["cancel", "--label", "batch=7", "--reason", " "]);
    assert_exit(&o, 2);
    assert_stderr_contains(&o, "invalid field reason");
    assert!(batch.iter().all(|id| pool.shown(id)["state"] == "queued"));

    // A dry run lists what the filter matches and cancels nothing; ids with it are refused.
    let o = pool.tasks(&["cancel", "--label", "batch=7", "--dry-run"]);
    assert_exit(&o, 0);
    assert_eq!(
        stderr(&o).trim(),
        "3 tasks would be canceled; none was (--dry-run)"
    );
    let table = stdout(&o);
    assert!(batch.iter().all(|id| table.contains(id.as_str())), "{table}");
    assert!(!table.contains(other.as_str()), "{table}");
    let o = pool.json_of(&["tasks", "retry", "--label", "batch=7", "--dry-run"]);
    assert_exit(&o, 0);
    assert_eq!(
        json(&o).as_array().map(Vec::len),
        Some(0),
        "nothing failed or canceled yet"
    );
    assert_exit(&pool.tasks(&["cancel", &other, "--dry-run"]), 2);
    assert!(batch.iter().all(|id| pool.shown(id)["state"] == "queued"));

    // The filter cancels the batch, each with the reason, and leaves the rest.
    let o = pool.tasks(&["cancel", "--label", "batch=7", "--reason", "wrong prompt"]);
    assert_exit(&o, 0);
    let printed = stdout(&o);
    let mut listed: Vec<&str> = printed
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    listed.sort_unstable();
    let mut want: Vec<&str> = batch.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(listed, want, "{}", stdout(&o));
    assert_eq!(stderr(&o).trim(), "canceled 3 tasks");
    for id in &batch {
        let t = pool.shown(id);
        assert_eq!(t["state"], "canceled", "{t}");
        let message = t["error_message"].as_str().unwrap_or_default();
        assert!(message.ends_with(": wrong prompt"), "{t}");
    }
    assert_eq!(pool.shown(&other)["state"], "queued");
    let o = pool.tasks(&["cancel", "--label", "batch=7"]);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o).trim(), "no queued or running task matches");

    // Named tasks: the one still queued is canceled, the finished one is said, and the exit
    // code tells that not all could be.
    let o = pool.json_of(&["tasks", "cancel", &batch[0], &other]);
    assert_exit(&o, 1);
    let done = json(&o);
    let done = done.as_array().expect("a list of the canceled tasks");
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0]["id"], other.as_str());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("agentpool: {}: ", batch[0]))
            && err.contains("1 of 2 tasks could not be canceled"),
        "{err}"
    );

    // Retry takes the same filters, over failed and canceled tasks; here the batch, by the
    // class its cancel left (CANCELED) and its label.
    let o = pool.tasks(&["retry", "--label", "batch=7", "--state", "queued"]);
    assert_exit(&o, 2);
    assert_eq!(
        stderr(&o).trim(),
        "agentpool: --state queued: only failed or canceled tasks can be retried"
    );
    // The class in any case, as the API names it or not.
    let o = pool.json_of(&["tasks", "list", "--class", "canceled"]);
    assert_exit(&o, 0);
    assert_eq!(json(&o).as_array().map(Vec::len), Some(4), "{}", stdout(&o));
    let o = pool.tasks(&["retry", "--class", "CANCELED", "--label", "batch=7"]);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o).trim(), "queued 3 tasks again");
    for id in &batch {
        assert_eq!(pool.shown(id)["state"], "queued");
    }
    assert_eq!(pool.shown(&other)["state"], "canceled");
    let o = pool.tasks(&["retry", "--class", "CANCELED", "--label", "batch=7"]);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o).trim(), "no failed or canceled task matches");
}

/// `--agent` takes the tasks that need that agent: here the ones waiting for an agent no
/// worker of the pool offers are listed and canceled, and the command task beside them is left.
#[test]
fn tasks_that_need_an_agent_no_worker_offers_are_canceled_by_agent() {
    let pool = Pool::start();
    let command = pool.queued(&[]);
    let remote = pool.remote.to_str().unwrap().to_string();
    let waiting: Vec<String> = (0..2)
        .map(|_| {
            let o = pool.on_server(&["submit", "--repo", &remote, "--agent", "nosuch", "do it"]);
            assert_exit(&o, 0);
            stdout(&o).trim().to_string()
        })
        .collect();

    let o = pool.json_of(&["tasks", "list", "--agent", "nosuch"]);
    assert_exit(&o, 0);
    let mut listed: Vec<String> = json(&o)
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_string())
        .collect();
    listed.sort_unstable();
    let mut want = waiting.clone();
    want.sort_unstable();
    assert_eq!(listed, want);
    let o = pool.tasks(&["list", "--agent", "no such"]);
    assert_exit(&o, 2);
    assert_stderr_contains(&o, "agent");

    let o = pool.tasks(&["cancel", "--agent", "nosuch", "--reason", "no worker runs it"]);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o).trim(), "canceled 2 tasks");
    for id in &waiting {
        assert_eq!(pool.shown(id)["state"], "canceled");
    }
    assert_eq!(pool.shown(&command)["state"], "queued");
}

/// More tasks than one request takes (1000): a filter's cancel and retry go in several
/// requests, and every task is acted on once.
#[test]
fn a_filter_matching_more_tasks_than_one_request_takes_acts_on_all_of_them() {
    const N: usize = 1203;
    let pool = Pool::start();
    // Submitted through the API, two batches, all with a label no worker of the pool has.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = agentpool_client::Client::new(&pool.up.url, None).unwrap();
    let mut spec = agentpool_core::TaskSpec::command(pool.remote.to_str().unwrap(), "true");
    spec.labels = [("pool", "nowhere"), ("batch", "big")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    rt.block_on(async {
        for n in [1000, N - 1000] {
            let batch = vec![spec.clone(); n];
            client.submit_batch(batch).await.expect("submit");
        }
    });

    let o = pool.tasks(&["cancel", "--label", "batch=big", "--reason", "too many"]);
    assert_exit(&o, 0);
    assert_eq!(stderr(&o).trim(), format!("canceled {N} tasks"));
    assert_eq!(stdout(&o).lines().count(), N);
    let o = pool.json_of(&[
        "tasks",
        "list",
        "--state",
        "canceled",
        "--label",
        "batch=big",
        "--limit",
        "500",
    ]);
    assert_exit(&o, 0);
    assert_eq!(json(&o).as_array().map(Vec::len), Some(500));

    let o = pool.json_of(&["tasks", "retry", "--label", "batch=big"]);
    assert_exit(&o, 0);
    let retried = json(&o);
    let retried = retried.as_array().expect("a list");
    assert_eq!(retried.len(), N);
    let mut ids: Vec<&str> = retried.iter().filter_map(|r| r["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), N, "each task once");
    assert!(retried.iter().all(|r| r["state"] == "queued"));
}

/// The pool's own server as one that predates the bulk requests: a proxy in front of it whose
/// router has `/v1/tasks/{id}` for GET only, as an older server's does, so a POST to
/// `/v1/tasks/cancel` is answered 405; every other request goes through unchanged.
fn older_server(upstream: String) -> String {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::response::Response;

    async fn forward(http: reqwest::Client, upstream: String, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let bytes = to_bytes(body, usize::MAX).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut r = http.request(parts.method.clone(), format!("{upstream}{path}"));
        for (k, v) in &parts.headers {
            if k != "host" && k != "content-length" {
                r = r.header(k, v);
            }
        }
        let answer = r.body(bytes.to_vec()).send().await.unwrap();
        let mut out = Response::builder().status(answer.status());
        if let Some(ct) = answer.headers().get("content-type") {
            out = out.header("content-type", ct);
        }
        out.body(Body::from(answer.bytes().await.unwrap())).unwrap()
    }

    let http = reqwest::Client::new();
    let (h, u) = (http.clone(), upstream.clone());
    let app = axum::Router::new()
        .route(
            "/v1/tasks/{id}",
            axum::routing::get(move |req: Request| forward(h.clone(), u.clone(), req)),
        )
        .fallback(move |req: Request| forward(http.clone(), upstream.clone(), req));
    crate::serve_in_thread(app)
}

/// A server older than the bulk requests (it answers them 405) is sent one request per task,
/// with the same outcome: said once on stderr, each match acted on, a named task that could
/// not be said and the exit code 1.
#[test]
fn a_server_older_than_the_bulk_requests_is_sent_one_request_per_task() {
    let pool = Pool::start();
    let batch: Vec<String> = (0..3).map(|_| pool.queued(&["batch=old"])).collect();
    let other = pool.queued(&[]);
    let older = older_server(pool.up.url.clone());
    let on_older = |args: &[&str]| {
        let mut all = vec!["--server", older.as_str()];
        all.extend_from_slice(args);
        pool.env.run(&all)
    };
    // Through the proxy, a single task's request works as it did.
    assert_exit(&on_older(&["tasks", "show", &other]), 0);

    let o = on_older(&[
        "tasks",
        "cancel",
        "--label",
        "batch=old",
        "--reason",
        "old server",
    ]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert_eq!(
        err.trim().lines().collect::<Vec<_>>(),
        [
            "agentpool: the server predates bulk requests: one request per task",
            "canceled 3 tasks"
        ],
        "{err}"
    );
    for id in &batch {
        let t = pool.shown(id);
        assert_eq!(t["state"], "canceled", "{t}");
        assert!(
            t["error_message"]
                .as_str()
                .unwrap_or_default()
                .ends_with(": old server"),
            "{t}"
        );
    }

    let o = on_older(&["tasks", "cancel", &batch[0], &other]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("agentpool: {}: ", batch[0]))
            && err.contains("1 of 2 tasks could not be canceled"),
        "{err}"
    );
    assert_eq!(pool.shown(&other)["state"], "canceled");
}
