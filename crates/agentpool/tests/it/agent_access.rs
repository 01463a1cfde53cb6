//! Handing a transient pool's agent its key in one command: `--agent-env` passes exactly the
//! named variables from the caller's environment, `--use-local-login` makes the agent's login
//! file visible in the task's private home; without them nothing is inherited. A separate
//! `worker` passes the variables `--agent-env` (`AGENTPOOL_AGENT_ENV`) names from its own
//! environment, as a Kubernetes pod gets its keys from Secrets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agentpool_testkit::model::{ModelServer, Script, Step};

use crate::demo::agent_bin_dir;
use crate::{Env, SpawnReaped, assert_exit, assert_stderr_contains, git, json, stderr, stdout};

const KEY: &str = "sk-ant-passed-from-the-caller";

/// The agent CLIs' directory; a test without it fails where services are required.
pub(crate) fn bin_or_fail() -> Option<PathBuf> {
    let bin = agent_bin_dir();
    assert!(
        bin.is_some() || !agentpool_testkit::services_required(),
        "the claude CLI is not installed: run `npm install --prefix tools/agents`"
    );
    bin
}

/// `agentpool run --output json` of Claude Code on `remote` (up to 3 attempts), with `flags`
/// and then the prompt.
pub(crate) fn claude_run(env: &Env, bin: &Path, remote: &Path, flags: &[&str], prompt: &str) -> Command {
    let mut cmd = env.cmd();
    cmd.env("AGENTPOOL_AGENT_BIN_DIR", bin)
        .args([
            "run",
            "--repo",
            remote.to_str().unwrap(),
            "--agent",
            "claude-code",
        ])
        .args(["--max-attempts", "3", "--output", "json"])
        .args(flags)
        .arg(prompt);
    cmd
}

/// `agentpool run` of Claude Code on `remote`, with `vars` in the caller's environment.
async fn run_claude(env: &Env, bin: &Path, remote: &Path, vars: &[(&str, &str)], flags: &[&str]) -> Output {
    let mut cmd = claude_run(env, bin, remote, flags, "write hello.txt");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run agentpool"))
        .await
        .expect("join")
}

fn script() -> Script {
    Script::new([
        Step::write_file("hello.txt", "hi from claude"),
        Step::answer("done"),
    ])
}

/// What each test starts from: the CLIs' directory, an environment, its sample repo, and a
/// model endpoint that writes hello.txt.
async fn caller() -> Option<(PathBuf, Env, PathBuf, ModelServer)> {
    let bin = bin_or_fail()?;
    let env = Env::new();
    let remote = env.sample_repo();
    let model = ModelServer::start(script()).await.expect("model endpoint");
    Some((bin, env, remote, model))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_passed_with_agent_env_reaches_claude_code_and_nothing_else_does() {
    let Some((bin, env, remote, model)) = caller().await else {
        return;
    };
    let base = model.base_url();
    let vars = [("ANTHROPIC_API_KEY", KEY), ("ANTHROPIC_BASE_URL", base.as_str())];

    // Exported but not passed: the task does not see it and fails at once.
    let o = run_claude(&env, &bin, &remote, &vars, &[]).await;
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(&o));
    let task = json(&o);
    assert_eq!(task["error_class"], "AUTH_FAILED", "{task}");
    assert_eq!(task["attempts"], 1, "{task}");
    assert!(model.agent_requests().is_empty(), "the agent never started");

    let flags = [
        "--agent-env",
        "ANTHROPIC_API_KEY",
        "--agent-env",
        "ANTHROPIC_BASE_URL",
    ];
    let o = run_claude(&env, &bin, &remote, &vars, &flags).await;
    assert_exit(&o, 0);
    let task = json(&o);
    assert_eq!(task["state"], "succeeded", "{task}");
    let branch = task["spec"]["branch"]
        .as_str()
        .or(task["result"]["branch"].as_str())
        .expect("branch");
    assert_eq!(
        git(&remote, &["show", &format!("{branch}:hello.txt")]),
        "hi from claude"
    );
    assert!(!model.agent_requests().is_empty());
    let logs = env.run(&["tasks", "logs", task["id"].as_str().unwrap()]);
    for out in [stdout(&o), stderr(&o), stdout(&logs)] {
        assert!(!out.contains(KEY), "the key is never shown: {out}");
    }
}

/// A `worker` started with `AGENTPOOL_AGENT_ENV` naming a variable of its environment hands it
/// to its tasks, masked in their output; a variable it does not name stays out.
#[test]
fn a_worker_passes_the_variables_agent_env_names_to_its_tasks() {
    let env = Env::new();
    let remote = env.sample_repo();
    let server = crate::Up::spawn(env.serve_cmd());
    let mut worker = env
        .cmd()
        .env("AGENTPOOL_AGENT_ENV", "PASSED_KEY")
        .env("PASSED_KEY", KEY)
        .env("NOT_PASSED", "kept-out")
        .args(["worker", "--server", &server.url, "--allow-local-repos"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn_reaped();
    let command = r#"echo "length ${#PASSED_KEY}; value $PASSED_KEY; other [$NOT_PASSED]""#;
    let o = env.run(&[
        "--server",
        &server.url,
        "--output",
        "json",
        "run",
        "--repo",
        remote.to_str().unwrap(),
        "--command",
        command,
    ]);
    assert_exit(&o, 0);
    let logs = stdout(&env.run(&[
        "--server",
        &server.url,
        "tasks",
        "logs",
        json(&o)["id"].as_str().unwrap(),
    ]));
    assert!(logs.contains(&format!("length {}", KEY.len())), "{logs}");
    assert!(logs.contains("other []"), "{logs}");
    assert!(!logs.contains(KEY), "the key is masked: {logs}");
    crate::signal(&worker, "TERM");
    assert!(worker.wait().unwrap().success());
}

#[test]
fn agent_env_refuses_unset_variables_and_local_login_without_a_login() {
    let env = Env::new();
    let remote = env.sample_repo();
    let home = env.dir.path().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let o = env
        .cmd()
        .env_remove("AGENTPOOL_TEST_UNSET")
        .args(["run", "--repo", remote.to_str().unwrap(), "--command", "true"])
        .args(["--agent-env", "AGENTPOOL_TEST_UNSET"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("AGENTPOOL_TEST_UNSET is not set"), "{err}");

    let o = env
        .cmd()
        .env("HOME", &home)
        .args(["run", "--repo", remote.to_str().unwrap(), "--command", "true"])
        .args(["--use-local-login", "claude-code"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_stderr_contains(&o, ".claude/.credentials.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_claude_login_is_visible_to_the_task_and_nothing_else_of_home_is() {
    let Some((bin, env, remote, model)) = caller().await else {
        return;
    };
    let base = model.base_url();
    // A user's home as `claude /login` leaves it, plus things that must stay private.
    let home = env.dir.path().join("user-home");
    std::fs::create_dir_all(home.join(".claude/projects")).unwrap();
    let far = 4_102_444_800_000u64; // 2100-01-01, so the CLI does not try to refresh
    let login = serde_json::json!({ "claudeAiOauth": {
        "accessToken": "sk-ant-oat01-local-login", "refreshToken": "sk-ant-ort01-local-login",
        "expiresAt": far, "scopes": ["user:inference", "user:profile"], "subscriptionType": "pro" } });
    std::fs::write(home.join(".claude/.credentials.json"), login.to_string()).unwrap();
    std::fs::write(home.join(".claude/projects/secret.jsonl"), "private").unwrap();
    std::fs::write(home.join(".claude.json"), r#"{"userID":"private"}"#).unwrap();

    let vars = [
        ("HOME", home.to_str().unwrap()),
        ("ANTHROPIC_BASE_URL", base.as_str()),
    ];
    let flags = [
        "--use-local-login",
        "claude-code",
        "--agent-env",
        "ANTHROPIC_BASE_URL",
    ];
    let o = run_claude(&env, &bin, &remote, &vars, &flags).await;
    let task = json(&o);
    assert_ne!(task["error_class"], "AUTH_FAILED", "the login is found: {task}");
    assert_exit(&o, 0);
    let requests = model.agent_requests();
    assert!(
        !requests.is_empty(),
        "Claude Code got past its login check and called the model"
    );
    let auth = requests[0]
        .headers
        .get("authorization")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        auth, "Bearer sk-ant-oat01-local-login",
        "it used the local login's token"
    );
    // Nothing but the login file was brought in.
    let prompts: String = requests.iter().map(|r| format!("{r:?}")).collect();
    assert!(!prompts.contains("secret.jsonl"), "{prompts}");
    assert_eq!(
        std::fs::read_to_string(home.join(".claude/.credentials.json")).unwrap(),
        login.to_string()
    );
}

/// `agentpool agents` says which agent CLIs this machine has, where (AGENTPOOL_AGENT_BIN_DIR
/// first), their versions, and whether the local login `--use-local-login` borrows is there.
#[test]
fn agents_lists_the_clis_found_their_versions_and_local_logins() {
    let env = Env::new();
    let bin = env.dir.path().join("bin");
    agentpool_testkit::process::script(&bin, "claude", "#!/bin/sh\necho '2.0.1 (Claude Code)'\n");
    let home = env.dir.path().join("home");
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    std::fs::write(home.join(".claude/.credentials.json"), "{}").unwrap();
    let agents = |args: &[&str]| {
        env.cmd()
            .env("AGENTPOOL_AGENT_BIN_DIR", &bin)
            .env("HOME", &home)
            .env("PATH", "/usr/bin:/bin")
            .args(args)
            .arg("agents")
            .output()
            .unwrap()
    };
    let o = agents(&["--output", "json"]);
    assert_exit(&o, 0);
    let listed = json(&o);
    let by_name = |n: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not listed: {listed}"))
    };
    let claude = by_name("claude-code");
    assert_eq!(claude["installed"], true, "{claude}");
    assert_eq!(claude["program"], bin.join("claude").to_str().unwrap());
    assert_eq!(claude["version"], "2.0.1 (Claude Code)");
    assert_eq!(claude["local_login"]["state"], "found");
    let codex = by_name("codex");
    assert_eq!(
        (
            &codex["installed"],
            &codex["version"],
            &codex["local_login"]["state"]
        ),
        (
            &serde_json::json!(false),
            &serde_json::Value::Null,
            &serde_json::json!("missing")
        ),
        "{codex}"
    );
    assert_eq!(codex["install"], "npm install -g @openai/codex");
    assert_eq!(by_name("gemini")["local_login"]["state"], "unsupported");

    let o = agents(&[]);
    assert_exit(&o, 0);
    let table = stdout(&o);
    let row = |n: &str| {
        table
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row("claude-code").contains("2.0.1 (Claude Code)")
            && row("claude-code").ends_with("~/.claude/.credentials.json"),
        "{table}"
    );
    assert!(
        row("codex ").contains("not installed (npm install -g @openai/codex)"),
        "{table}"
    );
    assert_stderr_contains(
        &o,
        &format!(
            "looked up in {} (AGENTPOOL_AGENT_BIN_DIR), then on PATH",
            bin.display()
        ),
    );
    // Set but empty, the variable is unset: not a lookup in the current directory.
    let o = env
        .cmd()
        .env("AGENTPOOL_AGENT_BIN_DIR", "")
        .env("PATH", "/usr/bin:/bin")
        .arg("agents")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_stderr_contains(&o, "looked up on PATH (set AGENTPOOL_AGENT_BIN_DIR");

    // `up` says what its workers offer: the same agents, and command tasks.
    let mut up = env
        .cmd()
        .env("AGENTPOOL_AGENT_BIN_DIR", &bin)
        .env("PATH", "/usr/bin:/bin")
        .args([
            "--output",
            "json",
            "up",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn_reaped();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(up.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let banner: serde_json::Value = serde_json::from_str(&first).expect(&first);
    assert_eq!(
        banner["agents"],
        serde_json::json!(["command", "claude-code"]),
        "{banner}"
    );
    crate::terminate(&up);
    assert!(up.wait().unwrap().success());
}
