//! `run` and `submit --wait`: a task goes through the whole pipeline and the exit code tells
//! how it ended.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};

use crate::{Env, Up, assert_exit, assert_stderr_contains, git, json, stderr, stdout, submit_args};

/// A running pool (`up`, one worker) and a sample repo to submit to.
pub(crate) struct Pool {
    // Declared first so it stops before the environment's directory goes.
    pub(crate) up: Up,
    pub(crate) remote: PathBuf,
    pub(crate) env: Env,
}

impl Pool {
    pub(crate) fn start() -> Self {
        let env = Env::new();
        let remote = env.sample_repo();
        let up = Up::start(&env, 1);
        Self { up, remote, env }
    }

    /// `submit` arguments for `command` on the sample repo, then `extra`.
    pub(crate) fn submit_args<'a>(&'a self, command: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        submit_args(&self.up.url, self.remote.to_str().unwrap(), command, extra)
    }

    pub(crate) fn submit(&self, command: &str, extra: &[&str]) -> Output {
        self.env.run(&self.submit_args(command, extra))
    }

    /// `agentpool ARGS` on the pool's server.
    pub(crate) fn on_server(&self, args: &[&str]) -> Output {
        let mut all = vec!["--server", self.up.url.as_str()];
        all.extend_from_slice(args);
        self.env.run(&all)
    }

    /// `agentpool --output json ARGS` on the pool's server.
    pub(crate) fn json_of(&self, args: &[&str]) -> Output {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        self.on_server(&all)
    }

    pub(crate) fn cancel(&self, id: &str) {
        let o = self.on_server(&["tasks", "cancel", id]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
}

#[test]
fn run_on_a_local_repo_exits_0_and_the_commit_is_on_the_work_branch() {
    let env = Env::new();
    let remote = env.sample_repo();
    let o = env.run(&[
        "run",
        "--repo",
        remote.to_str().unwrap(),
        "--branch",
        "work/hello",
        "--command",
        "echo hello > hello.txt",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let task = json(&o);
    assert_eq!(task["state"], "succeeded");
    let sha = task["result"]["commit_sha"].as_str().expect("commit sha");
    assert_eq!(git(&remote, &["rev-parse", "work/hello"]), sha);
    assert_eq!(git(&remote, &["show", "work/hello:hello.txt"]), "hello");
    let files = task["result"]["files"].as_array().expect("files");
    assert!(files.iter().any(|f| f["path"] == "hello.txt"), "{files:?}");
}

#[test]
fn run_shows_the_events_and_the_result_for_a_person() {
    let env = Env::new();
    let remote = env.sample_repo();
    // Colours are for terminals: piped output has none, even without NO_COLOR.
    let o = env
        .cmd()
        .env_remove("NO_COLOR")
        .args(["run", "--repo", remote.to_str().unwrap()])
        .args(["--command", "echo visible-output; echo x > x.txt"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains('\x1b') && !stderr(&o).contains('\x1b'), "{out}");
    assert!(out.contains("visible-output"), "{out}");
    assert!(out.contains("succeeded"), "{out}");
    assert!(out.contains("commit"), "{out}");
}

/// What a task prints reaches a person's terminal as visible escapes, never as escape
/// sequences it obeys (clear the screen, write the clipboard, reverse the text); JSON output
/// keeps the text as it was.
#[test]
fn escape_sequences_in_a_task_s_output_are_shown_not_obeyed() {
    let pool = Pool::start();
    let command = r#"printf 'clear\033[2J clip\033]52;c;aGk=\007 rtl\342\200\256txt red\033[31m\n'; touch "$(printf 'name\033[8m')""#;
    let o = pool.submit(command, &["--wait"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let id = stdout(&o)
        .split_whitespace()
        .nth(1)
        .expect("the task's id in the output")
        .to_string();
    let shown = stdout(&o) + &stdout(&pool.on_server(&["tasks", "logs", &id]));
    let raw = ['\x1b', '\x07', '\u{202E}'];
    assert!(!shown.contains(raw), "{shown:?}");
    assert!(
        // A colour code too: piped, the CLI writes no colours of its own.
        shown.contains("clear^[[2J clip^[]52;c;aGk=^G rtl<U+202E>txt red^[[31m"),
        "{shown}"
    );
    assert!(shown.contains("name^[[8m"), "the file's name: {shown}");
    let logs = stdout(&pool.json_of(&["tasks", "logs", &id]));
    assert!(logs.contains(r"clear\u001b[2J"), "{logs}");
    assert!(logs.contains('\u{202E}'), "JSON keeps the text as it was: {logs}");
}

#[test]
fn submit_wait_of_a_failing_task_exits_1_and_shows_the_class() {
    let pool = Pool::start();
    let o = pool.submit("echo broken >&2; exit 3", &["--max-attempts", "1", "--wait"]);
    assert_exit(&o, 1);
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or("");
    assert!(last.contains("failed"), "{err}");
    let classes = ["AGENT_ERROR", "INVALID_TASK", "GIT_ERROR", "TIMEOUT"];
    assert!(
        classes.iter().any(|c| last.contains(c)),
        "no error class in: {last}"
    );
    assert!(stdout(&o).contains("failed"));
}

#[test]
fn a_second_submit_with_the_same_idempotency_key_says_it_returned_the_first_task() {
    let pool = Pool::start();
    let first = pool.submit("echo one", &["--idempotency-key", "release-1", "--wait"]);
    assert_exit(&first, 0);
    let first_id = pool.json_of(&["tasks", "list"]);
    let first_id = json(&first_id)[0]["id"]
        .as_str()
        .expect("the first task")
        .to_string();
    assert!(
        !stderr(&first).contains("already submitted"),
        "{}",
        stderr(&first)
    );

    // Another command under the same key: nothing new runs, and the submitter is told so.
    let again = pool.submit("echo two", &["--idempotency-key", "release-1"]);
    assert_exit(&again, 0);
    assert_eq!(stdout(&again).trim(), first_id, "the earlier task's id");
    let said = stderr(&again);
    assert!(
        said.contains("already submitted (idempotency key release-1), now succeeded"),
        "{said}"
    );
    let scripted = pool.submit(
        "echo two",
        &["--idempotency-key", "release-1", "--output", "json"],
    );
    assert_exit(&scripted, 0);
    assert_eq!(json(&scripted)["id"], first_id.as_str());
    assert_eq!(
        stderr(&scripted).trim(),
        "agentpool: already submitted (idempotency key release-1)"
    );
    let waited = pool.submit("echo two", &["--idempotency-key", "release-1", "--wait"]);
    assert_exit(&waited, 0);
    assert_stderr_contains(
        &waited,
        "already submitted (idempotency key release-1); following that task",
    );
    let all = pool.json_of(&["tasks", "list"]);
    assert_eq!(json(&all).as_array().map(Vec::len), Some(1), "one task in all");
}

/// A task over as soon as it is submitted (its dependency had already failed) says why, and
/// points at `tasks show` rather than at a log to follow.
#[test]
fn a_submit_that_fails_at_once_says_why() {
    let pool = Pool::start();
    let failed = pool.submit("false", &["--max-attempts", "1", "--wait", "--output", "json"]);
    assert_exit(&failed, 1);
    let failed_id = json(&failed)["id"].as_str().expect("id").to_string();
    let o = pool.submit("true", &["--depends-on", &failed_id]);
    assert_exit(&o, 0);
    let id = stdout(&o).trim().to_string();
    let said = stderr(&o);
    assert!(
        said.contains(&format!(
            "submitted, now failed (DEPENDENCY_FAILED dependency {failed_id} failed)"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("see `agentpool tasks show {id}`")),
        "{said}"
    );
    assert!(!said.contains("logs -f"), "{said}");
}

#[test]
fn a_follow_up_goes_on_on_the_earlier_task_s_work_branch() {
    let pool = Pool::start();
    let first = pool.submit("echo one > notes.txt", &["--wait", "--output", "json"]);
    assert_exit(&first, 0);
    let first = json(&first);
    let first_id = first["id"].as_str().expect("id").to_string();
    let branch = first["result"]["branch"].as_str().expect("branch").to_string();

    // No --repo, and run from a directory that is no repository: the follow-up takes the
    // earlier task's repository and branch, and starts from what that task pushed.
    let url = pool.up.url.clone();
    // `submit --follow-up of --command command --wait`, its task as JSON once it succeeded.
    let follow_up = |of: &str, command: &str| {
        let o = pool.env.run(&[
            "--server",
            &url,
            "submit",
            "--follow-up",
            of,
            "--command",
            command,
            "--wait",
            "--output",
            "json",
        ]);
        assert_exit(&o, 0);
        json(&o)
    };
    let next = follow_up(&first_id, "echo two >> notes.txt");
    assert_eq!(next["spec"]["branch"], branch.as_str(), "{next}");
    assert_eq!(next["spec"]["repo"], first["spec"]["repo"]);
    let next_id = next["id"].as_str().expect("id");
    let shown = stdout(&pool.env.run(&["--server", &url, "tasks", "show", next_id]));
    assert!(shown.contains(&format!("follows    {first_id}\n")), "{shown}");
    assert_eq!(
        git(&pool.remote, &["show", &format!("{branch}:notes.txt")]),
        "one\ntwo"
    );
    assert_eq!(
        git(&pool.remote, &["rev-parse", &format!("{branch}~1")]),
        first["result"]["commit_sha"].as_str().expect("first commit"),
        "the follow-up's commit is on top of the first's"
    );

    // On a branch of its own: it starts from what the earlier task pushed.
    let own = pool.env.run(&[
        "--server",
        &url,
        "submit",
        "--follow-up",
        next_id,
        "--branch",
        "own-branch",
        "--command",
        "echo five >> notes.txt",
        "--wait",
        "--output",
        "json",
    ]);
    assert_exit(&own, 0);
    let own = json(&own);
    assert_eq!(own["spec"]["branch"], "own-branch", "{own}");
    assert_eq!(own["spec"]["base_ref"], branch.as_str(), "{own}");
    assert_eq!(
        git(&pool.remote, &["show", "own-branch:notes.txt"]),
        "one\ntwo\nfive"
    );

    // Followed up before it has finished: the follow-up waits for it and builds on it.
    let slow = pool.submit("sleep 1; echo three >> notes.txt", &["--base", &branch]);
    assert_exit(&slow, 0);
    let slow_id = stdout(&slow).trim().to_string();
    let after = follow_up(&slow_id, "echo four >> notes.txt");
    assert_eq!(after["spec"]["depends_on"][0], slow_id.as_str(), "{after}");
    let slow_branch = format!("agentpool/{slow_id}");
    assert_eq!(after["spec"]["branch"], slow_branch.as_str());
    assert_eq!(
        git(&pool.remote, &["show", &format!("{slow_branch}:notes.txt")]),
        "one\ntwo\nthree\nfour"
    );

    let missing = pool.env.run(&[
        "--server",
        &url,
        "submit",
        "--follow-up",
        "01a23c31-e1e5-764b-9111-1b9c734dbe52",
        "--command",
        "true",
    ]);
    assert_exit(&missing, 2);
    assert_stderr_contains(
        &missing,
        "--follow-up: task 01a23c31-e1e5-764b-9111-1b9c734dbe52 does not exist",
    );

    // In another repository: refused, saying where the earlier task ran and what to do.
    let elsewhere = pool.env.run(&[
        "--server",
        &url,
        "submit",
        "--follow-up",
        &first_id,
        "--repo",
        "https://example.com/elsewhere.git",
        "--command",
        "true",
    ]);
    assert_exit(&elsewhere, 2);
    let repo = first["spec"]["repo"].as_str().expect("repo");
    assert_stderr_contains(
        &elsewhere,
        &format!(
            "--follow-up: task {first_id} ran in repository {repo}, and a follow-up goes on there: \
             leave out the project and repository (--project, --repo), or submit a new task \
             instead of a follow-up"
        ),
    );
}

/// `agentpool tasks logs ID | head -1`: the reader goes after one line, and agentpool ends
/// as Unix tools do (SIGPIPE), not with a panic about a broken pipe.
#[test]
fn a_log_piped_into_a_reader_that_stops_early_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let pool = Pool::start();
    let task = pool.submit(
        "pad=$(printf '%0100d' 0); for i in $(seq 1 3000); do echo \"line $i $pad\"; done",
        &["--wait", "--output", "json"],
    );
    assert_exit(&task, 0);
    let id = json(&task)["id"].as_str().expect("id").to_string();
    let mut logs = pool
        .env
        .cmd()
        .args(["--server", &pool.up.url, "tasks", "logs", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(logs.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("queued"), "{first}");
    // The reader is dropped here, closing the pipe.
    let out = logs.wait_with_output().unwrap();
    // The log (some 350 KB) outgrows the pipe (64 KB), so agentpool is still writing when the
    // reader closes it, however fast it is.
    const SIGPIPE: i32 = 13;
    assert_eq!(out.status.signal(), Some(SIGPIPE), "{:?}", out.status);
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn a_task_canceled_while_waited_on_exits_3() {
    let pool = Pool::start();
    // No worker carries this label, so the task stays queued until it is canceled.
    let mut waiting = pool
        .env
        .cmd()
        .args(pool.submit_args("true", &["--label", "pool=nowhere", "--wait"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(waiting.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line naming the task").unwrap();
    let id = first.split_whitespace().last().unwrap().to_string();
    pool.cancel(&id);
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    // It said why the task waited: no worker could take it, not merely none was free.
    assert_stderr_contains(
        &out,
        "waiting: no worker online offers agent command with labels agentpool/local-repos=true,pool=nowhere yet",
    );
    // A submit that does not wait says so too; one some worker can run does not.
    let o = pool.submit("true", &["--label", "pool=nowhere"]);
    assert_exit(&o, 0);
    assert_stderr_contains(
        &o,
        "waiting: no worker online offers agent command with labels agentpool/local-repos=true,pool=nowhere yet",
    );
    let o = pool.submit("true", &[]);
    assert_exit(&o, 0);
    assert!(!stderr(&o).contains("no worker online"), "{}", stderr(&o));
}

/// A transient pool whose workers all turn unhealthy (here the agent's CLI is installed but
/// cannot be started: its interpreter is missing) ends its task instead of waiting for a
/// recovery, and says why.
#[test]
fn a_transient_run_whose_workers_turn_unhealthy_ends_and_says_why() {
    let env = Env::new();
    let remote = env.sample_repo();
    let bin = env.dir.path().join("bin");
    agentpool_testkit::process::script(&bin, "claude", "#!/no-such-dir/node\n");
    let o = crate::agent_access::claude_run(
        &env,
        &bin,
        &remote,
        &["--agent-env", "ANTHROPIC_API_KEY"],
        "write hello.txt",
    )
    .env("ANTHROPIC_API_KEY", "sk-ant-test")
    .output()
    .unwrap();
    assert_exit(&o, 1);
    let err = stderr(&o);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "agentpool: the transient pool cannot run it: git or an agent could not be started 3 times in a row; the last: "
        ) && last.contains("claude: No such file or directory (os error 2) (the file is there: the interpreter its #! line names is likely missing)")
            && last.ends_with("; the task was canceled"),
        "{err}"
    );
    // Its attempts were given back, not used: the task did not fail, it was ended.
    let shown = json(&o);
    assert_eq!(shown["state"], "canceled", "{shown}");
    assert_eq!(shown["attempts"], 0, "{shown}");
    // The task itself keeps why it was ended, not a bare "canceled".
    let message = shown["error_message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "canceled by a local user (no auth): the transient pool cannot run it: git or an agent could not be started"
        ),
        "{shown}"
    );
    let tried = shown["attempts_detail"].as_array().unwrap();
    assert_eq!(tried.len(), 3, "{shown}");
    assert!(
        tried.iter().all(|a| a["error_class"] == "WORKER_ERROR"),
        "{shown}"
    );
}

/// A transient pool is all the workers there are: a task none of them can run fails at once
/// instead of waiting forever.
#[test]
fn a_transient_run_no_worker_can_take_fails_at_once() {
    let env = Env::new();
    let remote = env.sample_repo();
    let repo = remote.to_str().unwrap();
    let o = env.run(&["run", "--label", "gpu=yes", "--repo", repo, "--command", "true"]);
    assert_exit(&o, 1);
    assert_stderr_contains(
        &o,
        "the transient pool cannot run it: none of its workers offers agent command with labels gpu=yes; \
             its workers carry no labels: start a pool whose workers do (`agentpool up --labels gpu=yes`); \
             the task was canceled",
    );
    // An agent this machine does not have: how to install it.
    let o = env
        .cmd_without_agents()
        .args(["run", "--repo", repo, "--agent", "codex", "fix it"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert_stderr_contains(
        &o,
        "none of its workers offers agent codex (agents are looked up in AGENTPOOL_AGENT_BIN_DIR, \
             then on PATH); install it: npm install -g @openai/codex; the task was canceled",
    );
}

/// A transient pool runs its own task and no other: a task queued earlier in the same database
/// (here for an `up` that stopped) is left queued, untouched, for the pool it was meant for —
/// the run neither starts it nor waits for it to end, and another pool runs it later.
#[test]
fn a_transient_run_leaves_other_queued_tasks_alone() {
    let env = Env::new();
    let remote = env.sample_repo();
    let repo = remote.to_str().unwrap();
    let older_started = env.dir.path().join("older-started");
    let older = {
        let up = Up::start(&env, 0);
        let command = format!("touch {}", older_started.display());
        let o = env.run(&submit_args(&up.url, repo, &command, &["-o", "json"]));
        assert_exit(&o, 0);
        assert!(up.stop().success());
        json(&o)["id"].as_str().unwrap().to_string()
    };
    // Two workers: had they taken any queued task, the first claim would have been the older one.
    let o = env
        .cmd_without_agents()
        .args(["run", "--workers", "2", "--repo", repo, "--command", "echo mine"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("mine"), "{}", stdout(&o));
    assert!(
        !older_started.exists(),
        "the transient pool ran a task not its own"
    );
    let up = Up::start(&env, 1);
    let o = env.run(&["--server", &up.url, "tasks", "wait", &older]);
    assert_exit(&o, 0);
    assert!(older_started.exists());
    let show = json(&env.run(&["--server", &up.url, "-o", "json", "tasks", "show", &older]));
    assert_eq!(show["attempts"], 1, "{show:#}");
}

/// `tasks wait` waits for tasks submitted earlier, and its exit code is the worst outcome;
/// `tasks logs -f --exit-status` exits with the one task's.
#[test]
fn tasks_wait_exits_with_the_worst_outcome_of_the_tasks_it_waits_for() {
    let pool = Pool::start();
    let submit = |command: &str, extra: &[&str]| {
        let o = pool.submit(command, extra);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o).trim().to_string()
    };
    let ok = submit("true", &[]);
    let bad = submit("exit 3", &["--max-attempts", "1"]);
    let stuck = submit("true", &["--label", "pool=nowhere"]);
    let wait = |args: &[&str]| {
        let mut all = vec!["--server", pool.up.url.as_str(), "tasks", "wait"];
        all.extend_from_slice(args);
        pool.env.run(&all)
    };

    let o = wait(&[&ok]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("succeeded"), "{}", stdout(&o));
    let o = wait(&[&ok, &bad]);
    assert_exit(&o, 1);
    assert_eq!(
        stdout(&o),
        format!("{ok} succeeded\n{bad} failed AGENT_ERROR the command exited with code 3\n")
    );
    let o = wait(&["--output", "json", &bad, &ok]);
    let both = json(&o);
    assert_eq!(both[0]["state"], "failed", "{both}");
    assert_eq!(both[1]["state"], "succeeded", "{both}");

    // A task that cannot finish: the wait gives up, and the task goes on.
    let o = wait(&[&ok, &stuck, &bad, "--timeout", "1s"]);
    assert_exit(&o, 1);
    assert_eq!(
        stderr(&o).trim(),
        format!("agentpool: timed out after 1.0s: 1 of 3 still unfinished: {stuck}")
    );
    pool.cancel(&stuck);
    assert_exit(&wait(&[&ok, &stuck]), 3);
    assert_exit(&wait(&[&stuck, &bad]), 1);

    // `tasks logs -f` exits 0 once the task ends, or with its outcome when asked.
    let logs = |args: &[&str]| {
        let mut all = vec!["--server", pool.up.url.as_str(), "tasks", "logs"];
        all.extend_from_slice(args);
        pool.env.run(&all)
    };
    assert_exit(&logs(&["-f", &bad]), 0);
    for (id, code) in [(&ok, 0), (&bad, 1), (&stuck, 3)] {
        let o = logs(&["-f", "--exit-status", id]);
        assert_exit(&o, code);
        assert!(stderr(&o).starts_with("task ended: "), "{}", stderr(&o));
    }
    let o = logs(&["--exit-status", &bad]);
    assert_exit(&o, 2);
    assert_stderr_contains(&o, "--follow");
}

/// A dependent of a canceled task fails; retrying the canceled task queues the dependent
/// again with it, and says so.
#[test]
fn a_task_whose_dependency_was_canceled_does_not_succeed_until_that_is_retried() {
    let pool = Pool::start();
    let blocker = pool.submit("true", &["--label", "pool=nowhere"]);
    assert_eq!(blocker.status.code(), Some(0), "{}", stderr(&blocker));
    let id = stdout(&blocker).trim().to_string();
    pool.cancel(&id);
    let o = pool.submit("true", &["--depends-on", &id, "--wait"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_stderr_contains(&o, "DEPENDENCY_FAILED");
    let failed = json(&pool.json_of(&["tasks", "list", "--state", "failed"]));
    let dependent = failed[0]["id"]
        .as_str()
        .expect("the dependent failed")
        .to_string();

    let o = pool.on_server(&["tasks", "retry", &id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{id} queued\nand 1 dependent that failed because of it, queued again:\n  {dependent}\n")
    );
    let show = json(&pool.json_of(&["tasks", "show", &dependent]));
    assert_eq!(show["state"], "queued", "{show}");
}

/// Start `run` (a `run` whose task prints `task-started`), send it SIGINT once the task printed
/// that, and read it to its end: its first line, how it exited, and its stderr.
pub(crate) fn interrupt_once_started(
    mut run: std::process::Command,
) -> (String, std::process::ExitStatus, String) {
    let mut run = run.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(run.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line naming the task").unwrap();
    for line in lines.by_ref() {
        if line.unwrap().contains("task-started") {
            break;
        }
    }
    crate::signal(&run, "INT");
    for _ in lines {}
    let status = run.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    (first, status, err)
}

#[test]
fn interrupting_a_transient_run_cancels_its_task_and_leaves_no_process() {
    let env = Env::new();
    let remote = env.sample_repo();
    let pidfile = env.dir.path().join("task.pid");
    let command = format!(
        "echo $$ > {p}; echo task-started; while true; do sleep 0.05; done",
        p = pidfile.display()
    );
    let mut run = env.cmd();
    run.args(["run", "--repo", remote.to_str().unwrap(), "--command", &command]);
    let (_, status, err) = interrupt_once_started(run);
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("canceled"), "{err}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let alive = std::process::Command::new("kill")
        .args(["-0", pid.trim()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!alive, "the task's shell {pid} is still running");
}

/// On a server, `run` only follows: Ctrl-C stops the following and leaves the task to the
/// server, saying how to follow it again and how to stop it, and exits 130 (interrupted), not
/// 3 (the task was canceled: it was not).
#[test]
fn interrupting_a_run_on_a_server_leaves_its_task_running() {
    let pool = Pool::start();
    let mut run = pool.env.cmd();
    run.args(["--server", &pool.up.url, "run", "--repo"]).args([
        pool.remote.to_str().unwrap(),
        "--command",
        "echo task-started; sleep 600",
    ]);
    let (first, status, err) = interrupt_once_started(run);
    let id = first.split_whitespace().last().unwrap().to_string();
    assert_eq!(status.code(), Some(130), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "agentpool: stopped following; the task goes on: `agentpool tasks logs -f {id}` \
             follows it again, `agentpool tasks cancel {id}` stops it"
        )
    );
    assert_eq!(json(&pool.json_of(&["tasks", "show", &id]))["state"], "running");
    pool.cancel(&id);
}

#[test]
fn run_accepts_a_file_url_and_a_relative_path_on_the_embedded_pool() {
    let env = Env::new();
    let remote = env.sample_repo();
    let url = format!("file://{}", remote.display());
    for (repo, branch) in [(url.as_str(), "via-url"), ("remote.git", "via-relative-path")] {
        let o = env.run(&[
            "run",
            "--repo",
            repo,
            "--branch",
            branch,
            "--command",
            "echo x > x.txt",
        ]);
        assert_eq!(o.status.code(), Some(0), "{repo}: {}", stderr(&o));
        assert_eq!(git(&remote, &["show", &format!("{branch}:x.txt")]), "x");
    }
}

/// On a terminal (a pseudo-terminal from util-linux `script`), `run` shows a live status line
/// with a spinner and colours.
#[test]
fn on_a_terminal_run_shows_a_live_status_line_and_colours() {
    let env = Env::new();
    let remote = env.sample_repo();
    let inner = format!(
        "{} run --repo {} --command 'echo on-a-tty'",
        env!("CARGO_BIN_EXE_agentpool"),
        remote.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("AGENTPOOL_DATA_DIR", env.data_dir())
        .env_remove("NO_COLOR")
        .env_remove("AGENTPOOL_SERVER")
        .env("TERM", "xterm")
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("on-a-tty"), "{out}");
    assert!(
        out.contains("\x1b[32msucceeded\x1b[0m"),
        "state in green: {out:?}"
    );
    let spinner = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
    assert!(spinner.iter().any(|f| out.contains(f)), "no status line: {out:?}");
}

#[test]
fn run_with_checks_records_them_and_a_failing_check_exits_1_with_checks_failed() {
    let env = Env::new();
    let remote = env.sample_repo();
    let repo = remote.to_str().unwrap();
    // Without --repo, the repository is the current directory. A file not committed there is
    // not in the task's workspace, and `run` says so before it starts.
    let work = remote.parent().unwrap().join("src-repo");
    std::fs::write(work.join("scratch.txt"), "draft").unwrap();
    let o = env
        .cmd()
        .current_dir(&work)
        .args(["run", "--command", "echo 42 > answer.txt"])
        .args([
            "--check",
            "grep -qx 42 answer.txt",
            "--check",
            "test -f answer.txt && test ! -e scratch.txt",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let note = format!(
        "note: {} has uncommitted changes (1 file: scratch.txt), which the task does not see: it \
         starts from the last commit. Commit them first to include them.\n",
        std::fs::canonicalize(&work).unwrap().display()
    );
    assert!(stderr(&o).starts_with(&note), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("passed after 1 round"), "{out}");
    assert!(
        out.contains("check finished: round 1: grep -qx 42 answer.txt passed"),
        "{out}"
    );

    let o = env.run(&[
        "run",
        "--repo",
        repo,
        "--command",
        "echo 41 > answer.txt",
        "--max-attempts",
        "3",
        "--check",
        "grep -qx 42 answer.txt",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    let task = json(&o);
    assert_eq!(task["error_class"], "CHECKS_FAILED");
    assert_eq!(task["attempts"], 1, "not retried");
    assert_eq!(task["result"]["checks_passed"], false);
    assert_eq!(task["result"]["checks"][0]["exit_code"], 1);

    let o = env.run(&["run", "--command", "true"]);
    assert_eq!(o.status.code(), Some(2), "not a git repository: {}", stderr(&o));
    assert_stderr_contains(&o, "give --repo");

    // Feedback needs an agent: a command task cannot ask for rounds.
    let o = env.run(&[
        "run",
        "--repo",
        repo,
        "--command",
        "true",
        "--check",
        "true",
        "--max-rounds",
        "2",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert_stderr_contains(&o, "--max-rounds: a command task cannot take feedback");

    // A check given but empty is a check without a command, not a missing flag.
    let o = env.run(&["run", "--repo", repo, "--command", "true", "--check", " "]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_stderr_contains(&o, "--check: must not be blank");
}
