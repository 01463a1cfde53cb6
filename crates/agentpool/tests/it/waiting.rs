//! What a person following a task is told about it: why a queued task waits (here, its
//! project's daily budget spent), and in `tasks show`, its project and every round of its
//! checks.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use agentpool_testkit::model::{ModelServer, Script, Step};

use crate::agent_access::bin_or_fail;
use crate::{Env, Reaped, SpawnReaped, Up, assert_exit, json, stderr, stdout};

/// The line every follower says of a task of project web once its budget is spent.
fn budget_line() -> String {
    let midnight = (chrono::Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    format!(
        "waiting: project web: budget exhausted until {} (its daily budget is $0.000001); it runs \
         then, or once the budget is raised",
        midnight.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// `agentpool --server URL` with `args`, its stdout piped, and its stderr's lines as they
/// come.
fn spawn(env: &Env, url: &str, args: &[&str]) -> (Reaped, Receiver<String>) {
    let mut child = env
        .cmd()
        .args(["--server", url])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_reaped();
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The lines of `said` up to one that contains `part` (a test that never sees it fails, and
/// does not hang: what waits for a budget waits until midnight).
fn lines_until(said: &Receiver<String>, part: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match said.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let found = line.contains(part);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(e) => panic!("no {part:?} on stderr ({e}): {seen:#?}"),
        }
    }
}

/// Each follower of a task held back by its project's spent budget says so, once, on stderr;
/// `tasks show` names the task's project and lists each round of its checks, the failing
/// round before the passing one.
#[test]
fn followers_say_once_that_a_spent_budget_holds_a_task_and_show_lists_every_round() {
    let Some(bin) = bin_or_fail() else { return };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Round 1 writes the wrong answer, round 2 (with the failing check's output) the right one.
    let model = rt
        .block_on(ModelServer::start(Script::new([
            Step::write_file("answer.txt", "41"),
            Step::answer("Wrote the answer."),
            Step::write_file("answer.txt", "42"),
            Step::answer("Fixed the answer."),
        ])))
        .expect("model endpoint");
    let env = Env::new();
    let remote = env.sample_repo();
    let mut up_cmd: Command = env.up_cmd(
        1,
        &[
            "--agent-env",
            "ANTHROPIC_API_KEY",
            "--agent-env",
            "ANTHROPIC_BASE_URL",
        ],
    );
    up_cmd
        .env("AGENTPOOL_AGENT_BIN_DIR", &bin)
        .envs(model.env_for("claude-code"));
    let up = Up::spawn(up_cmd);
    let url = up.url.as_str();
    let ap = |args: &[&str]| {
        let o = env
            .cmd()
            .args(["--server", url])
            .args(args)
            .output()
            .expect("run agentpool");
        assert_exit(&o, 0);
        o
    };
    ap(&[
        "projects",
        "put",
        "web",
        "--repo",
        remote.to_str().expect("a UTF-8 path"),
        "--daily-budget-usd",
        "0.000001",
    ]);

    // The agent's task spends the day's budget (Claude Code reports what it cost).
    let o = ap(&[
        "--output",
        "json",
        "submit",
        "--project",
        "web",
        "--agent",
        "claude-code",
        "--check",
        "grep -qx 42 answer.txt",
        "--max-rounds",
        "3",
        "--wait",
        "Put the answer in answer.txt",
    ]);
    let spent = json(&o);
    assert_eq!(spent["state"], "succeeded", "{spent}");
    assert!(
        spent["result"]["cost_usd"].as_f64().unwrap_or(0.0) > 0.000001,
        "{spent}"
    );
    let spent_id = spent["id"].as_str().expect("an id");

    // `tasks show` names its project and shows both rounds, round 1 first.
    let shown = stdout(&ap(&["tasks", "show", spent_id]));
    assert!(shown.contains("\nproject    web\n"), "{shown}");
    let pos = |part: &str| {
        shown
            .find(part)
            .unwrap_or_else(|| panic!("no {part:?} in {shown}"))
    };
    assert!(shown.contains("checks     passed after 2 rounds\n"), "{shown}");
    let (r1, failed, r2, passed) = (
        pos("\n             round 1\n"),
        pos("\n               ✗ grep -qx 42 answer.txt failed (exit 1, "),
        pos("\n             round 2\n"),
        pos("\n               ✓ grep -qx 42 answer.txt passed (exit 0, "),
    );
    assert!(r1 < failed && failed < r2 && r2 < passed, "{shown}");

    // The next task of the project waits for the budget: `submit --wait` says so at once.
    let (mut waiting, said) = spawn(
        &env,
        url,
        &["submit", "--project", "web", "--command", "true", "--wait"],
    );
    // Kept open to the end: the task as it ended is printed there.
    let mut out = BufReader::new(waiting.stdout.take().expect("stdout")).lines();
    let first = out.next().expect("a line naming the task").expect("a line");
    let id = first.split_whitespace().last().expect("the id").to_string();
    let mut submit_said = lines_until(&said, "budget exhausted");
    // `tasks logs -f` of it says so too, from the task's events and one read of the task.
    let (mut follower, follower_rx) = spawn(&env, url, &["tasks", "logs", "-f", &id]);
    let mut follower_said = lines_until(&follower_rx, "budget exhausted");
    // And `run`, of a task of its own.
    let (mut run, run_rx) = spawn(&env, url, &["run", "--project", "web", "--command", "true"]);
    let mut run_out = BufReader::new(run.stdout.take().expect("stdout")).lines();
    let run_first = run_out.next().expect("a line naming the task").expect("a line");
    let run_id = run_first.split_whitespace().last().expect("the id").to_string();
    let mut run_said = lines_until(&run_rx, "budget exhausted");

    // Canceled, they end; none said it twice.
    ap(&["tasks", "cancel", &id, &run_id]);
    let printed: Vec<String> = out.map_while(Result::ok).collect();
    assert_eq!(waiting.wait().expect("wait").code(), Some(3), "{printed:#?}");
    assert_eq!(follower.wait().expect("wait").code(), Some(0));
    let printed: Vec<String> = run_out.map_while(Result::ok).collect();
    assert_eq!(run.wait().expect("wait").code(), Some(3), "{printed:#?}");
    for (lines, rx) in [
        (&mut submit_said, &said),
        (&mut follower_said, &follower_rx),
        (&mut run_said, &run_rx),
    ] {
        // The process ended: its stderr is all there.
        lines.extend(rx.iter());
        let budget: Vec<&String> = lines.iter().filter(|l| l.contains("budget")).collect();
        assert_eq!(budget, [&budget_line()], "{lines:#?}");
    }

    // A submit that does not wait says it as well.
    let o = ap(&["submit", "--project", "web", "--command", "true"]);
    assert!(stderr(&o).contains(&budget_line()), "{}", stderr(&o));
    drop(model);
}
