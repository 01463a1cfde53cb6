//! A task's secrets stay out of everything that leaves the worker: the commit message built
//! from the agent's answer, the tokens of a lent login, output lines cut to size, a check's
//! kept output, the result's file list, and the changes pushed to the remote.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use agentpool_agents::{AgentConfig, Registry};
use agentpool_core::{CheckSpec, ErrorClass, Event, EventKind, TaskSpec, TaskState};
use agentpool_store::TaskDetail;
use agentpool_testkit::model::{ModelServer, Step};

use crate::agents::{agent_env, agent_task, bin_dir, finished_within};
use crate::worker::{
    Env, TOKEN, api, assert_succeeded, command, config, env, events, start, succeeded_result,
};

/// The value of a secret passed to the task under a name that does not look secret.
const PLAIN: &str = "DBPASSvalueXYZ12";

/// A worker that passes `MYPLAINVAR=PLAIN` to every task as a secret, with agents talking
/// to `model` and the local login of Claude Code taken from `login_home`, when given.
async fn run(
    env: &Env,
    spec: TaskSpec,
    model: Option<&ModelServer>,
    login_home: Option<&Path>,
) -> TaskDetail {
    let task = env.store.enqueue(spec).await.unwrap().task;
    let mut c = config(env, "w1", TOKEN);
    c.pipeline.secret_env = BTreeMap::from([("MYPLAINVAR".to_string(), PLAIN.to_string())]);
    if let Some(model) = model {
        let cfg = AgentConfig {
            bin_dir: Some(bin_dir()),
            session_dir: Some(env.dir.path().join("agent-sessions")),
            ..Default::default()
        };
        c.agents = Registry::builtin(&cfg);
        c.pipeline.extra_env = model.env_for("claude-code");
    }
    if let Some(home) = login_home {
        c.pipeline.local_logins = BTreeMap::from([("claude-code".to_string(), home.to_path_buf())]);
    }
    let w = start(c, api(&env.store, Duration::from_secs(30)).await);
    let done = finished_within(&env.store, task.id, Duration::from_secs(180)).await;
    w.stop().await;
    done
}

/// Everything the store recorded of the task: its events, result and error, as text.
async fn recorded(env: &Env, done: &TaskDetail) -> String {
    let events: Vec<String> = events(&env.store, done.task.id)
        .await
        .iter()
        .map(|e| e.data().to_string())
        .collect();
    format!(
        "{}\n{:?}\n{:?}",
        events.join("\n"),
        done.task.result,
        done.task.error_message
    )
}

/// The full message of `sha` in the remote repository.
fn pushed_message(env: &Env, sha: &str) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(env.server.repo_path("app"))
        .args(["log", "-1", "--format=%B", sha])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The stdout lines of the task, in order.
fn stdout_lines(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind() == EventKind::Log && e.data()["stream"] == "stdout")
        .filter_map(|e| e.data()["line"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn the_agent_s_answer_is_masked_in_the_pushed_commit_message() {
    let answer = format!("Created hello.txt; db={PLAIN}");
    let steps = [Step::write_file("hello.txt", "hi\n"), Step::answer(&answer)];
    let Some((env, model)) = agent_env("claude-code", steps).await else {
        return;
    };
    let done = run(
        &env,
        agent_task(&env, "claude-code", "Create hello.txt"),
        Some(&model),
        None,
    )
    .await;
    let r = succeeded_result(&done);
    let message = pushed_message(&env, r.commit_sha.as_deref().unwrap());
    assert!(message.contains("db=[REDACTED]"), "{message}");
    assert!(!message.contains(PLAIN), "{message}");
    assert!(!recorded(&env, &done).await.contains(PLAIN));
}

#[tokio::test]
async fn the_tokens_of_a_lent_login_are_masked_everywhere() {
    const ACCESS: &str = "sk-ant-oat01-lentACCESStoken0123456789";
    const REFRESH: &str = "sk-ant-ort01-lentREFRESHtoken987654321";
    let steps = [
        Step::shell("cat \"$HOME/.claude/.credentials.json\""),
        Step::write_file("hello.txt", "hi\n"),
        Step::answer(&format!("Created hello.txt; login {ACCESS}")),
    ];
    let Some((env, model)) = agent_env("claude-code", steps).await else {
        return;
    };
    let home = env.dir.path().join("user-home");
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    let login = serde_json::json!({"claudeAiOauth": {
        "accessToken": ACCESS,
        "refreshToken": REFRESH,
        "expiresAt": 4_102_444_800_000u64,
        "scopes": ["user:inference"],
    }});
    std::fs::write(home.join(".claude/.credentials.json"), login.to_string()).unwrap();
    let done = run(
        &env,
        agent_task(&env, "claude-code", "Create hello.txt"),
        Some(&model),
        Some(&home),
    )
    .await;
    assert_succeeded(&done);
    let text = recorded(&env, &done).await;
    // The agent did read the file: its other fields are in the tool's output.
    assert!(text.contains("user:inference"), "{text}");
    for token in [ACCESS, REFRESH] {
        assert!(!text.contains(token), "{token} recorded: {text}");
    }
    let r = done.task.result.clone().unwrap();
    let message = pushed_message(&env, r.commit_sha.as_deref().unwrap());
    assert!(message.contains("login [REDACTED]"), "{message}");
}

#[tokio::test]
async fn a_secret_across_the_cut_of_a_long_line_is_masked_whole() {
    let env = env().await;
    // 65,530 bytes, then the secret: the line is cut after 64 KiB, inside the secret.
    let cmd = "head -c 65530 /dev/zero | tr '\\0' a; printf '%s\\n' \"$MYPLAINVAR\"";
    let mut spec = command(&env, cmd);
    spec.commit = false;
    spec.push = false;
    let done = run(&env, spec, None, None).await;
    assert_succeeded(&done);
    let lines = stdout_lines(&events(&env.store, done.task.id).await);
    assert!(lines.len() >= 2, "the line is cut: {}", lines.len());
    assert!(
        lines
            .iter()
            .all(|l| !l.contains("DBPASS") && !l.contains("valueXYZ12")),
        "a piece of the secret escaped"
    );
    // Masked, and nothing lost or repeated across the cut.
    assert_eq!(lines.concat(), format!("{}[REDACTED]", "a".repeat(65530)));
}

#[tokio::test]
async fn a_check_s_kept_output_shows_no_part_of_a_secret() {
    let env = env().await;
    // The check's line is 6 bytes longer than the tail it keeps: cut from the raw line, the
    // tail would start with the secret's last 10 characters.
    let tail = agentpool_runner::checks::OUTPUT_TAIL_BYTES - PLAIN.len() + 6;
    let check = format!("printf '%s' \"$MYPLAINVAR\"; head -c {tail} /dev/zero | tr '\\0' b; echo; exit 1");
    let mut spec = command(&env, "true");
    spec.checks = Some(vec![CheckSpec::command(&check)]);
    spec.max_attempts = Some(1);
    let done = run(&env, spec, None, None).await;
    assert_eq!(done.task.error_class, Some(ErrorClass::ChecksFailed));
    let r = done.task.result.clone().unwrap();
    let kept = &r.checks[0].output_tail;
    assert!(!kept.contains("valueXYZ12"), "{}", &kept[..40]);
    assert!(kept.ends_with(&"b".repeat(tail)), "the output's end is kept");
    assert!(!recorded(&env, &done).await.contains("valueXYZ12"));
}

#[tokio::test]
async fn a_file_named_after_a_secret_is_listed_masked() {
    let env = env().await;
    let mut spec = command(&env, "touch \"leak-$MYPLAINVAR.txt\"");
    spec.push = false;
    let done = run(&env, spec, None, None).await;
    let r = succeeded_result(&done);
    let paths: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["leak-[REDACTED].txt"]);
    assert!(!recorded(&env, &done).await.contains(PLAIN));
}

/// A secret in the changes — a file, a file's name, a commit message, or a commit the run
/// made and a later one undid — keeps them from being pushed.
#[tokio::test]
async fn changes_that_carry_a_secret_are_not_pushed() {
    let env = env().await;
    for (cmd, place) in [
        (
            "echo ok > fine.txt && echo \"db=$MYPLAINVAR\" > config.txt",
            "file config.txt",
        ),
        ("touch \"leak-$MYPLAINVAR.txt\"", "file leak-[REDACTED].txt"),
        (
            "echo x > x.txt && git add x.txt && git -c user.name=a -c user.email=a@b commit -qm \"x $MYPLAINVAR\"",
            "the message of commit",
        ),
        // One commit adds it and a later one scrubs it: still in the history a push would send.
        (
            "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; \
             echo \"key=$MYPLAINVAR\" > config.txt && git add config.txt && git commit -qm add && \
             echo key=X > config.txt && git commit -qam scrub",
            "file config.txt of commit ",
        ),
    ] {
        let mut spec = command(&env, cmd);
        spec.max_attempts = Some(1);
        let done = run(&env, spec, None, None).await;
        assert_eq!(done.task.state, TaskState::Failed, "{cmd}");
        assert_eq!(done.task.error_class, Some(ErrorClass::AgentError), "{cmd}");
        let message = done.task.error_message.clone().unwrap_or_default();
        assert!(
            message.contains(&format!(
                "the changes contain a secret value of the task (a credential or a login token) in {place}"
            )),
            "{message}"
        );
        let r = done.task.result.clone().unwrap();
        assert!(!r.pushed && r.commit_sha.is_some(), "{r:?}");
        assert_eq!(
            env.server.branches("app"),
            vec!["main".to_string()],
            "nothing pushed"
        );
        assert!(!recorded(&env, &done).await.contains(PLAIN));
    }
}
