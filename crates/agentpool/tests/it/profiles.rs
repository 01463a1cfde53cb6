//! The README's second quick start: `agentpool up`, the key stored as a credential, the
//! endpoint and an MCP server in a profile; real Claude Code runs with all three.

use agentpool_testkit::model::TEST_API_KEY;
use agentpool_testkit::model::{ModelServer, Script, Step};
use serde_json::json;

use crate::demo::agent_bin_dir;
use crate::{Env, Up, assert_exit, assert_stderr_contains, json, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_a_stored_key_and_a_profile_runs_claude_code_with_its_mcp_server() {
    let Some(bin) = agent_bin_dir() else {
        assert!(
            !agentpool_testkit::services_required(),
            "the claude CLI is not installed"
        );
        return;
    };
    let env = Env::new();
    let remote = env.sample_repo();
    let model = ModelServer::start(Script::new([
        Step::tool("secret_word", json!({"topic": "fruit"})),
        Step::answer("done"),
    ]))
    .await
    .expect("model endpoint");
    let words = agentpool_testkit::mcp::write_words_server(env.dir.path()).expect("mcp server");
    let mut up = env.up_cmd(1, &[]);
    up.env("AGENTPOOL_AGENT_BIN_DIR", &bin);
    let up = tokio::task::spawn_blocking(move || Up::spawn(up))
        .await
        .expect("up");
    let run = |args: Vec<String>, vars: Vec<(&'static str, String)>| {
        let mut c = env.cmd();
        c.args(["--server", &up.url]).args(&args);
        for (k, v) in vars {
            c.env(k, v);
        }
        tokio::task::spawn_blocking(move || c.output().expect("run agentpool"))
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let o = run(
        s(&["credentials", "put", "anthropic_api_key", "--from-env", "MY_KEY"]),
        vec![("MY_KEY", TEST_API_KEY.into())],
    )
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // A key in a profile is refused, pointing at credentials.
    let o = run(
        s(&["profiles", "put", "bad", "--env", "ANTHROPIC_API_KEY=x"]),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_stderr_contains(&o, "credentials put anthropic_api_key");

    let base = format!("ANTHROPIC_BASE_URL={}", model.base_url());
    let mcp = format!("words=node {}", words.display());
    let o = run(
        s(&[
            "profiles",
            "put",
            "scripted",
            "--env",
            &base,
            "--env",
            "ENABLE_TOOL_SEARCH=false",
        ])
        .into_iter()
        .chain(s(&[
            "--mcp-server",
            &mcp,
            "--allowed-tool",
            "mcp__words__secret_word",
        ]))
        .collect(),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(s(&["profiles", "list"]), vec![]).await.unwrap();
    assert!(stdout(&o).contains("scripted"), "{}", stdout(&o));
    // One line a setting, several values under each other.
    let o = run(s(&["profiles", "show", "scripted"]), vec![]).await.unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "profile    scripted\nenv        {base}\n           ENABLE_TOOL_SEARCH=false\n\
             mcp        words: node {}\ntools      mcp__words__secret_word\n",
            words.display()
        )
    );

    let o = run(
        s(&[
            "submit",
            "--repo",
            remote.to_str().unwrap(),
            "--agent",
            "claude-code",
        ])
        .into_iter()
        .chain(s(&[
            "--credential",
            "anthropic_api_key",
            "--profile",
            "scripted",
            "--wait",
        ]))
        .chain(s(&["--output", "json", "what is the secret word?"]))
        .collect(),
        vec![],
    )
    .await
    .unwrap();
    assert_exit(&o, 0);
    let task = json(&o);
    assert_eq!(task["spec"]["profile"], "scripted", "{task}");
    assert!(
        task["spec"]["profile_settings"]["mcp_servers"]["words"].is_object(),
        "{task}"
    );
    let id = task["id"].as_str().unwrap().to_string();
    let show = run(s(&["tasks", "show", &id]), vec![]).await.unwrap();
    assert!(
        stdout(&show)
            .contains("scripted (env ANTHROPIC_BASE_URL,ENABLE_TOOL_SEARCH; mcp words; 1 allowed tool)"),
        "{}",
        stdout(&show)
    );
    let logs = run(s(&["tasks", "logs", &id]), vec![]).await.unwrap();
    assert!(stdout(&logs).contains("PINEAPPLE-42"), "{}", stdout(&logs));
    assert!(!stdout(&logs).contains(TEST_API_KEY), "the key is masked");
    tokio::task::spawn_blocking(move || up.stop()).await.unwrap();
}
